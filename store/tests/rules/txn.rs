// The store's transaction rules, written once and run on every engine: the
// including module defines `engine()`, a fresh empty engine per call
// (store/tests/txn_rules.rs: memory and RocksDB; tests/tests/pg_store.rs:
// PostgreSQL on the dev stack's server).

use std::collections::BTreeMap;
use std::sync::Arc;

use northwest_store::{
    EntityGroup, KeyPath, KeyRange, LocalCoordinator, MarkerGcRule, MarkerGcStats, Namespace, Op,
    ReplicatedWrite, Store, StoreConfig, StoreError, Version,
};
use proptest::prelude::*;

fn store(journal: bool) -> Arc<Store> {
    Store::open(
        engine(),
        Arc::new(LocalCoordinator::default()),
        StoreConfig {
            journal,
            max_value_bytes: 64,
            ..StoreConfig::default()
        },
    )
    .unwrap()
}

fn ns() -> Namespace {
    Namespace::new("app").unwrap()
}

fn k(s: &str) -> KeyPath {
    KeyPath::parse(s).unwrap()
}

fn put(key: &str, v: &[u8]) -> Op {
    Op::Put {
        key: k(key),
        value: v.to_vec(),
        if_version: None,
    }
}

#[tokio::test]
async fn multi_op_commit_is_atomic_and_versioned() {
    let s = store(false);
    let v = s
        .run(&ns(), &[put("Blog:1", b"a"), put("Blog:1/Post:1", b"b")])
        .await
        .unwrap();
    assert_eq!(s.get(&ns(), &k("Blog:1")).unwrap().unwrap().version, v);
    assert_eq!(
        s.get(&ns(), &k("Blog:1/Post:1")).unwrap().unwrap().version,
        v
    );
    let v2 = s.run(&ns(), &[put("Blog:1", b"c")]).await.unwrap();
    assert!(v2 > v);
}

#[tokio::test]
async fn cross_group_transactions_are_refused() {
    let s = store(false);
    let err = s
        .run(&ns(), &[put("Blog:1", b"a"), put("Blog:2", b"b")])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::CrossGroup { .. }));
    assert!(
        s.get(&ns(), &k("Blog:1")).unwrap().is_none(),
        "nothing of a refused transaction is written"
    );
    let mut txn = s
        .begin(&EntityGroup::of(&ns(), &k("Blog:1")))
        .await
        .unwrap();
    assert!(matches!(
        txn.put(&k("Blog:2/Post:1"), vec![], None),
        Err(StoreError::CrossGroup { .. })
    ));
}

#[tokio::test]
async fn if_version_mismatch_changes_nothing() {
    let s = store(false);
    let v = s.run(&ns(), &[put("Blog:1", b"a")]).await.unwrap();
    let stale = Op::Put {
        key: k("Blog:1"),
        value: b"x".to_vec(),
        if_version: Some(Version(v.0 - 1)),
    };
    let err = s
        .run(&ns(), &[put("Blog:1/Post:2", b"p"), stale])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::VersionMismatch { .. }));
    assert!(s.get(&ns(), &k("Blog:1/Post:2")).unwrap().is_none());
    // 0 = must not exist.
    let create = Op::Put {
        key: k("Blog:1"),
        value: b"y".to_vec(),
        if_version: Some(Version(0)),
    };
    assert!(s.run(&ns(), &[create]).await.is_err());
    let ok = Op::Put {
        key: k("Blog:1"),
        value: b"z".to_vec(),
        if_version: Some(v),
    };
    s.run(&ns(), &[ok]).await.unwrap();
}

