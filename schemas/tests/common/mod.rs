//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use northwest_schemas::{JournalOp, JournalRecord, SnapshotRecord};
use proptest::prelude::*;

/// Builds a single-object message by hand from its three parts.
pub fn frame(fingerprint: u64, datum: &[u8]) -> Vec<u8> {
    let mut message = vec![0xC3, 0x01];
    message.extend_from_slice(&fingerprint.to_le_bytes());
    message.extend_from_slice(datum);
    message
}

pub fn small_journal() -> JournalRecord {
    JournalRecord {
        txn_id: 42,
        namespace: "app".into(),
        entity_group: "Blog:1".into(),
        commit_ts_ms: 1_700_000_000_000,
        origin: "n1".into(),
        ops: vec![
            JournalOp::Put {
                key: "Blog:1".into(),
                value: b"{\"title\":\"hi\"}".to_vec(),
            },
            JournalOp::Delete {
                key: "Blog:1/Comment:7".into(),
            },
        ],
    }
}

pub fn small_snapshot() -> SnapshotRecord {
    SnapshotRecord {
        namespace: "app".into(),
        key: "Blog:1/Comment:7".into(),
        version: 42,
        deleted: false,
        value: Some(b"hello".to_vec()),
        commit_ts_ms: 1_700_000_000_000,
        snapshot_id: "snap-1".into(),
        origin: "n1".into(),
    }
}

/// Any value an Avro `long` can carry as an unsigned id.
pub fn id() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), Just(i64::MAX as u64), 0..=i64::MAX as u64]
}

pub fn op() -> impl Strategy<Value = JournalOp> {
    prop_oneof![
        (".{0,40}", proptest::collection::vec(any::<u8>(), 0..300))
            .prop_map(|(key, value)| JournalOp::Put { key, value }),
        ".{0,40}".prop_map(|key| JournalOp::Delete { key }),
    ]
}

pub fn journal() -> impl Strategy<Value = JournalRecord> {
    (
        id(),
        ".{0,20}",
        ".{0,20}",
        any::<i64>(),
        ".{0,8}",
        proptest::collection::vec(op(), 0..8),
    )
        .prop_map(
            |(txn_id, namespace, entity_group, commit_ts_ms, origin, ops)| JournalRecord {
                txn_id,
                namespace,
                entity_group,
                commit_ts_ms,
                origin,
                ops,
            },
        )
}

pub fn snapshot() -> impl Strategy<Value = SnapshotRecord> {
    (
        (".{0,20}", ".{0,40}", id(), any::<bool>()),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
        (any::<i64>(), ".{0,20}", ".{0,8}"),
    )
        .prop_map(
            |((namespace, key, version, deleted), value, (commit_ts_ms, snapshot_id, origin))| {
                SnapshotRecord {
                    namespace,
                    key,
                    version,
                    deleted,
                    value,
                    commit_ts_ms,
                    snapshot_id,
                    origin,
                }
            },
        )
}
