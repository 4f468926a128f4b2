//! The migration's persisted state: its phase and progress, stored in
//! ZooKeeper after every step so a killed orchestrator resumes.

use std::collections::BTreeMap;

use anyhow::anyhow;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Init,
    MetadataSync,
    Journaling,
    Snapshot,
    CatchUp,
    Verify,
    Proxy,
    Switch,
    Done,
    Aborted,
}

impl Phase {
    pub(crate) fn next(self) -> Phase {
        use Phase::*;
        match self {
            Init => MetadataSync,
            MetadataSync => Journaling,
            Journaling => Snapshot,
            Snapshot => CatchUp,
            CatchUp => Verify,
            Verify => Proxy,
            Proxy => Switch,
            Switch => Done,
            Done => Done,
            Aborted => Aborted,
        }
    }

    /// The last phase a run completed when the record says `self` is next.
    pub(crate) fn completed(self) -> Option<Phase> {
        let mut p = Phase::Init;
        while p != Phase::Done {
            if p.next() == self {
                return Some(p);
            }
            p = p.next();
        }
        None
    }

    /// The phase as `--stop-after` spells it.
    pub(crate) fn cli_name(self) -> String {
        use clap::ValueEnum;
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_else(|| format!("{self:?}"))
    }
}

/// A migration refused before it changed anything: the command exits with
/// code 2. Any other error stopped it midway (exit code 1), and running the
/// same command again resumes.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Everything a resumed run needs, persisted after every step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MigState {
    pub id: String,
    pub ns: String,
    pub from: String,
    pub to: String,
    pub phase: Phase,
    pub journal_topic: String,
    pub snapshot_topic: String,
    pub checkpoint_dir: Option<String>,
    /// Journal high-water marks recorded before the snapshot view was taken.
    pub hwms: BTreeMap<i32, i64>,
    /// When `hwms` were read (ms since the epoch).
    #[serde(default)]
    pub hwms_at_ms: Option<i64>,
    pub kinds: Vec<String>,
    pub phase_seconds: BTreeMap<String, f64>,
    pub snapshot_rows: u64,
    pub snapshot_resumed_rows: u64,
    pub runs: u32,
    pub max_lag_records: i64,
    pub verify: Option<Value>,
    pub verify_pause_ms: Option<f64>,
    pub write_pause_ms: Option<f64>,
    pub error: Option<String>,
    /// n1's node name (where its proxy state lives in ZooKeeper).
    #[serde(default)]
    pub from_name: Option<String>,
    /// When the current phase began (ms since the epoch): the nodes export
    /// its age, so a migration stuck in a phase can raise an alert.
    #[serde(default)]
    pub phase_started_ms: Option<i64>,
    /// What `--max-source-p99-ms` did during the snapshot.
    #[serde(default)]
    pub throttle: Option<Value>,
    /// The cache warm-up at the end of catch-up: n1's hot keys read into
    /// n2's cache.
    #[serde(default)]
    pub warm: Option<Value>,
    /// Set when `--rollback` moved the primary back to n1 (the record is
    /// then `aborted`, so the namespace can be migrated again).
    #[serde(default)]
    pub rolled_back: Option<Value>,
}

/// The persisted state of the migration of `ns` whose source is `from`.
/// The migration record of `ns` on `from`'s deployment, read with the
/// deployment's ZooKeeper credentials (`zk_auth_file`, as `--zk-auth-file`)
/// and the admin token set with [`crate::client::use_admin_token_file`].
pub async fn load_state(
    zk_addr: &str,
    zk_auth_file: Option<&std::path::Path>,
    from: &str,
    ns: &str,
) -> anyhow::Result<MigState> {
    let s1: Value = crate::client::admin_http(std::time::Duration::from_secs(30))
        .get(format!("{from}/v1/admin/status"))
        .send()
        .await?
        .json()
        .await?;
    let root = s1["zk_root"]
        .as_str()
        .ok_or_else(|| anyhow!("no zk_root"))?;
    let zk = crate::zk_digest(zk_auth_file)?
        .connector()
        .connect(zk_addr)
        .await?;
    let (d, _) = zk.get_data(&format!("{root}/migrations/{ns}")).await?;
    Ok(serde_json::from_slice(&d)?)
}

pub(crate) fn report(st: &MigState, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        println!("{}", serde_json::to_string(st)?);
        return Ok(());
    }
    println!(
        "\nmigration {} of namespace {}: {} -> {}",
        st.id, st.ns, st.from, st.to
    );
    let mut p = Phase::Init;
    while p != Phase::Done {
        if let Some(s) = st.phase_seconds.get(&format!("{p:?}")) {
            println!("  {:<14} {s:>8.2} s  {}", p.cli_name(), phase_detail(st, p));
        }
        p = p.next();
    }
    println!("  orchestrator runs {}", st.runs);
    Ok(())
}

/// One readable line about what phase `p` did.
pub(crate) fn phase_detail(st: &MigState, p: Phase) -> String {
    match p {
        Phase::MetadataSync => format!("kinds: {}", st.kinds.join(", ")),
        Phase::Snapshot => {
            let secs = st.phase_seconds.get("Snapshot").copied().unwrap_or(0.0);
            let rate = if secs > 0.0 {
                format!(", {:.0} rows/s", st.snapshot_rows as f64 / secs)
            } else {
                String::new()
            };
            let throttle = match &st.throttle {
                Some(t) if t["checks"].as_u64().unwrap_or(0) == 0 => {
                    "; the throttle did not check (the snapshot took under a second)".into()
                }
                Some(t) if t["slowed"].as_u64().unwrap_or(0) > 0 => format!(
                    "; slowed {} times (down to {} rows/s; n1 p99 up to {} ms, n2 journal lag up to {} records)",
                    t["slowed"], t["min_rows_per_sec"], t["max_source_p99_ms"], t["max_apply_lag_records"]
                ),
                Some(t) => format!(
                    "; stayed within its budgets (n1 p99 up to {} ms, n2 journal lag up to {} records)",
                    t["max_source_p99_ms"], t["max_apply_lag_records"]
                ),
                None => String::new(),
            };
            format!(
                "{} rows{rate} ({} resumed from an earlier run){throttle}",
                st.snapshot_rows, st.snapshot_resumed_rows
            )
        }
        Phase::CatchUp => {
            let warm = match &st.warm {
                Some(w) if w["error"].is_string() => {
                    format!("; cache warm-up failed: {}", w["error"])
                }
                Some(w) => format!(
                    "; n2's cache warmed with {} of n1's {} hot keys",
                    w["found"], w["keys"]
                ),
                None => String::new(),
            };
            format!("max journal lag {} records{warm}", st.max_lag_records)
        }
        Phase::Verify => match &st.verify {
            Some(v) if v["n1"] == v["n2"] => format!(
                "n1 = n2: {} entities, digest {} (writes paused {:.1} ms)",
                v["n1"]["count"],
                v["n1"]["digest"].as_str().unwrap_or("?"),
                st.verify_pause_ms.unwrap_or(0.0)
            ),
            Some(v) => format!(
                "n1 and n2 DIFFER: n1 {} entities {}, n2 {} entities {}, kinds {}",
                v["n1"]["count"],
                v["n1"]["digest"].as_str().unwrap_or("?"),
                v["n2"]["count"],
                v["n2"]["digest"].as_str().unwrap_or("?"),
                v["differing_kinds"]
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