#[tokio::test]
async fn delete_leaves_a_versioned_marker() {
    let s = store(false);
    s.run(&ns(), &[put("Blog:1", b"a")]).await.unwrap();
    let d = s
        .run(
            &ns(),
            &[Op::Delete {
                key: k("Blog:1"),
                if_version: None,
            }],
        )
        .await
        .unwrap();
    assert!(s.get(&ns(), &k("Blog:1")).unwrap().is_none());
    let marker = s.get_record(&ns(), &k("Blog:1")).unwrap().unwrap();
    assert!(marker.is_deleted());
    assert_eq!(marker.version, d);
    assert!(s.scan(&KeyRange::namespace(&ns()), 10).unwrap().is_empty());
    // A replicated put older than the marker does not resurrect it.
    let stale = ReplicatedWrite {
        ns: ns(),
        key: k("Blog:1"),
        version: Version(d.0 - 1),
        commit_ts_ms: 0,
        value: Some(b"old".to_vec()),
    };
    let st = s
        .apply_replicated(std::slice::from_ref(&stale), vec![])
        .await
        .unwrap();
    assert_eq!(st.stale, 1);
    assert!(s.get(&ns(), &k("Blog:1")).unwrap().is_none());
    // GC removes markers past both horizons only; counting removes nothing.
    let rule = |committed_before_ms, generation_at_most, remove| MarkerGcRule {
        committed_before_ms,
        generation_at_most,
        remove,
    };
    let gc = |r| s.gc_delete_markers(r);
    let gen = marker
        .marker_gen
        .expect("a local delete records its generation");
    let kept = |markers| MarkerGcStats {
        markers,
        removed: 0,
    };
    assert_eq!(gc(rule(i64::MAX, None, false)).await.unwrap(), kept(1));
    assert_eq!(gc(rule(0, None, true)).await.unwrap(), kept(1));
    assert_eq!(
        gc(rule(i64::MAX, Some(gen - 1), true)).await.unwrap(),
        kept(1)
    );
    // A stale record running into the marker renews its generation.
    assert_eq!(s.advance_marker_generation().unwrap(), gen);
    let st = s.apply_replicated(&[stale], vec![]).await.unwrap();
    assert_eq!(st.stale, 1);
    assert_eq!(gc(rule(i64::MAX, Some(gen), true)).await.unwrap(), kept(1));
    assert_eq!(
        gc(rule(i64::MAX, Some(gen + 1), true)).await.unwrap(),
        MarkerGcStats {
            markers: 0,
            removed: 1
        }
    );
    assert!(s.get_record(&ns(), &k("Blog:1")).unwrap().is_none());
}

#[tokio::test]
async fn reads_see_own_writes_and_abort_discards() {
    let s = store(false);
    let g = EntityGroup::of(&ns(), &k("Blog:1"));
    let mut t = s.begin(&g).await.unwrap();
    t.put(&k("Blog:1"), b"a".to_vec(), None).unwrap();
    assert_eq!(t.get(&k("Blog:1")).unwrap().unwrap().value, b"a");
    t.delete(&k("Blog:1"), None).unwrap();
    assert!(t.get(&k("Blog:1")).unwrap().is_none());
    t.abort().await;
    assert!(s.get_record(&ns(), &k("Blog:1")).unwrap().is_none());
}

#[tokio::test]
async fn oversized_values_are_refused() {
    let s = store(false);
    let err = s.run(&ns(), &[put("Blog:1", &[0; 65])]).await.unwrap_err();
    assert!(matches!(
        err,
        StoreError::TooLarge {
            size: 65,
            limit: 64
        }
    ));
}

#[tokio::test]
async fn journal_entry_rides_the_commit() {
    let s = store(true);
    let v = s
        .run(
            &ns(),
            &[
                put("Blog:1", b"a"),
                Op::Delete {
                    key: k("Blog:1/Post:1"),
                    if_version: None,
                },
            ],
        )
        .await
        .unwrap();
    let entries = s.outbox().read(0, 10).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].1.key, "app/Blog:1");
    let rec = northwest_schemas::decode_journal(&entries[0].1.record).unwrap();
    assert_eq!(rec.txn_id, v.0);
    assert_eq!(rec.ops.len(), 2);
    s.outbox().ack(&[entries[0].0]).unwrap();
    assert_eq!(s.outbox().len(), 0);
}

