//! Topic administration (create or check a topic, count its partitions) and
//! the brokers' own reason when requests fail.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use crate::{KafkaClientError, KafkaSettings};

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
pub async fn ensure_topic(kafka: &KafkaSettings, spec: &TopicSpec) -> Result<(), KafkaClientError> {
    let admin: AdminClient<DefaultClientContext> = kafka.client_config(&[]).create()?;
    let mut topic = NewTopic::new(
        &spec.name,
        spec.partitions,
        TopicReplication::Fixed(spec.replication),
    );
    let max = kafka.topic_message_max().to_string();
    topic = topic.set("max.message.bytes", &max);
    for (k, v) in &spec.configs {
        topic = topic.set(k, v);
    }
    // Bounded: an unreachable broker is an error within 10 s, not a silent wait.
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    let created = match admin.create_topics([&topic], &opts).await {
        Ok(r) => r,
        Err(e) => return Err(explain(kafka, e).await),
    };
    for r in created {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(KafkaClientError::Topic {
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
    check_message_limit(&admin, kafka, &spec.name, &opts).await
}

/// Records the client-level errors librdkafka reports only as events, which
/// requests themselves show as mere timeouts.
#[derive(Default)]
struct ErrorRecorder(std::sync::Mutex<Vec<String>>);

impl rdkafka::ClientContext for ErrorRecorder {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let line = format!("{error} ({reason})");
        if !seen.contains(&line) && seen.len() < 8 {
            seen.push(line);
        }
    }
}

impl rdkafka::producer::ProducerContext for ErrorRecorder {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// Errors that say why, rather than that, the brokers are unusable.
fn is_cause(line: &str) -> bool {
    [
        "Authentication",
        "SASL",
        "SSL",
        "certificate",
        "Authorization",
    ]
    .iter()
    .any(|w| line.contains(w))
}

/// Why the brokers cannot be used, as librdkafka reports it (a refused
/// login, a failed TLS handshake, a refused connection); `None` when they
/// answer or nothing was reported within `wait`. Blocking.
pub fn broker_error(kafka: &KafkaSettings, wait: Duration) -> Option<String> {
    use rdkafka::producer::Producer as _;
    // A producer: no consumer group to look up (which on a cluster with
    // ACLs would report its own authorization error).
    let c: rdkafka::producer::BaseProducer<ErrorRecorder> = kafka
        .client_config(&[])
        .create_with_context(ErrorRecorder::default())
        .ok()?;
    let deadline = std::time::Instant::now() + wait;
    while std::time::Instant::now() < deadline {
        if c.client()
            .fetch_metadata(None, Duration::from_millis(500))
            .is_ok()
        {
            return None;
        }
        // Serves the error events to the recorder.
        c.poll(Duration::from_millis(100));
        let seen = c
            .context()
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(cause) = seen.iter().find(|l| is_cause(l)) {
            return Some(cause.clone());
        }
    }
    let seen = c
        .context()
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    (!seen.is_empty()).then(|| seen.join("; "))
}

/// A failed request, with the brokers' own reason when they gave one.
async fn explain(kafka: &KafkaSettings, e: rdkafka::error::KafkaError) -> KafkaClientError {
    let k = kafka.clone();
    match tokio::task::spawn_blocking(move || broker_error(&k, Duration::from_secs(5))).await {
        Ok(Some(reason)) => KafkaClientError::Broker {
            cause: e.to_string(),
            reason,
        },
        _ => e.into(),
    }
}

/// Refuses a topic (e.g. created earlier by hand) whose `max.message.bytes`
/// is below what the pipeline may produce: every record above it would stop
/// its partition for good.
async fn check_message_limit(
    admin: &AdminClient<DefaultClientContext>,
    kafka: &KafkaSettings,
    topic: &str,
    opts: &AdminOptions,
) -> Result<(), KafkaClientError> {
    let wanted = kafka.topic_message_max();
    let found = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], opts)
        .await?
        .into_iter()
        .flatten()
        .flat_map(|r| r.entries)
        .find(|e| e.name == "max.message.bytes")
        .and_then(|e| e.value)
        .and_then(|v| v.parse::<usize>().ok());
    match found {
        Some(found) if found < wanted => Err(KafkaClientError::Topic {
            topic: topic.into(),
            reason: format!(
                "max.message.bytes is {found}, below the {wanted} the pipeline may produce \
                 (journal.max_message_bytes {} plus framing); raise it with \
                 `kafka-configs --alter --entity-type topics --entity-name {topic} \
                 --add-config max.message.bytes={wanted}` or lower journal.max_message_bytes \
                 and http.max_value_bytes",
                kafka.max_message_bytes
            ),
        }),
        _ => Ok(()),
    }
}

/// Number of partitions of `topic` (0 if it does not exist).
pub fn partition_count(
    kafka: &KafkaSettings,
    topic: &str,
    timeout: Duration,
) -> Result<i32, KafkaClientError> {
    let c: BaseConsumer = kafka.client_config(&[]).create()?;
    let md = c.fetch_metadata(Some(topic), timeout)?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len() as i32))
}

/// Every topic's name and partition count. Blocking.
pub fn list_topics(
    kafka: &KafkaSettings,
    timeout: Duration,
) -> Result<Vec<(String, i32)>, KafkaClientError> {
    let c: BaseConsumer = kafka.client_config(&[]).create()?;
    let md = c.fetch_metadata(None, timeout)?;
    Ok(md
        .topics()
        .iter()
        .map(|t| (t.name().to_string(), t.partitions().len() as i32))
        .collect())
}

/// Each partition's (log start, high-water mark) of a topic with
/// `partitions` partitions. Blocking.
pub fn watermarks(
    kafka: &KafkaSettings,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<std::collections::BTreeMap<i32, (i64, i64)>, KafkaClientError> {
    let c: BaseConsumer = kafka.client_config(&[]).create()?;
    let mut out = std::collections::BTreeMap::new();
    for p in 0..partitions {
        out.insert(p, c.fetch_watermarks(topic, p, timeout)?);
    }
    Ok(out)
}

/// Deletes a topic; one that does not exist (deleted already) is no error.
pub async fn delete_topic(kafka: &KafkaSettings, topic: &str) -> Result<(), KafkaClientError> {
    let admin: AdminClient<DefaultClientContext> = kafka.client_config(&[]).create()?;
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(30)))
        .request_timeout(Some(Duration::from_secs(30)));
    let deleted = match admin.delete_topics(&[topic], &opts).await {
        Ok(r) => r,
        Err(e) => return Err(explain(kafka, e).await),
    };
    for r in deleted {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((t, code)) => {
                return Err(KafkaClientError::Topic {
                    topic: t,
                    reason: format!("delete refused: {code}"),
                })
            }
        }
    }
    Ok(())
}
