//! The entity store: ACID transactions on one entity group, journaling into
//! the outbox, and the replicated-apply path used on N2.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use northwest_schemas::{JournalOp, JournalRecord};

use crate::coord::{Coordinator, GroupLock};
use crate::engine::{Cf, Engine, WriteBatch};
use crate::error::StoreError;
use crate::failpoint;
use crate::key::{encode_key, EntityGroup, KeyPath, KeyRange, Namespace};
use crate::outbox::{self, OutboxEntry};
use crate::record::EntityRecord;
use crate::retry::RetryPolicy;
use crate::types::{TxnId, Version};

/// What to do when the outbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutboxFullPolicy {
    /// Refuse the write with [`StoreError::OutboxFull`].
    #[default]
    Reject,
    /// Wait (up to the lock timeout) for the relay to make room.
    Block,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// This deployment's name, carried in journal records (`origin`).
    pub origin: String,
    pub max_value_bytes: usize,
    /// Write a journal entry with every commit (N1 during a migration).
    pub journal: bool,
    pub outbox_limit: u64,
    pub outbox_full: OutboxFullPolicy,
    /// Transaction ids fetched from the coordinator at a time.
    pub id_block: u64,
    pub retry: RetryPolicy,
    /// Acknowledge journaled commits only once Kafka acknowledged them
    /// (`sync` durability), waiting at most this long.
    pub sync_journal: Option<std::time::Duration>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            origin: "n1".into(),
            max_value_bytes: 1 << 20,
            journal: false,
            outbox_limit: 1_000_000,
            outbox_full: OutboxFullPolicy::Reject,
            id_block: 1000,
            retry: RetryPolicy::default(),
            sync_journal: None,
        }
    }
}

/// A visible entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    pub key: KeyPath,
    pub version: Version,
    pub value: Vec<u8>,
}

/// One operation of a transaction request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: KeyPath,
        value: Vec<u8>,
        if_version: Option<Version>,
    },
    Delete {
        key: KeyPath,
        if_version: Option<Version>,
    },
}

impl Op {
    pub fn key(&self) -> &KeyPath {
        match self {
            Op::Put { key, .. } | Op::Delete { key, .. } => key,
        }
    }
}

pub struct Store {
    pub(crate) engine: Arc<dyn Engine>,
    pub(crate) coord: Arc<dyn Coordinator>,
    pub(crate) cfg: StoreConfig,
    ids: tokio::sync::Mutex<Range<u64>>,
    pub(crate) outbox_next: AtomicU64,
    pub(crate) outbox_len: AtomicU64,
    pub(crate) outbox_changed: tokio::sync::Notify,
    pub(crate) outbox_drained: tokio::sync::Notify,
    /// Every outbox sequence below this value has been shipped.
    pub(crate) shipped: tokio::sync::watch::Sender<u64>,
    /// Outbox sequences handed to commits not yet written (or failed):
    /// concurrent commits on different groups can land out of sequence order.
    pub(crate) in_flight: parking_lot::Mutex<std::collections::BTreeSet<u64>>,
    /// Outbox sequences written and not yet shipped: the shipped mark is the
    /// lowest of these (kept in memory because finding it in RocksDB means
    /// skipping every delete tombstone the relay left at the queue's head).
    pub(crate) pending: parking_lot::Mutex<std::collections::BTreeSet<u64>>,
}

