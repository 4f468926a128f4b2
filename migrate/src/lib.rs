//! `northwest migrate`: drives a live migration n1 → n2 through the phases of
//! the paper's Figure 2 adapted to the journal. The phase and its progress
//! live in ZooKeeper (`<root>/migrations/<ns>`), so killing the orchestrator
//! at any point and running the command again resumes; `--abort` rolls back
//! from any phase before `switch`, leaving n1 serving as before.
//!
//! The snapshot is streamed from a RocksDB checkpoint that n1 writes on
//! request; the orchestrator opens it read-only, so it must run on n1's host.

//!
//! Owns: the migration state machine and its phases, the client of the
//! nodes' admin API, verify, and the operator commands (`status`, `replay`,
//! `digest`) that talk to running nodes.
//! May use: `northwest-snapshotter`, `northwest-kafka` (Kafka settings) and
//! `northwest-store`; it talks to nodes only over HTTP, never links them.

mod abort;
mod args;
mod client;
pub mod ops;
mod phases;
mod rebuild;
mod rollback;
mod state;
mod throttle;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use northwest_kafka::KafkaSettings;
use northwest_store::Namespace;
use rdkafka::consumer::BaseConsumer;
use serde_json::Value;

pub use args::MigrateArgs;
use client::Ctx;
pub use client::{use_admin_token_file, use_ca_file};
pub use state::{load_state, MigState, Phase, Refused};

pub async fn run(a: MigrateArgs) -> anyhow::Result<()> {
    Namespace::new(&a.namespace).map_err(|e| Refused(format!("namespace: {e}")))?;
    if a.from_topics {
        return rebuild::run(a).await;
    }
    let http = client::admin_http(Duration::from_secs(120));
    let s1 = client::send_json(
        http.get(format!("{}/v1/admin/status", a.from)),
        &format!("n1 at {}: GET /v1/admin/status", a.from),
    )
    .await?;
    let ctx = connect(&a, http, &s1).await?;
    ctx.take_ownership(a.quiet).await?;

    let existing = ctx.load().await?;
    if a.abort {
        return abort::abort(&ctx, existing).await;
    }
    if a.rollback {
        return rollback::rollback(&ctx, existing).await;
    }
    let mut st = match existing {
        Some(st) if st.phase == Phase::Done && (st.from != a.from || st.to != a.to) => {
            return Err(Refused(format!(
                "namespace {} was already migrated from {} to {} (migration {}); \
                 migrating it again from {} needs a new source",
                st.ns, st.from, st.to, st.id, a.from
            ))
            .into());
        }
        Some(st) if st.phase == Phase::Done && s1["proxies"][&st.ns].is_null() => {
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
            return state::report(&st, a.json);
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
                st.phase.cli_name()
            );
            new_state(&a, &s1)
        }
        Some(st) if st.phase != Phase::Aborted => {
            if st.from != a.from || st.to != a.to {
                return Err(Refused(format!(
                    "a migration {} -> {} is in progress for {}; finish or --abort it first",
                    st.from, st.to, st.ns
                ))
                .into());
            }
            eprintln!(
                "resuming migration {} at phase {}",
                st.id,
                st.phase.cli_name()
            );
            st
        }
        _ => new_state(&a, &s1),
    };
    st.runs += 1;
    st.error = None;
    st.phase_started_ms
        .get_or_insert_with(northwest_store::store::now_ms_pub);
    // A run refused by the init checks writes nothing: the record is saved
    // from the first step that passed (or failed rather than refused).
    if st.phase != Phase::Init {
        ctx.save(&st).await?;
    }
    let total = PHASES - 1;
    while st.phase != Phase::Done {
        let phase = st.phase;
        let t = Instant::now();
        let r = phases::run_phase(&ctx, &mut st).await;
        *st.phase_seconds.entry(format!("{phase:?}")).or_default() += t.elapsed().as_secs_f64();
        if let Err(e) = r {
            if let (Some(r), Phase::Init) = (e.downcast_ref::<Refused>(), phase) {
                return Err(Refused(r.0.clone()).into());
            }
            st.error = Some(format!("{e:#}"));
            ctx.save(&st).await?;
            bail!("migration stopped in phase {}: {e:#}\nfix the cause and run the same command again to resume, or run it with --abort to roll back", phase.cli_name());
        }
        if !a.quiet {
            eprintln!(
                "[{}/{total}] {:<14} {:>7.2} s  {}",
                phase as usize + 1,
                phase.cli_name(),
                t.elapsed().as_secs_f64(),
                state::phase_detail(&st, phase)
            );
        }
        st.phase = phase.next();
        st.phase_started_ms = Some(northwest_store::store::now_ms_pub());
        ctx.save(&st).await?;
        if Some(phase) == a.stop_after {
            eprintln!(
                "stopped after phase {} as asked; run again to resume",
                phase.cli_name()
            );
            return Ok(());
        }
    }
    state::report(&st, a.json)
}

