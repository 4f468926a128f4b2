//! The entity store: ACID transactions on one entity group, journaling into
//! the outbox, and the replicated-apply path used on N2.

use std::ops::Range;
use std::sync::Arc;

use crate::coord::Coordinator;
use crate::engine::{Cf, Engine, WriteBatch};
use crate::error::{EngineError, StoreError};
use crate::key::{encode_key, KeyPath, KeyRange, Namespace};
use crate::outbox::Outbox;
use crate::record::EntityRecord;
use crate::retry::RetryPolicy;
use crate::types::{TxnId, Version};

/// What to do when the outbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutboxFullPolicy {
    /// Refuse the write with [`StoreError::OutboxFull`].
    #[default]
    Reject,
    /// Wait (up to 10 s) for the relay to make room.
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
    /// The largest Kafka message the journal carries (producer and topic
    /// limit): a transaction whose record could exceed it is refused before
    /// it commits, so the relay is never handed an entry it cannot ship.
    pub journal_message_limit: usize,
    /// Bytes of entity records the read cache holds; 0: no cache.
    pub read_cache_bytes: u64,
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
            journal_message_limit: 10 << 20,
            read_cache_bytes: 0,
        }
    }
}

/// Meta key of the end of the last id block handed out (u64 BE).
const ID_FLOOR_KEY: &[u8] = b"id_floor";
/// Meta key of the current marker-GC generation (u64 BE).
const MARKER_GEN_KEY: &[u8] = b"markergc/gen";

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
    pub(crate) outbox: Outbox,
    /// Written into every delete marker; see `advance_marker_generation`.
    marker_gen: std::sync::atomic::AtomicU64,
    cache: Option<crate::cache::ReadCache>,
    /// Namespaces journaled although `cfg.journal` is off: those a replica
    /// was promoted for, whose client writes go to the reverse journal.
    journaled: parking_lot::RwLock<std::collections::HashSet<String>>,
    /// The highest version this process applied from another deployment
    /// (journal, reverse journal, snapshot). A new local version must exceed
    /// it even where no copy of the key is held here any more (its delete
    /// marker collected) while another copy still holds it: otherwise that
    /// copy would skip the new write as stale. A restart needs no record of
    /// it: the first block after a restart is above every id handed out.
    applied_floor: std::sync::atomic::AtomicU64,
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
        let engine: Arc<dyn Engine> = if engine.calls_wait_on_network() {
            Arc::new(crate::engine::OffWorker(engine))
        } else {
            engine
        };
        let outbox = Outbox::open(engine.clone())?;
        if let Some(b) = engine.get(Cf::Meta, ID_FLOOR_KEY)? {
            let floor = b
                .as_slice()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| EngineError::Corrupt("meta id_floor".into()))?;
            coord.raise_id_floor(floor);
        }
        let marker_gen = match engine.get(Cf::Meta, MARKER_GEN_KEY)? {
            Some(b) => b
                .as_slice()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| EngineError::Corrupt("meta markergc/gen".into()))?,
            None => 1,
        };
        Ok(Arc::new(Self {
            engine,
            coord,
            cache: (cfg.read_cache_bytes > 0)
                .then(|| crate::cache::ReadCache::new(cfg.read_cache_bytes)),
            journaled: Default::default(),
            cfg,
            ids: tokio::sync::Mutex::new(0..0),
            outbox,
            marker_gen: marker_gen.into(),
            applied_floor: 0.into(),
        }))
    }

    /// The marker-GC generation new delete markers are written in.
    pub fn marker_generation(&self) -> u64 {
        self.marker_gen.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Starts a new marker-GC generation (persisted first, so a restart
    /// never goes back) and returns the one that ended. A write in flight
    /// during the call may still carry the ended generation: its records
    /// were read from the journal (or its lock taken) before the call, which
    /// is all marker GC relies on. Marker GC reasons with these numbers
    /// rather than clock time, which can step.
    pub fn advance_marker_generation(&self) -> Result<u64, StoreError> {
        let ended = self.marker_generation();
        let mut wb = WriteBatch::default();
        wb.put(
            Cf::Meta,
            MARKER_GEN_KEY.to_vec(),
            (ended + 1).to_be_bytes().to_vec(),
        );
        self.engine.write(wb)?;
        self.marker_gen
            .store(ended + 1, std::sync::atomic::Ordering::SeqCst);
        Ok(ended)
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
    /// The journal outbox: what the relay reads, acknowledges and waits on.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
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
        let k = encode_key(ns, key);
        let Some(cache) = &self.cache else {
            return match self.engine.get(Cf::Entities, &k)? {
                Some(b) => Ok(Some(EntityRecord::decode(&b)?)),
                None => Ok(None),
            };
        };
        match cache.get(&k) {
            Ok(b) => Ok(Some(EntityRecord::decode(&b)?)),
            Err(ticket) => match self.engine.get(Cf::Entities, &k)? {
                Some(b) => {
                    cache.fill(&k, ticket, &b);
                    Ok(Some(EntityRecord::decode(&b)?))
                }
                None => Ok(None),
            },
        }
    }

    /// Writes `batch` and brings the read cache up to date with the entity
    /// records in it. Every write of entity records goes through here, with
    /// their group locks held, so the cache never lags a completed write.
    /// `client`: a client's commit, whose records are cached; applied ones
    /// only refresh what is cached.
    pub(crate) fn write(&self, batch: WriteBatch, client: bool) -> Result<(), StoreError> {
        let Some(cache) = &self.cache else {
            return Ok(self.engine_write(batch)?);
        };
        let ops = cache.begin(&batch, client);
        match self.engine_write(batch) {
            Ok(()) => {
                cache.written(ops);
                Ok(())
            }
            Err(e) => {
                cache.failed(ops);
                Err(e.into())
            }
        }
    }

    /// A write that waits for the disk leaves its runtime worker to other
    /// tasks meanwhile (`block_in_place`: synchronous, so a dropped request
    /// cannot cut it off between the write and its bookkeeping), so many
    /// commits reach RocksDB at once and its group commit gives them one
    /// fsync.
    fn engine_write(&self, batch: WriteBatch) -> Result<(), EngineError> {
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if self.engine.syncs_writes() && multi_thread {
            tokio::task::block_in_place(|| self.engine.write(batch))
        } else {
            self.engine.write(batch)
        }
    }

    /// The read cache's counters (None: no cache configured).
    pub fn cache_stats(&self) -> Option<crate::cache::CacheStats> {
        self.cache.as_ref().map(|c| c.stats())
    }

    /// Up to `limit` keys of `ns` in the read cache: what this node serves
    /// most (moka keeps the frequently and recently used).
    pub fn hot_keys(&self, ns: &Namespace, limit: usize) -> Vec<KeyPath> {
        let Some(cache) = &self.cache else {
            return Vec::new();
        };
        let prefix = crate::key::KeyRange::namespace(ns).start;
        cache
            .keys_with_prefix(&prefix, limit)
            .iter()
            .filter_map(|k| crate::key::decode_key(k).ok().map(|(_, key)| key))
            .collect()
    }

    /// Reads `keys` of `ns` into the read cache (a migration target warming
    /// up with the source's hot set); returns how many were stored here.
    pub fn warm(&self, ns: &Namespace, keys: &[KeyPath]) -> Result<u64, StoreError> {
        let Some(cache) = &self.cache else {
            return Ok(0);
        };
        let mut found = 0;
        for key in keys {
            if self.get_record(ns, key)?.is_some() {
                cache.count_warmed();
                found += 1;
            }
        }
        Ok(found)
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

    pub(crate) fn check_size(&self, size: usize) -> Result<(), StoreError> {
        if size > self.cfg.max_value_bytes {
            return Err(StoreError::TooLarge {
                size,
                limit: self.cfg.max_value_bytes,
            });
        }
        Ok(())
    }

    /// Raises the floor of local versions to `version`, applied here from
    /// another deployment.
    pub(crate) fn applied_version(&self, version: Version) {
        self.applied_floor
            .fetch_max(version.0, std::sync::atomic::Ordering::SeqCst);
    }

    /// A fresh transaction id greater than `above` and than every version
    /// applied here from another deployment.
    pub(crate) async fn next_id(&self, above: Version) -> Result<TxnId, StoreError> {
        let floor = self.applied_floor.load(std::sync::atomic::Ordering::SeqCst);
        let mut ids = self.ids.lock().await;
        for _ in 0..4 {
            if let Some(id) = ids.next() {
                if id > above.0 && id > floor {
                    return Ok(TxnId(id));
                }
                // Another process (or this one before a restart) wrote a newer
                // version: a process-local counter jumps above it; a fresh
                // block of a shared counter is above every id handed out.
                self.coord.raise_id_floor(above.0 + 1);
            }
            // Applied versions come from other deployments' blocks of the
            // same counter, or (a foreign or crafted record) from beyond it:
            // the block starts above them either way.
            let block = self
                .coord
                .allocate_ids_above(self.cfg.id_block, floor.saturating_add(1))
                .await?;
            // Recorded before any id of the block is used, so a restarted
            // process-local counter never hands an id out twice.
            let mut wb = WriteBatch::default();
            wb.put(
                Cf::Meta,
                ID_FLOOR_KEY.to_vec(),
                block.end.to_be_bytes().to_vec(),
            );
            self.engine.write(wb)?;
            *ids = block;
        }
        Err(StoreError::Engine(EngineError::Corrupt(format!(
            "stored version {above} is above the coordinator's transaction counter: wrong coordination root?"
        ))))
    }

    /// Whether commits to `ns` are journaled (into the outbox).
    pub fn journals(&self, ns: &Namespace) -> bool {
        self.cfg.journal || self.journaled.read().contains(ns.as_str())
    }

    /// Journals (or stops journaling) client commits to `ns` on a node whose
    /// config does not journal: a promoted replica's writes go to the
    /// reverse journal. Turn it on before the namespace takes writes and
    /// off only once none are in flight (under its fence).
    pub fn set_journaled(&self, ns: &Namespace, on: bool) {
        let mut j = self.journaled.write();
        if on {
            j.insert(ns.as_str().to_string());
        } else {
            j.remove(ns.as_str());
        }
    }

    pub(crate) async fn wait_for_outbox_room(&self, ns: &Namespace) -> Result<(), StoreError> {
        if !self.journals(ns) {
            return Ok(());
        }
        let full = || self.outbox.len() >= self.cfg.outbox_limit;
        if !full() {
            return Ok(());
        }
        if self.cfg.outbox_full == OutboxFullPolicy::Block {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
            while full() && tokio::time::Instant::now() < deadline {
                let _ = tokio::time::timeout(
                    std::time::Duration::from_millis(50),
                    self.outbox.drained(),
                )
                .await;
            }
        }
        if full() {
            return Err(StoreError::OutboxFull(self.outbox.len()));
        }
        Ok(())
    }
}
