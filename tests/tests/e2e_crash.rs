//! Crash safety: kill -9 the n2 apply process at random moments (20+ times)
//! while n1 writes; after restarts, digests are equal and the apply log shows
//! no transaction whose effect was applied twice.

use std::sync::Arc;
use std::time::Duration;

use northwest_store::{LocalCoordinator, RocksEngine, Store, StoreConfig};
use northwest_tests::*;
use rand::Rng;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_n2_repeatedly_loses_and_repeats_nothing() {
    let Pipeline {
        dir,
        n1,
        mut n2,
        topic,
    } = Pipeline::start("crash", "apply_log = true\napply_batch = 200");
    let load = {
        let base = n1.base.clone();
        tokio::spawn(async move { random_load(&base, "app", 6000, 300, 8).await })
    };
    let kills = 22;
    for i in 0..kills {
        let wait = rand::rng().random_range(50..400);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        n2.kill9();
        if i % 5 == 0 {
            // Sometimes stay down a while so a backlog builds up.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        n2.spawn();
    }
    load.await.unwrap();
    wait_caught_up(&n1.base, &n2.base, Duration::from_secs(180)).await;
    let (d1, d2) = (digest(&n1.base, "app").await, digest(&n2.base, "app").await);
    assert!(d1["count"].as_u64().unwrap() > 100);
    assert_eq!(d1, d2, "n1 and n2 differ after {kills} kill -9s");

    // Inspect n2's store directly: every applied transaction had its effect once.
    assert!(
        n2.stop().is_some_and(|s| s.success()),
        "n2 drains and exits 0 on SIGTERM"
    );
    let engine = Arc::new(RocksEngine::open(&dir.path().join("n2"), false).unwrap());
    let store = Store::open(
        engine,
        Arc::new(LocalCoordinator::default()),
        StoreConfig::default(),
    )
    .unwrap();
    // Every journal record was processed exactly once: counted in the same
    // atomic batch as the offsets, whatever the version check decided. An
    // offset store not atomic with the data would count a record twice
    // after a kill; a skipped record would be missing.
    let counts = northwest_consumer::offsets::delivery_counts(&store, &topic).unwrap();
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).take(10).collect();
    assert!(
        twice.is_empty(),
        "records processed more than once: {twice:?}"
    );
    let total = records_in_topic(&topic);
    assert_eq!(
        counts.len() as i64,
        total,
        "every journal record processed once ({} of {total})",
        counts.len()
    );
    let dups = store.apply_log_duplicates().unwrap();
    assert!(dups.is_empty(), "transactions applied twice: {dups:?}");
    assert!(
        store.apply_log_len().unwrap() > 1000,
        "apply log recorded the transactions"
    );
}

/// The dead-letter topic is written exactly once per poison record, even
/// when n2 dies after the dead letter was sent and before its offset moved
/// past the record (the crash point `consumer::after_dead_letter`): the
/// restarted n2 meets the record again and does not send it twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_letter_is_written_once_across_a_crash() {
    let Pipeline {
        dir: _dir,
        n1,
        mut n2,
        topic,
    } = Pipeline::start("dlq-once", "");
    random_load(&n1.base, "app", 50, 10, 2).await;
    wait_caught_up(&n1.base, &n2.base, Duration::from_secs(60)).await;
    n2.kill9();
    let mut n2 = n2.with_env(
        "NORTHWEST_CRASH_POINTS",
        "consumer::after_dead_letter=abort",
    );
    n2.spawn();
    {
        use rdkafka::producer::{FutureProducer, FutureRecord};
        let prod: FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", kafka_addr())
            .create()
            .unwrap();
        prod.send(
            FutureRecord::to(&topic)
                .key("app/Acct:1")
                .payload(b"garbage"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }
    let exited = tokio::task::block_in_place(|| n2.wait_exit(Duration::from_secs(60)));
    assert!(
        exited.is_some(),
        "n2 did not reach the crash point after the dead letter; log:\n{}",
        n2.log_tail()
    );
    n2.clear_env();
    n2.spawn();
    random_load(&n1.base, "app", 50, 10, 2).await;
    wait_caught_up(&n1.base, &n2.base, Duration::from_secs(60)).await;
    assert_eq!(digest(&n1.base, "app").await, digest(&n2.base, "app").await);
    let dlq = format!("{topic}.dlq");
    let n = tokio::task::spawn_blocking(move || committed_records(&dlq))
        .await
        .unwrap();
    assert_eq!(n, 1, "dead letters on the topic (read_committed)");
}

/// Records a read_committed consumer sees on `topic`, from the beginning.
fn committed_records(topic: &str) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_addr())
        .set("group.id", unique("dlq-count"))
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut n = 0;
    let mut idle = std::time::Instant::now();
    while idle.elapsed() < Duration::from_secs(5) {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            m.unwrap();
            n += 1;
            idle = std::time::Instant::now();
        }
    }
    n
}
