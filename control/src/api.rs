//! The admin API: every endpoint's path, request and response, and the error
//! body every non-2xx answer carries. The node serialises these types and
//! the orchestrator deserialises them: a field renamed on one side fails to
//! compile on the other.

use std::collections::BTreeMap;

pub use crate::record::PgView;

use northwest_store::cache::CacheStats;
use serde::{Deserialize, Serialize};

pub use crate::status::*;

/// The admin endpoints (paths relative to a node's base URL).
pub mod path {
    pub const STATUS: &str = "/v1/admin/status";
    pub const REPLAY: &str = "/v1/admin/replay";
    pub const OFFSETS: &str = "/v1/admin/offsets";
    /// The outbox's marks alone ([`super::OutboxStatus`]): what a drain
    /// polls every few milliseconds under a fence, without the status's
    /// Kafka round trips.
    pub const OUTBOX: &str = "/v1/admin/outbox";
    pub const HISTORY: &str = "/v1/admin/history";
    pub const FENCE: &str = "/v1/admin/fence";
    pub const UNFENCE: &str = "/v1/admin/unfence";
    pub const PROXY: &str = "/v1/admin/proxy";
    pub const PROMOTE: &str = "/v1/admin/promote";
    pub const CHECKPOINT: &str = "/v1/admin/checkpoint";
    pub const LOAD_SNAPSHOT: &str = "/v1/admin/load-snapshot";
    /// The snapshot loader's rate limit ([`super::LoaderRateRequest`]).
    pub const LOADER_RATE: &str = "/v1/admin/load-snapshot/rate";
    pub const REVERSE_APPLY: &str = "/v1/admin/reverse-apply";
    pub const WARM: &str = "/v1/admin/warm";
    pub const DIGEST_JOBS: &str = "/v1/admin/digest-jobs";

    pub fn digest_job(id: &str) -> String {
        format!("{DIGEST_JOBS}/{id}")
    }

    pub fn checkpoint(name: &str) -> String {
        format!("{CHECKPOINT}/{name}")
    }

    /// A namespace's timeline of primaries (`TimelineView`).
    pub fn timeline(ns: &str) -> String {
        format!("/v1/admin/timeline/{ns}")
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
    /// The storage engine's server (PostgreSQL) cannot be reached now;
    /// nothing was written: retry.
    EngineUnavailable,
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
    /// Every code (a test checks each spells as the wire does).
    pub const ALL: [ErrorCode; 32] = [
        ErrorCode::BadRequest,
        ErrorCode::BadNamespace,
        ErrorCode::BadPath,
        ErrorCode::BadKey,
        ErrorCode::CrossGroup,
        ErrorCode::DuplicateKey,
        ErrorCode::VersionMismatch,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::TooLarge,
        ErrorCode::UriTooLong,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotReady,
        ErrorCode::Internal,
        ErrorCode::Coordination,
        ErrorCode::EngineUnavailable,
        ErrorCode::OutboxFull,
        ErrorCode::JournalPending,
        ErrorCode::Aborted,
        ErrorCode::Replica,
        ErrorCode::Proxy,
        ErrorCode::Cutover,
        ErrorCode::FenceExpired,
        ErrorCode::PromoteFailed,
        ErrorCode::PromoteUnknown,
        ErrorCode::PromoteCancelled,
        ErrorCode::NotPromoted,
        ErrorCode::Forwards,
        ErrorCode::NameTaken,
        ErrorCode::ApplyUnavailable,
        ErrorCode::Unknown,
    ];

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
            EngineUnavailable => "engine_unavailable",
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
    /// Points a node that forwards the namespace to this old primary at
    /// `target` instead (after a chained migration moved the namespace on),
    /// so no request is forwarded more than once. No fence, no promotion:
    /// refused unless the node forwards to `retarget_from` (or to `target`
    /// already).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retarget_from: Option<String>,
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
    /// A RocksDB checkpoint on the node's host (empty for a PostgreSQL node).
    pub dir: String,
    /// A PostgreSQL node's tables: the snapshotter opens its own
    /// `REPEATABLE READ` view of them (taken after this answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PgView>,
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

/// `POST /v1/admin/digest-jobs`: digest this node's own copy of a
/// namespace from a snapshot of the store taken before the answer, in the
/// background. A caller that holds the namespace's writes only until both
/// copies answered compares them at one point without holding writes for
/// the digests themselves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DigestJobRequest {
    pub namespace: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DigestJobState {
    Running,
    Done,
    Failed,
}

/// A digest job (the answer to starting one, and `GET
/// /v1/admin/digest-jobs/{job}`; 404 once the node restarted or forgot it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DigestJob {
    pub job: String,
    pub namespace: String,
    pub state: DigestJobState,
    /// Records read so far (delete markers too).
    pub scanned: u64,
    pub started_at_ms: i64,
    pub elapsed_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<DigestResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
        let mut spelt = std::collections::BTreeSet::new();
        for c in ErrorCode::ALL {
            let wire = serde_json::to_string(&c).unwrap();
            assert_eq!(wire, format!("\"{c}\""));
            assert_eq!(serde_json::from_str::<ErrorCode>(&wire).unwrap(), c);
            assert!(spelt.insert(c.as_str()), "{c} spelt twice");
        }
        assert_eq!(ErrorCode::FenceExpired.as_str(), "fence_expired");
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
}
