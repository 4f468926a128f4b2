//! What a deployment records in ZooKeeper about its migrations: the
//! migration record the orchestrator persists after every step (so a killed
//! one resumes) and the routing record clients follow to the primary.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Phase;

/// Everything a resumed run needs, persisted after every step at
/// [`crate::ZkLayout::migration`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationRecord {
    pub id: String,
    pub ns: String,
    pub from: String,
    pub to: String,
    pub phase: Phase,
    pub journal_topic: String,
    pub snapshot_topic: String,
    pub checkpoint_dir: Option<String>,
    /// A PostgreSQL source's tables (its view is opened by the snapshotter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_pg: Option<PgView>,
    /// Journal high-water marks recorded before the snapshot view was taken.
    pub hwms: BTreeMap<i32, i64>,
    /// When `hwms` were read (ms since the epoch).
    #[serde(default)]
    pub hwms_at_ms: Option<i64>,
    pub kinds: Vec<String>,
    /// Seconds each phase took, keyed by the phase's Rust name
    /// (`MetadataSync`), as the records have always spelt it.
    pub phase_seconds: BTreeMap<String, f64>,
    pub snapshot_rows: u64,
    pub snapshot_resumed_rows: u64,
    pub runs: u32,
    pub max_lag_records: i64,
    pub verify: Option<VerifyReport>,
    /// How long verify held n1's writes: the drain and the two snapshots.
    pub verify_pause_ms: Option<f64>,
    /// How long the two digests took after the writes went on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_digest_ms: Option<f64>,
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
    pub throttle: Option<ThrottleReport>,
    /// The cache warm-up at the end of catch-up: n1's hot keys read into
    /// n2's cache.
    #[serde(default)]
    pub warm: Option<WarmReport>,
    /// Set when `--rollback` moved the primary back to n1 (the record is
    /// then `aborted`, so the namespace can be migrated again).
    #[serde(default)]
    pub rolled_back: Option<RollbackReport>,
    /// The journal's high-water marks under n1's fence at the cutover,
    /// after the drain: n2's epoch of the namespace begins there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutover_at: Option<BTreeMap<i32, i64>>,
    /// How far the snapshot got, saved every few seconds while it streams
    /// and while n2 loads it (status, metrics, the dashboard and the stall
    /// alert read it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_progress: Option<SnapshotProgress>,
    /// Stopped where `--stop-after` asked: nothing is expected to move
    /// until the command runs again (no stall alert meanwhile).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// The name of migration `id`'s snapshot topic of `ns` under `journal`.
pub fn snapshot_topic_name(journal: &str, ns: &str, id: &str) -> String {
    format!("{journal}.snapshot.{ns}.{id}")
}

/// `(namespace, migration id)` of a [`snapshot_topic_name`] under
/// `journal`; `None` for any other topic (a snapshot's `.dlq` included).
pub fn parse_snapshot_topic<'a>(journal: &str, topic: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = topic.strip_prefix(journal)?.strip_prefix(".snapshot.")?;
    let (ns, id) = rest.rsplit_once('.')?;
    let digits = id.strip_prefix('m')?;
    (!ns.is_empty() && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then_some((ns, id))
}

/// A snapshot's progress: rows streamed out of n1's view, rows n2 loaded,
/// and when either last moved. Every field defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotProgress {
    /// Rows the snapshot plan counted in n1's view (an estimate for a
    /// PostgreSQL source).
    pub rows_total: u64,
    /// Rows delivered to the snapshot topic (resumed ones included).
    pub rows_streamed: u64,
    /// Keys and values delivered, bytes.
    pub bytes_streamed: u64,
    /// Rows n2's loader applied.
    pub rows_loaded: u64,
    /// Over the last interval: rows streamed per second while streaming,
    /// rows loaded per second while n2 loads.
    pub rows_per_sec: f64,
    /// At that rate, until the phase's rows are done.
    pub eta_seconds: Option<f64>,
    /// When the orchestrator last saved this (ms since the epoch).
    pub updated_at_ms: i64,
    /// When rows streamed or loaded, or catch-up's lag, last moved forward:
    /// its age is what the stall alert watches.
    pub advanced_at_ms: i64,
}

