//! Apache Kafka with three brokers: the journal runs with replication factor
//! 3, `min.insync.replicas = 2` and `acks=all`; the leader of a journal
//! partition is killed (-9) mid-stream and restarted. Every acknowledged
//! write reaches n2, none is applied twice, and every journal record is
//! processed exactly once.
//!
//! The cluster is a stack of its own (`deploy/stack.sh up --brokers 3` with
//! its own directory and ports), so the shared dev stack keeps serving the
//! other tests. Needs Java and the Kafka jars `deploy/stack.sh install` puts
//! in the cache; fails loudly when the cluster cannot start.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use northwest_store::{LocalCoordinator, RocksEngine, Store, StoreConfig};
use northwest_tests::*;
use rdkafka::consumer::{BaseConsumer, Consumer};

const ZK_PORT: u16 = 12181;
const KAFKA_PORT: u16 = 19092;

/// The broker id leading `partition` of `topic`, once the topic exists.
fn leader_of(brokers: &str, topic: &str, partition: i32) -> Option<i32> {
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("kafka client");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let md = c.fetch_metadata(Some(topic), Duration::from_secs(10));
        let found = md.ok().and_then(|md| {
            let t = md.topics().iter().find(|t| t.name() == topic)?;
            let p = t.partitions().iter().find(|p| p.id() == partition)?;
            Some((p.leader(), p.replicas().len()))
        });
        match found {
            Some((leader, replicas)) if leader >= 0 => {
                assert_eq!(replicas, 3, "journal partitions have 3 replicas");
                return Some(leader);
            }
            _ if std::time::Instant::now() > deadline => return None,
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

fn open_store(dir: &Path) -> Arc<Store> {
    let engine = Arc::new(RocksEngine::open(dir, false).expect("open n2's store"));
    Store::open(
        engine,
        Arc::new(LocalCoordinator::default()),
        StoreConfig::default(),
    )
    .expect("store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_a_journal_leader_loses_and_repeats_nothing() {
    let cluster = OwnStack::start(3, ZK_PORT, KAFKA_PORT);
    let addrs = cluster.addrs();
    let dir = tempfile::tempdir().unwrap();
    let root = format!("/northwest-test/{}", unique("cluster"));
    let topic = unique("journal");
    let n1 = NodeProc::start(
        dir.path(),
        "n1",
        &node_toml_at(
            &addrs,
            "n1",
            dir.path(),
            free_port(),
            &root,
            &topic,
            "replication_factor = 3",
        ),
    );
    let mut n2 = NodeProc::start(
        dir.path(),
        "n2",
        &node_toml_at(
            &addrs,
            "n2",
            dir.path(),
            free_port(),
            &root,
            &topic,
            "replication_factor = 3\napply_log = true",
        ),
    );
    let load = LoadRun::start(&n1.base, "app", 100, 8);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let Some(leader) = leader_of(&addrs.1, &topic, 0) else {
        let st = get_json(&format!("{}/v1/admin/status", n1.base)).await;
        panic!(
            "journal topic {topic} has no partition 0 with a leader after 60 s; n1: {st}\n{}",
            n1.log_tail()
        );
    };
    assert!(cluster.stack(&["kill-broker", &leader.to_string()]));
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(cluster.stack(&["start-broker", &leader.to_string()]));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let acked = load.stop().await;
    assert_eq!(
        acked.failed.load(Ordering::Relaxed),
        0,
        "failed requests: {:?}",
        acked.errors.lock().unwrap()
    );
    assert!(acked.issued.load(Ordering::Relaxed) > 300);
    wait_caught_up(&n1.base, &n2.base, Duration::from_secs(120)).await;
    assert_holds_acked(&n2.base, "app", &acked).await;
    assert_eq!(digest(&n1.base, "app").await, digest(&n2.base, "app").await);

    assert!(
        n2.stop().is_some_and(|s| s.success()),
        "n2 drains on SIGTERM"
    );
    let store = open_store(&dir.path().join("n2"));
    let counts = northwest_consumer::offsets::delivery_counts(&store, &topic).unwrap();
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).take(10).collect();
    assert!(
        twice.is_empty(),
        "records processed more than once: {twice:?}"
    );
    let dups = store.apply_log_duplicates().unwrap();
    assert!(dups.is_empty(), "transactions applied twice: {dups:?}");
    drop(n1);
}
