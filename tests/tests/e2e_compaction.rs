//! The snapshot topic is compacted for real (a small `segment.ms` makes
//! Kafka's log cleaner run on it), and a fresh target loaded from the
//! compacted topic plus the journal, without n1's help, equals n1.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use northwest_tests::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

fn stack(args: &[&str]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/stack.sh");
    let ok = Command::new(script).args(args).status().unwrap().success();
    assert!(ok, "deploy/stack.sh {args:?} failed");
}

/// Every record of `topic` from its beginning to its high-water marks.
fn read_all(topic: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_addr())
        .set("group.id", unique("read"))
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut left = 0;
    for p in md.topics()[0].partitions() {
        let (low, high) = c
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .unwrap();
        if high > low {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .unwrap();
            left += 1;
        }
        let _ = low;
    }
    c.assign(&tpl).unwrap();
    let highs: std::collections::HashMap<i32, i64> = md.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            let (_, h) = c
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .unwrap();
            (p.id(), h)
        })
        .collect();
    let mut out = Vec::new();
    let mut done = std::collections::HashSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while done.len() < left && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(500)) {
            out.push((
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
            ));
            if m.offset() + 1 >= highs[&m.partition()] {
                done.insert(m.partition());
            }
        }
    }
    assert_eq!(done.len(), left, "read {topic} to its high-water marks");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fresh_target_from_compacted_snapshot_and_journal_equals_n1() {
    let p = Pipeline::start("cmp", "");
    random_load(&p.n1.base, "app", 1500, 100, 8).await;
    let out = Command::new(bin_path("northwest"))
        .args(["migrate", "--from", &p.n1.base, "--to", &p.n2.base])
        .args(["--namespace", "app", "--quiet", "--stop-after", "snapshot"])
        .args(["--zk", &zk_addr(), "--brokers", &kafka_addr()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = northwest_migrate::load_state(
        &zk_addr(),
        None,
        &northwest_tests::admin_client(),
        &p.n1.base,
        "app",
    )
    .await
    .unwrap();
    let topic = st.snapshot_topic.clone();
    // Writes after the snapshot: overwrites and deletes only the journal has.
    random_load(&p.n1.base, "app", 500, 100, 8).await;

    // Superseded copies of every row, then a cleaner-friendly topic config.
    let rows = read_all(&topic);
    assert!(rows.len() > 100, "snapshot rows: {}", rows.len());
    let prod: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_addr())
        .create()
        .unwrap();
    for (k, v) in rows.iter().chain(rows.iter()) {
        prod.send(
            FutureRecord::to(&topic).key(k).payload(v),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }
    stack(&[
        "kafka",
        "kafka-configs",
        "--bootstrap-server",
        &kafka_addr(),
        "--alter",
        "--entity-type",
        "topics",
        "--entity-name",
        &topic,
        "--add-config",
        "segment.ms=100,min.cleanable.dirty.ratio=0.01",
    ]);
    // New records roll the segments; the cleaner then compacts the old ones.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut written = rows.len() * 3;
    let mut now = usize::MAX;
    while std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (k, v) = &rows[0];
        prod.send(
            FutureRecord::to(&topic).key(k).payload(v),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        written += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
        now = read_all(&topic).len();
        if now < written {
            break;
        }
    }
    assert!(
        now < written,
        "the log cleaner compacted the snapshot topic ({now} records of {written} written)"
    );

    // A fresh target: the compacted snapshot topic plus the journal.
    let n3 = NodeProc::start(
        p.dir.path(),
        "n3",
        &node_toml(
            "n3",
            p.dir.path(),
            free_port(),
            &format!("/northwest-test/{}", unique("n3")),
            &p.topic,
            "",
        ),
    );
    let r = reqwest::Client::new()
        .post(format!("{}/v1/admin/load-snapshot", n3.base))
        .json(&serde_json::json!({ "topic": topic }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let s = get_json(&format!("{}/v1/admin/status", n3.base)).await;
        if s["loader"]["caught_up"] == true {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "n3 did not load the snapshot: {s}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_caught_up(&p.n1.base, &n3.base, Duration::from_secs(120)).await;
    assert_eq!(
        digest(&p.n1.base, "app").await,
        digest(&n3.base, "app").await,
        "n3 from the compacted snapshot + journal differs from n1"
    );
}
