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

use anyhow::{anyhow, bail, Context};
use northwest_control::api::{self, LoadSnapshotRequest, LoadSnapshotResponse, NodeStatus};
use northwest_control::record::{DigestSummary, SnapshotManifest as Manifest};
use northwest_control::{AdminClient, MigrationRecord, Phase};
use serde::Serialize;
use zookeeper_client as zk;

use crate::client::{high_watermarks, watermarks, Ctx};
use crate::state::Refused;
use crate::MigrateArgs;

/// Records `st`'s snapshot as complete (after its last row was delivered).
pub(crate) async fn record_manifest(ctx: &Ctx, st: &MigrationRecord) -> anyhow::Result<()> {
    let (c, t) = (ctx.hw.clone(), st.snapshot_topic.clone());
    let ends = tokio::task::spawn_blocking(move || watermarks(&c, &t))
        .await?
        .context("reading the snapshot topic's end offsets")?;
    let m = Manifest {
        topic_ends: ends.into_iter().map(|(p, (_, high))| (p, high)).collect(),
        id: st.id.clone(),
        namespace: st.ns.clone(),
        topic: st.snapshot_topic.clone(),
        journal_topic: st.journal_topic.clone(),
        journal_from: st.hwms.clone(),
        journal_from_at_ms: st.hwms_at_ms,
        rows: st.snapshot_rows,
        source: st.from_name.clone().unwrap_or_else(|| st.from.clone()),
        completed_at_ms: northwest_store::store::now_ms_pub(),
    };
    ctx.mkdirs(&ctx.layout.snapshots(&st.ns)).await?;
    let path = ctx.layout.snapshot(&st.ns, &st.id);
    let data = serde_json::to_vec(&m)?;
    let opts = zk::CreateMode::Persistent.with_acls(ctx.acls);
    match ctx.zk.create(&path, &data, &opts).await {
        Ok(_) => Ok(()),
        // A resumed run that had recorded it already: the same image.
        Err(zk::Error::NodeExists) => ctx
            .zk
            .set_data(&path, &data, None)
            .await
            .map(|_| ())
            .map_err(|e| anyhow!("recording the snapshot manifest {path}: {e}")),
        Err(e) => bail!("recording the snapshot manifest {path}: {e}"),
    }
}

/// The recorded complete snapshots of `ns`, newest first.
async fn manifests(ctx: &Ctx, ns: &str) -> anyhow::Result<Vec<Manifest>> {
    let dir = ctx.layout.snapshots(ns);
    let ids = match ctx.zk.list_children(&dir).await {
        Ok(ids) => ids,
        Err(zk::Error::NoNode) => Vec::new(),
        Err(e) => bail!("listing {dir}: {e}"),
    };
    let mut out = Vec::new();
    for id in ids {
        let path = format!("{dir}/{id}");
        match ctx.zk.get_data(&path).await {
            Ok((d, _)) => match serde_json::from_slice::<Manifest>(&d) {
                Ok(m) => out.push(m),
                Err(e) => {
                    tracing::warn!(%path, error = %e, "skipping an unreadable snapshot manifest")
                }
            },
            Err(zk::Error::NoNode) => {}
            Err(e) => bail!("reading {path}: {e}"),
        }
    }
    // Newest image first: by when its journal offsets were read (a resumed
    // old snapshot can complete after a newer one).
    out.sort_by_key(|m| std::cmp::Reverse(m.journal_from_at_ms.unwrap_or(m.completed_at_ms)));
    Ok(out)
}

