//! `migrate --rollback`: moves a namespace's primary back to n1 after the
//! cutover. From the switch on, n2 journals the namespace's client writes to
//! the journal topic and n1 applies them (a source by its reverse apply, a
//! chained hop's target by its apply loop) with the same lock + version +
//! stored-offset rules; the rollback waits for n1 to catch
//! up, then, with both nodes fenced, drains n2's writes into n1, makes n1
//! serve the namespace again and n2 forward it back, and lifts the fences.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use northwest_control::api::{self, PromoteRequest, ReverseApplyResponse};
use northwest_control::record::{RollbackReport, RollbackVerify};
use northwest_control::{ErrorCode, MigrationRecord, Phase, RoutingRecord};
use serde::Serialize;

use crate::client::{answered, Ctx};
use crate::digests;
use crate::drain::{drain, Applied, DrainPath};
use crate::error::Refused;
use crate::timeline::{self, Previous};
use northwest_control::timeline::Switch;

pub(crate) async fn rollback(ctx: &Ctx, st: Option<MigrationRecord>) -> anyhow::Result<()> {
    let ns = ctx.a.namespace.clone();
    let st = rollable(ctx, st)?;
    let (n1, n2) = (st.from.clone(), st.to.clone());
    let s1 = ctx.status(&n1).await?;
    let s2 = ctx.status(&n2).await?;
    let n1_forwards = s1.forwards(&ns) == Some(n2.as_str());
    let n2_forwards = s2.forwards(&ns) == Some(n1.as_str());
    if !n1_forwards && n2_forwards {
        // A rollback stopped after its switch: finish it.
        eprintln!("rollback: n1 serves {ns} and n2 forwards it there already; finishing");
        if s1.promotion_unconfirmed.contains(&ns) {
            // n1 (a chained hop's source) stopped forwarding as its
            // confirmation began and died before recording it: confirmed
            // now, or it would refuse its own clients for good.
            confirm(ctx, &n1)
                .await
                .context("confirming n1's promotion")?;
        }
        finish(ctx, &n1, &n2).await?;
        let detail = RollbackReport {
            resumed_after_switch: true,
            ..Default::default()
        };
        return done(ctx, st, &ns, detail, None).await;
    }
    if let Some(t) = s2.forwards(&ns).filter(|t| *t != n1) {
        return Err(Refused(format!(
            "n2 ({n2}) no longer serves {ns}: it forwards it to {t}, which took it over later; \
             roll back the newest move instead (northwest timeline shows them)"
        ))
        .into());
    }
    if !n1_forwards {
        return Err(Refused(format!(
            "n1 does not forward {ns} to {n2} (its proxies: {:?}), nor n2 to n1: nothing to roll \
             back; use --abort for a cutover that did not happen",
            s1.proxies
        ))
        .into());
    }
    let Some(reverse) = s2.reverse_relay else {
        return Err(Refused(format!(
            "n2 ({n2}) does not journal the writes it takes (a node older than this command?): \
             rolling back would lose them"
        ))
        .into());
    };
    let (detail, boundary) = move_primary(ctx, &s1, (&n1, &n2), reverse.topic).await?;
    done(ctx, st, &ns, detail, Some(boundary)).await
}

/// Makes `n1`, which follows the namespace (it forwards it to `n2` and
/// applies `n2`'s writes), its primary again: waits for it to catch up,
/// compares both copies under both fences, switches under both fences.
/// Returns what it did and the epoch boundary.
pub(crate) async fn move_primary(
    ctx: &Ctx,
    s1: &api::NodeStatus,
    (n1, n2): (&str, &str),
    topic: String,
) -> anyhow::Result<(RollbackReport, BTreeMap<i32, i64>)> {
    let by = start_following(ctx, s1, n1).await?;
    let t = Instant::now();
    catch_up(ctx, n1, n2, by).await?;
    let catch_up_s = t.elapsed().as_secs_f64();
    // The drains under the fences ask Kafka for the topic's marks: the
    // first ask connects to the partitions' leaders (~50 ms here), which
    // must not be paid while writes wait.
    if let Err(e) = ctx.marks(&topic).await {
        tracing::debug!(error = %format!("{e:#}"), "reading the journal's marks before the fences");
    }
    let verified = verify(ctx, &ctx.a.namespace, (n1, n2), &topic, by).await?;
    if !ctx.a.quiet {
        eprintln!(
            "{n1} caught up in {catch_up_s:.2} s; {n1} = {n2}: {} entities (writes paused {:.1} ms)",
            verified.count, verified.pause_ms
        );
    }
    let mut expired = 0;
    let (pause_ms, boundary) = loop {
        match switch_back(ctx, (n1, n2), &topic, by).await {
            Ok(p) => break p,
            Err(e) if expired < 2 && answered(&e, ErrorCode::FenceExpired) => {
                expired += 1;
                tracing::warn!(error = %format!("{e:#}"), "{n2}'s fence expired during the switch; it keeps the namespace, trying again");
            }
            Err(e) => {
                return Err(e.context(
                    "the switch stopped (the cause says at which step); run the same command \
                     again: it continues from where the nodes are",
                ))
            }
        }
    };
    let detail = RollbackReport {
        catch_up_seconds: Some(catch_up_s),
        write_pause_ms: Some(pause_ms),
        verify: Some(verified),
        reverse_topic: Some(topic),
        ..Default::default()
    };
    Ok((detail, boundary))
}

