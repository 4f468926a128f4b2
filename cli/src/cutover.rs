//! Cutover support on a node: the write fence (new writes wait, in-flight ones
//! finish), the data proxy that forwards every API request to the new primary,
//! and the routing record in ZooKeeper that nodes honour at start.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::{OwnedRwLockWriteGuard, RwLock};

/// The fence and proxy state of a node's application API.
pub struct Gate {
    lock: Arc<RwLock<()>>,
    fence: tokio::sync::Mutex<Option<(u64, OwnedRwLockWriteGuard<()>)>>,
    fence_gen: Mutex<u64>,
    proxy: Mutex<Option<String>>,
    client: reqwest::Client,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            lock: Arc::new(RwLock::new(())),
            fence: tokio::sync::Mutex::new(None),
            fence_gen: Mutex::new(0),
            proxy: Mutex::new(None),
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .expect("static client config"),
        }
    }
}

impl Gate {
    /// Blocks new writes and waits for in-flight ones; lifts itself after
    /// `max` in case the orchestrator dies holding it.
    pub async fn fence(self: &Arc<Self>, max: Duration) {
        let mut slot = self.fence.lock().await;
        if slot.is_some() {
            return;
        }
        let guard = self.lock.clone().write_owned().await;
        let gen = {
            let mut g = self.fence_gen.lock();
            *g += 1;
            *g
        };
        *slot = Some((gen, guard));
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(max).await;
            let mut slot = me.fence.lock().await;
            if slot.as_ref().is_some_and(|(g, _)| *g == gen) {
                tracing::warn!("write fence held longer than {max:?}; lifting it");
                *slot = None;
            }
        });
    }

    pub async fn unfence(&self) {
        *self.fence.lock().await = None;
    }

    pub async fn is_fenced(&self) -> bool {
        self.fence.lock().await.is_some()
    }

    pub fn set_proxy(&self, target: Option<String>) {
        *self.proxy.lock() = target;
    }

    pub fn proxy(&self) -> Option<String> {
        self.proxy.lock().clone()
    }

    async fn forward(&self, target: &str, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let url = format!("{}{path}", target.trim_end_matches('/'));
        let body = match axum::body::to_bytes(body, 64 << 20).await {
            Ok(b) => b,
            Err(e) => {
                return (StatusCode::BAD_REQUEST, format!("reading body: {e}")).into_response()
            }
        };
        let mut rb = self.client.request(parts.method.clone(), &url).body(body);
        for (name, value) in parts.headers.iter() {
            if name != "host" && name != "content-length" {
                rb = rb.header(name, value);
            }
        }
        match rb.send().await {
            Ok(r) => {
                let mut resp = Response::builder().status(r.status());
                for (name, value) in r.headers() {
                    if name != "content-length" && name != "transfer-encoding" {
                        resp = resp.header(name, value);
                    }
                }
                let bytes = r.bytes().await.unwrap_or_default();
                resp.body(Body::from(bytes)).unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
            }
            Err(e) => (
                StatusCode::BAD_GATEWAY,
                axum::Json(json!({"error": format!("proxy to new primary {target} failed: {e}"), "code": "proxy"})),
            )
                .into_response(),
        }
    }
}

fn is_write(m: &Method) -> bool {
    m == Method::PUT || m == Method::DELETE || m == Method::POST
}

/// Application-API middleware: writes pass the fence; everything is
/// forwarded once the node is a proxy.
pub async fn gate_layer(State(gate): State<Arc<Gate>>, req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with("/v1/ns/") || req.uri().path().contains("/digest") {
        return next.run(req).await;
    }
    if is_write(req.method()) {
        let permit = gate.lock.clone().read_owned().await;
        if let Some(target) = gate.proxy() {
            drop(permit);
            return gate.forward(&target, req).await;
        }
        let resp = next.run(req).await;
        drop(permit);
        return resp;
    }
    match gate.proxy() {
        Some(target) => gate.forward(&target, req).await,
        None => next.run(req).await,
    }
}
