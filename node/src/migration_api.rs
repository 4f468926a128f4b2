//! Admin endpoints the migration orchestrator drives: fence / unfence, proxy,
//! checkpoint (n1) and snapshot loading (n2).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use northwest_control::api::{
    path, CheckpointRequest, CheckpointResponse, DropCheckpointResponse, FenceRequest,
    FenceResponse, HotKeysResponse, NamespaceRequest, PromoteRequest, PromoteResponse,
    ProxyRequest, ProxyResponse, UnfenceResponse, UnproxyRequest, WarmRequest, WarmResponse,
};
use northwest_control::ErrorCode;
use serde::Deserialize;

use crate::api::ApiError;
use crate::cutover::CutoverError;
use crate::state::NodeState;

use loaders::{load_snapshot, reverse_apply};

pub use loaders::start_reverse_apply;

mod loaders;

pub fn router(state: Arc<NodeState>) -> Router {
    let shared = state.shared;
    let r = Router::new()
        .route(path::FENCE, post(fence))
        .route(path::UNFENCE, post(unfence))
        .route(path::PROXY, post(proxy).delete(unproxy))
        .route(path::PROMOTE, post(promote).delete(demote))
        .route(path::CHECKPOINT, post(checkpoint))
        .route("/v1/admin/checkpoint/{name}", delete(drop_checkpoint))
        .route(path::LOAD_SNAPSHOT, post(load_snapshot))
        .route(path::LOADER_RATE, post(loaders::loader_rate))
        .route("/v1/admin/hot-keys/{ns}", get(hot_keys))
        .route(path::REVERSE_APPLY, post(reverse_apply))
        .route(path::WARM, post(warm))
        .with_state(state);
    if shared {
        r.route_layer(axum::middleware::from_fn(refuse_shared))
    } else {
        r
    }
}

/// A migration's calls act on the process that receives them: with several
/// processes serving the node, a fence or a proxy on one would leave the
/// others taking writes.
async fn refuse_shared(
    _req: axum::extract::Request,
    _next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    ApiError {
        status: StatusCode::CONFLICT,
        code: ErrorCode::BadRequest,
        message: "this node's processes share its PostgreSQL schema (store.postgres.shared): \
                  migration calls (fences, proxies, promotion, loaders) would act on one process \
                  only, and a shared deployment cannot be migrated yet"
            .into(),
    }
    .into_response()
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("malformed request: {e}")))
}

fn check_ns(ns: &str) -> Result<(), ApiError> {
    northwest_store::Namespace::new(ns)
        .map(|_| ())
        .map_err(|e| ApiError::bad_request(format!("namespace: {e}")))
}

/// Fences one namespace's writes; returns the fence generation the proxy
/// step must present.
async fn fence(
    State(s): State<Arc<NodeState>>,
    body: axum::body::Bytes,
) -> Result<Json<FenceResponse>, ApiError> {
    let req: FenceRequest = parse(&body)?;
    check_ns(&req.namespace)?;
    if req.max_ms == 0 || req.max_ms > 120_000 {
        return Err(ApiError::bad_request("max_ms must be 1..=120000"));
    }
    let gen = s
        .gate
        .fence(&req.namespace, Duration::from_millis(req.max_ms))
        .await;
    Ok(Json(FenceResponse {
        fenced: true,
        namespace: req.namespace,
        fence: gen,
        outbox_pending: s.store.outbox().len(),
        // Every entry of the fenced namespace is below this sequence.
        outbox_next: s.store.outbox().next_seq(),
    }))
}

async fn unfence(
    State(s): State<Arc<NodeState>>,
    body: axum::body::Bytes,
) -> Result<Json<UnfenceResponse>, ApiError> {
    let req: NamespaceRequest = parse(&body)?;
    check_ns(&req.namespace)?;
    let lifted = s.gate.unfence(&req.namespace).await;
    Ok(Json(UnfenceResponse {
        fenced: false,
        namespace: req.namespace,
        lifted,
    }))
}

