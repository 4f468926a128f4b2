//! The node's housekeeping tick, every [`INTERVAL`]: it samples the
//! pipeline for the dashboard (and refreshes the metrics from the same
//! sample), reports a source's outbox to ZooKeeper for the targets' marker
//! GC, reads the migration records, and exports the gate's and the loader's
//! state.

use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use crate::history::{PartSample, Sample, INTERVAL};
use crate::records::read_migrations;
use crate::state::NodeState;
use northwest_control::MigrationRecord;

/// Longest a step may take (the lag probe's own calls are bounded by 5 s
/// per partition).
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// Samples until `stop` resolves.
pub async fn sample_loop(st: Arc<NodeState>, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tick.tick() => {}
        }
        // Bounded, so one stuck call cannot freeze every series.
        match tokio::time::timeout(STEP_TIMEOUT, take_sample(&st)).await {
            Ok(sample) => st.history.push(sample),
            Err(_) => tracing::warn!("sampling the pipeline took over {STEP_TIMEOUT:?}; skipped"),
        }
        // A promoted target journals too: nodes applying its records wait
        // on its horizon for their marker GC.
        if st.relay.is_some() || st.reverse_relay.is_some() {
            let reported = tokio::time::timeout(STEP_TIMEOUT, crate::marker_gc::report_outbox(&st))
                .await
                .unwrap_or_else(|_| Err("ZooKeeper did not answer in time".into()));
            if let Err(e) = reported {
                tracing::warn!(error = %e, "reporting the outbox to ZooKeeper failed; targets' marker GC waits for it");
            }
        }
        let migrations = tokio::time::timeout(
            STEP_TIMEOUT,
            read_migrations::<MigrationRecord>(st.zk.as_deref(), &st.layout),
        )
        .await
        .unwrap_or_else(|_| Err("ZooKeeper did not answer in time".into()));
        match migrations {
            Ok(m) => {
                let before = st.metrics.migration_records_unreadable();
                if m.unreadable.len() as i64 != before {
                    for bad in &m.unreadable {
                        tracing::warn!(record = %bad, "a migration record does not parse: the dashboard and metrics leave it out and marker GC is blocked until it is fixed or removed");
                    }
                }
                st.metrics.observe_migrations(
                    &m.read,
                    m.unreadable.len(),
                    northwest_store::store::now_ms_pub(),
                );
                st.history.set_migrations(m.read);
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading migration states from ZooKeeper failed; the dashboard and metrics keep the last ones read")
            }
        }
        let proxied: Vec<String> = st.gate.proxies().into_keys().collect();
        st.metrics.observe_gate(
            &st.gate.namespaces(),
            &st.gate.fenced_namespaces().await,
            &proxied,
            &st.gate.promoted(),
        );
        let loaded = st
            .loader
            .lock()
            .as_ref()
            .filter(|l| l.shared.running.load(Relaxed))
            .map(|l| l.shared.txns.load(Relaxed));
        st.metrics.observe_loader(loaded);
    }
}

async fn take_sample(st: &NodeState) -> Sample {
    let now = northwest_store::store::now_ms_pub();
    let mut s = Sample {
        t_ms: now,
        outbox: None,
        outbox_age_seconds: None,
        shipped: None,
        applied: None,
        lag: Vec::new(),
        lag_error: None,
        client: st.metrics.take_client_window(now),
    };
    if let Some(r) = &st.relay {
        let outbox = st.store.outbox();
        let read = outbox.oldest_pending_ts_ms().map_err(|e| {
            tracing::warn!(error = %e, "reading the outbox's oldest entry failed; its age is unknown (check the node's disk)");
        });
        st.metrics.observe_outbox_age(read, now);
        let oldest = read.unwrap_or(None);
        st.metrics.observe_relay(r, outbox.len());
        s.outbox = Some(outbox.len());
        s.outbox_age_seconds = match read {
            Ok(_) => Some(oldest.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0)),
            Err(()) => None,
        };
        s.shipped = Some(r.shipped.load(Relaxed));
    }
    if let Some(a) = &st.apply {
        st.metrics.observe_apply(a);
        s.applied = Some(a.txns.load(Relaxed));
        match st.lag().await {
            Ok(l) => {
                st.metrics.observe_lag(&l);
                // Status shows why when the timelines cannot be read.
                crate::admin::refresh_timelines(st).await;
                if let Ok(epochs) = crate::admin::epoch_lag(st, &l) {
                    st.metrics.observe_epoch_lag(&epochs);
                }
                let parts = a.partitions.lock();
                s.lag = l
                    .iter()
                    .map(|p| PartSample {
                        partition: p.partition,
                        lag_records: p.lag_records,
                        lag_seconds: p.lag_seconds,
                        halted: parts.get(&p.partition).is_some_and(|x| x.halted.is_some()),
                    })
                    .collect();
            }
            Err(e) => {
                st.metrics.observe_lag_failed();
                s.lag_error = Some(e);
            }
        }
    }
    s
}
