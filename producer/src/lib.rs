//! The journal producer on N1: the relay that ships outbox entries to the
//! journal topic with the idempotent producer, marking each shipped only
//! after its delivery report.
//!
//! Owns: the relay.
//! May use: `northwest-kafka` (Kafka settings, topic admin),
//! `northwest-store` (the outbox), `northwest-schemas` (the registry framing).

pub mod relay;

pub use relay::{Relay, RelayConfig, RelayStats};

use northwest_kafka::KafkaClientError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ProducerError {
    #[error(transparent)]
    Kafka(#[from] KafkaClientError),
    #[error(transparent)]
    Store(#[from] northwest_store::StoreError),
}

impl From<rdkafka::error::KafkaError> for ProducerError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        ProducerError::Kafka(e.into())
    }
}