pub(crate) fn now_ms() -> i64 {
    now_ms_pub()
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms_pub() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    pub fn open(
        engine: Arc<dyn Engine>,
        coord: Arc<dyn Coordinator>,
        cfg: StoreConfig,
    ) -> Result<Arc<Self>, StoreError> {
        let (next, pending) = outbox::recover(engine.as_ref())?;
        let (len, first_pending) = (
            pending.len() as u64,
            pending.first().copied().unwrap_or(next),
        );
        Ok(Arc::new(Self {
            engine,
            coord,
            cfg,
            ids: tokio::sync::Mutex::new(0..0),
            outbox_next: AtomicU64::new(next),
            outbox_len: AtomicU64::new(len),
            outbox_changed: tokio::sync::Notify::new(),
            outbox_drained: tokio::sync::Notify::new(),
            shipped: tokio::sync::watch::Sender::new(first_pending),
            in_flight: parking_lot::Mutex::new(Default::default()),
            pending: parking_lot::Mutex::new(pending),
        }))
    }

    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }
    pub fn coordinator(&self) -> &Arc<dyn Coordinator> {
        &self.coord
    }
    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    /// Reads one entity (delete markers read as absent).
    pub fn get(&self, ns: &Namespace, key: &KeyPath) -> Result<Option<Entity>, StoreError> {
        Ok(self.get_record(ns, key)?.and_then(|r| {
            r.value.map(|value| Entity {
                key: key.clone(),
                version: r.version,
                value,
            })
        }))
    }

    /// The stored record including delete markers.
    pub fn get_record(
        &self,
        ns: &Namespace,
        key: &KeyPath,
    ) -> Result<Option<EntityRecord>, StoreError> {
        match self.engine.get(Cf::Entities, &encode_key(ns, key))? {
            Some(b) => Ok(Some(EntityRecord::decode(&b)?)),
            None => Ok(None),
        }
    }

    /// Up to `limit` live entities in `range`, in key order.
    pub fn scan(&self, range: &KeyRange, limit: usize) -> Result<Vec<Entity>, StoreError> {
        let mut out = Vec::new();
        let mut cursor = range.clone();
        while out.len() < limit {
            let page = self.engine.scan(Cf::Entities, &cursor, 512)?;
            let last = match page.last() {
                Some((k, _)) => k.clone(),
                None => break,
            };
            for (k, v) in &page {
                let r = EntityRecord::decode(v)?;
                if let Some(value) = r.value {
                    let (_, key) = crate::key::decode_key(k)?;
                    out.push(Entity {
                        key,
                        version: r.version,
                        value,
                    });
                    if out.len() == limit {
                        break;
                    }
                }
            }
            if page.len() < 512 {
                break;
            }
            cursor.start = last;
            cursor.start.push(0);
        }
        Ok(out)
    }

    /// Begins a transaction on `group`, taking its lock.
    pub async fn begin(&self, group: &EntityGroup) -> Result<Transaction<'_>, StoreError> {
        let lock = self.coord.lock(group).await?;
        Ok(Transaction {
            store: self,
            lock,
            writes: BTreeMap::new(),
        })
    }

    /// Runs `ops` as one transaction (all keys in one entity group), retrying
    /// retriable failures by the store's retry policy. Returns the new version.
    pub async fn run(&self, ns: &Namespace, ops: &[Op]) -> Result<Version, StoreError> {
        let first = ops.first().ok_or(StoreError::Aborted(0))?;
        let group = EntityGroup::of(ns, first.key());
        for op in ops {
            if !group.contains(op.key()) {
                return Err(StoreError::CrossGroup {
                    key: op.key().to_string(),
                    group: group.to_string(),
                });
            }
            if let Op::Put { value, .. } = op {
                self.check_size(value.len())?;
            }
        }
        let (version, seq) = self
            .cfg
            .retry
            .run(StoreError::is_retriable, |_| async {
                let mut txn = self.begin(&group).await?;
                for op in ops {
                    match op {
                        Op::Put {
                            key,
                            value,
                            if_version,
                        } => txn.put(key, value.clone(), *if_version)?,
                        Op::Delete { key, if_version } => txn.delete(key, *if_version)?,
                    }
                }
                txn.commit_seq().await
            })
            .await?;
        if let (Some(seq), Some(wait)) = (seq, self.cfg.sync_journal) {
            self.wait_shipped(seq, wait).await?;
        }
        Ok(version)
    }

    fn check_size(&self, size: usize) -> Result<(), StoreError> {
        if size > self.cfg.max_value_bytes {
            return Err(StoreError::TooLarge {
                size,
                limit: self.cfg.max_value_bytes,
            });
        }
        Ok(())
    }

    /// A fresh transaction id greater than `above`.
    async fn next_id(&self, above: Version) -> Result<TxnId, StoreError> {
        let mut ids = self.ids.lock().await;
        for _ in 0..4 {
            if let Some(id) = ids.next() {
                if id > above.0 {
                    return Ok(TxnId(id));
                }
            }
            // Another process wrote a newer version: a fresh block from the
            // shared counter is above every id handed out so far.
            *ids = self.coord.allocate_ids(self.cfg.id_block).await?;
        }
        Err(StoreError::Engine(crate::error::EngineError::Corrupt(format!(
            "stored version {above} is above the coordinator's transaction counter: wrong coordination root?"
        ))))
    }

    async fn wait_for_outbox_room(&self) -> Result<(), StoreError> {
        if !self.cfg.journal {
            return Ok(());
        }
        let full = || self.outbox_len.load(Ordering::Acquire) >= self.cfg.outbox_limit;
        if !full() {
            return Ok(());
        }
        if self.cfg.outbox_full == OutboxFullPolicy::Block {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
            while full() && tokio::time::Instant::now() < deadline {
                let _ = tokio::time::timeout(
                    std::time::Duration::from_millis(50),
                    self.outbox_drained.notified(),
                )
                .await;
            }
        }
        if full() {
            return Err(StoreError::OutboxFull(
                self.outbox_len.load(Ordering::Acquire),
            ));
        }
        Ok(())
    }

    /// Unshipped journal entries.
    pub fn outbox_len(&self) -> u64 {
        self.outbox_len.load(Ordering::Acquire)
    }
}