/// How n1 applies n2's writes: a source by its reverse apply (started here
/// if it is not running), the target an earlier hop came from (a chained
/// migration) by its apply loop.
async fn start_following(ctx: &Ctx, s1: &api::NodeStatus, n1: &str) -> anyhow::Result<Applied> {
    if s1.role == "target" {
        return Ok(Applied::Journal);
    }
    let _: ReverseApplyResponse = ctx
        .admin
        .post(n1, api::path::REVERSE_APPLY, &serde_json::json!({}))
        .await?;
    Ok(Applied::Reverse)
}

/// The recorded migration of the namespace, if it is one a rollback can
/// move back: this pair's, and cut over.
fn rollable(ctx: &Ctx, st: Option<MigrationRecord>) -> Result<MigrationRecord, Refused> {
    let ns = &ctx.a.namespace;
    let Some(st) = st else {
        return Err(Refused(format!(
            "no migration of namespace {ns} is recorded"
        )));
    };
    if st.from != ctx.a.from || st.to != ctx.a.to {
        return Err(Refused(format!(
            "migration {} of {ns} went from {} to {}: run --rollback with those --from and --to",
            st.id, st.from, st.to
        )));
    }
    match st.phase {
        Phase::Proxy | Phase::Switch | Phase::Done => {}
        Phase::Aborted => {
            return Err(Refused(format!(
                "migration {} was already aborted or rolled back",
                st.id
            )))
        }
        _ => {
            return Err(Refused(format!(
                "migration {} has not cut over (phase {}): n1 still serves the namespace; use \
                 --abort",
                st.id,
                st.phase.name()
            )))
        }
    }
    Ok(st)
}

/// What `--rollback --json` prints.
#[derive(Serialize)]
struct RollbackOutput<'a> {
    rolled_back: &'a str,
    primary: &'a str,
    forwarding: &'a str,
    migration: &'a str,
    #[serde(flatten)]
    detail: &'a RollbackReport,
}

/// Points the routing record at n1, records n1's new epoch (from
/// `boundary`, the marks under both fences; read now when a resumed run
/// does not know it) and the rollback, reports.
async fn done(
    ctx: &Ctx,
    mut st: MigrationRecord,
    ns: &str,
    mut detail: RollbackReport,
    boundary: Option<BTreeMap<i32, i64>>,
) -> anyhow::Result<()> {
    let (n1, n2) = (st.from.clone(), st.to.clone());
    let (s1, s2) = tokio::try_join!(ctx.status(&n1), ctx.status(&n2))?;
    let (at, approximate) = timeline::boundary_or_now(ctx, &st.journal_topic, boundary).await?;
    let prev = Previous {
        name: &s2.name,
        url: &n2,
        opened_by: format!("recorded at rollback of {}", st.id),
    };
    let next = Switch {
        primary: s1.name,
        primary_url: n1.clone(),
        topic: st.journal_topic.clone(),
        at,
        opened_by: format!("rollback of {}", st.id),
        now_ms: northwest_store::store::now_ms_pub(),
        approximate,
    };
    let t = timeline::record_switch(ctx, ns, prev, next)
        .await
        .context("recording n1's new epoch in the namespace's timeline")?;
    timeline::retarget_older(ctx, &t, &n2, &n1).await?;
    // Clients that follow the routing record go to n1 again.
    ctx.write_routing(&RoutingRecord {
        primary: n1.clone(),
        replaces: n2.clone(),
        namespace: ns.to_string(),
        migration: st.id.clone(),
        rolled_back: true,
    })
    .await?;
    detail.at_ms = Some(northwest_store::store::now_ms_pub());
    st.phase = Phase::Aborted;
    st.rolled_back = Some(detail.clone());
    ctx.save(&st).await?;
    let report = RollbackOutput {
        rolled_back: ns,
        primary: &n1,
        forwarding: &n2,
        migration: &st.id,
        detail: &detail,
    };
    if ctx.a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "namespace {ns} rolled back: {n1} is its primary again and {n2} forwards it there \
             ({})",
            serde_json::to_string(&detail)?
        );
    }
    Ok(())
}

