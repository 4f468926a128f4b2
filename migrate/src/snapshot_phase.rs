//! The snapshot and catch-up phases: n1's checkpoint streamed to the
//! snapshot topic (throttled to the budgets), n2's loader started, and the
//! wait until n2 is past the snapshot's journal position and close behind;
//! then n2's cache warmed with n1's hot keys.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use northwest_control::api::{
    self, CheckpointRequest, CheckpointResponse, HotKeysResponse, LoadSnapshotRequest,
    LoadSnapshotResponse, WarmRequest, WarmResponse,
};
use northwest_control::record::WarmReport;
use northwest_control::MigrationRecord;
use northwest_snapshotter::{stream_snapshot, SnapshotConfig, SnapshotStats, ZkProgress};
use northwest_store::Namespace;

use crate::client::{high_watermarks, Ctx};
use crate::progress::bar;

pub(crate) async fn snapshot(ctx: &Ctx, st: &mut MigrationRecord) -> anyhow::Result<()> {
    if st.hwms.is_empty() {
        // Recorded before the view is taken: everything committed after the
        // view is in the journal at or after these offsets.
        let (c, t) = (ctx.hw.clone(), st.journal_topic.clone());
        st.hwms_at_ms = Some(northwest_store::store::now_ms_pub());
        st.hwms = tokio::task::spawn_blocking(move || high_watermarks(&c, &t)).await??;
        ctx.save(st).await?;
    }
    if st.checkpoint_dir.is_none() && st.checkpoint_pg.is_none() {
        let req = CheckpointRequest {
            name: st.id.clone(),
        };
        let r: CheckpointResponse = ctx
            .admin
            .post(&st.from, api::path::CHECKPOINT, &req)
            .await?;
        match r.postgres {
            Some(view) => st.checkpoint_pg = Some(view),
            None => st.checkpoint_dir = Some(r.dir),
        }
        ctx.save(st).await?;
    }
    let reader = open_view(st).await?;
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
    let throttle = start_throttle(ctx, st, &cfg, &stats);
    st.throttle = None;
    let b = bar(0, "snapshot", ctx.a.quiet);
    let ticker = show_progress(&b, &stats);
    let stream = stream_snapshot(reader, &ns, &cfg, progress, stats.clone());
    let bytes_before = st
        .snapshot_progress
        .as_ref()
        .map_or(0, |p| p.bytes_streamed);
    let r = with_progress(ctx, st, stream, &stats, bytes_before).await;
    ticker.abort();
    if let Some((task, t)) = throttle {
        task.abort();
        st.throttle = Some(t.report());
    }
    b.finish_and_clear();
    let rows = r??;
    st.snapshot_rows = rows;
    let p = st.snapshot_progress.get_or_insert_with(Default::default);
    let bytes = bytes_before + stats.bytes.load(Ordering::Relaxed);
    p.streamed(rows, bytes, now_ms());
    st.snapshot_resumed_rows += stats.resumed.load(Ordering::Relaxed);
    // Every row is delivered: the topic is now a complete image at `hwms`,
    // usable without n1 (`migrate --from-topics`).
    crate::manifest::record_manifest(ctx, st).await
}

/// The source's consistent view: its RocksDB checkpoint, or a `REPEATABLE
/// READ` view of its PostgreSQL tables taken now (after the high-water
/// marks were recorded, so the journal from them on holds every later
/// commit; a resumed snapshot takes a newer view, which the loader's
/// version checks make as good as the first).
async fn open_view(
    st: &MigrationRecord,
) -> anyhow::Result<Arc<dyn northwest_store::engine::Reader>> {
    if let Some(v) = st.checkpoint_pg.clone() {
        let desc = format!(
            "{}@{}:{}/{} schema {}",
            v.user, v.host, v.port, v.database, v.schema
        );
        return tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let password = match &v.password_file {
                Some(f) => Some(northwest_store::pg::read_password(std::path::Path::new(f))?),
                None => None,
            };
            let cfg = northwest_store::PgConfig {
                host: v.host,
                port: v.port,
                user: v.user,
                dbname: v.database,
                password,
                schema: v.schema,
                pool_size: 1,
                timeout: Duration::from_secs(30),
            };
            Ok(northwest_store::pg::open_view(cfg)?)
        })
        .await?
        .with_context(|| format!("opening a view of n1's PostgreSQL tables ({desc})"));
    }
    let dir = st
        .checkpoint_dir
        .clone()
        .expect("set by the checkpoint request");
    northwest_store::rocks::open_checkpoint(std::path::Path::new(&dir)).with_context(|| {
        format!("opening n1's checkpoint {dir} (the orchestrator must run on n1's host)")
    })
}

