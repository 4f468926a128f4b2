//! The soak's samples (each a flat map of series to values), the growth of
//! each series over the report's window, and the verdict.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::{json, Value};
use zookeeper_client as zk;

use super::{Deployment, SoakBench};
use crate::common::say;
use crate::loadgen::Tally;

/// One sample: seconds since the load began, and each series' value.
pub(crate) type Sample = (f64, BTreeMap<String, f64>);

pub(super) struct Probe {
    zk: zk::Client,
    kafka: BaseConsumer,
    http: reqwest::Client,
}

impl Probe {
    pub(super) async fn new(b: &SoakBench, _d: &Deployment) -> anyhow::Result<Self> {
        let zk = zk::Client::connector()
            .with_session_timeout(Duration::from_secs(20))
            .connect(&b.zk)
            .await?;
        let kafka: BaseConsumer = northwest_kafka::KafkaSettings::new(&b.brokers)
            .consumer_config(&[("group.id", "bench-soak-probe")])
            .create()?;
        Ok(Self {
            zk,
            kafka,
            http: reqwest::Client::new(),
        })
    }

    /// Every series now. A value that cannot be read is left out (the
    /// chart shows a gap) rather than recorded as 0.
    pub(super) async fn sample(&self, d: &Deployment, t_s: f64) -> Sample {
        let mut v = BTreeMap::new();
        for (name, base, data, proc) in &d.nodes {
            let pid = proc.pid();
            if let Some(kb) = rss_kb(pid) {
                v.insert(format!("{name}.rss_mb"), kb as f64 / 1024.0);
            }
            if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
                v.insert(format!("{name}.fds"), fds.count() as f64);
            }
            v.insert(
                format!("{name}.data_mb"),
                dir_bytes(data) as f64 / (1 << 20) as f64,
            );
            if let Ok(s) = self.status(base).await {
                v.insert(
                    format!("{name}.outbox"),
                    s["outbox_pending"].as_f64().unwrap_or(0.0),
                );
                if let Some(m) = s["marker_gc"]["markers"].as_f64() {
                    v.insert(format!("{name}.markers"), m);
                }
                // RocksDB's share of the RSS: the block cache (memtables
                // are charged to it) and indexes held outside it.
                let e = &s["engine_memory"];
                if let (Some(c), Some(t)) = (e["block_cache"].as_f64(), e["table_readers"].as_f64())
                {
                    let engine = (c + t) / (1 << 20) as f64;
                    v.insert(format!("{name}.engine_mb"), engine);
                    // The rest: what RocksDB's fixed budget does not bound
                    // (the part a growing RSS must be explained by once the
                    // cache is full).
                    if let Some(rss) = v.get(&format!("{name}.rss_mb")).copied() {
                        v.insert(format!("{name}.rss_other_mb"), rss - engine);
                    }
                }
            }
        }
        if let Ok(n) = count_znodes(&self.zk, &d.root).await {
            v.insert("zk.znodes".into(), n as f64);
        }
        if let Ok(n) = self.topic_records(&d.topic) {
            v.insert("kafka.records".into(), n as f64);
        }
        (t_s, v)
    }

    async fn status(&self, base: &str) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{base}/v1/admin/status"))
            .timeout(Duration::from_secs(10))
            .send()
            .await?
            .json()
            .await?)
    }

    /// Records the broker holds in the deployment's topics (the journal,
    /// its dead-letter topic and the snapshot topics): high minus low
    /// watermark, summed.
    fn topic_records(&self, prefix: &str) -> anyhow::Result<i64> {
        let md = self.kafka.fetch_metadata(None, Duration::from_secs(10))?;
        let mut n = 0;
        for t in md.topics().iter().filter(|t| t.name().starts_with(prefix)) {
            for p in t.partitions() {
                let (lo, hi) =
                    self.kafka
                        .fetch_watermarks(t.name(), p.id(), Duration::from_secs(10))?;
                n += hi - lo;
            }
        }
        Ok(n)
    }
}

fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

