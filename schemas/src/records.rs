//! The typed records carried by the two topics.

/// One committed transaction of the origin deployment, in commit order of its ops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRecord {
    /// Transaction id; also the version of every entity the transaction writes.
    pub txn_id: u64,
    pub namespace: String,
    /// Root key element of the entity group, e.g. `Blog:1`.
    pub entity_group: String,
    /// Commit time on the origin, milliseconds since the Unix epoch.
    pub commit_ts_ms: i64,
    /// Deployment that committed the transaction, e.g. `n1`.
    pub origin: String,
    pub ops: Vec<JournalOp>,
}

/// One write of a transaction. A put always carries a value and a delete never
/// does, so the enum rules out the two meaningless combinations the Avro union allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalOp {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

impl JournalOp {
    /// Full key path, e.g. `Blog:1/Comment:7`.
    pub fn key(&self) -> &str {
        match self {
            JournalOp::Put { key, .. } | JournalOp::Delete { key } => key,
        }
    }
}

/// Latest state of one entity as copied into the compacted snapshot topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub namespace: String,
    /// Full key path, e.g. `Blog:1/Comment:7`.
    pub key: String,
    /// Id of the transaction that last wrote the entity.
    pub version: u64,
    /// Tombstone: the entity was deleted at `version`.
    pub deleted: bool,
    pub value: Option<Vec<u8>>,
    pub commit_ts_ms: i64,
    pub snapshot_id: String,
    pub origin: String,
}

impl JournalRecord {
    /// Kafka message key: `<namespace>/<entity_group>`. Keying by entity group
    /// keeps every transaction of a group in one partition, hence in order.
    pub fn topic_key(&self) -> String {
        format!("{}/{}", self.namespace, self.entity_group)
    }
}

impl SnapshotRecord {
    /// Kafka message key: `<namespace>/<key>`, so compaction keeps exactly the
    /// latest record per entity.
    pub fn topic_key(&self) -> String {
        format!("{}/{}", self.namespace, self.key)
    }
}