/// The orchestrator's connections, for the deployment `status` (a node's
/// `/v1/admin/status`) belongs to: its ZooKeeper root, the broker (with
/// the node's message limit) and the admin API.
async fn connect(a: &MigrateArgs, http: reqwest::Client, status: &Value) -> anyhow::Result<Ctx> {
    let root = status["zk_root"]
        .as_str()
        .ok_or_else(|| anyhow!("the node's status has no zk_root"))?
        .to_string();
    let digest = zk_digest(a.zk_auth_file.as_deref())?;
    let zk = digest
        .connector()
        .with_session_timeout(Duration::from_secs(10))
        .connect(&a.zk)
        .await
        .with_context(|| format!("ZooKeeper at {}", a.zk))?;
    let path = format!("{root}/migrations/{}", a.namespace);
    let mut kafka = KafkaSettings::new(&a.brokers);
    if let Some(p) = &a.kafka_config {
        client::warn_if_world_readable(p);
        kafka.properties = northwest_kafka::read_properties_file(p)
            .map_err(|e| anyhow::anyhow!("--kafka-config {e}"))?;
        northwest_kafka::check_properties(&kafka)
            .with_context(|| format!("--kafka-config {}", p.display()))?;
    }
    // Snapshot rows are as large as n1's values: the same limits as its journal.
    if let Some(max) = status["max_message_bytes"].as_u64() {
        kafka.max_message_bytes = max as usize;
    }
    let hw: BaseConsumer = kafka
        .client_config(&[("group.id", "northwest-migrate")])
        .create()?;
    Ok(Ctx {
        a: a.clone(),
        http,
        zk,
        path,
        root,
        kafka,
        hw: Arc::new(hw),
        version: std::sync::Mutex::new(None),
        acls: digest.acls(),
    })
}

/// The deployment's ZooKeeper credentials from `--zk-auth-file` (none
/// without one).
pub(crate) fn zk_digest(
    file: Option<&std::path::Path>,
) -> anyhow::Result<northwest_store::ZkDigest> {
    let Some(f) = file else {
        return Ok(northwest_store::ZkDigest::default());
    };
    let text =
        std::fs::read_to_string(f).with_context(|| format!("--zk-auth-file {}", f.display()))?;
    client::warn_if_world_readable(f);
    northwest_store::ZkDigest::new(text.trim())
        .map_err(|e| anyhow!("--zk-auth-file {}: {e}", f.display()))
}

/// Phases from init to done.
const PHASES: usize = Phase::Done as usize + 1;

/// A fresh migration record for `a`, given n1's status.
fn new_state(a: &MigrateArgs, s1: &Value) -> MigState {
    let id = format!("m{}", northwest_store::store::now_ms_pub());
    let topic = s1["journal_topic"].as_str().unwrap_or_default().to_string();
    MigState {
        snapshot_topic: format!("{topic}.snapshot.{}.{id}", a.namespace),
        journal_topic: topic,
        id,
        ns: a.namespace.clone(),
        from: a.from.clone(),
        to: a.to.clone(),
        phase: Phase::Init,
        checkpoint_dir: None,
        hwms: BTreeMap::new(),
        hwms_at_ms: None,
        kinds: Vec::new(),
        phase_seconds: BTreeMap::new(),
        snapshot_rows: 0,
        throttle: None,
        warm: None,
        rolled_back: None,
        snapshot_resumed_rows: 0,
        runs: 0,
        max_lag_records: 0,
        verify: None,
        verify_pause_ms: None,
        write_pause_ms: None,
        error: None,
        from_name: None,
        phase_started_ms: Some(northwest_store::store::now_ms_pub()),
    }
}
