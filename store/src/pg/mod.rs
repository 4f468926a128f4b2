//! The PostgreSQL engine: the store's three keyspaces as three tables of a
//! PostgreSQL schema, on a real server.
//!
//! Each keyspace ([`Cf`]) is a table `(k bytea PRIMARY KEY, v bytea)`:
//! bytea compares as unsigned bytes, so the primary key's order is the
//! store's key order and a scan is an index range scan. A [`WriteBatch`] is
//! one SQL transaction (data and outbox on a source, data and offsets on a
//! target), durable once `COMMIT` returns (`synchronous_commit` is always
//! on: off, a crash of the server would lose commits the relay may already
//! have shipped).
//!
//! The engine contract is synchronous, and the store calls it from runtime
//! workers as it calls RocksDB; the driver is async. The engine therefore
//! owns a small runtime of its own and a connection pool on it, and each
//! call waits on a channel for its task: this works from any thread, in or
//! out of a runtime, where the driver's blocking wrapper would panic.
//!
//! One process writes a schema ([`schema`]: an advisory lock held for the
//! engine's life); a write whose COMMIT answer is lost is settled by asking
//! the server ([`write`]); snapshots are `REPEATABLE READ` transactions on
//! connections of their own ([`snapshot`]).

mod config;
mod schema;
mod snapshot;
mod sql;
mod write;

use sql::{Sql, FENCED_SQLSTATE};

use config::valid_schema;
pub use config::{read_password, PgConfig};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::Client;

use crate::engine::{Cf, Engine, Kv, Reader, WriteBatch};
use crate::error::EngineError;
use crate::key::KeyRange;

/// The schema version this build writes and reads. A database at another
/// version is refused at open, never used.
pub const SCHEMA_VERSION: i32 = 2;

/// The schema as an SQL identifier (quoted: `user` or `order` are names too).
fn q(schema: &str) -> String {
    format!("\"{schema}\"")
}

fn table(cf: Cf) -> &'static str {
    match cf {
        Cf::Entities => "entities",
        Cf::Outbox => "outbox",
        Cf::Meta => "meta",
    }
}

fn cf_index(cf: Cf) -> usize {
    match cf {
        Cf::Entities => 0,
        Cf::Outbox => 1,
        Cf::Meta => 2,
    }
}

/// Errors from the driver: a server's answer (an SQL error) is a plain I/O
/// error, unless it is about the connection or the server's state (going
/// down, starting up, out of connections, a serialization conflict); those
/// and a lost or refused connection are [`EngineError::Unavailable`]: the
/// call may succeed once the server is back.
fn pg_err(what: &str, e: tokio_postgres::Error) -> EngineError {
    match e.as_db_error() {
        Some(db) if db.code().code() == FENCED_SQLSTATE => {
            EngineError::Fenced(format!("{what}: {}", db.message()))
        }
        Some(db) if !transient(db) => {
            EngineError::Io(format!("{what}: {} ({})", db.message(), db.code().code()))
        }
        Some(db) => {
            EngineError::Unavailable(format!("{what}: {} ({})", db.message(), db.code().code()))
        }
        None if e.is_closed() => EngineError::Unavailable(format!("{what}: connection closed")),
        None => EngineError::Unavailable(format!("{what}: {e}")),
    }
}

/// SQLSTATEs that say nothing about the statement: connection exceptions
/// (08), insufficient resources (53), operator intervention (57: shutdown,
/// crash of another backend, cannot connect now), and the rollbacks a
/// retry resolves (40001, 40P01; 55P03, a lock wait past `lock_timeout`).
fn transient(db: &tokio_postgres::error::DbError) -> bool {
    let code = db.code().code();
    ["08", "53", "57"].iter().any(|c| code.starts_with(c))
        || ["40001", "40P01", "55P03"].contains(&code)
}

/// A pool that cannot hand out a connection: the server's refusal (a wrong
/// password, a missing database) is permanent, not a retriable outage.
fn pool_err(e: deadpool_postgres::PoolError) -> EngineError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_err("connect", e),
        e => EngineError::Unavailable(format!("no PostgreSQL connection: {e}")),
    }
}

/// Runs `fut` on `handle`'s runtime and waits for it from this thread
/// (leaving its runtime worker meanwhile, if it is one).
fn wait_for<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    fut: impl Future<Output = Result<T, EngineError>> + Send + 'static,
) -> Result<T, EngineError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(fut.await);
    });
    crate::engine::off_worker(|| rx.recv())
        .map_err(|_| EngineError::Io("the PostgreSQL task ended without an answer".into()))?
}

pub struct PgEngine {
    /// Always Some until drop, which shuts it down in the background: an
    /// engine may be dropped on a runtime worker, where a blocking shutdown
    /// would panic.
    rt: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    pool: Pool,
    cfg: PgConfig,
    sql: Arc<Sql>,
    owner: Arc<schema::Ownership>,
    tokens: Arc<write::Tokens>,
}

