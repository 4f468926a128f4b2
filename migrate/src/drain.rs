//! The drain under a fence: the fenced node's outbox shipped below the
//! fence, and the other node's apply past the topic's high-water marks.
//! The cutover drains n1 into n2; the rollback n2 into n1.

use std::time::{Duration, Instant};

use northwest_control::api::{self, FenceResponse};

use crate::client::Ctx;

/// The drain ran out of time (as opposed to failing).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct DrainDeadline(String);

/// Where a drain moves writes: `from`'s outbox ships to `topic`, which `to`
/// applies: the journal n1 -> n2 at cutover, the reverse journal n2 -> n1
/// at rollback.
pub(crate) struct DrainPath<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub topic: &'a str,
    pub applied: Applied,
}

/// Which of `to`'s stored offsets (`GET /v1/admin/offsets`) a drain reads.
#[derive(Clone, Copy)]
pub(crate) enum Applied {
    Journal,
    Reverse,
}

impl Applied {
    fn of(self, off: &api::OffsetsResponse) -> std::collections::BTreeMap<i32, i64> {
        match self {
            Applied::Journal => off.journal.clone(),
            Applied::Reverse => off.reverse.clone().unwrap_or_default(),
        }
    }
}

/// With `from` fenced: waits until its outbox shipped everything below the
/// fence and `to` applied `topic` up to its high-water marks, and returns
/// those marks: every record `from` journaled of the fenced namespace lies
/// below them, so a switch under this fence is an epoch boundary there.
pub(crate) async fn drain(
    ctx: &Ctx,
    path: &DrainPath<'_>,
    fence: &FenceResponse,
    timeout: Duration,
) -> anyhow::Result<std::collections::BTreeMap<i32, i64>> {
    let DrainPath {
        from,
        to,
        topic,
        applied,
    } = *path;
    let start = Instant::now();
    let deadline = start + timeout;
    // Every entry of the fenced namespace is below the fence's `outbox_next`:
    // wait for those to ship, not for other namespaces' ongoing writes.
    let below = fence.outbox_next;
    loop {
        let s = ctx.outbox(from).await?;
        if s.shipped_below >= below {
            break;
        }
        if Instant::now() > deadline {
            return Err(DrainDeadline(format!(
                "{from}'s outbox did not ship up to entry {below} ({} pending; relay: {}): is the \
                 broker up?",
                s.pending,
                s.relay_error.as_deref().unwrap_or("no error")
            ))
            .into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let shipped = start.elapsed();
    let t0 = Instant::now();
    let hw = ctx.marks(topic).await?;
    let marks = t0.elapsed();
    loop {
        let stored = applied.of(&ctx.offsets(to).await?);
        if hw
            .iter()
            .all(|(p, h)| stored.get(p).copied().unwrap_or(0) >= *h)
        {
            tracing::debug!(?shipped, ?marks, applied = ?t0.elapsed(), "drain steps");
            return Ok(hw);
        }
        if Instant::now() > deadline {
            return Err(DrainDeadline(format!(
                "{to} did not apply {topic} up to {hw:?} in time (stored {stored:?})"
            ))
            .into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
