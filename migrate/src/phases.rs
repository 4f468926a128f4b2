//! One step of each phase: the init checks, metadata sync, the journaling
//! check and the switch here; the snapshot and catch-up in
//! [`crate::snapshot_phase`], verify and the cutover in [`crate::cutover`].

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use northwest_control::api::PromoteRequest;
use northwest_control::{MigrationRecord, Phase, RoutingRecord};

use northwest_control::timeline::Switch;

use crate::client::Ctx;
use crate::error::Refused;
use crate::timeline::{self, Previous};

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
    // A chained hop moves the namespace on from the target that serves it
    // now (promoted and confirmed by an earlier migration's switch).
    let serves_as_target = s1.role == "target"
        && s1.promoted.contains(&st.ns)
        && !s1.promotion_unconfirmed.contains(&st.ns);
    if s1.role != "source" && !serves_as_target {
        return Err(Refused(format!(
            "n1 ({n1}) does not journal namespace {}: a source (journal.enabled = true) or the \
             target an earlier migration made its primary can be migrated from",
            st.ns
        ))
        .into());
    }
    if s2.role != "target" {
        let back = match s2.role.as_str() {
            "source" => {
                " (a source takes a namespace only back, as an earlier primary that still \
                 forwards it: migrate --from <its primary> --to it after a chained hop)"
            }
            _ => "",
        };
        return Err(Refused(format!("n2 ({n2}) does not apply a journal: set journal.apply = true in its config and restart it{back}")).into());
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
    if !ctx.a.allow_empty
        && !ctx.holds_entities(&n1).await?.unwrap_or_else(|| {
            eprintln!(
                "warning: n1 refused to list namespace {} to this run's token (its data API needs \
             a data token), so an empty namespace is not caught",
                st.ns
            );
            true
        })
    {
        return Err(Refused(format!(
            "n1 ({n1}) holds no entity in namespace {}: is the name misspelt? (a name is case \
             sensitive) To move an empty namespace anyway, run again with --allow-empty",
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
        // A chained hop's n1 is a target: its writes go out by its
        // promoted relay.
        let relay_error = match (s1.relay, s1.reverse_relay) {
            (Some(r), _) => r.last_error,
            (None, Some(r)) => r.last_error,
            (None, None) => None,
        };
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
    let s2 = ctx.status(&n2).await?;
    // None: the run that cut over died before saving where.
    let (at, approximate) =
        timeline::boundary_or_now(ctx, &st.journal_topic, st.cutover_at.clone()).await?;
    let prev = Previous {
        name: st.from_name.as_deref().unwrap_or(&s1.name),
        url: &st.from,
        opened_by: format!("recorded at cutover {}", st.id),
    };
    let next = Switch {
        primary: s2.name,
        primary_url: n2.clone(),
        topic: st.journal_topic.clone(),
        at,
        opened_by: format!("cutover {}", st.id),
        now_ms: northwest_store::store::now_ms_pub(),
        approximate,
    };
    let timeline = timeline::record_switch(ctx, &st.ns, prev, next)
        .await
        .context("recording n2's epoch in the namespace's timeline")?;
    // Earlier primaries that forward to n1 forward to n2 from now on.
    timeline::retarget_older(ctx, &timeline, &st.from, &st.to).await?;
    if s1.promoted.contains(&st.ns) {
        hand_on(ctx, st).await?;
    }
    ctx.drop_checkpoint(&n1, &st.id).await;
    Ok(())
}

/// After a chained hop: n1, which forwards now, is demoted (it stops
/// journaling the namespace).
async fn hand_on(ctx: &Ctx, st: &MigrationRecord) -> anyhow::Result<()> {
    let n1 = st.from.as_str();
    ctx.demote(n1)
        .await
        .context("demoting n1 (it forwards the namespace to n2 already)")?;
    Ok(())
}
