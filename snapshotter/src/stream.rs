//! Streaming a consistent view to the compacted snapshot topic.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use northwest_kafka::{ensure_topic, KafkaSettings, TopicSpec};
use northwest_schemas::{encode_snapshot, SnapshotRecord};
use northwest_store::engine::{Cf, Reader};
use northwest_store::key::decode_key;
use northwest_store::{failpoint, EntityRecord, KeyRange, Namespace};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use crate::progress::{from_hex, to_hex, Plan, ProgressStore, RangeCursor};
use crate::SnapshotError;

#[derive(Debug, Clone)]
pub struct SnapshotConfig {
    pub kafka: KafkaSettings,
    pub topic: String,
    pub partitions: i32,
    pub snapshot_id: String,
    pub origin: String,
    /// Key ranges streamed in parallel.
    pub ranges: usize,
    /// Rows per checkpointed chunk.
    pub chunk: usize,
    /// Rows per second across all ranges (protects n1); 0 = unlimited.
    /// Read before every chunk, so a controller can change it while the
    /// snapshot streams.
    pub rows_per_sec: Arc<AtomicU64>,
}

/// Progress counters (rows include delete markers).
#[derive(Debug, Default)]
pub struct SnapshotStats {
    pub total: AtomicU64,
    pub streamed: AtomicU64,
    /// Rows already streamed by an earlier, interrupted run.
    pub resumed: AtomicU64,
    /// Keys and values delivered by this run, bytes.
    pub bytes: AtomicU64,
}

/// The compacted topic spec: the latest row per entity key survives.
pub fn snapshot_topic(name: &str, partitions: i32, replication: i32) -> TopicSpec {
    TopicSpec {
        name: name.to_string(),
        partitions,
        replication,
        configs: vec![
            ("cleanup.policy".into(), "compact".into()),
            // Rows are never Kafka tombstones (deletes are versioned rows), so
            // these only bound how long a superseded copy of a row lingers.
            ("delete.retention.ms".into(), "86400000".into()),
            ("min.compaction.lag.ms".into(), "0".into()),
        ],
    }
}

/// Paces rows at the current rate, in slices of about 200 ms of rows that
/// each re-read the rate, so a controller's change applies within a slice
/// (not after a chunk booked at the old rate).
struct Limiter {
    rate: Arc<AtomicU64>,
    next: parking_lot::Mutex<Instant>,
}

impl Limiter {
    async fn take(&self, n: u64) {
        let mut left = n;
        while left > 0 {
            let rate = self.rate.load(Ordering::Relaxed);
            if rate == 0 {
                *self.next.lock() = Instant::now();
                return;
            }
            let slice = left.min((rate / 5).max(1));
            let start = {
                let mut next = self.next.lock();
                let start = (*next).max(Instant::now());
                *next = start + Duration::from_secs_f64(slice as f64 / rate as f64);
                start
            };
            tokio::time::sleep_until(start.into()).await;
            left -= slice;
        }
    }
}

/// Splits the namespace into `ranges` parts of about equal row counts.
fn compute_plan(reader: &dyn Reader, ns: &Namespace, ranges: usize) -> Result<Plan, SnapshotError> {
    let all = KeyRange::namespace(ns);
    let count = |f: &mut dyn FnMut(&[u8])| -> Result<(), SnapshotError> {
        let mut cur = all.clone();
        loop {
            let page = reader.scan(Cf::Entities, &cur, 4096)?;
            for (k, _) in &page {
                f(k);
            }
            match page.last() {
                Some((k, _)) if page.len() == 4096 => {
                    cur.start = k.clone();
                    cur.start.push(0);
                }
                _ => return Ok(()),
            }
        }
    };
    let mut total = 0u64;
    count(&mut |_| total += 1)?;
    let per = (total / ranges.max(1) as u64).max(1);
    let mut bounds = vec![all.start.clone()];
    let mut i = 0u64;
    count(&mut |k| {
        if i > 0 && i.is_multiple_of(per) && bounds.len() < ranges.max(1) {
            bounds.push(k.to_vec());
        }
        i += 1;
    })?;
    let mut plan = Plan {
        ranges: Vec::new(),
        total_rows: total,
    };
    for (j, s) in bounds.iter().enumerate() {
        let end = bounds.get(j + 1).cloned().or_else(|| all.end.clone());
        plan.ranges.push((to_hex(s), end.map(|e| to_hex(&e))));
    }
    Ok(plan)
}

