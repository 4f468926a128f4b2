//! The version-fenced apply path of the journal consumer and the snapshot
//! loader, its optional apply log, stored metadata, and delete-marker GC.

use std::collections::HashMap;

use crate::coord::GroupLock;
use crate::engine::{Cf, WriteBatch};
use crate::error::StoreError;
use crate::failpoint;
use crate::key::{encode_key, EntityGroup, KeyPath, KeyRange, Namespace};
use crate::record::EntityRecord;
use crate::store::Store;
use crate::types::{TxnId, Version};
fn apply_log_key(version: u64) -> Vec<u8> {
    format!("applylog/{version:020}").into_bytes()
}

/// One write replicated from the journal or the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicatedWrite {
    pub ns: Namespace,
    pub key: KeyPath,
    pub version: Version,
    pub commit_ts_ms: i64,
    /// `None` = delete.
    pub value: Option<Vec<u8>>,
}

/// Which delete markers a GC pass may remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkerGcRule {
    /// Only markers committed before this.
    pub committed_before_ms: i64,
    /// Only markers written in this marker-GC generation or an earlier one;
    /// `None` = no such condition. A marker with no recorded generation
    /// never passes it.
    pub generation_at_most: Option<u64>,
    /// `false`: count only.
    pub remove: bool,
}

impl MarkerGcRule {
    fn allows(&self, r: &EntityRecord) -> bool {
        self.remove
            && r.is_deleted()
            && r.commit_ts_ms < self.committed_before_ms
            && self
                .generation_at_most
                .is_none_or(|g| r.marker_gen.is_some_and(|m| m <= g))
    }
}

/// What a marker GC pass found and did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MarkerGcStats {
    /// Markers left.
    pub markers: u64,
    pub removed: u64,
}

/// Counts of what a replicated apply did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyStats {
    pub applied: u64,
    pub stale: u64,
    pub blacklisted: u64,
}

impl ApplyStats {
    pub fn add(&mut self, o: ApplyStats) {
        self.applied += o.applied;
        self.stale += o.stale;
        self.blacklisted += o.blacklisted;
    }
}

impl Store {
    /// Applies replicated writes (any groups) under their entity-group locks,
    /// each only where newer than what is held, together with `meta` (e.g.
    /// consumed offsets) in one atomic write.
    pub async fn apply_replicated(
        &self,
        writes: &[ReplicatedWrite],
        meta: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<ApplyStats, StoreError> {
        self.apply_replicated_logged(writes, meta, false).await
    }

    /// [`Store::apply_replicated`], optionally counting in the metadata how
    /// many times each transaction had an effect (`applylog/<txn>`), in the
    /// same write: a count above 1 would be a duplicated effect.
    pub async fn apply_replicated_logged(
        &self,
        writes: &[ReplicatedWrite],
        meta: Vec<(Vec<u8>, Vec<u8>)>,
        apply_log: bool,
    ) -> Result<ApplyStats, StoreError> {
        let groups: Vec<EntityGroup> = writes
            .iter()
            .map(|w| EntityGroup::of(&w.ns, &w.key))
            .collect();
        let locks = self.lock_groups(&groups).await?;
        let result = self.apply_locked(writes, meta, &locks, apply_log);
        match &result {
            Ok(_) => {
                futures::future::join_all(locks.into_iter().map(|l| self.coord.release(l))).await;
            }
            Err(e) => self.release_fenced(locks, e).await,
        }
        result
    }

    fn apply_locked(
        &self,
        writes: &[ReplicatedWrite],
        meta: Vec<(Vec<u8>, Vec<u8>)>,
        locks: &[GroupLock],
        apply_log: bool,
    ) -> Result<ApplyStats, StoreError> {
        let mut stats = ApplyStats::default();
        let gen = self.marker_generation();
        let mut effective: std::collections::BTreeSet<u64> = Default::default();
        let mut pending: HashMap<Vec<u8>, (Version, bool)> = HashMap::new();
        let mut batch = WriteBatch::default();
        for w in writes {
            let k = encode_key(&w.ns, &w.key);
            let current = match pending.get(&k) {
                Some(c) => Some(*c),
                None => match self.engine.get(Cf::Entities, &k)? {
                    Some(b) => Some(EntityRecord::peek(&b)?),
                    None => None,
                },
            };
            let blacklisted = self.coord.is_blacklisted(TxnId(w.version.0));
            match crate::apply::decide(w.version, blacklisted, current) {
                crate::apply::Decision::Apply => {
                    let rec = EntityRecord {
                        version: w.version,
                        commit_ts_ms: w.commit_ts_ms,
                        value: w.value.clone(),
                        marker_gen: w.value.is_none().then_some(gen),
                    };
                    pending.insert(k.clone(), (w.version, w.value.is_none()));
                    batch.put(Cf::Entities, k, rec.encode());
                    stats.applied += 1;
                    effective.insert(w.version.0);
                }
                crate::apply::Decision::SkipStale => {
                    stats.stale += 1;
                    // A late or repeated older record was just seen: the
                    // marker it ran into starts its GC wait again (that
                    // record, or a copy of it, may still be in the broker).
                    // An equal version is a copy of the delete itself:
                    // it can resurrect nothing.
                    let older_than_marker =
                        current.is_some_and(|(v, deleted)| deleted && w.version < v);
                    if older_than_marker && !pending.contains_key(&k) {
                        self.renew_marker(k, gen, &mut batch)?;
                    }
                }
                crate::apply::Decision::SkipBlacklisted => stats.blacklisted += 1,
            }
        }
        for (k, v) in meta {
            batch.put(Cf::Meta, k, v);
        }
        if apply_log {
            self.count_applies(effective, &mut batch)?;
        }
        for l in locks {
            self.coord.fence(l)?;
        }
        batch.fences = self.fences_of(locks);
        if failpoint::hit("store::before_apply_write") {
            return Err(StoreError::Injected("store::before_apply_write"));
        }
        if !batch.is_empty() {
            self.write(batch, false)?;
        }
        // Every version seen, applied or stale: a copy elsewhere holds it.
        if let Some(top) = writes.iter().map(|w| w.version).max() {
            self.applied_version(top);
        }
        Ok(stats)
    }

    /// Moves the delete marker held at `k` into generation `gen` (its GC
    /// wait starts again).
    fn renew_marker(&self, k: Vec<u8>, gen: u64, batch: &mut WriteBatch) -> Result<(), StoreError> {
        if let Some(b) = self.engine.get(Cf::Entities, &k)? {
            let mut held = EntityRecord::decode(&b)?;
            if held.is_deleted() && held.marker_gen != Some(gen) {
                held.marker_gen = Some(gen);
                batch.put(Cf::Entities, k, held.encode());
            }
        }
        Ok(())
    }

    /// The apply log's per-version counts (tests' proof of no double apply).
    fn count_applies(
        &self,
        effective: std::collections::BTreeSet<u64>,
        batch: &mut WriteBatch,
    ) -> Result<(), StoreError> {
        for v in effective {
            let k = apply_log_key(v);
            let n = self
                .engine
                .get(Cf::Meta, &k)?
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_be_bytes);
            batch.put(Cf::Meta, k, (n + 1).to_be_bytes().to_vec());
        }
        Ok(())
    }

