//! `GET /v1/admin/status`: the node's status built one section at a time
//! (data latency, the snapshot loader, the relays, reverse apply, the apply
//! loop and its partitions).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use northwest_consumer::PartitionLag;
use northwest_control::api::{
    ApplyState, ApplyStatus, DataLatency, LoaderStatus, MigrationProgress, NodeStatus,
    OutboxStatus, PartitionStatus, RelayStatus, ReverseApplyStatus, ReverseRelayStatus,
};
use northwest_control::Phase;

use crate::state::NodeState;

pub(super) async fn status(State(s): State<Arc<NodeState>>) -> Json<NodeStatus> {
    let outbox = s.store.outbox();
    let mut out = NodeStatus {
        name: s.name.clone(),
        instance: s.instance.clone(),
        role: s.role().to_string(),
        engine: s.store.engine().name().to_string(),
        outbox_pending: outbox.len(),
        outbox_shipped_below: outbox.shipped_below(),
        outbox_next: outbox.next_seq(),
        journal_topic: s.topic.clone(),
        max_message_bytes: s.kafka.max_message_bytes,
        zk_root: s.layout.root().to_string(),
        fenced: s.gate.fenced_namespaces().await,
        proxies: s.gate.proxies(),
        promoted: s.gate.promoted(),
        promotion_unconfirmed: s.gate.unconfirmed(),
        relay_error: outbox.error(),
        marker_gc: s.marker_gc.lock().clone(),
        snapshot_gc: s.snapshot_gc.lock().clone(),
        proxy_problems: s.gate.proxy_problems(),
        read_cache: s.store.cache_stats(),
        engine_memory: s.store.engine().memory(),
        data_latency: data_latency(&s),
        ..Default::default()
    };
    out.loader = loader_status(&s).await;
    out.relay = relay_status(&s);
    out.reverse_relay = reverse_relay_status(&s);
    out.reverse_apply = reverse_apply_status(&s).await;
    out.apply = apply_status(&s).await;
    out.migrations = s
        .history
        .migrations()
        .into_iter()
        .filter(|m| !matches!(m.phase, Phase::Done | Phase::Aborted))
        .map(|m| MigrationProgress {
            namespace: m.ns,
            id: m.id,
            from: m.from,
            to: m.to,
            phase: m.phase,
            snapshot: m.snapshot_progress,
            error: m.error,
        })
        .collect();
    Json(out)
}

/// `GET /v1/admin/outbox`: the outbox's marks alone (a drain polls them).
pub(super) async fn outbox(State(s): State<Arc<NodeState>>) -> Json<OutboxStatus> {
    let outbox = s.store.outbox();
    Json(OutboxStatus {
        pending: outbox.len(),
        shipped_below: outbox.shipped_below(),
        next: outbox.next_seq(),
        relay_error: outbox.error(),
    })
}

/// The data API's p99 over the last 10 s.
pub(super) fn data_latency(s: &NodeState) -> DataLatency {
    let (p99, n) = s.metrics.recent_data_p99();
    DataLatency {
        window_s: 10,
        requests: n,
        // Infinity is not JSON: the top bucket reads as its lower bound.
        p99_ms: p99.map(|v| if v.is_finite() { v } else { 5000.0 }),
    }
}

/// Records of all partitions, and whether every one reached its end.
pub(super) fn lag_totals(lag: &[PartitionLag]) -> (i64, bool) {
    let total = lag.iter().map(|p| p.lag_records).sum();
    (total, lag.iter().all(|p| p.lag_records == 0))
}

pub(super) async fn loader_status(s: &NodeState) -> Option<LoaderStatus> {
    let (topic, shared) = s
        .loader
        .lock()
        .as_ref()
        .map(|l| (l.topic.clone(), l.shared.clone()))?;
    let lag = s.lag_of(&topic, &shared).await;
    let totals = lag.as_ref().ok().map(|l| (l.is_empty(), lag_totals(l)));
    let last_error = shared.last_error.lock().clone();
    Some(LoaderStatus {
        topic,
        running: shared.running.load(Relaxed),
        rows: shared.txns.load(Relaxed),
        writes_applied: shared.writes_applied.load(Relaxed),
        writes_stale: shared.writes_stale.load(Relaxed),
        dead_lettered: shared.dead_lettered.load(Relaxed),
        last_error,
        caught_up: totals.is_some_and(|(empty, (_, all))| !empty && all),
        lag_records: totals.map(|(_, (total, _))| total),
        rate_limit: shared.rate_limit_now(),
    })
}

