//! Typed telemetry: every Prometheus metric the node exports, with stable
//! names and labels, refreshed from the pipeline's counters at scrape time.

use std::sync::atomic::Ordering;

use northwest_consumer::{ApplyShared, PartitionLag};
use northwest_producer::RelayStats;
use parking_lot::Mutex;
use prometheus::{
    Encoder, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

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
    http_requests: IntCounterVec,
    last: Mutex<Seen>,
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
}

fn delta(counter: &IntCounter, last: &mut u64, now: u64) {
    if now > *last {
        counter.inc_by(now - *last);
        *last = now;
    }
}

impl Metrics {
    pub fn new(node: &str) -> Self {
        let registry = Registry::new_custom(
            Some("northwest".into()),
            Some([("node".to_string(), node.to_string())].into()),
        )
        .expect("valid registry");
        let c = |n: &str, h: &str| {
            let m = IntCounter::new(n, h).expect("valid metric");
            registry
                .register(Box::new(m.clone()))
                .expect("unique metric");
            m
        };
        let g = |n: &str, h: &str| {
            let m = IntGauge::new(n, h).expect("valid metric");
            registry
                .register(Box::new(m.clone()))
                .expect("unique metric");
            m
        };
        let gv = |n: &str, h: &str, l: &[&str]| {
            let m = IntGaugeVec::new(Opts::new(n, h), l).expect("valid metric");
            registry
                .register(Box::new(m.clone()))
                .expect("unique metric");
            m
        };
        let cv = |n: &str, h: &str, l: &[&str]| {
            let m = IntCounterVec::new(Opts::new(n, h), l).expect("valid metric");
            registry
                .register(Box::new(m.clone()))
                .expect("unique metric");
            m
        };
        let lag_seconds = GaugeVec::new(
            Opts::new(
                "journal_lag_seconds",
                "Age of the oldest unapplied journal record",
            ),
            &["partition"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(lag_seconds.clone()))
            .expect("unique metric");
        Self {
            apply_txns: c(
                "apply_transactions_total",
                "Journal transactions applied (or skipped as stale) on this node",
            ),
            apply_writes: cv(
                "apply_writes_total",
                "Replicated writes by apply decision",
                &["result"],
            ),
            apply_dead_letter: c(
                "apply_dead_letter_total",
                "Undecodable journal records sent to the dead-letter topic",
            ),
            apply_batches: c("apply_batches_total", "Atomic apply batches written"),
            apply_retries: c(
                "apply_retries_total",
                "Apply batches retried after a retriable error",
            ),
            apply_running: g("apply_running", "1 while the journal apply loop runs"),
            halted: gv(
                "journal_partition_halted",
                "1 when a partition is halted on a bad record",
                &["partition"],
            ),
            lag_records: gv(
                "journal_lag_records",
                "High-water mark minus stored offset",
                &["partition"],
            ),
            stored_offset: gv(
                "journal_stored_offset",
                "Next offset to apply, stored with the data",
                &["partition"],
            ),
            high_watermark: gv(
                "journal_high_watermark",
                "Journal partition high-water mark",
                &["partition"],
            ),
            relay_shipped: c(
                "relay_shipped_total",
                "Journal records acknowledged by Kafka",
            ),
            relay_errors: c(
                "relay_errors_total",
                "Journal records whose delivery failed (re-sent)",
            ),
            outbox_pending: g(
                "outbox_pending",
                "Committed transactions not yet acknowledged by Kafka",
            ),
            http_requests: cv(
                "http_requests_total",
                "Application API requests by method and status",
                &["method", "status"],
            ),
            lag_seconds,
            registry,
            last: Mutex::new(Seen::default()),
        }
    }

    pub fn http_request(&self, method: &str, status: u16) {
        self.http_requests
            .with_label_values(&[method, &status.to_string()])
            .inc();
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

    pub fn observe_lag(&self, lag: &[PartitionLag]) {
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
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
