//! Snapshot manifests: a snapshot topic is recorded as a complete image
//! (`<root>/snapshots/<ns>/<id>`) only once every row was delivered, and
//! `--from-topics` chooses among the recorded ones.

use anyhow::{anyhow, bail, Context};
use northwest_control::record::SnapshotManifest as Manifest;
use northwest_control::MigrationRecord;
use zookeeper_client as zk;

use crate::client::{watermarks, Ctx};
use crate::error::Refused;

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
pub(crate) async fn manifests(ctx: &Ctx, ns: &str) -> anyhow::Result<Vec<Manifest>> {
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
pub(crate) fn choose(
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