/// A source's relay (and its metrics, refreshed).
pub(super) fn relay_status(s: &NodeState) -> Option<RelayStatus> {
    let r = s.relay.as_ref()?;
    let status = RelayStatus {
        shipped: r.shipped.load(Relaxed),
        send_errors: r.send_errors.load(Relaxed),
        last_error: r.last_error.lock().clone(),
    };
    s.metrics.observe_relay(r, s.store.outbox().len());
    Some(status)
}

pub(super) fn reverse_relay_status(s: &NodeState) -> Option<ReverseRelayStatus> {
    let r = s.reverse_relay.as_ref()?;
    Some(ReverseRelayStatus {
        topic: s.topic.clone(),
        shipped: r.shipped.load(Relaxed),
        send_errors: r.send_errors.load(Relaxed),
        last_error: r.last_error.lock().clone(),
        pending: s.store.outbox().len(),
    })
}

/// A source's apply loop of the reverse journal (and its lag metric).
pub(super) async fn reverse_apply_status(s: &NodeState) -> Option<ReverseApplyStatus> {
    let a = s.reverse_apply.lock().clone()?;
    let topic = s.topic.clone();
    let lag = s.lag_of(&topic, &a).await;
    let halted = a.partitions.lock().values().find_map(|p| p.halted.clone());
    // No partition assigned yet is not "caught up".
    let lag = lag.and_then(|l| match l.is_empty() {
        true => Err("no partition of the reverse journal assigned yet".to_string()),
        false => Ok(l),
    });
    let lag_records = lag.as_ref().ok().map(|l| lag_totals(l).0);
    s.metrics.observe_reverse_lag(lag_records);
    let last_error = a.last_error.lock().clone();
    Some(ReverseApplyStatus {
        topic,
        running: a.running.load(Relaxed),
        transactions: a.txns.load(Relaxed),
        writes_applied: a.writes_applied.load(Relaxed),
        dead_lettered: a.dead_lettered.load(Relaxed),
        last_error,
        halted,
        lag_records,
        lag_error: lag.err(),
    })
}

/// A target's journal apply loop, its partitions and where it stands (and
/// its metrics, refreshed).
pub(super) async fn apply_status(s: &NodeState) -> Option<ApplyStatus> {
    let a = s.apply.as_ref()?;
    let lag = s.lag().await;
    let halted: BTreeMap<i32, Option<String>> = a
        .partitions
        .lock()
        .iter()
        .map(|(p, st)| (*p, st.halted.clone()))
        .collect();
    let (partitions, caught_up, lag_error) = match &lag {
        Ok(l) => {
            s.metrics.observe_lag(l);
            let parts = l.iter().map(|p| partition_status(p, &halted)).collect();
            (parts, lag_totals(l).1, None)
        }
        Err(e) => (Vec::new(), false, Some(e.clone())),
    };
    s.metrics.observe_apply(a);
    let (epochs, epochs_error) = match &lag {
        Ok(l) => match super::timeline::epoch_lag(s, l) {
            Ok(e) => (e, None),
            Err(e) => (Vec::new(), Some(e)),
        },
        Err(e) => (Vec::new(), Some(format!("lag probe: {e}"))),
    };
    s.metrics.observe_epoch_lag(&epochs);
    let running = a.running.load(Relaxed);
    let state = apply_state(
        running,
        lag_error.is_some(),
        &halted,
        &partitions,
        caught_up,
    );
    let reason = apply_reason(
        state,
        a.last_error.lock().as_deref(),
        a.waiting_for.lock().as_deref(),
        lag_error.as_deref(),
        &halted,
    );
    Some(ApplyStatus {
        state,
        reason,
        running,
        last_error: a.last_error.lock().clone(),
        transactions: a.txns.load(Relaxed),
        writes_applied: a.writes_applied.load(Relaxed),
        writes_stale: a.writes_stale.load(Relaxed),
        writes_blacklisted: a.writes_blacklisted.load(Relaxed),
        dead_lettered: a.dead_lettered.load(Relaxed),
        batches: a.batches.load(Relaxed),
        caught_up: state == ApplyState::CaughtUp,
        lag_error,
        partitions,
        epochs,
        epochs_error,
    })
}

