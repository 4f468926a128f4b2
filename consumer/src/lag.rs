//! Lag per partition: high-water mark minus stored offset, in records and in
//! seconds (age of the oldest unapplied record; 0 when caught up, so an idle
//! source shows neither false lag nor a false "caught up").

use std::time::Duration;

use northwest_kafka::{KafkaSettings, Partition, PartitionOffsets};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

#[derive(Debug, Clone, PartialEq)]
pub struct PartitionLag {
    pub partition: i32,
    /// Next offset to apply (stored atomically with the data); None = nothing applied yet.
    pub stored: Option<i64>,
    pub low_watermark: i64,
    pub high_watermark: i64,
    pub lag_records: i64,
    /// Age of the oldest unapplied record; 0 when nothing is pending, `None`
    /// when records are pending but the probe could not read the oldest one.
    pub lag_seconds: Option<f64>,
}

/// A long-lived broker client for lag probes: creating a client per probe
/// costs a bootstrap (metadata, connections) every time.
pub struct LagProbe {
    consumer: BaseConsumer,
}

impl LagProbe {
    pub fn new(kafka: &KafkaSettings) -> Result<Self, rdkafka::error::KafkaError> {
        let consumer = kafka
            .client_config(&[
                ("group.id", "northwest-lag-probe"),
                ("enable.auto.commit", "false"),
                ("enable.partition.eof", "false"),
                // Only the first unapplied record's timestamp is read.
                ("max.partition.fetch.bytes", "65536"),
                ("fetch.wait.max.ms", "10"),
            ])
            .create()?;
        Ok(Self { consumer })
    }

    /// Whether the broker answers a metadata request for `topic` now.
    /// Blocking: call from a blocking thread.
    pub fn reachable(&self, topic: &str) -> Result<(), rdkafka::error::KafkaError> {
        let md = self
            .consumer
            .fetch_metadata(Some(topic), std::time::Duration::from_secs(2))?;
        match md.topics().first().and_then(|t| t.error()) {
            Some(e) => Err(rdkafka::error::KafkaError::MetadataFetch(e.into())),
            None => Ok(()),
        }
    }

    /// Probes the broker for watermarks and the timestamp of the first
    /// unapplied record of each lagging partition. Blocking: call from a
    /// blocking thread.
    pub fn probe(
        &self,
        topic: &str,
        stored: &PartitionOffsets,
        partitions: i32,
        now_ms: i64,
    ) -> Result<Vec<PartitionLag>, rdkafka::error::KafkaError> {
        let c = &self.consumer;
        let mut out = Vec::new();
        for p in 0..partitions {
            let (lo, hw) = c.fetch_watermarks(topic, p, Duration::from_secs(5))?;
            let stored_at = stored.get(Partition(p)).map(|o| o.0);
            let pos = stored_at.unwrap_or(lo).max(lo);
            let lag_records = (hw - pos).max(0);
            let mut lag_seconds = Some(0.0);
            if lag_records > 0 {
                lag_seconds = None;
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(topic, p, Offset::Offset(pos))?;
                c.assign(&tpl)?;
                if let Some(Ok(m)) = c.poll(Duration::from_secs(2)) {
                    if let Some(ts) = m.timestamp().to_millis() {
                        lag_seconds = Some(((now_ms - ts).max(0)) as f64 / 1000.0);
                    }
                }
                c.unassign()?;
            }
            out.push(PartitionLag {
                partition: p,
                stored: stored_at,
                low_watermark: lo,
                high_watermark: hw,
                lag_records,
                lag_seconds,
            });
        }
        Ok(out)
    }
}
