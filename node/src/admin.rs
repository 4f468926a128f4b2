//! Operator endpoints: status with lag, replay, digest, Prometheus metrics and
//! the dashboard page.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use northwest_consumer::{offsets, Control, PartitionLag};
use northwest_control::api::{
    path, ApplyState, ApplyStatus, DataLatency, DigestResponse, KindDigest, LoaderStatus,
    NodeStatus, OffsetsResponse, PartitionStatus, RelayStatus, ReplayRequest, ReplayResponse,
    ReverseApplyStatus, ReverseRelayStatus,
};
use northwest_control::{ErrorCode, MigrationRecord};
use northwest_store::{KeyRange, Namespace};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::api::ApiError;
use crate::history::{Sample, INTERVAL};
use crate::state::NodeState;
use crate::topics::reverse_topic_name;

pub fn router(state: Arc<NodeState>) -> Router {
    Router::new()
        .route(path::STATUS, get(status))
        .route(path::REPLAY, post(replay))
        .route(path::OFFSETS, get(stored_offsets))
        .route(path::HISTORY, get(history))
        .route("/v1/ns/{ns}/digest", get(digest))
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .route("/", get(|| async { Html(include_str!("dashboard.html")) }))
        .with_state(state)
}

#[derive(Serialize)]
struct Ready {
    status: &'static str,
}

/// A not-ready answer: an error body with every reason.
#[derive(Serialize)]
struct NotReady {
    status: &'static str,
    code: ErrorCode,
    error: String,
    problems: Vec<String>,
}

/// Readiness (`/healthz` is liveness): 503 naming each reason while
/// ZooKeeper or the broker is unreachable, the relay cannot ship, or the
/// apply loop is not running or has a halted partition.
async fn readyz(State(s): State<Arc<NodeState>>) -> Response {
    let mut problems = s.gate.proxy_problems();
    if let Err(e) = s.store.coordinator().check_ready() {
        problems.push(format!("coordination: {e}"));
    }
    if let Some(e) = s.store.outbox().error() {
        problems.push(format!("journal relay: {e}"));
    } else if s.relay.is_some() {
        if let Err(e) = s.broker_reachable().await {
            problems.push(format!("journal broker: {e}"));
        }
    }
    if let Some(a) = &s.apply {
        if !a.running.load(std::sync::atomic::Ordering::Acquire) {
            problems.push(
                "apply loop: not running (waiting for the journal topic or the broker)".into(),
            );
        }
        if let Err(e) = s.lag().await {
            problems.push(format!("broker: {e}"));
        }
        for (p, st) in a.partitions.lock().iter() {
            if let Some(h) = &st.halted {
                problems.push(format!("journal partition {p} halted: {h}"));
            }
        }
    }
    if problems.is_empty() {
        return Json(Ready { status: "ready" }).into_response();
    }
    let not_ready = NotReady {
        status: "not_ready",
        code: ErrorCode::NotReady,
        error: problems.join("; "),
        problems,
    };
    (StatusCode::SERVICE_UNAVAILABLE, Json(not_ready)).into_response()
}

async fn status(State(s): State<Arc<NodeState>>) -> Json<NodeStatus> {
    let outbox = s.store.outbox();
    let mut out = NodeStatus {
        name: s.name.clone(),
        instance: s.instance.clone(),
        role: s.role().to_string(),
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
        proxy_problems: s.gate.proxy_problems(),
        read_cache: s.store.cache_stats(),
        data_latency: data_latency(&s),
        ..Default::default()
    };
    out.loader = loader_status(&s).await;
    out.relay = relay_status(&s);
    out.reverse_relay = reverse_relay_status(&s);
    out.reverse_apply = reverse_apply_status(&s).await;
    out.apply = apply_status(&s).await;
    Json(out)
}

/// The data API's p99 over the last 10 s.
fn data_latency(s: &NodeState) -> DataLatency {
    let (p99, n) = s.metrics.recent_data_p99();
    DataLatency {
        window_s: 10,
        requests: n,
        // Infinity is not JSON: the top bucket reads as its lower bound.
        p99_ms: p99.map(|v| if v.is_finite() { v } else { 5000.0 }),
    }
}

