//! The Kafka client layer shared by the pipeline crates (the producer, the
//! consumer and the snapshotter): how Northwest talks to the brokers, with no
//! knowledge of what its records carry.
//!
//! Owns: Kafka client settings (brokers, pass-through librdkafka properties
//! and their checks, the message-size limits every topic and producer gets),
//! topic administration, the brokers' diagnostics when requests fail, typed
//! partitions and offsets, and the error type of all of these.
//! May use: no other Northwest crate (it sits beside `northwest-store`, not
//! on it); `rdkafka` for the brokers.

mod admin;
mod offsets;
mod settings;

pub use admin::{
    broker_error, delete_topic, ensure_topic, list_topics, partition_count, watermarks, TopicSpec,
};
pub use offsets::{Offset, Partition, PartitionOffsets};
pub use settings::{
    check_properties, is_secret_property, read_properties_file, KafkaSettings,
    DEFAULT_MAX_MESSAGE_BYTES,
};

use thiserror::Error;

/// What a Kafka client call of this crate can fail with.
#[derive(Debug, Error)]
pub enum KafkaClientError {
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
}

impl KafkaClientError {
    /// Broker outages and timeouts heal; a bad topic setup or a refused
    /// setting does not.
    pub fn is_retriable(&self) -> bool {
        // A refused login heals once the credentials are fixed on either
        // side: retried, with the reason shown meanwhile.
        matches!(
            self,
            KafkaClientError::Kafka(_) | KafkaClientError::Broker { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_are_retriable_and_setup_errors_are_not() {
        let outage = KafkaClientError::Kafka(rdkafka::error::KafkaError::Canceled);
        assert!(outage.is_retriable());
        let login = KafkaClientError::Broker {
            cause: "timed out".into(),
            reason: "SASL authentication failed".into(),
        };
        assert!(login.is_retriable());
        assert!(login.to_string().contains("SASL authentication failed"));
        let topic = KafkaClientError::Topic {
            topic: "journal".into(),
            reason: "max.message.bytes too small".into(),
        };
        assert!(!topic.is_retriable());
        let setting = KafkaClientError::Property {
            name: "linger.ms".into(),
            reason: "invalid value".into(),
        };
        assert!(!setting.is_retriable());
        assert_eq!(
            setting.to_string(),
            "Kafka setting linger.ms: invalid value"
        );
    }
}
