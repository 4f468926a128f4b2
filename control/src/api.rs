//! The admin API: every endpoint's path, request and response, and the error
//! body every non-2xx answer carries. The node serialises these types and
//! the orchestrator deserialises them: a field renamed on one side fails to
//! compile on the other.

use std::collections::{BTreeMap, HashMap};

use northwest_store::cache::CacheStats;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The admin endpoints (paths relative to a node's base URL).
pub mod path {
    pub const STATUS: &str = "/v1/admin/status";
    pub const REPLAY: &str = "/v1/admin/replay";
    pub const OFFSETS: &str = "/v1/admin/offsets";
    pub const HISTORY: &str = "/v1/admin/history";
    pub const FENCE: &str = "/v1/admin/fence";
    pub const UNFENCE: &str = "/v1/admin/unfence";
    pub const PROXY: &str = "/v1/admin/proxy";
    pub const PROMOTE: &str = "/v1/admin/promote";
    pub const CHECKPOINT: &str = "/v1/admin/checkpoint";
    pub const LOAD_SNAPSHOT: &str = "/v1/admin/load-snapshot";
    pub const REVERSE_APPLY: &str = "/v1/admin/reverse-apply";
    pub const WARM: &str = "/v1/admin/warm";

    pub fn checkpoint(name: &str) -> String {
        format!("{CHECKPOINT}/{name}")
    }

    pub fn hot_keys(ns: &str, limit: usize) -> String {
        format!("/v1/admin/hot-keys/{ns}?limit={limit}")
    }

    /// The digest of a namespace; `local`: the node's own copy even while it
    /// forwards the namespace.
    pub fn digest(ns: &str, local: bool) -> String {
        match local {
            true => format!("/v1/ns/{ns}/digest?local=true"),
            false => format!("/v1/ns/{ns}/digest"),
        }
    }
}

/// Why a request failed, as the `code` of its error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    BadNamespace,
    BadPath,
    /// A key that does not parse.
    BadKey,
    /// A transaction's key outside its entity group.
    CrossGroup,
    /// A transaction writing one key twice.
    DuplicateKey,
    /// An `If-Match` (or a transaction's `if_version`) that did not hold.
    VersionMismatch,
    NotFound,
    MethodNotAllowed,
    TooLarge,
    UriTooLong,
    Unauthorized,
    Forbidden,
    NotReady,
    Internal,
    Coordination,
    /// The journal outbox is full (is the relay or the broker down?).
    OutboxFull,
    /// Committed locally, but the journal entry is not acknowledged yet
    /// (sync durability).
    JournalPending,
    /// The transaction was aborted.
    Aborted,
    /// A replica refuses writes.
    Replica,
    /// The namespace is forwarded and the forward failed.
    Proxy,
    /// A cutover failed inside its fence.
    Cutover,
    /// The fence the caller drained under lifted meanwhile.
    FenceExpired,
    /// The target refused its promotion.
    PromoteFailed,
    /// The promotion's outcome is unknown; the target was told to demote.
    PromoteUnknown,
    /// A demotion cancelled this promotion attempt first.
    PromoteCancelled,
    /// A confirmation for a node that is not promoted.
    NotPromoted,
    /// An operator's promotion of a node that forwards the namespace.
    Forwards,
    /// Another process holds this node's name.
    NameTaken,
    ApplyUnavailable,
    /// A code this build does not know (a newer node).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BadRequest => "bad_request",
            BadNamespace => "bad_namespace",
            BadPath => "bad_path",
            BadKey => "bad_key",
            CrossGroup => "cross_group",
            DuplicateKey => "duplicate_key",
            VersionMismatch => "version_mismatch",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            TooLarge => "too_large",
            UriTooLong => "uri_too_long",
            Unauthorized => "unauthorized",
            Forbidden => "forbidden",
            NotReady => "not_ready",
            Internal => "internal",
            Coordination => "coordination",
            OutboxFull => "outbox_full",
            JournalPending => "journal_pending",
            Aborted => "aborted",
            Replica => "replica",
            Proxy => "proxy",
            Cutover => "cutover",
            FenceExpired => "fence_expired",
            PromoteFailed => "promote_failed",
            PromoteUnknown => "promote_unknown",
            PromoteCancelled => "promote_cancelled",
            NotPromoted => "not_promoted",
            Forwards => "forwards",
            NameTaken => "name_taken",
            ApplyUnavailable => "apply_unavailable",
            Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub error: String,
}

/// `GET /v1/admin/status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    /// This process's claim on the name (ZooKeeper coordination only).
    pub instance: Option<String>,
    /// `source`, `target` or `standalone`.
    pub role: String,
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
    pub proxy_problems: Vec<String>,
    pub read_cache: Option<CacheStats>,
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
}

/// A target's journal apply loop.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyStatus {
    pub state: ApplyState,
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

