//! The dead-letter writer: a record that cannot be applied goes to the
//! dead-letter topic exactly once, even when the process dies between the
//! send and the store write that moves the offset past it.
//!
//! Each dead letter is written in a Kafka transaction that also commits
//! "dead-lettered through offset o+1" for its source partition to a progress
//! consumer group (`<group>.dlq-progress`). On the first dead letter after a
//! start, `init_transactions` aborts whatever an earlier incarnation left open
//! (same `transactional.id`), and the progress group says which records are
//! already dead-lettered: those are skipped, not sent again. Readers of the
//! dead-letter topic use `isolation.level=read_committed` (an aborted attempt
//! is invisible to them). The writer is created on the first dead letter, so
//! a broker without transactions only matters once a record is poison (the
//! partition then halts with the reason).

use std::sync::Arc;
use std::time::Duration;

use northwest_kafka::{KafkaSettings, Offset, Partition, PartitionOffsets};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::TopicPartitionList;

pub(crate) struct DeadLetters {
    kafka: KafkaSettings,
    topic: String,
    dlq_topic: String,
    group: String,
    writer: Option<Writer>,
}

struct Writer {
    producer: FutureProducer,
    progress: Arc<BaseConsumer>,
    /// Per source partition: every record below this offset is dead-lettered.
    done: PartitionOffsets,
}

/// Bound of each blocking Kafka call (they run off the async workers).
const TIMEOUT: Duration = Duration::from_secs(30);

impl DeadLetters {
    pub(crate) fn new(kafka: &KafkaSettings, topic: &str, dlq_topic: &str, group: &str) -> Self {
        Self {
            kafka: kafka.clone(),
            topic: topic.into(),
            dlq_topic: dlq_topic.into(),
            group: group.into(),
            writer: None,
        }
    }

    async fn writer(&mut self) -> Result<&mut Writer, String> {
        if self.writer.is_none() {
            let mut cfg = self.kafka.producer_config();
            cfg.set("transactional.id", format!("{}.dlq", self.group));
            // librdkafka refuses a transactional producer whose delivery
            // timeout exceeds the transaction timeout.
            let msg_timeout: u64 = cfg
                .get("message.timeout.ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(30_000);
            cfg.set(
                "transaction.timeout.ms",
                msg_timeout.max(60_000).to_string(),
            );
            let producer: FutureProducer = cfg.create().map_err(|e| e.to_string())?;
            // Fences an earlier incarnation and aborts its open transaction.
            let p = producer.clone();
            blocking(move || p.init_transactions(TIMEOUT))
                .await
                .map_err(|e| {
                    format!("init_transactions (does the broker support transactions?): {e}")
                })?;
            let progress: BaseConsumer = self
                .kafka
                .client_config(&[
                    ("group.id", &format!("{}.dlq-progress", self.group)),
                    ("enable.auto.commit", "false"),
                ])
                .create()
                .map_err(|e| e.to_string())?;
            self.writer = Some(Writer {
                producer,
                progress: Arc::new(progress),
                done: PartitionOffsets::new(),
            });
        }
        Ok(self.writer.as_mut().expect("just created"))
    }

    /// Sends the record at `p`/`o` with `reason`, trying 6 times (a new
    /// writer after each failure; every Kafka call is bounded by 30 s); the
    /// error if it could not be sent (the caller then halts the partition).
    pub(crate) async fn send(
        &mut self,
        p: Partition,
        o: Offset,
        payload: &Option<Vec<u8>>,
        reason: &str,
    ) -> Result<(), String> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.send_once(p, o, payload, reason).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt >= 6 => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, partition = p.0, offset = o.0, attempt, "dead-letter send failed; retrying");
                    self.writer = None;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    async fn send_once(
        &mut self,
        p: Partition,
        o: Offset,
        payload: &Option<Vec<u8>>,
        reason: &str,
    ) -> Result<(), String> {
        let (topic, dlq_topic) = (self.topic.clone(), self.dlq_topic.clone());
        let w = self.writer().await?;
        if w.done_below(&topic, p).await? > o {
            tracing::info!(
                partition = p.0,
                offset = o.0,
                "record already dead-lettered by an earlier run; not sent again"
            );
            return Ok(());
        }
        let source = format!("{topic}/{p}/{o}");
        let prod = w.producer.clone();
        blocking(move || prod.begin_transaction())
            .await
            .map_err(|e| e.to_string())?;
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "northwest.error",
                value: Some(reason),
            })
            .insert(Header {
                key: "northwest.source",
                value: Some(source.as_str()),
            });
        let mut rec = FutureRecord::<str, [u8]>::to(&dlq_topic)
            .key(source.as_str())
            .headers(headers);
        if let Some(b) = payload {
            rec = rec.payload(b.as_slice());
        }
        let sent = w.producer.send(rec, Duration::from_secs(10)).await;
        let (prod, progress) = (w.producer.clone(), w.progress.clone());
        let committed = match sent {
            Err((e, _)) => Err(e.to_string()),
            Ok(_) => blocking(move || {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(&topic, p.0, rdkafka::Offset::Offset(o.next().0))?;
                // No metadata for a configured group.id cannot happen; say so
                // as an invalid group rather than panic.
                let group = progress.group_metadata().ok_or(KafkaError::MetadataFetch(
                    rdkafka::error::RDKafkaErrorCode::InvalidGroupId,
                ))?;
                prod.send_offsets_to_transaction(&tpl, &group, TIMEOUT)?;
                prod.commit_transaction(TIMEOUT)
            })
            .await
            .map_err(|e| e.to_string()),
        };
        if let Err(e) = committed {
            let prod = w.producer.clone();
            let _ = blocking(move || prod.abort_transaction(TIMEOUT)).await;
            return Err(e);
        }
        w.done.insert(p, o.next());
        Ok(())
    }
}

impl Writer {
    /// The progress group's committed offset for `p` (records below it are
    /// already dead-lettered), read once per writer.
    async fn done_below(&mut self, topic: &str, p: Partition) -> Result<Offset, String> {
        if let Some(d) = self.done.get(p) {
            return Ok(d);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, p.0);
        let progress = self.progress.clone();
        let c = blocking(move || progress.committed_offsets(tpl, TIMEOUT))
            .await
            .map_err(|e| format!("reading dead-letter progress: {e}"))?;
        let d = c
            .elements()
            .first()
            .and_then(|e| match e.offset() {
                rdkafka::Offset::Offset(o) => Some(Offset(o)),
                _ => None,
            })
            .unwrap_or(Offset(0));
        self.done.insert(p, d);
        Ok(d)
    }
}

/// Runs a blocking librdkafka call (bounded by its own timeout) on a
/// blocking thread, not on an async worker the HTTP API needs.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
) -> Result<T, KafkaError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "a blocking Kafka call panicked");
            Err(KafkaError::Canceled)
        }
    }
}
