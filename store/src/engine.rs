//! The storage-engine contract. No engine types appear here: RocksDB is one
//! implementation ([`crate::rocks::RocksEngine`]), the in-memory engine below
//! another, and other datastores can be added behind the same trait.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::EngineError;
use crate::key::KeyRange;

/// Column families: entities, the journal outbox, and metadata (offsets,
/// counters). Each is an independent ordered keyspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cf {
    Entities,
    Outbox,
    Meta,
}

impl Cf {
    pub const ALL: [Cf; 3] = [Cf::Entities, Cf::Outbox, Cf::Meta];
    pub fn name(self) -> &'static str {
        match self {
            Cf::Entities => "entities",
            Cf::Outbox => "outbox",
            Cf::Meta => "meta",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    Put {
        cf: Cf,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        cf: Cf,
        key: Vec<u8>,
    },
}

/// A set of writes applied atomically by [`Engine::write`].
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    pub ops: Vec<BatchOp>,
    /// The fencing tokens of the entity-group leases the batch was written
    /// under: an engine several processes write ([`Engine::fence_groups`])
    /// refuses the whole batch if a newer holder of any of them came since.
    pub fences: Vec<GroupFence>,
}

/// A lease's fencing token for one entity group (its journal key): tokens
/// of successive holders only grow, so a holder whose lease was lost (its
/// session expired while it kept running) carries an older one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupFence {
    pub group: Vec<u8>,
    pub token: i64,
}

impl WriteBatch {
    pub fn put(&mut self, cf: Cf, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push(BatchOp::Put { cf, key, value });
    }
    pub fn delete(&mut self, cf: Cf, key: Vec<u8>) {
        self.ops.push(BatchOp::Delete { cf, key });
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

pub type Kv = (Vec<u8>, Vec<u8>);

/// Read access shared by the live engine and its point-in-time snapshots.
pub trait Reader: Send + Sync {
    /// The value stored under `key`, if any.
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;
    /// Up to `limit` pairs in `range`, in ascending key order.
    fn scan(&self, cf: Cf, range: &KeyRange, limit: usize) -> Result<Vec<Kv>, EngineError>;
}

/// A storage engine.
///
/// Contract: `write` is atomic and durable against a process crash once it
/// returns (all of a batch or none of it is visible, before and after a
/// restart); reads observe every completed `write`; `snapshot` returns a
/// consistent point-in-time view unaffected by later writes.
pub trait Engine: Reader {
    fn write(&self, batch: WriteBatch) -> Result<(), EngineError>;
    fn snapshot(&self) -> Result<Arc<dyn Reader>, EngineError>;
    /// Calls `f` with a consistent point-in-time view taken when the call
    /// begins, for as long as `f` runs: unlike [`Engine::snapshot`], an
    /// engine may make this one cheap (no copy, O(1) to take) because it
    /// cannot outlive the call.
    fn with_snapshot(&self, f: &mut dyn FnMut(&dyn Reader)) -> Result<(), EngineError> {
        let s = self.snapshot()?;
        f(s.as_ref());
        Ok(())
    }
    /// Writes a durable, consistent copy of the store to `dir` that another
    /// process can open read-only ([`crate::rocks::open_checkpoint`]) while
    /// this engine keeps taking writes.
    fn checkpoint(&self, dir: &std::path::Path) -> Result<(), EngineError> {
        Err(EngineError::Io(format!(
            "the {} engine cannot write checkpoints (to {})",
            self.name(),
            dir.display()
        )))
    }
    /// Short engine name for logs and metrics.
    fn name(&self) -> &'static str;
    /// What the engine holds in this process's memory, where it keeps
    /// count (`None`: it does not, e.g. a database server's own memory).
    fn memory(&self) -> Option<EngineMemory> {
        None
    }
    /// Whether `write` returns only once the batch is on disk (fsync):
    /// callers then write from a thread that may block, so concurrent
    /// writes reach the engine together and share one sync.
    fn syncs_writes(&self) -> bool {
        false
    }
    /// Whether every call, reads included, waits on a network round trip
    /// (a database server): the store then makes each call leave its
    /// runtime worker to other tasks ([`OffWorker`]).
    fn calls_wait_on_network(&self) -> bool {
        false
    }
    /// Records that these leases' holders now write their groups, before
    /// the holders read them: from then on a batch carrying an older token
    /// for any of these groups is refused ([`EngineError::Fenced`]), and
    /// this call itself is refused if a newer token is already recorded
    /// (our lease was superseded). An engine only one process can open
    /// (RocksDB) has no other writer to fence and ignores tokens.
    fn fence_groups(&self, _fences: &[GroupFence]) -> Result<(), EngineError> {
        Ok(())
    }
    /// Whether this engine keeps and checks fencing tokens.
    fn checks_fences(&self) -> bool {
        false
    }
}

/// An embedded engine's memory by use, in bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EngineMemory {
    /// Write buffers (memtables), flushed and unflushed.
    pub memtables: u64,
    /// The block cache's content, memtable reservations charged to it
    /// included (RocksDB's write buffer manager).
    pub block_cache: u64,
    /// Of which pinned by readers and iterators.
    pub block_cache_pinned: u64,
    /// Index and filter blocks held outside the block cache.
    pub table_readers: u64,
    /// What the engine was told it may use (`None`: no limit).
    pub budget: Option<u64>,
}

/// An engine whose calls leave their runtime worker while they wait
/// (`block_in_place` on a multi-threaded runtime): with an engine behind a
/// network round trip, a worker blocked on each read would cap the node's
/// concurrency at its worker count.
pub struct OffWorker(pub Arc<dyn Engine>);

pub(crate) fn off_worker<T>(f: impl FnOnce() -> T) -> T {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

impl Reader for OffWorker {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        off_worker(|| self.0.get(cf, key))
    }
    fn scan(&self, cf: Cf, range: &KeyRange, limit: usize) -> Result<Vec<Kv>, EngineError> {
        off_worker(|| self.0.scan(cf, range, limit))
    }
}

impl Engine for OffWorker {
    fn write(&self, batch: WriteBatch) -> Result<(), EngineError> {
        off_worker(|| self.0.write(batch))
    }
    fn snapshot(&self) -> Result<Arc<dyn Reader>, EngineError> {
        off_worker(|| self.0.snapshot())
    }
    fn with_snapshot(&self, f: &mut dyn FnMut(&dyn Reader)) -> Result<(), EngineError> {
        off_worker(|| self.0.with_snapshot(f))
    }
    fn checkpoint(&self, dir: &std::path::Path) -> Result<(), EngineError> {
        off_worker(|| self.0.checkpoint(dir))
    }
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn memory(&self) -> Option<EngineMemory> {
        self.0.memory()
    }
    /// Already off the worker: the store need not leave it again.
    fn syncs_writes(&self) -> bool {
        false
    }
    fn fence_groups(&self, fences: &[GroupFence]) -> Result<(), EngineError> {
        off_worker(|| self.0.fence_groups(fences))
    }
    fn checks_fences(&self) -> bool {
        self.0.checks_fences()
    }
}

type Tables = BTreeMap<Cf, BTreeMap<Vec<u8>, Vec<u8>>>;

/// An in-memory engine for tests: same contract, nothing persists. It
/// keeps fencing tokens as a shared engine does, so the store's use of
/// them is tested without a database server.
#[derive(Default)]
pub struct MemEngine {
    tables: RwLock<Tables>,
    fences: parking_lot::Mutex<BTreeMap<Vec<u8>, i64>>,
}

impl MemEngine {
    pub fn new() -> Self {
        Self::default()
    }
}

struct MemSnapshot(Tables);

fn scan_tables(t: &Tables, cf: Cf, range: &KeyRange, limit: usize) -> Vec<Kv> {
    let Some(map) = t.get(&cf) else {
        return Vec::new();
    };
    let upper = match &range.end {
        Some(e) => std::ops::Bound::Excluded(e.clone()),
        None => std::ops::Bound::Unbounded,
    };
    map.range((std::ops::Bound::Included(range.start.clone()), upper))
        .take(limit)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl Reader for MemEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self
            .tables
            .read()
            .get(&cf)
            .and_then(|m| m.get(key).cloned()))
    }
    fn scan(&self, cf: Cf, range: &KeyRange, limit: usize) -> Result<Vec<Kv>, EngineError> {
        Ok(scan_tables(&self.tables.read(), cf, range, limit))
    }
}

