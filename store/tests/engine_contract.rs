//! The storage-engine contract (store/tests/rules/engine.rs) on the
//! in-memory and RocksDB engines; tests/tests/pg_store.rs runs it on
//! PostgreSQL.

mod memory {
    fn engine() -> std::sync::Arc<dyn northwest_store::Engine> {
        std::sync::Arc::new(northwest_store::MemEngine::new())
    }

    include!("rules/engine.rs");
}

mod rocksdb {
    include!("rules/temp_rocks.rs");

    include!("rules/engine.rs");
}
