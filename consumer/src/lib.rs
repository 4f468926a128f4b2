//! The journal consumer on N2: the apply loop (decode, version-fenced apply
//! under entity-group locks, offsets in the same RocksDB write as the data),
//! dead-lettering of undecodable records, replay by rewinding the stored
//! offsets, and lag probes.
//!
//! Owns: the apply loop, the consumed offsets in the store's metadata,
//! dead letters, lag probes.
//! May use: `northwest-kafka` (Kafka settings, topic admin),
//! `northwest-store`, `northwest-schemas`.

pub mod apply_loop;
mod batch;
mod dead_letter;
pub mod decode;
pub mod lag;
pub mod offsets;
mod positions;

pub use apply_loop::{
    run, ApplyConfig, ApplyShared, Control, PartitionState, PoisonPolicy, RecordFilter,
    SchemaLookup, Source,
};
pub use lag::{LagProbe, PartitionLag};

use northwest_kafka::KafkaClientError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConsumerError {
    #[error(transparent)]
    Kafka(#[from] KafkaClientError),
    #[error(transparent)]
    Store(#[from] northwest_store::StoreError),
    #[error("journal topic {0} does not exist yet")]
    NoTopic(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the journal topic now has {now} partitions (was {was}); the apply loop restarts to assign them")]
    PartitionsChanged { was: i32, now: i32 },
}

impl From<rdkafka::error::KafkaError> for ConsumerError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        ConsumerError::Kafka(e.into())
    }
}