/// What the throttle holds the migration to; `None`: no budget asked.
fn budgets(ctx: &Ctx, st: &MigrationRecord) -> Option<crate::throttle::Budgets> {
    let b = crate::throttle::Budgets {
        n1: st.from.clone(),
        n2: st.to.clone(),
        source_p99_ms: ctx.a.max_source_p99_ms.map(|b| b as f64),
        apply_lag: ctx.a.max_apply_lag,
    };
    (b.source_p99_ms.is_some() || b.apply_lag.is_some()).then_some(b)
}

/// The snapshot's closed-loop throttle, when `--max-source-p99-ms` or
/// `--max-apply-lag` asks for one: it sets `cfg.rows_per_sec` every second.
fn start_throttle(
    ctx: &Ctx,
    st: &MigrationRecord,
    cfg: &SnapshotConfig,
    stats: &Arc<SnapshotStats>,
) -> Option<(
    tokio::task::JoinHandle<()>,
    Arc<crate::throttle::ThrottleStats>,
)> {
    budgets(ctx, st).map(|budgets| {
        let t = Arc::new(crate::throttle::ThrottleStats::default());
        let stats = stats.clone();
        // Rows resumed from an earlier run are not throughput.
        let sent =
            move || stats.streamed.load(Ordering::Relaxed) - stats.resumed.load(Ordering::Relaxed);
        let task = tokio::spawn(crate::throttle::control(
            ctx.admin.with_timeout(Duration::from_millis(900)),
            budgets,
            ctx.a.rate,
            cfg.rows_per_sec.clone(),
            sent,
            t.clone(),
        ));
        (task, t)
    })
}

/// The same throttle over n2's loader while it catches up: the rows it
/// loads per second are what the budgets slow (on shared hardware the
/// loader competes with n1's clients too). It starts from the lowest rate
/// the stream needed and may grow without `--rate` (the stream's limit).
/// `None`: no budgets asked.
async fn start_loader_throttle(
    ctx: &Ctx,
    st: &MigrationRecord,
) -> Option<(
    [tokio::task::JoinHandle<()>; 2],
    Arc<crate::throttle::ThrottleStats>,
)> {
    let budgets = budgets(ctx, st)?;
    let t = Arc::new(crate::throttle::ThrottleStats::default());
    let admin = ctx.admin.with_timeout(Duration::from_millis(900));
    let start = st
        .throttle
        .as_ref()
        .and_then(|r| r.min_rows_per_sec)
        .unwrap_or(ctx.a.rate);
    let rate = Arc::new(std::sync::atomic::AtomicU64::new(start));
    // Rows a resumed loader loaded before are not this second's.
    let before = crate::throttle::set_loader_rate(&admin, &st.to, start)
        .await
        .map_or(0, |r| r.rows);
    let loaded = Arc::new(std::sync::atomic::AtomicU64::new(before));
    let driver = tokio::spawn(crate::throttle::drive_loader(
        admin.clone(),
        st.to.clone(),
        rate.clone(),
        loaded.clone(),
    ));
    let sent = move || loaded.load(Ordering::Relaxed);
    let control = tokio::spawn(crate::throttle::control(
        admin,
        budgets,
        0,
        rate,
        sent,
        t.clone(),
    ));
    Some(([driver, control], t))
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

/// Drives `stream` to its end, saving its progress in the record every
/// few seconds, so status, metrics and the dashboard show it (and a stall
/// raises an alert).
async fn with_progress<T>(
    ctx: &Ctx,
    st: &mut MigrationRecord,
    stream: impl std::future::Future<Output = T>,
    stats: &SnapshotStats,
    bytes_before: u64,
) -> anyhow::Result<T> {
    tokio::pin!(stream);
    let mut every = tokio::time::interval(PROGRESS_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            r = &mut stream => return Ok(r),
            _ = every.tick() => {
                let p = st.snapshot_progress.get_or_insert_with(Default::default);
                p.rows_total = stats.total.load(Ordering::Relaxed);
                let bytes = bytes_before + stats.bytes.load(Ordering::Relaxed);
                p.streamed(stats.streamed.load(Ordering::Relaxed), bytes, now_ms());
                save_progress(ctx, st).await?;
            }
        }
    }
}

