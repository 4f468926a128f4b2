//! Recording a switch of primary in the namespace's timeline
//! (`<root>/timelines/<ns>`), written conditionally on the znode's version
//! so two writers never lose each other's epoch.

use std::collections::BTreeMap;

use anyhow::Context;
use northwest_control::timeline::{Switch, Timeline};
use zookeeper_client as zk;

use crate::client::{watermarks, Ctx};
use crate::error::RecordError;

/// The primary a switch leaves, for a timeline recorded for the first time.
pub(crate) struct Previous<'a> {
    pub name: &'a str,
    pub url: &'a str,
    pub opened_by: String,
}

/// The namespace's timeline, or `None` when none is recorded yet.
pub(crate) async fn read(ctx: &Ctx, ns: &str) -> Result<Option<(Timeline, i32)>, RecordError> {
    let path = ctx.layout.timeline(ns);
    match ctx.zk.get_data(&path).await {
        Ok((d, stat)) => serde_json::from_slice(&d)
            .map(|t| Some((t, stat.version)))
            .map_err(|e| RecordError::Unreadable {
                path,
                reason: e.to_string(),
            }),
        Err(zk::Error::NoNode) => Ok(None),
        Err(e) => Err(RecordError::zk(format!("reading {path}"))(e)),
    }
}

/// Closes the current epoch of `ns` at `s.at` and opens `s`'s; a timeline
/// recorded for the first time begins with `prev`'s epoch at the journal's
/// log start. Idempotent for a resumed run.
pub(crate) async fn record_switch(
    ctx: &Ctx,
    ns: &str,
    prev: Previous<'_>,
    s: Switch,
) -> anyhow::Result<Timeline> {
    let path = ctx.layout.timeline(ns);
    for _ in 0..3 {
        let (mut t, version) = match read(ctx, ns).await? {
            Some((t, v)) => (t, Some(v)),
            None => {
                // Where the journal starts now, or the switch's boundary if
                // retention already passed it.
                let mut begins = log_starts(ctx, &s.topic).await?;
                for (p, at) in &s.at {
                    begins
                        .entry(*p)
                        .and_modify(|b| *b = (*b).min(*at))
                        .or_insert(*at);
                }
                let t = Timeline::first(
                    ns,
                    prev.name,
                    prev.url,
                    &s.topic,
                    begins,
                    prev.opened_by.clone(),
                    s.now_ms,
                );
                (t, None)
            }
        };
        if !t.switch(s.clone())? {
            return Ok(t);
        }
        let data = serde_json::to_vec(&t).expect("plain data");
        let written = match version {
            Some(v) => ctx.zk.set_data(&path, &data, Some(v)).await.map(|_| ()),
            None => {
                ctx.mkdirs(&ctx.layout.timelines()).await?;
                let opts = zk::CreateMode::Persistent.with_acls(ctx.acls);
                ctx.zk.create(&path, &data, &opts).await.map(|_| ())
            }
        };
        match written {
            Ok(()) => return Ok(t),
            // Another writer got there first: read its epochs and go again.
            Err(zk::Error::BadVersion | zk::Error::NodeExists) => continue,
            Err(e) => return Err(RecordError::zk(format!("writing {path}"))(e).into()),
        }
    }
    anyhow::bail!("the timeline {path} kept changing under this run; run it again")
}

/// Nodes of the timeline (earlier primaries) that forward the namespace to
/// `old` forward it to `new` instead, so no request takes two hops.
pub(crate) async fn retarget_older(
    ctx: &Ctx,
    t: &Timeline,
    old: &str,
    new: &str,
) -> anyhow::Result<()> {
    let ns = &t.namespace;
    let mut older: Vec<&str> = t.epochs.iter().map(|e| e.primary_url.as_str()).collect();
    older.sort_unstable();
    older.dedup();
    for node in older.into_iter().filter(|u| *u != old && *u != new) {
        match ctx.status(node).await {
            Ok(s) if s.forwards(ns) == Some(old) => {
                ctx.retarget(node, old, new)
                    .await
                    .with_context(|| format!("making {node} forward {ns} to {new}"))?;
            }
            Ok(_) => {}
            // A retired node: if it comes back forwarding to `old`, that
            // one forwards on (two hops; refused past that).
            Err(e) => {
                tracing::warn!(%node, error = %e, "an earlier primary did not answer; if it comes back it forwards {ns} to {old}")
            }
        }
    }
    Ok(())
}

/// Removes the kept records of finished hops of `ns` whose epochs have left
/// the journal (`<root>/migration-history/<ns>/<id>`); returns how many.
pub(crate) async fn prune_finished(ctx: &Ctx, ns: &str) -> anyhow::Result<usize> {
    let dir = ctx.layout.finished_dir(ns);
    let ids = match ctx.zk.list_children(&dir).await {
        Ok(ids) => ids,
        Err(zk::Error::NoNode) => return Ok(0),
        Err(e) => return Err(RecordError::zk(format!("listing {dir}"))(e).into()),
    };
    let Some((t, _)) = read(ctx, ns).await? else {
        return Ok(0);
    };
    let Some(topic) = t.current().map(|e| e.topic.clone()) else {
        return Ok(0);
    };
    let starts = log_starts(ctx, &topic).await?;
    let mut pruned = 0;
    for id in ids.iter().filter(|id| t.expired(id, &starts)) {
        let path = ctx.layout.finished(ns, id);
        match ctx.zk.delete(&path, None).await {
            Ok(()) | Err(zk::Error::NoNode) => pruned += 1,
            Err(e) => return Err(RecordError::zk(format!("removing {path}"))(e).into()),
        }
    }
    Ok(pruned)
}

/// Every partition's log start of `topic`.
async fn log_starts(ctx: &Ctx, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
    let (c, t) = (ctx.hw.clone(), topic.to_string());
    let w = tokio::task::spawn_blocking(move || watermarks(&c, &t))
        .await?
        .with_context(|| format!("reading where {topic} starts"))?;
    Ok(w.into_iter().map(|(p, (low, _))| (p, low)).collect())
}

/// A switch's boundary: the marks read under its fences, or (a rerun that
/// does not know them) every partition's high-water mark now, marked
/// approximate.
pub(crate) async fn boundary_or_now(
    ctx: &Ctx,
    topic: &str,
    known: Option<BTreeMap<i32, i64>>,
) -> anyhow::Result<(BTreeMap<i32, i64>, bool)> {
    match known {
        Some(at) => Ok((at, false)),
        None => Ok((ends_now(ctx, topic).await?, true)),
    }
}

/// Every partition's high-water mark of `topic` now: a switch's boundary
/// read after the fact.
async fn ends_now(ctx: &Ctx, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
    let (c, t) = (ctx.hw.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || crate::client::high_watermarks(&c, &t)).await?
}
