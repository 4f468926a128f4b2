//! A transaction that fails after taking its id is blacklisted in ZooKeeper
//! and none of its writes is ever visible. Own test binary: it arms a
//! process-global crash point.

use std::sync::Arc;
use std::time::Duration;

use northwest_store::failpoint;
use northwest_store::{
    Coordinator, Engine, EntityGroup, KeyPath, MemEngine, Namespace, ReplicatedWrite, Store,
    StoreConfig, StoreError, TxnId, Version, ZkConfig, ZkCoordinator,
};
use northwest_tests::{require_zk, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_transaction_is_blacklisted_and_invisible() {
    let root = format!("/northwest-test/{}", unique("bl"));
    let cfg = ZkConfig {
        connect: require_zk(),
        root: root.clone(),
        ..ZkConfig::default()
    };
    let engine: Arc<dyn Engine> = Arc::new(MemEngine::new());
    let c1 = Arc::new(ZkCoordinator::connect(cfg.clone()).await.unwrap());
    let store = Store::open(
        engine.clone(),
        c1.clone(),
        StoreConfig {
            journal: true,
            ..StoreConfig::default()
        },
    )
    .unwrap();
    let ns = Namespace::new("t").unwrap();
    let key = KeyPath::parse("Blog:9/Post:1").unwrap();

    let ok = store
        .run(
            &ns,
            &[northwest_store::Op::Put {
                key: key.clone(),
                value: b"v1".to_vec(),
                if_version: None,
            }],
        )
        .await
        .unwrap();

    failpoint::arm("store::before_commit_write", failpoint::Action::Error);
    let mut txn = store.begin(&EntityGroup::of(&ns, &key)).await.unwrap();
    txn.put(&key, b"v2-never".to_vec(), None).unwrap();
    let err = txn.commit().await.unwrap_err();
    failpoint::disarm_all();
    assert!(matches!(err, StoreError::Injected(_)), "{err}");

    // The failed id is the next one after `ok` in this process's block.
    let failed = TxnId(ok.0 + 1);
    assert!(c1.is_blacklisted(failed));
    assert_eq!(store.get(&ns, &key).unwrap().unwrap().value, b"v1");
    assert_eq!(
        store.outbox().len(),
        1,
        "the failed transaction left no journal entry"
    );

    // Another session (another deployment) learns of it from ZooKeeper...
    let c2 = Arc::new(ZkCoordinator::connect(cfg).await.unwrap());
    let mut seen = false;
    for _ in 0..50 {
        if c2.is_blacklisted(failed) {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen, "blacklist entry not visible to a second session");
    // ...and never applies a replicated write carrying it.
    let n2 = Store::open(Arc::new(MemEngine::new()), c2, StoreConfig::default()).unwrap();
    let stats = n2
        .apply_replicated(
            &[ReplicatedWrite {
                ns: ns.clone(),
                key: key.clone(),
                version: Version(failed.0),
                commit_ts_ms: 0,
                value: Some(b"v2-never".to_vec()),
            }],
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(stats.blacklisted, 1);
    assert!(n2.get(&ns, &key).unwrap().is_none());
}
