//! Operator endpoints: status with lag, replay, digest, Prometheus metrics and
//! the dashboard page.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use northwest_consumer::{offsets, Control};
use northwest_control::api::{path, OffsetsResponse, ReplayRequest, ReplayResponse};
use northwest_control::{ErrorCode, MigrationRecord};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::api::ApiError;
use crate::history::{Sample, INTERVAL};
use crate::state::NodeState;

mod digest;
mod status;
mod timeline;

pub(crate) use timeline::{epoch_lag, refresh as refresh_timelines};

pub fn router(state: Arc<NodeState>) -> Router {
    Router::new()
        .route(path::STATUS, get(status::status))
        .route(path::REPLAY, post(replay))
        .route(path::OFFSETS, get(stored_offsets))
        .route(path::OUTBOX, get(status::outbox))
        .route(path::HISTORY, get(history))
        .route("/v1/admin/timeline/{ns}", get(timeline::timeline))
        .route("/v1/ns/{ns}/digest", get(digest::digest))
        .route(path::DIGEST_JOBS, post(digest::start_job))
        .route("/v1/admin/digest-jobs/{job}", get(digest::job))
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
            let why = a
                .waiting_for
                .lock()
                .clone()
                .or_else(|| a.last_error.lock().clone());
            problems.push(format!(
                "apply loop: not running ({})",
                why.as_deref().unwrap_or("starting")
            ));
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

/// Stored next offsets of the journal (and the snapshot topic being loaded),
/// and where this node began applying each journal partition:
/// a cheap read of this node's own metadata, no broker round trip.
async fn stored_offsets(
    State(s): State<Arc<NodeState>>,
) -> Result<Json<OffsetsResponse>, ApiError> {
    let reverse = match s.reverse_apply.lock().is_some() {
        true => Some(offsets::load(&s.store, &s.topic)?.into()),
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
    s.metrics.observe_store(&s.store);
    s.metrics.observe_leases(s.zk.as_deref());
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
