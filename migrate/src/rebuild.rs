//! Re-migration from the topics alone (`migrate --from-topics`): a fresh
//! target n3 gets a namespace from a complete snapshot topic plus the
//! journal, with n1 stopped or gone, and is compared with n2 at one journal
//! position.
//!
//! A snapshot topic is an image of the namespace at journal offsets `H`
//! (the high-water marks read before n1's view was taken). Its manifest is
//! recorded in ZooKeeper (`<root>/snapshots/<ns>/<id>`) only once every row
//! was delivered, so a half-streamed topic is never used. The image plus
//! every journal record at or after `H` is the namespace; so n3 must have
//! applied each journal partition from an offset at or before `H` without
//! a gap (its `journal_from`, recorded when it first started).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use northwest_control::api::{self, LoadSnapshotRequest, LoadSnapshotResponse, NodeStatus};
use northwest_control::record::SnapshotManifest as Manifest;
use northwest_control::{AdminClient, Phase};
use serde::Serialize;

use crate::client::{watermarks, Ctx};
use crate::compare::{compare, Comparison};
use crate::error::Refused;
use crate::image::{check_n3_start, check_offsets};
use crate::manifest::{choose, manifests};
use crate::MigrateArgs;

pub(crate) async fn run(a: MigrateArgs, admin: AdminClient) -> anyhow::Result<()> {
    let started = Instant::now();
    let (ns, n3) = (a.namespace.clone(), a.to.clone());
    let (ctx, journal) = preflight(&a, admin).await?;
    let dir = ctx.layout.snapshots(&ns);
    let m = choose(
        &manifests(&ctx, &ns).await?,
        a.snapshot.as_deref(),
        &ns,
        &journal,
        &dir,
    )?;
    let (c, jt, st) = (ctx.hw.clone(), journal.clone(), m.topic.clone());
    let (jw, sw) = tokio::task::spawn_blocking(move || {
        let jw = watermarks(&c, &jt);
        (jw, watermarks(&c, &st))
    })
    .await?;
    let jw = jw.context("reading the journal's offsets")?;
    let sw = sw.map_err(|e| format!("its topic cannot be read ({e:#})"));
    check_offsets(&m, &journal, &n3, &jw, sw)?;
    let from3 = n3_journal_from(&ctx, &n3, &m).await?;
    check_n3_start(&m, &n3, &from3)?;
    if !a.quiet {
        eprintln!(
            "[1/3] checks: snapshot {} of {ns} ({} rows from {}, topic {}); n3 applies the \
             journal from {:?}, the image needs {:?}",
            m.id, m.rows, m.source, m.topic, from3, m.journal_from
        );
    }
    let t = Instant::now();
    let rows = load(&ctx, &n3, &m).await?;
    if !a.quiet {
        eprintln!(
            "[2/3] load: {rows} rows in {:.1} s, journal caught up",
            t.elapsed().as_secs_f64()
        );
    }
    let (compared, not_compared) = compare_if_asked(&ctx, &a, &journal).await?;
    let warning = dead_letter_warning(&ctx, &n3, &ns).await?;
    let report = RebuildReport {
        warning,
        rebuilt: &ns,
        to: &n3,
        snapshot: &m,
        n3_journal_from: &from3,
        journal_log_start: jw.iter().map(|(p, (low, _))| (*p, *low)).collect(),
        loaded_rows: rows,
        seconds: started.elapsed().as_secs_f64(),
        compare: compared.as_ref(),
        not_compared,
    };
    finish(&a, &report)
}

/// n3 is a target that may be rebuilt, and no migration holds the
/// namespace in a way that puts writes outside the topics: the orchestrator's
/// connections and n3's journal topic.
async fn preflight(a: &MigrateArgs, admin: AdminClient) -> anyhow::Result<(Ctx, String)> {
    let (ns, n3) = (a.namespace.clone(), a.to.clone());
    let s3 = admin
        .status(&n3)
        .await
        .with_context(|| format!("n3 at {n3}"))?;
    if s3.role != "target" {
        return Err(Refused(format!(
            "{n3} does not apply a journal: set journal.apply = true in its config and restart it"
        ))
        .into());
    }
    if s3.promoted.contains(&ns) {
        return Err(Refused(format!(
            "{n3} is the primary of namespace {ns} (it takes client writes), not a copy to \
             rebuild from the topics"
        ))
        .into());
    }
    let journal = s3.journal_topic.clone();
    let ctx = Ctx::connect(a, admin, &s3).await?;
    ctx.take_ownership(a.quiet).await?;
    if let Some(h) = s3.halted() {
        return Err(Refused(format!(
            "{n3} halted a journal partition ({h}); restart it with an empty data directory"
        ))
        .into());
    }
    // Every primary journals to the one journal topic (n1 before a
    // cutover, n2 after it, n1 again after a rollback), so the image plus the
    // journal from its marks is the namespace whichever node serves it now.
    if let Some(mig) = ctx.load().await? {
        if mig.phase != Phase::Aborted && mig.to == n3 {
            return Err(Refused(format!(
                "{n3} is the target of migration {} of {ns} (phase {}): finish or --abort it first",
                mig.id,
                mig.phase.name()
            ))
            .into());
        }
    }
    Ok((ctx, journal))
}

