//! The node's Prometheus series, by what they watch, with their names and
//! help texts: created here, updated by the parent module.

use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
};

use super::Roles;

/// The apply loop and journal positions (a target's).
pub(super) struct ApplySeries {
    pub(super) apply_txns: IntCounter,
    pub(super) apply_writes: IntCounterVec,
    pub(super) apply_dead_letter: IntCounter,
    pub(super) apply_batches: IntCounter,
    pub(super) apply_retries: IntCounter,
    pub(super) apply_running: IntGauge,
    pub(super) halted: IntGaugeVec,
    pub(super) lag_records: IntGaugeVec,
    pub(super) lag_seconds: GaugeVec,
    pub(super) epoch_lag_records: IntGaugeVec,
    pub(super) stored_offset: IntGaugeVec,
    pub(super) high_watermark: IntGaugeVec,
    pub(super) snapshot_loaded_rows: IntGauge,
    pub(super) lag_probe_ok: IntGauge,
}

/// The relay, the outbox and the reverse journal (a source's).
pub(super) struct SourceSeries {
    pub(super) relay_shipped: IntCounter,
    pub(super) relay_errors: IntCounter,
    pub(super) outbox_pending: IntGauge,
    pub(super) outbox_oldest_age: Gauge,
    pub(super) reverse_lag: IntGauge,
}

/// The data API's requests.
pub(super) struct HttpSeries {
    pub(super) http_requests: IntCounterVec,
    pub(super) http_duration: HistogramVec,
}

/// Migrations and the namespaces' cutover state.
pub(super) struct MigrationSeries {
    pub(super) migration_phase: IntGaugeVec,
    pub(super) migration_phase_age: GaugeVec,
    pub(super) migration_snapshot_rows: IntGaugeVec,
    pub(super) snap: SnapshotSeries,
    pub(super) migration_pause: GaugeVec,
    pub(super) migration_failed: IntGaugeVec,
    pub(super) ns_fenced: IntGaugeVec,
    pub(super) ns_proxied: IntGaugeVec,
    pub(super) ns_promoted: IntGaugeVec,
    pub(super) migration_records_unreadable: IntGauge,
}

/// Delete markers and the read cache.
pub(super) struct StoreSeries {
    pub(super) delete_markers: IntGauge,
    pub(super) delete_markers_removed: IntCounter,
    pub(super) marker_gc_blocked: IntGauge,
    pub(super) snapshot_topics_deleted: IntCounter,
    pub(super) snapshot_gc_failing: IntGauge,
    pub(super) read_cache_hits: IntCounter,
    pub(super) read_cache_misses: IntCounter,
    pub(super) read_cache_warmed: IntCounter,
    pub(super) read_cache_entries: IntGauge,
    pub(super) read_cache_bytes: IntGauge,
    pub(super) engine_memory_bytes: IntGaugeVec,
    pub(super) zk_lease_bytes: IntGauge,
    pub(super) zk_lease_bytes_max: IntGauge,
}

/// Creates the node's series: every one is created, only those of its
/// roles are registered (and so exported).
pub(super) struct Series<'a> {
    pub(super) registry: &'a Registry,
    pub(super) roles: Roles,
}

impl Series<'_> {
    fn register<M: prometheus::core::Collector + Clone + 'static>(&self, on: bool, m: M) -> M {
        if on {
            self.registry
                .register(Box::new(m.clone()))
                .expect("unique metric");
        }
        m
    }

    fn c(&self, on: bool, n: &str, h: &str) -> IntCounter {
        self.register(on, IntCounter::new(n, h).expect("valid metric"))
    }

    fn g(&self, on: bool, n: &str, h: &str) -> IntGauge {
        self.register(on, IntGauge::new(n, h).expect("valid metric"))
    }

    fn gv(&self, on: bool, n: &str, h: &str, l: &[&str]) -> IntGaugeVec {
        self.register(
            on,
            IntGaugeVec::new(Opts::new(n, h), l).expect("valid metric"),
        )
    }

    fn fv(&self, on: bool, n: &str, h: &str, l: &[&str]) -> GaugeVec {
        self.register(on, GaugeVec::new(Opts::new(n, h), l).expect("valid metric"))
    }

    fn cv(&self, on: bool, n: &str, h: &str, l: &[&str]) -> IntCounterVec {
        self.register(
            on,
            IntCounterVec::new(Opts::new(n, h), l).expect("valid metric"),
        )
    }
}

