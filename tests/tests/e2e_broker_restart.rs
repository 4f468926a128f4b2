//! The broker goes down while n1 writes and n2 applies, longer than n1's
//! `message.timeout.ms`, so deliveries really fail and the relay re-sends:
//! nothing is lost, nothing is reordered within an entity group, and the
//! outage shows in n1's status while it lasts. Own test binary: it stops the
//! shared dev-stack broker, so no other test may run beside it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use northwest_tests::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

fn stack() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/stack.sh")
}

fn stack_cmd(args: &[&str]) {
    let ok = Command::new(stack()).args(args).status().unwrap().success();
    assert!(ok, "deploy/stack.sh {args:?} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_restart_loses_and_reorders_nothing() {
    // Deliveries time out after 3 s: a 10 s outage fails them for real.
    let p = Pipeline::start_with("brk", "\n[kafka]\n\"message.timeout.ms\" = \"3000\"", "");
    let (n1, n2, topic) = (&p.n1, &p.n2, p.topic.clone());
    // An idle source beside it: no write would ever make its relay notice
    // the outage, so readiness must probe the broker itself.
    let idle = NodeProc::start(
        p.dir.path(),
        "idle",
        &node_toml(
            "n1",
            &p.dir.path().join("idle"),
            free_port(),
            &format!("/northwest-test/{}", unique("idle")),
            &unique("idle-journal"),
            "",
        ),
    );
    let ready = |base: String| async move {
        reqwest::get(format!("{base}/readyz"))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    // Ready once its relay created the journal topic.
    let up = std::time::Instant::now() + Duration::from_secs(60);
    while ready(idle.base.clone()).await != 200 {
        assert!(
            std::time::Instant::now() < up,
            "idle source never ready before the outage"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut idle_unready = false;
    let load = {
        let base = n1.base.clone();
        tokio::spawn(async move { random_load(&base, "app", 8000, 100, 8).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Hard stop of the broker mid-stream, then a restart with its data.
    stack_cmd(&["kill-broker", "1"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut seen_error = serde_json::Value::Null;
    let client = reqwest::Client::new();
    let mut n = 0;
    while std::time::Instant::now() < deadline {
        // Commits keep coming during the outage: their deliveries time out.
        n += 1;
        let r = client
            .put(format!("{}/v1/ns/app/e/Outage:{n}", n1.base))
            .body(format!("{n}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "n1 takes writes while the broker is down");
        let s1 = get_json(&format!("{}/v1/admin/status", n1.base)).await;
        if !s1["relay"]["last_error"].is_null() {
            seen_error = s1["relay"]["last_error"].clone();
        }
        idle_unready |= ready(idle.base.clone()).await == 503;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stack_cmd(&["start-broker", "1"]);
    assert!(
        seen_error.is_string(),
        "n1's status showed no relay error during a 10 s broker outage"
    );
    assert!(
        idle_unready,
        "an idle source's /readyz stayed 200 during a 10 s broker outage"
    );
    let back = std::time::Instant::now() + Duration::from_secs(60);
    while ready(idle.base.clone()).await != 200 {
        assert!(
            std::time::Instant::now() < back,
            "idle source not ready after the broker returned"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    load.await.unwrap();
    wait_caught_up(&n1.base, &n2.base, Duration::from_secs(240)).await;
    assert_eq!(
        digest(&n1.base, "app").await,
        digest(&n2.base, "app").await,
        "n2 differs after a broker restart"
    );

    // Per group, the journal holds transactions in commit order (re-sent
    // duplicates may repeat an earlier record, never jump back past a newer one).
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_addr())
        .set("group.id", unique("order"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    // Assigned, not subscribed: a group join right after the broker restart
    // can take longer than the idle cut-off below.
    let md = c
        .fetch_metadata(Some(&topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(&topic, p.id(), rdkafka::Offset::Beginning)
            .unwrap();
    }
    assert!(tpl.count() > 0, "journal topic {topic} has no partitions");
    c.assign(&tpl).unwrap();
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    let mut idle = 0;
    while idle < 10 {
        match c.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                idle = 0;
                let rec = northwest_schemas::decode_journal(m.payload().unwrap()).unwrap();
                if !seen.insert(rec.txn_id) {
                    continue;
                }
                let prev = last.entry(rec.entity_group.clone()).or_insert(0);
                assert!(
                    rec.txn_id > *prev,
                    "group {} went from txn {} to {}",
                    rec.entity_group,
                    prev,
                    rec.txn_id
                );
                *prev = rec.txn_id;
            }
            _ => idle += 1,
        }
    }
    assert!(
        seen.len() >= 8000,
        "journal holds {} transactions",
        seen.len()
    );
}
