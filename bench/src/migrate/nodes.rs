//! The migration benchmarks' scaffolding: an n1/n2 pair of nodes on the
//! stack, its preload and mixed load, and the orchestrator's arguments and
//! report.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use northwest_node::config::NodeConfig;

use super::MigrateBench;
use crate::loadgen::{drive, Tally};

pub(super) struct Pair {
    pub(super) n1: String,
    pub(super) n2: String,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Pair {
    pub(super) async fn stop(self) {
        for s in self.stops {
            let _ = s.send(());
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

pub(super) async fn pair(b: &MigrateBench, tag: &str) -> anyhow::Result<Pair> {
    pair_with(b, tag, |_| {}).await
}

/// A pair whose node configs `tweak` adjusts.
pub(super) async fn pair_with(
    b: &MigrateBench,
    tag: &str,
    tweak: impl Fn(&mut NodeConfig),
) -> anyhow::Result<Pair> {
    let dir = tempfile::tempdir()?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let mut p = Pair {
        n1: String::new(),
        n2: String::new(),
        stops: vec![],
        tasks: vec![],
        _dir: dir,
    };
    for name in ["n1", "n2"] {
        let mut c = NodeConfig {
            name: name.into(),
            data_dir: p._dir.path().join(name),
            ..NodeConfig::default()
        };
        c.http.listen = "127.0.0.1:0".parse()?;
        c.coordination.connect = b.zk.clone();
        c.coordination.root = format!("/northwest/bench-mig-{tag}-{stamp}");
        c.journal.brokers = b.brokers.clone();
        c.journal.topic = format!("bench-mig-{tag}-{stamp}");
        c.journal.dead_letter_topic = format!("bench-mig-{tag}-{stamp}.dlq");
        c.journal.enabled = name == "n1";
        c.journal.apply = name == "n2";
        c.http.max_value_bytes = 1 << 20;
        tweak(&mut c);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, addr) = tokio::sync::oneshot::channel();
        // Each node on its own runtime and threads, as separate processes
        // would be: n2's apply batches must not queue n1's requests behind
        // them on shared async workers.
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("bench-{name}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build();
                let r = match rt {
                    Ok(rt) => rt.block_on(northwest_node::run(
                        c,
                        async {
                            let _ = stopped.await;
                        },
                        Some(ready),
                    )),
                    Err(e) => Err(e.into()),
                };
                let _ = done_tx.send(r);
            })?;
        p.tasks.push(tokio::spawn(async move {
            done_rx
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("node thread ended without a result")))
        }));
        p.stops.push(stop);
        let url = format!("http://{}", addr.await?);
        if name == "n1" {
            p.n1 = url
        } else {
            p.n2 = url
        }
    }
    Ok(p)
}

pub(super) async fn preload(base: &str, n: u64, value_bytes: usize) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let tally = Arc::new(Tally::default());
    let base = base.to_string();
    drive(
        32,
        Some(n),
        Arc::new(AtomicBool::new(false)),
        0,
        tally.clone(),
        move |i| {
            let (c, base) = (client.clone(), base.clone());
            async move {
                let url = format!("{base}/v1/ns/bench/e/Acct:{}/Item:{i}", i / 10);
                let r = c
                    .put(url)
                    .body(vec![b'x'; value_bytes])
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if r.status().is_success() {
                    Ok(())
                } else {
                    Err(r.status().to_string())
                }
            }
        },
    )
    .await;
    anyhow::ensure!(
        tally.failed.load(Ordering::Relaxed) == 0,
        "preload failed: {:?}",
        tally.errors.lock()
    );
    Ok(())
}

/// `n` entities of `value_bytes`, ten per transaction (one entity group,
/// `Acct:{i/10}`, the keys [`mixed`] reads and writes): a bulk load, not
/// one request per entity.
pub(super) async fn bulk_preload(base: &str, n: u64, value_bytes: usize) -> anyhow::Result<()> {
    use base64::Engine as _;
    let client = reqwest::Client::new();
    let tally = Arc::new(Tally::default());
    let base = base.to_string();
    let value = base64::engine::general_purpose::STANDARD.encode(vec![b'x'; value_bytes]);
    let groups = n.div_ceil(10);
    let t = Instant::now();
    let progress = {
        let tally = tally.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                let done = tally.issued.load(Ordering::Relaxed);
                eprintln!(
                    "  bulk load: {} of {n} entities ({:.0}/s)",
                    done * 10,
                    (done * 10) as f64 / t.elapsed().as_secs_f64()
                );
            }
        })
    };
    drive(
        16,
        Some(groups),
        Arc::new(AtomicBool::new(false)),
        0,
        tally.clone(),
        move |g| {
            let (c, base, value) = (client.clone(), base.clone(), value.clone());
            async move {
                let ops: Vec<serde_json::Value> = (g * 10..((g + 1) * 10).min(n))
                    .map(|i| {
                        serde_json::json!({
                            "op": "put", "key": format!("Acct:{g}/Item:{i}"), "value_b64": value
                        })
                    })
                    .collect();
                let r = c
                    .post(format!("{base}/v1/ns/bench/txn"))
                    .json(&serde_json::json!({ "ops": ops }))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if r.status().is_success() {
                    Ok(())
                } else {
                    Err(r.status().to_string())
                }
            }
        },
    )
    .await;
    progress.abort();
    anyhow::ensure!(
        tally.failed.load(Ordering::Relaxed) == 0,
        "bulk load failed: {:?}",
        tally.errors.lock()
    );
    Ok(())
}

pub(super) async fn mixed(
    base: &str,
    b: &MigrateBench,
    reads: f64,
    stop: Arc<AtomicBool>,
) -> serde_json::Value {
    let client = reqwest::Client::new();
    let tally = Arc::new(Tally::default());
    let (base, entities) = (base.to_string(), b.entities);
    let t = Instant::now();
    drive(b.clients, None, stop, b.rate, tally.clone(), move |_| {
        let (c, base) = (client.clone(), base.clone());
        async move {
            let (i, r) = {
                use rand::Rng;
                let mut g = rand::rng();
                (g.random_range(0..entities), g.random::<f64>())
            };
            let url = format!("{base}/v1/ns/bench/e/Acct:{}/Item:{i}", i / 10);
            let resp = if r < reads {
                c.get(url).send().await
            } else {
                c.put(url).body(vec![b'y'; 1024]).send().await
            };
            match resp {
                Ok(r) if r.status().is_success() || r.status() == 404 => Ok(()),
                Ok(r) => Err(r.status().to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await;
    tally.summary(t.elapsed())
}

/// The benchmark's deployments have no admin token.
pub(super) fn admin() -> northwest_control::AdminClient {
    northwest_control::AdminClient::new(None, Vec::new(), northwest_migrate::ADMIN_TIMEOUT)
}

pub(super) fn migrate_args(b: &MigrateBench, p: &Pair) -> northwest_migrate::MigrateArgs {
    northwest_migrate::MigrateArgs::defaults(&p.n1, &p.n2, "bench", &b.zk, &b.brokers)
        .expect("the pair's URLs and the bench's addresses parse")
}

pub(super) async fn last_report(
    b: &MigrateBench,
    p: &Pair,
) -> anyhow::Result<northwest_migrate::MigrationRecord> {
    northwest_migrate::load_state(&b.zk, None, &admin(), &p.n1, "bench").await
}
