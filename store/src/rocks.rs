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
    checkpoint::Checkpoint, ColumnFamilyDescriptor, Direction, IteratorMode, Options, DB,
};

use crate::engine::{BatchOp, Cf, Engine, Kv, Reader, WriteBatch};
use crate::error::EngineError;
use crate::key::KeyRange;

pub struct RocksEngine {
    db: DB,
    dir: PathBuf,
    sync_writes: bool,
    next_snapshot: AtomicU64,
}

fn io(e: rocksdb::Error) -> EngineError {
    EngineError::Io(e.into_string())
}

impl RocksEngine {
    /// Opens (creating if needed) the database under `dir`. With `sync_writes`
    /// every batch is fsynced; without it a batch survives a process crash but
    /// not a power loss.
    pub fn open(dir: &Path, sync_writes: bool) -> Result<Self, EngineError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| EngineError::Io(format!("{}: {e}", dir.display())))?;
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
        let cfs = Cf::ALL
            .iter()
            .map(|cf| ColumnFamilyDescriptor::new(cf.name(), Options::default()));
        let db = DB::open_cf_descriptors(&opts, dir.join("db"), cfs).map_err(io)?;
        let snaps = dir.join("snapshots");
        // Checkpoints of a previous run are stale views: drop them.
        let _ = std::fs::remove_dir_all(&snaps);
        Ok(Self {
            db,
            dir: dir.to_path_buf(),
            sync_writes,
            next_snapshot: AtomicU64::new(0),
        })
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
        Checkpoint::new(&self.db)
            .map_err(io)?
            .create_checkpoint(&path)
            .map_err(io)?;
        let names = Cf::ALL.iter().map(|c| c.name()).chain(["default"]);
        let db = DB::open_cf_for_read_only(&Options::default(), &path, names, false).map_err(io)?;
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
        Checkpoint::new(&self.db)
            .map_err(io)?
            .create_checkpoint(dir)
            .map_err(io)
    }

    fn name(&self) -> &'static str {
        "rocksdb"
    }
}

/// Opens a checkpoint written by [`Engine::checkpoint`] read-only.
pub fn open_checkpoint(dir: &Path) -> Result<Arc<dyn Reader>, EngineError> {
    let names = Cf::ALL.iter().map(|c| c.name()).chain(["default"]);
    let db = DB::open_cf_for_read_only(&Options::default(), dir, names, false).map_err(io)?;
    Ok(Arc::new(ReadOnlyRocks(db)))
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