impl ApplySeries {
    pub(super) fn new(b: &Series) -> Self {
        let tgt = b.roles.target;
        Self {
            apply_txns: b.c(
                tgt,
                "apply_transactions_total",
                "Journal transactions applied (or skipped as stale) on this node",
            ),
            apply_writes: b.cv(
                tgt,
                "apply_writes_total",
                "Replicated writes by apply decision",
                &["result"],
            ),
            apply_dead_letter: b.c(
                tgt,
                "apply_dead_letter_total",
                "Undecodable journal records sent to the dead-letter topic",
            ),
            apply_batches: b.c(tgt, "apply_batches_total", "Atomic apply batches written"),
            apply_retries: b.c(
                tgt,
                "apply_retries_total",
                "Apply batches retried after a retriable error",
            ),
            apply_running: b.g(tgt, "apply_running", "1 while the journal apply loop runs"),
            halted: b.gv(
                tgt,
                "journal_partition_halted",
                "1 when a partition is halted on a bad record",
                &["partition"],
            ),
            lag_records: b.gv(
                tgt,
                "journal_lag_records",
                "High-water mark minus stored offset",
                &["partition"],
            ),
            epoch_lag_records: b.gv(
                tgt,
                "epoch_lag_records",
                "Records of one epoch of a namespace's timeline not yet read here (the current \
             epoch ends at the high-water marks)",
                &["namespace", "epoch"],
            ),
            lag_seconds: b.fv(
                tgt,
                "journal_lag_seconds",
                "Age of the oldest unapplied journal record (NaN: records pending, age unknown)",
                &["partition"],
            ),
            stored_offset: b.gv(
                tgt,
                "journal_stored_offset",
                "Next offset to apply, stored with the data",
                &["partition"],
            ),
            high_watermark: b.gv(
                tgt,
                "journal_high_watermark",
                "Journal partition high-water mark",
                &["partition"],
            ),
            snapshot_loaded_rows: b.g(
                tgt,
                "snapshot_loaded_rows",
                "Rows the running snapshot load applied (0 when none runs)",
            ),
            lag_probe_ok: b.g(
                tgt,
                "journal_lag_probe_ok",
                "1 when the last lag probe read every partition's position from the broker; \
             0 when it failed (the lag series then show the last values read)",
            ),
        }
    }
}

impl SourceSeries {
    pub(super) fn new(b: &Series) -> Self {
        let src = b.roles.source;
        let outbox_oldest_age = b.register(
            src,
            Gauge::new(
                "outbox_oldest_age_seconds",
                "Age of the oldest committed transaction Kafka has not acknowledged (0 when none)",
            )
            .expect("valid metric"),
        );
        Self {
            relay_shipped: b.c(
                src,
                "relay_shipped_total",
                "Journal records acknowledged by Kafka",
            ),
            relay_errors: b.c(
                src,
                "relay_errors_total",
                "Journal records whose delivery failed (re-sent)",
            ),
            outbox_pending: b.g(
                src,
                "outbox_pending",
                "Committed transactions not yet acknowledged by Kafka",
            ),
            outbox_oldest_age,
            reverse_lag: b.g(
                src,
                "reverse_lag_records",
                "Records of the reverse journal (writes the new primary took after a cutover) \
             not yet applied here; -1 when unknown or not applying it",
            ),
        }
    }
}

