//! A transaction on one entity group: staged reads and writes under the
//! group's lock, committed as one atomic batch with its journal outbox entry.

use std::collections::BTreeMap;

use northwest_schemas::{JournalOp, JournalRecord};

use crate::coord::GroupLock;
use crate::engine::{Cf, WriteBatch};
use crate::error::StoreError;
use crate::failpoint;
use crate::key::{encode_key, EntityGroup, KeyPath, Namespace};
use crate::outbox::{self, OutboxEntry};
use crate::record::EntityRecord;
use crate::store::{now_ms, Entity, Op, Store};
use crate::types::{TxnId, Version};

#[derive(Debug, Clone)]
enum Write {
    Put(Vec<u8>),
    Delete,
}

impl Store {
    /// Begins a transaction on `group`, taking its lock.
    pub async fn begin(&self, group: &EntityGroup) -> Result<Transaction<'_>, StoreError> {
        let lock = self.lock_group(group).await?;
        Ok(Transaction::new(self, lock))
    }

    /// Runs `ops` as one transaction (all keys in one entity group), retrying
    /// retriable failures by the store's retry policy. Returns the new version.
    pub async fn run(&self, ns: &Namespace, ops: &[Op]) -> Result<Version, StoreError> {
        let first = ops.first().ok_or(StoreError::Aborted(0))?;
        let group = EntityGroup::of(ns, first.key());
        let mut seen = std::collections::HashSet::with_capacity(ops.len());
        for op in ops {
            if !seen.insert(op.key()) {
                return Err(StoreError::DuplicateKey(op.key().to_string()));
            }
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
            self.outbox.wait_shipped(seq, wait).await?;
        }
        Ok(version)
    }
}

/// A transaction on one entity group; holds the group's lock until commit,
/// abort or drop (drop = abort).
pub struct Transaction<'a> {
    store: &'a Store,
    lock: GroupLock,
    writes: BTreeMap<KeyPath, Write>,
}

impl<'a> Transaction<'a> {
    pub(crate) fn new(store: &'a Store, lock: GroupLock) -> Self {
        Self {
            store,
            lock,
            writes: BTreeMap::new(),
        }
    }

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
        let ns = self.ns().clone();
        if store.journals(&ns) {
            self.check_journal_size()?;
        }
        store.wait_for_outbox_room(&ns).await?;
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
            // The engine says nothing was written (its server is down): the
            // id leaves no trace to hide, and an outage under load must not
            // leave a blacklist entry per attempt.
            // Likewise when a newer lease holder fenced the batch out.
            Err(
                e @ StoreError::Engine(
                    crate::error::EngineError::Unavailable(_)
                    | crate::error::EngineError::Fenced(_),
                ),
            ) => {
                store.release_fenced(vec![self.lock], &e).await;
                Err(e)
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

    /// Refuses a transaction whose journal message could exceed the limit,
    /// by an upper bound of its Avro encoding (every length prefix and
    /// integer at its widest) plus the Kafka record's key and framing.
    fn check_journal_size(&self) -> Result<(), StoreError> {
        const FIXED: usize = 256;
        const PER_OP: usize = 24;
        let group = self.lock.group();
        let mut size =
            FIXED + 2 * (group.ns.as_str().len() + group.root.len()) + self.store.cfg.origin.len();
        for (key, w) in &self.writes {
            let value = match w {
                Write::Put(v) => v.len(),
                Write::Delete => 0,
            };
            size += PER_OP + key.as_str().len() + value;
        }
        let limit = self.store.cfg.journal_message_limit;
        if size > limit {
            return Err(StoreError::JournalTooLarge { size, limit });
        }
        Ok(())
    }

    fn write_batch(&self, mut batch: WriteBatch) -> Result<(), StoreError> {
        if failpoint::hit("store::before_commit_write") {
            return Err(StoreError::Injected("store::before_commit_write"));
        }
        self.store.coord.fence(&self.lock)?;
        // Past every check this process makes of its lease: what a process
        // stopped here meanwhile finds is up to the engine's fence.
        if failpoint::hit("store::after_lease_check") {
            return Err(StoreError::Injected("store::after_lease_check"));
        }
        batch.fences = self.store.fences_of([&self.lock]);
        self.store.write(batch, true)
    }

    async fn write(&self, id: TxnId) -> Result<Option<u64>, StoreError> {
        let store = self.store;
        let ns = self.ns();
        let ts = now_ms();
        let mut batch = WriteBatch::default();
        let mut ops = Vec::with_capacity(self.writes.len());
        let journal = store.journals(ns);
        for (key, w) in &self.writes {
            let value = match w {
                Write::Put(v) => Some(v.clone()),
                Write::Delete => None,
            };
            let rec = EntityRecord {
                version: id.version(),
                commit_ts_ms: ts,
                marker_gen: value.is_none().then(|| store.marker_generation()),
                value,
            };
            batch.put(Cf::Entities, encode_key(ns, key), rec.encode());
            if journal {
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
        if journal {
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
            let s = store.outbox.reserve();
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
            store.outbox.settle(s, written.is_ok());
        }
        written?;
        Ok(seq)
    }
}
