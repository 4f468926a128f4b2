//! The snapshotter: streams every entity of a namespace (delete markers
//! included, as versioned rows) from one consistent, read-only view of n1's
//! store (a RocksDB checkpoint) to a compacted topic, in chunks whose progress
//! is checkpointed so a killed snapshotter resumes where it stopped. The
//! loader side on n2 is the consumer's apply loop with the snapshot decoder.
//!
//! Owns: the snapshot stream, its plan and per-range progress.
//! May use: `northwest-kafka` (Kafka settings, topic admin),
//! `northwest-store`, `northwest-schemas`.

pub mod progress;
pub mod stream;

pub use progress::{MemProgress, Plan, ProgressStore, RangeCursor, ZkProgress};
pub use stream::{snapshot_topic, stream_snapshot, SnapshotConfig, SnapshotStats};

use northwest_kafka::KafkaClientError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Kafka(#[from] KafkaClientError),
    #[error(transparent)]
    Store(#[from] northwest_store::StoreError),
    #[error(transparent)]
    Engine(#[from] northwest_store::EngineError),
    #[error("progress store: {0}")]
    Progress(String),
    #[error("encoding a snapshot row: {0}")]
    Encode(String),
}

impl From<rdkafka::error::KafkaError> for SnapshotError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        SnapshotError::Kafka(e.into())
    }
}
