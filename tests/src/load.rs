//! Load against a node's HTTP API, the record of what clients were told, and
//! the checks of a node's contents against that record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::stack::kafka_addr;

/// Random transactions against a node: puts, deletes and multi-op
/// transactions over `groups` entity groups. Panics on any failed request.
pub async fn random_load(base: &str, ns: &str, txns: usize, groups: u64, concurrency: usize) {
    use base64::Engine as _;
    use rand::Rng;
    let client = ::reqwest::Client::new();
    let per = txns.div_ceil(concurrency);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, base, ns) = (client.clone(), base.to_string(), ns.to_string());
        tasks.push(tokio::spawn(async move {
            for _ in 0..per {
                let (g, i, kind, len) = {
                    let mut r = rand::rng();
                    (
                        r.random_range(0..groups),
                        r.random_range(0..8u32),
                        r.random_range(0..10u32),
                        r.random_range(0..300usize),
                    )
                };
                let value: Vec<u8> = (0..len)
                    .map(|x| (x as u8).wrapping_mul(31).wrapping_add(kind as u8))
                    .collect();
                let key = format!("Acct:{g}/Item:{i}");
                let resp = match kind {
                    0 | 1 => {
                        client
                            .delete(format!("{base}/v1/ns/{ns}/e/{key}"))
                            .send()
                            .await
                    }
                    2 | 3 => {
                        let b64 = base64::engine::general_purpose::STANDARD.encode(&value);
                        let body = serde_json::json!({"ops": [
                            {"op": "put", "key": key, "value_b64": b64},
                            {"op": "put", "key": format!("Acct:{g}"), "value_b64": b64},
                            {"op": "delete", "key": format!("Acct:{g}/Item:{}", (i + 1) % 8)},
                        ]});
                        client
                            .post(format!("{base}/v1/ns/{ns}/txn"))
                            .json(&body)
                            .send()
                            .await
                    }
                    _ => {
                        client
                            .put(format!("{base}/v1/ns/{ns}/e/{key}"))
                            .body(value)
                            .send()
                            .await
                    }
                };
                let resp = resp.expect("request to n1");
                assert!(
                    resp.status().is_success(),
                    "n1 refused a write: {}: {}",
                    resp.status(),
                    resp.text().await.unwrap_or_default()
                );
            }
        }));
    }
    for t in tasks {
        t.await.expect("load task");
    }
}

/// A node's `/metrics` text.
pub async fn metrics_text(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body")
}

/// A ZooKeeper client of the dev stack and the ZooKeeper root `node`'s
/// deployment lives under.
pub async fn zk_and_root(node: &str) -> (zookeeper_client::Client, String) {
    let zk = zookeeper_client::Client::connector()
        .connect(&crate::stack::zk_addr())
        .await
        .expect("connect to ZooKeeper");
    let root = get_json(&format!("{node}/v1/admin/status")).await["zk_root"]
        .as_str()
        .expect("status zk_root")
        .to_string();
    (zk, root)
}

pub async fn get_json(url: &str) -> serde_json::Value {
    ::reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .expect("JSON")
}

/// Waits until n1 has shipped everything and n2 has applied up to the
/// high-water marks; panics after `timeout`.
pub async fn wait_caught_up(n1: &str, n2: &str, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    let mut last = serde_json::Value::Null;
    while std::time::Instant::now() < deadline {
        let s1 = get_json(&format!("{n1}/v1/admin/status")).await;
        let s2 = get_json(&format!("{n2}/v1/admin/status")).await;
        if s1["outbox_pending"] == 0
            && s2["apply"]["caught_up"] == true
            && !s2["apply"]["partitions"]
                .as_array()
                .is_none_or(|p| p.is_empty())
        {
            return;
        }
        last = serde_json::json!({"n1": s1, "n2": s2});
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("n2 did not catch up within {timeout:?}; last status: {last:#}");
}

/// The digest JSON of a namespace on a node.
pub async fn digest(base: &str, ns: &str) -> serde_json::Value {
    get_json(&format!("{base}/v1/ns/{ns}/digest")).await
}

/// Per key: the highest acknowledged version and its value (`None` = deleted).
pub type AckedKeys = std::collections::BTreeMap<String, (u64, Option<Vec<u8>>)>;

/// What clients were told: per key, the highest acknowledged version and its
/// value (`None` = deleted). With every request acknowledged, the target
/// must hold exactly this.
#[derive(Default)]
pub struct Acked {
    pub keys: std::sync::Mutex<AckedKeys>,
    pub issued: AtomicU64,
    pub failed: AtomicU64,
    /// Of `failed`: answered 503 `engine_unavailable` (nothing was written).
    pub unavailable: AtomicU64,
    pub stale_reads: AtomicU64,
    pub errors: std::sync::Mutex<Vec<String>>,
}

impl Acked {
    fn ack(&self, key: &str, version: u64, value: Option<Vec<u8>>) {
        let mut k = self.keys.lock().unwrap();
        let e = k.entry(key.to_string()).or_insert((0, None));
        if version > e.0 {
            *e = (version, value);
        }
    }
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let retriable = what.contains("engine_unavailable");
        if retriable {
            self.unavailable.fetch_add(1, Ordering::Relaxed);
        }
        // The first failures, and beyond them any that is not a 503: one
        // odd failure among many retriable ones must not go unseen.
        let mut e = self.errors.lock().unwrap();
        if e.len() < 20 || (!retriable && e.len() < 60) {
            e.push(what);
        }
    }
}