/// Streams `ns` from `reader` (a consistent view) to the snapshot topic,
/// resuming from `progress`. Returns the rows streamed in total.
pub async fn stream_snapshot(
    reader: Arc<dyn Reader>,
    ns: &Namespace,
    cfg: &SnapshotConfig,
    progress: Arc<dyn ProgressStore>,
    stats: Arc<SnapshotStats>,
) -> Result<u64, SnapshotError> {
    ensure_topic(&cfg.kafka, &snapshot_topic(&cfg.topic, cfg.partitions, 1)).await?;
    let plan = match progress.load_plan().await? {
        Some(p) => p,
        None => {
            let r = reader.clone();
            let (ns2, n) = (ns.clone(), cfg.ranges);
            let p = tokio::task::spawn_blocking(move || compute_plan(r.as_ref(), &ns2, n))
                .await
                .map_err(|e| SnapshotError::Progress(e.to_string()))??;
            progress.save_plan(&p).await?;
            p
        }
    };
    stats.total.store(plan.total_rows, Ordering::Relaxed);
    let producer: FutureProducer = cfg.kafka.producer_config().create()?;
    let limiter = Arc::new(Limiter {
        rate: cfg.rows_per_sec.clone(),
        next: parking_lot::Mutex::new(Instant::now()),
    });
    let runs = plan.ranges.iter().enumerate().map(|(i, (s, e))| {
        let (reader, progress, stats, producer, limiter) = (
            reader.clone(),
            progress.clone(),
            stats.clone(),
            producer.clone(),
            limiter.clone(),
        );
        async move {
            let range = KeyRange {
                start: from_hex(s)?,
                end: e.as_deref().map(from_hex).transpose()?,
            };
            stream_range(i, range, reader, cfg, progress, stats, producer, limiter).await
        }
    });
    let rows: Vec<u64> = futures::future::try_join_all(runs).await?;
    Ok(rows.iter().sum())
}

#[allow(clippy::too_many_arguments)]
async fn stream_range(
    i: usize,
    range: KeyRange,
    reader: Arc<dyn Reader>,
    cfg: &SnapshotConfig,
    progress: Arc<dyn ProgressStore>,
    stats: Arc<SnapshotStats>,
    producer: FutureProducer,
    limiter: Arc<Limiter>,
) -> Result<u64, SnapshotError> {
    let mut cursor = progress.load_cursor(i).await?.unwrap_or(RangeCursor {
        next: to_hex(&range.start),
        rows: 0,
        done: false,
    });
    stats.streamed.fetch_add(cursor.rows, Ordering::Relaxed);
    stats.resumed.fetch_add(cursor.rows, Ordering::Relaxed);
    while !cursor.done {
        let chunk_range = KeyRange {
            start: from_hex(&cursor.next)?,
            end: range.end.clone(),
        };
        let page = reader.scan(Cf::Entities, &chunk_range, cfg.chunk)?;
        let Some((last, _)) = page.last().cloned() else {
            cursor.done = true;
            progress.save_cursor(i, &cursor).await?;
            break;
        };
        let n = send_chunk(&page, cfg, &producer).await?;
        // Only delivered rows are checkpointed; a crash re-sends at most one chunk.
        let mut next = last;
        next.push(0);
        cursor.next = to_hex(&next);
        cursor.rows += n;
        progress.save_cursor(i, &cursor).await?;
        stats.streamed.fetch_add(n, Ordering::Relaxed);
        let bytes: usize = page.iter().map(|(k, v)| k.len() + v.len()).sum();
        stats.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        if failpoint::hit("snapshotter::after_chunk") {
            return Err(SnapshotError::Progress(
                "injected failure at snapshotter::after_chunk".into(),
            ));
        }
        limiter.take(n).await;
    }
    Ok(cursor.rows)
}

