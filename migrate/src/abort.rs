//! `migrate --abort`: roll back from any phase before the cutover.

use anyhow::Context;

use northwest_control::{MigrationRecord, Phase};

use crate::client::Ctx;
use crate::error::Refused;

pub(crate) async fn abort(ctx: &Ctx, st: Option<MigrationRecord>) -> anyhow::Result<()> {
    let Some(mut st) = st else {
        let ns = &ctx.a.namespace;
        match ctx.a.json {
            true => println!(
                "{}",
                serde_json::json!({"ok": true, "namespace": ns, "phase": null,
                    "message": format!("no migration of {ns} in progress")})
            ),
            false => println!("no migration of {ns} in progress"),
        }
        return Ok(());
    };
    match st.phase {
        Phase::Done | Phase::Switch => return Err(switched(&st).into()),
        Phase::Aborted => {
            return said(
                ctx,
                &st,
                &format!("migration {} was already aborted", st.id),
            );
        }
        _ => {}
    }
    // Once n1 forwards to n2, writes exist only on n2: that is the cutover,
    // and rolling back would lose them.
    let s1 = ctx.status(&st.from).await.context("n1 unreachable")?;
    if let Some(t) = s1.forwards(&st.ns) {
        return Err(Refused(format!(
            "n1 already forwards namespace {} to {t}: the cutover happened and writes may exist \
             only there, so it cannot be aborted; finish the switch with `northwest migrate \
             --from {} --to {} --namespace {}`, then move the namespace back with the same \
             command and --rollback",
            st.ns, st.from, st.to, st.ns
        ))
        .into());
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
    let text = format!(
        "migration {} aborted {done}; n1 ({}) keeps serving",
        st.id, st.from
    );
    said(ctx, &st, &text)
}

/// An abort's outcome on stdout: the sentence, or under `--json` the
/// record (its phase says aborted) alone.
fn said(ctx: &Ctx, st: &MigrationRecord, text: &str) -> anyhow::Result<()> {
    match ctx.a.json {
        true => {
            eprintln!("{text}");
            crate::state::report(st, true)
        }
        false => {
            println!("{text}");
            Ok(())
        }
    }
}

/// The refusal of an abort after the switch, with the commands that move
/// the namespace back (the record's own nodes).
fn switched(st: &MigrationRecord) -> Refused {
    let finish = match st.phase {
        Phase::Switch => format!(
            "finish the switch with `northwest migrate --from {} --to {} --namespace {}`, then ",
            st.from, st.to, st.ns
        ),
        _ => String::new(),
    };
    Refused(format!(
        "migration {} already switched {} to {}: writes exist only there, so it cannot be \
         aborted; {finish}move the namespace back with `northwest migrate --from {} --to {} \
         --namespace {} --rollback` (n1 applies the writes n2 took first)",
        st.id, st.ns, st.to, st.from, st.to, st.ns
    ))
}
