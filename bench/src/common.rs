//! Helpers shared by the benchmarks: a result row, closed-loop measurement of
//! single-op transactions in-process or over HTTP, and the apply-everything
//! timer used by the journal and migration benches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use northwest_store::{
    Engine, KeyPath, Namespace, Op, RocksEngine, Store, StoreConfig, ZkConfig, ZkCoordinator,
};
use rand::Rng;

use crate::loadgen::{drive, Tally};

use northwest_consumer::{ApplyConfig, ApplyShared, Source};
use northwest_kafka::KafkaSettings;

static JSON: AtomicBool = AtomicBool::new(false);
static SECTIONS: parking_lot::Mutex<Vec<serde_json::Value>> = parking_lot::Mutex::new(Vec::new());

/// `northwest bench --json`: tables and notes are collected into one JSON
/// document on stdout (the text goes to stderr).
pub(crate) fn set_json(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

pub(crate) fn json_mode() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Adds a section (a table's rows, or a note) to the JSON document.
pub(crate) fn record(section: serde_json::Value) {
    if json_mode() {
        SECTIONS.lock().push(section);
    }
}

/// The JSON document of everything recorded, for `--json`.
pub(crate) fn take_document(bench: &str) -> serde_json::Value {
    serde_json::json!({"bench": bench, "sections": std::mem::take(&mut *SECTIONS.lock())})
}

/// println! for a benchmark's human output: stderr under `--json`, and the
/// line also goes into the JSON document as a note.
macro_rules! say {
    ($($t:tt)*) => {{
        let line = format!($($t)*);
        if $crate::common::json_mode() {
            eprintln!("{line}");
            $crate::common::record(serde_json::json!({"note": line}));
        } else {
            println!("{line}");
        }
    }};
}
pub(crate) use say;

/// How a closed-loop run is shaped: operations, concurrent clients, entity
/// groups they spread over, value size.
pub(crate) struct Shape {
    pub(crate) ops: u64,
    pub(crate) clients: usize,
    pub(crate) groups: u64,
    pub(crate) value_bytes: usize,
}

pub(crate) struct Row {
    pub(crate) name: String,
    pub(crate) summary: serde_json::Value,
}

pub(crate) fn print_rows(title: &str, rows: &[Row]) {
    record(serde_json::json!({
        "table": title,
        "rows": rows.iter().map(|r| serde_json::json!({"variant": r.name, "summary": r.summary})).collect::<Vec<_>>(),
    }));
    if json_mode() {
        return;
    }
    println!("\n{title}");
    println!(
        "{:<48} {:>10} {:>10} {:>10} {:>8}",
        "variant", "txn/s", "p50 ms", "p99 ms", "failed"
    );
    for r in rows {
        let l = &r.summary["latency_ms"];
        println!(
            "{:<48} {:>10.0} {:>10.3} {:>10.3} {:>8}",
            r.name,
            r.summary["rate_per_s"].as_f64().unwrap_or(0.0),
            l["p50"].as_f64().unwrap_or(0.0),
            l["p99"].as_f64().unwrap_or(0.0),
            r.summary["failed"]
        );
    }
}

pub(crate) async fn measure<F, Fut>(b: &Shape, op: F) -> serde_json::Value
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let tally = Arc::new(Tally::default());
    let t = Instant::now();
    drive(
        b.clients,
        Some(b.ops),
        Arc::new(AtomicBool::new(false)),
        0,
        tally.clone(),
        op,
    )
    .await;
    tally.summary(t.elapsed())
}

pub(crate) fn random_key(groups: u64, n: u64) -> KeyPath {
    let g = rand::rng().random_range(0..groups.max(1));
    KeyPath::parse(&format!("Bench:{g}/Item:{n}")).expect("valid key")
}

pub(crate) async fn in_process(b: &Shape, store: Arc<Store>) -> serde_json::Value {
    let (groups, value) = (b.groups, vec![7u8; b.value_bytes]);
    let ns = Namespace::new("bench").expect("valid");
    measure(b, move |n| {
        let (store, ns, value) = (store.clone(), ns.clone(), value.clone());
        async move {
            let op = Op::Put {
                key: random_key(groups, n),
                value,
                if_version: None,
            };
            store
                .run(&ns, &[op])
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await
}

pub(crate) async fn over_http(b: &Shape, store: Arc<Store>) -> anyhow::Result<serde_json::Value> {
    let app = northwest_node::api::router(northwest_node::api::ApiState {
        store,
        max_value_bytes: 1 << 20,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(b.clients * 2)
        .build()?;
    let (groups, value) = (b.groups, vec![7u8; b.value_bytes]);
    let summary = measure(b, move |n| {
        let (client, value) = (client.clone(), value.clone());
        async move {
            let url = format!("http://{addr}/v1/ns/bench/e/{}", random_key(groups, n));
            match client.put(url).body(value).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(r.status().to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await;
    server.abort();
    Ok(summary)
}

/// Applies every record of `topic` (journal records or snapshot rows)
/// into a fresh store with ZooKeeper leases; returns records/s.
pub async fn apply_all(
    zk: Option<&str>,
    brokers: &str,
    source: Source,
    dir: &std::path::Path,
    topic: &str,
    total: u64,
    root: &str,
) -> anyhow::Result<f64> {
    let engine: Arc<dyn Engine> = Arc::new(RocksEngine::open(dir, false)?);
    // With `zk`, entity-group leases in ZooKeeper as a node takes them;
    // without, in-process locks (what the leases cost is the difference).
    let coord: Arc<dyn northwest_store::Coordinator> = match zk {
        Some(zk) => Arc::new(
            ZkCoordinator::connect(ZkConfig {
                connect: zk.into(),
                root: root.into(),
                ..ZkConfig::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        None => Arc::new(northwest_store::LocalCoordinator::default()),
    };
    let store = Store::open(engine, coord, StoreConfig::default())?;
    let shared = Arc::new(ApplyShared::default());
    let cfg = ApplyConfig::new(source, KafkaSettings::new(brokers), topic, "bench-apply");
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let (_ctl, ctl_rx) = tokio::sync::mpsc::channel(1);
    let sh = shared.clone();
    let task = tokio::spawn(northwest_consumer::run(
        store,
        cfg,
        sh,
        ctl_rx,
        async move {
            let _ = stop_rx.wait_for(|v| *v).await;
        },
    ));
    // The clock starts once the loop has assigned itself (setup excluded).
    while !shared.running.load(Ordering::Acquire) {
        tokio::time::sleep(Duration::from_millis(1)).await;
        if task.is_finished() {
            anyhow::bail!("apply loop ended before it started");
        }
    }
    let t = Instant::now();
    while shared.txns.load(Ordering::Relaxed) < total {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if task.is_finished() {
            anyhow::bail!("apply loop ended early");
        }
    }
    let rate = total as f64 / t.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let _ = task.await;
    Ok(rate)
}