impl PgEngine {
    /// Connects, creates the schema's tables on first use, refuses a schema
    /// written by another version of Northwest, and takes the schema for
    /// this process (a second process on it is refused).
    pub fn open(cfg: PgConfig) -> Result<Self, EngineError> {
        let engine = Self::open_with(cfg, true)?;
        engine.take_ownership()?;
        // Only the schema's owner changes its tables.
        engine.migrate(true, true)?;
        engine.take_instance()?;
        Ok(engine)
    }

    /// Opens a schema several processes of one deployment write at once
    /// (`store.postgres.shared`): none owns it. What keeps them apart is
    /// the store's coordination: ZooKeeper leases per entity group, fenced
    /// in every commit by their tokens ([`Engine::fence_groups`]). Each
    /// process clears its own settled write tokens, and any token row old
    /// enough that no write can still be in doubt about it (a crashed
    /// process's).
    pub fn open_shared(cfg: PgConfig) -> Result<Self, EngineError> {
        let engine = Self::open_with(cfg, true)?;
        engine.share_ownership()?;
        engine.migrate(true, true)?;
        engine.take_instance()?;
        engine.spawn_token_sweep();
        Ok(engine)
    }

    /// Like [`PgEngine::open`]; without `create`, a schema that is not there
    /// yet is an error and nothing is taken (a reader of another node's
    /// tables).
    fn open_with(cfg: PgConfig, create: bool) -> Result<Self, EngineError> {
        if !valid_schema(&cfg.schema) {
            return Err(EngineError::Io(format!(
                "bad PostgreSQL schema name {:?}: use 1-63 characters of [a-z0-9_], not starting with a digit",
                cfg.schema
            )));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("northwest-pg")
            .enable_all()
            .build()
            .map_err(|e| EngineError::Io(format!("starting the PostgreSQL runtime: {e}")))?;
        let mgr = Manager::from_config(
            cfg.driver_config(),
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(cfg.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(cfg.timeout))
            .create_timeout(Some(cfg.timeout))
            .recycle_timeout(Some(cfg.timeout))
            .build();
        let pool = match pool {
            Ok(p) => p,
            Err(e) => {
                rt.shutdown_background();
                return Err(EngineError::Io(format!("PostgreSQL pool: {e}")));
            }
        };
        let engine = Self {
            handle: rt.handle().clone(),
            rt: Some(rt),
            pool,
            sql: Arc::new(Sql::new(&cfg.schema)),
            cfg,
            owner: Arc::default(),
            tokens: Arc::new(write::Tokens::new()),
        };
        engine.migrate(create, false)?;
        Ok(engine)
    }

    /// Drops this engine's schema and every table in it (benchmarks and
    /// tests clean up with it; a node never calls it).
    pub fn drop_schema(&self) -> Result<(), EngineError> {
        let (pool, s) = (self.pool.clone(), q(&self.cfg.schema));
        self.call(async move {
            let client = pool.get().await.map_err(pool_err)?;
            client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
                .await
                .map_err(|e| pg_err("drop schema", e))
        })
    }

    /// The high half of this process's write tokens (tests read it: no
    /// two processes that wrote one schema share it).
    pub fn write_token_prefix(&self) -> i64 {
        self.tokens.instance()
    }

    /// The connection this engine uses, without its secret.
    pub fn describe(&self) -> String {
        self.cfg.describe()
    }

    /// Runs `fut` on the engine's runtime and waits for it from this thread.
    fn call<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, EngineError>> + Send + 'static,
    ) -> Result<T, EngineError> {
        wait_for(&self.handle, fut)
    }
}

impl Drop for PgEngine {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn scan_on<S: tokio_postgres::ToStatement + ?Sized>(
    client: &Client,
    (to, open): (&S, &S),
    range: &KeyRange,
    limit: usize,
) -> Result<Vec<Kv>, EngineError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = match &range.end {
        Some(end) => client.query(to, &[&range.start, end, &limit]).await,
        None => client.query(open, &[&range.start, &limit]).await,
    }
    .map_err(|e| pg_err("scan", e))?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

impl Reader for PgEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        let (pool, sql, key, t) = (
            self.pool.clone(),
            self.sql.clone(),
            key.to_vec(),
            self.cfg.timeout,
        );
        self.call(async move {
            let client = pool.get().await.map_err(pool_err)?;
            let got = timed(t, "get", async {
                let stmt = client
                    .prepare_cached(&sql.get[cf_index(cf)])
                    .await
                    .map_err(|e| pg_err("prepare", e))?;
                let row = client
                    .query_opt(&stmt, &[&key])
                    .await
                    .map_err(|e| pg_err("get", e))?;
                Ok(row.map(|r| r.get(0)))
            })
            .await;
            discard_on_error(client, got)
        })
    }

