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
    /// Transactions for the sync-durability variants (each waits for Kafka).
    #[arg(long, default_value_t = 5_000)]
    pub sync_ops: u64,
    /// Offered load for the replication-latency run (transactions/s).
    #[arg(long, default_value_t = 1000)]
    pub latency_rate: u64,
    #[arg(long, default_value = "10s", value_parser = crate::loadgen::parse_duration)]
    pub latency_duration: Duration,
    #[arg(long, env = "NW_KAFKA", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    #[arg(long, env = "NW_ZK", default_value = "127.0.0.1:2181")]
    pub zk: String,
    /// How long the applier keeps an idle group's ZooKeeper lease (the node's default).
    #[arg(long, default_value = "2s", value_parser = crate::loadgen::parse_duration)]
    pub apply_lease_idle: Duration,
    /// Only run the replication-latency measurement.
    #[arg(long)]
    pub latency_only: bool,
}

pub use journal_bench::{apply_all, journal_bench};

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

    /// A store (RocksDB, the given coordinator) journaling to `topic` with
    /// its relay running.
    async fn source(
        dir: &std::path::Path,
        b: &JournalBench,
        topic: &str,
        journal: bool,
        sync: bool,
        coord: Arc<dyn Coordinator>,
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
        let store = Store::open(engine, coord, cfg)?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        let relay = if journal {
            let rc = RelayConfig {
                kafka: KafkaSettings::new(&b.brokers),
                topic: topic_spec(topic),
                batch: 2000,
                max_in_flight: 20_000,
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

    async fn writes(b: &JournalBench, store: Arc<Store>, http: bool) -> serde_json::Value {
        let sb = StoreBench {
            ops: b.ops,
            clients: b.clients,
            groups: b.groups,
            value_bytes: b.value_bytes,
            zk: b.zk.clone(),
        };
        if http {
            over_http(&sb, store)
                .await
                .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
        } else {
            in_process(&sb, store).await
        }
    }

    async fn wait_shipped(store: &Store) {
        while store.outbox_len() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A consumer with the journal's settings, assigned every partition of a
    /// bench topic at `at`.
    fn consumer_at(
        brokers: &str,
        topic: &str,
        group: &str,
        at: Offset,
    ) -> anyhow::Result<StreamConsumer> {
        let c: StreamConsumer = KafkaSettings::new(brokers)
            .consumer_config(&[("group.id", group), ("enable.auto.commit", "false")])
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..topic_spec(topic).partitions {
            tpl.add_partition_offset(topic, p, at)?;
        }
        c.assign(&tpl)?;
        Ok(c)
    }

    /// Raw consume of every record of `topic` (no decode, no store).
    async fn raw_consume(brokers: &str, topic: &str, total: u64) -> anyhow::Result<f64> {
        let c = consumer_at(brokers, topic, "bench-raw", Offset::Beginning)?;
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

    fn print_latency(what: &str, mut lat: Vec<u32>) {
        lat.sort_unstable();
        let q = |f: f64| {
            lat.get(((lat.len() as f64 - 1.0) * f).round() as usize)
                .copied()
                .unwrap_or(0)
        };
        println!(
            "  {what:<44} {:>7} samples  p50 {:>4} ms  p99 {:>4} ms  max {:>5} ms",
            lat.len(),
            q(0.5),
            q(0.99),
            lat.last().copied().unwrap_or(0)
        );
    }

    /// The broker's own produce -> consume latency at `rate` records/s with
    /// the journal's producer and consumer settings: the floor under the
    /// replication latency (no outbox, no decode, no store).
    async fn raw_latency(
        brokers: &str,
        topic: &str,
        rate: u64,
        duration: Duration,
        value_bytes: usize,
    ) -> anyhow::Result<Vec<u32>> {
        use rdkafka::producer::{FutureProducer, FutureRecord};
        let kafka = KafkaSettings::new(brokers);
        northwest_producer::kafka::ensure_topic(&kafka, &topic_spec(topic)).await?;
        let producer: FutureProducer = kafka.producer_config().create()?;
        let c = consumer_at(brokers, topic, "bench-raw-lat", Offset::End)?;
        // Let the consumer reach the end before the first record.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let total = rate * duration.as_secs().max(1);
        let topic_name = topic.to_string();
        let sender = tokio::spawn(async move {
            let started = Instant::now();
            let value = vec![7u8; value_bytes];
            let mut acks = Vec::new();
            for n in 0..total {
                let due = started + Duration::from_secs_f64(n as f64 / rate as f64);
                tokio::time::sleep_until(due.into()).await;
                let key = format!("bench/Bench:{}", n % 1000);
                let rec = FutureRecord::to(&topic_name)
                    .key(key.as_bytes())
                    .payload(&value)
                    .timestamp(northwest_store::store::now_ms_pub());
                if let Ok(f) = producer.send_result(rec) {
                    acks.push(f);
                }
            }
            for f in acks {
                let _ = f.await;
            }
        });
        let mut lat = Vec::with_capacity(total as usize);
        while (lat.len() as u64) < total {
            let Ok(m) = tokio::time::timeout(Duration::from_secs(30), c.recv()).await else {
                break;
            };
            let m = m?;
            if let Some(ts) = rdkafka::Message::timestamp(&m).to_millis() {
                lat.push((northwest_store::store::now_ms_pub() - ts).max(0) as u32);
            }
        }
        let _ = sender.await;
        Ok(lat)
    }

    /// Applies every record of `topic` (journal records or snapshot rows)
    /// into a fresh store with ZooKeeper leases; returns records/s.
    pub async fn apply_all(
        zk: &str,
        brokers: &str,
        source: Source,
        dir: &std::path::Path,
        topic: &str,
        total: u64,
        root: &str,
    ) -> anyhow::Result<f64> {
        let engine: Arc<dyn Engine> = Arc::new(RocksEngine::open(dir, false)?);
        let zk = ZkCoordinator::connect(ZkConfig {
            connect: zk.into(),
            root: root.into(),
            ..ZkConfig::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let store = Store::open(engine, Arc::new(zk), StoreConfig::default())?;
        let shared = Arc::new(ApplyShared::default());
        let cfg = ApplyConfig {
            source,
            kafka: KafkaSettings::new(brokers),
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

    /// One write variant: journaling off, async or sync; returns its row
    /// and, with journaling, the topic it wrote and the rate at which every
    /// write was also shipped to Kafka (the outbox drained).
    async fn write_variant(
        b: &JournalBench,
        dir: &std::path::Path,
        stamp: u128,
        http: bool,
        mode: &str,
    ) -> anyhow::Result<(Row, String, Option<f64>)> {
        let tag = format!("{}-{mode}", if http { "http" } else { "core" });
        let mut b = b.clone();
        if mode == "sync" {
            b.ops = b.sync_ops;
        }
        let b = &b;
        let topic = format!("bench-journal-{tag}-{stamp}");
        let coord: Arc<dyn Coordinator> = if http {
            let zk = ZkCoordinator::connect(ZkConfig {
                connect: b.zk.clone(),
                root: format!("/northwest/bench-{stamp}-{tag}"),
                ..ZkConfig::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            Arc::new(zk)
        } else {
            Arc::new(LocalCoordinator::default())
        };
        let journal = mode != "off";
        let (store, relay, stop) =
            source(&dir.join(&tag), b, &topic, journal, mode == "sync", coord).await?;
        let t = Instant::now();
        let summary = writes(b, store.clone(), http).await;
        wait_shipped(&store).await;
        let shipped = journal.then(|| b.ops as f64 / t.elapsed().as_secs_f64());
        let _ = stop.send(true);
        if let Some(r) = relay {
            let _ = r.await;
        }
        let name = format!(
            "{}, journaling {}",
            if http {
                "n1 HTTP API, ZooKeeper leases"
            } else {
                "store core in-process, local locks"
            },
            match mode {
                "off" => "off",
                "async" => "on (async)",
                _ => "on (sync)",
            }
        );
        Ok((Row { name, summary }, topic, shipped))
    }

    async fn throughput(
        b: &JournalBench,
        dir: &std::path::Path,
        stamp: u128,
    ) -> anyhow::Result<()> {
        let b = b.clone();
        let mut rows = Vec::new();
        let mut costs = Vec::new();
        let mut topic = String::new();
        for http in [true, false] {
            let (off, _, _) = write_variant(&b, dir, stamp, http, "off").await?;
            let (on, t, shipped) = write_variant(&b, dir, stamp, http, "async").await?;
            let (sync, _, _) = write_variant(&b, dir, stamp, http, "sync").await?;
            let rate = |r: &Row| r.summary["rate_per_s"].as_f64().unwrap_or(0.0);
            costs.push((
                if http { "n1 HTTP API" } else { "store core" },
                100.0 * (1.0 - rate(&on) / rate(&off).max(1e-9)),
                100.0 * (1.0 - shipped.unwrap_or(0.0) / rate(&off).max(1e-9)),
            ));
            if !http {
                topic = t;
            }
            rows.extend([off, on, sync]);
        }
        print_rows(
            "n1 write throughput (async = acked after the local commit; sync = after Kafka's ack)",
            &rows,
        );
        for (what, cost, sustained) in costs {
            println!(
                "{what}: journaling (async) costs {cost:.1}% of write throughput; {sustained:.1}% counting until every write was shipped to Kafka"
            );
        }

        let raw = raw_consume(&b.brokers, &topic, b.ops).await?;
        let apply = apply_all(
            &b.zk,
            &b.brokers,
            Source::Journal,
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
        let local = Arc::new(LocalCoordinator::default());
        let (src, relay, stop) =
            source(&dir.join("lat-src"), &b, &lat_topic, true, false, local).await?;
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
        // The broker's own latency at the same moments, at a tenth of the
        // rate: tells the broker's state apart from what the pipeline adds.
        let probe = {
            let (brokers, rate) = (b.brokers.clone(), (b.latency_rate / 10).max(1));
            let (d, vb) = (b.latency_duration, b.value_bytes);
            let topic = format!("bench-journal-probe-{stamp}");
            tokio::spawn(async move { raw_latency(&brokers, &topic, rate, d, vb).await })
        };
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
        let lat = shared.latencies_ms.lock().clone();
        println!(
            "\nreplication latency at {} txn/s offered for {:?}, side by side:",
            b.latency_rate, b.latency_duration
        );
        print_latency("n1 commit -> applied on n2", lat);
        match probe.await {
            Ok(Ok(l)) => print_latency("broker alone, same moments, 1/10 rate", l),
            Ok(Err(e)) => println!("  broker probe failed: {e}"),
            Err(e) => println!("  broker probe failed: {e}"),
        }
        let _ = astop_tx.send(true);
        let _ = task.await;
        let _ = stop.send(true);
        if let Some(r) = relay {
            let _ = r.await;
        }
        let raw = raw_latency(
            &b.brokers,
            &format!("bench-journal-rawlat-{stamp}"),
            b.latency_rate,
            b.latency_duration,
            b.value_bytes,
        )
        .await?;
        print_latency("broker alone afterwards, same rate", raw);
        Ok(())
    }
}
