//! The migration's persisted state (`northwest_control::MigrationRecord`,
//! stored in ZooKeeper after every step so a killed orchestrator resumes)
//! and how a run reports it.

use northwest_control::record::{ThrottleReport, WarmReport};
use std::collections::BTreeMap;

use northwest_control::api::NodeStatus;
use northwest_control::{AdminClient, MigrationRecord, Phase, ZkLayout};

/// The migration record of `ns` on `from`'s deployment, read with the
/// deployment's ZooKeeper credentials (`zk_auth_file`, as `--zk-auth-file`)
/// and `admin`'s token.
pub async fn load_state(
    zk_addr: &str,
    zk_auth_file: Option<&std::path::Path>,
    admin: &AdminClient,
    from: &str,
    ns: &str,
) -> anyhow::Result<MigrationRecord> {
    let s1 = admin.status(from).await?;
    let zk = crate::client::zk_digest(zk_auth_file)?
        .connector()
        .connect(zk_addr)
        .await?;
    let path = ZkLayout::new(s1.zk_root).migration(ns);
    let (d, _) = zk
        .get_data(&path)
        .await
        .map_err(|e| anyhow::anyhow!("reading {path}: {e}"))?;
    serde_json::from_slice(&d).map_err(|e| anyhow::anyhow!("the migration record at {path}: {e}"))
}

pub(crate) fn report(st: &MigrationRecord, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        println!("{}", serde_json::to_string(st)?);
        return Ok(());
    }
    println!(
        "\nmigration {} of namespace {}: {} -> {}",
        st.id, st.ns, st.from, st.to
    );
    for p in Phase::steps() {
        if let Some(s) = st.seconds_of(p) {
            println!("  {:<14} {s:>8.2} s  {}", p.name(), phase_detail(st, p));
        }
    }
    println!("  orchestrator runs {}", st.runs);
    Ok(())
}

/// One readable line about what phase `p` did.
pub(crate) fn phase_detail(st: &MigrationRecord, p: Phase) -> String {
    match p {
        Phase::MetadataSync => format!("kinds: {}", st.kinds.join(", ")),
        Phase::Snapshot => {
            let secs = st.seconds_of(Phase::Snapshot).unwrap_or(0.0);
            let rate = if secs > 0.0 {
                format!(", {:.0} rows/s", st.snapshot_rows as f64 / secs)
            } else {
                String::new()
            };
            format!(
                "{} rows{rate} ({} resumed from an earlier run){}",
                st.snapshot_rows,
                st.snapshot_resumed_rows,
                throttle_detail(st.throttle.as_ref())
            )
        }
        Phase::CatchUp => {
            let warm = match &st.warm {
                Some(WarmReport::Failed { error }) => format!("; cache warm-up failed: {error}"),
                Some(WarmReport::Warmed { keys, found, .. }) => {
                    format!("; n2's cache warmed with {found} of n1's {keys} hot keys")
                }
                None => String::new(),
            };
            format!("max journal lag {} records{warm}", st.max_lag_records)
        }
        Phase::Verify => match &st.verify {
            Some(v) if v.equal() => format!(
                "n1 = n2: {} entities, digest {} (writes paused {:.1} ms)",
                v.n1.count,
                v.n1.digest,
                st.verify_pause_ms.unwrap_or(0.0)
            ),
            Some(v) => format!(
                "n1 and n2 DIFFER: n1 {} entities {}, n2 {} entities {}, kinds {:?}",
                v.n1.count, v.n1.digest, v.n2.count, v.n2.digest, v.differing_kinds
            ),
            None => "not run".into(),
        },
        Phase::Proxy => format!(
            "cutover write pause {:.1} ms",
            st.write_pause_ms.unwrap_or(0.0)
        ),
        Phase::Switch => format!("{} is the primary of {}", st.to, st.ns),
        _ => String::new(),
    }
}

fn throttle_detail(t: Option<&ThrottleReport>) -> String {
    match t {
        Some(t) if t.checks == 0 => {
            "; the throttle did not check (the snapshot took under a second)".into()
        }
        Some(t) if t.slowed > 0 => format!(
            "; slowed {} times (down to {} rows/s; n1 p99 up to {} ms, n2 journal lag up to {} records)",
            t.slowed,
            t.min_rows_per_sec.map_or("?".into(), |r| r.to_string()),
            t.max_source_p99_ms,
            t.max_apply_lag_records
        ),
        Some(t) => format!(
            "; stayed within its budgets (n1 p99 up to {} ms, n2 journal lag up to {} records)",
            t.max_source_p99_ms, t.max_apply_lag_records
        ),
        None => String::new(),
    }
}

/// A fresh migration record for `a`, given n1's status.
pub(crate) fn new_state(a: &crate::MigrateArgs, s1: &NodeStatus) -> MigrationRecord {
    let id = format!("m{}", northwest_store::store::now_ms_pub());
    let topic = s1.journal_topic.clone();
    MigrationRecord {
        snapshot_topic: northwest_control::record::snapshot_topic_name(&topic, &a.namespace, &id),
        journal_topic: topic,
        id,
        ns: a.namespace.clone(),
        from: a.from.clone(),
        to: a.to.clone(),
        phase: Phase::Init,
        checkpoint_dir: None,
        checkpoint_pg: None,
        hwms: BTreeMap::new(),
        hwms_at_ms: None,
        kinds: Vec::new(),
        phase_seconds: BTreeMap::new(),
        snapshot_rows: 0,
        throttle: None,
        warm: None,
        rolled_back: None,
        cutover_at: None,
        snapshot_resumed_rows: 0,
        runs: 0,
        max_lag_records: 0,
        verify: None,
        verify_pause_ms: None,
        verify_digest_ms: None,
        write_pause_ms: None,
        error: None,
        from_name: None,
        phase_started_ms: Some(northwest_store::store::now_ms_pub()),
        snapshot_progress: None,
        paused: false,
    }
}
