//! The RocksDB engine: the embedded default.
//!
//! Snapshots are RocksDB checkpoints (hard-linked SST files) opened read-only,
//! so a long-running snapshot stream owns its view without borrowing the live
//! database and survives across chunks; the directory is removed on drop. A
//! view for the length of one call ([`Engine::with_snapshot`], a digest job)
//! is a plain RocksDB snapshot instead: taken in O(1), nothing flushed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rocksdb::{
    checkpoint::Checkpoint, BlockBasedOptions, Cache, ColumnFamilyDescriptor, Direction,
    IteratorMode, Options, WriteBufferManager, DB,
};

use crate::engine::{BatchOp, Cf, Engine, EngineMemory, Kv, Reader, WriteBatch};
use crate::error::EngineError;
use crate::key::KeyRange;

pub struct RocksEngine {
    db: DB,
    dir: PathBuf,
    sync_writes: bool,
    next_snapshot: AtomicU64,
    cache: Cache,
    budget: u64,
}

/// The RocksDB memory budget of [`RocksEngine::open`] (MiB).
pub const DEFAULT_ROCKSDB_MEMORY_MB: u64 = 128;

fn io(e: rocksdb::Error) -> EngineError {
    EngineError::Io(e.into_string())
}

impl RocksEngine {
    /// Opens (creating if needed) the database under `dir` with the default
    /// memory budget. With `sync_writes` every batch is fsynced; without it
    /// a batch survives a process crash but not a power loss.
    pub fn open(dir: &Path, sync_writes: bool) -> Result<Self, EngineError> {
        Self::open_with_budget(dir, sync_writes, DEFAULT_ROCKSDB_MEMORY_MB)
    }

