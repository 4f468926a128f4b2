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

use std::collections::BTreeMap;
use std::time::Duration;

use northwest_producer::kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

pub(crate) struct DeadLetters {
    kafka: KafkaSettings,
    topic: String,
    dlq_topic: String,
    group: String,
    writer: Option<Writer>,
}

struct Writer {
    producer: FutureProducer,
    progress: BaseConsumer,
    /// Per source partition: every record below this offset is dead-lettered.
    done: BTreeMap<i32, i64>,
}

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

    fn writer(&mut self) -> Result<&mut Writer, String> {
        if self.writer.is_none() {
            let mut cfg = self.kafka.producer_config();
            cfg.set("transactional.id", format!("{}.dlq", self.group));
            let producer: FutureProducer = cfg.create().map_err(|e| e.to_string())?;
            // Fences an earlier incarnation and aborts its open transaction.
            producer.init_transactions(TIMEOUT).map_err(|e| {
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
                progress,
                done: BTreeMap::new(),
            });
        }
        Ok(self.writer.as_mut().expect("just created"))
    }

    /// Sends the record at `p`/`o` with `reason`, retrying for about 10 s
    /// (a new writer after each failure); the error if it could not be sent.
    pub(crate) async fn send(
        &mut self,
        p: i32,
        o: i64,
        payload: &Option<Vec<u8>>,
        reason: &str,
    ) -> Result<(), String> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.send_once(p, o, payload, reason).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt >= 20 => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, partition = p, offset = o, attempt, "dead-letter send failed; retrying");
                    self.writer = None;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    async fn send_once(
        &mut self,
        p: i32,
        o: i64,
        payload: &Option<Vec<u8>>,
        reason: &str,
    ) -> Result<(), String> {
        let (topic, dlq_topic) = (self.topic.clone(), self.dlq_topic.clone());
        let w = self.writer()?;
        if w.done_below(&topic, p)? > o {
            tracing::info!(
                partition = p,
                offset = o,
                "record already dead-lettered by an earlier run; not sent again"
            );
            return Ok(());
        }
        let source = format!("{topic}/{p}/{o}");
        w.producer.begin_transaction().map_err(|e| e.to_string())?;
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
        let committed = sent.map_err(|(e, _)| e.to_string()).and_then(|_| {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, p, Offset::Offset(o + 1))
                .map_err(|e| e.to_string())?;
            let group = w
                .progress
                .group_metadata()
                .ok_or("no consumer group metadata for the dead-letter progress group")?;
            w.producer
                .send_offsets_to_transaction(&tpl, &group, TIMEOUT)
                .map_err(|e| e.to_string())?;
            w.producer
                .commit_transaction(TIMEOUT)
                .map_err(|e| e.to_string())
        });
        if let Err(e) = committed {
            let _ = w.producer.abort_transaction(TIMEOUT);
            return Err(e);
        }
        w.done.insert(p, o + 1);
        Ok(())
    }
}

impl Writer {
    /// The progress group's committed offset for `p` (records below it are
    /// already dead-lettered), read once per writer.
    fn done_below(&mut self, topic: &str, p: i32) -> Result<i64, String> {
        if let Some(d) = self.done.get(&p) {
            return Ok(*d);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, p);
        let c = self
            .progress
            .committed_offsets(tpl, TIMEOUT)
            .map_err(|e| format!("reading dead-letter progress: {e}"))?;
        let d = c
            .elements()
            .first()
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .unwrap_or(0);
        self.done.insert(p, d);
        Ok(d)
    }
}
