//! Forwarding: the gate layer in front of the data API, and the proxy that
//! sends a namespace's requests to its new primary (one hop at most).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use northwest_control::{ErrorBody, ErrorCode};

use super::{peer_error, Gate};
use crate::api::data_namespace;

/// How many times a request was forwarded between nodes. A request
/// forwarded to a node that forwards it back (in flight across a rollback's
/// switch) is served there; one that would bounce again is refused (both
/// nodes forwarding the namespace would otherwise bounce it until it timed
/// out).
const FORWARDED: &str = "x-northwest-forwarded";

const MAX_HOPS: u32 = 2;

fn hops(req: &Request) -> u32 {
    req.headers()
        .get(FORWARDED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// How long a forwarded request may take before the client gets a 504.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) fn forward_client(roots: Vec<reqwest::Certificate>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(FORWARD_TIMEOUT)
        .https_only(!roots.is_empty())
        // A redirect would resend a client's write elsewhere; an
        // environment proxy would route peer traffic through a third host.
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .tls_built_in_root_certs(roots.is_empty());
    for c in roots {
        b = b.add_root_certificate(c);
    }
    b.build().expect("static client config")
}

fn upstream_failed(target: &str, e: &reqwest::Error) -> Response {
    let status = if e.is_timeout() {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::BAD_GATEWAY
    };
    // A request that could not be built (a scheme the node refuses) fails
    // the same way every time.
    let next = if e.is_builder() {
        "the node's operator must fix the proxy target (see /readyz)"
    } else {
        "retry the request"
    };
    proxy_error(
        status,
        format!(
            "proxy to the namespace's new primary {target} failed: {}; {next}",
            peer_error(e)
        ),
    )
}

fn error_body(code: ErrorCode, error: String) -> axum::Json<ErrorBody> {
    axum::Json(ErrorBody { code, error })
}

fn proxy_error(status: StatusCode, message: String) -> Response {
    (status, error_body(ErrorCode::Proxy, message)).into_response()
}

fn is_write(m: &Method) -> bool {
    m == Method::PUT || m == Method::DELETE || m == Method::POST
}

/// Application-API middleware: writes to a namespace pass its fence; every
/// request of a proxied namespace is forwarded.
pub async fn gate_layer(State(gate): State<Arc<Gate>>, req: Request, next: Next) -> Response {
    let Some(ns) = data_namespace(req.uri().path()).map(str::to_string) else {
        return next.run(req).await;
    };
    if let Some(why) = gate.retired.lock().clone() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            error_body(ErrorCode::NameTaken, why),
        )
            .into_response();
    }
    // The handlers see the percent-decoded namespace: an encoded one would
    // be gated under another name. Valid namespaces never need encoding.
    if ns.contains('%') {
        return (
            StatusCode::BAD_REQUEST,
            error_body(
                ErrorCode::BadNamespace,
                "namespace must be written unencoded ([A-Za-z0-9_.-])".into(),
            ),
        )
            .into_response();
    }
    // An invalid namespace is the handler's 400; it must not get a gate
    // entry of its own (one per distinct string sent would never be freed).
    if northwest_store::key::Namespace::new(&ns).is_err() {
        return next.run(req).await;
    }
    let hops_in = hops(&req);
    if is_write(req.method()) {
        // Refused before the namespace gets a gate entry (and metric series):
        // writes to made-up namespaces on a replica must not grow them.
        if gate.proxy(&ns).is_none() {
            if let Some(why) = gate.replica_refusal(&ns, hops_in) {
                return (StatusCode::CONFLICT, error_body(ErrorCode::Replica, why)).into_response();
            }
        }
        let g = gate.of(&ns);
        let permit = g.lock.clone().read_owned().await;
        if let Some(target) = gate
            .proxy(&ns)
            .filter(|_| !gate.serves_promoted(&ns, hops_in))
        {
            drop(permit);
            if hops_in >= MAX_HOPS {
                return forward_loop(&ns, &target);
            }
            return gate.forward(&target, req).await;
        }
        if let Some(why) = gate.replica_refusal(&ns, hops_in) {
            return (StatusCode::CONFLICT, error_body(ErrorCode::Replica, why)).into_response();
        }
        let resp = next.run(req).await;
        drop(permit);
        return resp;
    }
    match gate.proxy(&ns) {
        Some(_) if local_digest(&req, &ns) => next.run(req).await,
        Some(_) if gate.serves_promoted(&ns, hops_in) => next.run(req).await,
        // Forwarded here by a node that forwards the namespace, while this
        // one does too: a switch is under way. Wait out this node's fence
        // (the switch holds it), then decide.
        Some(_) if hops(&req) >= 1 => {
            drop(gate.of(&ns).lock.clone().read_owned().await);
            match gate.proxy(&ns) {
                None => next.run(req).await,
                Some(target) if hops(&req) >= MAX_HOPS => forward_loop(&ns, &target),
                Some(target) => gate.forward(&target, req).await,
            }
        }
        Some(target) => gate.forward(&target, req).await,
        None => next.run(req).await,
    }
}

/// A request another node forwarded here, for a namespace this node
/// forwards too.
fn forward_loop(ns: &str, target: &str) -> Response {
    tracing::warn!(namespace = ns, %target, "a request forwarded twice would be forwarded again: both nodes forward this namespace");
    proxy_error(
        StatusCode::LOOP_DETECTED,
        format!(
            "namespace {ns} is forwarded by this node to {target} and by the node that sent \
             this here: a rollback or cutover stopped midway; run `northwest migrate --rollback` \
             (or the migration) again to finish it"
        ),
    )
}

/// The namespace digest itself (`GET /v1/ns/{ns}/digest?local=true`, an
/// admin read) asking for this node's own copy.
fn local_digest(req: &Request, ns: &str) -> bool {
    req.method() == Method::GET
        && req.uri().path() == format!("/v1/ns/{ns}/digest")
        && req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "local=true"))
}

impl Gate {
    async fn forward(&self, target: &str, req: Request) -> Response {
        let hops = hops(&req) + 1;
        let (parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let url = format!("{}{path}", target.trim_end_matches('/'));
        // The URL parser resolves dot segments; the node refuses paths with
        // them before any layer judges the request (`run::serve::dot_segments`), so
        // what is forwarded is what was authorised.
        let body = match axum::body::to_bytes(body, 64 << 20).await {
            Ok(b) => b,
            Err(e) => return proxy_error(StatusCode::BAD_REQUEST, format!("reading body: {e}")),
        };
        let mut rb = self
            .client
            .request(parts.method.clone(), &url)
            .header(FORWARDED, hops.to_string())
            .body(body);
        for (name, value) in parts.headers.iter() {
            // Origin was judged here (auth::browser_guard); n2 would see
            // n1's origin as foreign.
            if name != "host" && name != "content-length" && name != "origin" && name != FORWARDED {
                rb = rb.header(name, value);
            }
        }
        let r = match rb.send().await {
            Ok(r) => r,
            Err(e) => return upstream_failed(target, &e),
        };
        let mut resp = Response::builder().status(r.status());
        for (name, value) in r.headers() {
            if name != "content-length" && name != "transfer-encoding" {
                resp = resp.header(name, value);
            }
        }
        // A body cut short is an upstream failure, never an empty 200.
        match r.bytes().await {
            Ok(bytes) => resp.body(Body::from(bytes)).unwrap_or_else(|e| {
                proxy_error(
                    StatusCode::BAD_GATEWAY,
                    format!("bad upstream response: {e}"),
                )
            }),
            Err(e) => upstream_failed(target, &e),
        }
    }
}
