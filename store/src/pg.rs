//! The PostgreSQL engine: the store's three keyspaces as three tables of a
//! PostgreSQL schema, on a real server.
//!
//! Each keyspace ([`Cf`]) is a table `(k bytea PRIMARY KEY, v bytea)`:
//! bytea compares as unsigned bytes, so the primary key's order is the
//! store's key order and a scan is an index range scan. A [`WriteBatch`] is
//! one SQL transaction (data and outbox on a source, data and offsets on a
//! target), durable once `COMMIT` returns when `synchronous_commit` is on.
//!
//! The engine contract is synchronous, and the store calls it from runtime
//! workers as it calls RocksDB; the driver is async. The engine therefore
//! owns a small runtime of its own and a connection pool on it, and each
//! call waits on a channel for its task: this works from any thread, in or
//! out of a runtime, where the driver's blocking wrapper would panic.
//!
//! A commit whose connection breaks before `COMMIT` answers has an unknown
//! outcome. Each write learns its transaction id first (`txid_current()`,
//! pipelined with the write) and, when the answer is lost, asks the server
//! for that id's fate (`txid_status`) once it answers again: committed, the
//! write succeeded; aborted, it did not; nothing is guessed.
//!
//! Snapshots are `REPEATABLE READ READ ONLY` transactions: a long-lived one
//! ([`Engine::snapshot`], a snapshot stream) holds a connection of its own
//! outside the pool until it is dropped.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{Client, NoTls};

use crate::engine::{BatchOp, Cf, Engine, Kv, Reader, WriteBatch};
use crate::error::EngineError;
use crate::key::KeyRange;

/// The schema version this build writes and reads. A database at another
/// version is refused at open, never used.
pub const SCHEMA_VERSION: i32 = 1;

/// Where the engine's tables live and how it connects.
#[derive(Debug, Clone)]
pub struct PgConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub dbname: String,
    /// Read from `password_file` by the caller; never logged (the Debug
    /// impl of this struct is not used in logs: see [`PgConfig::describe`]).
    pub password: Option<String>,
    /// The PostgreSQL schema holding this node's tables (one per node:
    /// several nodes may share one database).
    pub schema: String,
    pub pool_size: usize,
    /// `synchronous_commit`: on, a commit returns once its WAL is flushed.
    pub sync_commit: bool,
    /// How long a call waits for a connection, a statement or the server's
    /// return before failing as unavailable.
    pub timeout: Duration,
}

impl PgConfig {
    /// The connection without its secret, for logs and errors.
    pub fn describe(&self) -> String {
        format!(
            "postgresql://{}@{}:{}/{} schema {}",
            self.user, self.host, self.port, self.dbname, self.schema
        )
    }

    fn driver_config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name("northwest")
            .connect_timeout(self.timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10));
        if let Some(p) = &self.password {
            c.password(p);
        }
        c.options(if self.sync_commit {
            "-c synchronous_commit=on"
        } else {
            "-c synchronous_commit=off"
        });
        c
    }
}

/// A schema name is spliced into SQL: only plain lower-case identifiers.
fn valid_schema(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn table(cf: Cf) -> &'static str {
    match cf {
        Cf::Entities => "entities",
        Cf::Outbox => "outbox",
        Cf::Meta => "meta",
    }
}

/// The SQL each call uses, schema-qualified once at open.
struct Sql {
    get: [String; 3],
    scan_to: [String; 3],
    scan_open: [String; 3],
    write: String,
}

