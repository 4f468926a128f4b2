//! The stored form of an entity: live value or versioned delete marker.
//!
//! Layout: `flags u8 | version u64 BE | commit_ts_ms i64 BE | value`; a
//! delete marker's tail is empty or `marker_gen u64 BE` (the marker-GC
//! generation this node was in when it wrote the marker).

use crate::error::EngineError;
use crate::types::Version;

const FLAG_DELETED: u8 = 1;
const HEADER: usize = 17;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityRecord {
    pub version: Version,
    pub commit_ts_ms: i64,
    /// `None` is a delete marker: kept so that a stale snapshot row or a
    /// replayed older put cannot resurrect the entity.
    pub value: Option<Vec<u8>>,
    /// The marker-GC generation this node was in when it wrote the delete
    /// marker (see `Store::advance_marker_generation`); `None` for live
    /// values and for markers written before it was recorded (which marker
    /// GC on a replica never removes).
    pub marker_gen: Option<u64>,
}

impl EntityRecord {
    pub fn is_deleted(&self) -> bool {
        self.value.is_none()
    }

    pub fn encode(&self) -> Vec<u8> {
        let written = match (&self.value, self.marker_gen) {
            (None, Some(g)) => g.to_be_bytes(),
            _ => [0; 8],
        };
        let v = match (&self.value, self.marker_gen) {
            (Some(v), _) => v.as_slice(),
            (None, Some(_)) => &written[..],
            (None, None) => &[],
        };
        let mut out = Vec::with_capacity(HEADER + v.len());
        out.push(if self.value.is_none() {
            FLAG_DELETED
        } else {
            0
        });
        out.extend_from_slice(&self.version.0.to_be_bytes());
        out.extend_from_slice(&self.commit_ts_ms.to_be_bytes());
        out.extend_from_slice(v);
        out
    }

    pub fn decode(b: &[u8]) -> Result<Self, EngineError> {
        if b.len() < HEADER {
            return Err(EngineError::Corrupt(format!(
                "entity record of {} bytes",
                b.len()
            )));
        }
        let version = Version(u64::from_be_bytes(b[1..9].try_into().expect("8 bytes")));
        let commit_ts_ms = i64::from_be_bytes(b[9..17].try_into().expect("8 bytes"));
        let (value, marker_gen) = if b[0] & FLAG_DELETED != 0 {
            let tail = &b[HEADER..];
            let written = <[u8; 8]>::try_from(tail).ok().map(u64::from_be_bytes);
            (None, written)
        } else {
            (Some(b[HEADER..].to_vec()), None)
        };
        Ok(Self {
            version,
            commit_ts_ms,
            value,
            marker_gen,
        })
    }

    /// Decodes only the version and delete flag (the apply path needs no value).
    pub fn peek(b: &[u8]) -> Result<(Version, bool), EngineError> {
        if b.len() < HEADER {
            return Err(EngineError::Corrupt(format!(
                "entity record of {} bytes",
                b.len()
            )));
        }
        let version = Version(u64::from_be_bytes(b[1..9].try_into().expect("8 bytes")));
        Ok((version, b[0] & FLAG_DELETED != 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_live_and_marker() {
        for (value, marker_gen) in [
            (Some(b"hello".to_vec()), None),
            (Some(vec![]), None),
            (None, None),
            (None, Some(17)),
        ] {
            let r = EntityRecord {
                version: Version(42),
                commit_ts_ms: 7,
                value,
                marker_gen,
            };
            assert_eq!(EntityRecord::decode(&r.encode()).unwrap(), r);
            assert_eq!(
                EntityRecord::peek(&r.encode()).unwrap(),
                (Version(42), r.is_deleted())
            );
        }
        assert!(EntityRecord::decode(&[0; 5]).is_err());
    }
}
