//! What a migration starts applying on a node: the snapshot load on a
//! target, and on the source the reverse journal its new primary writes.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use northwest_consumer::{ApplyConfig, ApplyShared, PoisonPolicy, RecordFilter, Source};
use northwest_control::api::{
    LoadSnapshotRequest, LoadSnapshotResponse, LoaderRateRequest, LoaderRateResponse,
    ReverseApplyResponse, LOADER_RATE_LEASE_MS,
};

use super::parse;
use crate::api::ApiError;
use crate::state::{Loader, NodeState};

/// Starts (once) the loader that applies the snapshot topic with the same
/// lock + version check as the journal.
pub(super) async fn load_snapshot(
    State(s): State<Arc<NodeState>>,
    body: axum::body::Bytes,
) -> Result<Json<LoadSnapshotResponse>, ApiError> {
    let req: LoadSnapshotRequest = parse(&body)?;
    let mut slot = s.loader.lock();
    if let Some(l) = slot.as_ref() {
        if l.topic == req.topic {
            return Ok(Json(LoadSnapshotResponse {
                loading: req.topic,
                already: true,
            }));
        }
        // A new migration supersedes an aborted one's loader.
        tracing::info!(old = %l.topic, new = %req.topic, "replacing the snapshot loader");
        let _ = l.stop.send(true);
    }
    let shared = Arc::new(ApplyShared::default());
    let cfg = ApplyConfig {
        batch: s.apply_batch,
        schemas: s.schemas.clone(),
        ..ApplyConfig::new(
            Source::Snapshot,
            s.kafka.clone(),
            &req.topic,
            &s.consumer_groups.0,
        )
    };
    let (_tx, rx) = tokio::sync::mpsc::channel(1);
    let mut stop = s.stop.clone();
    let (own_stop, mut own_rx) = tokio::sync::watch::channel(false);
    let (store, sh) = (s.store.clone(), shared.clone());
    tokio::spawn(async move {
        let stopped = async move {
            tokio::select! {
                _ = stop.wait_for(|v| *v) => {}
                _ = own_rx.wait_for(|v| *v) => {}
            }
        };
        if let Err(e) = northwest_consumer::run(store, cfg, sh, rx, stopped).await {
            tracing::error!(error = %e, "snapshot loader failed");
        }
    });
    *slot = Some(Loader {
        topic: req.topic.clone(),
        shared,
        _control: _tx,
        stop: own_stop,
        started: std::time::Instant::now(),
    });
    Ok(Json(LoadSnapshotResponse {
        loading: req.topic,
        already: false,
    }))
}

/// Starts (once) the loop applying, on a source node, the writes its new
/// primary takes ("reverse apply"). Every primary journals to the one
/// journal topic, so the loop reads that topic and applies only the records
/// of namespaces this node forwards, and none of its own commits.
pub fn start_reverse_apply(s: &Arc<NodeState>) {
    let mut slot = s.reverse_apply.lock();
    if slot.is_some() {
        return;
    }
    let topic = s.topic.clone();
    let (gate, own) = (s.gate.clone(), s.name.clone());
    let filter =
        RecordFilter::new(move |origin, ns| origin != own && gate.proxy(ns.as_str()).is_some());
    let shared = Arc::new(ApplyShared::default());
    let cfg = ApplyConfig {
        batch: s.apply_batch,
        // A record n1 cannot apply is a write n2 acknowledged: halt (the
        // rollback then stops and says why) rather than skip it.
        poison: PoisonPolicy::Halt,
        filter: Some(filter),
        schemas: s.schemas.clone(),
        ..ApplyConfig::new(
            Source::Journal,
            s.kafka.clone(),
            &topic,
            &s.consumer_groups.1,
        )
    };
    let (_tx, rx) = tokio::sync::mpsc::channel(1);
    let mut stop = s.stop.clone();
    let (store, sh, st) = (s.store.clone(), shared.clone(), s.clone());
    tracing::info!(%topic, "applying the reverse journal (writes the new primary takes)");
    tokio::spawn(async move {
        let _keep = _tx;
        let stopped = async move {
            let _ = stop.wait_for(|v| *v).await;
        };
        if let Err(e) = northwest_consumer::run(store, cfg, sh.clone(), rx, stopped).await {
            tracing::error!(error = %e, "the reverse journal's apply loop failed: a rollback cannot catch up until it runs again; POST /v1/admin/reverse-apply (or run `northwest migrate --rollback`) starts it from its stored offsets");
            *sh.last_error.lock() = Some(e.to_string());
            // A finished loop can be started again.
            let mut slot = st.reverse_apply.lock();
            if slot.as_ref().is_some_and(|a| Arc::ptr_eq(a, &sh)) {
                *slot = None;
            }
        }
    });
    *slot = Some(shared);
}

/// Starts the reverse journal's apply loop here (a source), if not running.
pub(super) async fn reverse_apply(
    State(s): State<Arc<NodeState>>,
) -> Result<Json<ReverseApplyResponse>, ApiError> {
    if s.relay.is_none() {
        return Err(ApiError::bad_request(
            "only a source node applies the reverse journal",
        ));
    }
    start_reverse_apply(&s);
    Ok(Json(ReverseApplyResponse {
        topic: s.topic.clone(),
    }))
}

/// Sets the running snapshot loader's rate limit (the migration's throttle
/// slows n2's loading with n1's streaming, renewing it while it runs; it
/// lapses after `LOADER_RATE_LEASE_MS`); 404 `not_found` with no loader.
pub(super) async fn loader_rate(
    State(s): State<Arc<NodeState>>,
    body: axum::body::Bytes,
) -> Result<Json<LoaderRateResponse>, ApiError> {
    let req: LoaderRateRequest = parse(&body)?;
    let shared = s.loader.lock().as_ref().map(|l| l.shared.clone());
    let Some(shared) = shared else {
        return Err(ApiError {
            status: axum::http::StatusCode::NOT_FOUND,
            code: northwest_control::ErrorCode::NotFound,
            message: "no snapshot loader runs on this node".into(),
        });
    };
    let was = shared.rate_limit_now();
    let until = northwest_store::store::now_ms_pub() + LOADER_RATE_LEASE_MS;
    shared.set_rate_limit(req.rows_per_s, until);
    if was != req.rows_per_s {
        tracing::info!(
            rows_per_s = req.rows_per_s,
            "snapshot loader rate limit set (0: none)"
        );
    }
    Ok(Json(LoaderRateResponse {
        rate_limit: shared.rate_limit_now(),
        rows: shared.txns.load(std::sync::atomic::Ordering::Relaxed),
    }))
}