/// How far n1's apply of n2's writes is, read from its status.
struct Catching {
    halted: Option<String>,
    lag: Option<i64>,
    last_error: Option<String>,
    running: bool,
    lag_error: Option<String>,
}

impl Catching {
    fn of(s1: api::NodeStatus, by: Applied) -> Catching {
        match by {
            Applied::Reverse => {
                let r = s1.reverse_apply;
                Catching {
                    halted: r.as_ref().and_then(|r| r.halted.clone()),
                    lag: r.as_ref().and_then(|r| r.lag_records),
                    last_error: r.as_ref().and_then(|r| r.last_error.clone()),
                    running: r.as_ref().is_some_and(|r| r.running),
                    lag_error: r.as_ref().and_then(|r| r.lag_error.clone()),
                }
            }
            Applied::Journal => {
                let (halted, lag) = (s1.halted().map(str::to_string), s1.journal_lag());
                let a = s1.apply;
                Catching {
                    halted,
                    lag: a.as_ref().filter(|a| !a.partitions.is_empty()).map(|_| lag),
                    last_error: a.as_ref().and_then(|a| a.last_error.clone()),
                    running: a.as_ref().is_some_and(|a| a.running),
                    lag_error: a.as_ref().and_then(|a| a.lag_error.clone()),
                }
            }
        }
    }
}

/// Waits until n1 applied n2's writes to within `--max-lag`.
async fn catch_up(ctx: &Ctx, n1: &str, n2: &str, by: Applied) -> anyhow::Result<()> {
    let b = crate::progress::bar(0, "reverse", ctx.a.quiet);
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let c = Catching::of(ctx.status(n1).await?, by);
        if let Some(h) = &c.halted {
            bail!("n1 halted a partition of the journal it applies n2's writes from: {h}");
        }
        let lag = c.lag;
        let last_error = c.last_error.as_deref();
        b.set_message(format!(
            "n1 behind n2 by {} records{}",
            lag.map_or("?".into(), |l| l.to_string()),
            last_error
                .map(|e| format!("; apply error: {e}"))
                .unwrap_or_default()
        ));
        let running = c.running;
        let lag_error = c.lag_error.as_deref();
        if running && lag_error.is_none() && lag.is_some_and(|l| l <= ctx.a.max_lag) {
            b.finish_and_clear();
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "n1 did not catch up with n2's writes in 30 min (reverse apply running {running}, \
                 lag {lag:?}, lag error {lag_error:?}, apply error {last_error:?}); is {n2}'s \
                 reverse relay shipping? (its status: reverse_relay)"
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Fences both nodes, drains n2's writes into n1, starts a digest of each
/// node's own copy from snapshots taken under the fences, lifts the fences
/// and compares the digests as they finish.
async fn verify(
    ctx: &Ctx,
    ns: &str,
    (n1, n2): (&str, &str),
    topic: &str,
    by: Applied,
) -> anyhow::Result<RollbackVerify> {
    let t = Instant::now();
    ctx.fence(n1, 30_000).await?;
    let t1 = t.elapsed();
    let pinned = async {
        let f2 = ctx.fence(n2, 30_000).await?;
        let t2 = t.elapsed();
        drain(ctx, &reverse(n1, n2, topic, by), &f2, DRAIN_FOR).await?;
        let t3 = t.elapsed();
        let pinned = digests::pin(ctx, n1, n2).await?;
        tracing::debug!(fence1 = ?t1, fence2 = ?t2, drained = ?t3, pinned = ?t.elapsed(), "rollback compare steps");
        anyhow::Ok((f2, pinned))
    }
    .await;
    // n2 takes the namespace's writes: its fence must have held until both
    // snapshots were taken for them to stand at one point.
    let lifted2 = ctx.unfence(n2).await;
    let _ = ctx.unfence(n1).await;
    let pause_ms = t.elapsed().as_secs_f64() * 1000.0;
    let (f2, pinned) = pinned.context("verifying n1 against n2 before the switch back")?;
    if lifted2.map_or(true, |l| l.lifted != Some(f2.fence)) {
        bail!(
            "n2's write fence expired (or could not be lifted) before both snapshots were \
             taken; run the rollback again to re-verify"
        );
    }
    let (d1, d2, _) = digests::finish(ctx, pinned)
        .await
        .context("verifying n1 against n2 before the switch back")?;
    if d1.count != d2.count || d1.digest != d2.digest {
        bail!(
            "n1 and n2 differ after n1 applied n2's writes (n1 {} entities {}, n2 {} entities {}) \
             in namespace {ns}: the rollback stopped, n2 still serves the namespace",
            d1.count,
            d1.digest,
            d2.count,
            d2.digest
        );
    }
    Ok(RollbackVerify {
        count: d1.count,
        digest: d1.digest,
        pause_ms,
    })
}

/// How long a drain under the fences may hold writes.
const DRAIN_FOR: Duration = Duration::from_secs(8);

/// The drain path back: n2's outbox into n1.
fn reverse<'a>(n1: &'a str, n2: &'a str, topic: &'a str, by: Applied) -> DrainPath<'a> {
    DrainPath {
        from: n2,
        to: n1,
        topic,
        applied: by,
    }
}

