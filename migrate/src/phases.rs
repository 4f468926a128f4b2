//! One step of each phase: the init checks, metadata sync, the journaling
//! check and the switch here; the snapshot and catch-up in
//! [`crate::snapshot_phase`], verify and the cutover in [`crate::cutover`].

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use northwest_control::api::PromoteRequest;
use northwest_control::{MigrationRecord, Phase, RoutingRecord};

use crate::client::Ctx;
use crate::error::Refused;

pub(crate) async fn run_phase(ctx: &Ctx, st: &mut MigrationRecord) -> anyhow::Result<()> {
    match st.phase {
        Phase::Init => init(ctx, st).await,
        Phase::MetadataSync => metadata_sync(ctx, st).await,
        Phase::Journaling => journal_flowing(ctx, st).await,
        Phase::Snapshot => crate::snapshot_phase::snapshot(ctx, st).await,
        Phase::CatchUp => crate::snapshot_phase::catch_up(ctx, st).await,
        Phase::Verify => crate::cutover::verify(ctx, st).await,
        Phase::Proxy => crate::cutover::cut_over(ctx, st).await,
        Phase::Switch => switch(ctx, st).await,
        Phase::Done | Phase::Aborted => Ok(()),
    }
}

/// Both nodes are what a migration needs, and n1 still serves the namespace:
/// anything else refuses the migration before it changes anything.
async fn init(ctx: &Ctx, st: &mut MigrationRecord) -> anyhow::Result<()> {
    let (n1, n2) = (st.from.clone(), st.to.clone());
    let s1 = ctx.status(&n1).await?;
    let s2 = ctx.status(&n2).await.context("n2 unreachable")?;
    if s1.role != "source" {
        return Err(Refused(format!(
            "n1 ({n1}) is not journaling: set journal.enabled = true in its config and restart it"
        ))
        .into());
    }
    if s2.role != "target" {
        return Err(Refused(format!("n2 ({n2}) does not apply a journal: set journal.apply = true in its config and restart it")).into());
    }
    if s1.journal_topic != s2.journal_topic || s1.zk_root != s2.zk_root {
        return Err(Refused(format!(
            "n1 and n2 must share the journal topic and the ZooKeeper root: n1 {} {}, n2 {} {}",
            s1.journal_topic, s1.zk_root, s2.journal_topic, s2.zk_root
        ))
        .into());
    }
    if let Some(t) = s1.forwards(&st.ns) {
        return Err(Refused(format!(
            "n1 already forwards namespace {} to {t}: it was migrated already",
            st.ns
        ))
        .into());
    }
    st.from_name = Some(s1.name);
    Ok(())
}

/// The store is schemaless: the metadata to carry is the namespace and its
/// kinds, recorded so the report and verify can name them.
async fn metadata_sync(ctx: &Ctx, st: &mut MigrationRecord) -> anyhow::Result<()> {
    let n1 = st.from.clone();
    st.kinds = ctx.digest(&n1, false).await?.kinds.into_keys().collect();
    Ok(())
}

/// n1 ships its journal and n2 applies it.
async fn journal_flowing(ctx: &Ctx, st: &MigrationRecord) -> anyhow::Result<()> {
    let (n1, n2) = (st.from.clone(), st.to.clone());
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
    Ok(())
}

/// n1 forwards the namespace: n2's promotion is confirmed, the routing
/// record names n2, n1's checkpoint goes.
async fn switch(ctx: &Ctx, st: &MigrationRecord) -> anyhow::Result<()> {
    let (n1, n2) = (st.from.clone(), st.to.clone());
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
    Ok(())
}