#[derive(Debug, Clone)]
enum Write {
    Put(Vec<u8>),
    Delete,
}

/// A transaction on one entity group; holds the group's lock until commit,
/// abort or drop (drop = abort).
pub struct Transaction<'a> {
    store: &'a Store,
    lock: GroupLock,
    writes: BTreeMap<KeyPath, Write>,
}

impl Transaction<'_> {
    fn check(&self, key: &KeyPath) -> Result<(), StoreError> {
        if !self.lock.group().contains(key) {
            return Err(StoreError::CrossGroup {
                key: key.to_string(),
                group: self.lock.group().to_string(),
            });
        }
        Ok(())
    }

    fn ns(&self) -> &Namespace {
        &self.lock.group().ns
    }

    /// Reads `key`, seeing this transaction's own writes.
    pub fn get(&self, key: &KeyPath) -> Result<Option<Entity>, StoreError> {
        self.check(key)?;
        match self.writes.get(key) {
            Some(Write::Put(v)) => Ok(Some(Entity {
                key: key.clone(),
                version: Version::ABSENT,
                value: v.clone(),
            })),
            Some(Write::Delete) => Ok(None),
            None => self.store.get(self.ns(), key),
        }
    }

    /// The committed visible version of `key` (0 when absent or deleted).
    fn committed_version(&self, key: &KeyPath) -> Result<Version, StoreError> {
        Ok(self
            .store
            .get(self.ns(), key)?
            .map(|e| e.version)
            .unwrap_or(Version::ABSENT))
    }

    fn expect(&self, key: &KeyPath, expected: Option<Version>) -> Result<(), StoreError> {
        if let Some(expected) = expected {
            let found = self.committed_version(key)?;
            if found != expected {
                return Err(StoreError::VersionMismatch {
                    key: key.to_string(),
                    expected,
                    found,
                });
            }
        }
        Ok(())
    }

    /// Stages a put. With `if_version`, the committed version must equal it
    /// (0 = must not exist).
    pub fn put(
        &mut self,
        key: &KeyPath,
        value: Vec<u8>,
        if_version: Option<Version>,
    ) -> Result<(), StoreError> {
        self.check(key)?;
        self.store.check_size(value.len())?;
        self.expect(key, if_version)?;
        self.writes.insert(key.clone(), Write::Put(value));
        Ok(())
    }

    /// Stages a delete (leaves a versioned delete marker).
    pub fn delete(&mut self, key: &KeyPath, if_version: Option<Version>) -> Result<(), StoreError> {
        self.check(key)?;
        self.expect(key, if_version)?;
        self.writes.insert(key.clone(), Write::Delete);
        Ok(())
    }

    /// Discards the staged writes and releases the lock.
    pub async fn abort(self) {
        self.store.coord.release(self.lock).await;
    }

    /// Commits atomically; returns the new version (= transaction id).
    pub async fn commit(self) -> Result<Version, StoreError> {
        Ok(self.commit_seq().await?.0)
    }

    /// Commits; also returns the outbox sequence of its journal entry.
    pub async fn commit_seq(self) -> Result<(Version, Option<u64>), StoreError> {
        let store = self.store;
        if self.writes.is_empty() {
            store.coord.release(self.lock).await;
            return Ok((Version::ABSENT, None));
        }
        store.wait_for_outbox_room().await?;
        let ns = self.ns().clone();
        let mut above = Version::ABSENT;
        for key in self.writes.keys() {
            if let Some(r) = store.get_record(&ns, key)? {
                above = above.max(r.version);
            }
        }
        let id = store.next_id(above).await?;
        match self.write(id).await {
            Ok(seq) => {
                store.coord.release(self.lock).await;
                Ok((id.version(), seq))
            }
            Err(e) => {
                // The id was taken: make sure nothing of it is ever visible.
                if let Err(be) = store.coord.blacklist(id).await {
                    tracing::error!(txn = id.0, error = %be, "blacklisting a failed transaction failed");
                }
                Err(e)
            }
        }
    }

    fn write_batch(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if failpoint::hit("store::before_commit_write") {
            return Err(StoreError::Injected("store::before_commit_write"));
        }
        self.store.coord.fence(&self.lock)?;
        Ok(self.store.engine.write(batch)?)
    }

    async fn write(&self, id: TxnId) -> Result<Option<u64>, StoreError> {
        let store = self.store;
        let ns = self.ns();
        let ts = now_ms();
        let mut batch = WriteBatch::default();
        let mut ops = Vec::with_capacity(self.writes.len());
        for (key, w) in &self.writes {
            let value = match w {
                Write::Put(v) => Some(v.clone()),
                Write::Delete => None,
            };
            let rec = EntityRecord {
                version: id.version(),
                commit_ts_ms: ts,
                value,
            };
            batch.put(Cf::Entities, encode_key(ns, key), rec.encode());
            if store.cfg.journal {
                ops.push(match w {
                    Write::Put(v) => JournalOp::Put {
                        key: key.to_string(),
                        value: v.clone(),
                    },
                    Write::Delete => JournalOp::Delete {
                        key: key.to_string(),
                    },
                });
            }
        }
        let mut seq = None;
        if store.cfg.journal {
            let record = JournalRecord {
                txn_id: id.0,
                namespace: ns.to_string(),
                entity_group: self.lock.group().root.clone(),
                commit_ts_ms: ts,
                origin: store.cfg.origin.clone(),
                ops,
            };
            // Encoded before a sequence is taken: an error must not strand one.
            let encoded = northwest_schemas::encode_journal(&record)
                .map_err(|e| crate::error::EngineError::Corrupt(e.to_string()))?;
            let s = {
                let mut inflight = store.in_flight.lock();
                let s = store.outbox_next.fetch_add(1, Ordering::SeqCst);
                inflight.insert(s);
                s
            };
            // Pending before it is written: the relay may ship and acknowledge
            // it the instant the write lands.
            store.pending.lock().insert(s);
            store.outbox_len.fetch_add(1, Ordering::AcqRel);
            let entry = OutboxEntry {
                key: self.lock.group().journal_key(),
                ts_ms: ts,
                record: encoded,
            };
            batch.put(Cf::Outbox, outbox::seq_key(s), entry.encode());
            seq = Some(s);
        }
        let written = self.write_batch(batch);
        if let Some(s) = seq {
            if written.is_err() && store.pending.lock().remove(&s) {
                store.outbox_len.fetch_sub(1, Ordering::AcqRel);
            }
            store.in_flight.lock().remove(&s);
        }
        written?;
        if seq.is_some() {
            // A stored permit: the relay never misses a commit made while it was busy.
            store.outbox_changed.notify_one();
        }
        Ok(seq)
    }
}

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
        let locks = self.coord.lock_many(&groups).await?;
        let result = self.apply_locked(writes, meta, &locks, apply_log);
        futures::future::join_all(locks.into_iter().map(|l| self.coord.release(l))).await;
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
                    };
                    pending.insert(k.clone(), (w.version, w.value.is_none()));
                    batch.put(Cf::Entities, k, rec.encode());
                    stats.applied += 1;
                    effective.insert(w.version.0);
                }
                crate::apply::Decision::SkipStale => stats.stale += 1,
                crate::apply::Decision::SkipBlacklisted => stats.blacklisted += 1,
            }
        }
        for (k, v) in meta {
            batch.put(Cf::Meta, k, v);
        }
        if apply_log {
            for v in effective {
                let k = apply_log_key(v);
                let n = self
                    .engine
                    .get(Cf::Meta, &k)?
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u64::from_be_bytes);
                batch.put(Cf::Meta, k, (n + 1).to_be_bytes().to_vec());
            }
        }
        for l in locks {
            self.coord.fence(l)?;
        }
        if failpoint::hit("store::before_apply_write") {
            return Err(StoreError::Injected("store::before_apply_write"));
        }
        if !batch.is_empty() {
            self.engine.write(batch)?;
        }
        Ok(stats)
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

    /// Removes delete markers committed before `before_ms`, under each
    /// group's lock. Safe once no journal record or snapshot row older than
    /// the marker can still arrive (i.e. past the journal's retention and
    /// with no migration in progress); returns how many were removed.
    pub async fn gc_delete_markers(
        &self,
        ns: &Namespace,
        before_ms: i64,
    ) -> Result<u64, StoreError> {
        let mut removed = 0;
        let mut cursor = KeyRange::namespace(ns);
        loop {
            let page = self.engine.scan(Cf::Entities, &cursor, 1024)?;
            let Some((last, _)) = page.last().cloned() else {
                break;
            };
            for (k, v) in &page {
                let r = EntityRecord::decode(v)?;
                if r.is_deleted() && r.commit_ts_ms < before_ms {
                    let (ns, key) = crate::key::decode_key(k)?;
                    let lock = self.coord.lock(&EntityGroup::of(&ns, &key)).await?;
                    // Re-check under the lock: a newer write may have landed.
                    if let Some(b) = self.engine.get(Cf::Entities, k)? {
                        if EntityRecord::decode(&b)? == r {
                            let mut batch = WriteBatch::default();
                            batch.delete(Cf::Entities, k.clone());
                            self.coord.fence(&lock)?;
                            self.engine.write(batch)?;
                            removed += 1;
                        }
                    }
                    self.coord.release(lock).await;
                }
            }
            if page.len() < 1024 {
                break;
            }
            cursor.start = last;
            cursor.start.push(0);
        }
        Ok(removed)
    }
}
