//! What the dashboard draws: every [`INTERVAL`] the node samples its own
//! pipeline (journal lag per partition, apply and ship counters, outbox depth
//! and age) and the migrations recorded in ZooKeeper, refreshes the metrics
//! from the same sample, and keeps the last [`KEEP`] samples, so a page
//! opened now shows whether lag is shrinking or growing.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;

use crate::admin::NodeState;

pub const INTERVAL: Duration = Duration::from_secs(2);
/// Longest a sampling step may take (the lag probe's own calls are bounded
/// by 5 s per partition).
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// Ten minutes of samples.
pub const KEEP: usize = 300;

#[derive(Debug, Clone, Serialize)]
pub struct PartSample {
    pub partition: i32,
    pub lag_records: i64,
    /// `None`: records pending but their age unknown.
    pub lag_seconds: Option<f64>,
    pub halted: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub t_ms: i64,
    /// Source: unshipped commits, the oldest one's age, records shipped.
    pub outbox: Option<u64>,
    pub outbox_age_seconds: Option<f64>,
    pub shipped: Option<u64>,
    /// Target: transactions applied so far and the lag per partition
    /// (empty with `lag_error` set when the broker could not be asked).
    pub applied: Option<u64>,
    pub lag: Vec<PartSample>,
    pub lag_error: Option<String>,
}

#[derive(Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
    migrations: Mutex<Vec<Value>>,
}

impl History {
    pub fn push(&self, s: Sample) {
        let mut q = self.samples.lock();
        if q.len() == KEEP {
            q.pop_front();
        }
        q.push_back(s);
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().iter().cloned().collect()
    }

    /// The migrations' persisted states as last read from ZooKeeper.
    pub fn migrations(&self) -> Vec<Value> {
        self.migrations.lock().clone()
    }
}

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
        if st.relay.is_some() {
            let reported = tokio::time::timeout(STEP_TIMEOUT, crate::marker_gc::report_outbox(&st))
                .await
                .unwrap_or_else(|_| Err("ZooKeeper did not answer in time".into()));
            if let Err(e) = reported {
                tracing::warn!(error = %e, "reporting the outbox to ZooKeeper failed; targets' marker GC waits for it");
            }
        }
        let migrations = tokio::time::timeout(STEP_TIMEOUT, read_migrations(&st, false))
            .await
            .unwrap_or_else(|_| Err("ZooKeeper did not answer in time".into()));
        match migrations {
            Ok(m) => {
                st.metrics
                    .observe_migrations(&m, northwest_store::store::now_ms_pub());
                *st.history.migrations.lock() = m;
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

/// Every migration recorded under the deployment's ZooKeeper root.
/// `strict`: a record that is not JSON is an error (marker GC must not
/// overlook a migration), not skipped.
pub(crate) async fn read_migrations(st: &NodeState, strict: bool) -> Result<Vec<Value>, String> {
    let Some(zk) = &st.zk else {
        return Ok(Vec::new());
    };
    let client = zk.client();
    let dir = format!("{}/migrations", st.zk_root);
    let names = match client.list_children(&dir).await {
        Ok(n) => n,
        Err(zookeeper_client::Error::NoNode) => return Ok(Vec::new()),
        Err(e) => return Err(e.to_string()),
    };
    let mut out = Vec::new();
    for n in names {
        match client.get_data(&format!("{dir}/{n}")).await {
            Ok((d, _)) => match serde_json::from_slice::<Value>(&d) {
                Ok(v) => out.push(v),
                Err(e) if strict => return Err(format!("{dir}/{n}: not a migration record: {e}")),
                Err(_) => {}
            },
            Err(zookeeper_client::Error::NoNode) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(out)
}
