//! Replication latency at a fixed offered load, side by side with the
//! broker's own latency at the same moments and afterwards.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use northwest_consumer::{ApplyConfig, ApplyShared, Source};
use northwest_kafka::KafkaSettings;
use northwest_store::{
    Engine, KeyPath, LocalCoordinator, Namespace, Op, RocksEngine, Store, StoreConfig, ZkConfig,
    ZkCoordinator,
};
use rdkafka::Offset;

use super::{consumer_at, source, topic_spec, JournalBench};
use crate::common::{random_key, say};
use crate::loadgen::{drive, Tally};

pub(super) fn print_latency(what: &str, mut lat: Vec<u32>) {
    lat.sort_unstable();
    let q = |f: f64| {
        lat.get(((lat.len() as f64 - 1.0) * f).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    say!(
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
pub(super) async fn raw_latency(
    brokers: &str,
    topic: &str,
    rate: u64,
    duration: Duration,
    value_bytes: usize,
) -> anyhow::Result<Vec<u32>> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let kafka = KafkaSettings::new(brokers);
    northwest_kafka::ensure_topic(&kafka, &topic_spec(topic)).await?;
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

/// n2's applier for the latency run, recording commit-to-applied latency:
/// its task, its counters and the flag that stops it.
pub(super) async fn latency_applier(
    b: &JournalBench,
    dir: &std::path::Path,
    stamp: u128,
    topic: &str,
) -> anyhow::Result<(
    tokio::task::JoinHandle<Result<(), northwest_consumer::ConsumerError>>,
    Arc<ApplyShared>,
    tokio::sync::watch::Sender<bool>,
)> {
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
        linger: Duration::from_millis(1),
        ..ApplyConfig::new(
            Source::Journal,
            KafkaSettings::new(&b.brokers),
            topic,
            "bench-lat",
        )
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
    Ok((task, shared, astop_tx))
}

/// Offers `total` single-put transactions to `src` at the latency rate.
pub(super) async fn offer_load(b: &JournalBench, src: &Arc<Store>, total: u64, tally: Arc<Tally>) {
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
}

pub(super) async fn latency(
    b: &JournalBench,
    dir: &std::path::Path,
    stamp: u128,
) -> anyhow::Result<()> {
    let b = b.clone();
    let lat_topic = format!("bench-journal-lat-{stamp}");
    let local = Arc::new(LocalCoordinator::default());
    // Durable commits, as a node makes them by default.
    let (src, relay, stop) = source(
        &dir.join("lat-src"),
        &b,
        &lat_topic,
        true,
        false,
        true,
        local,
    )
    .await?;
    let (task, shared, astop_tx) = latency_applier(&b, dir, stamp, &lat_topic).await?;
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
    // The broker's own latency at the same moments, at a tenth of the
    // rate: tells the broker's state apart from what the pipeline adds.
    let probe = {
        let (brokers, rate) = (b.brokers.clone(), (b.latency_rate / 10).max(1));
        let (d, vb) = (b.latency_duration, b.value_bytes);
        let topic = format!("bench-journal-probe-{stamp}");
        tokio::spawn(async move { raw_latency(&brokers, &topic, rate, d, vb).await })
    };
    offer_load(&b, &src, total, tally.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while shared.txns.load(Ordering::Relaxed) < total + 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lat = shared.latencies_ms.lock().clone();
    say!(
        "\nreplication latency at {} txn/s offered for {:?}, side by side:",
        b.latency_rate,
        b.latency_duration
    );
    print_latency("n1 commit -> applied on n2", lat);
    match probe.await {
        Ok(Ok(l)) => print_latency("broker alone, same moments, 1/10 rate", l),
        Ok(Err(e)) => say!("  broker probe failed: {e}"),
        Err(e) => say!("  broker probe failed: {e}"),
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
