//! Typed telemetry: every Prometheus metric the node exports, with stable
//! names and labels, refreshed from the pipeline's counters at scrape time.

use std::sync::atomic::Ordering;

use northwest_consumer::{ApplyShared, PartitionLag};
use northwest_control::MigrationRecord;
use northwest_producer::RelayStats;
use parking_lot::Mutex;
use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// What the node does, which decides the series it exports: a source has no
/// apply series and a target no relay series (rather than ones stuck at 0).
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    pub source: bool,
    pub target: bool,
}

pub struct Metrics {
    registry: Registry,
    apply_txns: IntCounter,
    apply_writes: IntCounterVec,
    apply_dead_letter: IntCounter,
    apply_batches: IntCounter,
    apply_retries: IntCounter,
    apply_running: IntGauge,
    halted: IntGaugeVec,
    lag_records: IntGaugeVec,
    lag_seconds: GaugeVec,
    stored_offset: IntGaugeVec,
    high_watermark: IntGaugeVec,
    relay_shipped: IntCounter,
    relay_errors: IntCounter,
    outbox_pending: IntGauge,
    outbox_oldest_age: Gauge,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    migration_phase: IntGaugeVec,
    migration_phase_age: GaugeVec,
    migration_snapshot_rows: IntGaugeVec,
    migration_pause: GaugeVec,
    migration_failed: IntGaugeVec,
    ns_fenced: IntGaugeVec,
    ns_proxied: IntGaugeVec,
    ns_promoted: IntGaugeVec,
    snapshot_loaded_rows: IntGauge,
    lag_probe_ok: IntGauge,
    delete_markers: IntGauge,
    delete_markers_removed: IntCounter,
    marker_gc_blocked: IntGauge,
    migration_records_unreadable: IntGauge,
    reverse_lag: IntGauge,
    read_cache_hits: IntCounter,
    read_cache_misses: IntCounter,
    read_cache_warmed: IntCounter,
    read_cache_entries: IntGauge,
    read_cache_bytes: IntGauge,
    last: Mutex<Seen>,
    /// Data-API latency over the last seconds (what a migration throttles on).
    recent: Mutex<RecentLatency>,
    /// Every namespace a fenced/proxied/promoted series was exported for:
    /// each is written every round (0 when no longer in its list).
    gate_seen: Mutex<std::collections::BTreeSet<String>>,
}

/// Upper bounds (ms) of the recent-latency buckets; the last is +inf.
const RECENT_BOUNDS_MS: [f64; 14] = [
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    20.0,
    50.0,
    100.0,
    200.0,
    500.0,
    1000.0,
    2000.0,
    5000.0,
    f64::INFINITY,
];
/// Slots of 2 s: the window is the last 10 s.
const RECENT_SLOTS: usize = 5;
const RECENT_SLOT_MS: i64 = 2000;

/// Data-API latencies by bucket, per 2 s slot.
#[derive(Default)]
struct RecentLatency {
    slots: [(i64, [u64; 14]); RECENT_SLOTS],
}

impl RecentLatency {
    fn record(&mut self, now_ms: i64, ms: f64) {
        let epoch = now_ms / RECENT_SLOT_MS;
        let slot = &mut self.slots[(epoch as usize) % RECENT_SLOTS];
        if slot.0 != epoch {
            *slot = (epoch, [0; 14]);
        }
        let b = RECENT_BOUNDS_MS.iter().position(|&u| ms <= u).unwrap_or(13);
        slot.1[b] += 1;
    }

    /// The 99th percentile (a bucket's upper bound) and the request count
    /// over the last 10 s.
    fn p99(&self, now_ms: i64) -> (Option<f64>, u64) {
        let epoch = now_ms / RECENT_SLOT_MS;
        let mut counts = [0u64; 14];
        for (e, c) in &self.slots {
            if epoch - e < RECENT_SLOTS as i64 {
                for (sum, n) in counts.iter_mut().zip(c) {
                    *sum += n;
                }
            }
        }
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return (None, 0);
        }
        let want = (total * 99).div_ceil(100);
        let mut seen = 0;
        for (i, n) in counts.iter().enumerate() {
            seen += n;
            if seen >= want {
                return (Some(RECENT_BOUNDS_MS[i]), total);
            }
        }
        (None, total)
    }
}

/// Counter values already exported (counters advance by deltas).
#[derive(Default)]
struct Seen {
    txns: u64,
    applied: u64,
    stale: u64,
    blacklisted: u64,
    dead: u64,
    batches: u64,
    retries: u64,
    shipped: u64,
    send_errors: u64,
    cache_hits: u64,
    cache_misses: u64,
    cache_warmed: u64,
}

