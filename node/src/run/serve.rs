//! The HTTP side: its security setup, the routes behind the cutover gate
//! and the request guards, served until the node stops.

use std::future::Future;
use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::IntoResponse;
use northwest_control::client::read_ca_bundle;
use northwest_control::ErrorCode;

use crate::api::{router, ApiState};
use crate::config::NodeConfig;
use crate::state::NodeState;

/// The HTTP side's security, read before anything starts: tokens, the
/// server's certificate, the CA peers' certificates are checked against.
pub(super) struct HttpSetup {
    pub(super) auth: Arc<crate::auth::Auth>,
    pub(super) tls: Option<Arc<rustls::ServerConfig>>,
    pub(super) peer_ca: Vec<reqwest::Certificate>,
}

impl HttpSetup {
    pub(super) fn load(cfg: &NodeConfig) -> anyhow::Result<Self> {
        let auth = Arc::new(crate::auth::Auth::load(&cfg.http).map_err(anyhow::Error::msg)?);
        let tls = match (&cfg.http.tls_cert_file, &cfg.http.tls_key_file) {
            (Some(cert), Some(key)) => {
                Some(crate::tls::server_config(cert, key).map_err(anyhow::Error::msg)?)
            }
            _ => None,
        };
        let peer_ca = match &cfg.http.tls_ca_file {
            Some(p) => read_ca_bundle(p, "http.tls_ca_file").map_err(anyhow::Error::msg)?,
            None => Vec::new(),
        };
        if tls.is_none() && !cfg.http.listen.ip().is_loopback() {
            tracing::warn!(
                listen = %cfg.http.listen,
                "serving plain HTTP to other hosts: tokens and data cross the network in clear; \
                 set http.tls_cert_file and http.tls_key_file (or terminate TLS in front of the node)"
            );
        }
        if cfg.http.admin_open && cfg.http.admin_token_file.is_none() {
            tracing::warn!(
                listen = %cfg.http.listen,
                "http.admin_open = true: the admin API (fence, promote, offsets, replay) takes \
                 any caller that reaches this listener, without a token; set \
                 http.admin_token_file to close it"
            );
        }
        Ok(Self { auth, tls, peer_ca })
    }
}

/// Serves `app` on `listener` (over TLS when configured) until `stop`.
pub(super) fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    Ok(match tls {
        Some(tls) => {
            let listener = crate::tls::TlsListener::new(listener, tls)?;
            let server = axum::serve(listener, app).with_graceful_shutdown(stop);
            tokio::spawn(async move { server.await })
        }
        None => {
            let server = axum::serve(listener, app).with_graceful_shutdown(stop);
            tokio::spawn(async move { server.await })
        }
    })
}

/// The data API and digest behind the cutover gate, the admin and migration APIs, and
/// request metrics around all of them.
pub(super) fn app(
    cfg: &NodeConfig,
    state: &Arc<NodeState>,
    auth: Arc<crate::auth::Auth>,
) -> axum::Router {
    let m = state.metrics.clone();
    router(ApiState {
        store: state.store.clone(),
        max_value_bytes: cfg.http.max_value_bytes,
    })
    // The digest (an admin route) sits behind the gate too: a proxied
    // namespace's digest is the target's, never n1's stale local copy.
    .merge(crate::admin::router(state.clone()))
    .layer(axum::middleware::from_fn_with_state(
        state.gate.clone(),
        crate::cutover::gate_layer,
    ))
    .merge(crate::migration_api::router(state.clone()))
    .method_not_allowed_fallback(|| async {
        crate::api::ApiError {
            status: axum::http::StatusCode::METHOD_NOT_ALLOWED,
            code: ErrorCode::MethodNotAllowed,
            message: "method not allowed on this path; the Allow header lists the methods".into(),
        }
    })
    // Before the gate: a proxied namespace's caller is checked here too.
    .layer(axum::middleware::from_fn_with_state(
        auth,
        crate::auth::layer,
    ))
    .layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let m = m.clone();
            async move {
                let method = req.method().clone();
                let route = req
                    .extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map_or("unmatched", |p| p.as_str())
                    .to_string();
                let started = std::time::Instant::now();
                let resp = match uri_too_long(&req).or_else(|| dot_segments(&req)) {
                    Some(e) => e.into_response(),
                    None => {
                        // Tests slow the data API down with this point.
                        if route.starts_with("/v1/ns/") {
                            northwest_store::failpoint::hit("http::data_request");
                        }
                        next.run(req).await
                    }
                };
                let secs = started.elapsed().as_secs_f64();
                m.http_request(method.as_str(), &route, resp.status().as_u16(), secs);
                resp
            }
        },
    ))
}

/// Longest request target served. Keys and namespaces are far shorter; hyper
/// itself answers URIs over 64 KiB with a bare 414 before any handler runs.
pub const MAX_URI_BYTES: usize = 8 * 1024;

pub(super) fn uri_too_long(req: &Request) -> Option<crate::api::ApiError> {
    let len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    (len > MAX_URI_BYTES).then(|| crate::api::ApiError {
        status: axum::http::StatusCode::URI_TOO_LONG,
        code: ErrorCode::UriTooLong,
        message: format!("request URI of {len} bytes; the limit is {MAX_URI_BYTES}"),
    })
}

/// A path with `.` or `..` segments (also percent-encoded) or a backslash:
/// neither hyper nor axum normalises them, so the auth layer and the router
/// would judge one path while a URL parser further on (the proxy's client)
/// resolves another (`/v1/ns/app/e/../../../admin/promote`). No valid key,
/// namespace or route has such a segment.
pub(super) fn dot_segments(req: &Request) -> Option<crate::api::ApiError> {
    let path = req.uri().path();
    let bad = path.contains('\\')
        || path.split('/').any(|seg| {
            let s = seg.to_ascii_lowercase().replace("%2e", ".");
            s == "." || s == ".."
        });
    bad.then(|| crate::api::ApiError {
        status: axum::http::StatusCode::BAD_REQUEST,
        code: ErrorCode::BadPath,
        message: "the path has '.' or '..' segments or a backslash; send it normalised".into(),
    })
}
