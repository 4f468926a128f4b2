//! Typed telemetry: every Prometheus metric the node exports, with stable
//! names and labels, refreshed from the pipeline's counters at scrape time.

use std::sync::atomic::Ordering;

use northwest_consumer::{ApplyShared, PartitionLag};
use northwest_producer::RelayStats;
use parking_lot::Mutex;
use prometheus::{Encoder, IntCounter, Registry, TextEncoder};

use series::{ApplySeries, HttpSeries, MigrationSeries, Series, SourceSeries, StoreSeries};

mod clients;
mod migrations;
mod series;
mod store;

pub use clients::ClientSample;

/// What the node does, which decides the series it exports: a source has no
/// apply series and a target no relay series (rather than ones stuck at 0).
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    pub source: bool,
    pub target: bool,
}

pub struct Metrics {
    registry: Registry,
    apply: ApplySeries,
    source: SourceSeries,
    http: HttpSeries,
    migration: MigrationSeries,
    store: StoreSeries,
    last: Mutex<Seen>,
    /// Data-API latency over the last seconds (what a migration throttles on).
    /// The data API's latency: over the last seconds (what a migration
    /// throttles on) and since the last history sample (the dashboard's
    /// client panels); one lock per request for both.
    data: Mutex<(RecentLatency, clients::ClientWindow)>,
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
        let b = Series {
            registry: &registry,
            roles,
        };
        let (apply, source, http, migration, store) = (
            ApplySeries::new(&b),
            SourceSeries::new(&b),
            HttpSeries::new(&b),
            MigrationSeries::new(&b),
            StoreSeries::new(&b),
        );
        Self {
            registry,
            apply,
            source,
            http,
            migration,
            store,
            last: Mutex::new(Seen::default()),
            data: Mutex::new((
                RecentLatency::default(),
                clients::ClientWindow::new(northwest_store::store::now_ms_pub()),
            )),
            gate_seen: Mutex::new(Default::default()),
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
        self.http
            .http_requests
            .with_label_values(&[method, &status.to_string()])
            .inc();
        let class = format!("{}xx", status / 100);
        self.http
            .http_duration
            .with_label_values(&[route, &class])
            .observe(seconds);
        if route.starts_with("/v1/ns/") && !route.ends_with("/digest") {
            let now = northwest_store::store::now_ms_pub();
            let mut data = self.data.lock();
            data.0.record(now, seconds * 1000.0);
            data.1.record(seconds * 1000.0, status);
        }
    }

    /// The data API's requests since the last call (the history samples
    /// them: the dashboard's client panels).
    pub fn take_client_window(&self, now_ms: i64) -> ClientSample {
        self.data.lock().1.take(now_ms)
    }

    /// Data-API latency over the last 10 s: the 99th percentile's bucket
    /// bound in ms (`None` without requests) and the request count.
    pub fn recent_data_p99(&self) -> (Option<f64>, u64) {
        let now = northwest_store::store::now_ms_pub();
        self.data.lock().0.p99(now)
    }