impl HttpSeries {
    pub(super) fn new(b: &Series) -> Self {
        let http_duration = b.register(
            true,
            HistogramVec::new(
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
            .expect("valid metric"),
        );
        Self {
            http_requests: b.cv(
                true,
                "http_requests_total",
                "Application API requests by method and status",
                &["method", "status"],
            ),
            http_duration,
        }
    }
}

impl MigrationSeries {
    pub(super) fn new(b: &Series) -> Self {
        let tgt = b.roles.target;
        Self {
        migration_phase: b.gv(
            true,
            "migration_phase",
            "1 for the phase each namespace's migration is in (as `migrate --stop-after` names it)",
            &["namespace", "phase"],
        ),
        migration_phase_age: b.fv(
            true,
            "migration_phase_age_seconds",
            "Time since the migration entered its current phase",
            &["namespace"],
        ),
        migration_snapshot_rows: b.gv(
            true,
            "migration_snapshot_rows",
            "Snapshot rows the migration streamed (so far, while it streams)",
            &["namespace"],
        ),
        snap: SnapshotSeries::new(b),
        migration_pause: b.fv(
            true,
            "migration_cutover_pause_seconds",
            "How long the last cutover held the namespace's writes",
            &["namespace"],
        ),
        migration_failed: b.gv(
            true,
            "migration_failed",
            "1 while the migration's last run stopped on an error",
            &["namespace"],
        ),
        ns_fenced: b.gv(
            true,
            "namespace_fenced",
            "1 while the namespace's writes are fenced for a cutover",
            &["namespace"],
        ),
        ns_proxied: b.gv(
            true,
            "namespace_proxied",
            "1 while this node forwards the namespace to its new primary",
            &["namespace"],
        ),
        ns_promoted: b.gv(
            tgt,
            "namespace_promoted",
            "1 when this replica takes client writes for the namespace",
            &["namespace"],
        ),
        migration_records_unreadable: b.g(
            true,
            "migration_records_unreadable",
            "Migration records in ZooKeeper that do not parse (named in the node's log); \
             marker GC stays blocked while there are any",
        ),
        }
    }
}

impl StoreSeries {
    pub(super) fn new(b: &Series) -> Self {
        Self {
            delete_markers: b.g(
                true,
                "delete_markers",
                "Delete markers held, as counted by the last marker GC pass",
            ),
            delete_markers_removed: b.c(
                true,
                "delete_markers_removed_total",
                "Delete markers removed by marker GC",
            ),
            marker_gc_blocked: b.g(
                true,
                "marker_gc_blocked",
                "1 when the last marker GC pass could not decide what is safe to remove \
             (the reason is in status: marker_gc.blocked)",
            ),
            snapshot_topics_deleted: b.c(
                true,
                "snapshot_topics_deleted_total",
                "Snapshot topics snapshot topic GC deleted",
            ),
            snapshot_gc_failing: b.g(
                true,
                "snapshot_gc_failing",
                "1 while the last snapshot topic GC pass failed (the reason is in status: \
             snapshot_gc.last_error); old snapshot topics stay meanwhile",
            ),
            read_cache_hits: b.c(
                true,
                "read_cache_hits_total",
                "Entity reads answered by the read cache",
            ),
            read_cache_misses: b.c(
                true,
                "read_cache_misses_total",
                "Entity reads that went to the engine",
            ),
            read_cache_warmed: b.c(
                true,
                "read_cache_warmed_total",
                "Keys read into the cache by a migration's warm-up (the source's hot keys)",
            ),
            read_cache_entries: b.g(true, "read_cache_entries", "Records in the read cache"),
            read_cache_bytes: b.g(
                true,
                "read_cache_bytes",
                "Weighted size of the read cache (keys, records and per-entry overhead)",
            ),
            engine_memory_bytes: b.gv(
                true,
                "engine_memory_bytes",
                "The embedded engine's memory by kind (RocksDB: memtables, block_cache (memtable \
             reservations included), block_cache_pinned, table_readers); 0 for a database server",
                &["kind"],
            ),
            zk_lease_bytes: b.g(
                true,
                "zk_lease_bytes",
                "Bytes of lease paths this process's ZooKeeper session holds or has reserved \
                 (the record ZooKeeper logs when the session ends)",
            ),
            zk_lease_bytes_max: b.g(
                true,
                "zk_lease_bytes_max",
                "The most zk_lease_bytes may reach; transactions wait for room at it",
            ),
        }
    }
}

/// A migration's snapshot progress, as the orchestrator saves it in the
/// record.
pub(super) struct SnapshotSeries {
    pub(super) rows_total: IntGaugeVec,
    pub(super) rows_loaded: IntGaugeVec,
    pub(super) bytes: IntGaugeVec,
    pub(super) rate: GaugeVec,
    pub(super) eta: GaugeVec,
    pub(super) stalled: GaugeVec,
}

impl SnapshotSeries {
    fn new(b: &Series) -> Self {
        Self {
        rows_total: b.gv(
                true,
                "migration_snapshot_rows_total",
                "Rows the snapshot plan counted in the source's view (an estimate on PostgreSQL)",
                &["namespace"],
            ),
            rows_loaded: b.gv(
                true,
                "migration_snapshot_rows_loaded",
                "Snapshot rows the target loaded, as the orchestrator last read them",
                &["namespace"],
            ),
            bytes: b.gv(
                true,
                "migration_snapshot_bytes",
                "Keys and values the snapshot streamed, bytes",
                &["namespace"],
            ),
            rate: b.fv(
                true,
                "migration_snapshot_rows_per_second",
                "Rows streamed (then loaded) per second over the orchestrator's last interval",
                &["namespace"],
            ),
            eta: b.fv(
                true,
                "migration_snapshot_eta_seconds",
                "At that rate, seconds until the snapshot is streamed (then loaded)",
                &["namespace"],
            ),
            stalled: b.fv(
                true,
                "migration_progress_stalled_seconds",
                "In the snapshot and catch-up phases: time since rows streamed or loaded, or the catch-up's lag, last moved",
                &["namespace"],
            ),
        }
    }
}
