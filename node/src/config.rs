//! Node configuration: a TOML file, validated, with flag/env overrides applied
//! by the binary. Unknown fields are errors so typos do not pass silently.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod derived;
mod postgres;
mod validate;

pub use postgres::PostgresSection;

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Deployment name (`n1`, `n2`; default `n1`; letters, digits, `_`,
    /// `.`, `-`): carried in journal records as the origin, claimed in
    /// ZooKeeper as `<root>/nodes/<name>/claim` (one process per name), and the
    /// lock domain under `coordination.lock_scope = "deployment"`.
    pub name: String,
    /// Where the store keeps its data: the RocksDB directory and the
    /// checkpoints a snapshot streams from (default `.northwest/n1`).
    /// Overridden by `--data-dir` (`NORTHWEST_DATA_DIR`).
    pub data_dir: PathBuf,
    /// `[http]`: the listener of the data API, the admin API, the dashboard
    /// and `/metrics`, and its authentication and TLS.
    pub http: HttpConfig,
    /// `[store]`: the storage engine, transactions, delete markers and the
    /// read cache.
    pub store: StoreSection,
    /// `[coordination]`: ZooKeeper (or in-process) locks, transaction ids,
    /// and the cutover and migration records.
    pub coordination: CoordinationConfig,
    /// `[journal]`: the Kafka journal this node writes (a source) or
    /// applies (a target).
    pub journal: JournalConfig,
    /// A client properties file (`name=value` lines, as Kafka's tools'
    /// `--command-config`) merged into `[kafka]`: keeps SASL passwords out
    /// of the main config. A name set in both is refused. Default: unset.
    pub kafka_properties_file: Option<PathBuf>,
    /// `[kafka]`: librdkafka properties passed through to every client
    /// (e.g. `"linger.ms" = "5"`; default: none). Unknown or invalid ones are
    /// refused at start with librdkafka's message.
    pub kafka: BTreeMap<String, String>,
}

