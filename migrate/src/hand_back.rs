//! A namespace back onto a source: `migrate --from n3 --to n1` where n1 is
//! an earlier primary that still follows the namespace (it forwards it and
//! applies its primaries' writes). It goes back the way a rollback does
//! (both copies compared and switched under both fences) and is recorded as
//! a new migration, `done`.

use std::collections::BTreeMap;

use anyhow::Context;
use northwest_control::api;
use northwest_control::record::RollbackReport;
use northwest_control::record::{DigestSummary, VerifyReport};
use northwest_control::timeline::Switch;
use northwest_control::{MigrationRecord, Phase, RoutingRecord};

use crate::client::Ctx;
use crate::error::Refused;
use crate::rollback::move_primary;
use crate::timeline::{self, Previous};

/// `migrate --from n3 --to n1` where n1 is a source that follows the
/// namespace (an earlier primary: it forwards the namespace and applies
/// its primaries' writes): the namespace goes back to it the way a
/// rollback does, as a new migration recorded `done`. `prev` is the
/// finished hop that made n3 the primary.
pub(crate) async fn hand_back(ctx: &Ctx, prev: MigrationRecord) -> anyhow::Result<()> {
    let ns = ctx.a.namespace.clone();
    let (back, primary) = (ctx.a.to.clone(), ctx.a.from.clone());
    let (sb, sp) = tokio::try_join!(ctx.status(&back), ctx.status(&primary))?;
    if sb.forwards(&ns).is_none() && sp.forwards(&ns) == Some(back.as_str()) {
        // A run that died after the switch: finish it.
        eprintln!("{back} serves {ns} and {primary} forwards it there already; finishing");
        ctx.demote(&primary)
            .await
            .context("demoting the old primary")?;
        return record(ctx, &prev, (&sb, &sp), None, None).await;
    }
    // Both forwarding each other: a run that died mid-switch (the primary
    // forwards already, the source not yet serving); moving the primary
    // again finishes it, as a rollback's rerun does.
    let mid_switch = sp.forwards(&ns) == Some(back.as_str());
    if sb.forwards(&ns).is_none()
        || !sp.promoted.contains(&ns)
        || (sp.forwards(&ns).is_some() && !mid_switch)
    {
        return Err(Refused(format!(
            "{back} is a source that does not follow namespace {ns} (it forwards {:?}), or \
             {primary} does not serve it: a namespace goes onto a source only back to an earlier \
             primary that still forwards it",
            sb.proxies
        ))
        .into());
    }
    if sb.forwards(&ns) != Some(primary.as_str()) {
        ctx.retarget(&back, sb.forwards(&ns).unwrap_or_default(), &primary)
            .await
            .context("pointing n1 at the primary before it takes the namespace back")?;
    }
    let topic = sp.journal_topic.clone();
    let (detail, boundary) = move_primary(ctx, &sb, (&back, &primary), topic).await?;
    record(ctx, &prev, (&sb, &sp), Some(detail), Some(boundary)).await
}

/// Records the switch back: the new migration (`done`), the routing record,
/// the timeline (the boundary read now, `approximate`, when a finishing run
/// does not know it) and earlier primaries pointed at `back`.
async fn record(
    ctx: &Ctx,
    prev: &MigrationRecord,
    (sb, sp): (&api::NodeStatus, &api::NodeStatus),
    detail: Option<RollbackReport>,
    boundary: Option<BTreeMap<i32, i64>>,
) -> anyhow::Result<()> {
    let ns = ctx.a.namespace.clone();
    let (back, primary) = (ctx.a.to.clone(), ctx.a.from.clone());
    let mut st = crate::state::new_state(&ctx.a, sp);
    // Named after the hop it follows, not the clock: a rerun that finishes
    // this switch records the same migration and timeline epoch again
    // rather than a second one.
    st.id = format!("{}-back", prev.id);
    st.phase = Phase::Done;
    st.write_pause_ms = detail.as_ref().and_then(|d| d.write_pause_ms);
    st.from_name = Some(sp.name.clone());
    if let Some(v) = detail.as_ref().and_then(|d| d.verify.as_ref()) {
        let copy = DigestSummary {
            count: v.count,
            digest: v.digest.clone(),
        };
        st.verify = Some(VerifyReport {
            n1: copy.clone(),
            n2: copy,
            differing_kinds: Vec::new(),
        });
    }
    if !ctx.a.quiet {
        eprintln!("{ns} is back on {back} (after {})", prev.id);
    }
    ctx.write_routing(&RoutingRecord {
        primary: back.clone(),
        replaces: primary.clone(),
        namespace: ns.clone(),
        migration: st.id.clone(),
        rolled_back: false,
    })
    .await?;
    let prev_epoch = Previous {
        name: &sp.name,
        url: &primary,
        opened_by: format!("recorded at {}", st.id),
    };
    let (at, approximate) = timeline::boundary_or_now(ctx, &st.journal_topic, boundary).await?;
    let next = Switch {
        primary: sb.name.clone(),
        primary_url: back.clone(),
        topic: st.journal_topic.clone(),
        at,
        opened_by: format!("migration {} (back to {})", st.id, sb.name),
        now_ms: northwest_store::store::now_ms_pub(),
        approximate,
    };
    let t = timeline::record_switch(ctx, &ns, prev_epoch, next).await?;
    timeline::retarget_older(ctx, &t, &primary, &back).await?;
    ctx.save(&st).await?;
    crate::state::report(&st, ctx.a.json)
}