    /// [`RocksEngine::open`] keeping RocksDB's memory near `memory_mb` (a
    /// target, not a hard limit: nothing stalls writes for it): one block
    /// cache shared by every column family, which also holds the index and
    /// filter blocks and is charged with the memtables (a flush starts when
    /// they reach about half of it; memtables being flushed come on top).
    /// RocksDB's defaults give each family its own cache and up to 128 MB of
    /// memtables, and keep every table's index outside any cache.
    pub fn open_with_budget(
        dir: &Path,
        sync_writes: bool,
        memory_mb: u64,
    ) -> Result<Self, EngineError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| EngineError::Io(format!("{}: {e}", dir.display())))?;
        let budget = memory_mb.max(8) << 20;
        let cache = Cache::new_lru_cache(budget as usize);
        let wbm = WriteBufferManager::new_write_buffer_manager_with_cache(
            budget as usize / 2,
            false,
            cache.clone(),
        );
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.increase_parallelism(2);
        // A write-ahead log file is kept until every column family with
        // data in it has flushed; a quiet family (metadata) would hold
        // them all for as long as RocksDB's default cap allows (4x the
        // write buffers of every family: GBs). This cap forces the quiet
        // family's flush instead: the soak saw n1's logs grow ~40 MB/min.
        opts.set_max_total_wal_size(256 << 20);
        opts.set_write_buffer_manager(&wbm);
        let cf_opts = || {
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&cache);
            table.set_cache_index_and_filter_blocks(true);
            table.set_pin_l0_filter_and_index_blocks_in_cache(true);
            let mut o = Options::default();
            o.set_block_based_table_factory(&table);
            // Memtables in proportion to the budget: 64 MB ones under a
            // small budget would flush as many tiny files.
            o.set_write_buffer_size((budget as usize / 4).clamp(1 << 20, 64 << 20));
            o
        };
        let cfs = Cf::ALL
            .iter()
            .map(|cf| ColumnFamilyDescriptor::new(cf.name(), cf_opts()));
        let db = DB::open_cf_descriptors(&opts, dir.join("db"), cfs).map_err(io)?;
        let snaps = dir.join("snapshots");
        // Checkpoints of a previous run are stale views: drop them.
        let _ = std::fs::remove_dir_all(&snaps);
        Ok(Self {
            db,
            dir: dir.to_path_buf(),
            sync_writes,
            next_snapshot: AtomicU64::new(0),
            cache,
            budget,
        })
    }

    /// Writes a checkpoint to `dir`, trying again (up to 3 times) when a
    /// table file it listed was gone before it could be linked: seen with
    /// three checkpoints and compactions running at once under load. A
    /// failed attempt leaves nothing behind (RocksDB removes its temporary
    /// directory), so the next one starts clean.
    fn create_checkpoint(&self, dir: &Path) -> Result<(), EngineError> {
        let mut attempt = 1;
        loop {
            let r = Checkpoint::new(&self.db)
                .and_then(|c| c.create_checkpoint(dir))
                .map_err(io);
            match r {
                Err(EngineError::Io(e)) if attempt < 3 && e.contains("No such file") => {
                    tracing::warn!(error = %e, attempt, "checkpoint raced a compaction; trying again");
                    let _ = std::fs::remove_dir_all(dir);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn property_sum(&self, name: &str) -> u64 {
        Cf::ALL
            .iter()
            .filter_map(|cf| {
                self.db
                    .property_int_value_cf(cf_handle(&self.db, *cf), name)
                    .ok()
                    .flatten()
            })
            .sum()
    }
}

fn cf_handle(db: &DB, cf: Cf) -> &rocksdb::ColumnFamily {
    db.cf_handle(cf.name())
        .expect("column families are created at open")
}

fn scan_db(db: &DB, cf: Cf, range: &KeyRange, limit: usize) -> Result<Vec<Kv>, EngineError> {
    let iter = db.iterator_cf(
        cf_handle(db, cf),
        IteratorMode::From(&range.start, Direction::Forward),
    );
    scan_iter(iter, range, limit)
}

fn scan_iter(
    iter: impl Iterator<Item = Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>>,
    range: &KeyRange,
    limit: usize,
) -> Result<Vec<Kv>, EngineError> {
    let mut out = Vec::new();
    for item in iter {
        if out.len() >= limit {
            break;
        }
        let (k, v) = item.map_err(io)?;
        if range.end.as_deref().is_some_and(|e| &*k >= e) {
            break;
        }
        out.push((k.into_vec(), v.into_vec()));
    }
    Ok(out)
}

impl Reader for RocksEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.db.get_cf(cf_handle(&self.db, cf), key).map_err(io)
    }
    fn scan(&self, cf: Cf, range: &KeyRange, limit: usize) -> Result<Vec<Kv>, EngineError> {
        scan_db(&self.db, cf, range, limit)
    }
}

impl Engine for RocksEngine {
    fn write(&self, batch: WriteBatch) -> Result<(), EngineError> {
        let mut wb = rocksdb::WriteBatch::default();
        for op in batch.ops {
            match op {
                BatchOp::Put { cf, key, value } => wb.put_cf(cf_handle(&self.db, cf), key, value),
                BatchOp::Delete { cf, key } => wb.delete_cf(cf_handle(&self.db, cf), key),
            }
        }
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(self.sync_writes);
        self.db.write_opt(wb, &wo).map_err(io)
    }

    fn syncs_writes(&self) -> bool {
        self.sync_writes
    }

    fn snapshot(&self) -> Result<Arc<dyn Reader>, EngineError> {
        let n = self.next_snapshot.fetch_add(1, Ordering::Relaxed);
        let path = self
            .dir
            .join("snapshots")
            .join(format!("{}-{n}", std::process::id()));
        std::fs::create_dir_all(path.parent().expect("has parent"))
            .map_err(|e| EngineError::Io(e.to_string()))?;
        self.create_checkpoint(&path)?;
        let db = open_read_only(&path)?;
        Ok(Arc::new(RocksSnapshot { db: Some(db), path }))
    }

    /// A RocksDB snapshot: a sequence number pinned, nothing copied or
    /// flushed; versions it still sees are kept until it is released.
    fn with_snapshot(&self, f: &mut dyn FnMut(&dyn Reader)) -> Result<(), EngineError> {
        let snap = self.db.snapshot();
        f(&PinnedSnapshot {
            db: &self.db,
            snap: &snap,
        });
        Ok(())
    }

    fn checkpoint(&self, dir: &Path) -> Result<(), EngineError> {
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| EngineError::Io(format!("{}: {e}", parent.display())))?;
        }
        self.create_checkpoint(dir)
    }

    fn name(&self) -> &'static str {
        "rocksdb"
    }

    fn memory(&self) -> Option<EngineMemory> {
        Some(EngineMemory {
            memtables: self.property_sum("rocksdb.size-all-mem-tables"),
            block_cache: self.cache.get_usage() as u64,
            block_cache_pinned: self.cache.get_pinned_usage() as u64,
            table_readers: self.property_sum("rocksdb.estimate-table-readers-mem"),
            budget: Some(self.budget),
        })
    }
}