/// With `--compare n2`: n3 and n2 compared at one journal position.
async fn compare_if_asked(
    ctx: &Ctx,
    a: &MigrateArgs,
    journal: &str,
) -> anyhow::Result<(Option<Comparison>, Option<String>)> {
    let (ns, n3) = (&a.namespace, &a.to);
    let not_run = |why: String| {
        if !a.quiet {
            eprintln!(
                "[3/3] compare: not run ({why}); give --compare <a target of the same journal, \
                 or the source journaling to it>"
            );
        }
        Ok((None, Some(why)))
    };
    let with = match &a.compare {
        Some(n2) => n2.clone(),
        None => match default_comparand(ctx, ns, n3).await {
            Ok(n2) => n2,
            Err(why) => return not_run(why),
        },
    };
    let t = Instant::now();
    let c = match compare(ctx, journal, &with, n3, ns).await {
        Ok(c) => c,
        // Asked for, a comparison that cannot be made fails the run; the
        // default one is a courtesy: the rebuild stands, and says why it
        // went uncompared.
        Err(e) if a.compare.is_none() => {
            return not_run(format!("comparing with the primary {with}: {e:#}"))
        }
        Err(e) => return Err(e),
    };
    if !a.quiet {
        eprintln!(
            "[3/3] compare with {with}: {} at journal position {:?} in {:.1} s",
            if c.equal { "equal" } else { "DIFFERENT" },
            c.journal_position,
            t.elapsed().as_secs_f64()
        );
    }
    Ok((Some(c), None))
}

/// Without `--compare`: the namespace's primary (its routing record), when
/// it answers and applies the same journal (a target promoted for it); the
/// reason otherwise.
async fn default_comparand(ctx: &Ctx, ns: &str, n3: &str) -> Result<String, String> {
    let path = ctx.layout.routing(ns);
    let (data, _) = ctx
        .zk
        .get_data(&path)
        .await
        .map_err(|e| format!("no routing record {path}: {e}"))?;
    let r: northwest_control::RoutingRecord =
        serde_json::from_slice(&data).map_err(|e| format!("{path}: {e}"))?;
    if r.primary == n3 {
        return Err(format!("{n3} is the namespace's primary"));
    }
    let s = ctx
        .status(&r.primary)
        .await
        .map_err(|e| format!("its primary {} does not answer: {e}", r.primary))?;
    match s.role.as_str() {
        "target" | "source" => Ok(r.primary),
        role => Err(format!(
            "its primary {} is a {role}, at no journal position to compare at",
            r.primary
        )),
    }
}

/// A dead-lettered journal record was skipped: the copy lacks it if it was
/// of this namespace (n2 skipped it too, so `--compare` cannot tell).
async fn dead_letter_warning(ctx: &Ctx, n3: &str, ns: &str) -> anyhow::Result<Option<String>> {
    let s3 = ctx.status(n3).await?;
    let dead = s3.apply.as_ref().map_or(0, |a| a.dead_lettered);
    let warning = (dead > 0).then(|| {
        format!(
            "{n3} dead-lettered {dead} journal records (any namespace): any of namespace {ns} is \
             missing from the copy; see its dead-letter topic"
        )
    });
    if let Some(w) = &warning {
        tracing::warn!("{w}");
        eprintln!("warning: {w}");
    }
    Ok(warning)
}

/// Prints the report; a comparison that found a difference fails the run.
fn finish(a: &MigrateArgs, report: &RebuildReport<'_>) -> anyhow::Result<()> {
    let (ns, n3, m, rows, compared) = (
        &a.namespace,
        &a.to,
        report.snapshot,
        report.loaded_rows,
        report.compare,
    );
    if a.json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        println!(
            "\nnamespace {ns} rebuilt on {n3} from snapshot {} ({} rows) plus the journal",
            m.id, rows
        );
        if let Some(c) = &compared {
            println!(
                "  compared with {} at journal position {:?}: {}",
                c.with,
                c.journal_position,
                if c.equal { "equal" } else { "DIFFERENT" }
            );
        }
    }
    if let Some(c) = compared.filter(|c| !c.equal) {
        let e = anyhow::anyhow!(
            "{n3} and {} differ at journal position {:?}: n3 {} entities {}, n2 {} entities {}{}",
            c.with,
            c.journal_position,
            c.n3.count,
            c.n3.digest,
            c.n2.count,
            c.n2.digest,
            c.note
                .as_ref()
                .map(|n| format!("; {n}"))
                .unwrap_or_default()
        );
        return Err(match a.json {
            true => northwest_control::Reported(format!("{e:#}")).into(),
            false => e,
        });
    }
    Ok(())
}

