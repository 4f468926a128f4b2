//! Namespace digests: `GET /v1/ns/{ns}/digest` reads the store as it is
//! now; a digest job (`POST /v1/admin/digest-jobs`) reads a snapshot taken
//! before it answers, in the background, so whoever holds the namespace's
//! writes for a comparison holds them only until the snapshot is taken.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use northwest_control::api::{DigestJob, DigestJobRequest, DigestResponse, KindDigest};
use northwest_control::ErrorCode;
use northwest_store::digest::{digest_counting, Digest};
use northwest_store::store::now_ms_pub;
use northwest_store::{KeyRange, Namespace};
use serde::Deserialize;

use crate::api::ApiError;
use crate::digest_jobs::{Job, KEEP_FINISHED_MS, MAX_RUNNING};
use crate::state::NodeState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RangeQuery {
    prefix: Option<String>,
    start: Option<String>,
    end: Option<String>,
    /// This node's own copy even while it forwards the namespace (the
    /// gate reads it; a rollback compares both nodes' copies).
    #[allow(dead_code)]
    local: Option<bool>,
}

pub(super) async fn digest(
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
    Ok(Json(response(&ns, &d)))
}

fn response(ns: &Namespace, d: &Digest) -> DigestResponse {
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
    DigestResponse {
        namespace: ns.as_str().to_string(),
        count: d.total.count,
        digest: d.total.hex(),
        kinds,
    }
}

/// Takes a snapshot of the store, answers, and digests the namespace's own
/// copy (never the node it forwards to) from the snapshot in the background.
pub(super) async fn start_job(
    State(s): State<Arc<NodeState>>,
    req: Result<Json<DigestJobRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<DigestJob>, ApiError> {
    let Json(req) = req.map_err(|e| ApiError::bad_request(format!("bad digest job: {e}")))?;
    let ns = Namespace::new(&req.namespace).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let jobs = &s.digest_jobs;
    let id = format!(
        "{}-{}-{}",
        std::process::id(),
        now_ms_pub(),
        jobs.next.fetch_add(1, Ordering::Relaxed)
    );
    let scanned = Arc::new(AtomicU64::new(0));
    let job = Job {
        namespace: ns.to_string(),
        started: Instant::now(),
        started_at_ms: now_ms_pub(),
        scanned: scanned.clone(),
        finished: None,
    };
    let view = job.view(&id);
    {
        let mut all = jobs.jobs.lock();
        all.retain(|_, j| {
            j.finished
                .as_ref()
                .is_none_or(|(at, _)| at.elapsed().as_millis() < u128::from(KEEP_FINISHED_MS))
        });
        let running = all.values().filter(|j| j.finished.is_none()).count();
        if running >= MAX_RUNNING {
            return Err(ApiError::unavailable(
                ErrorCode::NotReady,
                format!(
                    "{running} digest jobs are running on this node (at most {MAX_RUNNING}); \
                     wait for one to finish and try again"
                ),
            ));
        }
        all.insert(id.clone(), job);
    }
    // The snapshot is the point the digest stands at: the answer waits for
    // it, so a caller that held writes until now compares that point.
    let (taken_tx, taken_rx) = tokio::sync::oneshot::channel::<()>();
    let state = s.clone();
    let job_id = id.clone();
    tokio::task::spawn_blocking(move || run(&state, &ns, &job_id, &scanned, taken_tx));
    if taken_rx.await.is_err() {
        let why = s
            .digest_jobs
            .jobs
            .lock()
            .get(&id)
            .and_then(|j| j.finished.as_ref().and_then(|(_, r)| r.clone().err()))
            .unwrap_or_else(|| "the digest task ended before its snapshot".into());
        return Err(ApiError::unavailable(ErrorCode::NotReady, why));
    }
    Ok(Json(view))
}

pub(super) async fn job(
    State(s): State<Arc<NodeState>>,
    Path(id): Path<String>,
) -> Result<Json<DigestJob>, ApiError> {
    match s.digest_jobs.jobs.lock().get(&id) {
        Some(j) => Ok(Json(j.view(&id))),
        None => Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: ErrorCode::NotFound,
            message: format!(
                "no digest job {id} on this node: it restarted since, or the job finished more \
                 than {} min ago; start the comparison again",
                KEEP_FINISHED_MS / 60_000
            ),
        }),
    }
}

/// Digests `ns` from a snapshot, saying `taken` once it holds one, and
/// records the outcome in job `job_id`.
fn run(
    state: &NodeState,
    ns: &Namespace,
    job_id: &str,
    scanned: &AtomicU64,
    taken_tx: tokio::sync::oneshot::Sender<()>,
) {
    let range = KeyRange::namespace(ns);
    let mut taken = Some(taken_tx);
    let mut digest = None;
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        state.store.engine().with_snapshot(&mut |reader| {
            if let Some(t) = taken.take() {
                let _ = t.send(());
            }
            // A slow digest for tests (`digest::job=delay:MS`): writes
            // after the answer must not reach it.
            let _ = northwest_store::failpoint::hit("digest::job");
            digest = Some(digest_counting(reader, &range, scanned));
        })
    }));
    let r = match (run, digest) {
        (Ok(Ok(())), Some(Ok(d))) => Ok(response(ns, &d)),
        (Ok(Ok(())), Some(Err(e))) => Err(format!("digest of {ns} failed: {e}")),
        (Ok(Err(e)), _) => Err(format!("taking a store snapshot failed: {e}")),
        (Ok(Ok(())), None) => Err("the engine never called back with a snapshot".into()),
        (Err(_), _) => Err("the digest task panicked (see the node's log)".into()),
    }
    .map_err(|e| format!("{e}; check the node's disk and log, then run again"));
    if let Err(e) = &r {
        tracing::error!(job = %job_id, error = %e, "digest job failed");
    }
    if let Some(j) = state.digest_jobs.jobs.lock().get_mut(job_id) {
        j.finished = Some((Instant::now(), r));
    }
}
