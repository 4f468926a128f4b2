//! Consumed offsets stored in the store's metadata, written in the same
//! atomic batch as the data they cover. Kafka's committed group offsets are
//! never used for correctness.

use std::collections::BTreeMap;

use northwest_kafka::{Offset, Partition, PartitionOffsets};
use northwest_store::engine::Cf;
use northwest_store::{KeyRange, Store, StoreError};

fn prefix(topic: &str) -> String {
    format!("off/{topic}/")
}

/// Meta key of a partition's next offset to apply.
pub fn offset_key(topic: &str, partition: Partition) -> Vec<u8> {
    format!("{}{:010}", prefix(topic), partition.0).into_bytes()
}

/// Meta key of the offset from which this node has applied a journal
/// partition without a gap: where it first started (the log start then),
/// lowered by a replay. A snapshot taken at journal offsets at or after it
/// plus this node's journal equals the source.
pub fn applied_from_key(topic: &str, partition: Partition) -> Vec<u8> {
    format!("from/{topic}/{:010}", partition.0).into_bytes()
}

/// Meta key of the commit time (ms) of the last applied record of a partition.
pub fn applied_ts_key(topic: &str, partition: Partition) -> Vec<u8> {
    format!("offts/{topic}/{:010}", partition.0).into_bytes()
}

/// Meta key recording that records of deployment `origin` were applied here.
pub fn origin_key(origin: &str) -> Vec<u8> {
    format!("origin/{origin}").into_bytes()
}

/// Every deployment whose records were applied here.
pub fn origins(store: &northwest_store::Store) -> Result<Vec<String>, northwest_store::StoreError> {
    let p = b"origin/".to_vec();
    let range = northwest_store::KeyRange {
        end: northwest_store::key::prefix_end(&p),
        start: p,
    };
    Ok(store
        .engine()
        .scan(northwest_store::Cf::Meta, &range, usize::MAX)?
        .into_iter()
        .filter_map(|(k, _)| String::from_utf8(k[7..].to_vec()).ok())
        .collect())
}

pub fn encode(v: i64) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

fn decode(b: &[u8]) -> Option<i64> {
    b.try_into().ok().map(i64::from_be_bytes)
}

/// Stored next offsets by partition.
pub fn load(store: &Store, topic: &str) -> Result<PartitionOffsets, StoreError> {
    load_prefixed(store, prefix(topic).into_bytes())
}

/// Removes the stored offsets of `topic` (a topic this node no longer
/// applies).
pub fn forget(store: &Store, topic: &str) -> Result<(), StoreError> {
    let mut batch = northwest_store::engine::WriteBatch::default();
    for (p, _) in load(store, topic)?.iter() {
        batch.delete(Cf::Meta, offset_key(topic, p));
    }
    if batch.is_empty() {
        return Ok(());
    }
    Ok(store.engine().write(batch)?)
}

/// Where this node began applying each journal partition (see
/// [`applied_from_key`]); a partition it started before this was recorded
/// has none.
pub fn applied_from(store: &Store, topic: &str) -> Result<PartitionOffsets, StoreError> {
    load_prefixed(store, format!("from/{topic}/").into_bytes())
}

fn load_prefixed(store: &Store, p: Vec<u8>) -> Result<PartitionOffsets, StoreError> {
    let range = KeyRange {
        end: northwest_store::key::prefix_end(&p),
        start: p.clone(),
    };
    let mut out = PartitionOffsets::new();
    for (k, v) in store.engine().scan(Cf::Meta, &range, 100_000)? {
        let part = std::str::from_utf8(&k[p.len()..])
            .ok()
            .and_then(|s| s.parse::<i32>().ok());
        if let (Some(part), Some(off)) = (part, decode(&v)) {
            out.insert(Partition(part), Offset(off));
        }
    }
    Ok(out)
}

/// Commit time of the last applied record of `partition`, if any.
pub fn applied_ts(
    store: &Store,
    topic: &str,
    partition: Partition,
) -> Result<Option<i64>, StoreError> {
    Ok(store
        .engine()
        .get(Cf::Meta, &applied_ts_key(topic, partition))?
        .and_then(|b| decode(&b)))
}

/// Meta key of the delivery count of one record (`apply_log` only): every
/// record the loop consumed, whatever the version check decided, counted in
/// the same atomic batch as the offsets. A record counted twice was processed
/// twice (an offset store not atomic with the data would show it); a record
/// never counted was skipped.
pub fn delivery_key(topic: &str, partition: Partition, offset: Offset) -> Vec<u8> {
    format!("deliv/{topic}/{:010}/{:020}", partition.0, offset.0).into_bytes()
}

/// Every record's delivery count, by (partition, offset).
pub fn delivery_counts(
    store: &Store,
    topic: &str,
) -> Result<BTreeMap<(Partition, Offset), i64>, StoreError> {
    let p = format!("deliv/{topic}/").into_bytes();
    let range = KeyRange {
        end: northwest_store::key::prefix_end(&p),
        start: p.clone(),
    };
    let mut out = BTreeMap::new();
    for (k, v) in store.engine().scan(Cf::Meta, &range, usize::MAX)? {
        let rest = std::str::from_utf8(&k[p.len()..]).unwrap_or_default();
        let parsed = rest
            .split_once('/')
            .and_then(|(a, b)| Some((Partition(a.parse().ok()?), Offset(b.parse().ok()?))));
        if let (Some(po), Some(n)) = (parsed, decode(&v)) {
            out.insert(po, n);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use northwest_store::{LocalCoordinator, MemEngine, StoreConfig};

    use super::*;

    fn store() -> Arc<Store> {
        Store::open(
            Arc::new(MemEngine::new()),
            Arc::new(LocalCoordinator::default()),
            StoreConfig::default(),
        )
        .unwrap()
    }

    #[test]
    fn stored_offsets_load_by_topic_and_partition() {
        let s = store();
        let (p0, p11) = (Partition(0), Partition(11));
        s.put_meta(vec![
            (offset_key("j", p0), encode(17)),
            (offset_key("j", p11), encode(4)),
            // Another topic whose name extends this one's is not mixed in.
            (offset_key("j2", p0), encode(99)),
            (applied_from_key("j", p11), encode(2)),
        ])
        .unwrap();
        let loaded = load(&s, "j").unwrap();
        assert_eq!(
            loaded.iter().collect::<Vec<_>>(),
            vec![(p0, Offset(17)), (p11, Offset(4))]
        );
        assert_eq!(load(&s, "j2").unwrap().get(p0), Some(Offset(99)));
        assert!(load(&s, "other").unwrap().is_empty());
        let from = applied_from(&s, "j").unwrap();
        assert_eq!(from.get(p11), Some(Offset(2)));
        assert!(!from.contains(p0));
    }

    #[test]
    fn delivery_counts_are_kept_per_record() {
        let s = store();
        s.put_meta(vec![
            (delivery_key("j", Partition(1), Offset(5)), encode(1)),
            (delivery_key("j", Partition(1), Offset(6)), encode(2)),
            (delivery_key("k", Partition(1), Offset(5)), encode(7)),
        ])
        .unwrap();
        let counts = delivery_counts(&s, "j").unwrap();
        assert_eq!(counts.len(), 2);
        assert_eq!(counts[&(Partition(1), Offset(6))], 2);
        assert_eq!(applied_ts(&s, "j", Partition(1)).unwrap(), None);
        s.put_meta(vec![(applied_ts_key("j", Partition(1)), encode(1234))])
            .unwrap();
        assert_eq!(applied_ts(&s, "j", Partition(1)).unwrap(), Some(1234));
    }
}
