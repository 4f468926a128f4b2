//! Leases taken and given back many per ZooKeeper multi-op (the snapshot
//! loader's batches), against the real ZooKeeper: exclusion across sessions
//! when batches overlap, hand-over on request of a lease a batch created, a
//! batch whose reply was lost, and idle leases reaped in batches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use northwest_store::{Coordinator, EntityGroup, Namespace, ZkConfig, ZkCoordinator};
use northwest_tests::{require_zk, unique, zk_coord};

fn long_leases(c: &mut ZkConfig) {
    c.lease_idle = Duration::from_secs(600);
    c.lease_max_hold = Duration::from_secs(600);
}

fn groups(range: std::ops::Range<u32>) -> Vec<EntityGroup> {
    let ns = Namespace::new("t").unwrap();
    range
        .map(|i| EntityGroup::parse(&ns, &format!("Row:{i}")).unwrap())
        .collect()
}

async fn lease_znodes(c: &ZkCoordinator, root: &str) -> usize {
    c.client()
        .list_children(&format!("{root}/locks"))
        .await
        .map_or(0, |v| v.len())
}

/// Two sessions lock overlapping sets of 700 groups over and over (multi-ops
/// of up to 500 creates, failing as a whole where the other holds one):
/// no group is ever held by both, and every lock passes its fence. Two
/// multi-group calls in different processes can each hold part of the
/// overlap and wait for the rest (leases are not taken in a global order):
/// that ends in `LockTimeout`, which the store retries; so does this test.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_batches_exclude_across_sessions() {
    let root = format!("/northwest-test/{}", unique("lease-batch"));
    let all = groups(0..1000);
    let in_use: Arc<HashMap<EntityGroup, AtomicBool>> = Arc::new(
        all.iter()
            .map(|g| (g.clone(), AtomicBool::new(false)))
            .collect(),
    );
    let mut tasks = Vec::new();
    for (i, range) in [(0u32, 0..700), (1, 300..1000)] {
        // Leases never lapse: they move only when the other session asks.
        let c = zk_coord(&root, |c| {
            long_leases(c);
            c.lock_timeout = Duration::from_secs(2);
        })
        .await;
        let (mine, in_use) = (groups(range), in_use.clone());
        tasks.push(tokio::spawn(async move {
            let mut timeouts = 0;
            for round in 0..6 {
                let locks = loop {
                    match c.lock_many(&mine).await {
                        Ok(locks) => break locks,
                        Err(northwest_store::CoordError::LockTimeout(..)) if timeouts < 20 => {
                            timeouts += 1;
                            // Unequal backoffs: one session goes first.
                            let ms = 50 + 250 * u64::from(i) + 37 * timeouts;
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                        }
                        Err(e) => panic!("lock_many: {e:?}"),
                    }
                };
                assert_eq!(locks.len(), mine.len());
                for l in &locks {
                    c.fence(l).expect("a batched lease passes its fence");
                    let was = in_use[l.group()].swap(true, Ordering::SeqCst);
                    assert!(!was, "session {i} round {round}: {} held twice", l.group());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                for l in &locks {
                    in_use[l.group()].store(false, Ordering::SeqCst);
                }
                futures::future::join_all(locks.into_iter().map(|l| c.release(l))).await;
            }
            eprintln!("session {i}: {timeouts} lock timeouts retried");
            c
        }));
    }
    let mut coords = Vec::new();
    for t in tasks {
        coords.push(t.await.expect("no group held twice"));
    }
    let held: usize = coords.iter().map(|c| c.leases_held()).sum();
    let znodes = lease_znodes(&coords[0], &root).await;
    assert_eq!(
        znodes, held,
        "every lease znode is one a session knows it holds"
    );
}