/// Keeps the snapshot's progress bar on the rows and bytes streamed.
fn show_progress(
    b: &indicatif::ProgressBar,
    stats: &Arc<SnapshotStats>,
) -> tokio::task::JoinHandle<()> {
    let (b, stats) = (b.clone(), stats.clone());
    tokio::spawn(async move {
        loop {
            b.set_length(stats.total.load(Ordering::Relaxed));
            b.set_position(stats.streamed.load(Ordering::Relaxed));
            let mib = stats.bytes.load(Ordering::Relaxed) as f64 / 1048576.0;
            b.set_message(format!("{mib:.1} MiB"));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// How often the record's snapshot progress is saved.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

fn now_ms() -> i64 {
    northwest_store::store::now_ms_pub()
}

/// Saves the record for its progress (bounded: a slow ZooKeeper delays the
/// numbers, not the snapshot). A failure is logged and the next save
/// carries the same numbers; a record changed by someone else stops the
/// run, as any other save would.
async fn save_progress(ctx: &Ctx, st: &MigrationRecord) -> anyhow::Result<()> {
    match tokio::time::timeout(Duration::from_secs(5), ctx.save(st)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e @ crate::error::RecordError::ChangedUnderUs { .. })) => Err(e.into()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "saving the snapshot's progress to the migration record failed; retried in 5 s");
            Ok(())
        }
        Err(_) => {
            tracing::warn!("saving the snapshot's progress took over 5 s; retried in 5 s");
            Ok(())
        }
    }
}

pub(crate) async fn catch_up(ctx: &Ctx, st: &mut MigrationRecord) -> anyhow::Result<()> {
    let n2 = st.to.clone();
    let req = LoadSnapshotRequest {
        topic: st.snapshot_topic.clone(),
    };
    let _: LoadSnapshotResponse = ctx.admin.post(&n2, api::path::LOAD_SNAPSHOT, &req).await?;
    let throttle = start_loader_throttle(ctx, st).await;
    if throttle.is_none() {
        crate::throttle::lift_loader_limit(&ctx.admin, &n2).await;
    }
    let b = bar(st.snapshot_rows, "load", ctx.a.quiet);
    let caught_up = wait_caught_up(ctx, st, &b).await;
    if let Some((tasks, t)) = throttle {
        for task in tasks {
            task.abort();
            // Aborted mid-request, the driver's last limit could land
            // after the lift below.
            let _ = task.await;
        }
        crate::throttle::lift_loader_limit(&ctx.admin, &n2).await;
        st.throttle = Some(crate::throttle::merged(st.throttle.take(), t.report()));
    }
    caught_up?;
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
        wait_caught_up(ctx, st, &b).await?;
    }
    b.finish_and_clear();
    Ok(())
}

/// Waits until n2 loaded the snapshot, passed the recorded journal marks and
/// its lag is under `--max-lag`.
/// How long catch-up may go without n2 loading a row or its journal lag
/// falling (a throttled loader is slow, not stuck).
const STALL_LIMIT: Duration = Duration::from_secs(1800);

async fn wait_caught_up(
    ctx: &Ctx,
    st: &mut MigrationRecord,
    b: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    let n2 = st.to.clone();
    let (mut progressed, mut last_rows) = (Instant::now(), 0);
    // Lag over the last 10 s: the catch-up ETA is the rate it shrinks at.
    let mut recent: std::collections::VecDeque<(Instant, i64)> = Default::default();
    let (mut saved, mut lowest) = (Instant::now(), i64::MAX);
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
        let lag_fell = lag < lowest;
        lowest = lowest.min(lag);
        let rows_now = s2.loader.as_ref().map_or(0, |l| l.rows);
        if rows_now > last_rows || lag_fell {
            (progressed, last_rows) = (Instant::now(), rows_now);
        }
        if saved.elapsed() >= PROGRESS_EVERY {
            let rows = s2.loader.as_ref().map_or(0, |l| l.rows);
            let p = st.snapshot_progress.get_or_insert_with(Default::default);
            p.loaded(rows, lag_fell, now_ms());
            save_progress(ctx, st).await?;
            saved = Instant::now();
        }
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
        if progressed.elapsed() > STALL_LIMIT {
            let limit = s2.loader.as_ref().map_or(0, |l| l.rate_limit);
            bail!(
                "n2 made no progress catching up for 30 min (lag {lag}, snapshot loaded {loaded}, \
                 {last_rows} rows loaded, loader rate limit {limit} rows/s (0: none)): see n2's \
                 status (loader, apply) and log, then run the migration again"
            );
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
