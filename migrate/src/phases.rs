//! One step of each phase: init checks, metadata sync, journaling check,
//! snapshot, catch-up, verify, proxy (the cutover) and switch.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use northwest_control::api::{
    self, CheckpointRequest, CheckpointResponse, FenceResponse, HotKeysResponse,
    LoadSnapshotRequest, LoadSnapshotResponse, PromoteRequest, WarmRequest, WarmResponse,
};
use northwest_control::record::{DigestSummary, VerifyReport, WarmReport};
use northwest_control::{ErrorCode, MigrationRecord, Phase, RoutingRecord};
use northwest_snapshotter::{stream_snapshot, SnapshotConfig, SnapshotStats, ZkProgress};
use northwest_store::Namespace;

use crate::client::{answered, high_watermarks, Ctx};
use crate::progress::bar;
use crate::state::Refused;

pub(crate) async fn run_phase(ctx: &Ctx, st: &mut MigrationRecord) -> anyhow::Result<()> {
    let (n1, n2) = (st.from.clone(), st.to.clone());
    match st.phase {
        Phase::Init => {
            let s1 = ctx.status(&n1).await?;
            let s2 = ctx.status(&n2).await.context("n2 unreachable")?;
            if s1.role != "source" {
                return Err(Refused(format!("n1 ({n1}) is not journaling: set journal.enabled = true in its config and restart it")).into());
            }
            if s2.role != "target" {
                return Err(Refused(format!("n2 ({n2}) does not apply a journal: set journal.apply = true in its config and restart it")).into());
            }
            if s1.journal_topic != s2.journal_topic || s1.zk_root != s2.zk_root {
                return Err(Refused(format!("n1 and n2 must share the journal topic and the ZooKeeper root: n1 {} {}, n2 {} {}",
                    s1.journal_topic, s1.zk_root, s2.journal_topic, s2.zk_root)).into());
            }
            if let Some(t) = s1.forwards(&st.ns) {
                return Err(Refused(format!(
                    "n1 already forwards namespace {} to {t}: it was migrated already",
                    st.ns
                ))
                .into());
            }
            st.from_name = Some(s1.name);
        }
        Phase::MetadataSync => {
            // The store is schemaless: the metadata to carry is the namespace
            // and its kinds, recorded so the report and verify can name them.
            st.kinds = ctx.digest(&n1, false).await?.kinds.into_keys().collect();
        }
        Phase::Journaling => {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let s1 = ctx.status(&n1).await?;
                let s2 = ctx.status(&n2).await?;
                let relay_error = s1.relay.and_then(|r| r.last_error);
                let applying = s2.apply.is_some_and(|a| a.running);
                if relay_error.is_none() && applying {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "journal not flowing: n1 relay error {}, n2 apply running {applying}",
                        relay_error.as_deref().unwrap_or("none"),
                    );
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        Phase::Snapshot => snapshot(ctx, st).await?,
        Phase::CatchUp => catch_up(ctx, st).await?,
        Phase::Verify => verify(ctx, st).await?,
        Phase::Proxy => {
            // A fence that expired under a slow drain is refused by n1; fence
            // and drain again rather than proxy with writes possibly missed.
            let (mut expired, mut over_budget) = (0, 0);
            loop {
                match proxy(ctx, st).await {
                    Ok(()) => break,
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
        Phase::Switch => {
            let s1 = ctx.status(&n1).await?;
            if s1.forwards(&st.ns) != Some(n2.as_str()) {
                bail!(
                    "n1 does not forward namespace {} to {n2} (its proxies: {:?}); run the \
                     migration again to redo the proxy step",
                    st.ns,
                    s1.proxies
                );
            }
            // n1 forwards: n2's promotion is confirmed, so it serves its
            // own clients too (until now only what n1 forwarded).
            let confirm = PromoteRequest {
                namespace: st.ns.clone(),
                confirm: true,
                ..Default::default()
            };
            ctx.promote(&n2, &confirm)
                .await
                .context("confirming n2's promotion")?;
            ctx.write_routing(&RoutingRecord {
                primary: st.to.clone(),
                replaces: st.from.clone(),
                namespace: st.ns.clone(),
                migration: st.id.clone(),
                rolled_back: false,
            })
            .await?;
            ctx.drop_checkpoint(&n1, &st.id).await;
        }
        Phase::Done | Phase::Aborted => {}
    }
    Ok(())
}

async fn snapshot(ctx: &Ctx, st: &mut MigrationRecord) -> anyhow::Result<()> {
    if st.hwms.is_empty() {
        // Recorded before the view is taken: everything committed after the
        // view is in the journal at or after these offsets.
        let (c, t) = (ctx.hw.clone(), st.journal_topic.clone());
        st.hwms_at_ms = Some(northwest_store::store::now_ms_pub());
        st.hwms = tokio::task::spawn_blocking(move || high_watermarks(&c, &t)).await??;
        ctx.save(st).await?;
    }
    if st.checkpoint_dir.is_none() {
        let req = CheckpointRequest {
            name: st.id.clone(),
        };
        let r: CheckpointResponse = ctx
            .admin
            .post(&st.from, api::path::CHECKPOINT, &req)
            .await?;
        st.checkpoint_dir = Some(r.dir);
        ctx.save(st).await?;
    }
    let dir = st.checkpoint_dir.clone().expect("set above");
    let reader =
        northwest_store::rocks::open_checkpoint(std::path::Path::new(&dir)).with_context(|| {
            format!("opening n1's checkpoint {dir} (the orchestrator must run on n1's host)")
        })?;
    let progress = Arc::new(
        ZkProgress::new(
            ctx.zk.clone(),
            ctx.layout.root(),
            &format!("{}/snapshot/{}", ctx.path, st.id),
            ctx.acls,
        )
        .await?,
    );
    let stats = Arc::new(SnapshotStats::default());
    let cfg = SnapshotConfig {
        kafka: ctx.kafka.clone(),
        topic: st.snapshot_topic.clone(),
        partitions: 4,
        snapshot_id: st.id.clone(),
        origin: source_name(ctx, st).await?,
        ranges: ctx.a.ranges,
        chunk: ctx.a.chunk,
        rows_per_sec: Arc::new(std::sync::atomic::AtomicU64::new(ctx.a.rate)),
    };
    let ns = Namespace::new(&st.ns).map_err(|e| anyhow!("{e}"))?;
    let budgets = crate::throttle::Budgets {
        n1: st.from.clone(),
        n2: st.to.clone(),
        source_p99_ms: ctx.a.max_source_p99_ms.map(|b| b as f64),
        apply_lag: ctx.a.max_apply_lag,
    };
    let watched = budgets.source_p99_ms.is_some() || budgets.apply_lag.is_some();
    let throttle = watched.then(|| {
        let t = Arc::new(crate::throttle::ThrottleStats::default());
        let task = tokio::spawn(crate::throttle::control(
            ctx.admin.with_timeout(Duration::from_millis(900)),
            budgets,
            ctx.a.rate,
            cfg.rows_per_sec.clone(),
            stats.clone(),
            t.clone(),
        ));
        (task, t)
    });
    st.throttle = None;
    let b = bar(0, "snapshot", ctx.a.quiet);
    let ticker = {
        let (b, stats) = (b.clone(), stats.clone());
        tokio::spawn(async move {
            loop {
                b.set_length(stats.total.load(Ordering::Relaxed));
                b.set_position(stats.streamed.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let r = stream_snapshot(reader, &ns, &cfg, progress, stats.clone()).await;
    ticker.abort();
    if let Some((task, t)) = throttle {
        task.abort();
        st.throttle = Some(t.report());
    }
    b.finish_and_clear();
    let rows = r?;
    st.snapshot_rows = rows;
    st.snapshot_resumed_rows += stats.resumed.load(Ordering::Relaxed);
    // Every row is delivered: the topic is now a complete image at `hwms`,
    // usable without n1 (`migrate --from-topics`).
    crate::rebuild::record_manifest(ctx, st).await
}

async fn catch_up(ctx: &Ctx, st: &mut MigrationRecord) -> anyhow::Result<()> {
    let n2 = st.to.clone();
    let req = LoadSnapshotRequest {
        topic: st.snapshot_topic.clone(),
    };
    let _: LoadSnapshotResponse = ctx.admin.post(&n2, api::path::LOAD_SNAPSHOT, &req).await?;
    let b = bar(st.snapshot_rows, "load", ctx.a.quiet);
    let deadline = Instant::now() + Duration::from_secs(1800);
    wait_caught_up(ctx, st, &b, deadline).await?;
    if ctx.a.warm_keys > 0 {
        let t = Instant::now();
        // An optimisation: a failure is reported, never a reason to stop.
        st.warm = Some(match warm_cache(ctx, st).await {
            Ok((keys, found)) => WarmReport::Warmed {
                keys: keys as u64,
                found,
                seconds: t.elapsed().as_secs_f64(),
            },
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cache warm-up failed; n2 starts with the cache it has");
                WarmReport::Failed {
                    error: format!("{e:#}"),
                }
            }
        });
        // n1 kept writing meanwhile: catch up again, so verify's fenced
        // drain stays short.
        wait_caught_up(ctx, st, &b, deadline).await?;
    }
    b.finish_and_clear();
    Ok(())
}

/// Waits until n2 loaded the snapshot, passed the recorded journal marks and
/// its lag is under `--max-lag`.
async fn wait_caught_up(
    ctx: &Ctx,
    st: &mut MigrationRecord,
    b: &indicatif::ProgressBar,
    deadline: Instant,
) -> anyhow::Result<()> {
    let n2 = st.to.clone();
    // Lag over the last 10 s: the catch-up ETA is the rate it shrinks at.
    let mut recent: std::collections::VecDeque<(Instant, i64)> = Default::default();
    loop {
        let s2 = ctx.status(&n2).await?;
        let off = ctx.offsets(&n2).await?;
        if let Some(h) = s2.halted() {
            bail!("n2 halted a journal partition, so it cannot catch up: {h}");
        }
        let loaded = s2.loader.as_ref().is_some_and(|l| l.caught_up);
        b.set_position(s2.loader.as_ref().map_or(0, |l| l.rows));
        let lag = s2.journal_lag();
        st.max_lag_records = st.max_lag_records.max(lag);
        let past_hwm = st
            .hwms
            .iter()
            .all(|(p, hw)| off.journal.get(p).copied().unwrap_or(0) >= *hw);
        let now = Instant::now();
        let lag_error = s2.apply.as_ref().and_then(|a| a.lag_error.as_deref());
        if let Some(e) = lag_error {
            // No partitions read: 0 here would be a false "caught up".
            recent.clear();
            b.set_message(format!("lag unknown: {e}"));
        } else {
            recent.push_back((now, lag));
            while recent
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(10))
            {
                recent.pop_front();
            }
            let waiting = if !loaded {
                ", loading the snapshot"
            } else if !past_hwm {
                ", applying up to the snapshot's journal position"
            } else {
                ""
            };
            b.set_message(format!(
                "lag {lag} records, {}{waiting}",
                catch_up_eta(&recent)
            ));
        }
        if loaded && past_hwm && lag <= ctx.a.max_lag && lag_error.is_none() {
            break;
        }
        if Instant::now() > deadline {
            bail!("n2 did not catch up in 30 min (lag {lag}, snapshot loaded {loaded})");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}

/// Copy-on-read, in bulk: n1's hot keys (those in its read cache) are read
/// into n2's cache. Writes reach n2's cache as it applies them.
async fn warm_cache(ctx: &Ctx, st: &MigrationRecord) -> anyhow::Result<(usize, u64)> {
    let hot: HotKeysResponse = ctx
        .admin
        .get(&st.from, &api::path::hot_keys(&st.ns, ctx.a.warm_keys))
        .await?;
    let keys = hot.keys;
    let mut found = 0;
    for batch in keys.chunks(10_000) {
        let req = WarmRequest {
            namespace: st.ns.clone(),
            keys: batch.to_vec(),
        };
        let r: WarmResponse = ctx.admin.post(&st.to, api::path::WARM, &req).await?;
        if !r.cache {
            bail!("n2 has no read cache (store.read_cache_mb = 0)");
        }
        found += r.found;
    }
    Ok((keys.len(), found))
}

/// Fences n1's namespace, drains, and compares digests while the fence is
/// still held (a fence that lifted meanwhile makes the comparison moot).
async fn verify(ctx: &Ctx, st: &mut MigrationRecord) -> anyhow::Result<()> {
    let n1 = st.from.clone();
    let t = Instant::now();
    let f = ctx.fence(&n1, 30_000).await?;
    let r = async {
        drain(ctx, &forward(st), &f, Duration::from_secs(25)).await?;
        // n2's own copy: after a rollback it forwards the namespace to n1
        // until the cutover promotes it again.
        let (d1, d2) = tokio::try_join!(ctx.digest(&n1, false), ctx.digest(&st.to, true))?;
        anyhow::Ok((d1, d2))
    }
    .await;
    let lifted = ctx.unfence(&n1).await?;
    st.verify_pause_ms = Some(t.elapsed().as_secs_f64() * 1000.0);
    let (d1, d2) = r?;
    if lifted.lifted != Some(f.fence) {
        bail!("n1's write fence expired before the digests were taken; run again to re-verify");
    }
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

/// The source deployment's name, which its rows carry as their origin (a
/// target's marker GC waits on that deployment's outbox reports).
async fn source_name(ctx: &Ctx, st: &mut MigrationRecord) -> anyhow::Result<String> {
    if let Some(n) = &st.from_name {
        return Ok(n.clone());
    }
    let name = ctx.status(&st.from).await?.name;
    st.from_name = Some(name.clone());
    Ok(name)
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
    let failed = match drained {
        Ok(()) if over => Some(over_budget(t.elapsed()).into()),
        Ok(()) => None,
        // Only running out of time is the budget's doing; any other
        // failure keeps its own cause.
        Err(e) if budget.is_some() && e.is::<DrainDeadline>() => {
            Some(over_budget(t.elapsed()).into())
        }
        Err(e) => Some(e.context("draining the journal at cutover")),
    };
    if let Some(e) = failed {
        return Err(lift_fence(ctx, st, e, max_ms).await);
    }
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
    anyhow!(
        "{cause:#}; lifting n1's fence failed too ({e:#}): n1 lifts it by itself {max_ms} ms \
         after it was taken"
    )
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

/// The drain ran out of time (as opposed to failing).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct DrainDeadline(String);

/// Cutover attempts under `--max-pause-ms` before the migration stops.
const PAUSE_ATTEMPTS: u32 = 5;

/// The cutover's drain would have held writes past `--max-pause-ms`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct OverBudget(String);

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
/// fence and `to` applied `topic` up to its high-water marks.
pub(crate) async fn drain(
    ctx: &Ctx,
    path: &DrainPath<'_>,
    fence: &FenceResponse,
    timeout: Duration,
) -> anyhow::Result<()> {
    let DrainPath {
        from,
        to,
        topic,
        applied,
    } = *path;
    let deadline = Instant::now() + timeout;
    // Every entry of the fenced namespace is below the fence's `outbox_next`:
    // wait for those to ship, not for other namespaces' ongoing writes.
    let below = fence.outbox_next;
    loop {
        let s = ctx.status(from).await?;
        if s.outbox_shipped_below >= below {
            break;
        }
        if Instant::now() > deadline {
            return Err(DrainDeadline(format!(
                "{from}'s outbox did not ship up to entry {below} ({} pending; relay: {}): is the \
                 broker up?",
                s.outbox_pending,
                s.relay_error.as_deref().unwrap_or("no error")
            ))
            .into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (c, t) = (ctx.hw.clone(), topic.to_string());
    let hw = tokio::task::spawn_blocking(move || high_watermarks(&c, &t)).await??;
    loop {
        let stored = applied.of(&ctx.offsets(to).await?);
        if hw
            .iter()
            .all(|(p, h)| stored.get(p).copied().unwrap_or(0) >= *h)
        {
            return Ok(());
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

/// "caught up", "eta 12 s" or "lag not shrinking", from (time, lag) samples.
fn catch_up_eta(recent: &std::collections::VecDeque<(Instant, i64)>) -> String {
    let (Some((t0, l0)), Some((t1, l1))) = (recent.front(), recent.back()) else {
        return String::new();
    };
    if *l1 == 0 {
        return "no journal lag".into();
    }
    let dt = t1.duration_since(*t0).as_secs_f64();
    if dt < 1.0 {
        return "eta ?".into();
    }
    let shrink = (l0 - l1) as f64 / dt;
    if shrink > 0.0 {
        format!("eta {:.0} s", *l1 as f64 / shrink)
    } else {
        "lag not shrinking".into()
    }
}
