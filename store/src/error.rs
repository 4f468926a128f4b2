//! Errors of the store layer: one enum per concern, folded into [`StoreError`].

use thiserror::Error;

use crate::types::Version;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    #[error("bad namespace {0:?}: use 1-128 characters of [A-Za-z0-9_.-]")]
    BadNamespace(String),
    #[error("bad key {0:?}: {1}")]
    BadKey(String, &'static str),
    #[error("corrupt encoded key: {0}")]
    Corrupt(String),
}

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("storage engine I/O error: {0}")]
    Io(String),
    #[error("corrupt record in storage: {0}")]
    Corrupt(String),
    /// The engine's server cannot be reached now (a network engine: the
    /// connection was lost or refused); nothing was written, and the same
    /// call may succeed once it is back.
    #[error("storage engine unavailable: {0}")]
    Unavailable(String),
    /// The batch carried a lease's fencing token older than one the engine
    /// recorded: another process holds the entity group now (our ZooKeeper
    /// session expired while we ran on). Nothing was written; a retry
    /// takes the lease afresh.
    #[error("entity-group lease lost to another process, nothing written: {0}")]
    Fenced(String),
}

#[derive(Debug, Error, Clone)]
pub enum CoordError {
    #[error("timed out after {0:?} waiting for the entity-group lock on {1}")]
    LockTimeout(std::time::Duration, String),
    #[error("ZooKeeper session lost; leases were dropped (reconnecting)")]
    SessionLost,
    #[error("ZooKeeper error: {0}")]
    Zk(String),
}

impl CoordError {
    pub fn is_retriable(&self) -> bool {
        true
    }
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Coord(#[from] CoordError),
    #[error("key {0} appears more than once in the transaction: write each key once")]
    DuplicateKey(String),
    #[error("key {key} is outside entity group {group}: a transaction spans one entity group")]
    CrossGroup { key: String, group: String },
    #[error("version mismatch on {key}: expected {expected}, found {found}")]
    VersionMismatch {
        key: String,
        expected: Version,
        found: Version,
    },
    #[error("value of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("journal outbox is full ({0} unshipped entries): is the relay or broker down?")]
    OutboxFull(u64),
    #[error("committed locally, but Kafka has not acknowledged journal entry {seq} yet (sync durability); it will be shipped{}", cause.as_deref().map(|c| format!("; the relay reports: {c}")).unwrap_or_default())]
    JournalPending { seq: u64, cause: Option<String> },
    #[error("the transaction's journal record would be about {size} bytes, over the journal's limit of {limit} bytes (journal.max_message_bytes): split it into smaller transactions")]
    JournalTooLarge { size: usize, limit: usize },
    #[error("transaction {0} was aborted")]
    Aborted(u64),
    #[error("injected failure at crash point {0}")]
    Injected(&'static str),
}

impl StoreError {
    /// Errors a caller may retry as-is (a new attempt may succeed).
    pub fn is_retriable(&self) -> bool {
        match self {
            StoreError::Coord(c) => c.is_retriable(),
            StoreError::Engine(EngineError::Unavailable(_) | EngineError::Fenced(_)) => true,
            _ => false,
        }
    }
}
