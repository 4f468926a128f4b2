//! Admin endpoints the migration orchestrator drives: fence / unfence, proxy,
//! checkpoint (n1) and snapshot loading (n2).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::{delete, post};
use axum::{Json, Router};
use northwest_consumer::{ApplyConfig, ApplyShared, PoisonPolicy, Source};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::admin::{Loader, NodeState};
use crate::api::ApiError;

pub fn router(state: Arc<NodeState>) -> Router {
    Router::new()
        .route("/v1/admin/fence", post(fence))
        .route("/v1/admin/unfence", post(unfence))
        .route("/v1/admin/proxy", post(proxy).delete(unproxy))
        .route("/v1/admin/checkpoint", post(checkpoint))
        .route("/v1/admin/checkpoint/{name}", delete(drop_checkpoint))
        .route("/v1/admin/load-snapshot", post(load_snapshot))
        .with_state(state)
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("malformed request: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FenceReq {
    #[serde(default = "default_fence_ms")]
    max_ms: u64,
}

fn default_fence_ms() -> u64 {
    10_000
}

async fn fence(
    State(s): State<Arc<NodeState>>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: FenceReq = if body.is_empty() {
        FenceReq {
            max_ms: default_fence_ms(),
        }
    } else {
        parse(&body)?
    };
    if req.max_ms == 0 || req.max_ms > 120_000 {
        return Err(ApiError::bad_request("max_ms must be 1..=120000"));
    }
    s.gate.fence(Duration::from_millis(req.max_ms)).await;
    Ok(Json(
        json!({"fenced": true, "outbox_pending": s.store.outbox_len()}),
    ))
}

async fn unfence(State(s): State<Arc<NodeState>>) -> Json<Value> {
    s.gate.unfence().await;
    Json(json!({"fenced": false}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProxyReq {
    target: String,
}

/// Turns this node into a data proxy for `target` and lifts the fence, so
/// the writes that waited are forwarded, not failed.
async fn proxy(
    State(s): State<Arc<NodeState>>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: ProxyReq = parse(&body)?;
    if !req.target.starts_with("http://") {
        return Err(ApiError::bad_request("target must be an http:// base URL"));
    }
    s.gate.set_proxy(Some(req.target.clone()));
    s.gate.unfence().await;
    tracing::info!(target = %req.target, "node is now a data proxy");
    Ok(Json(json!({"proxy": req.target})))
}

async fn unproxy(State(s): State<Arc<NodeState>>) -> Json<Value> {
    s.gate.set_proxy(None);
    s.gate.unfence().await;
    Json(json!({"proxy": null}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointReq {
    name: String,
}

fn checkpoint_dir(s: &NodeState, name: &str) -> Result<std::path::PathBuf, ApiError> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::bad_request(
            "checkpoint name must be [A-Za-z0-9_-]+",
        ));
    }
    let base =
        std::path::absolute(&s.data_dir).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(base.join("checkpoints").join(name))
}

/// A consistent, durable view of this node's store for the snapshotter
/// (idempotent: an existing checkpoint of that name is reused).
async fn checkpoint(
    State(s): State<Arc<NodeState>>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: CheckpointReq = parse(&body)?;
    let dir = checkpoint_dir(&s, &req.name)?;
    if !dir.join("CURRENT").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        let (store, d) = (s.store.clone(), dir.clone());
        tokio::task::spawn_blocking(move || store.engine().checkpoint(&d))
            .await
            .map_err(|e| ApiError::bad_request(e.to_string()))?
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    Ok(Json(json!({"dir": dir})))
}

async fn drop_checkpoint(
    State(s): State<Arc<NodeState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let dir = checkpoint_dir(&s, &name)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Json(json!({"removed": dir})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadReq {
    topic: String,
}

/// Starts (once) the loader that applies the snapshot topic with the same
/// lock + version check as the journal.
async fn load_snapshot(
    State(s): State<Arc<NodeState>>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: LoadReq = parse(&body)?;
    let mut slot = s.loader.lock();
    if let Some(l) = slot.as_ref() {
        if l.topic == req.topic {
            return Ok(Json(json!({"loading": req.topic, "already": true})));
        }
        // A new migration supersedes an aborted one's loader.
        tracing::info!(old = %l.topic, new = %req.topic, "replacing the snapshot loader");
        let _ = l.stop.send(true);
    }
    let shared = Arc::new(ApplyShared::default());
    let cfg = ApplyConfig {
        source: Source::Snapshot,
        kafka: s.kafka.clone(),
        topic: req.topic.clone(),
        dead_letter_topic: format!("{}.dlq", req.topic),
        poison: PoisonPolicy::DeadLetter,
        batch: s.apply_batch,
        linger: Duration::from_millis(2),
        apply_log: false,
        group_id: format!("northwest-load-{}", s.name),
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
    });
    Ok(Json(json!({"loading": req.topic})))
}