/// Opens the checkpoint at `dir` read-only, every family (and `default`)
/// with one small block cache, where RocksDB's defaults would give each its
/// own 32 MB one beside the live database's.
fn open_read_only(dir: &Path) -> Result<DB, EngineError> {
    let cache = Cache::new_lru_cache(8 << 20);
    let cf_opts = || {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        let mut o = Options::default();
        o.set_block_based_table_factory(&table);
        o
    };
    let cfs = Cf::ALL
        .iter()
        .map(|c| c.name())
        .chain(["default"])
        .map(|name| ColumnFamilyDescriptor::new(name, cf_opts()));
    DB::open_cf_descriptors_read_only(&cf_opts(), dir, cfs, false).map_err(io)
}

/// Opens a checkpoint written by [`Engine::checkpoint`] read-only.
pub fn open_checkpoint(dir: &Path) -> Result<Arc<dyn Reader>, EngineError> {
    Ok(Arc::new(ReadOnlyRocks(open_read_only(dir)?)))
}

struct ReadOnlyRocks(DB);

impl Reader for ReadOnlyRocks {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.0.get_cf(cf_handle(&self.0, cf), key).map_err(io)
    }
    fn scan(&self, cf: Cf, range: &KeyRange, limit: usize) -> Result<Vec<Kv>, EngineError> {
        scan_db(&self.0, cf, range, limit)
    }
}

/// A view of the live database at a RocksDB snapshot.
struct PinnedSnapshot<'a> {
    db: &'a DB,
    snap: &'a rocksdb::Snapshot<'a>,
}

impl Reader for PinnedSnapshot<'_> {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.snap.get_cf(cf_handle(self.db, cf), key).map_err(io)
    }
    fn scan(&self, cf: Cf, range: &KeyRange, limit: usize) -> Result<Vec<Kv>, EngineError> {
        let iter = self.snap.iterator_cf(
            cf_handle(self.db, cf),
            IteratorMode::From(&range.start, Direction::Forward),
        );
        scan_iter(iter, range, limit)
    }
}

struct RocksSnapshot {
    db: Option<DB>,
    path: PathBuf,
}

impl RocksSnapshot {
    fn db(&self) -> &DB {
        self.db.as_ref().expect("open until drop")
    }
}

impl Reader for RocksSnapshot {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.db().get_cf(cf_handle(self.db(), cf), key).map_err(io)
    }
    fn scan(&self, cf: Cf, range: &KeyRange, limit: usize) -> Result<Vec<Kv>, EngineError> {
        scan_db(self.db(), cf, range, limit)
    }
}

