// The storage-engine contract, written once and run on every engine: the
// including module defines `engine()`, a fresh empty engine per call
// (store/tests/engine_contract.rs: memory and RocksDB; tests/tests/pg_store.rs:
// PostgreSQL).

use northwest_store::engine::WriteBatch;
use northwest_store::{Cf, KeyRange};

fn kv(k: &[u8], v: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (k.to_vec(), v.to_vec())
}

#[test]
fn a_batch_lands_in_its_keyspaces_and_its_last_operation_per_key_wins() {
    let e = engine();
    let mut b = WriteBatch::default();
    b.put(Cf::Entities, b"a".to_vec(), b"1".to_vec());
    b.put(Cf::Entities, b"a".to_vec(), b"2".to_vec());
    b.put(Cf::Entities, b"b".to_vec(), b"x".to_vec());
    b.delete(Cf::Entities, b"b".to_vec());
    b.delete(Cf::Meta, b"m".to_vec());
    b.put(Cf::Meta, b"m".to_vec(), b"3".to_vec());
    b.put(Cf::Outbox, b"o".to_vec(), b"4".to_vec());
    e.write(b).unwrap();
    assert_eq!(e.get(Cf::Entities, b"a").unwrap(), Some(b"2".to_vec()));
    assert_eq!(e.get(Cf::Entities, b"b").unwrap(), None);
    assert_eq!(e.get(Cf::Meta, b"m").unwrap(), Some(b"3".to_vec()));
    assert_eq!(e.get(Cf::Outbox, b"o").unwrap(), Some(b"4".to_vec()));
    // Keyspaces are independent.
    assert_eq!(e.get(Cf::Meta, b"a").unwrap(), None);
    assert_eq!(e.get(Cf::Outbox, b"m").unwrap(), None);
}

#[test]
fn scans_follow_unsigned_byte_order_within_their_bounds() {
    let e = engine();
    let keys: [&[u8]; 7] = [b"\xff\x00", b"\x80", b"\x00", b"\x7f", b"\xff", b"a\x00", b"a"];
    let mut b = WriteBatch::default();
    for k in keys {
        b.put(Cf::Entities, k.to_vec(), k.to_vec());
    }
    e.write(b).unwrap();
    let all = e.scan(Cf::Entities, &KeyRange { start: Vec::new(), end: None }, 100).unwrap();
    let order: Vec<Vec<u8>> = all.iter().map(|(k, _)| k.clone()).collect();
    let mut want: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
    want.sort();
    assert_eq!(order, want, "keys in unsigned lexicographic order, prefixes first");
    assert!(all.iter().all(|(k, v)| k == v));
    let bounded = e
        .scan(Cf::Entities, &KeyRange { start: b"\x7f".to_vec(), end: Some(b"\xff".to_vec()) }, 100)
        .unwrap();
    assert_eq!(bounded, vec![kv(b"\x7f", b"\x7f"), kv(b"\x80", b"\x80")]);
    let limited = e
        .scan(Cf::Entities, &KeyRange { start: b"\x80".to_vec(), end: None }, 2)
        .unwrap();
    assert_eq!(limited, vec![kv(b"\x80", b"\x80"), kv(b"\xff", b"\xff")]);
    assert!(e.scan(Cf::Meta, &KeyRange { start: Vec::new(), end: None }, 10).unwrap().is_empty());
}

#[test]
fn a_snapshot_does_not_see_later_writes() {
    let e = engine();
    let mut b = WriteBatch::default();
    b.put(Cf::Entities, b"k1".to_vec(), b"old".to_vec());
    b.put(Cf::Entities, b"k2".to_vec(), b"gone-later".to_vec());
    e.write(b).unwrap();
    let snap = e.snapshot().unwrap();
    let mut b = WriteBatch::default();
    b.put(Cf::Entities, b"k1".to_vec(), b"new".to_vec());
    b.delete(Cf::Entities, b"k2".to_vec());
    b.put(Cf::Entities, b"k3".to_vec(), b"added".to_vec());
    e.write(b).unwrap();
    assert_eq!(snap.get(Cf::Entities, b"k1").unwrap(), Some(b"old".to_vec()));
    assert_eq!(snap.get(Cf::Entities, b"k2").unwrap(), Some(b"gone-later".to_vec()));
    assert_eq!(snap.get(Cf::Entities, b"k3").unwrap(), None);
    let seen = snap.scan(Cf::Entities, &KeyRange { start: Vec::new(), end: None }, 10).unwrap();
    assert_eq!(seen, vec![kv(b"k1", b"old"), kv(b"k2", b"gone-later")]);
    assert_eq!(e.get(Cf::Entities, b"k1").unwrap(), Some(b"new".to_vec()));
    // The call-long view sees the state when it began.
    let mut inside = Vec::new();
    e.with_snapshot(&mut |r| {
        inside = r.scan(Cf::Entities, &KeyRange { start: Vec::new(), end: None }, 10).unwrap();
    })
    .unwrap();
    assert_eq!(inside, vec![kv(b"k1", b"new"), kv(b"k3", b"added")]);
}