/// Secret `[kafka]` values (passwords, keys) never print.
impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kafka: BTreeMap<&str, &str> = self
            .kafka
            .iter()
            .map(|(k, v)| {
                let secret = northwest_kafka::is_secret_property(k);
                (k.as_str(), if secret { "<redacted>" } else { v.as_str() })
            })
            .collect();
        f.debug_struct("NodeConfig")
            .field("name", &self.name)
            .field("data_dir", &self.data_dir)
            .field("http", &self.http)
            .field("store", &self.store)
            .field("coordination", &self.coordination)
            .field("journal", &self.journal)
            .field("kafka_properties_file", &self.kafka_properties_file)
            .field("kafka", &kafka)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address and port the node serves on (default `127.0.0.1:8081`). An
    /// address other hosts can reach requires `admin_token_file`.
    /// Overridden by `--listen` (`NORTHWEST_LISTEN`).
    pub listen: SocketAddr,
    /// Largest accepted entity value, bytes (default 1048576 = 1 MiB;
    /// 1..=67108864); larger requests get 413. A transaction body may be 8
    /// times this.
    pub max_value_bytes: usize,
    /// A file holding the admin bearer token (status, metrics, replay,
    /// fence, proxy, promote, checkpoint, snapshot load, digest). Required
    /// when `listen` is not a loopback address. Default: unset (admin API
    /// open to loopback callers). Overridden by `--admin-token-file`
    /// (`NORTHWEST_ADMIN_TOKEN_FILE`).
    pub admin_token_file: Option<PathBuf>,
    /// A TOML file of data-API tokens, each scoped to namespaces
    /// (`[[token]] name = "...", token = "...", namespaces = ["app"]`).
    /// Unset (the default): the data API takes unauthenticated requests.
    /// Overridden by `--data-tokens-file` (`NORTHWEST_DATA_TOKENS_FILE`).
    pub data_tokens_file: Option<PathBuf>,
    /// With `data_tokens_file` set and no `admin_token_file`, the admin API
    /// (fence, promote, offsets, replay) would take any loopback caller
    /// while the data API asks for tokens: such a config is refused at
    /// start unless this is `true`, which says the open admin plane is
    /// meant (a warning is logged at every start). Default: false.
    pub admin_open: bool,
    /// PEM certificate chain: with `tls_key_file`, the listener serves
    /// HTTPS only. Default: unset (plain HTTP); set both or neither.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file` (default: unset).
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA bundle the node's own calls to peers (the proxy forwarding to
    /// n2, the promote call) verify their certificates against; unset: the
    /// public web roots.
    pub tls_ca_file: Option<PathBuf>,
    /// Host names, besides localhost and loopback addresses, that requests
    /// to a loopback listener may name (a reverse proxy on the same host
    /// that keeps the client's Host). Others are refused: a web page that
    /// rebinds its own name to 127.0.0.1 must not reach the node.
    /// Default: none.
    pub allowed_hosts: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Rocksdb,
    Postgres,
    Memory,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// `rocksdb` (the default: RocksDB under `data_dir`), `postgres` (a
    /// PostgreSQL server: `[store.postgres]`) or `memory` (in process, lost
    /// when it exits; for tests).
    pub engine: EngineKind,
    /// fsync every commit before acknowledging it (the default: survives
    /// power loss, not just a process crash; concurrent commits share one
    /// fsync). `false` is the fast mode: a kernel crash or power loss may
    /// drop the last acknowledged writes. With `engine = "postgres"` only
    /// `true` is accepted (commits wait for the server's WAL flush).
    pub sync_writes: bool,
    /// Attempts per transaction, the first included (default 3, as in the
    /// paper; >= 1): a coordination failure (lock timeout, lost ZooKeeper
    /// session) is retried with backoff, nothing else is.
    pub retries: u32,
    /// Transaction ids fetched from ZooKeeper at a time (at least 1;
    /// default 1000).
    pub id_block: u64,
    /// Delete markers older than this may be garbage-collected (fractions
    /// allowed); 0 disables marker GC. On a target node a marker also waits
    /// until the journal records that could carry an older version of its
    /// key have left the broker (see DESIGN.md). Default 168 (7 days);
    /// 0..=876000. On a source or a target (`journal.enabled` or
    /// `journal.apply`) a nonzero value must not be shorter than
    /// `journal.retention_ms`.
    pub marker_retention_hours: f64,
    /// Seconds between marker GC passes (each scans every entity; default
    /// 3600; 1..=86400). The first pass runs 10 s after start, or after
    /// one interval if that is shorter.
    pub marker_gc_interval_s: u64,
    /// MiB of entity records kept in the read cache (moka, frequency and
    /// recency based; default 128; at most 1048576); 0: no cache. A
    /// migration warms the target's cache with the source's hot keys.
    pub read_cache_mb: u64,
    /// MiB RocksDB aims to hold (default 128; 8..=1048576; not a hard limit):
    /// one block cache for every family, holding indexes and filters and
    /// charged with the write buffers (flushed at about half). Besides the read cache.
    pub rocksdb_memory_mb: u64,
    /// The PostgreSQL server of `engine = "postgres"`.
    pub postgres: PostgresSection,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CoordinationMode {
    Zookeeper,
    /// In-process locks: one process only, for development.
    Local,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinationConfig {
    /// `zookeeper` (the default) or `local`: in-process locks and ids, no
    /// name claim, proxy and promotion state not kept across restarts; one
    /// process only, for development. The other fields of this table apply
    /// to `zookeeper` only.
    pub mode: CoordinationMode,
    /// ZooKeeper connect string `host:port[,host:port]` (default
    /// `127.0.0.1:2181`). Overridden by `--zk` (`NW_ZK`).
    pub connect: String,
    /// Root znode shared by every deployment of one migration (n1 and n2;
    /// default `/northwest/default`; `/a[/b...]`, no trailing `/`).
    /// Overridden by `--zk-root` (`NORTHWEST_ZK_ROOT`).
    pub root: String,
    /// ZooKeeper session timeout, ms (default 6000; 4000..=40000): a
    /// crashed process's leases and name claim vanish this long after it
    /// last reached ZooKeeper, and a restarted node may wait this + 2 s for
    /// its old claim to go.
    pub session_timeout_ms: u64,
    /// How long a transaction waits for its entity groups' leases, ms
    /// (default 10000; > 0); then it fails with a lock timeout (retried per
    /// `store.retries`, then 503 `coordination`).
    pub lock_timeout_ms: u64,
    /// A lease not used for this long is given back, ms (more than 0;
    /// default 2000).
    pub lease_idle_ms: u64,
    /// A lease held this long is given back at the end of its next
    /// transaction even if no other process asked for it, ms (default
    /// 5000): the backstop should the hand-over signal be lost.
    pub lease_max_hold_ms: u64,
    /// `deployment`: entity-group locks exclude the processes of this
    /// deployment (its writers, apply loop and snapshot loader); `shared`:
    /// also every other deployment under `root` (the paper's behaviour; n1's
    /// writers then contend with n2's apply loop). Default `deployment`.
    pub lock_scope: LockScope,
    /// A file holding ZooKeeper digest credentials (`user:password`): every
    /// znode under `root` is then created readable and writable only with
    /// them. Every process of the deployment (n1, n2, `migrate
    /// --zk-auth-file`) uses the same. Takes effect for znodes created from
    /// then on: start from a fresh root. Default: unset (open ACLs).
    pub auth_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockScope {
    Deployment,
    Shared,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Acknowledge after the local commit (the outbox entry is in the same write).
    Async,
    /// Acknowledge after Kafka acknowledged the journal record.
    Sync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboxFull {
    Reject,
    Block,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Journal every commit to Kafka (N1 during a migration; default
    /// false). Not together with `apply`.
    pub enabled: bool,
    /// Apply the journal into this node's store (N2; default false): the
    /// node is then a read-only replica until a namespace is promoted.
    pub apply: bool,
    /// Kafka bootstrap servers `host:port[,host:port]` for every client of
    /// the node (default `127.0.0.1:9092`). Overridden by `--brokers`
    /// (`NW_KAFKA`).
    pub brokers: String,
    /// The journal topic (default `northwest.journal`): a source writes it,
    /// its target applies the same one, and a promoted target writes it
    /// too (one history per namespace). Overridden by `--topic`
    /// (`NORTHWEST_TOPIC`).
    pub topic: String,
    /// Partitions of the journal topics the node creates (at least 1;
    /// default 8). An existing topic with another count is used as it is.
    pub partitions: i32,
    /// `async` (the default): acknowledge a write after the local commit
    /// (its outbox entry is in the same write); `sync`: also wait, up to
    /// 10 s, until Kafka acknowledged its journal record, else 503
    /// `journal_pending` (committed, still to be shipped).
    pub durability: Durability,
    /// Most journal entries committed and not yet shipped to Kafka the
    /// outbox holds (default 1000000; >= 1); then `outbox_full` decides.
    pub outbox_limit: u64,
    /// With the outbox full: `reject` (the default) the write with 503
    /// `outbox_full`, or `block`: wait up to 10 s for room, then reject.
    pub outbox_full: OutboxFull,
    /// Where undecodable journal records go (default
    /// `northwest.journal.dlq`; must differ from `topic`). Overridden by
    /// `--dlq-topic` (`NORTHWEST_DLQ_TOPIC`).
    pub dead_letter_topic: String,
    /// `dead-letter` (the default) or `halt` (stop that partition) when a
    /// journal record cannot be decoded.
    pub poison_policy: PoisonPolicy,
    /// Records applied per RocksDB write (default 2000; >= 1).
    pub apply_batch: usize,
    /// How long the relay lets commits gather after one wakes it before it
    /// reads the outbox (ms; default 2; 0..=20): one wake, read and send
    /// per batch of commits rather than per commit. Adds up to about twice
    /// this to replication latency (and to `durability = "sync"` writes).
    pub relay_coalesce_ms: u64,
    /// Count effects per transaction on the target (default false; tests
    /// prove no double apply).
    pub apply_log: bool,
    /// Replication factor of the journal topics the node creates (default
    /// 1); they get `min.insync.replicas` = this − 1, at least 1.
    pub replication_factor: i32,
    /// Retention of the journal topics the node creates, ms (default
    /// 604800000 = 7 days); a re-migration from offset 0 needs all of it.
    /// On a source or a target it must not outlive
    /// `store.marker_retention_hours` (nor be -1) unless marker GC is off.
    pub retention_ms: i64,
    /// The largest journal record (bytes; default 10485760 = 10 MiB, at most
    /// 90 MiB). Producers and every topic the node creates are configured
    /// above it, and it must carry the largest transaction the API accepts
    /// (8 × http.max_value_bytes of body, plus 64 KiB).
    pub max_message_bytes: usize,
    /// Prefix of the Kafka consumer groups the node's readers join (they
    /// show lag in `kafka-consumer-groups`; offsets live in the store):
    /// `<prefix>-apply-<name>`, `-load-`, `-reverse-`. Default: named after
    /// the deployment (`coordination.root`, `/northwest/default` ->
    /// `northwest-default`), so two deployments on one cluster never share
    /// a group.
    pub consumer_group_prefix: String,
    /// A finished migration's snapshot topic is deleted once it is older
    /// than this (hours since it completed; default 168 = 7 days; >= 0)
    /// and no rebuild needs it: a newer complete snapshot of its namespace
    /// exists, or the journal no longer holds the records after it. The
    /// namespace's newest usable snapshot is kept (`migrate --from-topics`
    /// rebuilds from it); a snapshot topic that never completed goes once
    /// its migration is over and it is this old. Every node with
    /// ZooKeeper coordination runs the pass; deleting twice is harmless.
    pub snapshot_retention_hours: f64,
    /// Seconds between snapshot topic GC passes (default 600; 1..=86400).
    pub snapshot_gc_interval_s: u64,
    /// How journal records are framed on the wire: `single-object` (the
    /// default: Avro single-object encoding, the schema named by its
    /// fingerprint) or `confluent` (byte 0 and the schema's id in
    /// `schema_registry_url`, what Kafka Connect's AvroConverter reads).
    /// Readers accept both, so nodes switch one at a time. Snapshot topics
    /// stay single-object (they are the migration's own).
    pub framing: Framing,
    /// A Confluent Schema Registry API (Apicurio Registry's
    /// `.../apis/ccompat/v7`, Confluent's, Karapace): the node registers
    /// its schemas there at start (subjects `northwest.JournalRecord`,
    /// `northwest.SnapshotRecord`) and looks up the ids of Confluent-framed
    /// records it reads. Required by `framing = "confluent"`, and on a node
    /// that reads a journal another node writes that way.
    pub schema_registry_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Framing {
    #[default]
    SingleObject,
    Confluent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoisonPolicy {
    DeadLetter,
    Halt,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            name: "n1".into(),
            data_dir: PathBuf::from(".northwest/n1"),
            http: HttpConfig::default(),
            store: StoreSection::default(),
            coordination: CoordinationConfig::default(),
            journal: JournalConfig::default(),
            kafka_properties_file: None,
            kafka: BTreeMap::new(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8081".parse().expect("literal"),
            max_value_bytes: 1 << 20,
            admin_token_file: None,
            admin_open: false,
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_file: None,
            allowed_hosts: Vec::new(),
            data_tokens_file: None,
        }
    }
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            engine: EngineKind::Rocksdb,
            sync_writes: true,
            retries: 3,
            id_block: 1000,
            marker_retention_hours: 168.0,
            marker_gc_interval_s: 3600,
            read_cache_mb: 128,
            rocksdb_memory_mb: northwest_store::DEFAULT_ROCKSDB_MEMORY_MB,
            postgres: PostgresSection::default(),
        }
    }
}

impl Default for CoordinationConfig {
    fn default() -> Self {
        Self {
            mode: CoordinationMode::Zookeeper,
            connect: "127.0.0.1:2181".into(),
            root: "/northwest/default".into(),
            session_timeout_ms: 6000,
            lock_timeout_ms: 10_000,
            lease_idle_ms: 2000,
            lease_max_hold_ms: 5000,
            lock_scope: LockScope::Deployment,
            auth_file: None,
        }
    }
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            apply: false,
            brokers: "127.0.0.1:9092".into(),
            topic: "northwest.journal".into(),
            partitions: 8,
            durability: Durability::Async,
            outbox_limit: 1_000_000,
            outbox_full: OutboxFull::Reject,
            dead_letter_topic: "northwest.journal.dlq".into(),
            poison_policy: PoisonPolicy::DeadLetter,
            apply_batch: 2000,
            relay_coalesce_ms: 2,
            apply_log: false,
            replication_factor: 1,
            retention_ms: 7 * 24 * 3600 * 1000,
            max_message_bytes: northwest_kafka::DEFAULT_MAX_MESSAGE_BYTES,
            consumer_group_prefix: String::new(),
            snapshot_retention_hours: 168.0,
            snapshot_gc_interval_s: 600,
            framing: Framing::SingleObject,
            schema_registry_url: None,
        }
    }
}

/// Room in a journal message for the record's fixed fields and framing
/// beyond the transaction body's bytes.
const JOURNAL_OVERHEAD: usize = 64 << 10;

/// The largest journal record a Kafka request can carry with room to spare.
const MAX_MESSAGE_CAP: usize = 90 << 20;

impl NodeConfig {
    /// Reads and validates a TOML file.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let cfg = Self::parse(path)?;
        cfg.validate()
            .map_err(|e| format!("config {}: {e}", path.display()))?;
        Ok(cfg)
    }

    /// Reads the file without [`NodeConfig::validate`] (for callers that
    /// apply overrides first).
    pub fn parse(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        // Not the error's Display: it quotes the offending line, which may
        // hold a secret (a `[kafka]` password).
        toml::from_str(&text).map_err(|e| {
            let line = e.span().map_or(0, |s| {
                text[..s.start.min(text.len())].lines().count().max(1)
            });
            format!("config {} line {line}: {}", path.display(), e.message())
        })
    }

    /// Merges `kafka_properties_file` into `kafka` (once, at start).
    pub fn merge_kafka_properties_file(&mut self) -> Result<(), String> {
        let Some(path) = self.kafka_properties_file.take() else {
            return Ok(());
        };
        crate::secrets::warn_if_world_readable(&path, "kafka_properties_file");
        let props = northwest_kafka::read_properties_file(&path)
            .map_err(|e| format!("kafka_properties_file {e}"))?;
        for (k, v) in props {
            if self.kafka.contains_key(&k) {
                return Err(format!(
                    "{k} is set both in [kafka] and in kafka_properties_file {}: keep one",
                    path.display()
                ));
            }
            self.kafka.insert(k, v);
        }
        Ok(())
    }
}
