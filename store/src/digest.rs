//! Order-independent digests of a key range, per kind, used to prove that two
//! deployments hold the same data. Each live entity contributes the first 128
//! bits of SHA-256(key, version, value); contributions are summed mod 2^128,
//! so the digest depends on the multiset of entities, not on scan order, and
//! ranges can be digested separately and added.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

use crate::engine::{Cf, Reader};
use crate::error::StoreError;
use crate::key::{decode_key, KeyRange};
use crate::record::EntityRecord;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Part {
    pub count: u64,
    pub sum: u128,
}

impl Part {
    fn add(&mut self, h: u128) {
        self.count += 1;
        self.sum = self.sum.wrapping_add(h);
    }
    pub fn hex(&self) -> String {
        format!("{:032x}", self.sum)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Digest {
    pub total: Part,
    /// By the entity's own kind (last key element).
    pub kinds: BTreeMap<String, Part>,
}

pub fn entity_hash(key: &str, version: u64, value: &[u8]) -> u128 {
    let mut h = Sha256::new();
    h.update((key.len() as u64).to_be_bytes());
    h.update(key.as_bytes());
    h.update(version.to_be_bytes());
    h.update(value);
    u128::from_be_bytes(h.finalize()[..16].try_into().expect("16 bytes"))
}

/// Digests the live entities (delete markers excluded) of `range`.
pub fn digest(reader: &dyn Reader, range: &KeyRange) -> Result<Digest, StoreError> {
    digest_counting(reader, range, &AtomicU64::new(0))
}

/// [`digest`], adding every record it read (markers too) to `scanned` as
/// it goes: a long digest's progress.
pub fn digest_counting(
    reader: &dyn Reader,
    range: &KeyRange,
    scanned: &AtomicU64,
) -> Result<Digest, StoreError> {
    let mut d = Digest::default();
    let mut cursor = range.clone();
    loop {
        let page = reader.scan(Cf::Entities, &cursor, 4096)?;
        let Some((last, _)) = page.last().cloned() else {
            break;
        };
        for (k, v) in &page {
            let r = EntityRecord::decode(v)?;
            if let Some(value) = &r.value {
                let (_, key) = decode_key(k)?;
                let h = entity_hash(key.as_str(), r.version.0, value);
                d.total.add(h);
                d.kinds.entry(key.kind().to_string()).or_default().add(h);
            }
        }
        scanned.fetch_add(page.len() as u64, Ordering::Relaxed);
        if page.len() < 4096 {
            break;
        }
        cursor.start = last;
        cursor.start.push(0);
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, MemEngine, WriteBatch};
    use crate::key::{encode_key, KeyPath, Namespace};
    use crate::types::Version;

    fn put(e: &MemEngine, key: &str, v: u64, value: Option<&[u8]>) {
        let ns = Namespace::new("a").unwrap();
        let mut b = WriteBatch::default();
        let rec = EntityRecord {
            version: Version(v),
            commit_ts_ms: 0,
            value: value.map(<[u8]>::to_vec),
            marker_gen: None,
        };
        b.put(
            Cf::Entities,
            encode_key(&ns, &KeyPath::parse(key).unwrap()),
            rec.encode(),
        );
        e.write(b).unwrap();
    }

    #[test]
    fn equal_data_equal_digest_any_order_and_markers_ignored() {
        let (a, b) = (MemEngine::new(), MemEngine::new());
        put(&a, "K:1", 1, Some(b"x"));
        put(&a, "K:2/C:1", 2, Some(b"y"));
        put(&b, "K:2/C:1", 2, Some(b"y"));
        put(&b, "K:1", 1, Some(b"x"));
        put(&b, "K:3", 9, None);
        let r = KeyRange::namespace(&Namespace::new("a").unwrap());
        let (da, db) = (digest(&a, &r).unwrap(), digest(&b, &r).unwrap());
        assert_eq!(da, db);
        assert_eq!(da.total.count, 2);
        assert_eq!(da.kinds["C"].count, 1);
        put(&b, "K:1", 1, Some(b"z"));
        assert_ne!(
            digest(&b, &r).unwrap().total,
            da.total,
            "a changed value changes the digest"
        );
        put(&b, "K:1", 3, Some(b"x"));
        assert_ne!(
            digest(&b, &r).unwrap().total,
            da.total,
            "a changed version changes the digest"
        );
    }
}
