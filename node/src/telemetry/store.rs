//! The store's series: the read cache, the engine's memory, and the
//! ZooKeeper session's lease bytes.

use super::{delta, Metrics};

impl Metrics {
    /// The read cache's counters and the engine's memory now.
    pub fn observe_store(&self, store: &northwest_store::Store) {
        let m = store.engine().memory().unwrap_or_default();
        let kinds = [
            ("memtables", m.memtables),
            ("block_cache", m.block_cache),
            ("block_cache_pinned", m.block_cache_pinned),
            ("table_readers", m.table_readers),
        ];
        for (kind, bytes) in kinds {
            let g = self.store.engine_memory_bytes.with_label_values(&[kind]);
            g.set(bytes as i64);
        }
        let c = store.cache_stats().unwrap_or_default();
        let mut s = self.last.lock();
        delta(&self.store.read_cache_hits, &mut s.cache_hits, c.hits);
        delta(&self.store.read_cache_misses, &mut s.cache_misses, c.misses);
        delta(&self.store.read_cache_warmed, &mut s.cache_warmed, c.warmed);
        self.store.read_cache_entries.set(c.entries as i64);
        self.store.read_cache_bytes.set(c.bytes as i64);
    }

    /// The ZooKeeper session's lease path bytes (none: no ZooKeeper).
    pub fn observe_leases(&self, zk: Option<&northwest_store::ZkCoordinator>) {
        let (held, max) = zk.map_or((0, 0), |z| z.lease_bytes());
        self.store.zk_lease_bytes.set(held as i64);
        self.store.zk_lease_bytes_max.set(max as i64);
    }
}