#[tokio::test]
async fn outbox_limit_rejects_writes_when_full() {
    let s = Store::open(
        engine(),
        Arc::new(LocalCoordinator::default()),
        StoreConfig {
            journal: true,
            outbox_limit: 2,
            ..StoreConfig::default()
        },
    )
    .unwrap();
    s.run(&ns(), &[put("A:1", b"1")]).await.unwrap();
    s.run(&ns(), &[put("A:2", b"1")]).await.unwrap();
    let err = s.run(&ns(), &[put("A:3", b"1")]).await.unwrap_err();
    assert!(matches!(err, StoreError::OutboxFull(2)));
    assert!(s.get(&ns(), &k("A:3")).unwrap().is_none());
}

/// A transaction whose journal record could exceed the journal's message
/// limit is refused before it commits; every accepted one fits, so the relay
/// is never handed an entry the producer must refuse.
#[tokio::test]
async fn journal_records_over_the_message_limit_are_refused() {
    let limit = 4096;
    let s = Store::open(
        engine(),
        Arc::new(LocalCoordinator::default()),
        StoreConfig {
            journal: true,
            max_value_bytes: 1024,
            journal_message_limit: limit,
            ..StoreConfig::default()
        },
    )
    .unwrap();
    let mut refused = 0;
    for n in 1..=8usize {
        let ops: Vec<Op> = (0..n)
            .map(|i| put(&format!("Doc:1/Part:{i}"), &[7; 1000]))
            .collect();
        match s.run(&ns(), &ops).await {
            Ok(_) => {
                let entries = s.outbox().read(0, 100).unwrap();
                let (seq, e) = entries.last().unwrap();
                // Kafka's per-record framing is well under 128 bytes.
                assert!(
                    e.record.len() + e.key.len() + 128 <= limit,
                    "{n} ops: {} bytes accepted over the limit {limit}",
                    e.record.len()
                );
                s.outbox().ack(&[*seq]).unwrap();
            }
            Err(StoreError::JournalTooLarge { size, limit: l }) => {
                assert_eq!(l, limit);
                assert!(size > limit);
                refused += 1;
                assert!(s
                    .get(&ns(), &k(&format!("Doc:1/Part:{}", n - 1)))
                    .unwrap()
                    .is_none());
            }
            Err(e) => panic!("{n} ops: {e}"),
        }
    }
    // With 1,000-byte values the bound admits three ops under 4,096 bytes.
    assert_eq!(refused, 5, "1-3 ops accepted, 4-8 refused");
    assert_eq!(s.outbox().len(), 0, "nothing refused reached the outbox");
}

/// With local coordination, a restarted process continues transaction ids
/// above every id handed out before, and above any stored version.
#[tokio::test]
async fn local_ids_continue_after_restart() {
    let engine = engine();
    let cfg = StoreConfig {
        id_block: 10,
        ..StoreConfig::default()
    };
    let open = || {
        Store::open(
            engine.clone(),
            Arc::new(LocalCoordinator::default()),
            cfg.clone(),
        )
        .unwrap()
    };
    let s = open();
    let mut last = Version(0);
    for i in 0..25 {
        last = s.run(&ns(), &[put(&format!("A:{i}"), b"x")]).await.unwrap();
    }
    drop(s);
    let s = open();
    let v = s.run(&ns(), &[put("B:1", b"y")]).await.unwrap();
    assert!(v > last, "new id {v} after restart must exceed {last}");

    // A version far above any block (e.g. replicated from elsewhere).
    let far = Version(1_000_000);
    let w = ReplicatedWrite {
        ns: ns(),
        key: k("C:1"),
        version: far,
        commit_ts_ms: 1,
        value: Some(b"z".to_vec()),
    };
    s.apply_replicated(&[w], vec![]).await.unwrap();
    let v = s.run(&ns(), &[put("C:1", b"w")]).await.unwrap();
    assert!(v > far, "{v} must exceed the stored {far}");
}

#[derive(Debug, Clone)]
enum ModelOp {
    Put(u8, u8, u8),
    Delete(u8, u8),
    CondPut(u8, u8, bool),
}