impl Sql {
    fn new(schema: &str) -> Self {
        let per =
            |f: &dyn Fn(&str) -> String| Cf::ALL.map(|cf| f(&format!("{schema}.{}", table(cf))));
        // One statement writes a whole batch: upserts and deletes per table
        // as data-modifying CTEs (one snapshot, one round trip). Each key
        // appears once (the batch is folded first), as ON CONFLICT requires.
        let mut ctes = Vec::new();
        for (i, cf) in Cf::ALL.iter().enumerate() {
            let t = format!("{schema}.{}", table(*cf));
            let (k, v, d) = (3 * i + 1, 3 * i + 2, 3 * i + 3);
            ctes.push(format!(
                "p{i} AS (INSERT INTO {t} (k, v) SELECT * FROM unnest(${k}::bytea[], ${v}::bytea[]) \
                 ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v)"
            ));
            ctes.push(format!(
                "d{i} AS (DELETE FROM {t} WHERE k = ANY(${d}::bytea[]))"
            ));
        }
        Self {
            get: per(&|t| format!("SELECT v FROM {t} WHERE k = $1")),
            scan_to: per(&|t| {
                format!("SELECT k, v FROM {t} WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3")
            }),
            scan_open: per(&|t| format!("SELECT k, v FROM {t} WHERE k >= $1 ORDER BY k LIMIT $2")),
            write: format!("WITH {} SELECT txid_current()::text", ctes.join(", ")),
        }
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
/// crash of another backend, cannot connect now), and the transaction
/// rollbacks a retry resolves (40001, 40P01).
fn transient(db: &tokio_postgres::error::DbError) -> bool {
    let code = db.code().code();
    ["08", "53", "57"].iter().any(|c| code.starts_with(c)) || code == "40001" || code == "40P01"
}

fn pool_err(e: deadpool_postgres::PoolError) -> EngineError {
    EngineError::Unavailable(format!("no PostgreSQL connection: {e}"))
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
}

impl PgEngine {
    /// Connects, creates the schema's tables on first use, and refuses a
    /// schema written by another version of Northwest.
    pub fn open(cfg: PgConfig) -> Result<Self, EngineError> {
        Self::open_with(cfg, true)
    }

    /// Like [`PgEngine::open`]; without `create`, a schema that is not there
    /// yet is an error (a reader of another node's tables).
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
            NoTls,
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
            .build()
            .map_err(|e| EngineError::Io(format!("PostgreSQL pool: {e}")))?;
        let engine = Self {
            handle: rt.handle().clone(),
            rt: Some(rt),
            pool,
            sql: Arc::new(Sql::new(&cfg.schema)),
            cfg,
        };
        engine.migrate(create)?;
        Ok(engine)
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
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| EngineError::Io("the PostgreSQL task ended without an answer".into()))?
    }

    /// Creates the schema on first start; checks its version on every start.
    /// An advisory lock serialises processes opening the same schema at once.
    fn migrate(&self, create: bool) -> Result<(), EngineError> {
        let pool = self.pool.clone();
        let schema = self.cfg.schema.clone();
        let desc = self.cfg.describe();
        self.call(async move {
            let mut client = pool.get().await.map_err(|e| {
                EngineError::Unavailable(format!("cannot connect to {desc}: {e}"))
            })?;
            let tx = client.transaction().await.map_err(|e| pg_err("begin", e))?;
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext('northwest.schema.' || $1::text))",
                &[&schema],
            )
            .await
            .map_err(|e| pg_err("schema lock", e))?;
            if !create {
                let exists = tx
                    .query_opt(
                        "SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'schema_version'",
                        &[&schema],
                    )
                    .await
                    .map_err(|e| pg_err("looking up the schema", e))?;
                if exists.is_none() {
                    return Err(EngineError::Io(format!(
                        "{desc} has no northwest tables: is the node's store.postgres.schema another one?"
                    )));
                }
            }
            tx.batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema};
                 CREATE TABLE IF NOT EXISTS {schema}.schema_version (
                     one boolean PRIMARY KEY DEFAULT true CHECK (one),
                     version integer NOT NULL,
                     created_at timestamptz NOT NULL DEFAULT now())"
            ))
            .await
            .map_err(|e| pg_err("creating the schema", e))?;
            let row = tx
                .query_opt(&format!("SELECT version FROM {schema}.schema_version"), &[])
                .await
                .map_err(|e| pg_err("reading the schema version", e))?;
            match row.map(|r| r.get::<_, i32>(0)) {
                Some(SCHEMA_VERSION) => {}
                Some(v) => {
                    return Err(EngineError::Io(format!(
                        "PostgreSQL schema {schema} of {desc} is at version {v}, and this build of \
                         northwest reads and writes version {SCHEMA_VERSION}: run the northwest \
                         release that wrote it, or point store.postgres.schema at another schema"
                    )))
                }
                None => {
                    let mut ddl = String::new();
                    for cf in Cf::ALL {
                        ddl.push_str(&format!(
                            "CREATE TABLE IF NOT EXISTS {schema}.{} (k bytea PRIMARY KEY, v bytea NOT NULL);",
                            table(cf)
                        ));
                    }
                    ddl.push_str(&format!(
                        "INSERT INTO {schema}.schema_version (version) VALUES ({SCHEMA_VERSION});"
                    ));
                    tx.batch_execute(&ddl)
                        .await
                        .map_err(|e| pg_err("creating the tables", e))?;
                    tracing::info!(schema = %schema, version = SCHEMA_VERSION, "created the PostgreSQL schema");
                }
            }
            tx.commit().await.map_err(|e| pg_err("commit", e))
        })
    }

    /// Opens a connection outside the pool: a long-lived snapshot must not
    /// hold a pooled one.
    async fn connect(cfg: tokio_postgres::Config) -> Result<Client, EngineError> {
        let (client, conn) = cfg.connect(NoTls).await.map_err(|e| pg_err("connect", e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "PostgreSQL snapshot connection ended");
            }
        });
        Ok(client)
    }
}

