//! The journal consumer on N2: the apply loop (decode, version-fenced apply
//! under entity-group locks, offsets in the same RocksDB write as the data),
//! dead-lettering of undecodable records, replay by rewinding the stored
//! offsets, and lag probes.
//!
//! May use: `northwest-producer` (Kafka settings, topic admin),
//! `northwest-store`, `northwest-schemas`.

pub mod apply_loop;
mod dead_letter;
pub mod decode;
pub mod lag;
pub mod offsets;
mod positions;

pub use apply_loop::{
    run, ApplyConfig, ApplyShared, Control, PartitionState, PoisonPolicy, Source,
};
pub use lag::{LagProbe, PartitionLag};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConsumerError {
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Producer(#[from] northwest_producer::ProducerError),
    #[error(transparent)]
    Store(#[from] northwest_store::StoreError),
    #[error("journal topic {0} does not exist yet")]
    NoTopic(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the journal topic now has {now} partitions (was {was}); the apply loop restarts to assign them")]
    PartitionsChanged { was: i32, now: i32 },
}
