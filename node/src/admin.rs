//! Operator endpoints: status with lag, replay, digest, Prometheus metrics and
//! the dashboard page.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use northwest_consumer::{offsets, Control};
use northwest_store::{KeyRange, Namespace};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::api::ApiError;
use crate::state::NodeState;
use crate::topics::reverse_topic_name;

pub fn router(state: Arc<NodeState>) -> Router {
    Router::new()
        .route("/v1/admin/status", get(status))
        .route("/v1/admin/replay", post(replay))
        .route("/v1/admin/offsets", get(stored_offsets))
        .route("/v1/admin/history", get(history))
        .route("/v1/ns/{ns}/digest", get(digest))
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .route("/", get(|| async { Html(include_str!("dashboard.html")) }))
        .with_state(state)
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
        return Json(json!({"status": "ready"})).into_response();
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({
            "status": "not_ready",
            "code": "not_ready",
            "error": problems.join("; "),
            "problems": problems,
        })),
    )
        .into_response()
}

async fn status(State(s): State<Arc<NodeState>>) -> Result<Json<Value>, ApiError> {
    let mut out = json!({
        "name": s.name,
        "instance": s.instance,
        "role": s.role(),
        "outbox_pending": s.store.outbox().len(),
        "outbox_shipped_below": s.store.outbox().shipped_below(),
        "outbox_next": s.store.outbox().next_seq(),
        "journal_topic": s.topic,
        "max_message_bytes": s.kafka.max_message_bytes,
        "zk_root": s.zk_root,
        "fenced": s.gate.fenced_namespaces().await,
        "proxies": s.gate.proxies(),
        "promoted": s.gate.promoted(),
        "promotion_unconfirmed": s.gate.unconfirmed(),
        "relay_error": s.store.outbox().error(),
        "marker_gc": s.marker_gc.lock().clone(),
        "proxy_problems": s.gate.proxy_problems(),
        "read_cache": s.store.cache_stats(),
    });
    let (p99, n) = s.metrics.recent_data_p99();
    // Infinity is not JSON: the top bucket reads as its lower bound.
    out["data_latency"] = json!({
        "window_s": 10,
        "requests": n,
        "p99_ms": p99.map(|v| if v.is_finite() { v } else { 5000.0 }),
    });
    let loader = s
        .loader
        .lock()
        .as_ref()
        .map(|l| (l.topic.clone(), l.shared.clone()));
    if let Some((topic, shared)) = loader {
        use std::sync::atomic::Ordering::Relaxed;
        let lag = s.lag_of(&topic, &shared).await;
        out["loader"] = json!({
            "topic": topic,
            "running": shared.running.load(Relaxed),
            "rows": shared.txns.load(Relaxed),
            "writes_applied": shared.writes_applied.load(Relaxed),
            "writes_stale": shared.writes_stale.load(Relaxed),
            "dead_lettered": shared.dead_lettered.load(Relaxed),
            "last_error": *shared.last_error.lock(),
            "caught_up": lag.as_ref().map(|l| !l.is_empty() && l.iter().all(|p| p.lag_records == 0)).unwrap_or(false),
            "lag_records": lag.as_ref().map(|l| l.iter().map(|p| p.lag_records).sum::<i64>()).ok(),
        });
    }
    if let Some(r) = &s.relay {
        use std::sync::atomic::Ordering::Relaxed;
        out["relay"] = json!({
            "shipped": r.shipped.load(Relaxed),
            "send_errors": r.send_errors.load(Relaxed),
            "last_error": *r.last_error.lock(),
        });
        s.metrics.observe_relay(r, s.store.outbox().len());
    }
    if let Some(r) = &s.reverse_relay {
        use std::sync::atomic::Ordering::Relaxed;
        out["reverse_relay"] = json!({
            "topic": reverse_topic_name(&s.topic),
            "shipped": r.shipped.load(Relaxed),
            "send_errors": r.send_errors.load(Relaxed),
            "last_error": *r.last_error.lock(),
            "pending": s.store.outbox().len(),
        });
    }
    let reverse = s.reverse_apply.lock().clone();
    if let Some(a) = reverse {
        use std::sync::atomic::Ordering::Relaxed;
        let topic = reverse_topic_name(&s.topic);
        let lag = s.lag_of(&topic, &a).await;
        let halted = a.partitions.lock().values().find_map(|p| p.halted.clone());
        // No partition assigned yet is not "caught up".
        let lag = lag.and_then(|l| {
            if l.is_empty() {
                Err("no partition of the reverse journal assigned yet".to_string())
            } else {
                Ok(l)
            }
        });
        let lag_records = lag
            .as_ref()
            .map(|l| l.iter().map(|p| p.lag_records).sum::<i64>())
            .ok();
        s.metrics.observe_reverse_lag(lag_records);
        out["reverse_apply"] = json!({
            "topic": topic,
            "running": a.running.load(Relaxed),
            "transactions": a.txns.load(Relaxed),
            "writes_applied": a.writes_applied.load(Relaxed),
            "dead_lettered": a.dead_lettered.load(Relaxed),
            "last_error": *a.last_error.lock(),
            "halted": halted,
            "lag_records": lag_records,
            "lag_error": lag.as_ref().err(),
        });
    }
    if let Some(a) = &s.apply {
        use std::sync::atomic::Ordering::Relaxed;
        let lag = s.lag().await;
        let halted: BTreeMap<i32, Option<String>> = a
            .partitions
            .lock()
            .iter()
            .map(|(p, st)| (*p, st.halted.clone()))
            .collect();
        let (parts, caught_up, err) = match &lag {
            Ok(l) => {
                s.metrics.observe_lag(l);
                let parts: Vec<Value> = l
                    .iter()
                    .map(|p| json!({
                        "partition": p.partition, "stored": p.stored, "high_watermark": p.high_watermark,
                        "lag_records": p.lag_records, "lag_seconds": p.lag_seconds,
                        "halted": halted.get(&p.partition).cloned().flatten(),
                    }))
                    .collect();
                (parts, l.iter().all(|p| p.lag_records == 0), None)
            }
            Err(e) => (Vec::new(), false, Some(e.clone())),
        };
        s.metrics.observe_apply(a);
        let running = a.running.load(Relaxed);
        // "caught up" only when every part of it holds: the loop runs, it read
        // the topic's metadata just now, no partition is halted, and every
        // stored offset reached its high-water mark.
        let state = if !running {
            "not_running"
        } else if err.is_some() {
            "broker_unreachable"
        } else if halted.values().any(Option::is_some) {
            "halted"
        } else if parts.is_empty() {
            "no_partitions"
        } else if caught_up {
            "caught_up"
        } else {
            "catching_up"
        };
        let caught_up = state == "caught_up";
        out["apply"] = json!({
            "state": state,
            "running": running,
            "last_error": *a.last_error.lock(),
            "transactions": a.txns.load(Relaxed),
            "writes_applied": a.writes_applied.load(Relaxed),
            "writes_stale": a.writes_stale.load(Relaxed),
            "writes_blacklisted": a.writes_blacklisted.load(Relaxed),
            "dead_lettered": a.dead_lettered.load(Relaxed),
            "batches": a.batches.load(Relaxed),
            "caught_up": caught_up,
            "lag_error": err,
            "partitions": parts,
        });
    }
    Ok(Json(out))
}

