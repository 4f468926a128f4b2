//! End to end against the real ZooKeeper and broker: n1 and n2 as separate
//! processes; n1 journals, n2 applies; digests must match.

use std::time::Duration;

use northwest_tests::*;

fn pipeline(extra_n2: &str) -> Pipeline {
    Pipeline::start("e2e", extra_n2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn n2_converges_to_n1_under_concurrent_transactions() {
    let p = pipeline("apply_log = true");
    random_load(&p.n1.base, "app", 3000, 200, 16).await;
    wait_caught_up(&p.n1.base, &p.n2.base, Duration::from_secs(120)).await;
    let (d1, d2) = (
        digest(&p.n1.base, "app").await,
        digest(&p.n2.base, "app").await,
    );
    assert!(
        d1["count"].as_u64().unwrap() > 100,
        "load produced data: {d1}"
    );
    assert_eq!(d1, d2, "n1 and n2 differ");
    let s = get_json(&format!("{}/v1/admin/status", p.n2.base)).await;
    assert_eq!(s["apply"]["dead_lettered"], 0);
    // The outbox endpoint a drain polls gives status's marks (n1 shipped
    // everything: the marks are at the outbox's next entry).
    let s1 = get_json(&format!("{}/v1/admin/status", p.n1.base)).await;
    let o1 = get_json(&format!("{}/v1/admin/outbox", p.n1.base)).await;
    assert_eq!(o1["pending"], 0, "{o1}");
    assert_eq!(
        o1["shipped_below"], s1["outbox_shipped_below"],
        "{o1} vs {s1}"
    );
    assert_eq!(o1["next"], s1["outbox_next"], "{o1} vs {s1}");
    assert!(
        o1["next"].as_u64().unwrap() > 100,
        "the load's entries: {o1}"
    );
    assert_eq!(o1["shipped_below"], o1["next"], "{o1}");
    // The metrics endpoint exports lag and apply counters.
    let m = reqwest::get(format!("{}/metrics", p.n2.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("northwest_journal_lag_records"), "{m}");
    assert!(m.contains("northwest_apply_transactions_total"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_twice_leaves_n2_identical_and_poison_is_dead_lettered() {
    let p = pipeline("");
    random_load(&p.n1.base, "app", 800, 50, 8).await;
    wait_caught_up(&p.n1.base, &p.n2.base, Duration::from_secs(120)).await;
    let before = digest(&p.n2.base, "app").await;
    assert_eq!(before, digest(&p.n1.base, "app").await);

    let client = reqwest::Client::new();
    for body in [
        serde_json::json!({"from_offsets": [{"partition": 0, "offset": 3}, {"partition": 1, "offset": 0}]}),
        serde_json::json!({"from_beginning": true}),
    ] {
        let r = client
            .post(format!("{}/v1/admin/replay", p.n2.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        wait_caught_up(&p.n1.base, &p.n2.base, Duration::from_secs(120)).await;
        assert_eq!(digest(&p.n2.base, "app").await, before, "replay changed n2");
    }
    let s = get_json(&format!("{}/v1/admin/status", p.n2.base)).await;
    assert!(
        s["apply"]["writes_stale"].as_u64().unwrap() > 0,
        "the replay re-read records: {s}"
    );
    // A replay from a time after the last record re-reads nothing: every
    // partition stays at its end (it once rewound them all to 0).
    let stale = s["apply"]["writes_stale"].as_u64().unwrap();
    let future = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + 86_400_000;
    let r = client
        .post(format!("{}/v1/admin/replay", p.n2.base))
        .json(&serde_json::json!({"from_timestamp_ms": future}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    let ends = records_per_partition(&p.topic);
    let positions = body["rewound_to"].as_object().expect("positions");
    assert_eq!(positions.len(), ends.len(), "{body}");
    for (part, off) in positions {
        let end = ends[&part.parse::<i32>().unwrap()];
        assert_eq!(off.as_i64().unwrap(), end, "partition {part}: {body}");
    }
    wait_caught_up(&p.n1.base, &p.n2.base, Duration::from_secs(120)).await;
    let s = get_json(&format!("{}/v1/admin/status", p.n2.base)).await;
    assert_eq!(s["apply"]["writes_stale"].as_u64().unwrap(), stale, "{s}");
    // Bad replay requests are refused with a reason.
    let r = client
        .post(format!("{}/v1/admin/replay", p.n2.base))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // An offset beyond what the partition holds is refused, naming the range.
    let r = client
        .post(format!("{}/v1/admin/replay", p.n2.base))
        .json(&serde_json::json!({"from_offsets": [{"partition": 0, "offset": 1_000_000}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("holds offsets"),
        "{body}"
    );

    // A poison record and an unknown-schema record on the journal.
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let prod: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_addr())
        .create()
        .unwrap();
    let mut unknown = vec![0xC3, 0x01];
    unknown.extend_from_slice(&[9, 9, 9, 9, 9, 9, 9, 9]);
    unknown.extend_from_slice(b"whatever");
    for payload in [b"garbage".to_vec(), unknown] {
        prod.send(
            FutureRecord::to(&p.topic)
                .key("app/Acct:1")
                .payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }
    random_load(&p.n1.base, "app", 200, 50, 4).await;
    wait_caught_up(&p.n1.base, &p.n2.base, Duration::from_secs(120)).await;
    assert_eq!(
        digest(&p.n1.base, "app").await,
        digest(&p.n2.base, "app").await,
        "records after the poison were applied"
    );
    let s = get_json(&format!("{}/v1/admin/status", p.n2.base)).await;
    assert_eq!(s["apply"]["dead_lettered"], 2, "{s}");
    // Both are on the dead-letter topic with a reason header.
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_addr())
        .set("group.id", unique("dlq-check"))
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    c.subscribe(&[&format!("{}.dlq", p.topic)]).unwrap();
    let mut reasons = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while reasons.len() < 2 && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(500)) {
            let h = m.headers().expect("headers");
            let reason = h
                .iter()
                .find(|h| h.key == "northwest.error")
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).to_string());
            reasons.push(reason.expect("reason header"));
        }
    }
    assert_eq!(reasons.len(), 2, "dead letters: {reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("fingerprint")),
        "unknown schema is named: {reasons:?}"
    );
}

/// Every write the API accepts reaches n2: a value of exactly the API's
/// limit (1 MiB by default, above librdkafka's default message.max.bytes)
/// and a transaction near the body limit are journaled and applied, and the
/// writes after them are not stuck behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_size_values_and_transactions_reach_n2() {
    use base64::Engine as _;
    let p = pipeline("");
    let client = reqwest::Client::new();
    let (n1, n2) = (&p.n1.base, &p.n2.base);
    let big: Vec<u8> = (0..1usize << 20).map(|i| (i % 251) as u8).collect();
    let r = client
        .put(format!("{n1}/v1/ns/app/e/Big:1"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // Five 1 MiB values in one transaction: ~7 MB of JSON, under the 8 MiB body limit.
    let b64 = base64::engine::general_purpose::STANDARD.encode(&big);
    let ops: Vec<_> = (0..5)
        .map(|i| serde_json::json!({"op": "put", "key": format!("Bulk:1/Part:{i}"), "value_b64": b64}))
        .collect();
    let r = client
        .post(format!("{n1}/v1/ns/app/txn"))
        .json(&serde_json::json!({ "ops": ops }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = client
        .put(format!("{n1}/v1/ns/app/e/Small:1"))
        .body("after")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    wait_caught_up(n1, n2, Duration::from_secs(120)).await;
    for key in ["Big:1", "Bulk:1/Part:4"] {
        let got = client
            .get(format!("{n2}/v1/ns/app/e/{key}"))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 200, "{key} missing on n2");
        assert!(got.bytes().await.unwrap() == big, "{key} differs on n2");
    }
    let small = client
        .get(format!("{n2}/v1/ns/app/e/Small:1"))
        .send()
        .await
        .unwrap();
    assert_eq!(small.text().await.unwrap(), "after");
    assert_eq!(digest(n1, "app").await, digest(n2, "app").await);
    let s1 = get_json(&format!("{n1}/v1/admin/status")).await;
    assert!(s1["relay"]["last_error"].is_null(), "{s1}");
}

/// A node applying a journal is a read-only replica: client writes are
/// refused with 409 `replica` (reads are served) until it is promoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replica_refuses_writes_until_promoted() {
    let mut p = pipeline("");
    let c = reqwest::Client::new();
    let (n1, n2) = (p.n1.base.clone(), p.n2.base.clone());
    let (n1, n2) = (&n1, &n2);
    let r = c
        .put(format!("{n1}/v1/ns/app/e/A:1"))
        .body("from n1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_caught_up(n1, n2, Duration::from_secs(60)).await;
    let r = c
        .put(format!("{n2}/v1/ns/app/e/A:1"))
        .body("from n2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "replica", "{body}");
    assert!(body["error"].as_str().unwrap().contains(&p.topic), "{body}");
    // Every write route is refused, not only PUT.
    let r = c
        .delete(format!("{n2}/v1/ns/app/e/A:1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "DELETE on a replica");
    let r = c
        .post(format!("{n2}/v1/ns/app/txn"))
        .json(&serde_json::json!({"ops": [{"op": "delete", "key": "A:1"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "txn on a replica");
    let r = c.get(format!("{n2}/v1/ns/app/e/A:1")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "from n1", "reads are served");
    let r = c
        .post(format!("{n2}/v1/admin/promote"))
        .json(&serde_json::json!({"namespace": "app"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .put(format!("{n2}/v1/ns/app/e/B:1"))
        .body("promoted")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a promoted namespace takes writes");
    // Other namespaces stay read-only.
    let put = |ns: &str| c.put(format!("{n2}/v1/ns/{ns}/e/B:2")).body("x").send();
    assert_eq!(put("other").await.unwrap().status(), 409);
    // The promotion survives a restart; a demotion makes it read-only again.
    p.n2.kill9();
    p.n2.spawn();
    assert_eq!(
        put("app").await.unwrap().status(),
        200,
        "promotion lost on restart"
    );
    let r = c
        .delete(format!("{n2}/v1/admin/promote"))
        .json(&serde_json::json!({"namespace": "app"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(put("app").await.unwrap().status(), 409);
}

/// Partitions added to the journal topic are consumed: the apply loop
/// notices the new count and restarts to assign them (it once kept the
/// count it started with, and records on new partitions were never applied
/// while status said "caught up").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_added_later_are_applied() {
    let p = pipeline("");
    random_load(&p.n1.base, "app", 20, 5, 2).await;
    wait_caught_up(&p.n1.base, &p.n2.base, Duration::from_secs(60)).await;
    let alter = std::process::Command::new(stack_script())
        .args(["kafka", "kafka-topics", "--bootstrap-server", &kafka_addr()])
        .args(["--alter", "--topic", &p.topic, "--partitions", "6"])
        .output()
        .unwrap();
    assert!(alter.status.success(), "{alter:?}");
    // A journal record on a new partition, as n1 would write once its
    // producer refreshes the topic's metadata.
    let rec = northwest_schemas::JournalRecord {
        txn_id: u64::MAX / 2,
        namespace: "app".into(),
        entity_group: "Late:1".into(),
        commit_ts_ms: 1,
        origin: "n1".into(),
        ops: vec![northwest_schemas::JournalOp::Put {
            key: "Late:1".into(),
            value: b"on partition 5".to_vec(),
        }],
    };
    let payload = northwest_schemas::encode_journal(&rec).unwrap();
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let prod: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_addr())
        .create()
        .unwrap();
    prod.send(
        FutureRecord::to(&p.topic)
            .partition(5)
            .key(&rec.topic_key())
            .payload(&payload),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = reqwest::get(format!("{}/v1/ns/app/e/Late:1", p.n2.base))
            .await
            .unwrap();
        if r.status() == 200 {
            assert_eq!(r.text().await.unwrap(), "on partition 5");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the record on the new partition was never applied"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The lag tools operators already run see n2: Apache Kafka's own
/// consumer-groups tool reports n2's group on the journal topic with lag 0
/// once n2 caught up (offsets are committed to the group after each batch,
/// advisory; the store's offsets stay the truth).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_consumer_groups_tool_sees_n2_caught_up() {
    let p = pipeline("");
    random_load(&p.n1.base, "app", 300, 40, 4).await;
    wait_caught_up(&p.n1.base, &p.n2.base, Duration::from_secs(60)).await;
    // The group is named after the deployment (its ZooKeeper root) and the
    // node: every test's n2 would share `northwest-apply-n2` otherwise.
    let s2 = get_json(&format!("{}/v1/admin/status", p.n2.base)).await;
    let root = s2["zk_root"]
        .as_str()
        .unwrap()
        .trim_matches('/')
        .replace('/', "-");
    let group = format!("{root}-apply-n2");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = std::process::Command::new(stack_script())
            .args([
                "kafka",
                "kafka-consumer-groups",
                "--bootstrap-server",
                &kafka_addr(),
            ])
            .args(["--describe", "--group", &group])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        // GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG ...
        let rows: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f.len() >= 6 && f[1] == p.topic)
            .collect();
        let ends = records_per_partition(&p.topic);
        let caught_up = rows.len() == ends.len()
            && rows.iter().all(|f| {
                let part: i32 = f[2].parse().unwrap_or(-1);
                f[3].parse::<i64>().ok() == ends.get(&part).copied() && f[5] == "0"
            });
        if caught_up {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kafka-consumer-groups does not show n2 caught up on {}:\n{text}\n{}",
            p.topic,
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// No silent gap: records that expired (here deleted with Kafka's
/// kafka-delete-records tool) before n2 applied them halt that partition with
/// the reason in status and /readyz, while the other partitions go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_records_halt_their_partition_visibly() {
    let mut p = pipeline("");
    random_load(&p.n1.base, "app", 100, 40, 4).await;
    wait_caught_up(&p.n1.base, &p.n2.base, Duration::from_secs(60)).await;
    p.n2.kill9();
    random_load(&p.n1.base, "app", 400, 40, 4).await;
    // Wait until n1 shipped everything, then expire partition 0's backlog.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while get_json(&format!("{}/v1/admin/status", p.n1.base)).await["outbox_pending"] != 0 {
        assert!(std::time::Instant::now() < deadline, "n1 never shipped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    expire_partition_backlog(&p.topic, 0, p.dir.path());
    p.n2.spawn();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = get_json(&format!("{}/v1/admin/status", p.n2.base)).await;
        let halted = s["apply"]["partitions"]
            .as_array()
            .and_then(|ps| ps.iter().find(|x| x["partition"] == 0))
            .map(|x| x["halted"].clone())
            .unwrap_or_default();
        if let Some(why) = halted.as_str() {
            assert!(why.contains("expired"), "{why}");
            assert_eq!(s["apply"]["state"], "halted", "{s}");
            let r = reqwest::get(format!("{}/readyz", p.n2.base)).await.unwrap();
            assert_eq!(r.status(), 503);
            assert!(r.text().await.unwrap().contains("partition 0 halted"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "partition 0 was never halted: {s}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The other partitions are applied to their ends.
    let ends = records_per_partition(&p.topic);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let offs = get_json(&format!("{}/v1/admin/status", p.n2.base)).await;
        let done = offs["apply"]["partitions"].as_array().is_some_and(|ps| {
            ps.iter().filter(|x| x["partition"] != 0).all(|x| {
                let part = x["partition"].as_i64().unwrap() as i32;
                x["stored"].as_i64() == ends.get(&part).copied()
            })
        });
        if done {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "other partitions stalled: {offs}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
