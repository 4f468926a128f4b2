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

    /// Runs `sql` on the dev stack's database; its output, unaligned.
    fn psql(sql: &str) -> String {
        let (addr, password) = northwest_tests::require_pg();
        let (host, port) = addr.rsplit_once(':').unwrap();
        let out = std::process::Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", port])
            .args(["-U", "northwest", "-d", "northwest", "-tA", "-c", sql])
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
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A schema version 1 wrote (before lease fencing tokens: its DDL as it
    /// was) is read as it is by a view, and upgraded in place when a node
    /// opens it: rows kept, tokens then recorded and checked.
    #[test]
    fn a_version_1_schema_is_upgraded_with_its_rows() {
        use northwest_store::engine::{GroupFence, Reader};
        use northwest_store::{Engine, EngineError};
        let schema = pg_schema("v1");
        psql(&format!(
            "CREATE SCHEMA {schema}; \
             CREATE TABLE {schema}.schema_version (one boolean PRIMARY KEY DEFAULT true \
               CHECK (one), version integer NOT NULL, created_at timestamptz NOT NULL DEFAULT now()); \
             CREATE TABLE {schema}.entities (k bytea PRIMARY KEY, v bytea NOT NULL); \
             CREATE TABLE {schema}.outbox (k bytea PRIMARY KEY, v bytea NOT NULL); \
             CREATE TABLE {schema}.meta (k bytea PRIMARY KEY, v bytea NOT NULL); \
             CREATE TABLE {schema}.inflight (token bigint PRIMARY KEY, \
               fenced boolean NOT NULL DEFAULT false); \
             INSERT INTO {schema}.schema_version (version) VALUES (1); \
             INSERT INTO {schema}.entities VALUES ('\\x6b', '\\x76');"
        ));
        let version = || psql(&format!("SELECT version FROM {schema}.schema_version"));
        let view =
            northwest_store::pg::open_view(pg_config(&schema)).expect("a view reads version 1");
        assert_eq!(view.get(Cf::Entities, b"k").unwrap(), Some(b"v".to_vec()));
        drop(view);
        assert_eq!(version(), "1", "a view changes nothing");
        let e = PgEngine::open(pg_config(&schema)).expect("upgraded");
        assert_eq!(version(), "2");
        assert_eq!(e.get(Cf::Entities, b"k").unwrap(), Some(b"v".to_vec()));
        let f = |token| GroupFence {
            group: b"g".to_vec(),
            token,
        };
        e.fence_groups(&[f(5)]).unwrap();
        let mut b = WriteBatch::default();
        b.put(Cf::Entities, b"k".to_vec(), b"w".to_vec());
        b.fences = vec![f(4)];
        assert!(matches!(e.write(b), Err(EngineError::Fenced(_))));
        assert_eq!(e.get(Cf::Entities, b"k").unwrap(), Some(b"v".to_vec()));
        let mut b = WriteBatch::default();
        b.put(Cf::Entities, b"k".to_vec(), b"w".to_vec());
        b.fences = vec![f(5)];
        e.write(b).unwrap();
        assert_eq!(e.get(Cf::Entities, b"k").unwrap(), Some(b"w".to_vec()));
    }

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
        psql(&format!("UPDATE {schema}.schema_version SET version = 99"));
        let err = PgEngine::open(pg_config(&schema)).err().expect("refused");
        let msg = err.to_string();
        assert!(
            msg.contains("version 99")
                && msg.contains(&format!("version {}", northwest_store::pg::SCHEMA_VERSION)),
            "{msg}"
        );
        assert!(
            msg.contains("store.postgres.schema"),
            "says what to do: {msg}"
        );
    }

    /// Four engines (four processes) open one schema at once: the schema is
    /// created once, one of them owns it, and the others are refused with
    /// the reason (two writers would share outbox sequences); once the owner
    /// is gone, another opens it.
    #[test]
    fn one_process_owns_a_schema() {
        let schema = pg_schema("own");
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let cfg = pg_config(&schema);
                std::thread::spawn(move || PgEngine::open(cfg))
            })
            .collect();
        let mut owners = Vec::new();
        for h in handles {
            match h.join().unwrap() {
                Ok(e) => owners.push(e),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.contains("another northwest process uses"), "{msg}");
                }
            }
        }
        assert_eq!(owners.len(), 1, "exactly one owner");
        drop(owners);
        let e = PgEngine::open(pg_config(&schema)).expect("the schema is free again");
        let mut b = WriteBatch::default();
        b.put(Cf::Meta, b"k".to_vec(), b"v".to_vec());
        northwest_store::Engine::write(&e, b).unwrap();
    }
}

