//! The outbox relay: reads outbox entries in commit order, produces them keyed
//! by entity group, and deletes each only after Kafka acknowledged it.
//!
//! Order: the idempotent producer keeps a partition's records in send order
//! and never delivers a record after a failed earlier one of the same
//! partition; the relay acknowledges the successes and re-sends from the
//! lowest failed entry, so a group's records stay in commit order. A crash
//! between delivery and acknowledgement re-sends entries on restart: the
//! journal is at-least-once and N2's version check absorbs the duplicates.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use northwest_store::Store;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::kafka::{ensure_topic, KafkaSettings, TopicSpec};
use crate::ProducerError;

#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub kafka: KafkaSettings,
    pub topic: TopicSpec,
    /// Outbox entries read and sent per round.
    pub batch: usize,
}

/// Counters the node exports as metrics.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub shipped: AtomicU64,
    pub send_errors: AtomicU64,
    pub last_error: parking_lot::Mutex<Option<String>>,
}

pub struct Relay {
    store: Arc<Store>,
    producer: FutureProducer,
    cfg: RelayConfig,
    stats: Arc<RelayStats>,
}

impl Relay {
    /// Ensures the journal topic exists and creates the producer.
    pub async fn new(
        store: Arc<Store>,
        cfg: RelayConfig,
        stats: Arc<RelayStats>,
    ) -> Result<Self, ProducerError> {
        ensure_topic(&cfg.kafka, &cfg.topic).await?;
        let producer: FutureProducer = cfg.kafka.producer_config().create()?;
        Ok(Self {
            store,
            producer,
            cfg,
            stats,
        })
    }

    /// Ships until `shutdown` resolves, then finishes the in-flight round.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ProducerError> {
        tokio::pin!(shutdown);
        let mut from = 0u64;
        loop {
            // Read the watermark first: every entry below it is visible to the read.
            let low = self.store.outbox_low_watermark();
            let entries = self.store.outbox_read(from, self.cfg.batch)?;
            if entries.is_empty() {
                from = from.min(low);
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = self.store.outbox_changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
                continue;
            }
            let next = self.ship(&entries).await?;
            match next {
                // Entries below `low` that were in flight land later: re-read from there.
                None => from = entries.last().map_or(from, |(s, _)| s + 1).min(low),
                Some(failed) => {
                    from = failed.min(low);
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
            if futures::FutureExt::now_or_never(&mut shutdown).is_some() {
                break;
            }
        }
        let _ = self.producer.flush(Duration::from_secs(5));
        tracing::info!(pending = self.store.outbox_len(), "journal relay stopped");
        Ok(())
    }

    /// Sends one round; returns the lowest sequence that failed, if any.
    async fn ship(
        &self,
        entries: &[(u64, northwest_store::outbox::OutboxEntry)],
    ) -> Result<Option<u64>, ProducerError> {
        let mut pending = Vec::with_capacity(entries.len());
        let mut failed: Option<u64> = None;
        for (seq, e) in entries {
            let rec = FutureRecord::to(&self.cfg.topic.name)
                .key(e.key.as_bytes())
                .payload(&e.record)
                .timestamp(e.ts_ms);
            match self.producer.send_result(rec) {
                Ok(f) => pending.push((*seq, f)),
                Err((err, _)) => {
                    // Local queue full or fatal: stop here, retry from this entry.
                    tracing::debug!(error = %err, seq, "enqueue refused");
                    failed = Some(*seq);
                    break;
                }
            }
        }
        let mut ok = Vec::with_capacity(pending.len());
        for (seq, f) in pending {
            match f.await {
                Ok(Ok(_)) => ok.push(seq),
                Ok(Err((err, _))) => {
                    self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                    *self.stats.last_error.lock() = Some(err.to_string());
                    tracing::warn!(error = %err, seq, "journal record not delivered; will re-send");
                    failed = Some(failed.map_or(seq, |f| f.min(seq)));
                }
                Err(_canceled) => failed = Some(failed.map_or(seq, |f| f.min(seq))),
            }
        }
        self.store.outbox_ack(&ok)?;
        self.stats
            .shipped
            .fetch_add(ok.len() as u64, Ordering::Relaxed);
        if failed.is_none() {
            *self.stats.last_error.lock() = None;
        }
        Ok(failed)
    }
}
