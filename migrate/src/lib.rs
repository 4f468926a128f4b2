//! `northwest migrate`: drives a live migration n1 → n2 through the phases of
//! the paper's Figure 2 adapted to the journal. The phase and its progress
//! live in ZooKeeper (`<root>/migrations/<ns>`), so killing the orchestrator
//! at any point and running the command again resumes; `--abort` rolls back
//! from any phase before `switch`, leaving n1 serving as before.
//!
//! The snapshot is streamed from a RocksDB checkpoint that n1 writes on
//! request; the orchestrator opens it read-only, so it must run on n1's host.
//!
//! Owns: the migration state machine and its phases, verify, the rebuild
//! from the topics, and the operator commands (`status`, `replay`,
//! `digest`) that talk to running nodes.
//! May use: `northwest-control` (the admin API's types and client, the
//! records and the ZooKeeper layout), `northwest-snapshotter`,
//! `northwest-kafka` (Kafka settings) and `northwest-store`; it talks to
//! nodes only over HTTP, never links them.

mod abort;
mod args;
mod client;
mod compare;
mod cutover;
mod digests;
mod drain;
mod error;
mod hand_back;
mod image;
mod manifest;
pub mod ops;
mod phases;
mod progress;
mod rebuild;
mod rollback;
mod snapshot_phase;
mod state;
mod throttle;
mod timeline;
pub mod timeline_cmd;

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use northwest_control::api::NodeStatus;
use northwest_control::AdminClient;
use northwest_store::Namespace;

pub use args::MigrateArgs;
use client::Ctx;
pub use error::{MigrateError, Refused};
pub use northwest_control::{MigrationRecord, Phase};
pub use state::load_state;