/// Every process that writes a schema, at once or one after another,
/// tokens its writes under a prefix the schema hands out once: a settlement
/// after a lost answer reads the token's row, which must be this write's
/// and not another process's (random prefixes can repeat).
#[test]
fn write_token_prefixes_are_never_reused() {
    use northwest_store::PgEngine;
    use northwest_tests::{pg_config, pg_schema, require_pg};
    require_pg();
    let schema = pg_schema("tok");
    let cfg = pg_config(&schema);
    let first = PgEngine::open(cfg.clone()).unwrap();
    let mut prefixes = vec![first.write_token_prefix()];
    drop(first);
    let shared: Vec<_> = (0..3)
        .map(|_| PgEngine::open_shared(cfg.clone()).unwrap())
        .collect();
    prefixes.extend(shared.iter().map(|e| e.write_token_prefix()));
    drop(shared);
    prefixes.push(PgEngine::open(cfg).unwrap().write_token_prefix());
    // In the order the processes opened: handed out by the schema's
    // sequence, so each above the one before (random prefixes fail this
    // 119 times in 120; a sequence may skip values, so no exact step).
    for w in prefixes.windows(2) {
        assert!(w[1] > w[0], "prefixes {prefixes:x?}");
    }
}

/// A write whose answer is lost: a proxy between the engine and the server
/// cuts the connection right after forwarding the write (it committed) or
/// instead of forwarding it (it did not). The engine settles it with the
/// server and reports what happened, never a guess.
mod in_doubt {
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use northwest_store::engine::{Reader, WriteBatch};
    use northwest_store::{Cf, Engine, EngineError, PgEngine};
    use northwest_tests::{pg_config, pg_schema, require_pg};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const OFF: u8 = 0;
    const CUT_AFTER_WRITE: u8 = 1;
    const CUT_INSTEAD_OF_WRITE: u8 = 2;

    /// Forwards to PostgreSQL; when armed, the next message carrying
    /// `needle` (the write's key) is forwarded and its answer lost, or
    /// dropped with the connection.
    async fn proxy(mode: Arc<AtomicU8>, needle: &'static [u8]) -> String {
        let (upstream, _) = require_pg();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                let mode = mode.clone();
                tokio::spawn(async move {
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let down = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    });
                    let mut buf = vec![0u8; 64 << 10];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let hit = buf[..n].windows(needle.len()).any(|w| w == needle);
                        let m = if hit {
                            mode.swap(OFF, Ordering::SeqCst)
                        } else {
                            OFF
                        };
                        if m == CUT_INSTEAD_OF_WRITE {
                            down.abort();
                            return;
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        if m == CUT_AFTER_WRITE {
                            // The server gets the write (and whatever
                            // follows it for a moment); its answer never
                            // reaches the engine.
                            down.abort();
                            let until = tokio::time::Instant::now() + Duration::from_millis(300);
                            while let Ok(Ok(n)) =
                                tokio::time::timeout_at(until, cr.read(&mut buf)).await
                            {
                                if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                            tokio::time::sleep_until(until).await;
                            return;
                        }
                    }
                    down.abort();
                });
            }
        });
        addr
    }

    fn engine_through(addr: &str) -> (PgEngine, String) {
        let schema = pg_schema("doubt");
        let mut cfg = pg_config(&schema);
        let (host, port) = addr.rsplit_once(':').unwrap();
        cfg.host = host.to_string();
        cfg.port = port.parse().unwrap();
        cfg.timeout = Duration::from_secs(3);
        (PgEngine::open(cfg).unwrap(), schema)
    }

    fn put(e: &PgEngine, k: &[u8]) -> Result<(), EngineError> {
        let mut b = WriteBatch::default();
        b.put(Cf::Entities, k.to_vec(), b"v".to_vec());
        b.put(Cf::Outbox, k.to_vec(), b"journal".to_vec());
        e.write(b)
    }

    #[test]
    fn a_write_whose_answer_is_lost_is_reported_as_committed() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mode = Arc::new(AtomicU8::new(OFF));
        let addr = rt.block_on(proxy(mode.clone(), b"lost-answer"));
        let (e, _) = engine_through(&addr);
        put(&e, b"before").unwrap();
        mode.store(CUT_AFTER_WRITE, Ordering::SeqCst);
        put(&e, b"lost-answer").expect("committed: the engine must say so");
        assert_eq!(mode.load(Ordering::SeqCst), OFF, "the fault fired");
        assert_eq!(
            e.get(Cf::Entities, b"lost-answer").unwrap(),
            Some(b"v".to_vec())
        );
        assert_eq!(
            e.get(Cf::Outbox, b"lost-answer").unwrap(),
            Some(b"journal".to_vec())
        );
        put(&e, b"after").unwrap();
    }

    #[test]
    fn a_write_that_never_reached_the_server_is_reported_as_not_written() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mode = Arc::new(AtomicU8::new(OFF));
        let addr = rt.block_on(proxy(mode.clone(), b"never"));
        let (e, _) = engine_through(&addr);
        mode.store(CUT_INSTEAD_OF_WRITE, Ordering::SeqCst);
        let err = put(&e, b"never").expect_err("not committed");
        assert!(matches!(err, EngineError::Unavailable(_)), "{err}");
        assert_eq!(mode.load(Ordering::SeqCst), OFF, "the fault fired");
        assert_eq!(e.get(Cf::Entities, b"never").unwrap(), None);
        assert_eq!(e.get(Cf::Outbox, b"never").unwrap(), None);
        put(&e, b"after").unwrap();
    }
}