/// Each group once, with the newest token given for it.
pub(crate) fn newest_per_group(fences: &[GroupFence]) -> BTreeMap<Vec<u8>, i64> {
    let mut m: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    for f in fences {
        let t = m.entry(f.group.clone()).or_insert(f.token);
        *t = (*t).max(f.token);
    }
    m
}

/// Checks `fences` against `known` (each group's newest token), then
/// records them: all or nothing, as an engine's transaction does.
pub(crate) fn check_fences(
    known: &mut BTreeMap<Vec<u8>, i64>,
    fences: &[GroupFence],
) -> Result<(), EngineError> {
    let fences = newest_per_group(fences);
    for (g, &token) in &fences {
        if let Some(&newer) = known.get(g).filter(|&&t| t > token) {
            return Err(EngineError::Fenced(format!(
                "entity group {} has a newer lease holder (token {newer} > ours {token})",
                String::from_utf8_lossy(g),
            )));
        }
    }
    known.extend(fences);
    Ok(())
}

impl Engine for MemEngine {
    fn fence_groups(&self, fences: &[GroupFence]) -> Result<(), EngineError> {
        check_fences(&mut self.fences.lock(), fences)
    }
    fn checks_fences(&self) -> bool {
        true
    }
    fn write(&self, batch: WriteBatch) -> Result<(), EngineError> {
        let mut t = self.tables.write();
        check_fences(&mut self.fences.lock(), &batch.fences)?;
        for op in batch.ops {
            match op {
                BatchOp::Put { cf, key, value } => {
                    t.entry(cf).or_default().insert(key, value);
                }
                BatchOp::Delete { cf, key } => {
                    t.entry(cf).or_default().remove(&key);
                }
            }
        }
        Ok(())
    }
    fn snapshot(&self) -> Result<Arc<dyn Reader>, EngineError> {
        Ok(Arc::new(MemSnapshot(self.tables.read().clone())))
    }
    fn name(&self) -> &'static str {
        "memory"
    }
}

impl Reader for MemSnapshot {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.0.get(&cf).and_then(|m| m.get(key).cloned()))
    }
    fn scan(&self, cf: Cf, range: &KeyRange, limit: usize) -> Result<Vec<Kv>, EngineError> {
        Ok(scan_tables(&self.0, cf, range, limit))
    }
}
