//! The journal outbox: entries written in the same atomic batch as the data
//! they describe, read in commit order by the relay, deleted once shipped.
//!
//! Key: sequence number (u64 BE). Value: `i64 BE commit time (ms) | u16 BE
//! key length | Kafka key | Avro single-object journal record`.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use crate::engine::{Cf, Engine, WriteBatch};
use crate::error::{EngineError, StoreError};
use crate::key::KeyRange;
use crate::store::Store;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The Kafka message key: `<namespace>/<entity group>`.
    pub key: String,
    /// Commit time, used as the Kafka message timestamp.
    pub ts_ms: i64,
    /// The encoded journal record.
    pub record: Vec<u8>,
}

impl OutboxEntry {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(10 + self.key.len() + self.record.len());
        out.extend_from_slice(&self.ts_ms.to_be_bytes());
        out.extend_from_slice(&(self.key.len() as u16).to_be_bytes());
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(&self.record);
        out
    }

    pub fn decode(b: &[u8]) -> Result<Self, EngineError> {
        let bad = || EngineError::Corrupt("outbox entry".into());
        let ts_ms = i64::from_be_bytes(b.get(..8).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
        let len = u16::from_be_bytes(
            b.get(8..10)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        ) as usize;
        let key = std::str::from_utf8(b.get(10..10 + len).ok_or_else(bad)?).map_err(|_| bad())?;
        Ok(Self {
            key: key.to_string(),
            ts_ms,
            record: b[10 + len..].to_vec(),
        })
    }
}

pub fn seq_key(seq: u64) -> Vec<u8> {
    seq.to_be_bytes().to_vec()
}

fn all() -> KeyRange {
    KeyRange {
        start: Vec::new(),
        end: None,
    }
}

/// Next sequence number and the pending sequences, from what is stored.
pub(crate) fn recover(engine: &dyn Engine) -> Result<(u64, BTreeSet<u64>), EngineError> {
    let mut pending = BTreeSet::new();
    let mut range = all();
    loop {
        let page = engine.scan(Cf::Outbox, &range, 4096)?;
        for (k, _) in &page {
            pending.insert(seq_of(k)?);
        }
        match pending.last() {
            Some(last) if page.len() == 4096 => range.start = seq_key(last + 1),
            _ => break,
        }
    }
    let next = pending.last().map_or(0, |s| s + 1);
    Ok((next, pending))
}

fn seq_of(k: &[u8]) -> Result<u64, EngineError> {
    Ok(u64::from_be_bytes(
        k.try_into()
            .map_err(|_| EngineError::Corrupt("outbox key".into()))?,
    ))
}

impl Store {
    /// Up to `limit` pending entries with sequence >= `from`, in order.
    pub fn outbox_read(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, OutboxEntry)>, StoreError> {
        let range = KeyRange {
            start: seq_key(from),
            end: None,
        };
        let mut out = Vec::new();
        for (k, v) in self.engine.scan(Cf::Outbox, &range, limit)? {
            out.push((seq_of(&k)?, OutboxEntry::decode(&v)?));
        }
        Ok(out)
    }

    /// Deletes shipped entries (only after their delivery reports).
    pub fn outbox_ack(&self, seqs: &[u64]) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for s in seqs {
            batch.delete(Cf::Outbox, seq_key(*s));
        }
        self.engine.write(batch)?;
        // Everything below the lowest pending entry has been shipped.
        let (first, removed) = {
            let mut pending = self.pending.lock();
            let removed = seqs.iter().filter(|s| pending.remove(s)).count();
            (pending.first().copied(), removed)
        };
        self.outbox_len.fetch_sub(removed as u64, Ordering::AcqRel);
        let low = self.outbox_low_watermark();
        let mark = first.map_or(low, |f| f.min(low));
        self.shipped.send_if_modified(|m| {
            let grow = mark > *m;
            if grow {
                *m = mark;
            }
            grow
        });
        self.outbox_drained.notify_waiters();
        Ok(())
    }

    /// Every outbox sequence below this is written or abandoned; sequences at
    /// or above it may still land (commits on other groups in flight).
    pub fn outbox_low_watermark(&self) -> u64 {
        let inflight = self.in_flight.lock();
        inflight
            .first()
            .copied()
            .unwrap_or_else(|| self.outbox_next.load(Ordering::Acquire))
    }

    /// Waits until outbox entry `seq` has been shipped (Kafka acknowledged it).
    pub async fn wait_shipped(
        &self,
        seq: u64,
        timeout: std::time::Duration,
    ) -> Result<(), StoreError> {
        let mut rx = self.shipped.subscribe();
        let shipped =
            tokio::time::timeout(timeout, async { rx.wait_for(|m| *m > seq).await.is_ok() }).await;
        match shipped {
            Ok(true) => Ok(()),
            _ => Err(StoreError::JournalPending(seq)),
        }
    }

    /// Resolves when a commit adds an outbox entry (or spuriously).
    pub async fn outbox_changed(&self) {
        self.outbox_changed.notified().await
    }

    /// Resolves when the relay has shipped entries (or spuriously).
    pub async fn outbox_drained(&self) {
        self.outbox_drained.notified().await
    }
}