fn delta(counter: &IntCounter, last: &mut u64, now: u64) {
    if now > *last {
        counter.inc_by(now - *last);
        *last = now;
    }
}

impl Metrics {
    pub fn new(node: &str, roles: Roles) -> Self {
        let registry = Registry::new_custom(
            Some("northwest".into()),
            Some([("node".to_string(), node.to_string())].into()),
        )
        .expect("valid registry");
        // Every metric is created; only those of the node's roles are
        // registered (and so exported).
        let reg = |on: bool, m: Box<dyn prometheus::core::Collector>| {
            if on {
                registry.register(m).expect("unique metric");
            }
        };
        let (src, tgt) = (roles.source, roles.target);
        let c = |on: bool, n: &str, h: &str| {
            let m = IntCounter::new(n, h).expect("valid metric");
            reg(on, Box::new(m.clone()));
            m
        };
        let g = |on: bool, n: &str, h: &str| {
            let m = IntGauge::new(n, h).expect("valid metric");
            reg(on, Box::new(m.clone()));
            m
        };
        let gv = |on: bool, n: &str, h: &str, l: &[&str]| {
            let m = IntGaugeVec::new(Opts::new(n, h), l).expect("valid metric");
            reg(on, Box::new(m.clone()));
            m
        };
        let fv = |on: bool, n: &str, h: &str, l: &[&str]| {
            let m = GaugeVec::new(Opts::new(n, h), l).expect("valid metric");
            reg(on, Box::new(m.clone()));
            m
        };
        let cv = |on: bool, n: &str, h: &str, l: &[&str]| {
            let m = IntCounterVec::new(Opts::new(n, h), l).expect("valid metric");
            reg(on, Box::new(m.clone()));
            m
        };
        let outbox_oldest_age = Gauge::new(
            "outbox_oldest_age_seconds",
            "Age of the oldest committed transaction Kafka has not acknowledged (0 when none)",
        )
        .expect("valid metric");
        reg(src, Box::new(outbox_oldest_age.clone()));
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Request latency by route template and status class",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["route", "class"],
        )
        .expect("valid metric");
        reg(true, Box::new(http_duration.clone()));
        Self {
            apply_txns: c(
                tgt,
                "apply_transactions_total",
                "Journal transactions applied (or skipped as stale) on this node",
            ),
            apply_writes: cv(
                tgt,
                "apply_writes_total",
                "Replicated writes by apply decision",
                &["result"],
            ),
            apply_dead_letter: c(
                tgt,
                "apply_dead_letter_total",
                "Undecodable journal records sent to the dead-letter topic",
            ),
            apply_batches: c(tgt, "apply_batches_total", "Atomic apply batches written"),
            apply_retries: c(
                tgt,
                "apply_retries_total",
                "Apply batches retried after a retriable error",
            ),
            apply_running: g(tgt, "apply_running", "1 while the journal apply loop runs"),
            halted: gv(
                tgt,
                "journal_partition_halted",
                "1 when a partition is halted on a bad record",
                &["partition"],
            ),
            lag_records: gv(
                tgt,
                "journal_lag_records",
                "High-water mark minus stored offset",
                &["partition"],
            ),
            stored_offset: gv(
                tgt,
                "journal_stored_offset",
                "Next offset to apply, stored with the data",
                &["partition"],
            ),
            high_watermark: gv(
                tgt,
                "journal_high_watermark",
                "Journal partition high-water mark",
                &["partition"],
            ),
            relay_shipped: c(
                src,
                "relay_shipped_total",
                "Journal records acknowledged by Kafka",
            ),
            relay_errors: c(
                src,
                "relay_errors_total",
                "Journal records whose delivery failed (re-sent)",
            ),
            outbox_pending: g(
                src,
                "outbox_pending",
                "Committed transactions not yet acknowledged by Kafka",
            ),
            http_requests: cv(
                true,
                "http_requests_total",
                "Application API requests by method and status",
                &["method", "status"],
            ),
            lag_seconds: fv(
                tgt,
                "journal_lag_seconds",
                "Age of the oldest unapplied journal record (NaN: records pending, age unknown)",
                &["partition"],
            ),
            outbox_oldest_age,
            http_duration,
            migration_phase: gv(
                true,
                "migration_phase",
                "1 for the phase each namespace's migration is in (as `migrate --stop-after` names it)",
                &["namespace", "phase"],
            ),
            migration_phase_age: fv(
                true,
                "migration_phase_age_seconds",
                "Time since the migration entered its current phase",
                &["namespace"],
            ),
            migration_snapshot_rows: gv(
                true,
                "migration_snapshot_rows",
                "Snapshot rows the migration streamed",
                &["namespace"],
            ),
            migration_pause: fv(
                true,
                "migration_cutover_pause_seconds",
                "How long the last cutover held the namespace's writes",
                &["namespace"],
            ),
            migration_failed: gv(
                true,
                "migration_failed",
                "1 while the migration's last run stopped on an error",
                &["namespace"],
            ),
            ns_fenced: gv(
                true,
                "namespace_fenced",
                "1 while the namespace's writes are fenced for a cutover",
                &["namespace"],
            ),
            ns_proxied: gv(
                true,
                "namespace_proxied",
                "1 while this node forwards the namespace to its new primary",
                &["namespace"],
            ),
            ns_promoted: gv(
                tgt,
                "namespace_promoted",
                "1 when this replica takes client writes for the namespace",
                &["namespace"],
            ),
            snapshot_loaded_rows: g(
                tgt,
                "snapshot_loaded_rows",
                "Rows the running snapshot load applied (0 when none runs)",
            ),
            lag_probe_ok: g(
                tgt,
                "journal_lag_probe_ok",
                "1 when the last lag probe read every partition's position from the broker; \
                 0 when it failed (the lag series then show the last values read)",
            ),
            delete_markers: g(
                true,
                "delete_markers",
                "Delete markers held, as counted by the last marker GC pass",
            ),
            delete_markers_removed: c(
                true,
                "delete_markers_removed_total",
                "Delete markers removed by marker GC",
            ),
            migration_records_unreadable: g(
                true,
                "migration_records_unreadable",
                "Migration records in ZooKeeper that do not parse (named in the node's log); \
                 marker GC stays blocked while there are any",
            ),
            marker_gc_blocked: g(
                true,
                "marker_gc_blocked",
                "1 when the last marker GC pass could not decide what is safe to remove \
                 (the reason is in status: marker_gc.blocked)",
            ),
            reverse_lag: g(
                src,
                "reverse_lag_records",
                "Records of the reverse journal (writes the new primary took after a cutover) \
                 not yet applied here; -1 when unknown or not applying it",
            ),
            read_cache_hits: c(
                true,
                "read_cache_hits_total",
                "Entity reads answered by the read cache",
            ),
            read_cache_misses: c(
                true,
                "read_cache_misses_total",
                "Entity reads that went to the engine",
            ),
            read_cache_warmed: c(
                true,
                "read_cache_warmed_total",
                "Keys read into the cache by a migration's warm-up (the source's hot keys)",
            ),
            read_cache_entries: g(true, "read_cache_entries", "Records in the read cache"),
            read_cache_bytes: g(
                true,
                "read_cache_bytes",
                "Weighted size of the read cache (keys, records and per-entry overhead)",
            ),
            gate_seen: Mutex::new(Default::default()),
            registry,
            last: Mutex::new(Seen::default()),
            recent: Mutex::new(RecentLatency::default()),
        }
    }

    /// `route`: the matched route template (never the raw path, whose keys
    /// would make one series per entity).
    pub fn http_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        // Extension methods are client-chosen strings: one series for all.
        let method = match method {
            "GET" | "PUT" | "POST" | "DELETE" | "HEAD" | "OPTIONS" | "PATCH" => method,
            _ => "other",
        };
        self.http_requests
            .with_label_values(&[method, &status.to_string()])
            .inc();
        let class = format!("{}xx", status / 100);
        self.http_duration
            .with_label_values(&[route, &class])
            .observe(seconds);
        if route.starts_with("/v1/ns/") && !route.ends_with("/digest") {
            let now = northwest_store::store::now_ms_pub();
            self.recent.lock().record(now, seconds * 1000.0);
        }
    }

    /// Data-API latency over the last 10 s: the 99th percentile's bucket
    /// bound in ms (`None` without requests) and the request count.
    pub fn recent_data_p99(&self) -> (Option<f64>, u64) {
        let now = northwest_store::store::now_ms_pub();
        self.recent.lock().p99(now)
    }

    /// Outbox age: seconds since the oldest unshipped commit (None: empty).
    /// `Err`: the outbox could not be read; the age is unknown (NaN).
    pub fn observe_outbox_age(&self, oldest_ts_ms: Result<Option<i64>, ()>, now_ms: i64) {
        let age = match oldest_ts_ms {
            Ok(t) => t.map_or(0.0, |t| (now_ms - t).max(0) as f64 / 1000.0),
            Err(()) => f64::NAN,
        };
        self.outbox_oldest_age.set(age);
    }

    /// The cutover state of this node's namespaces.
    /// `known`: every namespace the node has seen, exported as 0 when not
    /// in a list (a series that appears only while fenced cannot be graphed).
    pub fn observe_gate(
        &self,
        known: &[String],
        fenced: &[String],
        proxied: &[String],
        promoted: &[String],
    ) {
        let _seen = self.last.lock();
        let mut all = self.gate_seen.lock();
        all.extend(
            known
                .iter()
                .chain(fenced)
                .chain(proxied)
                .chain(promoted)
                .cloned(),
        );
        for (vec, names) in [
            (&self.ns_fenced, fenced),
            (&self.ns_proxied, proxied),
            (&self.ns_promoted, promoted),
        ] {
            for n in all.iter() {
                vec.with_label_values(&[n]).set(names.contains(n) as i64);
            }
        }
    }

    /// The migrations recorded in ZooKeeper.
    /// How many migration records did not parse at the last read.
    pub fn migration_records_unreadable(&self) -> i64 {
        self.migration_records_unreadable.get()
    }

    pub fn observe_migrations(
        &self,
        migrations: &[MigrationRecord],
        unreadable: usize,
        now_ms: i64,
    ) {
        let _seen = self.last.lock();
        self.migration_records_unreadable
            .set(i64::try_from(unreadable).unwrap_or(i64::MAX));
        // Every series is rebuilt: a record that went away takes its series.
        self.migration_phase.reset();
        self.migration_phase_age.reset();
        self.migration_snapshot_rows.reset();
        self.migration_pause.reset();
        self.migration_failed.reset();
        for m in migrations {
            let ns = m.ns.as_str();
            self.migration_phase
                .with_label_values(&[ns, m.phase.name()])
                .set(1);
            if let Some(t) = m.phase_started_ms {
                self.migration_phase_age
                    .with_label_values(&[ns])
                    .set((now_ms - t).max(0) as f64 / 1000.0);
            }
            self.migration_snapshot_rows
                .with_label_values(&[ns])
                .set(i64::try_from(m.snapshot_rows).unwrap_or(i64::MAX));
            if let Some(ms) = m.write_pause_ms {
                self.migration_pause
                    .with_label_values(&[ns])
                    .set(ms / 1000.0);
            }
            self.migration_failed
                .with_label_values(&[ns])
                .set(m.error.is_some() as i64);
        }
    }

    /// One marker GC pass: markers left and removed, or why it was blocked
    /// (markers then counted only).
    pub fn observe_marker_gc(&self, markers: u64, removed: u64, blocked: bool) {
        self.delete_markers.set(markers as i64);
        self.delete_markers_removed.inc_by(removed);
        self.marker_gc_blocked.set(blocked as i64);
    }

    pub fn observe_reverse_lag(&self, lag: Option<i64>) {
        self.reverse_lag.set(lag.unwrap_or(-1));
    }

    /// The read cache's counters now (None: the node has no cache).
    pub fn observe_cache(&self, c: Option<northwest_store::CacheStats>) {
        let c = c.unwrap_or_default();
        let mut s = self.last.lock();
        delta(&self.read_cache_hits, &mut s.cache_hits, c.hits);
        delta(&self.read_cache_misses, &mut s.cache_misses, c.misses);
        delta(&self.read_cache_warmed, &mut s.cache_warmed, c.warmed);
        self.read_cache_entries.set(c.entries as i64);
        self.read_cache_bytes.set(c.bytes as i64);
    }

    pub fn observe_loader(&self, rows: Option<u64>) {
        self.snapshot_loaded_rows.set(rows.unwrap_or(0) as i64);
    }

    pub fn observe_apply(&self, a: &ApplyShared) {
        let mut s = self.last.lock();
        delta(
            &self.apply_txns,
            &mut s.txns,
            a.txns.load(Ordering::Relaxed),
        );
        let w = |r: &str| self.apply_writes.with_label_values(&[r]);
        delta(
            &w("applied"),
            &mut s.applied,
            a.writes_applied.load(Ordering::Relaxed),
        );
        delta(
            &w("stale"),
            &mut s.stale,
            a.writes_stale.load(Ordering::Relaxed),
        );
        delta(
            &w("blacklisted"),
            &mut s.blacklisted,
            a.writes_blacklisted.load(Ordering::Relaxed),
        );
        delta(
            &self.apply_dead_letter,
            &mut s.dead,
            a.dead_lettered.load(Ordering::Relaxed),
        );
        delta(
            &self.apply_batches,
            &mut s.batches,
            a.batches.load(Ordering::Relaxed),
        );
        delta(
            &self.apply_retries,
            &mut s.retries,
            a.retries.load(Ordering::Relaxed),
        );
        self.apply_running
            .set(a.running.load(Ordering::Relaxed) as i64);
        for (p, st) in a.partitions.lock().iter() {
            self.halted
                .with_label_values(&[&p.to_string()])
                .set(st.halted.is_some() as i64);
        }
    }

    /// The lag probe failed: say so, and make the age unknown (NaN) rather
    /// than keep showing the last one read.
    pub fn observe_lag_failed(&self) {
        let _seen = self.last.lock();
        self.lag_probe_ok.set(0);
        use prometheus::core::Collector;
        let parts: Vec<String> = self
            .lag_seconds
            .collect()
            .iter()
            .flat_map(|f| f.get_metric().iter())
            .filter_map(|m| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == "partition")
                    .map(|l| l.value().to_string())
            })
            .collect();
        for p in parts {
            self.lag_seconds.with_label_values(&[&p]).set(f64::NAN);
        }
    }

    pub fn observe_lag(&self, lag: &[PartitionLag]) {
        self.lag_probe_ok.set(1);
        for l in lag {
            let p = l.partition.to_string();
            self.lag_records.with_label_values(&[&p]).set(l.lag_records);
            // NaN (unknown) rather than a false 0 while records are pending.
            self.lag_seconds
                .with_label_values(&[&p])
                .set(l.lag_seconds.unwrap_or(f64::NAN));
            self.stored_offset
                .with_label_values(&[&p])
                .set(l.stored.unwrap_or(l.low_watermark));
            self.high_watermark
                .with_label_values(&[&p])
                .set(l.high_watermark);
        }
    }

    pub fn observe_relay(&self, r: &RelayStats, pending: u64) {
        let mut s = self.last.lock();
        delta(
            &self.relay_shipped,
            &mut s.shipped,
            r.shipped.load(Ordering::Relaxed),
        );
        delta(
            &self.relay_errors,
            &mut s.send_errors,
            r.send_errors.load(Ordering::Relaxed),
        );
        self.outbox_pending.set(pending as i64);
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let families = {
            let _seen = self.last.lock();
            self.registry.gather()
        };
        let _ = TextEncoder::new().encode(&families, &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_series_come_from_the_records() {
        let record = |ns: &str, phase: &str, error: Option<&str>| {
            serde_json::from_value::<MigrationRecord>(serde_json::json!({
                "id": "m1", "ns": ns, "from": "http://a", "to": "http://b", "phase": phase,
                "journal_topic": "j", "snapshot_topic": "s", "checkpoint_dir": null,
                "hwms": {}, "kinds": [], "phase_seconds": {}, "snapshot_rows": 42,
                "snapshot_resumed_rows": 0, "runs": 1, "max_lag_records": 0, "verify": null,
                "verify_pause_ms": null, "write_pause_ms": 12.5, "error": error,
                "phase_started_ms": 1_000
            }))
            .unwrap()
        };
        let m = Metrics::new(
            "n2",
            Roles {
                source: false,
                target: true,
            },
        );
        let records = [
            record("app", "catch-up", None),
            record("old", "done", Some("boom")),
        ];
        m.observe_migrations(&records, 1, 3_000);
        let text = m.render();
        for line in [
            r#"northwest_migration_phase{namespace="app",phase="catch-up",node="n2"} 1"#,
            r#"northwest_migration_phase_age_seconds{namespace="app",node="n2"} 2"#,
            r#"northwest_migration_snapshot_rows{namespace="app",node="n2"} 42"#,
            r#"northwest_migration_cutover_pause_seconds{namespace="app",node="n2"} 0.0125"#,
            r#"northwest_migration_failed{namespace="app",node="n2"} 0"#,
            r#"northwest_migration_failed{namespace="old",node="n2"} 1"#,
            r#"northwest_migration_records_unreadable{node="n2"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        // A record that went away takes its series.
        m.observe_migrations(&records[..1], 0, 3_000);
        assert!(!m.render().contains(r#"namespace="old""#));
    }
}