impl SnapshotProgress {
    /// While the snapshot streams: rows and bytes delivered so far.
    pub fn streamed(&mut self, rows: u64, bytes: u64, now_ms: i64) {
        let before = self.rows_streamed;
        let left = self.rows_total.saturating_sub(rows);
        self.rate_and_eta(rows.saturating_sub(before), left, now_ms);
        if rows > before || self.advanced_at_ms == 0 {
            self.advanced_at_ms = now_ms;
        }
        self.rows_streamed = rows;
        self.bytes_streamed = bytes;
    }

    /// While n2 loads the snapshot and catches up: rows it loaded;
    /// `lag_fell`: catch-up's journal lag reached a new low (progress too).
    pub fn loaded(&mut self, rows: u64, lag_fell: bool, now_ms: i64) {
        let before = self.rows_loaded;
        let left = self.rows_streamed.saturating_sub(rows);
        self.rate_and_eta(rows.saturating_sub(before), left, now_ms);
        if rows > before || lag_fell || self.advanced_at_ms == 0 {
            self.advanced_at_ms = now_ms;
        }
        self.rows_loaded = rows.max(before);
    }

    fn rate_and_eta(&mut self, done: u64, left: u64, now_ms: i64) {
        if self.updated_at_ms > 0 && now_ms > self.updated_at_ms {
            self.rows_per_sec = done as f64 * 1000.0 / (now_ms - self.updated_at_ms) as f64;
        }
        self.eta_seconds = (self.rows_per_sec > 0.0).then(|| left as f64 / self.rows_per_sec);
        self.updated_at_ms = now_ms;
    }
}

impl MigrationRecord {
    /// Seconds phase `p` took, if it ran.
    pub fn seconds_of(&self, p: Phase) -> Option<f64> {
        self.phase_seconds.get(&format!("{p:?}")).copied()
    }
}

/// One copy's digest of the namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestSummary {
    pub count: u64,
    pub digest: String,
}

/// Verify's comparison of both copies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub n1: DigestSummary,
    pub n2: DigestSummary,
    pub differing_kinds: Vec<String>,
}

impl VerifyReport {
    pub fn equal(&self) -> bool {
        self.n1 == self.n2
    }
}

/// What the snapshot's throttle did. Every field defaults: records written
/// before a field existed still parse.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ThrottleReport {
    pub checks: u64,
    /// Checks whose node status could not be read (counted over budget).
    pub unreadable: u64,
    pub slowed: u64,
    pub min_rows_per_sec: Option<u64>,
    pub max_source_p99_ms: u64,
    pub max_apply_lag_records: u64,
}

/// The cache warm-up's outcome: keys asked for and found, or why it failed
/// (an optimisation: a failure never stops the migration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WarmReport {
    Warmed { keys: u64, found: u64, seconds: f64 },
    Failed { error: String },
}

/// What a rollback did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RollbackReport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_pause_ms: Option<f64>,
    /// The comparison of both copies under the fences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<RollbackVerify>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse_topic: Option<String>,
    /// A rollback stopped after its switch was finished by a later run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resumed_after_switch: bool,
    /// When the rollback finished (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<i64>,
}

/// Both copies equal under the rollback's fences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackVerify {
    pub count: u64,
    pub digest: String,
    pub pause_ms: f64,
}

/// A complete snapshot topic, at [`crate::ZkLayout::snapshot`]: what
/// `migrate --from-topics` needs to use it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    pub id: String,
    pub namespace: String,
    pub topic: String,
    pub journal_topic: String,
    /// Journal high-water marks read before the view was taken: every
    /// commit the image lacks is in the journal at or after them.
    pub journal_from: BTreeMap<i32, i64>,
    /// When those marks were read (ms since the epoch): the journal keeps
    /// records at least its `retention.ms` after they were appended, so the
    /// image stays usable at least that long after this.
    pub journal_from_at_ms: Option<i64>,
    pub rows: u64,
    /// The snapshot topic's end offsets once every row was delivered: a
    /// topic that was cut, recreated or lost data is refused.
    #[serde(default)]
    pub topic_ends: BTreeMap<i32, i64>,
    /// The node the view came from.
    pub source: String,
    pub completed_at_ms: i64,
}