pub(super) fn partition_status(
    p: &PartitionLag,
    halted: &BTreeMap<i32, Option<String>>,
) -> PartitionStatus {
    PartitionStatus {
        partition: p.partition,
        stored: p.stored,
        high_watermark: p.high_watermark,
        lag_records: p.lag_records,
        lag_seconds: p.lag_seconds,
        halted: halted.get(&p.partition).cloned().flatten(),
    }
}

/// "caught up" only when every part of it holds: the loop runs, it read the
/// topic's metadata just now, no partition is halted, and every stored
/// offset reached its high-water mark.
pub(super) fn apply_state(
    running: bool,
    broker_unreachable: bool,
    halted: &BTreeMap<i32, Option<String>>,
    partitions: &[PartitionStatus],
    caught_up: bool,
) -> ApplyState {
    if !running {
        ApplyState::NotRunning
    } else if broker_unreachable {
        ApplyState::BrokerUnreachable
    } else if halted.values().any(Option::is_some) {
        ApplyState::Halted
    } else if partitions.is_empty() {
        ApplyState::NoPartitions
    } else if caught_up {
        ApplyState::CaughtUp
    } else {
        ApplyState::CatchingUp
    }
}

/// Why the apply loop is in `state` and what to do, for every state but
/// the two that apply (status, the CLI and the dashboard show it).
pub(super) fn apply_reason(
    state: ApplyState,
    last_error: Option<&str>,
    waiting_for: Option<&str>,
    lag_error: Option<&str>,
    halted: &BTreeMap<i32, Option<String>>,
) -> Option<String> {
    match state {
        ApplyState::CatchingUp | ApplyState::CaughtUp => None,
        ApplyState::NotRunning => Some(match (last_error, waiting_for) {
            (Some(e), _) => format!(
                "stopped by an error, restarted from the stored offsets every 2 s: {e} (the \
                 node's log has each attempt)"
            ),
            (None, Some(w)) => w.to_string(),
            (None, None) => "starting, or stopping with the node".to_string(),
        }),
        ApplyState::BrokerUnreachable => Some(format!(
            "the broker does not answer: {} (is it up? deploy/stack.sh status)",
            lag_error.unwrap_or("no metadata")
        )),
        ApplyState::Halted => {
            let parts: Vec<String> = halted
                .iter()
                .filter_map(|(p, h)| h.as_ref().map(|h| format!("partition {p}: {h}")))
                .collect();
            Some(format!(
                "{}; a halted partition applies nothing until it is dealt with (a poison \
                 record: docs/operations.md, \"Poison records and the dead-letter topic\"; an \
                 expired range: re-migrate the namespace)",
                parts.join("; ")
            ))
        }
        ApplyState::NoPartitions => {
            Some("the journal topic has no partitions this node can read yet".to_string())
        }
        ApplyState::Unknown => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_is_caught_up_only_when_everything_holds() {
        let part = PartitionStatus {
            partition: 0,
            stored: Some(5),
            high_watermark: 5,
            lag_records: 0,
            lag_seconds: Some(0.0),
            halted: None,
        };
        let parts = [part];
        let fine: BTreeMap<i32, Option<String>> = [(0, None)].into();
        let halted: BTreeMap<i32, Option<String>> = [(0, Some("poison".into()))].into();
        use ApplyState::*;
        assert_eq!(apply_state(true, false, &fine, &parts, true), CaughtUp);
        assert_eq!(apply_state(true, false, &fine, &parts, false), CatchingUp);
        assert_eq!(apply_state(false, false, &fine, &parts, true), NotRunning);
        assert_eq!(
            apply_state(true, true, &fine, &[], false),
            BrokerUnreachable
        );
        assert_eq!(apply_state(true, false, &halted, &parts, true), Halted);
        assert_eq!(apply_state(true, false, &fine, &[], true), NoPartitions);
        let why = |st, err, wait| apply_reason(st, err, wait, Some("timed out"), &halted);
        assert_eq!(why(CaughtUp, None, None), None);
        assert!(why(NotRunning, Some("store write failed"), None)
            .unwrap()
            .contains("store write failed"));
        assert!(
            why(NotRunning, None, Some("waiting for the journal topic t"))
                .unwrap()
                .contains("journal topic t")
        );
        assert!(why(Halted, None, None)
            .unwrap()
            .contains("partition 0: poison"));
        assert!(why(BrokerUnreachable, None, None)
            .unwrap()
            .contains("timed out"));
        let on_the_wire = serde_json::to_value(BrokerUnreachable).unwrap();
        assert_eq!(on_the_wire, "broker_unreachable");
    }
}