/// The switch back, under both fences; returns the write pause (ms) and
/// the journal's marks under the fences (n1's new epoch begins there).
async fn switch_back(
    ctx: &Ctx,
    (n1, n2): (&str, &str),
    topic: &str,
    by: Applied,
) -> anyhow::Result<(f64, BTreeMap<i32, i64>)> {
    let t = Instant::now();
    // n1's fence holds its clients while the proxies flip; n2's guarantees
    // n2 takes no write after the drain (the proxy step checks it held).
    ctx.fence(n1, 20_000).await?;
    let f2 = match ctx.fence(n2, 10_000).await {
        Ok(f) => f,
        Err(e) => {
            let _ = ctx.unfence(n1).await;
            return Err(e.into());
        }
    };
    let lift = |e: anyhow::Error| async move {
        let _ = ctx.unfence(n2).await;
        let _ = ctx.unfence(n1).await;
        e
    };
    let fenced = t.elapsed();
    let boundary = match drain(ctx, &reverse(n1, n2, topic, by), &f2, DRAIN_FOR).await {
        Ok(hw) => hw,
        Err(e) => return Err(lift(e.context("draining n2's writes into n1")).await),
    };
    let drained = t.elapsed();
    // n2 forwards to n1 first, under its fence (refused if it lapsed: n2 may
    // have taken writes after the drain). From here until n1 stops
    // forwarding, neither node serves the namespace itself, so a crash in
    // between leaves no two primaries: requests bounce once and are refused
    // (508) until the rollback is run again.
    if let Err(e) = ctx.proxy(n2, n1, f2.fence).await {
        let e = anyhow::Error::from(e).context("making n2 forward the namespace to n1");
        return Err(lift(e).await);
    }
    if northwest_store::failpoint::hit("rollback::between_switches") {
        bail!("injected failure at rollback::between_switches");
    }
    if matches!(by, Applied::Journal) {
        // n1 is a target (a chained hop's source): n2's proxy step promoted
        // it unconfirmed; confirmed, it serves its own clients again once
        // it stops forwarding.
        if let Err(e) = confirm(ctx, n1).await {
            let e = anyhow::Error::from(e).context(
                "confirming n1's promotion (n2 forwards to n1 already): run --rollback again",
            );
            return Err(lift(e).await);
        }
    }
    ctx.unproxy(n1, true).await.context(
        "making n1 serve the namespace again (n2 already forwards it to n1, so requests are \
         refused meanwhile): run --rollback again",
    )?;
    let pause = t.elapsed().as_secs_f64() * 1000.0;
    tracing::debug!(?fenced, ?drained, pause_ms = pause, "rollback switch steps");
    finish(ctx, n1, n2).await?;
    Ok((pause, boundary))
}

/// Confirms `n1`'s promotion (a target taking a namespace back).
async fn confirm(ctx: &Ctx, n1: &str) -> Result<(), northwest_control::AdminError> {
    let confirm = PromoteRequest {
        namespace: ctx.a.namespace.clone(),
        confirm: true,
        ..Default::default()
    };
    ctx.promote(n1, &confirm).await.map(|_| ())
}

/// After the switch: n1's fence lifted, n2 demoted (it forwards already).
async fn finish(ctx: &Ctx, n1: &str, n2: &str) -> anyhow::Result<()> {
    ctx.unfence(n1)
        .await
        .context("lifting n1's fence (it lifts itself after 20 s)")?;
    ctx.demote(n2)
        .await
        .context("demoting n2 (it forwards the namespace to n1 already)")?;
    Ok(())
}