    /// Writes metadata entries (e.g. rewound offsets) atomically.
    pub fn put_meta(&self, kvs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), StoreError> {
        if kvs.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for (k, v) in kvs {
            batch.put(Cf::Meta, k, v);
        }
        Ok(self.engine.write(batch)?)
    }

    /// Transactions whose effect was applied more than once (with `apply_log`).
    pub fn apply_log_duplicates(&self) -> Result<Vec<(u64, u64)>, StoreError> {
        let p = b"applylog/".to_vec();
        let range = KeyRange {
            end: crate::key::prefix_end(&p),
            start: p,
        };
        let mut out = Vec::new();
        for (k, v) in self.engine.scan(Cf::Meta, &range, usize::MAX)? {
            let n = v.try_into().ok().map_or(0, u64::from_be_bytes);
            if n > 1 {
                let txn = std::str::from_utf8(&k[9..])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                out.push((txn, n));
            }
        }
        Ok(out)
    }

    /// Number of transactions recorded in the apply log.
    pub fn apply_log_len(&self) -> Result<usize, StoreError> {
        let p = b"applylog/".to_vec();
        let range = KeyRange {
            end: crate::key::prefix_end(&p),
            start: p,
        };
        Ok(self.engine.scan(Cf::Meta, &range, usize::MAX)?.len())
    }

    /// Counts the delete markers of every namespace and removes those
    /// `rule` allows, each under its group's lock (re-checked there: a newer
    /// write may have landed). Whether removing is safe is the caller's
    /// reasoning (see `MarkerGcRule`).
    pub async fn gc_delete_markers(&self, rule: MarkerGcRule) -> Result<MarkerGcStats, StoreError> {
        let mut stats = MarkerGcStats::default();
        let mut cursor = KeyRange {
            start: Vec::new(),
            end: None,
        };
        loop {
            let page = self.engine.scan(Cf::Entities, &cursor, 1024)?;
            let Some((last, _)) = page.last().cloned() else {
                break;
            };
            for (k, v) in &page {
                if !EntityRecord::peek(v)?.1 {
                    continue;
                }
                let r = EntityRecord::decode(v)?;
                stats.markers += 1;
                if !rule.allows(&r) {
                    continue;
                }
                let (ns, key) = crate::key::decode_key(k)?;
                let lock = self.lock_group(&EntityGroup::of(&ns, &key)).await?;
                let result = (|| {
                    if let Some(b) = self.engine.get(Cf::Entities, k)? {
                        if EntityRecord::decode(&b)? == r {
                            let mut batch = WriteBatch::default();
                            batch.delete(Cf::Entities, k.clone());
                            self.coord.fence(&lock)?;
                            batch.fences = self.fences_of([&lock]);
                            self.write(batch, false)?;
                            return Ok::<_, StoreError>(true);
                        }
                    }
                    Ok(false)
                })();
                match &result {
                    Ok(_) => self.coord.release(lock).await,
                    Err(e) => self.release_fenced(vec![lock], e).await,
                }
                if result? {
                    stats.removed += 1;
                    stats.markers -= 1;
                }
            }
            if page.len() < 1024 {
                break;
            }
            cursor.start = last;
            cursor.start.push(0);
            // A scan of every entity: let the node's other work run.
            tokio::task::yield_now().await;
        }
        Ok(stats)
    }
}
