//! End-to-end test support: connection to the real dev stack (ZooKeeper and
//! the Kafka-protocol broker started by `deploy/stack.sh up`), unique names per
//! test, and process helpers. A test that needs a service and cannot reach it
//! fails with instructions; it never skips.

use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub fn zk_addr() -> String {
    std::env::var("NW_ZK").unwrap_or_else(|_| "127.0.0.1:2181".into())
}

pub fn kafka_addr() -> String {
    std::env::var("NW_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn require(what: &str, addr: &str) -> String {
    if TcpStream::connect_timeout(&addr.parse().expect("host:port"), Duration::from_secs(2))
        .is_err()
    {
        panic!("{what} is not reachable at {addr}: start the dev stack with `deploy/stack.sh up` (or set NW_ZK / NW_KAFKA)");
    }
    addr.to_string()
}

/// The ZooKeeper address; panics with instructions when it is down.
pub fn require_zk() -> String {
    require("ZooKeeper", &zk_addr())
}

/// The broker address; panics with instructions when it is down.
pub fn require_kafka() -> String {
    require("the Kafka broker", &kafka_addr())
}

/// A name unique to this test run (znode roots, topics, namespaces).
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{ms}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Path of a binary built by this workspace (same target dir as the tests).
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --release --workspace` first",
        p.display()
    );
    p
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A `northwest node` child process.
pub struct NodeProc {
    pub name: String,
    pub base: String,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<std::process::Child>,
    env: Vec<(String, String)>,
}

impl NodeProc {
    /// Writes `toml` to `<dir>/<name>.toml` and starts the node.
    pub fn start(dir: &std::path::Path, name: &str, toml: &str) -> Self {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, toml).expect("write config");
        let port = toml
            .lines()
            .find_map(|l| l.trim().strip_prefix("listen = \"127.0.0.1:"))
            .and_then(|r| r.trim_end_matches('"').parse::<u16>().ok())
            .expect("config has listen = \"127.0.0.1:PORT\"");
        let mut n = Self {
            name: name.into(),
            base: format!("http://127.0.0.1:{port}"),
            log: dir.join(format!("{name}.log")),
            config,
            child: None,
            env: Vec::new(),
        };
        n.spawn();
        n
    }

    pub fn with_env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut cmd = std::process::Command::new(bin_path("northwest"));
        cmd.args(["node", "--config"])
            .arg(&self.config)
            .stdout(log.try_clone().expect("dup"))
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn northwest node"));
        self.wait_healthy();
    }

    pub fn wait_healthy(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "node {} exited with {status}; log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if http_probe::blocking_get_ok(&format!("{}/healthz", self.base)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "node {} not healthy after 60 s; log:\n{}",
            self.name,
            self.log_tail()
        );
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGKILL: no chance to drain.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        c.wait().ok()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Minimal blocking HTTP probe without pulling reqwest's blocking feature.
mod http_probe {
    use std::io::{Read, Write};
    pub fn blocking_get_ok(url: &str) -> bool {
        let Some(rest) = url.strip_prefix("http://") else {
            return false;
        };
        let (host, path) = rest
            .split_once('/')
            .map(|(h, p)| (h, format!("/{p}")))
            .unwrap_or((rest, "/".into()));
        let Ok(mut s) = std::net::TcpStream::connect(host) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
        if write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .is_err()
        {
            return false;
        }
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf.starts_with("HTTP/1.1 200")
    }
}

/// Config text for a node of a test pipeline.
pub fn node_toml(
    name: &str,
    data_dir: &std::path::Path,
    port: u16,
    zk_root: &str,
    topic: &str,
    extra: &str,
) -> String {
    let (source, target) = (name == "n1", name != "n1");
    format!(
        r#"name = "{name}"
data_dir = "{data}"
[http]
listen = "127.0.0.1:{port}"
[coordination]
connect = "{zk}"
root = "{zk_root}"
session_timeout_ms = 4000
[journal]
enabled = {source}
apply = {target}
brokers = "{kafka}"
topic = "{topic}"
dead_letter_topic = "{topic}.dlq"
partitions = 4
{extra}
"#,
        data = data_dir.join(name).display(),
        zk = zk_addr(),
        kafka = kafka_addr(),
    )
}

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
        let mut e = self.errors.lock().unwrap();
        if e.len() < 20 {
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
                        Ok(r) => acked.fail(format!("GET {key}: {}", r.status())),
                        Err(e) => acked.fail(format!("GET {key}: {e}")),
                    },
                    3 => match client.delete(&url).send().await {
                        Ok(r) if r.status() == 200 => {
                            let v = r.json::<serde_json::Value>().await.unwrap()["version"]
                                .as_u64()
                                .unwrap();
                            acked.ack(&key, v, None);
                            seen.insert(key, v);
                        }
                        Ok(r) => acked.fail(format!("DELETE {key}: {}", r.status())),
                        Err(e) => acked.fail(format!("DELETE {key}: {e}")),
                    },
                    4 | 5 => {
                        let root = format!("Acct:{g}");
                        let b64 = base64::engine::general_purpose::STANDARD.encode(&value);
                        let body = serde_json::json!({"ops": [
                            {"op": "put", "key": key, "value_b64": b64},
                            {"op": "put", "key": root, "value_b64": b64},
                        ]});
                        match client
                            .post(format!("{base}/v1/ns/{ns}/txn"))
                            .json(&body)
                            .send()
                            .await
                        {
                            Ok(r) if r.status() == 200 => {
                                let v = r.json::<serde_json::Value>().await.unwrap()["version"]
                                    .as_u64()
                                    .unwrap();
                                acked.ack(&key, v, Some(value.clone()));
                                acked.ack(&root, v, Some(value));
                            }
                            Ok(r) => acked.fail(format!("txn {key}: {}", r.status())),
                            Err(e) => acked.fail(format!("txn {key}: {e}")),
                        }
                    }
                    _ => match client.put(&url).body(value.clone()).send().await {
                        Ok(r) if r.status() == 200 => {
                            let v = r.json::<serde_json::Value>().await.unwrap()["version"]
                                .as_u64()
                                .unwrap();
                            acked.ack(&key, v, Some(value));
                            seen.insert(key, v);
                        }
                        Ok(r) => acked.fail(format!("PUT {key}: {}", r.status())),
                        Err(e) => acked.fail(format!("PUT {key}: {e}")),
                    },
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
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
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_addr())
        .create()
        .expect("kafka client");
    let Ok(md) = c.fetch_metadata(None, std::time::Duration::from_secs(5)) else {
        return 0;
    };
    let mut n = 0;
    for t in md.topics().iter().filter(|t| t.name().starts_with(prefix)) {
        for p in t.partitions() {
            if let Ok((_, hw)) =
                c.fetch_watermarks(t.name(), p.id(), std::time::Duration::from_secs(5))
            {
                n += hw;
            }
        }
    }
    n
}

/// An n1 (journaling) + n2 (applying) pair of node processes with a unique
/// ZooKeeper root and journal topic; requires the dev stack.
pub struct Pipeline {
    pub dir: tempfile::TempDir,
    pub n1: NodeProc,
    pub n2: NodeProc,
    pub topic: String,
}

impl Pipeline {
    /// `extra_n2` is appended to n2's `[journal]` section.
    pub fn start(tag: &str, extra_n2: &str) -> Self {
        require_zk();
        require_kafka();
        let dir = tempfile::tempdir().expect("tempdir");
        let root = format!("/northwest-test/{}", unique(tag));
        let topic = unique("journal");
        let (p1, p2) = (free_port(), free_port());
        let n1 = NodeProc::start(
            dir.path(),
            "n1",
            &node_toml("n1", dir.path(), p1, &root, &topic, ""),
        );
        let n2 = NodeProc::start(
            dir.path(),
            "n2",
            &node_toml("n2", dir.path(), p2, &root, &topic, extra_n2),
        );
        Self { dir, n1, n2, topic }
    }
}