impl Drop for RocksSnapshot {
    fn drop(&mut self) {
        drop(self.db.take());
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint opened read-only has one 8 MiB cache for all its
    /// families, `default` included, not RocksDB's 32 MB one each.
    #[test]
    fn a_checkpoint_is_read_with_one_small_cache() {
        let dir = tempfile::tempdir().unwrap();
        let e = RocksEngine::open(&dir.path().join("live"), false).unwrap();
        e.checkpoint(&dir.path().join("cp")).unwrap();
        let db = open_read_only(&dir.path().join("cp")).unwrap();
        for name in Cf::ALL.iter().map(|c| c.name()).chain(["default"]) {
            let cf = db.cf_handle(name).unwrap();
            let cap = db
                .property_int_value_cf(cf, "rocksdb.block-cache-capacity")
                .unwrap();
            assert_eq!(cap, Some(8 << 20), "{name}");
        }
    }

    /// The memtables are charged to the one shared cache, and the engine
    /// says so: after writing four times its budget, and reading it all
    /// back, what it holds stays near the budget.
    #[test]
    fn memory_stays_near_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let e = RocksEngine::open_with_budget(dir.path(), false, 16).unwrap();
        for chunk in 0..32u32 {
            let mut b = WriteBatch::default();
            for i in 0..10_000u32 {
                let k = (chunk * 10_000 + i).to_be_bytes().to_vec();
                b.put(Cf::Entities, k, vec![7; 200]);
            }
            e.write(b).unwrap();
            let m = e.memory().unwrap();
            assert!(m.block_cache >= m.memtables, "charged to the cache: {m:?}");
        }
        let all = KeyRange {
            start: vec![],
            end: None,
        };
        assert_eq!(
            e.scan(Cf::Entities, &all, usize::MAX).unwrap().len(),
            320_000
        );
        let m = e.memory().unwrap();
        assert_eq!(m.budget, Some(16 << 20));
        assert!(m.memtables < 16 << 20, "{m:?}");
        assert!(m.block_cache <= 18 << 20, "{m:?}");
    }

    #[test]
    fn a_scoped_snapshot_does_not_see_writes_made_while_it_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let e = RocksEngine::open(dir.path(), false).unwrap();
        let put = |k: &[u8]| {
            let mut b = WriteBatch::default();
            b.put(Cf::Entities, k.to_vec(), b"x".to_vec());
            e.write(b).unwrap();
        };
        put(b"a1");
        let all = KeyRange {
            start: b"a".to_vec(),
            end: Some(b"b".to_vec()),
        };
        let mut seen = Vec::new();
        e.with_snapshot(&mut |r| {
            put(b"a2");
            seen = r.scan(Cf::Entities, &all, 10).unwrap();
            assert_eq!(r.get(Cf::Entities, b"a2").unwrap(), None);
        })
        .unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(e.scan(Cf::Entities, &all, 10).unwrap().len(), 2);
    }

    #[test]
    fn write_scan_snapshot_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let range = KeyRange {
            start: b"a".to_vec(),
            end: Some(b"c".to_vec()),
        };
        {
            let e = RocksEngine::open(dir.path(), false).unwrap();
            let mut b = WriteBatch::default();
            b.put(Cf::Entities, b"a1".to_vec(), b"x".to_vec());
            b.put(Cf::Entities, b"b1".to_vec(), b"y".to_vec());
            b.put(Cf::Entities, b"c1".to_vec(), b"z".to_vec());
            b.put(Cf::Meta, b"a1".to_vec(), b"m".to_vec());
            e.write(b).unwrap();
            let snap = e.snapshot().unwrap();
            let mut b = WriteBatch::default();
            b.delete(Cf::Entities, b"a1".to_vec());
            e.write(b).unwrap();
            assert_eq!(snap.scan(Cf::Entities, &range, 10).unwrap().len(), 2);
            assert_eq!(e.scan(Cf::Entities, &range, 10).unwrap().len(), 1);
            assert_eq!(e.get(Cf::Meta, b"a1").unwrap(), Some(b"m".to_vec()));
        }
        let e = RocksEngine::open(dir.path(), false).unwrap();
        assert_eq!(
            e.scan(Cf::Entities, &range, 10).unwrap(),
            vec![(b"b1".to_vec(), b"y".to_vec())]
        );
    }
}