/// Records of all partitions, and whether every one reached its end.
fn lag_totals(lag: &[PartitionLag]) -> (i64, bool) {
    let total = lag.iter().map(|p| p.lag_records).sum();
    (total, lag.iter().all(|p| p.lag_records == 0))
}

async fn loader_status(s: &NodeState) -> Option<LoaderStatus> {
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
    })
}

/// A source's relay (and its metrics, refreshed).
fn relay_status(s: &NodeState) -> Option<RelayStatus> {
    let r = s.relay.as_ref()?;
    let status = RelayStatus {
        shipped: r.shipped.load(Relaxed),
        send_errors: r.send_errors.load(Relaxed),
        last_error: r.last_error.lock().clone(),
    };
    s.metrics.observe_relay(r, s.store.outbox().len());
    Some(status)
}

fn reverse_relay_status(s: &NodeState) -> Option<ReverseRelayStatus> {
    let r = s.reverse_relay.as_ref()?;
    Some(ReverseRelayStatus {
        topic: reverse_topic_name(&s.topic),
        shipped: r.shipped.load(Relaxed),
        send_errors: r.send_errors.load(Relaxed),
        last_error: r.last_error.lock().clone(),
        pending: s.store.outbox().len(),
    })
}

/// A source's apply loop of the reverse journal (and its lag metric).
async fn reverse_apply_status(s: &NodeState) -> Option<ReverseApplyStatus> {
    let a = s.reverse_apply.lock().clone()?;
    let topic = reverse_topic_name(&s.topic);
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
async fn apply_status(s: &NodeState) -> Option<ApplyStatus> {
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
    let running = a.running.load(Relaxed);
    let state = apply_state(
        running,
        lag_error.is_some(),
        &halted,
        &partitions,
        caught_up,
    );
    Some(ApplyStatus {
        state,
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
    })
}

fn partition_status(p: &PartitionLag, halted: &BTreeMap<i32, Option<String>>) -> PartitionStatus {
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
fn apply_state(
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

/// Stored next offsets of the journal (and the snapshot topic being loaded),
/// and where this node began applying each journal partition:
/// a cheap read of this node's own metadata, no broker round trip.
async fn stored_offsets(
    State(s): State<Arc<NodeState>>,
) -> Result<Json<OffsetsResponse>, ApiError> {
    let reverse = match s.reverse_apply.lock().is_some() {
        true => Some(offsets::load(&s.store, &reverse_topic_name(&s.topic))?.into()),
        false => None,
    };
    let snapshot_topic = s.loader.lock().as_ref().map(|l| l.topic.clone());
    let snapshot = match &snapshot_topic {
        Some(t) => Some(offsets::load(&s.store, t)?.into()),
        None => None,
    };
    Ok(Json(OffsetsResponse {
        journal: offsets::load(&s.store, &s.topic)?.into(),
        journal_from: offsets::applied_from(&s.store, &s.topic)?.into(),
        snapshot,
        snapshot_topic,
        reverse,
    }))
}

async fn replay(
    State(s): State<Arc<NodeState>>,
    body: Body,
) -> Result<Json<ReplayResponse>, ApiError> {
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .map_err(|_| ApiError::bad_request("body too large"))?;
    let req: ReplayRequest = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("malformed replay request: {e}")))?;
    let (Some(ctl), Some(_)) = (&s.control, &s.apply) else {
        return Err(ApiError::bad_request(
            "this node does not apply a journal (set journal.apply = true)",
        ));
    };
    let chosen = (!req.from_offsets.is_empty()) as u8
        + req.from_timestamp_ms.is_some() as u8
        + req.from_beginning as u8;
    if chosen != 1 {
        return Err(ApiError::bad_request(
            "give exactly one of from_offsets, from_timestamp_ms, from_beginning",
        ));
    }
    let (tx, rx) = oneshot::channel();
    // The beginning is the first retained record (time 0), not offset 0,
    // which retention may have removed.
    let mut seen = std::collections::BTreeSet::new();
    if let Some(p) = req.from_offsets.iter().find(|p| !seen.insert(p.partition)) {
        return Err(ApiError::bad_request(format!(
            "from_offsets names partition {} twice",
            p.partition
        )));
    }
    let msg = match (req.from_timestamp_ms, req.from_beginning) {
        (Some(ts_ms), _) => Control::RewindToTime { ts_ms, reply: tx },
        (None, true) => Control::RewindToTime {
            ts_ms: 0,
            reply: tx,
        },
        (None, false) => Control::Rewind {
            to: req
                .from_offsets
                .iter()
                .map(|p| (p.partition, p.offset))
                .collect(),
            reply: tx,
        },
    };
    let unavailable = |m: &str| ApiError::unavailable(ErrorCode::ApplyUnavailable, m);
    ctl.send(msg)
        .await
        .map_err(|_| unavailable("the apply loop is not running"))?;
    match rx
        .await
        .map_err(|_| unavailable("the apply loop stopped"))?
    {
        Ok(rewound_to) => Ok(Json(ReplayResponse {
            rewound_to: rewound_to.into(),
        })),
        Err(e) => Err(ApiError::bad_request(e)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeQuery {
    prefix: Option<String>,
    start: Option<String>,
    end: Option<String>,
    /// This node's own copy even while it forwards the namespace (the
    /// gate reads it; a rollback compares both nodes' copies).
    #[allow(dead_code)]
    local: Option<bool>,
}

async fn digest(
    State(s): State<Arc<NodeState>>,
    Path(ns): Path<String>,
    q: Result<Query<RangeQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DigestResponse>, ApiError> {
    let ns = Namespace::new(&ns).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("bad digest query: {e}")))?;
    let bad = |e: northwest_store::KeyError| ApiError::bad_request(e.to_string());
    let mut range = KeyRange::prefix(&ns, q.prefix.as_deref().unwrap_or("")).map_err(bad)?;
    if q.start.is_some() || q.end.is_some() {
        range = range
            .intersect(&KeyRange::between(&ns, q.start.as_deref(), q.end.as_deref()).map_err(bad)?);
    }
    let store = s.store.clone();
    let d = tokio::task::spawn_blocking(move || {
        northwest_store::digest::digest(store.engine().as_ref(), &range)
    })
    .await
    .map_err(|e| ApiError::bad_request(e.to_string()))??;
    let kinds = d
        .kinds
        .iter()
        .map(|(k, p)| {
            let kind = KindDigest {
                count: p.count,
                digest: p.hex(),
            };
            (k.clone(), kind)
        })
        .collect();
    Ok(Json(DigestResponse {
        namespace: ns.as_str().to_string(),
        count: d.total.count,
        digest: d.total.hex(),
        kinds,
    }))
}

/// The dashboard's data (`/v1/admin/history`).
#[derive(Serialize)]
struct HistoryView {
    name: String,
    role: &'static str,
    interval_ms: u64,
    samples: Vec<Sample>,
    migrations: Vec<MigrationRecord>,
}

/// The dashboard's data: the sampled time series and the migrations.
async fn history(State(s): State<Arc<NodeState>>) -> Json<HistoryView> {
    Json(HistoryView {
        name: s.name.clone(),
        role: s.role(),
        interval_ms: INTERVAL.as_millis() as u64,
        samples: s.history.samples(),
        migrations: s.history.migrations(),
    })
}

async fn metrics(State(s): State<Arc<NodeState>>) -> Response {
    s.metrics.observe_cache(s.store.cache_stats());
    if let Some(a) = &s.apply {
        s.metrics.observe_apply(a);
    }
    if let Some(r) = &s.relay {
        s.metrics.observe_relay(r, s.store.outbox().len());
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
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
        let on_the_wire = serde_json::to_value(BrokerUnreachable).unwrap();
        assert_eq!(on_the_wire, "broker_unreachable");
    }
}