impl Drop for PgEngine {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Folds a batch to its last operation per key (the batch's order decides),
/// as arrays per table: puts (keys, values) and deletes.
type Columns = [(Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<Vec<u8>>); 3];

fn fold(batch: WriteBatch) -> Columns {
    let mut last: BTreeMap<(usize, Vec<u8>), Option<Vec<u8>>> = BTreeMap::new();
    for op in batch.ops {
        match op {
            BatchOp::Put { cf, key, value } => last.insert((cf_index(cf), key), Some(value)),
            BatchOp::Delete { cf, key } => last.insert((cf_index(cf), key), None),
        };
    }
    let mut cols: Columns = Default::default();
    for ((i, k), v) in last {
        match v {
            Some(v) => {
                cols[i].0.push(k);
                cols[i].1.push(v);
            }
            None => cols[i].2.push(k),
        }
    }
    cols
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

/// How a write failed: before COMMIT was sent (nothing committed), or
/// while waiting for COMMIT's answer (the outcome is the server's to tell).
enum WriteFail {
    Before(EngineError),
    Commit { txid: String, error: String },
}

async fn write_on(
    client: &deadpool_postgres::Object,
    sql: &Sql,
    cols: &Columns,
    t: Duration,
) -> Result<(), WriteFail> {
    let stmt = timed(t, "prepare", async {
        client
            .prepare_cached(&sql.write)
            .await
            .map_err(|e| pg_err("prepare", e))
    });
    let stmt = stmt.await.map_err(WriteFail::Before)?;
    let [(pk0, pv0, d0), (pk1, pv1, d1), (pk2, pv2, d2)] = cols;
    // BEGIN and the write are pipelined (one round trip), and the write's
    // answer carries the transaction id before COMMIT is sent.
    let txid = timed(t, "write", async {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] =
            [pk0, pv0, d0, pk1, pv1, d1, pk2, pv2, d2];
        let (begun, written) = futures::join!(
            client.batch_execute("BEGIN"),
            client.query_one(&stmt, &params)
        );
        begun.map_err(|e| pg_err("begin", e))?;
        Ok(written.map_err(|e| pg_err("write", e))?.get::<_, String>(0))
    })
    .await
    .map_err(WriteFail::Before)?;
    match tokio::time::timeout(t, client.batch_execute("COMMIT")).await {
        Ok(Ok(())) => Ok(()),
        // The server refused the commit itself: it did not commit. An
        // error about the connection or the server's state (it is going
        // down) leaves the outcome to ask.
        Ok(Err(e)) if e.as_db_error().is_some_and(|d| !transient(d)) => {
            Err(WriteFail::Before(pg_err("commit", e)))
        }
        Ok(Err(e)) => Err(WriteFail::Commit {
            txid,
            error: e.to_string(),
        }),
        Err(_) => Err(WriteFail::Commit {
            txid,
            error: format!("no answer within {t:?}"),
        }),
    }
}

impl Engine for PgEngine {
    fn write(&self, batch: WriteBatch) -> Result<(), EngineError> {
        if batch.is_empty() {
            return Ok(());
        }
        let cols = fold(batch);
        let (pool, sql, t) = (self.pool.clone(), self.sql.clone(), self.cfg.timeout);
        self.call(async move {
            let client = pool.get().await.map_err(pool_err)?;
            match write_on(&client, &sql, &cols, t).await {
                Ok(()) => Ok(()),
                Err(WriteFail::Before(e)) => discard_on_error(client, Err(e)),
                Err(WriteFail::Commit { txid, error }) => {
                    // Closing the connection settles the transaction either
                    // way; the server then knows which.
                    drop(deadpool_postgres::Object::take(client));
                    tracing::warn!(txid = %txid, error = %error, "PostgreSQL COMMIT went unanswered; asking the server for the transaction's outcome");
                    resolve(&pool, &txid, IN_DOUBT_WAIT).await
                }
            }
        })
    }

    fn syncs_writes(&self) -> bool {
        // Every call waits on the network, durable or not: callers should
        // leave their runtime worker to other tasks meanwhile.
        true
    }

    fn snapshot(&self) -> Result<Arc<dyn Reader>, EngineError> {
        let (cfg, sql, t) = (self.cfg.driver_config(), self.sql.clone(), self.cfg.timeout);
        let (client, stmts) = self.call(async move {
            timed(t, "snapshot", async {
                let client = Self::connect(cfg).await?;
                client
                    .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await
                    .map_err(|e| pg_err("begin snapshot", e))?;
                let mut stmts = Vec::new();
                for text in sql.get.iter().chain(&sql.scan_to).chain(&sql.scan_open) {
                    stmts.push(
                        client
                            .prepare(text)
                            .await
                            .map_err(|e| pg_err("prepare", e))?,
                    );
                }
                // The snapshot is taken by the first query, not by BEGIN.
                client
                    .batch_execute("SELECT 1")
                    .await
                    .map_err(|e| pg_err("take snapshot", e))?;
                Ok((client, stmts))
            })
            .await
        })?;
        Ok(Arc::new(PgSnapshot {
            handle: self.handle.clone(),
            client: Arc::new(client),
            stmts: Arc::new(stmts),
            timeout: self.cfg.timeout,
        }))
    }

    fn name(&self) -> &'static str {
        "postgres"
    }
}

/// A consistent view of a PostgreSQL node's tables opened by another
/// process (the snapshotter on the node's host): a `REPEATABLE READ`
/// transaction of its own, taken now. Never creates anything.
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

/// How long a write whose COMMIT went unanswered waits for the server to
/// tell its outcome. Far longer than a call's timeout: answering before the
/// outcome is known would be a guess, and a wrong "failed" hides a commit
/// from every other copy (the store blacklists a failed transaction's id).
const IN_DOUBT_WAIT: Duration = Duration::from_secs(300);

/// The outcome of a transaction whose COMMIT went unanswered, from the
/// server once it answers (until `timeout`). Past it the process exits: its
/// outbox and caches may disagree with the tables, and a restart reads both
/// afresh from the server (what committed is shipped, what did not is not).
async fn resolve(pool: &Pool, txid: &str, timeout: Duration) -> Result<(), EngineError> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        match pool.get().await {
            Ok(client) => match client
                .query_one("SELECT txid_status($1::text::bigint)", &[&txid])
                .await
            {
                Ok(row) => match row.get::<_, Option<String>>(0).as_deref() {
                    Some("committed") => return Ok(()),
                    Some("aborted") => {
                        return Err(EngineError::Unavailable(format!(
                            "transaction {txid} was rolled back when its connection was lost"
                        )))
                    }
                    Some(other) => last = format!("transaction {txid} is {other}"),
                    // Too old for the server to remember: unknown, as
                    // when it does not answer.
                    None => {
                        last = format!("the server no longer knows transaction {txid}");
                        break;
                    }
                },
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tracing::error!(
        txid = %txid,
        last = %last,
        "the outcome of a PostgreSQL transaction is unknown: its COMMIT went unanswered and the \
         server did not answer for {timeout:?}; exiting so that a restart reads the tables afresh \
         (bring the database back, then start the node)"
    );
    std::process::exit(75)
}

/// A `REPEATABLE READ` transaction on a connection of its own; dropping it
/// closes the connection, which ends the transaction.
struct PgSnapshot {
    handle: tokio::runtime::Handle,
    client: Arc<Client>,
    /// get, scan_to, scan_open per [`Cf`], prepared on the snapshot's own
    /// connection.
    stmts: Arc<Vec<tokio_postgres::Statement>>,
    timeout: Duration,
}

impl PgSnapshot {
    fn call<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, EngineError>> + Send + 'static,
    ) -> Result<T, EngineError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| EngineError::Io("the PostgreSQL task ended without an answer".into()))?
    }
}