/// A lease created by a multi-op is watched like any other: another session
/// that asks for it gets it at once, not after `lease_idle`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batched_lease_is_handed_over_on_request() {
    let root = format!("/northwest-test/{}", unique("lease-batch-ask"));
    let (a, b) = (
        zk_coord(&root, long_leases).await,
        zk_coord(&root, long_leases).await,
    );
    let mine = groups(0..1200);
    let locks = a.lock_many(&mine).await.unwrap();
    futures::future::join_all(locks.into_iter().map(|l| a.release(l))).await;
    assert_eq!(a.leases_held(), 1200);
    assert_eq!(lease_znodes(&a, &root).await, 1200);
    let t = Instant::now();
    for g in [&mine[0], &mine[777], &mine[1199]] {
        let l = b.lock(g).await.expect("b gets a group a's batch holds");
        b.fence(&l).unwrap();
        b.release(l).await;
    }
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "b waited {:?}: a batched lease ignored the ask",
        t.elapsed()
    );
}

/// Idle leases are given back (in batches): the znodes a load left go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_batched_leases_are_reaped() {
    let root = format!("/northwest-test/{}", unique("lease-batch-reap"));
    let a = zk_coord(&root, |c| c.lease_idle = Duration::from_millis(300)).await;
    let locks = a.lock_many(&groups(0..1300)).await.unwrap();
    futures::future::join_all(locks.into_iter().map(|l| a.release(l))).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while lease_znodes(&a, &root).await > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(lease_znodes(&a, &root).await, 0, "idle leases were reaped");
    assert_eq!(a.leases_held(), 0);
    // Taken again afterwards: the reaped slots hold nothing stale.
    let locks = a.lock_many(&groups(0..1300)).await.unwrap();
    for l in &locks {
        a.fence(l).unwrap();
    }
}