    /// Outbox age: seconds since the oldest unshipped commit (None: empty).
    /// `Err`: the outbox could not be read; the age is unknown (NaN).
    pub fn observe_outbox_age(&self, oldest_ts_ms: Result<Option<i64>, ()>, now_ms: i64) {
        let age = match oldest_ts_ms {
            Ok(t) => t.map_or(0.0, |t| (now_ms - t).max(0) as f64 / 1000.0),
            Err(()) => f64::NAN,
        };
        self.source.outbox_oldest_age.set(age);
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
            (&self.migration.ns_fenced, fenced),
            (&self.migration.ns_proxied, proxied),
            (&self.migration.ns_promoted, promoted),
        ] {
            for n in all.iter() {
                vec.with_label_values(&[n]).set(names.contains(n) as i64);
            }
        }
    }

    /// One marker GC pass: markers left and removed, or why it was blocked
    /// (markers then counted only).
    pub fn observe_marker_gc(&self, markers: u64, removed: u64, blocked: bool) {
        self.store.delete_markers.set(markers as i64);
        self.store.delete_markers_removed.inc_by(removed);
        self.store.marker_gc_blocked.set(blocked as i64);
    }

    /// A snapshot topic GC pass: topics it deleted, whether it failed.
    pub fn observe_snapshot_gc(&self, deleted: u64, failed: bool) {
        self.store.snapshot_topics_deleted.inc_by(deleted);
        self.store.snapshot_gc_failing.set(failed as i64);
    }

    pub fn observe_reverse_lag(&self, lag: Option<i64>) {
        self.source.reverse_lag.set(lag.unwrap_or(-1));
    }

    pub fn observe_loader(&self, rows: Option<u64>) {
        self.apply
            .snapshot_loaded_rows
            .set(rows.unwrap_or(0) as i64);
    }

    pub fn observe_apply(&self, a: &ApplyShared) {
        let mut s = self.last.lock();
        delta(
            &self.apply.apply_txns,
            &mut s.txns,
            a.txns.load(Ordering::Relaxed),
        );
        let w = |r: &str| self.apply.apply_writes.with_label_values(&[r]);
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
            &self.apply.apply_dead_letter,
            &mut s.dead,
            a.dead_lettered.load(Ordering::Relaxed),
        );
        delta(
            &self.apply.apply_batches,
            &mut s.batches,
            a.batches.load(Ordering::Relaxed),
        );
        delta(
            &self.apply.apply_retries,
            &mut s.retries,
            a.retries.load(Ordering::Relaxed),
        );
        self.apply
            .apply_running
            .set(a.running.load(Ordering::Relaxed) as i64);
        for (p, st) in a.partitions.lock().iter() {
            self.apply
                .halted
                .with_label_values(&[&p.to_string()])
                .set(st.halted.is_some() as i64);
        }
    }

    /// The lag probe failed: say so, and make the age unknown (NaN) rather
    /// than keep showing the last one read.
    pub fn observe_lag_failed(&self) {
        let _seen = self.last.lock();
        self.apply.lag_probe_ok.set(0);
        use prometheus::core::Collector;
        let parts: Vec<String> = self
            .apply
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
            self.apply
                .lag_seconds
                .with_label_values(&[&p])
                .set(f64::NAN);
        }
    }

    pub fn observe_epoch_lag(&self, epochs: &[northwest_control::api::EpochLag]) {
        for e in epochs {
            self.apply
                .epoch_lag_records
                .with_label_values(&[&e.namespace, &e.epoch.to_string()])
                .set(e.lag_records);
        }
    }

    pub fn observe_lag(&self, lag: &[PartitionLag]) {
        self.apply.lag_probe_ok.set(1);
        for l in lag {
            let p = l.partition.to_string();
            self.apply
                .lag_records
                .with_label_values(&[&p])
                .set(l.lag_records);
            // NaN (unknown) rather than a false 0 while records are pending.
            self.apply
                .lag_seconds
                .with_label_values(&[&p])
                .set(l.lag_seconds.unwrap_or(f64::NAN));
            self.apply
                .stored_offset
                .with_label_values(&[&p])
                .set(l.stored.unwrap_or(l.low_watermark));
            self.apply
                .high_watermark
                .with_label_values(&[&p])
                .set(l.high_watermark);
        }
    }

    pub fn observe_relay(&self, r: &RelayStats, pending: u64) {
        let mut s = self.last.lock();
        delta(
            &self.source.relay_shipped,
            &mut s.shipped,
            r.shipped.load(Ordering::Relaxed),
        );
        delta(
            &self.source.relay_errors,
            &mut s.send_errors,
            r.send_errors.load(Ordering::Relaxed),
        );
        self.source.outbox_pending.set(pending as i64);
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
    use northwest_control::MigrationRecord;

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
        // A snapshot's progress: its counts, and how long nothing moved
        // (only while rows should move: not once done).
        let mut snap = record("big", "snapshot", None);
        let mut p = northwest_control::record::SnapshotProgress {
            rows_total: 1000,
            ..Default::default()
        };
        p.streamed(100, 4096, 10_000);
        p.streamed(300, 8192, 12_000);
        snap.snapshot_progress = Some(p);
        m.observe_migrations(std::slice::from_ref(&snap), 0, 72_000);
        let text = m.render();
        for line in [
            r#"northwest_migration_snapshot_rows{namespace="big",node="n2"} 300"#,
            r#"northwest_migration_snapshot_rows_total{namespace="big",node="n2"} 1000"#,
            r#"northwest_migration_snapshot_bytes{namespace="big",node="n2"} 8192"#,
            r#"northwest_migration_snapshot_rows_per_second{namespace="big",node="n2"} 100"#,
            r#"northwest_migration_snapshot_eta_seconds{namespace="big",node="n2"} 7"#,
            r#"northwest_migration_progress_stalled_seconds{namespace="big",node="n2"} 60"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        snap.phase = northwest_control::Phase::Done;
        m.observe_migrations(std::slice::from_ref(&snap), 0, 72_000);
        assert!(!m.render().contains("progress_stalled_seconds{"));
    }
}