    fn scan(&self, cf: Cf, range: &KeyRange, limit: usize) -> Result<Vec<Kv>, EngineError> {
        let (pool, sql, range, t) = (
            self.pool.clone(),
            self.sql.clone(),
            range.clone(),
            self.cfg.timeout,
        );
        self.call(async move {
            let client = pool.get().await.map_err(pool_err)?;
            let got = timed(t, "scan", async {
                let i = cf_index(cf);
                let to = client.prepare_cached(&sql.scan_to[i]).await;
                let open = client.prepare_cached(&sql.scan_open[i]).await;
                let (to, open) = (
                    to.map_err(|e| pg_err("prepare", e))?,
                    open.map_err(|e| pg_err("prepare", e))?,
                );
                scan_on(&client, (&to, &open), &range, limit).await
            })
            .await;
            discard_on_error(client, got)
        })
    }
}

/// `fut`, failed as unavailable after `t` (a server that hangs).
async fn timed<T>(
    t: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, EngineError>>,
) -> Result<T, EngineError> {
    tokio::time::timeout(t, fut).await.unwrap_or_else(|_| {
        Err(EngineError::Unavailable(format!(
            "PostgreSQL did not answer a {what} within {t:?}"
        )))
    })
}

/// A connection that failed a call may be mid-transaction or wedged: it
/// leaves the pool and closes (which rolls back whatever it had open)
/// rather than serve the next call.
fn discard_on_error<T>(
    client: deadpool_postgres::Object,
    r: Result<T, EngineError>,
) -> Result<T, EngineError> {
    if r.is_err() {
        drop(deadpool_postgres::Object::take(client));
    }
    r
}

impl Engine for PgEngine {
    fn write(&self, mut batch: WriteBatch) -> Result<(), EngineError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.owner.check()?;
        let fences = write::Fences::of(std::mem::take(&mut batch.fences));
        let cols = write::fold(batch);
        let (pool, sql, tokens, t) = (
            self.pool.clone(),
            self.sql.clone(),
            self.tokens.clone(),
            self.cfg.timeout,
        );
        self.call(async move { write::write(&pool, &sql, &tokens, cols, fences, t).await })
    }

    fn fence_groups(&self, fences: &[crate::engine::GroupFence]) -> Result<(), EngineError> {
        if fences.is_empty() {
            return Ok(());
        }
        self.owner.check()?;
        let fences = write::Fences::of(fences.to_vec());
        let (pool, sql, t) = (self.pool.clone(), self.sql.clone(), self.cfg.timeout);
        self.call(async move { write::fence_groups(&pool, &sql, &fences, t).await })
    }

    fn checks_fences(&self) -> bool {
        true
    }

    fn syncs_writes(&self) -> bool {
        true
    }

    fn calls_wait_on_network(&self) -> bool {
        true
    }

    fn snapshot(&self) -> Result<Arc<dyn Reader>, EngineError> {
        self.open_snapshot()
    }

    fn name(&self) -> &'static str {
        "postgres"
    }
}

/// A consistent view of a PostgreSQL node's tables opened by another
/// process (the snapshotter on the node's host): a `REPEATABLE READ`
/// transaction of its own, taken now. Creates and takes nothing.
pub fn open_view(cfg: PgConfig) -> Result<Arc<dyn Reader>, EngineError> {
    let engine = PgEngine::open_with(cfg, false)?;
    let snap = engine.snapshot()?;
    Ok(Arc::new(View {
        snap,
        _engine: engine,
    }))
}

/// A snapshot and the engine whose runtime serves it (fields drop in
/// order: the snapshot's connection first).
struct View {
    snap: Arc<dyn Reader>,
    _engine: PgEngine,
}

impl Reader for View {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.snap.get(cf, key)
    }
    fn scan(&self, cf: Cf, range: &KeyRange, limit: usize) -> Result<Vec<Kv>, EngineError> {
        self.snap.scan(cf, range, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(valid_schema("n2"));
        assert!(valid_schema("_x_1"));
        assert!(valid_schema("user"), "a reserved word, quoted in SQL");
        assert!(!valid_schema(""));
        assert!(!valid_schema("1n"));
        assert!(!valid_schema("N2"));
        assert!(!valid_schema("n2; drop table x"));
        assert!(!valid_schema(&"a".repeat(64)));
        assert_eq!(q("user"), "\"user\"");
    }

    #[test]
    fn the_password_never_prints() {
        let cfg = PgConfig {
            host: "h".into(),
            port: 1,
            user: "u".into(),
            dbname: "d".into(),
            password: Some("s3cret".into()),
            schema: "s".into(),
            pool_size: 1,
            timeout: Duration::from_secs(1),
        };
        assert!(!format!("{cfg:?} {}", cfg.describe()).contains("s3cret"));
    }
}