/// Where n3 began applying each journal partition, once its apply loop has
/// assigned them all (waited for up to 60 s after a start).
async fn n3_journal_from(ctx: &Ctx, n3: &str, m: &Manifest) -> anyhow::Result<BTreeMap<i32, i64>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let off = ctx.offsets(n3).await?;
        let (from, stored) = (off.journal_from, off.journal);
        // Every partition assigned: a missing start is then really unknown
        // (a store from before starts were recorded).
        if m.journal_from.keys().all(|p| stored.contains_key(p)) {
            return Ok(from);
        }
        if Instant::now() > deadline {
            let a = ctx.status(n3).await?.apply;
            bail!(
                "{n3}'s apply loop has not started on every journal partition after 60 s \
                 (state {:?}, error {:?}): is the broker reachable from it?",
                a.as_ref().map(|a| a.state),
                a.as_ref().and_then(|a| a.last_error.as_deref())
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Starts n3's snapshot loader and waits until it loaded every row and n3's
/// journal lag is under `--max-lag`; returns the rows n3 loaded.
async fn load(ctx: &Ctx, n3: &str, m: &Manifest) -> anyhow::Result<u64> {
    let req = LoadSnapshotRequest {
        topic: m.topic.clone(),
    };
    let _: LoadSnapshotResponse = ctx.admin.post(n3, api::path::LOAD_SNAPSHOT, &req).await?;
    let b = crate::progress::bar(m.rows, "load", ctx.a.quiet);
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let s = ctx.status(n3).await?;
        if let Some(rows) = loaded(&s, n3, m, ctx.a.max_lag, &b)? {
            b.finish_and_clear();
            return Ok(rows);
        }
        if Instant::now() > deadline {
            bail!(
                "n3 did not load snapshot {} in 30 min (loader {:?}, journal lag {})",
                m.id,
                s.loader,
                s.journal_lag()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// From n3's status: the rows loaded once the load is done (`None`: not
/// yet), or why it cannot finish.
fn loaded(
    s: &NodeStatus,
    n3: &str,
    m: &Manifest,
    max_lag: i64,
    b: &indicatif::ProgressBar,
) -> anyhow::Result<Option<u64>> {
    if let Some(h) = s.halted() {
        bail!("{n3} halted a journal partition: {h}");
    }
    let Some(l) = &s.loader else {
        bail!("{n3} has no snapshot loader (was it restarted?): run the same command again");
    };
    if l.topic != m.topic {
        bail!(
            "{n3} loads {} instead of {}: another migration replaced the loader",
            l.topic,
            m.topic
        );
    }
    let Some(apply) = s.apply.as_ref().filter(|a| a.running) else {
        bail!(
            "{n3}'s journal apply loop is not running ({:?}): see its log",
            s.apply.as_ref().and_then(|a| a.last_error.as_deref())
        );
    };
    if l.dead_lettered > 0 {
        bail!(
            "n3 dead-lettered {} rows of snapshot {} ({:?}): its copy of the namespace is \
             incomplete; see n3's log and its dead-letter topic",
            l.dead_lettered,
            m.id,
            l.last_error
        );
    }
    b.set_position(l.rows);
    let lag = s.journal_lag();
    b.set_message(match &l.last_error {
        Some(e) => format!("journal lag {lag}; loader error: {e}"),
        None => format!("journal lag {lag}"),
    });
    Ok((l.caught_up && apply.lag_error.is_none() && lag <= max_lag).then_some(l.rows))
}

/// What `--from-topics --json` prints.
#[derive(Serialize)]
struct RebuildReport<'a> {
    warning: Option<String>,
    rebuilt: &'a str,
    to: &'a str,
    snapshot: &'a Manifest,
    n3_journal_from: &'a BTreeMap<i32, i64>,
    journal_log_start: BTreeMap<i32, i64>,
    loaded_rows: u64,
    seconds: f64,
    compare: Option<&'a Comparison>,
    /// Why no comparison ran (none was asked for and the primary could not
    /// be compared with).
    not_compared: Option<String>,
}
