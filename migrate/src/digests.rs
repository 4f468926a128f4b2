//! Two copies of a namespace digested at one point without holding writes
//! for the digests: whoever holds the namespace's writes (a fence, and a
//! drain that brought both copies to the same journal position) starts a
//! digest job on each node, each of which takes a store snapshot before it
//! answers; the writes go on once both answered, and the digests are read
//! from the snapshots in the background.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use northwest_control::api::{self, DigestJob, DigestJobRequest, DigestJobState, DigestResponse};

use crate::client::Ctx;

/// A digest job started on a node, its snapshot taken.
pub(crate) struct Pinned {
    node: String,
    job: String,
}

impl Ctx {
    async fn start_digest_job(&self, node: &str) -> anyhow::Result<Pinned> {
        let req = DigestJobRequest {
            namespace: self.a.namespace.clone(),
        };
        let j: DigestJob = self
            .admin
            .post(node, api::path::DIGEST_JOBS, &req)
            .await
            .with_context(|| format!("starting a digest of {} on {node}", self.a.namespace))?;
        Ok(Pinned {
            node: node.to_string(),
            job: j.job,
        })
    }

    async fn digest_job(&self, p: &Pinned) -> anyhow::Result<DigestJob> {
        self.admin
            .get(&p.node, &api::path::digest_job(&p.job))
            .await
            .with_context(|| format!("reading digest job {} on {}", p.job, p.node))
    }
}

/// Starts a digest job of the namespace's own copy on both nodes at once;
/// each answered once its snapshot was taken.
pub(crate) async fn pin(ctx: &Ctx, a: &str, b: &str) -> anyhow::Result<(Pinned, Pinned)> {
    tokio::try_join!(ctx.start_digest_job(a), ctx.start_digest_job(b))
}

/// Waits for both jobs (progress on stderr every 5 s unless `--quiet`); the
/// two digests and how long the wait took.
pub(crate) async fn finish(
    ctx: &Ctx,
    (a, b): (Pinned, Pinned),
) -> anyhow::Result<(DigestResponse, DigestResponse, Duration)> {
    let t = Instant::now();
    let mut said = Instant::now();
    let mut unanswered = 0;
    loop {
        // Reading a job is idempotent: a lost answer is asked again a few
        // times; an unknown job (404: the node restarted) stays an error.
        let (ja, jb) = match tokio::try_join!(ctx.digest_job(&a), ctx.digest_job(&b)) {
            Ok(j) => {
                unanswered = 0;
                j
            }
            Err(e) if unanswered < 5 && !e.to_string().contains("404") => {
                unanswered += 1;
                tracing::warn!(error = %format!("{e:#}"), "reading a digest job failed; asking again");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => return Err(e.context("the comparison stopped; run the same command again")),
        };
        for (p, j) in [(&a, &ja), (&b, &jb)] {
            if j.state == DigestJobState::Failed {
                bail!(
                    "the digest on {} failed: {}; run again",
                    p.node,
                    j.error.as_deref().unwrap_or("no reason given")
                );
            }
        }
        if let (Some(ra), Some(rb)) = (&ja.result, &jb.result) {
            return Ok((ra.clone(), rb.clone(), t.elapsed()));
        }
        if !ctx.a.quiet && said.elapsed() >= Duration::from_secs(5) {
            said = Instant::now();
            eprintln!(
                "digests (writes go on meanwhile): {} {} records read, {} {} ({:.0} s)",
                a.node,
                ja.scanned,
                b.node,
                jb.scanned,
                t.elapsed().as_secs_f64()
            );
        }
        let ms = if t.elapsed() < Duration::from_secs(2) {
            20
        } else {
            250
        };
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}
