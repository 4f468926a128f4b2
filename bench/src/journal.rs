//! `northwest bench journal`: journaling cost on n1, apply rate vs raw
//! consume of the same records, replication latency beside the broker's own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use northwest_consumer::Source;
use northwest_kafka::{KafkaSettings, TopicSpec};
use northwest_producer::{Relay, RelayConfig, RelayStats};
use northwest_store::{
    Coordinator, Engine, LocalCoordinator, RocksEngine, Store, StoreConfig, ZkConfig, ZkCoordinator,
};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::common::{apply_all, in_process, over_http, print_rows, say, Row, Shape};

mod latency;

use latency::latency;

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
    /// The relay's coalescing window (`journal.relay_coalesce_ms`).
    #[arg(long, default_value = "2ms", value_parser = crate::loadgen::parse_duration)]
    pub relay_coalesce: Duration,
    /// Only run the replication-latency measurement.
    #[arg(long)]
    pub latency_only: bool,
}

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
    durable: bool,
    coord: Arc<dyn Coordinator>,
) -> anyhow::Result<(
    Arc<Store>,
    Option<tokio::task::JoinHandle<()>>,
    tokio::sync::watch::Sender<bool>,
)> {
    let engine: Arc<dyn Engine> = Arc::new(RocksEngine::open(dir, durable)?);
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
            coalesce: b.relay_coalesce,
            confluent_id: None,
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
    let sb = Shape {
        ops: b.ops,
        clients: b.clients,
        groups: b.groups,
        value_bytes: b.value_bytes,
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
    while !store.outbox().is_empty() {
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

pub async fn run(b: JournalBench) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    say!(
        "bench journal: {} single-op transactions of {} B per variant, {} clients, {} groups; broker {}",
        b.ops, b.value_bytes, b.clients, b.groups, b.brokers
    );
    if !b.latency_only {
        throughput(&b, dir.path(), stamp).await?;
    }
    latency(&b, dir.path(), stamp).await
}

/// One write variant: journaling off, async or sync, with an fsync per
/// commit (`durable`, the node's default) or without; returns its row
/// and, with journaling, the topic it wrote and the rate at which every
/// write was also shipped to Kafka (the outbox drained).
async fn write_variant(
    b: &JournalBench,
    dir: &std::path::Path,
    stamp: u128,
    (http, durable): (bool, bool),
    mode: &str,
) -> anyhow::Result<(Row, String, Option<f64>)> {
    let tag = format!(
        "{}-{mode}{}",
        if http { "http" } else { "core" },
        if durable { "-durable" } else { "" }
    );
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
    let (store, relay, stop) = source(
        &dir.join(&tag),
        b,
        &topic,
        journal,
        mode == "sync",
        durable,
        coord,
    )
    .await?;
    let t = Instant::now();
    let summary = writes(b, store.clone(), http).await;
    wait_shipped(&store).await;
    let shipped = journal.then(|| b.ops as f64 / t.elapsed().as_secs_f64());
    let _ = stop.send(true);
    if let Some(r) = relay {
        let _ = r.await;
    }
    let name = format!(
        "{}, {}, journaling {}",
        if http {
            "n1 HTTP API, ZooKeeper leases"
        } else {
            "store core in-process, local locks"
        },
        if durable {
            "fsync per commit (durable)"
        } else {
            "no fsync (fast)"
        },
        match mode {
            "off" => "off",
            "async" => "on (async)",
            _ => "on (sync)",
        }
    );
    Ok((Row { name, summary }, topic, shipped))
}

async fn throughput(b: &JournalBench, dir: &std::path::Path, stamp: u128) -> anyhow::Result<()> {
    let b = b.clone();
    let mut rows = Vec::new();
    let mut costs = Vec::new();
    let mut topic = String::new();
    for (http, durable) in [(true, true), (true, false), (false, true), (false, false)] {
        let v = (http, durable);
        let (off, _, _) = write_variant(&b, dir, stamp, v, "off").await?;
        let (on, t, shipped) = write_variant(&b, dir, stamp, v, "async").await?;
        let rate = |r: &Row| r.summary["rate_per_s"].as_f64().unwrap_or(0.0);
        costs.push((
            format!(
                "{}, {}",
                if http { "n1 HTTP API" } else { "store core" },
                if durable { "durable" } else { "fast" }
            ),
            100.0 * (1.0 - rate(&on) / rate(&off).max(1e-9)),
            100.0 * (1.0 - shipped.unwrap_or(0.0) / rate(&off).max(1e-9)),
        ));
        if !http && !durable {
            topic = t;
        }
        rows.extend([off, on]);
        if !durable {
            let (sync, _, _) = write_variant(&b, dir, stamp, v, "sync").await?;
            rows.push(sync);
        }
    }
    print_rows(
        "n1 write throughput (async = acked after the local commit; sync = after Kafka's ack)",
        &rows,
    );
    for (what, cost, sustained) in costs {
        say!(
            "{what}: journaling (async) costs {cost:.1}% of write throughput; {sustained:.1}% counting until every write was shipped to Kafka"
        );
    }

    let raw = raw_consume(&b.brokers, &topic, b.ops).await?;
    let apply = apply_all(
        Some(&b.zk),
        &b.brokers,
        Source::Journal,
        &dir.join("apply"),
        &topic,
        b.ops,
        &format!("/northwest/bench-{stamp}-apply"),
    )
    .await?;
    say!(
        "\nn2 apply vs raw consume (same {} records of {} B, same broker)",
        b.ops,
        b.value_bytes
    );
    say!(
        "{:<48} {:>12.0} records/s",
        "raw consume (rdkafka, no decode, no store)",
        raw
    );
    say!(
        "{:<48} {:>12.0} transactions/s",
        "apply (decode + ZK leases + version check + RocksDB)",
        apply
    );
    say!("apply / raw = {:.2}", apply / raw);
    Ok(())
}