/// A proxy target is a bare base URL: `http(s)://host:port`, https only
/// when the node has a peer CA, no credentials (they would show in status
/// and logs, and widen what a forwarded caller presents), no path.
fn check_target(target: &str, https_only: bool) -> Result<(), ApiError> {
    let url = reqwest::Url::parse(target)
        .map_err(|e| ApiError::bad_request(format!("target is not a URL: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if !https_only => {}
        "http" => {
            return Err(ApiError::bad_request(
                "target must be an https:// base URL: this node verifies its peers with \
                 http.tls_ca_file and never forwards data in clear",
            ))
        }
        _ => {
            return Err(ApiError::bad_request(
                "target must be an http:// or https:// base URL",
            ))
        }
    }
    let bare = url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none()
        && matches!(url.path(), "" | "/")
        && url.host().is_some();
    if !bare || target != target.trim() {
        return Err(ApiError::bad_request(
            "target must be a bare base URL, scheme://host:port, with no credentials, path, \
             query or fragment",
        ));
    }
    Ok(())
}

/// Turns this node into a data proxy to `target` for one namespace (which
/// it promotes first) and lifts its fence, so the writes that waited are
/// forwarded, not failed.
async fn proxy(
    State(s): State<Arc<NodeState>>,
    body: axum::body::Bytes,
) -> Result<Json<ProxyResponse>, ApiError> {
    let req: ProxyRequest = parse(&body)?;
    check_ns(&req.namespace)?;
    check_target(&req.target, s.gate.https_only())?;
    if let Some(from) = &req.retarget_from {
        return retarget(&s, &req.namespace, from, &req.target).await;
    }
    // Spawned: a caller that hangs up must not cut the cutover off midway
    // (with its fence held, its proxy recorded, the target promoted).
    let (st, ns, target) = (s.clone(), req.namespace.clone(), req.target.clone());
    let cut = tokio::spawn(async move {
        let cut = st.gate.cut_over(&ns, req.fence, &target).await;
        // The new primary journals the namespace's writes from now on:
        // apply them here, so a rollback finds this node up to date.
        if cut.is_ok() && st.relay.is_some() {
            start_reverse_apply(&st);
        }
        cut
    })
    .await
    .map_err(|e| ApiError::unavailable(ErrorCode::Cutover, format!("cutover task failed: {e}")))?;
    cut.map_err(|e| {
        let (status, code) = match &e {
            CutoverError::FenceExpired(_) => (StatusCode::CONFLICT, ErrorCode::FenceExpired),
            CutoverError::Record(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Coordination),
            CutoverError::Promote(_) => (StatusCode::BAD_GATEWAY, ErrorCode::PromoteFailed),
            CutoverError::Unknown { .. } => (StatusCode::BAD_GATEWAY, ErrorCode::PromoteUnknown),
        };
        ApiError {
            status,
            code,
            message: e.to_string(),
        }
    })?;
    tracing::info!(namespace = %req.namespace, target = %req.target, "namespace is now proxied");
    Ok(Json(ProxyResponse {
        namespace: req.namespace,
        proxy: Some(req.target),
    }))
}

/// A node forwarding `ns` to `from`, the namespace's old primary, forwards
/// it to `to` (its primary now) instead.
async fn retarget(
    s: &NodeState,
    ns: &str,
    from: &str,
    to: &str,
) -> Result<Json<ProxyResponse>, ApiError> {
    match s.gate.proxy(ns) {
        Some(t) if t == to => {}
        Some(t) if t == from => {
            s.gate
                .set_proxy(ns, Some(to.to_string()))
                .await
                .map_err(|e| ApiError::unavailable(ErrorCode::Coordination, e.to_string()))?;
            tracing::info!(namespace = ns, %from, %to, "namespace moved on: forwarding it to its new primary");
        }
        other => {
            return Err(ApiError {
                status: StatusCode::CONFLICT,
                code: ErrorCode::BadRequest,
                message: format!(
                    "this node forwards namespace {ns} to {other:?}, not to {from}: nothing to \
                     retarget"
                ),
            })
        }
    }
    Ok(Json(ProxyResponse {
        namespace: ns.to_string(),
        proxy: Some(to.to_string()),
    }))
}

async fn unproxy(
    State(s): State<Arc<NodeState>>,
    body: axum::body::Bytes,
) -> Result<Json<ProxyResponse>, ApiError> {
    let req: UnproxyRequest = parse(&body)?;
    check_ns(&req.namespace)?;
    s.gate
        .set_proxy(&req.namespace, None)
        .await
        .map_err(|e| ApiError::unavailable(ErrorCode::Coordination, e.to_string()))?;
    if !req.keep_fence {
        s.gate.unfence(&req.namespace).await;
    }
    Ok(Json(ProxyResponse {
        namespace: req.namespace,
        proxy: None,
    }))
}

/// Lets a replica take client writes for one namespace (the cutover does
/// this before n1 forwards to it; an operator may do it on purpose).
async fn promote(
    State(s): State<Arc<NodeState>>,
    body: axum::body::Bytes,
) -> Result<Json<PromoteResponse>, ApiError> {
    set_promoted(s, &body, true).await
}

async fn demote(
    State(s): State<Arc<NodeState>>,
    body: axum::body::Bytes,
) -> Result<Json<PromoteResponse>, ApiError> {
    set_promoted(s, &body, false).await
}

async fn set_promoted(
    s: Arc<NodeState>,
    body: &[u8],
    on: bool,
) -> Result<Json<PromoteResponse>, ApiError> {
    use crate::cutover::{PromoteError, Promotion};
    let req: PromoteRequest = parse(body)?;
    check_ns(&req.namespace)?;
    let ns = northwest_store::Namespace::new(&req.namespace)
        .map_err(|e| ApiError::bad_request(format!("namespace: {e}")))?;
    if on && req.confirm && req.attempt.is_some() {
        return Err(ApiError::bad_request("confirm takes no attempt"));
    }
    // Spawned: a caller that hangs up must not leave the record and the
    // node's state apart.
    let s2 = s.clone();
    let name = req.namespace.clone();
    let done = tokio::spawn(async move {
        let change = match (on, req.attempt.as_deref()) {
            (false, a) => Promotion::Demote(a),
            (true, Some(a)) => Promotion::Attempt(a),
            (true, None) if req.confirm => Promotion::Confirm,
            (true, None) => Promotion::Operator { force: req.force },
        };
        // A target journals a promoted namespace's client writes (for the
        // old primary) from before it takes the first one.
        let reverse = s2.reverse_relay.is_some();
        let store = s2.store.clone();
        s2.gate
            .promote(&name, change, |on| {
                if reverse {
                    store.set_journaled(&ns, on);
                }
            })
            .await
    })
    .await
    .map_err(|e| {
        ApiError::unavailable(
            ErrorCode::Coordination,
            format!("promotion task failed: {e}"),
        )
    })?;
    done.map_err(|e| match e {
        PromoteError::Record(e) => ApiError::unavailable(ErrorCode::Coordination, e.to_string()),
        e @ PromoteError::Cancelled(_) => ApiError {
            status: StatusCode::CONFLICT,
            code: ErrorCode::PromoteCancelled,
            message: e.to_string(),
        },
        e @ PromoteError::NotPromoted(_) => ApiError {
            status: StatusCode::CONFLICT,
            code: ErrorCode::NotPromoted,
            message: e.to_string(),
        },
        e @ PromoteError::Forwards { .. } => ApiError {
            status: StatusCode::CONFLICT,
            code: ErrorCode::Forwards,
            message: e.to_string(),
        },
    })?;
    if on {
        tracing::warn!(namespace = %req.namespace, "replica promoted: it now takes client writes for this namespace");
    }
    Ok(Json(PromoteResponse {
        namespace: req.namespace,
        promoted: on,
    }))
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
) -> Result<Json<CheckpointResponse>, ApiError> {
    let req: CheckpointRequest = parse(&body)?;
    let dir = checkpoint_dir(&s, &req.name)?;
    if let Some(view) = &s.pg_view {
        // The snapshotter takes its own consistent view of the tables.
        return Ok(Json(CheckpointResponse {
            dir: String::new(),
            postgres: Some(view.clone()),
        }));
    }
    if !dir.join("CURRENT").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        let (store, d) = (s.store.clone(), dir.clone());
        tokio::task::spawn_blocking(move || store.engine().checkpoint(&d))
            .await
            .map_err(|e| ApiError::bad_request(e.to_string()))?
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    Ok(Json(CheckpointResponse {
        dir: dir.display().to_string(),
        postgres: None,
    }))
}

async fn drop_checkpoint(
    State(s): State<Arc<NodeState>>,
    Path(name): Path<String>,
) -> Result<Json<DropCheckpointResponse>, ApiError> {
    let dir = checkpoint_dir(&s, &name)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Json(DropCheckpointResponse {
        removed: dir.display().to_string(),
    }))
}

/// Keys per warm-up request, and the most a hot-key list returns.
const WARM_BATCH: usize = 10_000;
const HOT_KEYS_MAX: usize = 200_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HotKeysQuery {
    #[serde(default = "default_hot_keys")]
    limit: usize,
}

fn default_hot_keys() -> usize {
    WARM_BATCH
}

/// The keys of a namespace in this node's read cache: what a migration
/// target reads into its own cache before the switch (copy-on-read).
async fn hot_keys(
    State(s): State<Arc<NodeState>>,
    Path(ns): Path<String>,
    q: Result<axum::extract::Query<HotKeysQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<HotKeysResponse>, ApiError> {
    let q = q.map_err(|e| ApiError::bad_request(format!("malformed query: {e}")))?;
    let ns = northwest_store::Namespace::new(&ns)
        .map_err(|e| ApiError::bad_request(format!("namespace: {e}")))?;
    if q.limit > HOT_KEYS_MAX {
        return Err(ApiError::bad_request(format!(
            "limit {}: at most {HOT_KEYS_MAX}",
            q.limit
        )));
    }
    let store = s.store.clone();
    let keys = tokio::task::spawn_blocking(move || store.hot_keys(&ns, q.limit))
        .await
        .map_err(|e| ApiError::unavailable(ErrorCode::Internal, e.to_string()))?;
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    Ok(Json(HotKeysResponse {
        keys,
        cache: s.store.cache_stats(),
    }))
}

/// Reads the given keys into this node's read cache.
async fn warm(
    State(s): State<Arc<NodeState>>,
    body: axum::body::Bytes,
) -> Result<Json<WarmResponse>, ApiError> {
    let req: WarmRequest = parse(&body)?;
    let ns = northwest_store::Namespace::new(&req.namespace)
        .map_err(|e| ApiError::bad_request(format!("namespace: {e}")))?;
    if req.keys.len() > WARM_BATCH {
        return Err(ApiError::bad_request(format!(
            "{} keys: at most {WARM_BATCH} per request",
            req.keys.len()
        )));
    }
    let keys = req
        .keys
        .iter()
        .map(|k| northwest_store::KeyPath::parse(k))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::bad_request(format!("key: {e}")))?;
    if s.store.cache_stats().is_none() {
        return Ok(Json(WarmResponse {
            found: 0,
            cache: false,
        }));
    }
    let store = s.store.clone();
    let found = tokio::task::spawn_blocking(move || store.warm(&ns, &keys))
        .await
        .map_err(|e| ApiError::unavailable(ErrorCode::Internal, e.to_string()))??;
    Ok(Json(WarmResponse { found, cache: true }))
}
