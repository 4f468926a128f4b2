//! The PostgreSQL engine on the dev stack's server: the engine contract and
//! the store's transaction rules (the same files the memory and RocksDB
//! engines run in store/tests), and the schema's version check.

mod contract {
    fn engine() -> std::sync::Arc<dyn northwest_store::Engine> {
        northwest_tests::pg_engine()
    }

    include!("../../store/tests/rules/engine.rs");
}

mod rules {
    fn engine() -> std::sync::Arc<dyn northwest_store::Engine> {
        northwest_tests::pg_engine()
    }

    include!("../../store/tests/rules/txn.rs");
}

mod schema {
    use northwest_store::engine::WriteBatch;
    use northwest_store::{Cf, PgEngine};
    use northwest_tests::{pg_config, pg_schema};

    /// A database written by another schema version is refused at open,
    /// with the versions and what to do; nothing in it is touched.
    #[test]
    fn another_schema_version_is_refused_at_open() {
        let schema = pg_schema("ver");
        let e = PgEngine::open(pg_config(&schema)).unwrap();
        let mut b = WriteBatch::default();
        b.put(Cf::Entities, b"k".to_vec(), b"v".to_vec());
        northwest_store::Engine::write(&e, b).unwrap();
        drop(e);
        let (addr, password) = northwest_tests::require_pg();
        let (host, port) = addr.rsplit_once(':').unwrap();
        let out = std::process::Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", port])
            .args(["-U", "northwest", "-d", "northwest", "-c"])
            .arg(format!("UPDATE {schema}.schema_version SET version = 99"))
            .env(
                "PGPASSWORD",
                std::fs::read_to_string(&password).unwrap().trim(),
            )
            .output()
            .expect("psql (apt package postgresql-client)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = PgEngine::open(pg_config(&schema)).err().expect("refused");
        let msg = err.to_string();
        assert!(
            msg.contains("version 99") && msg.contains("version 1"),
            "{msg}"
        );
        assert!(
            msg.contains("store.postgres.schema"),
            "says what to do: {msg}"
        );
    }

    /// Two engines (two processes of one deployment) open one schema at
    /// once: one creates it, the other waits and finds it.
    #[test]
    fn concurrent_opens_create_the_schema_once() {
        let schema = pg_schema("race");
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let cfg = pg_config(&schema);
                std::thread::spawn(move || PgEngine::open(cfg).map(|_| ()))
            })
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
    }
}
