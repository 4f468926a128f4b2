//! The node's digest jobs (`/v1/admin/digest-jobs`): each digests one
//! namespace from a store snapshot in the background; kept a while after
//! they finish for their caller to read.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use northwest_control::api::{DigestJob, DigestJobState, DigestResponse};
use parking_lot::Mutex;

/// Jobs run at once at most: each holds a store snapshot (old versions
/// are kept while it runs) and a blocking thread.
pub(crate) const MAX_RUNNING: usize = 8;
/// Finished jobs are kept this long for their caller to read.
pub(crate) const KEEP_FINISHED_MS: u64 = 10 * 60 * 1000;

/// The node's digest jobs, by id.
#[derive(Default)]
pub struct DigestJobs {
    pub(crate) jobs: Mutex<BTreeMap<String, Job>>,
    pub(crate) next: AtomicU64,
}

pub(crate) struct Job {
    pub(crate) namespace: String,
    pub(crate) started: Instant,
    pub(crate) started_at_ms: i64,
    pub(crate) scanned: Arc<AtomicU64>,
    pub(crate) finished: Option<(Instant, Result<DigestResponse, String>)>,
}

impl Job {
    pub(crate) fn view(&self, id: &str) -> DigestJob {
        let (state, result, error, elapsed) = match &self.finished {
            None => (DigestJobState::Running, None, None, self.started.elapsed()),
            Some((at, Ok(r))) => (
                DigestJobState::Done,
                Some(r.clone()),
                None,
                *at - self.started,
            ),
            Some((at, Err(e))) => (
                DigestJobState::Failed,
                None,
                Some(e.clone()),
                *at - self.started,
            ),
        };
        DigestJob {
            job: id.to_string(),
            namespace: self.namespace.clone(),
            state,
            scanned: self.scanned.load(std::sync::atomic::Ordering::Relaxed),
            started_at_ms: self.started_at_ms,
            elapsed_ms: elapsed.as_millis() as u64,
            result,
            error,
        }
    }
}
