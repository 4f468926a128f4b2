//! `northwest bench ...`: benchmarks that print side-by-side figures from one
//! run. Not tests: nothing here asserts on speed.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use northwest_store::engine::{Cf, WriteBatch};
use northwest_store::{
    Coordinator, Engine, KeyPath, LocalCoordinator, Namespace, Op, RocksEngine, Store, StoreConfig,
    ZkConfig, ZkCoordinator,
};
use rand::Rng;

use crate::loadgen::{drive, Tally};

#[derive(clap::Subcommand, Debug, Clone)]
pub enum BenchCmd {
    /// Single-op transactions: raw RocksDB vs local locks vs ZooKeeper locks,
    /// in-process and over HTTP.
    Store(StoreBench),
    /// Journaling cost on n1, apply rate vs raw consume, replication latency.
    Journal(JournalBench),
    /// The paper's tables: latency normal vs migrating, snapshot load, cutover pause.
    Migrate(crate::bench_migrate::MigrateBench),
}

#[derive(clap::Args, Debug, Clone)]
pub struct StoreBench {
    /// Operations per variant.
    #[arg(long, default_value_t = 20_000)]
    pub ops: u64,
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Entity groups the operations spread over (uniformly at random).
    #[arg(long, default_value_t = 256)]
    pub groups: u64,
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    #[arg(long, env = "NW_ZK", default_value = "127.0.0.1:2181")]
    pub zk: String,
}

pub async fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Store(b) => store_bench(b).await,
        BenchCmd::Journal(b) => journal_bench(b).await,
        BenchCmd::Migrate(b) => crate::bench_migrate::run(b).await,
    }
}

struct Row {
    name: String,
    summary: serde_json::Value,
}