/// `POST /v1/admin/fence`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FenceRequest {
    pub namespace: String,
    /// How long the fence may hold before it lifts itself (1..=120000).
    #[serde(default = "FenceRequest::default_max_ms")]
    pub max_ms: u64,
}

impl FenceRequest {
    pub fn default_max_ms() -> u64 {
        10_000
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FenceResponse {
    pub fenced: bool,
    pub namespace: String,
    /// The fence's generation, which the proxy step presents.
    pub fence: u64,
    pub outbox_pending: u64,
    /// Every entry of the fenced namespace is below this sequence.
    pub outbox_next: u64,
}

/// A request naming one namespace (`POST /v1/admin/unfence`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceRequest {
    pub namespace: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnfenceResponse {
    pub fenced: bool,
    pub namespace: String,
    /// The generation of the fence lifted; `None`: none was held.
    pub lifted: Option<u64>,
}

/// `POST /v1/admin/proxy`: forward a namespace to its new primary.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyRequest {
    pub namespace: String,
    pub target: String,
    /// The generation of the fence the caller drained under: the proxy is
    /// refused if that fence has lifted (expired) meanwhile.
    pub fence: u64,
}

/// `DELETE /v1/admin/proxy`: serve the namespace again.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnproxyRequest {
    pub namespace: String,
    /// Keep the namespace's fence (a rollback lifts it after the new
    /// primary forwards back).
    #[serde(default)]
    pub keep_fence: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProxyResponse {
    pub namespace: String,
    /// Where the namespace is forwarded now; `None`: served here.
    pub proxy: Option<String>,
}

/// `POST`/`DELETE /v1/admin/promote`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    pub namespace: String,
    /// The cutover attempt (n1 names it so a demotion can cancel it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<String>,
    /// The switch confirms the cutover's promotion.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub confirm: bool,
    /// An operator's promotion of a replica that forwards the namespace.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PromoteResponse {
    pub namespace: String,
    pub promoted: bool,
}

/// `POST /v1/admin/checkpoint`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointRequest {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointResponse {
    pub dir: String,
}

/// `DELETE /v1/admin/checkpoint/{name}` (removing one that is not there is
/// no error).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DropCheckpointResponse {
    pub removed: String,
}

/// `POST /v1/admin/load-snapshot`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadSnapshotRequest {
    pub topic: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadSnapshotResponse {
    pub loading: String,
    /// The loader of this topic was already running.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub already: bool,
}

/// `POST /v1/admin/reverse-apply`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReverseApplyResponse {
    pub topic: String,
}

/// `GET /v1/admin/hot-keys/{ns}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HotKeysResponse {
    pub keys: Vec<String>,
    pub cache: Option<CacheStats>,
}

/// `POST /v1/admin/warm`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmRequest {
    pub namespace: String,
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WarmResponse {
    pub found: u64,
    /// Whether the node has a read cache at all.
    pub cache: bool,
}

/// `GET /v1/ns/{ns}/digest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestResponse {
    pub namespace: String,
    pub count: u64,
    pub digest: String,
    pub kinds: BTreeMap<String, KindDigest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindDigest {
    pub count: u64,
    pub digest: String,
}

/// `GET /v1/admin/offsets`: stored next offsets per partition.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OffsetsResponse {
    pub journal: BTreeMap<i32, i64>,
    /// Where this node began applying each journal partition.
    pub journal_from: BTreeMap<i32, i64>,
    pub snapshot: Option<BTreeMap<i32, i64>>,
    pub snapshot_topic: Option<String>,
    pub reverse: Option<BTreeMap<i32, i64>>,
}

/// `POST /v1/admin/replay`: exactly one of the three starting points.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_offsets: Vec<PartitionOffset>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_timestamp_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_beginning: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionOffset {
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayResponse {
    /// Where each partition's apply now resumes.
    pub rewound_to: BTreeMap<i32, i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_spell_as_the_wire_does() {
        for (c, s) in [
            (ErrorCode::FenceExpired, "\"fence_expired\""),
            (ErrorCode::NameTaken, "\"name_taken\""),
            (ErrorCode::ApplyUnavailable, "\"apply_unavailable\""),
            (ErrorCode::VersionMismatch, "\"version_mismatch\""),
            (ErrorCode::OutboxFull, "\"outbox_full\""),
        ] {
            assert_eq!(serde_json::to_string(&c).unwrap(), s);
            assert_eq!(format!("\"{c}\""), s);
        }
        let newer: ErrorBody =
            serde_json::from_str(r#"{"code": "from_the_future", "error": "x"}"#).unwrap();
        assert_eq!(newer.code, ErrorCode::Unknown);
    }

    #[test]
    fn a_promote_request_sends_only_what_it_sets() {
        let r = PromoteRequest {
            namespace: "app".into(),
            confirm: true,
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"namespace": "app", "confirm": true})
        );
    }

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
        });
        assert_eq!((s.halted(), s.journal_lag()), (Some("poison"), 7));
    }
}
