//! Verify and the cutover: both copies compared at one point fixed under
//! n1's write fence (snapshots; the digests run after it lifts), then, under a fresh fence, n1's outbox drained into n2 and n1 made to
//! forward the namespace to n2 (which it promotes), within the pause budget.

use std::time::{Duration, Instant};

use anyhow::bail;
use northwest_control::api;
use northwest_control::record::{DigestSummary, VerifyReport};
use northwest_control::{ErrorCode, MigrationRecord};

use crate::client::{answered, Ctx};
use crate::digests;
use crate::drain::{drain, Applied, DrainDeadline, DrainPath};

/// The proxy phase: the cutover, fenced and drained again when n1's fence
/// expired under a slow drain, tried again (up to [`PAUSE_ATTEMPTS`]) when it
/// would not fit in `--max-pause-ms`.
pub(crate) async fn cut_over(ctx: &Ctx, st: &mut MigrationRecord) -> anyhow::Result<()> {
    // A run that died after n1 began forwarding and before it saved that:
    // the cutover happened. Its boundary is lost (the switch records one
    // read now, marked approximate) rather than redone later than it was.
    let forwards = ctx.status(&st.from).await?.forwards(&st.ns) == Some(st.to.as_str());
    if forwards && ctx.status(&st.to).await?.promoted.contains(&st.ns) {
        st.cutover_at = None;
        return Ok(());
    }
    let (mut expired, mut over_budget) = (0, 0);
    loop {
        match proxy(ctx, st).await {
            Ok(()) => return Ok(()),
            Err(e) if expired < 2 && answered(&e, ErrorCode::FenceExpired) => {
                expired += 1;
                tracing::warn!(error = %format!("{e:#}"), "cutover fence expired; retrying the proxy step");
            }
            Err(e) if e.downcast_ref::<OverBudget>().is_some() => {
                over_budget += 1;
                if over_budget == PAUSE_ATTEMPTS {
                    bail!(
                        "the cutover did not fit in --max-pause-ms {} in {PAUSE_ATTEMPTS} \
                         attempts ({e}); each attempt held writes about that long at \
                         most (n1 lifts the fence itself when it runs out), and n1 keeps \
                         serving the namespace (fence lifted, no proxy). Run again when \
                         the write load is lower, or raise --max-pause-ms",
                        ctx.a.max_pause_ms.unwrap_or_default()
                    );
                }
                if !ctx.a.quiet {
                    eprintln!("cutover: {e}; fence lifted, trying again in 2 s ({over_budget}/{PAUSE_ATTEMPTS})");
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Fences n1's namespace, drains n1's outbox into n2, and starts a digest
/// of each copy from a snapshot taken while the fence still holds; lifts
/// the fence and compares the digests as they finish (the writes pause
/// for the drain and the two snapshots, not for the digests).
pub(crate) async fn verify(ctx: &Ctx, st: &mut MigrationRecord) -> anyhow::Result<()> {
    let n1 = st.from.clone();
    let t = Instant::now();
    let f = ctx.fence(&n1, 30_000).await?;
    let pinned = async {
        drain(ctx, &forward(st), &f, Duration::from_secs(25)).await?;
        // n2's own copy: after a rollback it forwards the namespace to n1
        // until the cutover promotes it again (a digest job always reads
        // the node's own copy).
        digests::pin(ctx, &n1, &st.to).await
    }
    .await;
    let lifted = ctx.unfence(&n1).await?;
    st.verify_pause_ms = Some(t.elapsed().as_secs_f64() * 1000.0);
    let pinned = pinned?;
    if lifted.lifted != Some(f.fence) {
        bail!("n1's write fence expired before both snapshots were taken; run again to re-verify");
    }
    let (d1, d2, took) = digests::finish(ctx, pinned).await?;
    st.verify_digest_ms = Some(took.as_secs_f64() * 1000.0);
    let mut differ: Vec<String> = Vec::new();
    for k in d1.kinds.keys().chain(d2.kinds.keys()) {
        if d1.kinds.get(k) != d2.kinds.get(k) && !differ.contains(k) {
            differ.push(k.clone());
        }
    }
    let summary = |d: &api::DigestResponse| DigestSummary {
        count: d.count,
        digest: d.digest.clone(),
    };
    let report = VerifyReport {
        n1: summary(&d1),
        n2: summary(&d2),
        differing_kinds: differ,
    };
    let equal = report.equal();
    st.verify = Some(report);
    if !equal {
        bail!(
            "n1 and n2 differ (n1 {} entities {}, n2 {} entities {}); differing kinds: {:?}",
            d1.count,
            d1.digest,
            d2.count,
            d2.digest,
            st.verify.as_ref().map(|v| &v.differing_kinds)
        );
    }
    Ok(())
}

/// The cutover: fence n1's namespace, drain, make n1 forward the namespace
/// to n2 under that same fence (n1 refuses if it expired), lift the fence.
async fn proxy(ctx: &Ctx, st: &mut MigrationRecord) -> anyhow::Result<()> {
    let (n1, n2) = (st.from.clone(), st.to.clone());
    let budget = ctx.a.max_pause_ms.map(Duration::from_millis);
    let t = Instant::now();
    // With a budget, n1 itself lifts the fence when it runs out: the writes
    // wait no longer than that even if this orchestrator stalls.
    let max_ms = budget.map_or(10_000, |b| b.as_millis().clamp(1, 10_000) as u64);
    let f = ctx.fence(&n1, max_ms).await?;
    let drain_for = budget
        .map(|b| b.saturating_sub(t.elapsed()))
        .unwrap_or(Duration::from_secs(8))
        .min(Duration::from_secs(8));
    let drained = drain(ctx, &forward(st), &f, drain_for).await;
    let over_budget = |held: Duration| {
        OverBudget(format!(
            "the cutover would hold writes past {} ms (held {:.1} ms)",
            max_ms,
            held.as_secs_f64() * 1000.0
        ))
    };
    // Drained, but past the budget already: the switch would only add to it.
    let over = budget.is_some_and(|b| t.elapsed() >= b);
    let failed = match &drained {
        Ok(_) if over => Some(over_budget(t.elapsed()).into()),
        Ok(_) => None,
        // Only running out of time is the budget's doing; any other
        // failure keeps its own cause.
        Err(e) if budget.is_some() && e.is::<DrainDeadline>() => {
            Some(over_budget(t.elapsed()).into())
        }
        Err(_) => None,
    };
    let boundary = match (drained, failed) {
        (_, Some(e)) => return Err(lift_fence(ctx, st, e, max_ms).await),
        (Err(e), None) => {
            let e = e.context("draining the journal at cutover");
            return Err(lift_fence(ctx, st, e, max_ms).await);
        }
        (Ok(hw), None) => hw,
    };
    // n1 promotes n2 and starts forwarding under the fence it still holds
    // (refused if n1 lifted it meanwhile: the budget ran out).
    match ctx.proxy(&n1, &n2, f.fence).await {
        Ok(_) => {}
        Err(e) if budget.is_some() && e.code() == Some(ErrorCode::FenceExpired) => {
            return Err(over_budget(t.elapsed()).into());
        }
        // n1 lifts its fence itself when the step fails (and forwards when
        // the outcome is unknown); lifting it again covers a lost answer.
        Err(e) => return Err(lift_fence(ctx, st, e.into(), max_ms).await),
    }
    st.write_pause_ms = Some(t.elapsed().as_secs_f64() * 1000.0);
    // n1 forwards from here: the switch phase records n2's epoch from here.
    st.cutover_at = Some(boundary);
    Ok(())
}

/// Lifts n1's fence after a failed cutover, trying a few times; returns the
/// error to report (with the unfence failure, if any, and what happens then).
async fn lift_fence(
    ctx: &Ctx,
    st: &MigrationRecord,
    cause: anyhow::Error,
    max_ms: u64,
) -> anyhow::Error {
    let mut last = None;
    for _ in 0..3 {
        match ctx.unfence(&st.from).await {
            Ok(_) => return cause,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let e = last.expect("failed at least once");
    // `context`, not a new error: callers still find the cause's
    // AdminError (a FenceExpired, say) by downcasting.
    cause.context(format!(
        "lifting n1's fence failed too ({e:#}): n1 lifts it by itself {max_ms} ms after it \
         was taken"
    ))
}

/// The forward journal's drain path: n1's outbox into n2.
fn forward(st: &MigrationRecord) -> DrainPath<'_> {
    DrainPath {
        from: &st.from,
        to: &st.to,
        topic: &st.journal_topic,
        applied: Applied::Journal,
    }
}

/// Cutover attempts under `--max-pause-ms` before the migration stops.
const PAUSE_ATTEMPTS: u32 = 5;

/// The cutover's drain would have held writes past `--max-pause-ms`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct OverBudget(String);