fn model_op() -> impl Strategy<Value = ModelOp> {
    prop_oneof![
        (0u8..3, 0u8..3, any::<u8>()).prop_map(|(g, i, v)| ModelOp::Put(g, i, v)),
        (0u8..3, 0u8..3).prop_map(|(g, i)| ModelOp::Delete(g, i)),
        (0u8..3, 0u8..3, any::<bool>()).prop_map(|(g, i, m)| ModelOp::CondPut(g, i, m)),
    ]
}

proptest! {
    /// The store agrees with a map model; versions grow strictly; a
    /// conditional put succeeds exactly when its expected version is current.
    #[test]
    fn store_matches_model(ops in prop::collection::vec(model_op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let s = store(false);
            let mut model: BTreeMap<String, (Vec<u8>, Version)> = BTreeMap::new();
            let mut last = Version(0);
            for op in ops {
                let key_of = |g: u8, i: u8| if i == 0 { format!("G:{g}") } else { format!("G:{g}/I:{i}") };
                match op {
                    ModelOp::Put(g, i, v) => {
                        let key = key_of(g, i);
                        let ver = s.run(&ns(), &[put(&key, &[v])]).await.unwrap();
                        prop_assert!(ver > last);
                        last = ver;
                        model.insert(key, (vec![v], ver));
                    }
                    ModelOp::Delete(g, i) => {
                        let key = key_of(g, i);
                        let ver = s.run(&ns(), &[Op::Delete { key: k(&key), if_version: None }]).await.unwrap();
                        prop_assert!(ver > last);
                        last = ver;
                        model.remove(&key);
                    }
                    ModelOp::CondPut(g, i, matching) => {
                        let key = key_of(g, i);
                        let cur = model.get(&key).map(|e| e.1).unwrap_or(Version(0));
                        let expect = if matching { cur } else { Version(cur.0 + 1) };
                        let r = s.run(&ns(), &[Op::Put { key: k(&key), value: vec![1], if_version: Some(expect) }]).await;
                        prop_assert_eq!(r.is_ok(), matching);
                        if let Ok(ver) = r { last = ver; model.insert(key, (vec![1], ver)); }
                    }
                }
            }
            let scanned = s.scan(&KeyRange::namespace(&ns()), 1000).unwrap();
            let got: BTreeMap<String, (Vec<u8>, Version)> =
                scanned.into_iter().map(|e| (e.key.to_string(), (e.value, e.version))).collect();
            prop_assert_eq!(got, model);
            Ok(())
        })?;
    }
}

/// A version applied from another deployment (a delete n2 took, applied
/// here from its reverse journal) bounds the next local version from below
/// even once this copy's marker is collected: n2 still holds the marker and
/// would skip a lower-versioned new write as stale forever.
#[tokio::test]
async fn local_versions_exceed_every_applied_version_after_marker_gc() {
    let s = store(false);
    // A local write takes an id block starting low.
    let first = s.run(&ns(), &[put("Other:1", b"x")]).await.unwrap();
    // A delete from another deployment, with a version far above the block.
    let remote = Version(first.0 + 50_000);
    s.apply_replicated(
        &[ReplicatedWrite {
            ns: ns(),
            key: k("Acct:7"),
            version: remote,
            commit_ts_ms: 1,
            value: None,
        }],
        Vec::new(),
    )
    .await
    .unwrap();
    // Its marker is collected here (age-only GC on a source).
    let gc = s
        .gc_delete_markers(MarkerGcRule {
            committed_before_ms: i64::MAX,
            generation_at_most: None,
            remove: true,
        })
        .await
        .unwrap();
    assert_eq!(gc.removed, 1);
    assert!(s.get(&ns(), &k("Acct:7")).unwrap().is_none());
    let v = s.run(&ns(), &[put("Acct:7", b"new")]).await.unwrap();
    assert!(
        v > remote,
        "a new write got version {v:?}, below the delete {remote:?} another copy still holds"
    );
}
