//! Lease fencing tokens with the real ZooKeeper and PostgreSQL: a process
//! that still believes it holds an entity group after its lease passed to
//! another process (its session expired while it was stopped or cut off)
//! cannot commit over the new holder.

use std::sync::Arc;
use std::time::Duration;

use northwest_store::{
    Engine, EngineError, EntityGroup, KeyPath, Namespace, Op, Store, StoreConfig, StoreError,
};
use northwest_tests::{pg_engine, require_zk, unique, zk_coord};
use zookeeper_client as zk;

async fn store(root: &str, engine: &Arc<dyn Engine>) -> Arc<Store> {
    // Leases that neither idle out nor expire during the test: the lease
    // moves only because the test takes it away.
    let c = zk_coord(root, |c| {
        c.lease_idle = Duration::from_secs(600);
        c.lease_max_hold = Duration::from_secs(600);
    })
    .await;
    Store::open(engine.clone(), c, StoreConfig::default()).unwrap()
}

fn put(key: &KeyPath, v: &str) -> Op {
    Op::Put {
        key: key.clone(),
        value: v.as_bytes().to_vec(),
        if_version: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_holder_whose_lease_passed_to_another_process_cannot_commit() {
    let root = format!("/northwest-test/{}", unique("fence"));
    let engine = pg_engine();
    let ns = Namespace::new("t").unwrap();
    let key = KeyPath::parse("Acct:1").unwrap();
    let group = EntityGroup::of(&ns, &key);
    let a = store(&root, &engine).await;
    a.run(&ns, &[put(&key, "a1")]).await.unwrap();
    // A starts a transaction under the lease it holds.
    let mut txn = a.begin(&group).await.unwrap();
    txn.put(&key, b"a2".to_vec(), None).unwrap();
    // The lease goes without A noticing (what expiring its session does
    // while A is stopped: the ephemeral znode is deleted), and B takes the
    // group and reads it.
    let zk = zk::Client::connect(&require_zk()).await.unwrap();
    zk.delete(&format!("{root}/locks/t:Acct:1"), None)
        .await
        .expect("A's lease znode");
    let b = store(&root, &engine).await;
    let mut tb = b.begin(&group).await.unwrap();
    assert_eq!(tb.get(&key).unwrap().unwrap().value, b"a1");
    // A resumes and commits: refused, nothing of it written (B's read
    // stays true).
    let err = txn.commit().await.unwrap_err();
    assert!(
        matches!(err, StoreError::Engine(EngineError::Fenced(_))),
        "{err}"
    );
    assert!(err.is_retriable(), "a retry takes the lease afresh");
    assert_eq!(b.get(&ns, &key).unwrap().unwrap().value, b"a1");
    tb.put(&key, b"b1".to_vec(), None).unwrap();
    tb.commit().await.unwrap();
    assert_eq!(b.get(&ns, &key).unwrap().unwrap().value, b"b1");
    // A gave the lease up: its next transaction asks B for the group like
    // any other process, and commits under a newer token.
    a.run(&ns, &[put(&key, "a3")]).await.unwrap();
    assert_eq!(b.get(&ns, &key).unwrap().unwrap().value, b"a3");
    b.run(&ns, &[put(&key, "b2")]).await.unwrap();
    assert_eq!(a.get(&ns, &key).unwrap().unwrap().value, b"b2");
}