/// How long one admin call of a migration may take (a digest of a large
/// namespace is the slowest).
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `northwest migrate` with `admin` (the nodes' admin token and CA).
pub async fn run(a: MigrateArgs, admin: AdminClient) -> Result<(), MigrateError> {
    run_steps(a, admin).await.map_err(MigrateError::from)
}

async fn run_steps(a: MigrateArgs, admin: AdminClient) -> anyhow::Result<()> {
    Namespace::new(&a.namespace).map_err(|e| Refused(format!("namespace: {e}")))?;
    if a.from_topics {
        return rebuild::run(a, admin).await;
    }
    let s1 = admin
        .status(&a.from)
        .await
        .with_context(|| format!("n1 at {}", a.from))?;
    let ctx = Ctx::connect(&a, admin, &s1).await?;
    ctx.take_ownership(a.quiet).await?;
    // Read again: another orchestrator may have moved the namespace on
    // while this run waited for it (the status read before is stale).
    let s1 = ctx
        .status(&a.from)
        .await
        .with_context(|| format!("n1 at {}", a.from))?;

    let existing = ctx.load().await?;
    if a.abort {
        return abort::abort(&ctx, existing).await;
    }
    if a.rollback {
        return rollback::rollback(&ctx, existing).await;
    }
    let existing = match existing {
        // A chained hop: the namespace moves on from the node it was
        // migrated to. The finished record is kept for the timeline.
        Some(st) if st.phase == Phase::Done && st.to == a.from && st.from != a.to => {
            ctx.keep_finished(&st).await?;
            match timeline::prune_finished(&ctx, &st.ns).await {
                Ok(0) => {}
                Ok(n) => eprintln!("removed {n} record(s) of finished hops whose journal expired"),
                Err(e) => eprintln!("warning: pruning finished hops' records failed: {e:#}"),
            }
            eprintln!(
                "namespace {} moves on from {} (migrated there from {} by {}); a new migration",
                st.ns, st.to, st.from, st.id
            );
            // Back onto a source: an earlier primary that still follows it.
            if ctx.status(&a.to).await?.role == "source" {
                return hand_back::hand_back(&ctx, st).await;
            }
            None
        }
        other => other,
    };
    let Some(mut st) = resume_or_start(existing, &a, &s1)? else {
        return Ok(());
    };
    drive(&ctx, &mut st).await
}

/// The record this run continues (a new one when there is none, or when the
/// recorded one may be replaced); `None`: the migration is done already
/// (reported). Refused when the record belongs to another migration.
fn resume_or_start(
    existing: Option<MigrationRecord>,
    a: &MigrateArgs,
    s1: &NodeStatus,
) -> anyhow::Result<Option<MigrationRecord>> {
    let st = match existing {
        Some(st) if st.phase == Phase::Done && st.to == a.from && st.from == a.to => {
            return Err(Refused(format!(
                "namespace {} was migrated from {} to {} (migration {}): moving it back is a \
                 rollback; run the same command with --from {} --to {} --rollback",
                st.ns, st.from, st.to, st.id, st.from, st.to
            ))
            .into());
        }
        Some(st) if st.phase == Phase::Done && (st.from != a.from || st.to != a.to) => {
            return Err(Refused(format!(
                "namespace {} was migrated from {} to {} (migration {}): {} is its primary \
                 now, so a next hop goes --from {}",
                st.ns, st.from, st.to, st.id, st.to, st.to
            ))
            .into());
        }
        Some(st) if st.phase == Phase::Done && s1.forwards(&st.ns).is_none() => {
            return Err(Refused(format!(
                "migration {} of {} is recorded done, but n1 does not forward the namespace: a \
                 rollback stopped after its switch; run with --rollback to finish it",
                st.id, st.ns
            ))
            .into());
        }
        Some(st) if st.phase == Phase::Done => {
            eprintln!(
                "migration {} of namespace {} is already done (n2 {} is primary)",
                st.id, st.ns, st.to
            );
            state::report(&st, a.json)?;
            return Ok(None);
        }
        // A record that never got past the checks (no checkpoint, no fence)
        // is replaced by a corrected command rather than blocking it.
        Some(st)
            if st.phase != Phase::Aborted
                && st.phase <= Phase::Journaling
                && (st.from != a.from || st.to != a.to) =>
        {
            eprintln!(
                "replacing migration {} ({} -> {}), which stopped in {} before changing anything",
                st.id,
                st.from,
                st.to,
                st.phase.name()
            );
            state::new_state(a, s1)
        }
        Some(st) if st.phase != Phase::Aborted => {
            if st.from != a.from || st.to != a.to {
                return Err(Refused(format!(
                    "a migration {} -> {} is in progress for {}; finish or --abort it first",
                    st.from, st.to, st.ns
                ))
                .into());
            }
            eprintln!("resuming migration {} at phase {}", st.id, st.phase.name());
            st
        }
        _ => state::new_state(a, s1),
    };
    Ok(Some(st))
}

/// Runs the phases from the record's phase to done, saving the record after
/// every step; a failure is recorded and says how to resume.
async fn drive(ctx: &Ctx, st: &mut MigrationRecord) -> anyhow::Result<()> {
    let a = &ctx.a;
    st.runs += 1;
    st.error = None;
    st.paused = false;
    st.phase_started_ms
        .get_or_insert_with(northwest_store::store::now_ms_pub);
    // A run refused by the init checks writes nothing: the record is saved
    // from the first step that passed (or failed rather than refused).
    if st.phase != Phase::Init {
        ctx.save(st).await?;
    }
    let total = PHASES - 1;
    while st.phase != Phase::Done {
        let phase = st.phase;
        let t = Instant::now();
        let r = phases::run_phase(ctx, st).await;
        *st.phase_seconds.entry(format!("{phase:?}")).or_default() += t.elapsed().as_secs_f64();
        if let Err(e) = r {
            if let (Some(r), Phase::Init) = (e.downcast_ref::<Refused>(), phase) {
                return Err(Refused(r.0.clone()).into());
            }
            st.error = Some(format!("{e:#}"));
            ctx.save(st).await?;
            bail!("migration stopped in phase {}: {e:#}\nfix the cause and run the same command again to resume, or run it with --abort to roll back", phase.name());
        }
        if !a.quiet {
            eprintln!(
                "[{}/{total}] {:<14} {:>7.2} s  {}",
                phase as usize + 1,
                phase.name(),
                t.elapsed().as_secs_f64(),
                state::phase_detail(st, phase)
            );
        }
        st.phase = phase.next();
        st.phase_started_ms = Some(northwest_store::store::now_ms_pub());
        st.paused = Some(phase) == a.stop_after;
        ctx.save(st).await?;
        if Some(phase) == a.stop_after {
            eprintln!(
                "stopped after phase {} as asked; run again to resume",
                phase.name()
            );
            // Under --json the record says where it stopped.
            return match a.json {
                true => state::report(st, true),
                false => Ok(()),
            };
        }
    }
    state::report(st, a.json)
}

/// Phases from init to done.
const PHASES: usize = Phase::Done as usize + 1;