async fn count_znodes(c: &zk::Client, root: &str) -> anyhow::Result<u64> {
    let mut n = 0;
    let mut todo = vec![root.to_string()];
    while let Some(path) = todo.pop() {
        let (kids, _) = match c.get_children(&path).await {
            Ok(k) => k,
            Err(zk::Error::NoNode) => continue,
            Err(e) => return Err(e.into()),
        };
        n += 1;
        todo.extend(kids.into_iter().map(|k| format!("{path}/{k}")));
    }
    Ok(n)
}

/// Waits until both nodes' outboxes are empty and every apply loop caught
/// up (status `apply.caught_up`, where a node has one); `false` if not
/// within `limit`.
pub(super) async fn wait_drained(d: &Deployment, limit: Duration) -> bool {
    let c = reqwest::Client::new();
    let t = Instant::now();
    while t.elapsed() < limit {
        let mut drained = true;
        for (_, base, _, _) in &d.nodes {
            let s: Value = match c.get(format!("{base}/v1/admin/status")).send().await {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            };
            drained &= s["outbox_pending"].as_u64() == Some(0)
                && (s["apply"].is_null() || s["apply"]["caught_up"] == Value::Bool(true));
        }
        if drained {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

pub(super) fn say_sample(s: &Sample, tally: &Tally) {
    let g = |k: &str| s.1.get(k).copied().unwrap_or(f64::NAN);
    say!(
        "  {:>6.0} s: requests {} (failed {}); RSS n1 {:.0} MB n2 {:.0} MB (RocksDB {:.0}/{:.0}); fds {:.0}/{:.0}; data {:.0}/{:.0} MB; outbox {:.0}/{:.0}; markers {:.0}/{:.0}; znodes {:.0}; topic records {:.0}",
        s.0,
        tally.issued.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        g("n1.rss_mb"), g("n2.rss_mb"), g("n1.engine_mb"), g("n2.engine_mb"),
        g("n1.fds"), g("n2.fds"),
        g("n1.data_mb"), g("n2.data_mb"), g("n1.outbox"), g("n2.outbox"),
        g("n1.markers"), g("n2.markers"), g("zk.znodes"), g("kafka.records")
    );
}

/// A series' growth over the window: from its first sample at or after
/// the window's start to its last sample of the load (the final drained
/// sample is not part of it).
fn growth(samples: &[Sample], key: &str, from_s: f64) -> Option<Value> {
    let pts: Vec<(f64, f64)> = samples
        .iter()
        .filter(|(t, _)| *t >= from_s)
        .filter_map(|(t, v)| v.get(key).map(|x| (*t, *x)))
        .collect();
    let (first, last) = (pts.first()?, pts.last()?);
    let max = pts.iter().map(|p| p.1).fold(f64::MIN, f64::max);
    let mean = pts.iter().map(|p| p.1).sum::<f64>() / pts.len() as f64;
    let pct = if first.1 > 0.0 {
        100.0 * (last.1 / first.1 - 1.0)
    } else if last.1 > 0.0 {
        f64::INFINITY
    } else {
        0.0
    };
    // The least-squares trend over the window, as a share of the mean: a
    // high first sample (memory after the rollback) cannot hide a leak
    // that last-vs-first would miss.
    let trend_pct = (mean > 0.0 && pts.len() >= 3).then(|| {
        let tm = pts.iter().map(|p| p.0).sum::<f64>() / pts.len() as f64;
        let (num, den) = pts.iter().fold((0.0, 0.0), |(n, d), (t, v)| {
            (n + (t - tm) * (v - mean), d + (t - tm) * (t - tm))
        });
        100.0 * (num / den.max(1e-9)) * (last.0 - first.0) / mean
    });
    Some(json!({
        "from_s": first.0, "to_s": last.0, "first": first.1, "last": last.1,
        "max": max, "growth_pct": if pct.is_finite() { json!(pct) } else { json!("from 0") },
        "trend_pct": trend_pct,
    }))
}

/// The JSON report: every sample, the events, each series' growth over the
/// window, and the verdicts on the targets.
pub(super) fn report(
    b: &SoakBench,
    samples: &[Sample],
    events: &[Value],
    tally: &Tally,
    drained: bool,
) -> Value {
    let (load, last) = samples.split_at(samples.len() - 1);
    let end = load.last().map_or(0.0, |s| s.0);
    let from = (end - b.growth_window.as_secs_f64()).max(0.0);
    let keys: std::collections::BTreeSet<&String> =
        samples.iter().flat_map(|s| s.1.keys()).collect();
    let growth: BTreeMap<&String, Value> = keys
        .iter()
        .filter_map(|k| growth(load, k, from).map(|g| (*k, g)))
        .collect();
    let pct = |k: &str, f: &str| growth.get(&k.to_string())?[f].as_f64();
    // Within 5% both ways: last against first, and the window's trend.
    let bounded = |k: &str| Some(pct(k, "growth_pct")? <= 5.0 && pct(k, "trend_pct")? <= 5.0);
    let seen = |k: &str| growth.get(&k.to_string()).and_then(|g| g["max"].as_f64());
    let final_v = |k: &str| last[0].1.get(k).copied();
    // Markers existed (the load deletes) and their number stayed level.
    let markers_collected = ["n1.markers", "n2.markers"]
        .iter()
        .all(|k| seen(k).is_some_and(|m| m > 0.0) && bounded(k) == Some(true));
    let verdicts = json!({
        "n1_rss_within_5pct": bounded("n1.rss_mb"),
        "n2_rss_within_5pct": bounded("n2.rss_mb"),
        "n1_rss_outside_rocksdb_within_5pct": bounded("n1.rss_other_mb"),
        "n2_rss_outside_rocksdb_within_5pct": bounded("n2.rss_other_mb"),
        "n1_fds_within_5pct": bounded("n1.fds"),
        "n2_fds_within_5pct": bounded("n2.fds"),
        "outbox_back_to_0": drained && final_v("n1.outbox") == Some(0.0) && final_v("n2.outbox") == Some(0.0),
        "markers_collected": markers_collected,
        "events_succeeded": !events.is_empty() && events.iter().all(|e| e["error"].is_null()),
    });
    json!({
        "duration_s": b.duration.as_secs_f64(), "rate": b.rate, "reads": b.reads,
        "value_bytes": b.value_bytes, "entities": b.entities,
        "marker_retention_hours": b.marker_retention_hours,
        "growth_window_s": end - from,
        "requests": tally.issued.load(Ordering::Relaxed),
        "failed": tally.failed.load(Ordering::Relaxed),
        "errors": tally.errors.lock().iter().take(10).cloned().collect::<Vec<_>>(),
        "events": events,
        "growth": growth,
        "verdicts": verdicts,
        "samples": samples.iter().map(|(t, v)| json!({"t_s": t, "v": v})).collect::<Vec<_>>(),
    })
}

pub(super) fn say_verdict(r: &Value) {
    say!(
        "\ngrowth over the last {:.0} s (first -> last sample of the load):",
        r["growth_window_s"].as_f64().unwrap_or(0.0)
    );
    if let Some(g) = r["growth"].as_object() {
        for (k, v) in g {
            say!(
                "  {k:<14} {:>12.1} -> {:>12.1} (max {:>12.1}): {}, trend {}",
                v["first"].as_f64().unwrap_or(0.0),
                v["last"].as_f64().unwrap_or(0.0),
                v["max"].as_f64().unwrap_or(0.0),
                match &v["growth_pct"] {
                    Value::Number(n) => format!("{:+.1}%", n.as_f64().unwrap_or(0.0)),
                    other => other.to_string(),
                },
                v["trend_pct"]
                    .as_f64()
                    .map_or("-".to_string(), |t| format!("{t:+.1}%"))
            );
        }
    }
    say!(
        "requests {} failed {}; verdicts: {}",
        r["requests"],
        r["failed"],
        r["verdicts"]
    );
}
