//! The store against the real ZooKeeper: cross-session exclusion, lease
//! release on session expiry, monotonic ids.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use northwest_store::{
    Coordinator, Engine, EntityGroup, KeyPath, MemEngine, Namespace, Op, Store, StoreConfig,
    ZkConfig,
};
use northwest_tests::{bin_path, require_zk, unique, zk_coord};
use zookeeper_client as zk;

/// Two coordinators with separate ZooKeeper sessions share one engine (like
/// two datastore servers over one database): only the ZooKeeper lock keeps
/// their read-modify-write increments from losing updates.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sessions_lose_no_increment() {
    // Short leases so ownership really moves between the sessions.
    increments_from_two_sessions(Duration::from_millis(5), Duration::from_millis(2)).await;
}

/// The same with leases that would never expire during the test: ownership
/// moves only because the waiting session asks for the group and the holder
/// hands it over after its current transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sessions_hand_leases_over_on_request() {
    increments_from_two_sessions(Duration::from_secs(600), Duration::from_secs(600)).await;
}

async fn increments_from_two_sessions(lease_idle: Duration, lease_max_hold: Duration) {
    let root = format!("/northwest-test/{}", unique("incr"));
    let engine: Arc<dyn Engine> = Arc::new(MemEngine::new());
    let ns = Namespace::new("t").unwrap();
    let key = KeyPath::parse("Counter:1").unwrap();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let c = zk_coord(&root, |c| {
            c.lease_idle = lease_idle;
            c.lease_max_hold = lease_max_hold;
        })
        .await;
        let store = Store::open(engine.clone(), c, StoreConfig::default()).unwrap();
        for _ in 0..4 {
            let (store, ns, key) = (store.clone(), ns.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..50 {
                    let g = EntityGroup::of(&ns, &key);
                    let mut txn = store.begin(&g).await.unwrap();
                    let n: u64 = txn
                        .get(&key)
                        .unwrap()
                        .map(|e| String::from_utf8(e.value).unwrap().parse().unwrap())
                        .unwrap_or(0);
                    // Widen the race window: without exclusion this loses updates.
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    txn.put(&key, (n + 1).to_string().into_bytes(), None)
                        .unwrap();
                    txn.commit().await.unwrap();
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let check = Store::open(
        engine,
        zk_coord(&root, |_| {}).await,
        StoreConfig::default(),
    )
    .unwrap();
    let v = check.get(&ns, &key).unwrap().unwrap();
    assert_eq!(String::from_utf8(v.value).unwrap(), "400");
}

/// An idle lease another session asks for is given back at once, not after
/// `lease_idle`; the session that held it no longer counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_lease_is_given_back_when_asked() {
    let root = format!("/northwest-test/{}", unique("handover"));
    let long = |c: &mut ZkConfig| {
        c.lease_idle = Duration::from_secs(600);
        c.lease_max_hold = Duration::from_secs(600);
    };
    let (a, b) = (zk_coord(&root, long).await, zk_coord(&root, long).await);
    let ns = Namespace::new("t").unwrap();
    let g = EntityGroup::of(&ns, &KeyPath::parse("Acct:1").unwrap());
    let held = a.lock(&g).await.unwrap();
    a.release(held).await;
    assert_eq!(
        a.leases_held(),
        1,
        "a keeps its lease after the transaction"
    );
    let t = Instant::now();
    let lock = b.lock(&g).await.expect("b gets the group");
    let waited = t.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "b waited {waited:?}: the hand-over signal was not honoured"
    );
    b.fence(&lock).expect("b's lease is valid");
    // a's watcher finishes its hand-over just after b's create succeeded.
    let deadline = Instant::now() + Duration::from_secs(2);
    while a.leases_held() != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(a.leases_held(), 0, "a gave its lease back");
    // And back again while b's transaction is still open: a waits for it.
    let a2 = {
        let (a, g) = (a.clone(), g.clone());
        tokio::spawn(async move { a.lock(&g).await.map(|l| l.group().clone()) })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !a2.is_finished(),
        "a must not get the group during b's transaction"
    );
    b.release(lock).await;
    let got = tokio::time::timeout(Duration::from_secs(5), a2)
        .await
        .expect("a gets the group once b's transaction ends")
        .unwrap()
        .unwrap();
    assert_eq!(got, g);
}

/// If-Match optimistic retries across two sessions: every increment lands once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn if_match_increments_from_two_sessions() {
    let root = format!("/northwest-test/{}", unique("ifmatch"));
    let engine: Arc<dyn Engine> = Arc::new(MemEngine::new());
    let ns = Namespace::new("t").unwrap();
    let key = KeyPath::parse("Counter:2").unwrap();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let store = Store::open(
            engine.clone(),
            zk_coord(&root, |_| {}).await,
            StoreConfig::default(),
        )
        .unwrap();
        for _ in 0..3 {
            let (store, ns, key) = (store.clone(), ns.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                let mut done = 0;
                while done < 30 {
                    let cur = store.get(&ns, &key).unwrap();
                    let (n, v) = cur
                        .map(|e| {
                            (
                                String::from_utf8(e.value).unwrap().parse::<u64>().unwrap(),
                                e.version,
                            )
                        })
                        .unwrap_or((0, Default::default()));
                    let op = Op::Put {
                        key: key.clone(),
                        value: (n + 1).to_string().into_bytes(),
                        if_version: Some(v),
                    };
                    match store.run(&ns, &[op]).await {
                        Ok(_) => done += 1,
                        Err(northwest_store::StoreError::VersionMismatch { .. }) => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let v = Store::open(
        engine,
        zk_coord(&root, |_| {}).await,
        StoreConfig::default(),
    )
    .unwrap()
    .get(&ns, &key)
    .unwrap()
    .unwrap();
    assert_eq!(String::from_utf8(v.value).unwrap(), "180");
}

/// A lock holder killed with SIGKILL keeps its lock until its ZooKeeper
/// session expires; then another session gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_holders_lock_is_released_after_session_expiry() {
    let zk = require_zk();
    let root = format!("/northwest-test/{}", unique("kill"));
    let session_ms = 4000u64;
    let mut child = Command::new(bin_path("lock_holder"))
        .args([&zk, &root, "Blog:1", &session_ms.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn lock_holder");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("LOCKED"), "holder said {line:?}");

    let ns = Namespace::new("t").unwrap();
    let g = EntityGroup::parse(&ns, "Blog:1").unwrap();
    let c = zk_coord(&root, |c| c.lock_timeout = Duration::from_millis(500)).await;
    assert!(
        c.lock(&g).await.is_err(),
        "lock must be exclusive while the holder lives"
    );

    child.kill().unwrap(); // SIGKILL: no clean session close
    child.wait().unwrap();
    let killed = Instant::now();
    let c = zk_coord(&root, |c| c.lock_timeout = Duration::from_secs(30)).await;
    let lock = c
        .lock(&g)
        .await
        .expect("lock after the holder's session expired");
    let waited = killed.elapsed();
    drop(lock);
    assert!(
        waited >= Duration::from_millis(session_ms / 2),
        "released after {waited:?}: sooner than the session timeout"
    );
    assert!(
        waited <= Duration::from_millis(session_ms * 3),
        "released after {waited:?}"
    );
    eprintln!("lock released {waited:?} after SIGKILL (session timeout {session_ms} ms)");
}

/// Ids from two sessions never repeat, and every commit's version is above
/// the version it replaced even when the sessions interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_increase_across_sessions() {
    let root = format!("/northwest-test/{}", unique("ids"));
    let engine: Arc<dyn Engine> = Arc::new(MemEngine::new());
    let ns = Namespace::new("t").unwrap();
    let key = KeyPath::parse("K:1").unwrap();
    let a = Store::open(
        engine.clone(),
        zk_coord(&root, |_| {}).await,
        StoreConfig::default(),
    )
    .unwrap();
    let b = Store::open(
        engine.clone(),
        zk_coord(&root, |_| {}).await,
        StoreConfig::default(),
    )
    .unwrap();
    let mut last = northwest_store::Version(0);
    for i in 0..20 {
        let s = if i % 2 == 0 { &a } else { &b };
        let v = s
            .run(
                &ns,
                &[Op::Put {
                    key: key.clone(),
                    value: vec![i],
                    if_version: None,
                }],
            )
            .await
            .unwrap();
        assert!(v > last, "version {v} after {last}");
        last = v;
    }
}

/// The cutover gate records proxy and promotion state through the
/// coordinator's current session: after the session expires and the
/// coordinator reconnects, recording works again (the gate once kept the
/// first session's client, so after a ZooKeeper outage longer than the
/// session timeout every cutover failed with "session expired" forever;
/// found by `northwest-chaos --seed 1003`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_records_through_a_new_session_after_expiry() {
    use northwest_node::cutover::{Gate, Promotion, ProxyRecord};
    let root = format!("/northwest-test/{}", unique("gate-expiry"));
    // Through a fault proxy: cutting ZooKeeper off for longer than the
    // session timeout makes the server expire the session.
    let proxy = northwest_tests::fault_proxy::FaultProxy::start(&require_zk()).await;
    let addr = proxy.addr.clone();
    let c = zk_coord(&root, |c| {
        c.connect = addr;
        c.session_timeout = Duration::from_secs(4);
    })
    .await;
    let gate = Gate::new(
        Some(ProxyRecord {
            zk: c.clone(),
            dir: format!("{root}/nodes/n2"),
        }),
        Some("journal".into()),
    );
    gate.promote("app", Promotion::Operator { force: false }, |_| {})
        .await
        .expect("record under the first session");
    let old = c.client().session_id();
    proxy.drop_requests(true);
    proxy.drop_replies(true);
    tokio::time::sleep(Duration::from_secs(8)).await;
    proxy.cut();
    proxy.drop_requests(false);
    proxy.drop_replies(false);
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.client().session_id() == old {
        assert!(
            Instant::now() < deadline,
            "the coordinator never replaced its expired session"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gate.promote("other", Promotion::Operator { force: false }, |_| {})
        .await
        .expect("record under the new session");
    gate.load().await.expect("read back under the new session");
}

/// A lease create whose reply is lost (the request reached ZooKeeper, the
/// answer did not come back, the connection was cut and the client
/// reconnected with the same session) leaves no orphaned lease: another
/// process gets the group while the first process's session lives on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_create_whose_reply_was_lost_is_not_orphaned() {
    let root = format!("/northwest-test/{}", unique("lost-reply"));
    let proxy = northwest_tests::fault_proxy::FaultProxy::start(&require_zk()).await;
    let addr = proxy.addr.clone();
    let a = zk_coord(&root, |c| {
        c.connect = addr;
        c.session_timeout = Duration::from_secs(10);
        c.lock_timeout = Duration::from_secs(3);
    })
    .await;
    let b = zk_coord(&root, |c| c.lock_timeout = Duration::from_secs(20)).await;
    let ns = Namespace::new("t").unwrap();
    let g = EntityGroup::parse(&ns, "Blog:1").unwrap();
    let session = a.client().session_id();
    proxy.drop_replies(true);
    let taking = {
        let (a, g) = (a.clone(), g.clone());
        tokio::spawn(async move { a.lock(&g).await.map(drop) })
    };
    // The create reaches ZooKeeper; its reply is swallowed. Then the
    // connection breaks and heals.
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.cut();
    proxy.drop_replies(false);
    let first = taking.await.unwrap();
    eprintln!("the lock whose reply was lost returned {first:?}");
    assert_eq!(
        a.client().session_id(),
        session,
        "the session must survive (otherwise its znodes vanish with it and nothing is tested)"
    );
    let t = Instant::now();
    let lock = b
        .lock(&g)
        .await
        .expect("another process gets the group: the lease was not orphaned");
    drop(lock);
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    assert_eq!(a.client().session_id(), session);
}

/// A lease hand-back whose delete never reaches ZooKeeper (the connection
/// breaks, the client reconnects with the same session) is retried, not
/// forgotten: the idle lease does not stay with a live session forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_lease_hand_back_is_not_orphaned() {
    let root = format!("/northwest-test/{}", unique("lost-release"));
    let proxy = northwest_tests::fault_proxy::FaultProxy::start(&require_zk()).await;
    let addr = proxy.addr.clone();
    let a = zk_coord(&root, |c| {
        c.connect = addr;
        c.session_timeout = Duration::from_secs(10);
        c.lease_idle = Duration::from_millis(1000);
    })
    .await;
    let b = zk_coord(&root, |c| c.lock_timeout = Duration::from_secs(20)).await;
    let ns = Namespace::new("t").unwrap();
    let g = EntityGroup::parse(&ns, "Blog:1").unwrap();
    drop(a.lock(&g).await.expect("first lock"));
    let session = a.client().session_id();
    // The idle lease is given back while requests are lost.
    proxy.drop_requests(true);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    proxy.cut();
    proxy.drop_requests(false);
    let t = Instant::now();
    let lock = b
        .lock(&g)
        .await
        .expect("another process gets the group: the lease was given back");
    drop(lock);
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    assert_eq!(
        a.client().session_id(),
        session,
        "the session must survive (otherwise its znodes vanish with it and nothing is tested)"
    );
}

/// With credentials, the deployment's znodes are closed to every other
/// client: a session without them (or with a wrong password) cannot read the
/// id counter, take or fake a lease, blacklist a transaction or alter the
/// root; a second process with the same credentials works as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn znodes_created_with_credentials_are_closed_to_others() {
    use northwest_store::ZkDigest;
    let root = format!("/northwest-test/{}", unique("acl"));
    let digest = ZkDigest::new("northwest:acl-test-password").unwrap();
    let a = zk_coord(&root, |c| c.auth = digest.clone()).await;
    let ns = Namespace::new("t").unwrap();
    let g = EntityGroup::of(&ns, &KeyPath::parse("Acct:1").unwrap());
    let held = a.lock(&g).await.unwrap();
    a.release(held).await;

    let zk_addr = require_zk();
    let anon = zk::Client::connector().connect(&zk_addr).await.unwrap();
    let wrong = ZkDigest::new("northwest:not-the-password")
        .unwrap()
        .connector()
        .connect(&zk_addr)
        .await
        .unwrap();
    let opts = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    for c in [&anon, &wrong] {
        let denied = |r: Result<(), zk::Error>, what: &str| {
            assert!(matches!(r, Err(zk::Error::NoAuth)), "{what}: {r:?}");
        };
        denied(
            c.get_data(&format!("{root}/txn_counter")).await.map(|_| ()),
            "read the id counter",
        );
        denied(
            c.set_data(&format!("{root}/txn_counter"), b"1", None)
                .await
                .map(|_| ()),
            "bump the id counter",
        );
        denied(
            c.create(&format!("{root}/locks/t:Acct:2"), &[], &opts)
                .await
                .map(|_| ()),
            "take a lease",
        );
        denied(
            c.create(&format!("{root}/blacklist/42"), &[], &opts)
                .await
                .map(|_| ()),
            "blacklist",
        );
        denied(
            c.set_data(&root, b"x", None).await.map(|_| ()),
            "alter the root",
        );
    }
    // The same credentials in another process: locks work as usual.
    let b = zk_coord(&root, |c| c.auth = digest.clone()).await;
    let held = b.lock(&g).await.unwrap();
    b.release(held).await;
}

/// A lock asked for while the process's ZooKeeper session is expiring (cut
/// off past its timeout) is granted under the coordinator's next session,
/// within the lock timeout, instead of failing the transaction with
/// "session lost".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_asked_for_as_the_session_expires_is_granted_under_the_next() {
    let root = format!("/northwest-test/{}", unique("lock-expiry"));
    let proxy = northwest_tests::fault_proxy::FaultProxy::start(&require_zk()).await;
    let addr = proxy.addr.clone();
    let c = zk_coord(&root, |c| {
        c.connect = addr;
        c.session_timeout = Duration::from_secs(4);
        c.lock_timeout = Duration::from_secs(40);
    })
    .await;
    let ns = Namespace::new("t").unwrap();
    let group = |i: u32| EntityGroup::parse(&ns, &format!("Row:{i}")).unwrap();
    let first = c.lock(&group(0)).await.expect("under the first session");
    c.release(first).await;
    let old = c.client().session_id();
    proxy.drop_requests(true);
    proxy.drop_replies(true);
    tokio::time::sleep(Duration::from_secs(8)).await;
    // Asked while the first session is still the coordinator's current one.
    let asking = tokio::spawn({
        let (c, g) = (c.clone(), group(1));
        async move { c.lock(&g).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.cut();
    proxy.drop_requests(false);
    proxy.drop_replies(false);
    let lock = asking
        .await
        .unwrap()
        .expect("granted under the next session");
    assert_ne!(c.client().session_id(), old, "a new session");
    c.fence(&lock)
        .expect("its lease passes the commit's fence: taken under the new session");
    c.release(lock).await;
}