/// Stored next offsets of the journal (and the snapshot topic being loaded),
/// and where this node began applying each journal partition:
/// a cheap read of this node's own metadata, no broker round trip.
async fn stored_offsets(State(s): State<Arc<NodeState>>) -> Result<Json<Value>, ApiError> {
    let journal = offsets::load(&s.store, &s.topic)?;
    let journal_from = offsets::applied_from(&s.store, &s.topic)?;
    let reverse = match s.reverse_apply.lock().is_some() {
        true => Some(offsets::load(
            &s.store,
            &reverse_topic_name(&s.topic),
        )?),
        false => None,
    };
    let loader = s.loader.lock().as_ref().map(|l| l.topic.clone());
    let snapshot = match &loader {
        Some(t) => Some(offsets::load(&s.store, t)?),
        None => None,
    };
    Ok(Json(
        json!({"journal": journal, "journal_from": journal_from, "snapshot": snapshot, "snapshot_topic": loader, "reverse": reverse}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    #[serde(default)]
    from_offsets: Vec<PartOffset>,
    from_timestamp_ms: Option<i64>,
    #[serde(default)]
    from_beginning: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartOffset {
    partition: i32,
    offset: i64,
}

async fn replay(State(s): State<Arc<NodeState>>, body: Body) -> Result<Json<Value>, ApiError> {
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
    let unavailable = |m: &str| ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "apply_unavailable",
        message: m.to_string(),
    };
    ctl.send(msg)
        .await
        .map_err(|_| unavailable("the apply loop is not running"))?;
    match rx
        .await
        .map_err(|_| unavailable("the apply loop stopped"))?
    {
        Ok(pos) => Ok(Json(json!({"rewound_to": pos}))),
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
) -> Result<Json<Value>, ApiError> {
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
    let kinds: serde_json::Map<String, Value> = d
        .kinds
        .iter()
        .map(|(k, p)| (k.clone(), json!({"count": p.count, "digest": p.hex()})))
        .collect();
    Ok(Json(
        json!({"namespace": ns.as_str(), "count": d.total.count, "digest": d.total.hex(), "kinds": kinds}),
    ))
}

/// The dashboard's data: the sampled time series and the migrations.
async fn history(State(s): State<Arc<NodeState>>) -> Json<Value> {
    Json(json!({
        "name": s.name,
        "role": s.role(),
        "interval_ms": crate::history::INTERVAL.as_millis() as u64,
        "samples": s.history.samples(),
        "migrations": s.history.migrations(),
    }))
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