/// The snapshot to rebuild from, or a refusal naming what there is.
fn choose(
    all: &[Manifest],
    want: Option<&str>,
    ns: &str,
    journal: &str,
    dir: &str,
) -> Result<Manifest, Refused> {
    let listed = || {
        all.iter()
            .map(|m| format!("{} ({} rows, journal {})", m.id, m.rows, m.journal_topic))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(id) = want {
        return all.iter().find(|m| m.id == id).cloned().ok_or_else(|| {
            Refused(format!(
                "no complete snapshot {id} of namespace {ns} under {dir}; recorded: [{}]",
                listed()
            ))
        });
    }
    all.iter()
        .find(|m| m.journal_topic == journal)
        .cloned()
        .ok_or_else(|| {
            Refused(format!(
                "no complete snapshot of namespace {ns} over journal {journal} is recorded under \
                 {dir} (recorded: [{}]); one is recorded when a `northwest migrate` finishes its \
                 snapshot phase, which needs the source node up",
                listed()
            ))
        })
}

pub(crate) async fn run(a: MigrateArgs, admin: AdminClient) -> anyhow::Result<()> {
    let started = Instant::now();
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
    let ctx = crate::connect(&a, admin, &s3).await?;
    ctx.take_ownership(a.quiet).await?;
    if let Some(h) = s3.halted() {
        return Err(Refused(format!(
            "{n3} halted a journal partition ({h}); restart it with an empty data directory"
        ))
        .into());
    }
    // The topics hold a namespace only while its writes are journaled: a
    // cutover moved them to a node that does not journal them.
    if let Some(mig) = ctx.load().await? {
        if matches!(mig.phase, Phase::Proxy | Phase::Switch | Phase::Done) {
            return Err(Refused(format!(
                "namespace {ns} was cut over to {} (migration {}): the writes it took since are \
                 in no topic, so the topics no longer hold the namespace; copy it from {} instead",
                mig.to, mig.id, mig.to
            ))
            .into());
        }
        if mig.phase != Phase::Aborted && mig.to == n3 {
            return Err(Refused(format!(
                "{n3} is the target of migration {} of {ns} (phase {}): finish or --abort it first",
                mig.id,
                mig.phase.name()
            ))
            .into());
        }
    }
    let dir = ctx.layout.snapshots(&ns);
    let m = choose(
        &manifests(&ctx, &ns).await?,
        a.snapshot.as_deref(),
        &ns,
        &journal,
        &dir,
    )?;
    if m.journal_topic != journal {
        return Err(Refused(format!(
            "snapshot {} continues journal {}, but {n3} applies {journal}",
            m.id, m.journal_topic
        ))
        .into());
    }
    let (c, jt, st) = (ctx.hw.clone(), journal.clone(), m.topic.clone());
    let (jw, sw) = tokio::task::spawn_blocking(move || {
        let jw = watermarks(&c, &jt);
        (jw, watermarks(&c, &st))
    })
    .await?;
    let jw = jw.context("reading the journal's offsets")?;
    let unusable = |why: String| {
        Refused(format!(
            "snapshot {} is unusable: {why}; choose another with --snapshot, or take a fresh one",
            m.id
        ))
    };
    let sw = sw.map_err(|e| unusable(format!("its topic cannot be read ({e:#})")))?;
    if !m.topic_ends.is_empty() {
        if sw.len() != m.topic_ends.len() {
            return Err(unusable(format!(
                "its topic {} has {} partitions, {} when it was written",
                m.topic,
                sw.len(),
                m.topic_ends.len()
            ))
            .into());
        }
        // Compaction keeps offsets and the log start; only a cut, a
        // recreated topic or lost data moves them.
        if let Some((p, (low, high))) = sw
            .iter()
            .find(|(p, (low, high))| *low > 0 || *high < m.topic_ends[p])
        {
            return Err(unusable(format!(
                "its topic {} partition {p} holds offsets {low}..{high}, but 0..{} were written",
                m.topic, m.topic_ends[p]
            ))
            .into());
        }
    }
    if jw.len() != m.journal_from.len() {
        return Err(Refused(format!(
            "the journal {journal} has {} partitions but snapshot {} recorded {}: it was \
             recreated or resized, so the snapshot's offsets mean nothing in it",
            jw.len(),
            m.id,
            m.journal_from.len()
        ))
        .into());
    }
    if let Some((p, h)) = m
        .journal_from
        .iter()
        .find(|(p, h)| jw.get(p).is_some_and(|(_, high)| high < h))
    {
        return Err(Refused(format!(
            "the journal {journal} ends at {} in partition {p}, before snapshot {}'s offset {h}: \
             it was recreated, so the snapshot's offsets mean nothing in it",
            jw[p].1, m.id
        ))
        .into());
    }
    // Partitions whose records just after the image are gone from the
    // journal. Even a node that applied them must not load this image: its
    // marker GC may have removed markers of deletes after the image (GC
    // waits for the journal to drop the records they shadow), and the image's
    // older rows would resurrect those keys.
    let expired: Vec<String> = m
        .journal_from
        .iter()
        .filter(|(p, h)| jw.get(p).is_some_and(|(low, _)| low > h))
        .map(|(p, h)| format!("partition {p} starts at {} > {h}", jw[p].0))
        .collect();
    if !expired.is_empty() {
        return Err(Refused(format!(
            "snapshot {} is too old: the journal no longer holds the records just after it ({}), \
             and its rows could undercut deletes whose markers were collected since; take a fresh \
             snapshot with `northwest migrate` from a live source",
            m.id,
            expired.join("; ")
        ))
        .into());
    }
    let from3 = n3_journal_from(&ctx, &n3, &m).await?;
    let late: Vec<String> = m
        .journal_from
        .iter()
        .filter(|(p, h)| from3.get(p).is_none_or(|f| f > h))
        .map(|(p, h)| match from3.get(p) {
            Some(f) => format!("partition {p} from {f} (the image needs {h})"),
            None => format!("partition {p}: unknown start"),
        })
        .collect();
    if !late.is_empty() {
        return Err(Refused(format!(
            "{n3} began applying the journal after snapshot {}'s offsets ({}), so the records \
             in between would be on neither: restart it with an empty data directory (a fresh \
             target starts at the journal's log start, still at or before those offsets)",
            m.id,
            late.join("; ")
        ))
        .into());
    }
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
    let compared = match &a.compare {
        Some(n2) => {
            let t = Instant::now();
            let c = compare(&ctx, &journal, n2, &n3, &ns).await?;
            if !a.quiet {
                eprintln!(
                    "[3/3] compare: {} at journal position {:?} in {:.1} s",
                    if c.equal { "equal" } else { "DIFFERENT" },
                    c.journal_position,
                    t.elapsed().as_secs_f64()
                );
            }
            Some(c)
        }
        None => None,
    };
    // A dead-lettered journal record was skipped: the copy lacks it if it
    // was of this namespace (n2 skipped it too, so --compare cannot tell).
    let s3 = ctx.status(&n3).await?;
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
    };
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
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
        bail!(
            "{n3} and {} differ at journal position {:?}: n3 {} entities {}, n2 {} entities {}{}",
            c.with,
            c.journal_position,
            c.n3.count,
            c.n3.digest,
            c.n2.count,
            c.n2.digest,
            c.note.map(|n| format!("; {n}")).unwrap_or_default()
        );
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
}