impl Reader for PgSnapshot {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        let (client, stmts, key, t) = (
            self.client.clone(),
            self.stmts.clone(),
            key.to_vec(),
            self.timeout,
        );
        self.call(async move {
            timed(t, "snapshot get", async {
                let row = client
                    .query_opt(&stmts[cf_index(cf)], &[&key])
                    .await
                    .map_err(|e| pg_err("get", e))?;
                Ok(row.map(|r| r.get(0)))
            })
            .await
        })
    }
    fn scan(&self, cf: Cf, range: &KeyRange, limit: usize) -> Result<Vec<Kv>, EngineError> {
        let (client, stmts, range, t) = (
            self.client.clone(),
            self.stmts.clone(),
            range.clone(),
            self.timeout,
        );
        self.call(async move {
            let i = cf_index(cf);
            let pair = (&stmts[3 + i], &stmts[6 + i]);
            timed(t, "snapshot scan", scan_on(&client, pair, &range, limit)).await
        })
    }
}

/// Reads `store.postgres.password_file`; the secret never reaches a log.
pub fn read_password(path: &std::path::Path) -> Result<String, EngineError> {
    let s = std::fs::read_to_string(path).map_err(|e| {
        EngineError::Io(format!(
            "reading the PostgreSQL password file {}: {e}",
            path.display()
        ))
    })?;
    let s = s.trim_end_matches(['\n', '\r']).to_string();
    if s.is_empty() {
        return Err(EngineError::Io(format!(
            "the PostgreSQL password file {} is empty",
            path.display()
        )));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_keeps_the_last_operation_per_key() {
        let mut b = WriteBatch::default();
        b.put(Cf::Entities, b"a".to_vec(), b"1".to_vec());
        b.delete(Cf::Entities, b"a".to_vec());
        b.delete(Cf::Meta, b"m".to_vec());
        b.put(Cf::Meta, b"m".to_vec(), b"2".to_vec());
        b.put(Cf::Outbox, b"o".to_vec(), b"3".to_vec());
        let cols = fold(b);
        assert_eq!(cols[0], (vec![], vec![], vec![b"a".to_vec()]));
        assert_eq!(cols[1], (vec![b"o".to_vec()], vec![b"3".to_vec()], vec![]));
        assert_eq!(cols[2], (vec![b"m".to_vec()], vec![b"2".to_vec()], vec![]));
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(valid_schema("n2"));
        assert!(valid_schema("_x_1"));
        assert!(!valid_schema(""));
        assert!(!valid_schema("1n"));
        assert!(!valid_schema("N2"));
        assert!(!valid_schema("n2; drop table x"));
        assert!(!valid_schema(&"a".repeat(64)));
    }
}
