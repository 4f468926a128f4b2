//! Transaction rules (store/tests/rules/txn.rs) on the in-memory and RocksDB
//! engines with local coordination; tests/tests/pg_store.rs runs the same
//! rules on PostgreSQL.

mod memory {
    fn engine() -> std::sync::Arc<dyn northwest_store::Engine> {
        std::sync::Arc::new(northwest_store::MemEngine::new())
    }

    include!("rules/txn.rs");
}

mod rocksdb {
    include!("rules/temp_rocks.rs");

    include!("rules/txn.rs");
}