/// Sends one page of entities as snapshot rows and waits for every
/// delivery; returns the rows delivered.
async fn send_chunk(
    page: &[(Vec<u8>, Vec<u8>)],
    cfg: &SnapshotConfig,
    producer: &FutureProducer,
) -> Result<u64, SnapshotError> {
    let mut pending = Vec::with_capacity(page.len());
    for (k, v) in page {
        let (ns, key) = decode_key(k).map_err(|e| SnapshotError::Encode(e.to_string()))?;
        let r = EntityRecord::decode(v)?;
        let row = SnapshotRecord {
            namespace: ns.to_string(),
            key: key.to_string(),
            version: r.version.0,
            deleted: r.value.is_none(),
            value: r.value,
            commit_ts_ms: r.commit_ts_ms,
            snapshot_id: cfg.snapshot_id.clone(),
            origin: cfg.origin.clone(),
        };
        let payload = encode_snapshot(&row).map_err(|e| SnapshotError::Encode(e.to_string()))?;
        let kafka_key = format!("{ns}/{key}");
        loop {
            let rec = FutureRecord::to(&cfg.topic)
                .key(kafka_key.as_bytes())
                .payload(&payload)
                .timestamp(r.commit_ts_ms);
            match producer.send_result(rec) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                // Local queue full: let deliveries drain.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                // Anything else (e.g. a row over message.max.bytes) will
                // not heal by retrying: stop with the reason.
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
    for f in pending {
        match f.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(e.into()),
            Err(_) => {
                return Err(SnapshotError::Progress(
                    "producer dropped a delivery".into(),
                ))
            }
        }
    }
    Ok(page.len() as u64)
}

#[cfg(test)]
mod tests {
    use northwest_store::engine::WriteBatch;
    use northwest_store::key::encode_key;
    use northwest_store::types::Version;
    use northwest_store::{Engine, KeyPath, MemEngine};

    use super::*;

    fn put(e: &MemEngine, ns: &str, key: &str) {
        let rec = EntityRecord {
            version: Version(1),
            commit_ts_ms: 0,
            value: Some(b"v".to_vec()),
            marker_gen: None,
        };
        let mut b = WriteBatch::default();
        let k = encode_key(&Namespace::new(ns).unwrap(), &KeyPath::parse(key).unwrap());
        b.put(Cf::Entities, k, rec.encode());
        e.write(b).unwrap();
    }

    /// Rows of `ns` whose keys fall in the plan's range `i`.
    fn rows_in(e: &MemEngine, ns: &Namespace, plan: &Plan, i: usize) -> usize {
        let (start, end) = &plan.ranges[i];
        let mut r = KeyRange::namespace(ns);
        r.start = from_hex(start).unwrap();
        r.end = end.as_ref().map(|e| from_hex(e).unwrap());
        e.scan(Cf::Entities, &r, 100_000).unwrap().len()
    }

    #[test]
    fn a_plan_splits_the_namespace_into_contiguous_even_ranges() {
        let e = MemEngine::new();
        for i in 0..1000 {
            put(&e, "app", &format!("Doc:{i:04}"));
        }
        // Another namespace's rows are in no range.
        for i in 0..50 {
            put(&e, "other", &format!("Doc:{i}"));
        }
        let ns = Namespace::new("app").unwrap();
        let plan = compute_plan(&e, &ns, 4).unwrap();
        assert_eq!(plan.total_rows, 1000);
        assert_eq!(plan.ranges.len(), 4);
        // Each range starts where the previous one ends; the first starts
        // at the namespace's start, the last ends at its end.
        let all = KeyRange::namespace(&ns);
        assert_eq!(from_hex(&plan.ranges[0].0).unwrap(), all.start);
        for w in plan.ranges.windows(2) {
            assert_eq!(w[0].1.as_deref(), Some(w[1].0.as_str()));
        }
        assert_eq!(
            plan.ranges[3].1.as_ref().map(|e| from_hex(e).unwrap()),
            all.end
        );
        let counts: Vec<usize> = (0..4).map(|i| rows_in(&e, &ns, &plan, i)).collect();
        assert_eq!(counts.iter().sum::<usize>(), 1000, "{counts:?}");
        assert!(counts.iter().all(|c| *c == 250), "{counts:?}");
    }

    #[test]
    fn a_small_or_empty_namespace_still_gets_a_plan_that_covers_it() {
        let e = MemEngine::new();
        let ns = Namespace::new("app").unwrap();
        let empty = compute_plan(&e, &ns, 4).unwrap();
        assert_eq!(empty.total_rows, 0);
        assert_eq!(empty.ranges.len(), 1, "{empty:?}");
        put(&e, "app", "Doc:1");
        put(&e, "app", "Doc:2");
        let small = compute_plan(&e, &ns, 8).unwrap();
        let rows: usize = (0..small.ranges.len())
            .map(|i| rows_in(&e, &ns, &small, i))
            .sum();
        assert_eq!(rows, 2, "{small:?}");
        // Both plans span the whole namespace, contiguously: a row written
        // after the plan was made still falls in a range.
        let all = KeyRange::namespace(&ns);
        for plan in [&empty, &small] {
            let first = &plan.ranges[0];
            let last = plan.ranges.last().unwrap();
            assert_eq!(from_hex(&first.0).unwrap(), all.start, "{plan:?}");
            assert_eq!(last.1.as_ref().map(|e| from_hex(e).unwrap()), all.end);
            for w in plan.ranges.windows(2) {
                assert_eq!(w[0].1.as_deref(), Some(w[1].0.as_str()));
            }
        }
    }

    #[test]
    fn hex_round_trips_and_bad_hex_is_an_error() {
        let b = vec![0u8, 1, 0x7f, 0xff];
        assert_eq!(from_hex(&to_hex(&b)).unwrap(), b);
        assert!(from_hex("abc").is_err());
        assert!(from_hex("zz").is_err());
    }

    #[test]
    fn the_snapshot_topic_is_compacted() {
        let t = snapshot_topic("s", 4, 1);
        assert!(t
            .configs
            .iter()
            .any(|(k, v)| k == "cleanup.policy" && v == "compact"));
    }
}
