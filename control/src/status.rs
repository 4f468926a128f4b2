//! `GET /v1/admin/status`: what a node reports about itself, the one answer
//! the orchestrator, the operator commands and the dashboard all read.

use std::collections::HashMap;

use northwest_store::cache::CacheStats;
use northwest_store::EngineMemory;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `GET /v1/admin/status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    /// This process's claim on the name (ZooKeeper coordination only).
    pub instance: Option<String>,
    /// `source`, `target` or `standalone`.
    pub role: String,
    /// The storage engine: `rocksdb`, `postgres` or `memory`.
    #[serde(default)]
    pub engine: String,
    pub outbox_pending: u64,
    pub outbox_shipped_below: u64,
    pub outbox_next: u64,
    pub journal_topic: String,
    pub max_message_bytes: usize,
    pub zk_root: String,
    pub fenced: Vec<String>,
    /// Namespace -> the base URL this node forwards it to.
    pub proxies: HashMap<String, String>,
    pub promoted: Vec<String>,
    pub promotion_unconfirmed: Vec<String>,
    pub relay_error: Option<String>,
    /// The last marker GC pass's report (see the node's `marker_gc`).
    pub marker_gc: Value,
    /// Snapshot topic GC on this node (`None`: it runs none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_gc: Option<SnapshotGcStatus>,
    pub proxy_problems: Vec<String>,
    pub read_cache: Option<CacheStats>,
    /// The embedded engine's memory (`None`: a database server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_memory: Option<EngineMemory>,
    pub data_latency: DataLatency,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loader: Option<LoaderStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelayStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse_relay: Option<ReverseRelayStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse_apply: Option<ReverseApplyStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply: Option<ApplyStatus>,
    /// Migrations of the deployment that are not finished (as this node
    /// last read their records): phase, snapshot progress, error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrations: Vec<MigrationProgress>,
}

/// `GET /v1/admin/outbox`: the outbox's marks, the same fields status
/// reports, read without anything else.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutboxStatus {
    pub pending: u64,
    /// Every entry below this sequence has been shipped.
    pub shipped_below: u64,
    /// The sequence the next entry takes.
    pub next: u64,
    pub relay_error: Option<String>,
}

/// What the node's snapshot topic GC did last.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotGcStatus {
    /// When the last pass ended, ms since the epoch (`None`: none yet).
    pub last_pass_ms: Option<i64>,
    /// Snapshot topics this process deleted.
    pub deleted: u64,
    /// Why the last pass failed (`None`: it succeeded). Old snapshot
    /// topics stay until a pass succeeds.
    pub last_error: Option<String>,
    /// Since when passes fail, ms since the epoch.
    pub failing_since_ms: Option<i64>,
}

/// A migration in progress as the node last read its record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MigrationProgress {
    pub namespace: String,
    pub id: String,
    pub from: String,
    pub to: String,
    pub phase: crate::Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<crate::record::SnapshotProgress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl NodeStatus {
    /// Where this node forwards `ns`, if it does.
    pub fn forwards(&self, ns: &str) -> Option<&str> {
        self.proxies.get(ns).map(String::as_str)
    }

    /// The first halted journal partition's reason.
    pub fn halted(&self) -> Option<&str> {
        self.apply
            .iter()
            .flat_map(|a| &a.partitions)
            .find_map(|p| p.halted.as_deref())
    }

    /// Journal lag in records over every partition.
    pub fn journal_lag(&self) -> i64 {
        self.apply
            .iter()
            .flat_map(|a| &a.partitions)
            .map(|p| p.lag_records)
            .sum()
    }
}

/// The data API's recent latency.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DataLatency {
    pub window_s: u64,
    pub requests: u64,
    /// `None`: no request in the window.
    pub p99_ms: Option<f64>,
}

/// The snapshot loader on a target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoaderStatus {
    pub topic: String,
    pub running: bool,
    pub rows: u64,
    pub writes_applied: u64,
    pub writes_stale: u64,
    pub dead_lettered: u64,
    pub last_error: Option<String>,
    pub caught_up: bool,
    /// `None`: the broker could not be asked.
    pub lag_records: Option<i64>,
    /// Rows per second the loader applies at most (the migration's
    /// throttle sets it; 0: no limit).
    #[serde(default)]
    pub rate_limit: u64,
}

/// `POST /v1/admin/load-snapshot/rate`: the running loader's rate limit,
/// which lapses unless renewed within [`LOADER_RATE_LEASE_MS`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoaderRateRequest {
    /// Rows per second at most; 0 lifts the limit.
    pub rows_per_s: u64,
}

/// How long a loader rate limit holds without being set again (ms).
pub const LOADER_RATE_LEASE_MS: i64 = 5000;

/// The answer: the limit now and the rows loaded (nothing asked of Kafka).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoaderRateResponse {
    pub rate_limit: u64,
    pub rows: u64,
}

/// The journal relay on a source.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelayStatus {
    pub shipped: u64,
    pub send_errors: u64,
    pub last_error: Option<String>,
}

/// A promoted target's relay of its reverse journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReverseRelayStatus {
    pub topic: String,
    pub shipped: u64,
    pub send_errors: u64,
    pub last_error: Option<String>,
    pub pending: u64,
}

/// A source's loop applying the reverse journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReverseApplyStatus {
    pub topic: String,
    pub running: bool,
    pub transactions: u64,
    pub writes_applied: u64,
    pub dead_lettered: u64,
    pub last_error: Option<String>,
    pub halted: Option<String>,
    pub lag_records: Option<i64>,
    pub lag_error: Option<String>,
}

/// Where a target's journal apply stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyState {
    NotRunning,
    BrokerUnreachable,
    Halted,
    NoPartitions,
    CatchingUp,
    CaughtUp,
    /// A state this build does not know (a newer node's): shown, never
    /// fatal to reading the rest of the status.
    #[serde(other)]
    Unknown,
}

/// A target's journal apply loop.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyStatus {
    pub state: ApplyState,
    /// Why the state is not `catching_up` or `caught_up`, and what to do;
    /// `None` while it applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub running: bool,
    pub last_error: Option<String>,
    pub transactions: u64,
    pub writes_applied: u64,
    pub writes_stale: u64,
    pub writes_blacklisted: u64,
    pub dead_lettered: u64,
    pub batches: u64,
    pub caught_up: bool,
    pub lag_error: Option<String>,
    pub partitions: Vec<PartitionStatus>,
    /// What this node has still to read of each epoch of every recorded
    /// timeline (a follower's lag per epoch); empty with local coordination.
    #[serde(default)]
    pub epochs: Vec<EpochLag>,
    /// Why `epochs` could not be read now (ZooKeeper down, the lag probe
    /// failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs_error: Option<String>,
}

/// One epoch of a namespace's timeline as a reader of the topic sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochLag {
    pub namespace: String,
    pub epoch: u32,
    pub primary: String,
    pub current: bool,
    /// Records of the epoch's range not read yet (all namespaces' records
    /// in that range count: they are read all the same).
    pub lag_records: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionStatus {
    pub partition: i32,
    pub stored: Option<i64>,
    pub high_watermark: i64,
    pub lag_records: i64,
    pub lag_seconds: Option<f64>,
    pub halted: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_helpers_read_the_apply_partitions() {
        let mut s = NodeStatus::default();
        assert_eq!((s.halted(), s.journal_lag()), (None, 0));
        let part = |p, lag, halted: Option<&str>| PartitionStatus {
            partition: p,
            stored: Some(0),
            high_watermark: lag,
            lag_records: lag,
            lag_seconds: None,
            halted: halted.map(str::to_string),
        };
        s.apply = Some(ApplyStatus {
            state: ApplyState::Halted,
            reason: None,
            running: true,
            last_error: None,
            transactions: 0,
            writes_applied: 0,
            writes_stale: 0,
            writes_blacklisted: 0,
            dead_lettered: 0,
            batches: 0,
            caught_up: false,
            lag_error: None,
            partitions: vec![part(0, 3, None), part(1, 4, Some("poison"))],
            epochs: Vec::new(),
            epochs_error: None,
        });
        assert_eq!((s.halted(), s.journal_lag()), (Some("poison"), 7));
    }

    #[test]
    fn an_apply_state_from_a_newer_node_reads_as_unknown() {
        let known: ApplyState = serde_json::from_str(r#""caught_up""#).unwrap();
        assert_eq!(known, ApplyState::CaughtUp);
        let newer: ApplyState = serde_json::from_str(r#""rebalancing""#).unwrap();
        assert_eq!(newer, ApplyState::Unknown);
    }
}