/// A multi-op whose reply is lost may have created every znode: the groups
/// are then taken one by one, which recognises them as ours, so none is
/// orphaned and another session can take each.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_whose_reply_was_lost_is_not_orphaned() {
    let root = format!("/northwest-test/{}", unique("lease-batch-lost"));
    let proxy = northwest_tests::fault_proxy::FaultProxy::start(&require_zk()).await;
    let addr = proxy.addr.clone();
    let a = zk_coord(&root, |c| {
        c.connect = addr;
        c.session_timeout = Duration::from_secs(10);
        c.lock_timeout = Duration::from_secs(3);
        long_leases(c);
    })
    .await;
    let b = zk_coord(&root, |c| c.lock_timeout = Duration::from_secs(20)).await;
    let mine = groups(0..50);
    let session = a.client().session_id();
    proxy.drop_replies(true);
    let taking = {
        let (a, mine) = (a.clone(), mine.clone());
        tokio::spawn(async move {
            match a.lock_many(&mine).await {
                Ok(locks) => {
                    futures::future::join_all(locks.into_iter().map(|l| a.release(l))).await;
                    Ok(())
                }
                Err(e) => Err(e),
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.cut();
    proxy.drop_replies(false);
    let first = taking.await.unwrap();
    eprintln!("the batch whose reply was lost returned {first:?}");
    assert_eq!(
        a.client().session_id(),
        session,
        "the session must survive (otherwise its znodes vanish with it and nothing is tested)"
    );
    let t = Instant::now();
    for g in &mine {
        let l = b.lock(g).await.expect("b gets every group of the batch");
        b.release(l).await;
    }
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    assert_eq!(a.client().session_id(), session);
}

/// The reaper's multi-op delete lands but its reply is lost; meanwhile
/// another session creates one of those groups' znodes. The reaper's
/// fallback must remove only znodes still its own, not the newcomer's
/// lease (which would let a third process take the group beside it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reap_whose_reply_was_lost_leaves_a_newcomers_lease() {
    let root = format!("/northwest-test/{}", unique("lease-reap-lost"));
    let proxy = northwest_tests::fault_proxy::FaultProxy::start(&require_zk()).await;
    let addr = proxy.addr.clone();
    let a = zk_coord(&root, |c| {
        c.connect = addr;
        c.session_timeout = Duration::from_secs(10);
        c.lease_idle = Duration::from_millis(1500);
    })
    .await;
    let locks = a.lock_many(&groups(0..20)).await.unwrap();
    futures::future::join_all(locks.into_iter().map(|l| a.release(l))).await;
    let session = a.client().session_id();
    // Direct to ZooKeeper: sees the server's state, not A's.
    let other = zookeeper_client::Client::connector()
        .connect(&require_zk())
        .await
        .unwrap();
    let dir = format!("{root}/locks");
    let names = other.list_children(&dir).await.unwrap();
    assert_eq!(names.len(), 20);
    proxy.drop_replies(true);
    // The reaper's delete reaches ZooKeeper; its reply does not reach A.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !other.list_children(&dir).await.unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the reaper's delete never landed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let path = format!("{dir}/{}", names[0]);
    let opts =
        zookeeper_client::CreateMode::Ephemeral.with_acls(zookeeper_client::Acls::anyone_all());
    other.create(&path, &[], &opts).await.unwrap();
    proxy.cut();
    proxy.drop_replies(false);
    // A reconnects with its session and finishes its give-back.
    let deadline = Instant::now() + Duration::from_secs(15);
    while a.leases_held() != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(a.client().session_id(), session, "A's session must survive");
    assert_eq!(a.leases_held(), 0);
    let owner = other
        .check_stat(&path)
        .await
        .unwrap()
        .map(|s| s.ephemeral_owner);
    assert_eq!(
        owner,
        Some(other.session_id().0),
        "the newcomer's lease znode was deleted by A's fallback"
    );
}

/// Bytes of lease paths under `root` as ZooKeeper's `closeSession` record
/// lists them (path and a 4-byte length each).
async fn lease_bytes(c: &ZkCoordinator, root: &str) -> usize {
    let dir = format!("{root}/locks");
    let children = c.client().list_children(&dir).await.unwrap_or_default();
    children.iter().map(|k| dir.len() + 1 + k.len() + 4).sum()
}

/// ZooKeeper logs, when a session ends, one record naming every ephemeral
/// znode the session held; a server cannot read back a record above its
/// `jute.maxbuffer` (1 MB by default), so an ensemble that logged one
/// cannot restart (the dev stack's once refused with "Unreasonable length
/// = 2441509"). 12,000 groups locked 500 at a time with leases that never
/// lapse (a snapshot load's pattern): every lock is granted, and the lease
/// znodes the session holds in ZooKeeper never pass its cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_never_holds_more_lease_bytes_than_its_cap() {
    let root = format!("/northwest-test/{}", unique("lease-cap"));
    let cap = 96 << 10;
    let c = zk_coord(&root, |c| {
        long_leases(c);
        c.max_lease_bytes = cap;
    })
    .await;
    let all = groups(0..12_000);
    let mut most = 0;
    for chunk in all.chunks(500) {
        let locks = c.lock_many(chunk).await.expect("granted");
        assert_eq!(locks.len(), chunk.len());
        let held = lease_bytes(&c, &root).await;
        most = most.max(held);
        assert!(held <= cap, "{held} bytes of lease paths held, cap {cap}");
        for l in locks {
            c.release(l).await;
        }
    }
    // Without the cap the session would hold all 12,000 (~0.6 MB).
    assert!(most > cap / 2, "the cap was approached: {most} of {cap}");
}

/// A request cancelled while it waits for a group's slot (a client that
/// hung up) gives back the room it set aside in its session's ledger: 400
/// such requests on a busy group, then fresh groups are still granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelled_requests_give_their_lease_room_back() {
    let root = format!("/northwest-test/{}", unique("lease-cancel"));
    let c = zk_coord(&root, |c| {
        long_leases(c);
        c.max_lease_bytes = 8 << 10;
        c.lock_timeout = Duration::from_secs(3);
    })
    .await;
    let busy = groups(0..1).pop().unwrap();
    let held = c.lock(&busy).await.unwrap();
    for _ in 0..400 {
        let r = tokio::time::timeout(Duration::from_millis(1), c.lock(&busy)).await;
        assert!(
            r.is_err(),
            "the busy group's slot is ours: the request waits"
        );
    }
    c.release(held).await;
    let fresh = groups(1..51);
    let locks = c.lock_many(&fresh).await.expect("room for fresh groups");
    assert_eq!(locks.len(), 50);
}
