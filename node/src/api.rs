//! The application HTTP API (see README "HTTP API"): get / put / delete /
//! transaction / scan over the entity store, with JSON errors.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use northwest_control::{ErrorBody, ErrorCode};
use northwest_store::{
    EngineError, KeyError, KeyPath, KeyRange, Namespace, Op, Store, StoreError, Version,
};
use serde::Deserialize;
use serde_json::json;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<Store>,
    pub max_value_bytes: usize,
}

/// An API error: status plus a JSON body `{"error": ..., "code": ...}`
/// (the control plane's [`ErrorBody`]).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: ErrorCode::BadRequest,
            message: message.into(),
        }
    }

    pub fn unavailable(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code,
            message: message.into(),
        }
    }
}

/// Longest error message sent: parser messages (serde's, axum's) quote the
/// input, and an error must never echo a large request back.
const MAX_ERROR_BYTES: usize = 400;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut message = self.message;
        if message.len() > MAX_ERROR_BYTES {
            let mut end = MAX_ERROR_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str("... (truncated)");
        }
        (
            self.status,
            Json(ErrorBody {
                code: self.code,
                error: message,
            }),
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let (status, code) = match &e {
            StoreError::Key(KeyError::BadNamespace(_)) => {
                (StatusCode::BAD_REQUEST, ErrorCode::BadNamespace)
            }
            StoreError::Key(_) => (StatusCode::BAD_REQUEST, ErrorCode::BadKey),
            StoreError::CrossGroup { .. } => (StatusCode::BAD_REQUEST, ErrorCode::CrossGroup),
            StoreError::DuplicateKey(_) => (StatusCode::BAD_REQUEST, ErrorCode::DuplicateKey),
            StoreError::VersionMismatch { .. } => {
                (StatusCode::PRECONDITION_FAILED, ErrorCode::VersionMismatch)
            }
            StoreError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::TooLarge),
            StoreError::OutboxFull(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::OutboxFull),
            StoreError::JournalTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::TooLarge)
            }
            StoreError::JournalPending { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::JournalPending)
            }
            StoreError::Coord(_) | StoreError::Engine(EngineError::Fenced(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Coordination)
            }
            StoreError::Engine(EngineError::Unavailable(_)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::EngineUnavailable,
            ),
            StoreError::Aborted(_) => (StatusCode::CONFLICT, ErrorCode::Aborted),
            StoreError::Engine(_) | StoreError::Injected(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal)
            }
        };
        Self {
            status,
            code,
            message: e.to_string(),
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/v1/ns/{ns}/e/{*key}",
            get(get_entity).put(put_entity).delete(delete_entity),
        )
        .route("/v1/ns/{ns}/txn", post(txn))
        .route("/v1/ns/{ns}/scan", get(scan))
        .fallback(|| async {
            ApiError {
                status: StatusCode::NOT_FOUND,
                code: ErrorCode::NotFound,
                message: "no such endpoint; see README".into(),
            }
        })
        .with_state(state)
}

fn parse_ns(ns: &str) -> ApiResult<Namespace> {
    Namespace::new(ns).map_err(|e| StoreError::Key(e).into())
}

fn parse_key(key: &str) -> ApiResult<KeyPath> {
    KeyPath::parse(key).map_err(|e| StoreError::Key(e).into())
}

/// `If-Match: "<version>"` (quotes optional); `"0"` means "must not exist".
fn if_match(headers: &HeaderMap) -> ApiResult<Option<Version>> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = v
        .to_str()
        .map_err(|_| ApiError::bad_request("If-Match is not ASCII"))?;
    let text = text.trim();
    // RFC 9110: If-Match compares strongly, so a weak tag can never match;
    // `*` ("any current version") is not offered: send the version read.
    if text.starts_with("W/") || text == "*" || text.contains(',') {
        return Err(ApiError::bad_request(format!(
            "If-Match {:?}: send one strong entity tag, the version as in ETag (e.g. \"42\"; \"0\" = must not exist); weak tags, lists and * are refused",
            &text[..text.len().min(64)]
        )));
    }
    text.trim_matches('"')
        .parse::<u64>()
        .map(|n| Some(Version(n)))
        .map_err(|_| {
            ApiError::bad_request(format!(
                "If-Match {:?}: expected a quoted version like \"42\"",
                &text[..text.len().min(64)]
            ))
        })
}

async fn read_body(body: Body, limit: usize) -> ApiResult<Bytes> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: ErrorCode::TooLarge,
            message: format!("request body exceeds the limit of {limit} bytes"),
        })
}

/// A path that does not decode (e.g. invalid UTF-8) as a JSON 400.
type PathArgs<T> = Result<Path<T>, PathRejection>;

fn path_args<T>(p: PathArgs<T>) -> ApiResult<T> {
    p.map(|Path(t)| t).map_err(|e| {
        let mut message = format!("malformed path: {e}");
        message.truncate(200);
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: ErrorCode::BadPath,
            message,
        }
    })
}

