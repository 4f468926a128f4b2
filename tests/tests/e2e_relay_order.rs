//! A group's journal records reach the topic in commit order even when the
//! broker is away longer than n1's `message.timeout.ms`: an earlier record
//! that librdkafka would time out must not land after a later one of the same
//! group, and n2 never shows a state of the group that n1 never had (the
//! later write's effect without the earlier one's). Own test binary: it
//! stops the shared dev-stack broker, so no other test may run beside it.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use northwest_tests::*;
use rdkafka::consumer::{BaseConsumer, Consumer};

fn stack_cmd(args: &[&str]) {
    let stack = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/stack.sh");
    let ok = Command::new(stack).args(args).status().unwrap().success();
    assert!(ok, "deploy/stack.sh {args:?} failed");
}

async fn put(c: &reqwest::Client, base: &str, key: &str, v: &str) {
    let r = c
        .put(format!("{base}/v1/ns/app/e/{key}"))
        .body(v.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "PUT {key} on {base}");
}

async fn present(c: &reqwest::Client, base: &str, key: &str) -> bool {
    let r = c
        .get(format!("{base}/v1/ns/app/e/{key}"))
        .send()
        .await
        .unwrap();
    r.status() == 200
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_stays_in_commit_order_across_a_delivery_timeout() {
    // librdkafka's own rule would fail a record after 20 s; the producer
    // reconnects within half a second of the broker's return.
    let p = Pipeline::start_with(
        "relayord",
        "\n[kafka]\n\"message.timeout.ms\" = \"20000\"\n\"reconnect.backoff.max.ms\" = \"500\"",
        "",
    );
    let (n1, n2) = (p.n1.base.clone(), p.n2.base.clone());
    let c = reqwest::Client::new();
    // The journal topic exists and n2 applies it before the outage.
    put(&c, &n1, "Warm:1", "w").await;
    wait_caught_up(&n1, &n2, Duration::from_secs(120)).await;

    // One broker: the partition of Acct:7 is on the broker this test stops.
    let brokers = {
        let c: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", kafka_addr())
            .create()
            .unwrap();
        c.fetch_metadata(None, Duration::from_secs(10))
            .unwrap()
            .brokers()
            .len()
    };
    assert_eq!(brokers, 1, "this test needs the one-broker dev stack");
    stack_cmd(&["kill-broker", "1"]);
    let t0 = Instant::now();
    // A: a child of group Acct:7; B, 19 s later, its root. Under librdkafka's
    // rule A fails at 20 s while B waits until 39 s; the broker is back in
    // between, so B would be delivered first and A re-sent after it.
    put(&c, &n1, "Acct:7/Item:1", "a").await;
    tokio::time::sleep_until((t0 + Duration::from_millis(19_000)).into()).await;
    put(&c, &n1, "Acct:7", "b").await;
    tokio::time::sleep_until((t0 + Duration::from_millis(20_800)).into()).await;
    let status = get_json(&format!("{n1}/v1/admin/status")).await;
    assert!(
        status["relay"]["last_error"].is_string(),
        "n1's status shows no relay problem after 20 s without a broker: {status}"
    );
    let broker = {
        // start-broker returns once the broker serves: poll n2 meanwhile.
        std::thread::spawn(|| stack_cmd(&["start-broker", "1"]))
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let b = present(&c, &n2, "Acct:7").await;
        let a = present(&c, &n2, "Acct:7/Item:1").await;
        assert!(
            a || !b,
            "n2 shows Acct:7 without Acct:7/Item:1: a state of the group n1 never had"
        );
        if a && b {
            break;
        }
        assert!(Instant::now() < deadline, "n2 never received both writes");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    broker.join().unwrap();
    wait_caught_up(&n1, &n2, Duration::from_secs(120)).await;

    // On the topic, each record first appears after every earlier one of
    // its group (a re-sent duplicate may repeat an earlier record later).
    let records = journal_records(&p.topic);
    let group: Vec<_> = records
        .iter()
        .filter(|r| r.entity_group == "Acct:7" || r.entity_group.ends_with("/Acct:7"))
        .cloned()
        .collect();
    let ids: Vec<u64> = group.iter().map(|r| r.txn_id).collect();
    assert_eq!(
        assert_group_order(&group),
        2,
        "both writes of Acct:7 are on the topic: {ids:?}"
    );
    assert_eq!(digest(&n1, "app").await, digest(&n2, "app").await);
}