/// n2 and n3 compared at one journal position.
#[derive(Debug, Serialize)]
struct Comparison {
    with: String,
    journal_position: BTreeMap<i32, i64>,
    n2: DigestSummary,
    n3: DigestSummary,
    equal: bool,
    note: Option<String>,
}

/// Digests of `ns` on n2 and n3 while both stand at the same journal
/// position: the journal's end, unchanged from before both reached it to
/// after both digests were read.
async fn compare(
    ctx: &Ctx,
    journal: &str,
    n2: &str,
    n3: &str,
    ns: &str,
) -> anyhow::Result<Comparison> {
    let s2 = ctx.status(n2).await?;
    if s2.role != "target" || s2.journal_topic != journal {
        return Err(Refused(format!(
            "--compare {n2} does not apply journal {journal} (role {}, journal {}): only a node \
             applying the same journal stands at a comparable position",
            s2.role, s2.journal_topic
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
    // A promoted n2 took the namespace's writes after its cutover, and those
    // are in no topic.
    let note = s2.promoted.iter().any(|n| n == ns).then(|| {
        format!(
            "{n2} is the primary of {ns}: writes it took after its cutover are in no topic, \
             so they are not on n3"
        )
    });
    const ATTEMPTS: u32 = 5;
    for _ in 0..ATTEMPTS {
        let (c, t) = (ctx.hw.clone(), journal.to_string());
        let hw = tokio::task::spawn_blocking(move || high_watermarks(&c, &t)).await??;
        let deadline = Instant::now() + Duration::from_secs(120);
        for node in [n2, n3] {
            loop {
                let stored = ctx.offsets(node).await?.journal;
                if hw
                    .iter()
                    .all(|(p, h)| stored.get(p).copied().unwrap_or(0) >= *h)
                {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "{node} did not apply the journal up to {hw:?} in 2 min (stored {stored:?})"
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let (d2, d3) = tokio::try_join!(ctx.digest(n2, false), ctx.digest(n3, false))?;
        let (c, t) = (ctx.hw.clone(), journal.to_string());
        let after = tokio::task::spawn_blocking(move || high_watermarks(&c, &t)).await??;
        if after != hw {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
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
