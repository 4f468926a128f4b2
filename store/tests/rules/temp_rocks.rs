// A RocksDB engine in a temporary directory, removed when the engine is
// dropped: included where `engine()` must return a fresh RocksDB. Paths are
// spelled out so the including module's imports never clash.

struct TempRocks {
    engine: northwest_store::RocksEngine,
    _dir: tempfile::TempDir,
}

impl northwest_store::engine::Reader for TempRocks {
    fn get(
        &self,
        cf: northwest_store::Cf,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, northwest_store::EngineError> {
        northwest_store::engine::Reader::get(&self.engine, cf, key)
    }
    fn scan(
        &self,
        cf: northwest_store::Cf,
        range: &northwest_store::KeyRange,
        limit: usize,
    ) -> Result<Vec<northwest_store::engine::Kv>, northwest_store::EngineError> {
        northwest_store::engine::Reader::scan(&self.engine, cf, range, limit)
    }
}

impl northwest_store::Engine for TempRocks {
    fn write(
        &self,
        batch: northwest_store::engine::WriteBatch,
    ) -> Result<(), northwest_store::EngineError> {
        self.engine.write(batch)
    }
    fn snapshot(
        &self,
    ) -> Result<std::sync::Arc<dyn northwest_store::engine::Reader>, northwest_store::EngineError>
    {
        self.engine.snapshot()
    }
    fn with_snapshot(
        &self,
        f: &mut dyn FnMut(&dyn northwest_store::engine::Reader),
    ) -> Result<(), northwest_store::EngineError> {
        self.engine.with_snapshot(f)
    }
    fn name(&self) -> &'static str {
        northwest_store::Engine::name(&self.engine)
    }
}

fn engine() -> std::sync::Arc<dyn northwest_store::Engine> {
    let dir = tempfile::tempdir().unwrap();
    let engine = northwest_store::RocksEngine::open(dir.path(), false).unwrap();
    std::sync::Arc::new(TempRocks { engine, _dir: dir })
}
