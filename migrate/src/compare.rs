//! A rebuilt n3 compared with n2 while both stand at one journal position
//! (snapshots of both taken there; the digests run from them).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use northwest_control::api;
use northwest_control::record::DigestSummary;
use serde::Serialize;

use crate::client::{high_watermarks, Ctx};
use crate::digests;
use crate::error::Refused;

/// n2 and n3 compared at one journal position.
#[derive(Debug, Serialize)]
pub(crate) struct Comparison {
    pub with: String,
    pub journal_position: BTreeMap<i32, i64>,
    pub n2: DigestSummary,
    pub n3: DigestSummary,
    pub equal: bool,
    pub note: Option<String>,
}

/// Digests of `ns` on n2 and n3 while both stand at the same journal
/// position: the journal's end, unchanged from before both reached it to
/// after both digests were read.
pub(crate) async fn compare(
    ctx: &Ctx,
    journal: &str,
    n2: &str,
    n3: &str,
    ns: &str,
) -> anyhow::Result<Comparison> {
    let (s2, source) = comparable(ctx, journal, n2, n3, ns).await?;
    // The primary takes writes while the two are compared: the position
    // is the journal's end, which its writes keep moving.
    let note = (source || s2.promoted.iter().any(|n| n == ns)).then(|| {
        format!(
            "{n2} is the primary of {ns}: it journals the writes it takes, so n3 follows it; \
             compared at one journal position"
        )
    });
    const ATTEMPTS: u32 = 5;
    for _ in 0..ATTEMPTS {
        let deadline = Instant::now() + Duration::from_secs(120);
        // A primary (a source, or a target promoted for the namespace)
        // commits writes of its own: they must all be on the journal.
        let committed = if source || s2.promoted.iter().any(|n| n == ns) {
            Some(shipped_all(ctx, n2, deadline).await?)
        } else {
            None
        };
        let (c, t) = (ctx.hw.clone(), journal.to_string());
        let hw = tokio::task::spawn_blocking(move || high_watermarks(&c, &t)).await??;
        let appliers: &[&str] = if source { &[n3] } else { &[n2, n3] };
        applied_to(ctx, appliers, &hw, deadline).await?;
        // Snapshots of both copies, then proof that nothing moved while
        // they were taken; the digests run from the snapshots afterwards.
        let pinned = digests::pin(ctx, n2, n3).await?;
        let (c, t) = (ctx.hw.clone(), journal.to_string());
        let after = tokio::task::spawn_blocking(move || high_watermarks(&c, &t)).await??;
        // A primary that committed meanwhile may hold a write not below hw.
        let still = match committed {
            Some(next) => ctx.status(n2).await?.outbox_next == next,
            None => true,
        };
        if after != hw || !still {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let (d2, d3, _) = digests::finish(ctx, pinned).await?;
        let pick = |d: &api::DigestResponse| DigestSummary {
            count: d.count,
            digest: d.digest.clone(),
        };
        return Ok(Comparison {
            with: n2.to_string(),
            journal_position: hw,
            equal: d2.count == d3.count && d2.digest == d3.digest,
            n2: pick(&d2),
            n3: pick(&d3),
            note,
        });
    }
    bail!(
        "the journal moved during each of {ATTEMPTS} comparisons (is the source still writing?): \
         n3 is rebuilt, but compare it with {n2} while the source is stopped or fenced"
    )
}

/// Waits until primary `n` shipped every commit it made; its outbox's next
/// sequence then (unchanged later: nothing committed since).
async fn shipped_all(ctx: &Ctx, n: &str, deadline: Instant) -> anyhow::Result<u64> {
    loop {
        let s = ctx.status(n).await?;
        // The marks, not the pending count: an entry reserved between the
        // status's reads of count and next is below next, not shipped.
        if s.outbox_shipped_below >= s.outbox_next {
            return Ok(s.outbox_next);
        }
        if Instant::now() > deadline {
            bail!(
                "{n} still had {} commits to ship to the journal after 2 min ({}); is the broker up?",
                s.outbox_pending,
                s.relay_error.as_deref().unwrap_or("no relay error")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until each of `nodes` stored offsets at or past `hw`.
async fn applied_to(
    ctx: &Ctx,
    nodes: &[&str],
    hw: &BTreeMap<i32, i64>,
    deadline: Instant,
) -> anyhow::Result<()> {
    for &node in nodes {
        loop {
            let stored = ctx.offsets(node).await?.journal;
            if hw
                .iter()
                .all(|(p, h)| stored.get(p).copied().unwrap_or(0) >= *h)
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("{node} did not apply the journal up to {hw:?} in 2 min (stored {stored:?})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// `n2` stands at a journal position `n3` can be compared at: its status,
/// and whether it is a source (the journal's writer) rather than a target.
async fn comparable(
    ctx: &Ctx,
    journal: &str,
    n2: &str,
    n3: &str,
    ns: &str,
) -> anyhow::Result<(api::NodeStatus, bool)> {
    let s2 = ctx.status(n2).await?;
    // A source stands at a journal position too: once its outbox shipped,
    // everything it committed lies in the journal below the high-water
    // marks (and what other primaries journaled was applied before it took
    // the namespace back).
    let source = s2.role == "source";
    if !(s2.role == "target" || source) || s2.journal_topic != journal {
        return Err(Refused(format!(
            "--compare {n2} does not apply journal {journal} (role {}, journal {}): only a node \
             applying the same journal, or the source journaling to it, stands at a comparable \
             position",
            s2.role, s2.journal_topic
        ))
        .into());
    }
    if let Some(to) = s2.forwards(ns).filter(|_| source) {
        return Err(Refused(format!(
            "--compare {n2}: it forwards {ns} to {to} and applies that node's writes when it \
             reads them: compare with {to}"
        ))
        .into());
    }
    let s3 = ctx.status(n3).await?;
    if s2.name == s3.name {
        return Err(Refused(format!(
            "--compare {n2} is the node being rebuilt ({}): compare with another one",
            s2.name
        ))
        .into());
    }
    Ok((s2, source))
}
