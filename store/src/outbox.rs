//! The journal outbox: entries written in the same atomic batch as the data
//! they describe, read in commit order by the relay, deleted once shipped.
//!
//! Key: sequence number (u64 BE). Value: `i64 BE commit time (ms) | u16 BE
//! key length | Kafka key | Avro single-object journal record`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{watch, Notify};

use crate::engine::{Cf, Engine, WriteBatch};
use crate::error::{EngineError, StoreError};
use crate::key::KeyRange;

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
fn recover(engine: &dyn Engine) -> Result<(u64, BTreeSet<u64>), EngineError> {
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

/// The outbox's in-memory bookkeeping over its column family: sequence
/// allocation, the shipped mark `sync` writers wait on, and the wake-ups the
/// relay sleeps on.
pub struct Outbox {
    engine: Arc<dyn Engine>,
    next: AtomicU64,
    len: AtomicU64,
    changed: Notify,
    drained: Notify,
    /// Every outbox sequence below this value has been shipped.
    shipped: watch::Sender<u64>,
    /// Sequences handed to commits not yet written (or failed): concurrent
    /// commits on different groups can land out of sequence order.
    in_flight: Mutex<BTreeSet<u64>>,
    /// Sequences written and not yet shipped: the shipped mark is the lowest
    /// of these (kept in memory because finding it in RocksDB means skipping
    /// every delete tombstone the relay left at the queue's head).
    pending: Mutex<BTreeSet<u64>>,
    /// Why the relay cannot ship right now (shown to `sync` writers).
    error: Mutex<Option<String>>,
}

impl Outbox {
    /// Recovers the pending entries from what `engine` stores.
    pub fn open(engine: Arc<dyn Engine>) -> Result<Self, EngineError> {
        let (next, pending) = recover(engine.as_ref())?;
        let first_pending = pending.first().copied().unwrap_or(next);
        Ok(Self {
            engine,
            next: AtomicU64::new(next),
            len: AtomicU64::new(pending.len() as u64),
            changed: Notify::new(),
            drained: Notify::new(),
            shipped: watch::Sender::new(first_pending),
            in_flight: Mutex::new(BTreeSet::new()),
            pending: Mutex::new(pending),
            error: Mutex::new(None),
        })
    }

    /// Unshipped entries.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the next sequence for an entry about to be written. It is in
    /// flight (holding the low watermark) and pending (holding the shipped
    /// mark) until [`Outbox::settle`]: the relay may ship and acknowledge it
    /// the instant the write lands.
    pub(crate) fn reserve(&self) -> u64 {
        let s = {
            let mut inflight = self.in_flight.lock();
            let s = self.next.fetch_add(1, Ordering::SeqCst);
            inflight.insert(s);
            s
        };
        self.pending.lock().insert(s);
        self.len.fetch_add(1, Ordering::AcqRel);
        s
    }

    /// Ends a reservation once its batch was written (or failed to be).
    pub(crate) fn settle(&self, seq: u64, written: bool) {
        if !written && self.pending.lock().remove(&seq) {
            self.len.fetch_sub(1, Ordering::AcqRel);
        }
        self.in_flight.lock().remove(&seq);
        // The relay may have acknowledged this entry before its batch
        // returned (the mark then stopped at it), or it was never written:
        // either way the mark may move now, not only at the next ack (a
        // drain under a fence, with no write after this one, waits on it).
        self.refresh_shipped();
        if written {
            // A stored permit: the relay never misses a commit made while it was busy.
            self.changed.notify_one();
        }
    }

    /// Up to `limit` pending entries with sequence >= `from`, in order.
    pub fn read(&self, from: u64, limit: usize) -> Result<Vec<(u64, OutboxEntry)>, StoreError> {
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
    pub fn ack(&self, seqs: &[u64]) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for s in seqs {
            batch.delete(Cf::Outbox, seq_key(*s));
        }
        self.engine.write(batch)?;
        // Everything below the lowest pending entry has been shipped.
        let removed = {
            let mut pending = self.pending.lock();
            seqs.iter().filter(|s| pending.remove(s)).count()
        };
        self.len.fetch_sub(removed as u64, Ordering::AcqRel);
        self.refresh_shipped();
        self.drained.notify_waiters();
        Ok(())
    }

    /// Everything below the lowest pending entry and below the low
    /// watermark (entries still being written) has been shipped.
    fn refresh_shipped(&self) {
        // The low watermark first: every entry below it was reserved and
        // settled, so it is in `pending` now unless shipped. Read the other
        // way round, an entry reserved and settled between the two reads
        // would be in neither, and the mark would pass it unshipped.
        let low = self.low_watermark();
        #[cfg(test)]
        if let Some(mut f) = tests::BETWEEN_READS.with(|h| h.take()) {
            f();
        }
        let first = self.pending.lock().first().copied();
        let mark = first.map_or(low, |f| f.min(low));
        self.shipped.send_if_modified(|m| {
            let grow = mark > *m;
            if grow {
                *m = mark;
            }
            grow
        });
    }

    /// The sequence the next entry will take: every entry committed so far
    /// is below it.
    pub fn next_seq(&self) -> u64 {
        self.next.load(Ordering::Acquire)
    }

    /// Every entry below this sequence has been shipped.
    pub fn shipped_below(&self) -> u64 {
        *self.shipped.borrow()
    }

    /// Every outbox sequence below this is written or abandoned; sequences at
    /// or above it may still land (commits on other groups in flight).
    pub fn low_watermark(&self) -> u64 {
        let inflight = self.in_flight.lock();
        inflight
            .first()
            .copied()
            .unwrap_or_else(|| self.next.load(Ordering::Acquire))
    }

    /// Waits until entry `seq` has been shipped (Kafka acknowledged it).
    pub async fn wait_shipped(&self, seq: u64, timeout: Duration) -> Result<(), StoreError> {
        let mut rx = self.shipped.subscribe();
        let shipped =
            tokio::time::timeout(timeout, async { rx.wait_for(|m| *m > seq).await.is_ok() }).await;
        match shipped {
            Ok(true) => Ok(()),
            _ => Err(StoreError::JournalPending {
                seq,
                cause: self.error(),
            }),
        }
    }

    /// Commit time of the oldest entry still waiting to be shipped (the
    /// journal's delay behind the data, which the entry count cannot show).
    pub fn oldest_pending_ts_ms(&self) -> Result<Option<i64>, StoreError> {
        // The lowest reservations may not be written yet: look a few further.
        let first: Vec<u64> = self.pending.lock().iter().take(64).copied().collect();
        for seq in first {
            if let Some(v) = self.engine.get(Cf::Outbox, &seq_key(seq))? {
                return Ok(Some(OutboxEntry::decode(&v)?.ts_ms));
            }
        }
        Ok(None)
    }

    /// Records (or clears) why the relay cannot ship.
    pub fn set_error(&self, error: Option<String>) {
        *self.error.lock() = error;
    }

    /// Why the relay cannot ship, if it cannot.
    pub fn error(&self) -> Option<String> {
        self.error.lock().clone()
    }

    /// Resolves when a commit adds an entry (or spuriously).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Resolves when the relay has shipped entries (or spuriously).
    pub async fn drained(&self) {
        self.drained.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox() -> Outbox {
        Outbox::open(Arc::new(crate::MemEngine::default())).unwrap()
    }

    /// The relay acknowledged an entry before its batch settled: once it
    /// settles, the mark passes it without waiting for another ack.
    #[test]
    fn the_shipped_mark_passes_an_entry_acked_before_it_settled() {
        let o = outbox();
        let seq = o.reserve();
        o.ack(&[seq]).unwrap();
        assert_eq!(o.shipped_below(), seq, "still in flight: held back");
        o.settle(seq, true);
        assert_eq!(o.shipped_below(), seq + 1);
    }

    std::thread_local! {
        /// Runs once between `refresh_shipped`'s two reads (this thread).
        pub(super) static BETWEEN_READS: std::cell::RefCell<Option<Box<dyn FnMut()>>> =
            const { std::cell::RefCell::new(None) };
    }

    /// Another commit is reserved and settled while the mark is being
    /// worked out: the mark must not pass it before the relay shipped it.
    #[test]
    fn the_shipped_mark_never_passes_an_entry_committed_while_it_is_worked_out() {
        let o = Arc::new(outbox());
        let first = o.reserve();
        o.settle(first, true);
        o.ack(&[first]).unwrap();
        let other = Arc::new(parking_lot::Mutex::new(None));
        let (o2, other2) = (o.clone(), other.clone());
        BETWEEN_READS.with(|h| {
            *h.borrow_mut() = Some(Box::new(move || {
                let s = o2.reserve();
                o2.settle(s, true);
                *other2.lock() = Some(s);
            }))
        });
        o.refresh_shipped();
        let s = other.lock().expect("the hook ran");
        let mark = o.shipped_below();
        assert!(
            mark <= s,
            "mark {mark} passed entry {s}, which was never shipped"
        );
    }

    /// A reservation whose batch failed holds nothing back once settled.
    #[test]
    fn an_abandoned_reservation_does_not_hold_the_mark() {
        let o = outbox();
        let a = o.reserve();
        o.settle(a, false);
        assert_eq!(o.shipped_below(), a + 1);
    }
}