/// `If-None-Match` (RFC 9110, weak comparison): `*` or a list of entity
/// tags; true when the current version matches one.
fn none_match(headers: &HeaderMap, version: Version) -> bool {
    let Some(v) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let current = version.0.to_string();
    v.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/").trim_matches('"') == current)
}

async fn get_entity(
    State(s): State<ApiState>,
    path: PathArgs<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (ns, key) = path_args(path)?;
    let (ns, key) = (parse_ns(&ns)?, parse_key(&key)?);
    match s.store.get(&ns, &key)? {
        Some(e) if none_match(&headers, e.version) => Ok((
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, format!("\"{}\"", e.version))],
        )
            .into_response()),
        Some(e) => Ok(([(header::ETAG, format!("\"{}\"", e.version))], e.value).into_response()),
        None => Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: ErrorCode::NotFound,
            message: format!("{ns}/{key} does not exist"),
        }),
    }
}

async fn put_entity(
    State(s): State<ApiState>,
    path: PathArgs<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<serde_json::Value>> {
    let (ns, key) = path_args(path)?;
    let (ns, key) = (parse_ns(&ns)?, parse_key(&key)?);
    let if_version = if_match(&headers)?;
    let value = read_body(body, s.max_value_bytes).await?.to_vec();
    let v = s
        .store
        .run(
            &ns,
            &[Op::Put {
                key,
                value,
                if_version,
            }],
        )
        .await?;
    Ok(Json(json!({"version": v.0})))
}

async fn delete_entity(
    State(s): State<ApiState>,
    path: PathArgs<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    let (ns, key) = path_args(path)?;
    let (ns, key) = (parse_ns(&ns)?, parse_key(&key)?);
    let if_version = if_match(&headers)?;
    let v = s.store.run(&ns, &[Op::Delete { key, if_version }]).await?;
    Ok(Json(json!({"version": v.0})))
}

async fn txn(
    State(s): State<ApiState>,
    path: PathArgs<String>,
    body: Body,
) -> ApiResult<Json<serde_json::Value>> {
    let ns = parse_ns(&path_args(path)?)?;
    // base64 inflates values by 4/3; allow a few values' worth of JSON.
    let body = read_body(body, s.max_value_bytes.saturating_mul(8)).await?;
    let ops = parse_txn(&body, s.max_value_bytes)?;
    let v = s.store.run(&ns, &ops).await?;
    Ok(Json(json!({"version": v.0})))
}

/// A transaction body (`{"ops": [...]}`) as store operations: 400 for
/// anything malformed, 413 for a value over `max_value_bytes`.
fn parse_txn(body: &[u8], max_value_bytes: usize) -> Result<Vec<Op>, ApiError> {
    use northwest_store::wire::{self, WireError};
    wire::parse_txn(body, max_value_bytes).map_err(|e| match e {
        WireError::Store(e) => e.into(),
        e => ApiError::bad_request(e.to_string()),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanQuery {
    prefix: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<usize>,
}

async fn scan(
    State(s): State<ApiState>,
    path: PathArgs<String>,
    q: Result<Query<ScanQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let ns = parse_ns(&path_args(path)?)?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("bad scan query: {e}")))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 10_000 {
        return Err(ApiError::bad_request("limit must be 1..=10000"));
    }
    let bad = |e: northwest_store::KeyError| ApiError::bad_request(e.to_string());
    let mut range = KeyRange::prefix(&ns, q.prefix.as_deref().unwrap_or("")).map_err(bad)?;
    if q.start.is_some() || q.end.is_some() {
        range = range
            .intersect(&KeyRange::between(&ns, q.start.as_deref(), q.end.as_deref()).map_err(bad)?);
    }
    let items: Vec<_> = s
        .store
        .scan(&range, limit)?
        .into_iter()
        .map(|e| json!({"key": e.key.as_str(), "version": e.version.0, "value_b64": B64.encode(&e.value)}))
        .collect();
    Ok(Json(serde_json::Value::Array(items)))
}

/// The namespace of a data-API route (`/v1/ns/{ns}/e/...`, `/txn`, `/scan`,
/// `/digest`), matched segment by segment; `None` for every other path.
pub fn data_namespace(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/ns/")?;
    let (ns, route) = rest.split_once('/')?;
    let route = route.split('/').next().unwrap_or_default();
    (!ns.is_empty() && matches!(route, "e" | "txn" | "scan" | "digest")).then_some(ns)
}

#[cfg(test)]
mod tests {
    use super::data_namespace;

    #[test]
    fn routes_are_matched_not_searched() {
        assert_eq!(data_namespace("/v1/ns/app/e/Doc:1"), Some("app"));
        assert_eq!(data_namespace("/v1/ns/digests/e/Doc:1"), Some("digests"));
        assert_eq!(data_namespace("/v1/ns/app/e/Doc:1/digest:2"), Some("app"));
        assert_eq!(data_namespace("/v1/ns/app/txn"), Some("app"));
        assert_eq!(data_namespace("/v1/ns/app/digest"), Some("app"));
        assert_eq!(data_namespace("/v1/admin/status"), None);
        assert_eq!(data_namespace("/v1/ns//e/x"), None);
    }
}