fn print_rows(title: &str, rows: &[Row]) {
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

async fn measure<F, Fut>(b: &StoreBench, op: F) -> serde_json::Value
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

fn random_key(groups: u64, n: u64) -> KeyPath {
    let g = rand::rng().random_range(0..groups.max(1));
    KeyPath::parse(&format!("Bench:{g}/Item:{n}")).expect("valid key")
}

async fn in_process(b: &StoreBench, store: Arc<Store>) -> serde_json::Value {
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

async fn over_http(b: &StoreBench, store: Arc<Store>) -> anyhow::Result<serde_json::Value> {
    let app = crate::api::router(crate::api::ApiState {
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

async fn store_bench(b: StoreBench) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut rows = Vec::new();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    println!(
        "bench store: {} single-op put transactions per variant, {} concurrent clients, {} entity groups, {} B values, RocksDB (no fsync)",
        b.ops, b.clients, b.groups, b.value_bytes
    );

    let raw: Arc<dyn Engine> = Arc::new(RocksEngine::open(&dir.path().join("raw"), false)?);
    let value = vec![7u8; b.value_bytes];
    let summary = measure(&b, move |n| {
        let (raw, value) = (raw.clone(), value.clone());
        async move {
            let mut wb = WriteBatch::default();
            wb.put(Cf::Entities, format!("k{n}").into_bytes(), value);
            raw.write(wb).map_err(|e| e.to_string())
        }
    })
    .await;
    rows.push(Row {
        name: "(a) raw RocksDB put, in-process".into(),
        summary,
    });

    let mk = |name: &str, coord: Arc<dyn Coordinator>| -> anyhow::Result<Arc<Store>> {
        let engine: Arc<dyn Engine> = Arc::new(RocksEngine::open(&dir.path().join(name), false)?);
        Ok(Store::open(engine, coord, StoreConfig::default())?)
    };
    let local = mk("local", Arc::new(LocalCoordinator::default()))?;
    rows.push(Row {
        name: "(b) store, local locks, in-process".into(),
        summary: in_process(&b, local.clone()).await,
    });
    rows.push(Row {
        name: "(b) store, local locks, HTTP API".into(),
        summary: over_http(&b, local).await?,
    });

    let zk_cfg = ZkConfig {
        connect: b.zk.clone(),
        root: format!("/northwest/bench-{stamp}"),
        ..ZkConfig::default()
    };
    let zk = ZkCoordinator::connect(zk_cfg)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let zk_store = mk("zk", Arc::new(zk))?;
    rows.push(Row {
        name: "(c) store, ZooKeeper group leases, in-process".into(),
        summary: in_process(&b, zk_store.clone()).await,
    });
    rows.push(Row {
        name: "(c) store, ZooKeeper group leases, HTTP API".into(),
        summary: over_http(&b, zk_store).await?,
    });

    // Every transaction pays a ZooKeeper lock round trip: no lease reuse.
    let no_lease = ZkConfig {
        connect: b.zk.clone(),
        root: format!("/northwest/bench-{stamp}-nolease"),
        lease_max_hold: Duration::ZERO,
        ..ZkConfig::default()
    };
    let zk2 = ZkCoordinator::connect(no_lease)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let zk2_store = mk("zk2", Arc::new(zk2))?;
    rows.push(Row {
        name: "(c') store, ZooKeeper lock per txn, in-process".into(),
        summary: in_process(&b, zk2_store).await,
    });
    print_rows("results", &rows);
    Ok(())
}

#[derive(clap::Args, Debug, Clone)]
pub struct JournalBench {
    /// Transactions per write variant (and records for the apply runs).
    #[arg(long, default_value_t = 50_000)]
    pub ops: u64,
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    #[arg(long, default_value_t = 1000)]
    pub groups: u64,
    #[arg(long, default_value_t = 1024)]
    pub value_bytes: usize,
    /// Offered load for the replication-latency run (transactions/s).
    #[arg(long, default_value_t = 1000)]
    pub latency_rate: u64,
    #[arg(long, default_value = "10s", value_parser = crate::loadgen::parse_duration)]
    pub latency_duration: Duration,
    #[arg(long, env = "NW_KAFKA", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    #[arg(long, env = "NW_ZK", default_value = "127.0.0.1:2181")]
    pub zk: String,
    /// How long the applier keeps an idle group's ZooKeeper lease.
    #[arg(long, default_value = "200ms", value_parser = crate::loadgen::parse_duration)]
    pub apply_lease_idle: Duration,
    /// Only run the replication-latency measurement.
    #[arg(long)]
    pub latency_only: bool,
}

pub use journal_bench::journal_bench;

mod journal_bench {
    use super::*;
    use northwest_consumer::{ApplyConfig, ApplyShared, PoisonPolicy, Source};
    use northwest_producer::{KafkaSettings, Relay, RelayConfig, RelayStats, TopicSpec};
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::{Offset, TopicPartitionList};
    use std::sync::atomic::Ordering;

    fn topic_spec(name: &str) -> TopicSpec {
        TopicSpec {
            name: name.into(),
            partitions: 8,
            replication: 1,
            configs: vec![],
        }
    }

    /// A store (RocksDB, local locks) journaling to `topic` with its relay running.
    async fn source(
        dir: &std::path::Path,
        b: &JournalBench,
        topic: &str,
        journal: bool,
        sync: bool,
    ) -> anyhow::Result<(
        Arc<Store>,
        Option<tokio::task::JoinHandle<()>>,
        tokio::sync::watch::Sender<bool>,
    )> {
        let engine: Arc<dyn Engine> = Arc::new(RocksEngine::open(dir, false)?);
        let cfg = StoreConfig {
            journal,
            sync_journal: sync.then(|| Duration::from_secs(30)),
            ..StoreConfig::default()
        };
        let store = Store::open(engine, Arc::new(LocalCoordinator::default()), cfg)?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        let relay = if journal {
            let rc = RelayConfig {
                kafka: KafkaSettings::new(&b.brokers),
                topic: topic_spec(topic),
                batch: 2000,
            };
            let relay = Relay::new(store.clone(), rc, Arc::new(RelayStats::default())).await?;
            let mut rx = rx.clone();
            Some(tokio::spawn(async move {
                let _ = relay
                    .run(async move {
                        let _ = rx.wait_for(|v| *v).await;
                    })
                    .await;
            }))
        } else {
            None
        };
        Ok((store, relay, tx))
    }

    async fn writes(b: &JournalBench, store: Arc<Store>) -> serde_json::Value {
        let sb = StoreBench {
            ops: b.ops,
            clients: b.clients,
            groups: b.groups,
            value_bytes: b.value_bytes,
            zk: b.zk.clone(),
        };
        in_process(&sb, store).await
    }

    async fn wait_shipped(store: &Store) {
        while store.outbox_len() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Raw consume of every record of `topic` (no decode, no store).
    async fn raw_consume(brokers: &str, topic: &str, total: u64) -> anyhow::Result<f64> {
        let c: StreamConsumer = KafkaSettings::new(brokers)
            .consumer_config(&[("group.id", "bench-raw"), ("enable.auto.commit", "false")])
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..8 {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        c.assign(&tpl)?;
        let t = Instant::now();
        let mut n = 0u64;
        let mut bytes = 0usize;
        while n < total {
            let m = tokio::time::timeout(Duration::from_secs(30), c.recv()).await??;
            bytes += rdkafka::Message::payload(&m).map_or(0, <[u8]>::len);
            n += 1;
        }
        let _ = bytes;
        Ok(n as f64 / t.elapsed().as_secs_f64())
    }

    /// Applies every record of `topic` into a fresh store with ZooKeeper leases.
    async fn apply_all(
        b: &JournalBench,
        dir: &std::path::Path,
        topic: &str,
        total: u64,
        root: &str,
    ) -> anyhow::Result<f64> {
        let engine: Arc<dyn Engine> = Arc::new(RocksEngine::open(dir, false)?);
        let zk = ZkCoordinator::connect(ZkConfig {
            connect: b.zk.clone(),
            root: root.into(),
            ..ZkConfig::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let store = Store::open(engine, Arc::new(zk), StoreConfig::default())?;
        let shared = Arc::new(ApplyShared::default());
        let cfg = ApplyConfig {
            source: Source::Journal,
            kafka: KafkaSettings::new(&b.brokers),
            topic: topic.into(),
            dead_letter_topic: format!("{topic}.dlq"),
            poison: PoisonPolicy::DeadLetter,
            batch: 2000,
            linger: Duration::from_millis(2),
            apply_log: false,
            group_id: "bench-apply".into(),
        };
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let (_ctl, ctl_rx) = tokio::sync::mpsc::channel(1);
        let sh = shared.clone();
        let t = Instant::now();
        let task = tokio::spawn(northwest_consumer::run(
            store,
            cfg,
            sh,
            ctl_rx,
            async move {
                let _ = stop_rx.wait_for(|v| *v).await;
            },
        ));
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

    pub async fn journal_bench(b: JournalBench) -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis();
        println!(
            "bench journal: {} single-op transactions of {} B per variant, {} clients, {} groups; broker {}",
            b.ops, b.value_bytes, b.clients, b.groups, b.brokers
        );
        if !b.latency_only {
            throughput(&b, dir.path(), stamp).await?;
        }
        latency(&b, dir.path(), stamp).await
    }

    async fn throughput(
        b: &JournalBench,
        dir: &std::path::Path,
        stamp: u128,
    ) -> anyhow::Result<()> {
        let b = b.clone();
        let mut rows = Vec::new();
        let (off, _, _) = source(&dir.join("off"), &b, "", false, false).await?;
        rows.push(Row {
            name: "n1 writes, journaling off".into(),
            summary: writes(&b, off).await,
        });

        let topic = format!("bench-journal-{stamp}");
        let (on, relay, stop) = source(&dir.join("on"), &b, &topic, true, false).await?;
        let t = Instant::now();
        rows.push(Row {
            name: "n1 writes, journaling on (async)".into(),
            summary: writes(&b, on.clone()).await,
        });
        wait_shipped(&on).await;
        let shipped_rate = b.ops as f64 / t.elapsed().as_secs_f64();
        let _ = stop.send(true);
        if let Some(r) = relay {
            let _ = r.await;
        }

        let sync_topic = format!("bench-journal-sync-{stamp}");
        let (sy, relay, stop) = source(&dir.join("sync"), &b, &sync_topic, true, true).await?;
        rows.push(Row {
            name: "n1 writes, journaling on (sync)".into(),
            summary: writes(&b, sy).await,
        });
        let _ = stop.send(true);
        if let Some(r) = relay {
            let _ = r.await;
        }
        print_rows("n1 write throughput", &rows);
        let base = rows[0].summary["rate_per_s"].as_f64().unwrap_or(1.0);
        let async_rate = rows[1].summary["rate_per_s"].as_f64().unwrap_or(0.0);
        println!(
            "journaling (async) costs {:.1}% of write throughput; records shipped to Kafka at {:.0}/s (write + ship)",
            100.0 * (1.0 - async_rate / base),
            shipped_rate
        );

        let raw = raw_consume(&b.brokers, &topic, b.ops).await?;
        let apply = apply_all(
            &b,
            &dir.join("apply"),
            &topic,
            b.ops,
            &format!("/northwest/bench-{stamp}-apply"),
        )
        .await?;
        println!(
            "\nn2 apply vs raw consume (same {} records of {} B, same broker)",
            b.ops, b.value_bytes
        );
        println!(
            "{:<48} {:>12.0} records/s",
            "raw consume (rdkafka, no decode, no store)", raw
        );
        println!(
            "{:<48} {:>12.0} transactions/s",
            "apply (decode + ZK leases + version check + RocksDB)", apply
        );
        println!("apply / raw = {:.2}", apply / raw);
        Ok(())
    }

    async fn latency(b: &JournalBench, dir: &std::path::Path, stamp: u128) -> anyhow::Result<()> {
        let b = b.clone();

        // Replication latency at a fixed offered load.
        let lat_topic = format!("bench-journal-lat-{stamp}");
        let (src, relay, stop) = source(&dir.join("lat-src"), &b, &lat_topic, true, false).await?;
        let engine: Arc<dyn Engine> = Arc::new(RocksEngine::open(&dir.join("lat-dst"), false)?);
        let zk = ZkCoordinator::connect(ZkConfig {
            connect: b.zk.clone(),
            root: format!("/northwest/bench-{stamp}-lat"),
            lease_idle: b.apply_lease_idle,
            ..ZkConfig::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let dst = Store::open(engine, Arc::new(zk), StoreConfig::default())?;
        let shared = Arc::new(ApplyShared::default());
        shared.record_latency.store(true, Ordering::Relaxed);
        let cfg = ApplyConfig {
            source: Source::Journal,
            kafka: KafkaSettings::new(&b.brokers),
            topic: lat_topic.clone(),
            dead_letter_topic: format!("{lat_topic}.dlq"),
            poison: PoisonPolicy::DeadLetter,
            batch: 2000,
            linger: Duration::from_millis(1),
            apply_log: false,
            group_id: "bench-lat".into(),
        };
        let (astop_tx, mut astop_rx) = tokio::sync::watch::channel(false);
        let (_ctl, ctl_rx) = tokio::sync::mpsc::channel(1);
        let task = tokio::spawn(northwest_consumer::run(
            dst,
            cfg,
            shared.clone(),
            ctl_rx,
            async move {
                let _ = astop_rx.wait_for(|v| *v).await;
            },
        ));
        // Let the applier assign itself before offering load.
        let _ = src
            .run(
                &Namespace::new("bench").expect("ns"),
                &[Op::Put {
                    key: KeyPath::parse("Warm:1").expect("key"),
                    value: vec![1],
                    if_version: None,
                }],
            )
            .await;
        while shared.txns.load(Ordering::Relaxed) < 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shared.latencies_ms.lock().clear();
        let total = b.latency_rate * b.latency_duration.as_secs().max(1);
        let tally = Arc::new(Tally::default());
        let (groups, value, st) = (b.groups, vec![7u8; b.value_bytes], src.clone());
        let ns = Namespace::new("bench").expect("ns");
        drive(
            b.clients,
            Some(total),
            Arc::new(AtomicBool::new(false)),
            b.latency_rate,
            tally.clone(),
            move |n| {
                let (st, ns, value) = (st.clone(), ns.clone(), value.clone());
                async move {
                    let op = Op::Put {
                        key: random_key(groups, n),
                        value,
                        if_version: None,
                    };
                    st.run(&ns, &[op])
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
            },
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while shared.txns.load(Ordering::Relaxed) < total + 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut lat = shared.latencies_ms.lock().clone();
        lat.sort_unstable();
        let q = |f: f64| {
            lat.get(((lat.len() as f64 - 1.0) * f).round() as usize)
                .copied()
                .unwrap_or(0)
        };
        println!(
            "\nreplication latency (n1 commit -> applied on n2) at {} txn/s offered for {:?}: {} samples, p50 {} ms, p99 {} ms, max {} ms",
            b.latency_rate, b.latency_duration, lat.len(), q(0.5), q(0.99), lat.last().copied().unwrap_or(0)
        );
        let _ = astop_tx.send(true);
        let _ = task.await;
        let _ = stop.send(true);
        if let Some(r) = relay {
            let _ = r.await;
        }
        Ok(())
    }
}