#[test]
fn large_values_and_empty_batches_round_trip() {
    let e = engine();
    e.write(WriteBatch::default()).unwrap();
    let big: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 251) as u8).collect();
    let mut b = WriteBatch::default();
    b.put(Cf::Entities, b"big".to_vec(), big.clone());
    b.put(Cf::Entities, b"empty".to_vec(), Vec::new());
    e.write(b).unwrap();
    assert_eq!(e.get(Cf::Entities, b"big").unwrap(), Some(big));
    assert_eq!(e.get(Cf::Entities, b"empty").unwrap(), Some(Vec::new()));
}

fn fence(group: &[u8], token: i64) -> northwest_store::engine::GroupFence {
    northwest_store::engine::GroupFence {
        group: group.to_vec(),
        token,
    }
}

/// Fencing tokens, on an engine several processes write: a batch written
/// under a lease older than its group's newest recorded one is refused
/// whole, recording an older token is refused, and a refused call records
/// nothing. An engine one process owns (RocksDB) keeps no tokens: it says
/// so, and writes whatever tokens a batch carries.
#[test]
fn a_batch_under_a_superseded_lease_is_refused_whole() {
    use northwest_store::EngineError;
    let e = engine();
    let put = |k: &[u8], v: &[u8], fences| {
        let mut b = WriteBatch::default();
        b.put(Cf::Entities, k.to_vec(), v.to_vec());
        b.fences = fences;
        e.write(b)
    };
    if !e.checks_fences() {
        assert_eq!(e.name(), "rocksdb", "only RocksDB may ignore tokens");
        e.fence_groups(&[fence(b"g", 5)]).unwrap();
        put(b"a", b"1", vec![fence(b"g", 1)]).unwrap();
        assert_eq!(e.get(Cf::Entities, b"a").unwrap(), Some(b"1".to_vec()));
        return;
    }
    e.fence_groups(&[fence(b"g1", 10), fence(b"g2", 10)]).unwrap();
    put(b"a", b"1", vec![fence(b"g1", 10)]).unwrap();
    // A newer holder of g1 records its token before it reads.
    e.fence_groups(&[fence(b"g1", 12)]).unwrap();
    let mut b = WriteBatch::default();
    b.put(Cf::Entities, b"a".to_vec(), b"2".to_vec());
    b.put(Cf::Meta, b"m".to_vec(), b"2".to_vec());
    b.fences = vec![fence(b"g1", 10)];
    let err = e.write(b).unwrap_err();
    assert!(matches!(err, EngineError::Fenced(_)), "{err}");
    assert_eq!(e.get(Cf::Entities, b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(e.get(Cf::Meta, b"m").unwrap(), None, "nothing of it landed");
    // The old holder cannot record its token again either, and a call
    // with one stale token records none of the others.
    let err = e.fence_groups(&[fence(b"g1", 11)]).unwrap_err();
    assert!(matches!(err, EngineError::Fenced(_)), "{err}");
    let err = e
        .fence_groups(&[fence(b"g1", 13), fence(b"g2", 9)])
        .unwrap_err();
    assert!(matches!(err, EngineError::Fenced(_)), "{err}");
    put(b"a", b"3", vec![fence(b"g1", 12), fence(b"g2", 10)]).unwrap();
    assert_eq!(e.get(Cf::Entities, b"a").unwrap(), Some(b"3".to_vec()));
    // The holder's own token again (a retried call) is accepted.
    e.fence_groups(&[fence(b"g1", 12)]).unwrap();
}
