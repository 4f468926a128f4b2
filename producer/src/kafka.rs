//! Kafka client settings and topic administration.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use crate::ProducerError;

/// Brokers plus librdkafka properties passed through from the node config.
#[derive(Debug, Clone, Default)]
pub struct KafkaSettings {
    pub brokers: String,
    pub properties: BTreeMap<String, String>,
}

impl KafkaSettings {
    pub fn new(brokers: &str) -> Self {
        Self {
            brokers: brokers.to_string(),
            properties: BTreeMap::new(),
        }
    }

    /// A client config: our required settings first, then the user's
    /// pass-through properties (which may tune but are documented not to
    /// weaken `enable.idempotence`/`acks`: those are re-applied last).
    pub fn client_config(&self, required: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        for (k, v) in required {
            c.set(*k, *v);
        }
        c
    }

    /// A consumer config. Fetch waits are kept short by default (users may
    /// override): replication latency is bounded by how long a fetch may wait
    /// on an idle partition, and some brokers answer only at that deadline
    /// (never 0: some brokers then answer empty without looking). Fetches
    /// are large, so a consumer that is behind catches up in few round trips.
    pub fn consumer_config(&self, required: &[(&str, &str)]) -> ClientConfig {
        let mut c = self.client_config(required);
        for (k, v) in [
            ("fetch.wait.max.ms", "10"),
            ("fetch.error.backoff.ms", "10"),
            ("fetch.max.bytes", "5242880"),
            ("max.partition.fetch.bytes", "5242880"),
        ] {
            if !self.properties.contains_key(k) {
                c.set(k, v);
            }
        }
        c
    }

    /// The idempotent producer: acks=all, ordered per partition, key-hash
    /// partitioning compatible with the Java client.
    pub fn producer_config(&self) -> ClientConfig {
        self.client_config(&[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("max.in.flight.requests.per.connection", "5"),
            ("partitioner", "murmur2_random"),
        ])
    }
}

/// What a topic must look like.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication: i32,
    /// Topic configs, e.g. `cleanup.policy=compact`.
    pub configs: Vec<(String, String)>,
}

/// Creates the topic if absent; checks the partition count if present.
pub async fn ensure_topic(kafka: &KafkaSettings, spec: &TopicSpec) -> Result<(), ProducerError> {
    let admin: AdminClient<DefaultClientContext> = kafka.client_config(&[]).create()?;
    let mut topic = NewTopic::new(
        &spec.name,
        spec.partitions,
        TopicReplication::Fixed(spec.replication),
    );
    for (k, v) in &spec.configs {
        topic = topic.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in admin.create_topics([&topic], &opts).await? {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(ProducerError::Topic {
                    topic: t,
                    reason: code.to_string(),
                })
            }
        }
    }
    let found = partition_count(kafka, &spec.name, Duration::from_secs(10))?;
    if found != spec.partitions {
        tracing::warn!(topic = %spec.name, found, wanted = spec.partitions, "topic exists with a different partition count; using it as is");
    }
    Ok(())
}

/// Number of partitions of `topic` (0 if it does not exist).
pub fn partition_count(
    kafka: &KafkaSettings,
    topic: &str,
    timeout: Duration,
) -> Result<i32, ProducerError> {
    let c: BaseConsumer = kafka.client_config(&[]).create()?;
    let md = c.fetch_metadata(Some(topic), timeout)?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len() as i32))
}
