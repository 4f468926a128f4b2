//! Delete-marker GC: every `store.marker_gc_interval_s`, count the markers
//! and remove those no journal record or snapshot row can still undercut.
//!
//! A marker keeps an older put (a replayed journal record, a stale snapshot
//! row) from resurrecting its entity. Retention alone does not say when the
//! older records are gone: Kafka deletes whole segments, so a record can
//! outlive `retention.ms` by a segment's lifetime, and a relay backlog
//! ships old commits late. So a target node reasons in offsets, by epochs:
//!
//! - At a quiet moment (no snapshot load running, no migration in progress
//!   in the deployment, every partition's position known) the node records
//!   an epoch: its time and each journal partition's high-water mark.
//! - The epoch has *expired* once every partition's log start offset has
//!   passed its mark and the node has applied past it: every record that
//!   existed when the epoch was taken has left the broker.
//! - Then a marker this node wrote before the epoch (its own clock, stored
//!   in the marker) and committed more than `marker_retention_hours` ago is
//!   removed: its record, and every older record of its key (same entity
//!   group, same partition, shipped in commit order), sat below the marks.
//!   A snapshot marker was loaded by a migration that had finished (or been
//!   aborted) by the epoch, so n1 had shipped the records it could undercut.
//!   A new epoch is then recorded.
//!
//! A source node (nothing is applied to it) removes markers by age alone.
//! The epoch lives in the store's metadata, so a restart keeps its progress.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use northwest_store::engine::WriteBatch;
use northwest_store::{Cf, MarkerGcRule};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::admin::NodeState;

const EPOCH_KEY: &[u8] = b"markergc/epoch";

/// A moment and the journal's high-water marks then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Epoch {
    taken_ms: i64,
    marks: BTreeMap<i32, i64>,
}

/// Runs a pass every `interval` until `stop`.
pub async fn gc_loop(
    st: Arc<NodeState>,
    interval: Duration,
    retention_ms: u64,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep(interval) => {}
        }
        let report = pass(&st, retention_ms).await;
        *st.marker_gc.lock() = report;
    }
}

/// One pass; returns what status shows as `marker_gc`.
async fn pass(st: &NodeState, retention_ms: u64) -> Value {
    let now = northwest_store::store::now_ms_pub();
    let committed_before_ms = now - retention_ms as i64;
    let (rule, epoch, blocked) = if st.apply.is_none() {
        let rule = MarkerGcRule {
            committed_before_ms,
            written_before_ms: None,
            remove: true,
        };
        (rule, None, None)
    } else {
        match target_rule(st, now, committed_before_ms).await {
            Ok((rule, epoch)) => (rule, epoch, None),
            Err(why) => {
                let count_only = MarkerGcRule {
                    committed_before_ms,
                    written_before_ms: None,
                    remove: false,
                };
                (count_only, None, Some(why))
            }
        }
    };
    let stats = match st.store.gc_delete_markers(rule).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "marker GC pass failed; retrying next interval");
            st.metrics.observe_marker_gc(0, 0, true);
            return json!({"at_ms": now, "blocked": format!("store: {e}")});
        }
    };
    // The epoch moves on only after the removal it allowed is done: a
    // crash in between repeats the pass with the old, still valid epoch.
    if let Some(next) = &epoch {
        if let Err(e) = save_epoch(st, next) {
            tracing::warn!(error = %e, "marker GC could not record its epoch; retrying next interval");
        }
    }
    if let Some(why) = &blocked {
        tracing::debug!(reason = %why, "marker GC counted only");
    }
    if stats.removed > 0 {
        tracing::info!(
            removed = stats.removed,
            left = stats.markers,
            "marker GC removed delete markers"
        );
    }
    st.metrics
        .observe_marker_gc(stats.markers, stats.removed, blocked.is_some());
    let held = load_epoch(st).ok().flatten();
    json!({
        "at_ms": now,
        "markers": stats.markers,
        "removed": stats.removed,
        "blocked": blocked,
        "epoch_taken_ms": held.as_ref().map(|e| e.taken_ms),
        "epoch_marks": held.map(|e| e.marks),
    })
}

/// On a target: the removal rule if the held epoch has expired (and the
/// epoch to record next), a count-only rule while it has not, or why
/// nothing can be decided now.
async fn target_rule(
    st: &NodeState,
    now: i64,
    committed_before_ms: i64,
) -> Result<(MarkerGcRule, Option<Epoch>), String> {
    let loading = st
        .loader
        .lock()
        .as_ref()
        .is_some_and(|l| l.shared.running.load(std::sync::atomic::Ordering::Relaxed));
    if loading {
        return Err("a snapshot load is running".into());
    }
    let migrations = crate::history::read_migrations(st)
        .await
        .map_err(|e| format!("cannot read the migration records: {e}"))?;
    if let Some(m) = migrations
        .iter()
        .find(|m| !matches!(m["phase"].as_str(), Some("done" | "aborted")))
    {
        return Err(format!(
            "migration of {} is in progress (phase {})",
            m["ns"], m["phase"]
        ));
    }
    let lag = st
        .lag()
        .await
        .map_err(|e| format!("journal positions: {e}"))?;
    if lag.is_empty() {
        return Err("the journal's partitions are not known yet".into());
    }
    let marks: BTreeMap<i32, i64> = lag
        .iter()
        .map(|p| (p.partition, p.high_watermark))
        .collect();
    let next = Epoch {
        taken_ms: now,
        marks,
    };
    let held = load_epoch(st).map_err(|e| format!("reading the epoch: {e}"))?;
    let Some(held) = held else {
        save_epoch(st, &next).map_err(|e| format!("recording the epoch: {e}"))?;
        return Ok((count_only(committed_before_ms), None));
    };
    let expired = lag.len() == held.marks.len()
        && lag.iter().all(|p| {
            held.marks.get(&p.partition).is_some_and(|&mark| {
                p.low_watermark >= mark && p.stored.unwrap_or(p.low_watermark) >= mark
            })
        });
    if !expired {
        return Ok((count_only(committed_before_ms), None));
    }
    let rule = MarkerGcRule {
        committed_before_ms,
        written_before_ms: Some(held.taken_ms),
        remove: true,
    };
    Ok((rule, Some(next)))
}

fn count_only(committed_before_ms: i64) -> MarkerGcRule {
    MarkerGcRule {
        committed_before_ms,
        written_before_ms: None,
        remove: false,
    }
}

fn load_epoch(st: &NodeState) -> Result<Option<Epoch>, String> {
    match st
        .store
        .engine()
        .get(Cf::Meta, EPOCH_KEY)
        .map_err(|e| e.to_string())?
    {
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| format!("corrupt marker GC epoch: {e}")),
        None => Ok(None),
    }
}

fn save_epoch(st: &NodeState, e: &Epoch) -> Result<(), String> {
    let mut b = WriteBatch::default();
    b.put(
        Cf::Meta,
        EPOCH_KEY.to_vec(),
        serde_json::to_vec(e).expect("plain data"),
    );
    st.store.engine().write(b).map_err(|e| e.to_string())
}