/// Where clients of a namespace go, at [`crate::ZkLayout::routing`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingRecord {
    /// The base URL of the node that serves the namespace.
    pub primary: String,
    /// The node it took over from (which forwards to it meanwhile).
    pub replaces: String,
    pub namespace: String,
    /// The migration that wrote this record.
    pub migration: String,
    /// Written by a rollback: `primary` is the original node again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rolled_back: bool,
}

/// Where a PostgreSQL node keeps its tables, without the secret: the
/// password is read from `password_file` on the host that opens the view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgView {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: String,
    pub schema: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_written_before_the_optional_fields_still_reads() {
        let old = serde_json::json!({
            "id": "m1", "ns": "app", "from": "http://a", "to": "http://b", "phase": "catch-up",
            "journal_topic": "j", "snapshot_topic": "s", "checkpoint_dir": null,
            "hwms": {"0": 5}, "kinds": ["Doc"], "phase_seconds": {"Init": 0.1},
            "snapshot_rows": 3, "snapshot_resumed_rows": 0, "runs": 1, "max_lag_records": 0,
            "verify": null, "verify_pause_ms": null, "write_pause_ms": null, "error": null
        });
        let r: MigrationRecord = serde_json::from_value(old).unwrap();
        assert_eq!(r.phase, Phase::CatchUp);
        assert_eq!(r.hwms.get(&0), Some(&5));
        assert_eq!(r.seconds_of(Phase::Init), Some(0.1));
        assert!(r.throttle.is_none() && r.rolled_back.is_none());
    }

    #[test]
    fn a_throttle_report_from_before_its_newer_fields_still_reads() {
        let old = serde_json::json!({"checks": 4, "slowed": 1, "min_rows_per_sec": 500,
                                     "max_source_p99_ms": 5});
        let t: ThrottleReport = serde_json::from_value(old).unwrap();
        assert_eq!((t.checks, t.slowed, t.unreadable), (4, 1, 0));
        assert_eq!(t.max_apply_lag_records, 0);
    }

    #[test]
    fn warm_reports_read_both_ways() {
        let ok: WarmReport =
            serde_json::from_str(r#"{"keys": 10, "found": 7, "seconds": 0.5}"#).unwrap();
        assert!(matches!(ok, WarmReport::Warmed { found: 7, .. }));
        let failed: WarmReport = serde_json::from_str(r#"{"error": "timed out"}"#).unwrap();
        assert_eq!(
            failed,
            WarmReport::Failed {
                error: "timed out".into()
            }
        );
    }

    #[test]
    fn routing_rolled_back_is_written_only_when_true() {
        let r = RoutingRecord {
            primary: "http://b".into(),
            replaces: "http://a".into(),
            namespace: "app".into(),
            migration: "m1".into(),
            rolled_back: false,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert!(v.get("rolled_back").is_none());
        let back: RoutingRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn snapshot_topic_names_parse_back_under_their_journal_only() {
        let name = snapshot_topic_name("j.x", "my.ns", "m17");
        assert_eq!(parse_snapshot_topic("j.x", &name), Some(("my.ns", "m17")));
        assert_eq!(parse_snapshot_topic("j.x", "j.x.dlq"), None);
        assert_eq!(parse_snapshot_topic("j.x", "other.snapshot.app.m1"), None);
        assert_eq!(parse_snapshot_topic("j.x", &format!("{name}.dlq")), None);
        assert_eq!(parse_snapshot_topic("j.x", "j.x.snapshot.app.mx"), None);
    }
}
