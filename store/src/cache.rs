//! The bounded read cache of stored entity records (delete markers too),
//! kept coherent with the engine: every batch the store writes updates it
//! after the write, while the writer still holds the entity-group lock.
//!
//! Each key hashes to a stripe with a write sequence and a count of writes
//! in progress. A writer bumps both before it writes the engine, updates
//! the cache after, then bumps the sequence again and ends its count. A
//! reader that missed fills the cache only if no write was in progress on
//! its stripe when it looked and the sequence has not moved since; fills
//! and updates of a key are serialised by moka's per-key compute lock. So a
//! value read before a write never lands after it, and no reader caches a
//! value while a write of it is half done (which could make two readers
//! see the new value and then the old).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use moka::ops::compute::Op;

use crate::engine::{BatchOp, Cf, WriteBatch};

const STRIPES: usize = 4096;

/// What a written entity record does to the cache.
pub enum Update {
    /// A client's commit: cached (what is written is read soon).
    Insert(Arc<[u8]>),
    /// An applied record of a key cached when the write began: refreshed.
    Refresh(Arc<[u8]>),
    /// An applied record of a key not cached: left out (no copy is made),
    /// so a journal or snapshot applied in bulk does not push out the hot
    /// set. Nothing can cache the key while the write is in progress.
    Untouched,
    Remove,
}

/// The entity records of one batch and what each does to the cache.
pub type EntityOps = Vec<(Vec<u8>, Update)>;

/// Hits, misses and size, for metrics and status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: u64,
    pub bytes: u64,
    pub capacity_bytes: u64,
    /// Keys read into the cache by a warm-up request.
    pub warmed: u64,
}

pub struct ReadCache {
    entries: moka::sync::Cache<Vec<u8>, Arc<[u8]>>,
    stripes: Box<[AtomicU64]>,
    writing: Box<[AtomicU64]>,
    hasher: std::collections::hash_map::RandomState,
    capacity: u64,
    hits: AtomicU64,
    misses: AtomicU64,
    warmed: AtomicU64,
}

/// What a reader saw of its key's stripe before it read the engine (None:
/// a write was in progress, so the read must not be cached).
pub struct MissTicket(usize, Option<u64>);

/// Per-entry bookkeeping moka keeps beyond key and value (an estimate, so
/// small records do not overrun `read_cache_mb` by much).
const ENTRY_OVERHEAD: usize = 200;

