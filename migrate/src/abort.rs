//! `migrate --abort`: roll back from any phase before the cutover.

use anyhow::{bail, Context};

use northwest_control::{MigrationRecord, Phase};

use crate::client::Ctx;

pub(crate) async fn abort(ctx: &Ctx, st: Option<MigrationRecord>) -> anyhow::Result<()> {
    let Some(mut st) = st else {
        println!("no migration of {} in progress", ctx.a.namespace);
        return Ok(());
    };
    match st.phase {
        Phase::Done | Phase::Switch => bail!(
            "migration {} already switched to {}: writes exist only there, so it cannot be \
             aborted. Run the same command without --abort to finish the switch, then --rollback \
             to move the namespace back (n1 has applied the writes n2 took)",
            st.id,
            st.to
        ),
        Phase::Aborted => {
            println!("migration {} was already aborted", st.id);
            return Ok(());
        }
        _ => {}
    }
    // Once n1 forwards to n2, writes exist only on n2: that is the cutover,
    // and rolling back would lose them.
    let s1 = ctx.status(&st.from).await.context("n1 unreachable")?;
    if let Some(t) = s1.forwards(&st.ns) {
        bail!(
            "n1 already forwards namespace {} to {t}: the cutover happened and writes may exist \
             only there, so it cannot be aborted. Run the same command without --abort to finish \
             the switch, then --rollback to move the namespace back",
            st.ns
        );
    }
    // n2 is a read-only replica again (a cutover that failed after n1
    // promoted it may have left it promoted) before n1 takes writes again.
    let demoted = ctx.demote(&st.to).await;
    match demoted {
        Ok(_) => {}
        // Only the proxy step promotes n2: before it, an unreachable n2
        // (even one gone for good) cannot hold a promotion to undo.
        Err(e) if st.phase < Phase::Proxy => {
            tracing::warn!(error = %format!("{e:#}"), "n2 unreachable; it was never promoted in phase {:?}, continuing the abort", st.phase);
        }
        Err(e) => {
            return Err(e).context(
                "cannot make n2 a read-only replica again; run --abort again once it is reachable",
            )
        }
    }
    // n1 serves exactly as before: no fence, no proxy.
    ctx.unproxy(&st.from, false)
        .await
        .context("cannot lift n1's fence; run --abort again once it is reachable")?;
    ctx.drop_checkpoint(&st.from, &st.id).await;
    let done = match st.phase.completed() {
        Some(p) => format!("after phase {}", p.name()),
        None => "before completing any phase".to_string(),
    };
    st.phase = Phase::Aborted;
    st.phase_started_ms = Some(northwest_store::store::now_ms_pub());
    ctx.save(&st).await?;
    println!(
        "migration {} aborted {done}; n1 ({}) keeps serving",
        st.id, st.from
    );
    Ok(())
}