/// Load that records acknowledgements: puts, deletes, multi-op transactions
/// and reads on `groups` groups, until `stop`. Each client checks its reads
/// never go back in version for a key it saw (session monotonicity across
/// the cutover).
pub async fn tracked_load(
    base: String,
    ns: String,
    groups: u64,
    clients: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: std::sync::Arc<Acked>,
) {
    use base64::Engine as _;
    use rand::Rng;
    let client = ::reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, base, ns, stop, acked) = (
            client.clone(),
            base.clone(),
            ns.clone(),
            stop.clone(),
            acked.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut seen: std::collections::HashMap<String, u64> = Default::default();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                // An application's pace, not a flood: n2 must be able to catch
                // up on this 2-core machine while other tests run beside it.
                tokio::time::sleep(Duration::from_millis(10)).await;
                let (g, i, kind) = {
                    let mut r = rand::rng();
                    (
                        r.random_range(0..groups),
                        r.random_range(0..6u32),
                        r.random_range(0..10u32),
                    )
                };
                let key = format!("Acct:{g}/Item:{i}");
                let value = format!("c{c}-n{n}").into_bytes();
                acked.issued.fetch_add(1, Ordering::Relaxed);
                let url = format!("{base}/v1/ns/{ns}/e/{key}");
                match kind {
                    0..=2 => match client.get(&url).send().await {
                        Ok(r) if r.status() == 200 => {
                            let v: u64 = r.headers()["etag"]
                                .to_str()
                                .unwrap()
                                .trim_matches('"')
                                .parse()
                                .unwrap();
                            let prev = seen.entry(key.clone()).or_insert(0);
                            if v < *prev {
                                acked.stale_reads.fetch_add(1, Ordering::Relaxed);
                            }
                            *prev = v.max(*prev);
                        }
                        Ok(r) if r.status() == 404 => {}
                        Ok(r) => {
                            let status = r.status();
                            let body = r.text().await.unwrap_or_default();
                            acked.fail(format!(
                                "GET {key}: {status} {}",
                                &body[..body.len().min(300)]
                            ))
                        }
                        Err(e) => acked.fail(format!("GET {key}: {e}")),
                    },
                    3 => match acked_version(client.delete(&url), &format!("DELETE {key}")).await {
                        Ok(v) => {
                            acked.ack(&key, v, None);
                            seen.insert(key, v);
                        }
                        Err(e) => acked.fail(e),
                    },
                    4 | 5 => {
                        let root = format!("Acct:{g}");
                        let b64 = base64::engine::general_purpose::STANDARD.encode(&value);
                        let body = serde_json::json!({"ops": [
                            {"op": "put", "key": key, "value_b64": b64},
                            {"op": "put", "key": root, "value_b64": b64},
                        ]});
                        let req = client.post(format!("{base}/v1/ns/{ns}/txn")).json(&body);
                        match acked_version(req, &format!("txn {key}")).await {
                            Ok(v) => {
                                acked.ack(&key, v, Some(value.clone()));
                                acked.ack(&root, v, Some(value));
                            }
                            Err(e) => acked.fail(e),
                        }
                    }
                    _ => {
                        let req = client.put(&url).body(value.clone());
                        match acked_version(req, &format!("PUT {key}")).await {
                            Ok(v) => {
                                acked.ack(&key, v, Some(value));
                                seen.insert(key, v);
                            }
                            Err(e) => acked.fail(e),
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Sends a write; the version it was acknowledged with, or what went wrong.
async fn acked_version(req: ::reqwest::RequestBuilder, what: &str) -> Result<u64, String> {
    let r = req.send().await.map_err(|e| format!("{what}: {e}"))?;
    if r.status() != 200 {
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        return Err(format!("{what}: {status} {}", &body[..body.len().min(300)]));
    }
    let v: serde_json::Value = r.json().await.map_err(|e| format!("{what}: {e}"))?;
    v["version"]
        .as_u64()
        .ok_or_else(|| format!("{what}: no version in {v}"))
}

/// Checks a node holds exactly what was acknowledged for every tracked key:
/// no lost write, no stale value, no resurrected delete.
pub async fn assert_holds_acked(base: &str, ns: &str, acked: &Acked) {
    let client = ::reqwest::Client::new();
    let keys = acked.keys.lock().unwrap().clone();
    let mut bad = Vec::new();
    for (key, (version, value)) in &keys {
        let r = client
            .get(format!("{base}/v1/ns/{ns}/e/{key}"))
            .send()
            .await
            .unwrap();
        match (value, r.status().as_u16()) {
            (None, 404) => {}
            (Some(v), 200) => {
                let got_v: u64 = r.headers()["etag"]
                    .to_str()
                    .unwrap()
                    .trim_matches('"')
                    .parse()
                    .unwrap();
                let body = r.bytes().await.unwrap();
                if got_v < *version || (got_v == *version && body.as_ref() != v.as_slice()) {
                    bad.push(format!("{key}: acked v{version}, holds v{got_v}"));
                }
            }
            (None, 200) => {
                let got_v: u64 = r.headers()["etag"]
                    .to_str()
                    .unwrap()
                    .trim_matches('"')
                    .parse()
                    .unwrap();
                if got_v <= *version {
                    bad.push(format!(
                        "{key}: deleted at v{version} but holds v{got_v} (resurrected)"
                    ));
                }
            }
            (Some(_), s) => bad.push(format!(
                "{key}: acked v{version} put, but GET says {s} (lost)"
            )),
            (None, s) => bad.push(format!("{key}: GET says {s}")),
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} keys wrong, first: {:?}",
        bad.len(),
        keys.len(),
        &bad[..bad.len().min(10)]
    );
}

/// Records in every topic whose name starts with `prefix` (sum of high-water
/// marks; 0 while none exists).
pub fn records_in_topics_with_prefix(prefix: &str) -> i64 {
    records_in_topics(|t| t.starts_with(prefix))
}

/// Records in the topic named `topic` (sum of its high-water marks).
pub fn records_in_topic(topic: &str) -> i64 {
    records_in_topics(|t| t == topic)
}

fn records_in_topics(wanted: impl Fn(&str) -> bool) -> i64 {
    high_water_marks(wanted).values().sum()
}

/// Each partition's high-water mark (its next offset) in topic `topic`.
pub fn records_per_partition(topic: &str) -> std::collections::BTreeMap<i32, i64> {
    high_water_marks(|t| t == topic)
        .into_iter()
        .map(|((_, p), hw)| (p, hw))
        .collect()
}

fn high_water_marks(
    wanted: impl Fn(&str) -> bool,
) -> std::collections::BTreeMap<(String, i32), i64> {
    high_water_marks_at(&kafka_addr(), wanted)
}

/// Each partition's high-water mark, per topic matching `wanted`, on `brokers`.
pub fn high_water_marks_at(
    brokers: &str,
    wanted: impl Fn(&str) -> bool,
) -> std::collections::BTreeMap<(String, i32), i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("kafka client");
    let mut out = std::collections::BTreeMap::new();
    let Ok(md) = c.fetch_metadata(None, std::time::Duration::from_secs(5)) else {
        return out;
    };
    for t in md.topics().iter().filter(|t| wanted(t.name())) {
        for p in t.partitions() {
            if let Ok((_, hw)) =
                c.fetch_watermarks(t.name(), p.id(), std::time::Duration::from_secs(5))
            {
                out.insert((t.name().to_string(), p.id()), hw);
            }
        }
    }
    out
}

/// Deletes every record of `topic`'s `partition` below its current end with
/// Kafka's own `kafka-delete-records` (what retention does to a consumer
/// that stayed away too long). `dir` holds the tool's offset file.
pub fn expire_partition_backlog(topic: &str, partition: i32, dir: &std::path::Path) {
    let end = records_per_partition(topic)[&partition];
    delete_records_below(topic, &[(partition, end)].into(), dir);
}

/// Deletes the records of `topic` below `to` (per partition) with Kafka's
/// own `kafka-delete-records`: what retention does to old segments. `dir`
/// holds the tool's offset file.
pub fn delete_records_below(
    topic: &str,
    to: &std::collections::BTreeMap<i32, i64>,
    dir: &std::path::Path,
) {
    let parts: Vec<_> = to
        .iter()
        .map(|(p, o)| serde_json::json!({"topic": topic, "partition": p, "offset": o}))
        .collect();
    let spec = dir.join(format!("delete-{}.json", crate::unique("below")));
    std::fs::write(
        &spec,
        serde_json::json!({"version": 1, "partitions": parts}).to_string(),
    )
    .unwrap();
    let out = std::process::Command::new(crate::stack_script())
        .args(["kafka", "kafka-delete-records", "--bootstrap-server"])
        .arg(crate::kafka_addr())
        .arg("--offset-json-file")
        .arg(&spec)
        .output()
        .unwrap();
    assert!(out.status.success(), "kafka-delete-records: {out:?}");
}

/// Every journal record on `topic`, partition by partition in offset order
/// (assigned, not subscribed: a group join right after a broker restart can
/// outlast the idle cut-off); stops after 5 s with nothing new.
pub fn journal_records(topic: &str) -> Vec<northwest_schemas::JournalRecord> {
    journal_records_at(topic)
        .into_iter()
        .map(|(_, _, r)| r)
        .collect()
}

/// [`journal_records`] with each record's partition and offset.
pub fn journal_records_at(topic: &str) -> Vec<(i32, i64, northwest_schemas::JournalRecord)> {
    journal_payloads_at(topic)
        .into_iter()
        .map(|(p, o, payload)| {
            let rec = northwest_schemas::decode_journal(&payload).expect("journal record");
            (p, o, rec)
        })
        .collect()
}

/// Every record's bytes on `topic` as the broker holds them, with its
/// partition and offset.
pub fn journal_payloads_at(topic: &str) -> Vec<(i32, i64, Vec<u8>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_addr())
        .set("group.id", crate::stack::unique("order"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("journal topic metadata");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
            .expect("partition");
    }
    assert!(tpl.count() > 0, "journal topic {topic} has no partitions");
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let mut idle = 0;
    while idle < 10 {
        match c.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                idle = 0;
                let payload = m.payload().expect("journal record with a payload");
                out.push((m.partition(), m.offset(), payload.to_vec()));
            }
            _ => idle += 1,
        }
    }
    out
}

/// Every record of `ns` on the journal lies in an epoch of `timeline` whose
/// primary committed it: the timeline says truly whose records lie where.
/// Returns how many records of each epoch were seen.
pub fn assert_epochs_hold_their_primary(
    timeline: &northwest_control::Timeline,
    records: &[(i32, i64, northwest_schemas::JournalRecord)],
    ns: &str,
) -> Vec<usize> {
    let mut per_epoch = vec![0; timeline.epochs.len()];
    for (p, o, rec) in records.iter().filter(|(_, _, r)| r.namespace == ns) {
        let e = timeline
            .epoch_of(*p, *o)
            .unwrap_or_else(|| panic!("record at {p}:{o} precedes the timeline: {timeline:?}"));
        assert_eq!(
            e.primary, rec.origin,
            "record {p}:{o} (txn {}) was committed by {} but lies in epoch {} of {}",
            rec.txn_id, rec.origin, e.epoch, e.primary
        );
        per_epoch[e.epoch as usize] += 1;
    }
    per_epoch
}

/// Per entity group, each transaction first appears on the journal after
/// every earlier one of its group (a re-sent duplicate may repeat an earlier
/// record later, never jump back past a newer one). Returns the distinct
/// transactions seen.
pub fn assert_group_order(records: &[northwest_schemas::JournalRecord]) -> usize {
    let mut last: std::collections::HashMap<&str, u64> = Default::default();
    let mut seen = std::collections::HashSet::new();
    for rec in records {
        if !seen.insert(rec.txn_id) {
            continue;
        }
        let prev = last.entry(rec.entity_group.as_str()).or_insert(0);
        assert!(
            rec.txn_id > *prev,
            "group {} went from txn {} to {} on the journal",
            rec.entity_group,
            prev,
            rec.txn_id
        );
        *prev = rec.txn_id;
    }
    seen.len()
}

/// [`tracked_load`] running in the background until [`LoadRun::stop`].
pub struct LoadRun {
    pub acked: std::sync::Arc<Acked>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl LoadRun {
    /// `clients` writing `groups` entity groups of `ns` through `base`.
    pub fn start(base: &str, ns: &str, groups: u64, clients: usize) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acked = std::sync::Arc::new(Acked::default());
        let task = tokio::spawn(tracked_load(
            base.to_string(),
            ns.to_string(),
            groups,
            clients,
            stop.clone(),
            acked.clone(),
        ));
        Self { acked, stop, task }
    }

    /// Stops the clients and waits for their last requests.
    pub async fn stop(self) -> std::sync::Arc<Acked> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.expect("load task");
        self.acked
    }
}