impl ReadCache {
    /// A cache holding up to `capacity_bytes` of keys and encoded records.
    pub fn new(capacity_bytes: u64) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(capacity_bytes)
                .weigher(|k: &Vec<u8>, v: &Arc<[u8]>| {
                    (k.len() + v.len() + ENTRY_OVERHEAD)
                        .try_into()
                        .unwrap_or(u32::MAX)
                })
                .build(),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            writing: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            hasher: Default::default(),
            capacity: capacity_bytes,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            warmed: AtomicU64::new(0),
        }
    }

    fn stripe(&self, key: &[u8]) -> usize {
        (self.hasher.hash_one(key) as usize) % STRIPES
    }

    /// The cached record bytes of `key`, or a ticket to fill it with.
    pub fn get(&self, key: &[u8]) -> Result<Arc<[u8]>, MissTicket> {
        let s = self.stripe(key);
        // Read the stripe before the lookup: a write after it invalidates
        // whatever the engine read then returns.
        let seen = self.stripes[s].load(Ordering::SeqCst);
        let seen = (self.writing[s].load(Ordering::SeqCst) == 0).then_some(seen);
        match self.entries.get(key) {
            Some(v) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Ok(v)
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                Err(MissTicket(s, seen))
            }
        }
    }

    /// Caches what the engine returned for a miss, unless a write to the
    /// key's stripe came in between.
    pub fn fill(&self, key: &[u8], ticket: MissTicket, value: &[u8]) {
        let MissTicket(s, Some(seen)) = ticket else {
            return;
        };
        let value: Arc<[u8]> = Arc::from(value);
        self.entries.entry(key.to_vec()).and_compute_with(|_| {
            if self.stripes[s].load(Ordering::SeqCst) == seen {
                Op::Put(value)
            } else {
                Op::Nop
            }
        });
    }

    /// Counts a key read on behalf of a warm-up request.
    pub fn count_warmed(&self) {
        self.warmed.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks the entity records `batch` writes in progress and says what
    /// each will do to the cache: call before the engine write, and hand the
    /// result to [`Self::written`] (or [`Self::failed`]) after it. `insert`:
    /// a client's commit (cached) rather than applied records (only cached
    /// keys refreshed).
    pub fn begin(&self, batch: &WriteBatch, insert: bool) -> EntityOps {
        let mut ops = Vec::new();
        for op in &batch.ops {
            let (key, value) = match op {
                BatchOp::Put {
                    cf: Cf::Entities,
                    key,
                    value,
                } => (key, Some(value)),
                BatchOp::Delete {
                    cf: Cf::Entities,
                    key,
                } => (key, None),
                _ => continue,
            };
            let s = self.stripe(key);
            self.writing[s].fetch_add(1, Ordering::SeqCst);
            self.stripes[s].fetch_add(1, Ordering::SeqCst);
            // Looked at once marked: from here no fill can add the key.
            let update = match value {
                None => Update::Remove,
                Some(v) if insert => Update::Insert(Arc::from(v.as_slice())),
                Some(v) if self.entries.contains_key(key) => {
                    Update::Refresh(Arc::from(v.as_slice()))
                }
                Some(_) => Update::Untouched,
            };
            ops.push((key.clone(), update));
        }
        ops
    }

    fn end(&self, s: usize) {
        self.stripes[s].fetch_add(1, Ordering::SeqCst);
        self.writing[s].fetch_sub(1, Ordering::SeqCst);
    }

    /// Applies written records (the caller holds their group locks).
    pub fn written(&self, ops: EntityOps) {
        for (key, update) in ops {
            let s = self.stripe(&key);
            match update {
                Update::Untouched => {}
                Update::Insert(v) => {
                    self.entries.entry(key).and_compute_with(|_| Op::Put(v));
                }
                // Evicted meanwhile: stays out.
                Update::Refresh(v) => {
                    self.entries.entry(key).and_compute_with(|cur| match cur {
                        Some(_) => Op::Put(v),
                        None => Op::Nop,
                    });
                }
                Update::Remove => {
                    self.entries.entry(key).and_compute_with(|_| Op::Remove);
                }
            }
            self.end(s);
        }
    }

    /// The engine refused the batch: its keys are dropped from the cache
    /// (the engine may still show the batch after a restart).
    pub fn failed(&self, ops: EntityOps) {
        for (key, _) in ops {
            let s = self.stripe(&key);
            self.entries.entry(key).and_compute_with(|_| Op::Remove);
            self.end(s);
        }
    }

    /// Up to `limit` cached keys starting with `prefix` (the hot set a
    /// migration target warms its cache with).
    pub fn keys_with_prefix(&self, prefix: &[u8], limit: usize) -> Vec<Vec<u8>> {
        self.entries
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, _)| k.as_ref().clone())
            .collect()
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.entries.entry_count(),
            bytes: self.entries.weighted_size(),
            capacity_bytes: self.capacity,
            warmed: self.warmed.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(c: &ReadCache, b: &WriteBatch, insert: bool) {
        let ops = c.begin(b, insert);
        c.written(ops);
    }

    #[test]
    fn a_value_read_before_a_write_is_not_cached_after_it() {
        let c = ReadCache::new(1 << 20);
        let ticket = c.get(b"k").unwrap_err();
        // The reader read "old" from the engine; a writer then wrote "new".
        // (A read during the write is covered by the ticket's None.)
        let mut b = WriteBatch::default();
        b.put(Cf::Entities, b"k".to_vec(), b"new".to_vec());
        write(&c, &b, true);
        c.fill(b"k", ticket, b"old");
        assert_eq!(&*c.get(b"k").ok().unwrap(), b"new");
        // Even with the written entry evicted meanwhile.
        let ticket = c.get(b"j").unwrap_err();
        let mut b = WriteBatch::default();
        b.put(Cf::Entities, b"j".to_vec(), b"new".to_vec());
        write(&c, &b, true);
        c.entries.invalidate(b"j".as_slice());
        c.fill(b"j", ticket, b"old");
        assert!(c.get(b"j").is_err(), "the stale read was not cached");
    }

    #[test]
    fn a_value_read_while_a_write_is_in_progress_is_not_cached() {
        let c = ReadCache::new(1 << 20);
        let mut b = WriteBatch::default();
        b.put(Cf::Entities, b"k".to_vec(), b"new".to_vec());
        let ops = c.begin(&b, false);
        // The engine may already show "new" to this reader and "old" to one
        // that looked just before; neither may be cached before the write ends.
        let ticket = c.get(b"k").unwrap_err();
        c.fill(b"k", ticket, b"old");
        assert!(c.get(b"k").is_err());
        c.written(ops);
        assert!(c.get(b"k").is_err(), "an applied record is not inserted");
    }

    #[test]
    fn writes_and_deletes_go_through_and_other_columns_do_not() {
        let c = ReadCache::new(1 << 20);
        let mut b = WriteBatch::default();
        b.put(Cf::Entities, b"a".to_vec(), b"1".to_vec());
        b.put(Cf::Meta, b"m".to_vec(), b"x".to_vec());
        write(&c, &b, true);
        assert_eq!(&*c.get(b"a").ok().unwrap(), b"1");
        assert!(c.get(b"m").is_err());
        let mut b = WriteBatch::default();
        b.delete(Cf::Entities, b"a".to_vec());
        write(&c, &b, true);
        assert!(c.get(b"a").is_err());
        let s = c.stats();
        assert_eq!((s.hits, s.misses), (1, 2));
        // Applied records refresh cached keys only.
        let mut b = WriteBatch::default();
        b.put(Cf::Entities, b"x".to_vec(), b"1".to_vec());
        write(&c, &b, true);
        let mut b = WriteBatch::default();
        b.put(Cf::Entities, b"x".to_vec(), b"2".to_vec());
        b.put(Cf::Entities, b"y".to_vec(), b"1".to_vec());
        write(&c, &b, false);
        assert_eq!(&*c.get(b"x").ok().unwrap(), b"2");
        assert!(c.get(b"y").is_err());
    }
}
