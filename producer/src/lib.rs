//! The journal producer on N1: Kafka client settings and topic admin shared by
//! the pipeline, and the relay that ships outbox entries to the journal topic
//! with the idempotent producer, marking each shipped only after its delivery
//! report.
//!
//! Owns: Kafka client settings (the message-size limits every topic and
//! producer gets), topic administration, the relay.
//! May use: `northwest-store` and `northwest-schemas`.

pub mod kafka;
pub mod relay;

pub use kafka::{ensure_topic, KafkaSettings, TopicSpec};
pub use relay::{Relay, RelayConfig, RelayStats};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ProducerError {
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("topic {topic}: {reason}")]
    Topic { topic: String, reason: String },
    /// A Kafka client setting librdkafka refuses (its value never shown).
    #[error("Kafka setting {name}: {reason}")]
    Property { name: String, reason: String },
    /// Requests failed, and the client-level error librdkafka reported says
    /// why (a refused login, a failed TLS handshake, a refused connection).
    #[error("Kafka: {cause}; the brokers report: {reason} (check the brokers and the client's security.protocol, sasl.* and ssl.* settings)")]
    Broker { cause: String, reason: String },
    #[error(transparent)]
    Store(#[from] northwest_store::StoreError),
}

impl ProducerError {
    /// Broker outages and timeouts heal; a bad topic setup does not.
    pub fn is_retriable(&self) -> bool {
        // A refused login heals once the credentials are fixed on either
        // side: retried, with the reason shown meanwhile.
        matches!(self, ProducerError::Kafka(_) | ProducerError::Broker { .. })
    }
}
