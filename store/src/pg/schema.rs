//! The engine's tables: created on a node's first start, their version
//! checked on every start, and this process's exclusive ownership of them
//! (a session advisory lock, watched for as long as the engine lives).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;

use super::{pg_err, q, table, PgEngine, SCHEMA_VERSION};
use crate::engine::Cf;
use crate::error::EngineError;

/// Whether this process owns the schema now. Writes check it first: a
/// process that lost the owner lock (its session died and another process
/// took the lock) must stop writing, or two outboxes would share sequences.
#[derive(Default)]
pub(super) struct Ownership {
    /// The owner session is gone and the lock not yet taken again.
    unowned: AtomicBool,
    /// Another process took the lock: this engine never writes again.
    lost: AtomicBool,
}

impl Ownership {
    pub(super) fn check(&self) -> Result<(), EngineError> {
        if self.lost.load(Ordering::Acquire) {
            return Err(EngineError::Io(
                "another northwest process took over this PostgreSQL schema: this process no \
                 longer writes to it; stop one of the two, then restart this one"
                    .into(),
            ));
        }
        if self.unowned.load(Ordering::Acquire) {
            return Err(EngineError::Unavailable(
                "re-taking this process's lock on its PostgreSQL schema".into(),
            ));
        }
        Ok(())
    }
}

/// How long opening waits for another session's owner lock to go.
const OWNER_WAIT: Duration = Duration::from_secs(5);

fn owner_key(schema: &str) -> String {
    format!("northwest.owner.{schema}")
}

impl PgEngine {
    /// Creates the tables on first start (with `create`); checks their
    /// version on every start. An advisory lock serialises processes
    /// opening the same schema at once.
    ///
    /// With `upgrade` (only once this process owns or shares the schema),
    /// an older version's tables are brought to this one; without it an
    /// older version that reads the same is accepted as it is (a view of
    /// another node's tables, or before ownership is settled).
    pub(super) fn migrate(&self, create: bool, upgrade: bool) -> Result<(), EngineError> {
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
            let s = q(&schema);
            if create {
                tx.batch_execute(&format!(
                    "CREATE SCHEMA IF NOT EXISTS {s};
                     CREATE TABLE IF NOT EXISTS {s}.schema_version (
                         one boolean PRIMARY KEY DEFAULT true CHECK (one),
                         version integer NOT NULL,
                         created_at timestamptz NOT NULL DEFAULT now())"
                ))
                .await
                .map_err(|e| pg_err("creating the schema", e))?;
            } else {
                let exists = tx
                    .query_opt(
                        "SELECT 1 FROM information_schema.tables \
                         WHERE table_schema = $1 AND table_name = 'schema_version'",
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
            let row = tx
                .query_opt(&format!("SELECT version FROM {s}.schema_version"), &[])
                .await
                .map_err(|e| pg_err("reading the schema version", e))?;
            match row.map(|r| r.get::<_, i32>(0)) {
                Some(SCHEMA_VERSION) => {}
                // Version 1 had no fencing tokens: add them (nothing else
                // changed), under the same lock and transaction.
                Some(1) if !upgrade => {}
                Some(1) => {
                    tx.batch_execute(&upgrade_from_1(&s))
                        .await
                        .map_err(|e| pg_err("upgrading the schema to version 2", e))?;
                    tracing::info!(schema = %schema, version = SCHEMA_VERSION, "upgraded the PostgreSQL schema (lease fencing tokens)");
                }
                Some(v) => {
                    return Err(EngineError::Io(format!(
                        "PostgreSQL schema {schema} of {desc} is at version {v}, and this build of \
                         northwest reads and writes version {SCHEMA_VERSION}: run the northwest \
                         release that wrote it, or point store.postgres.schema at another schema"
                    )))
                }
                None if !create => {
                    return Err(EngineError::Io(format!("{desc}: its tables were never created")))
                }
                None => {
                    tx.batch_execute(&create_tables(&s))
                        .await
                        .map_err(|e| pg_err("creating the tables", e))?;
                    tracing::info!(schema = %schema, version = SCHEMA_VERSION, "created the PostgreSQL schema");
                }
            }
            if upgrade {
                create_instances(&tx, &s).await?;
            }
            tx.commit().await.map_err(|e| pg_err("commit", e))
        })
    }

    /// Gives this process a write-token prefix no other process of the
    /// schema had (a random one could repeat a live or recent process's:
    /// a settlement would then read that process's token row as ours).
    pub(super) fn take_instance(&self) -> Result<(), EngineError> {
        let (pool, s) = (self.pool.clone(), q(&self.cfg.schema));
        let n: i64 = self.call(async move {
            let client = pool.get().await.map_err(super::pool_err)?;
            let row = client
                .query_one(&format!("SELECT nextval('{s}.instances')"), &[])
                .await
                .map_err(|e| pg_err("taking a write-token prefix", e))?;
            Ok(row.get(0))
        })?;
        self.tokens.assign(n);
        Ok(())
    }

    /// Takes this process's exclusive lock on the schema on a connection
    /// of its own, and watches it for as long as the engine lives.
    pub(super) fn take_ownership(&self) -> Result<(), EngineError> {
        let (cfg, schema, owner) = (
            self.cfg.driver_config(),
            self.cfg.schema.clone(),
            self.owner.clone(),
        );
        let client =
            self.call(async move { within_owner_wait(|| lock(&cfg, &schema, &owner)).await })?;
        let Some(client) = client else {
            return Err(EngineError::Io(format!(
                "another northwest process uses PostgreSQL schema {} (it holds the schema's owner \
                 lock, alone or shared by the processes of a store.postgres.shared deployment): \
                 stop it, or give this node another store.postgres.schema",
                self.cfg.schema
            )));
        };
        // A predecessor's token rows go by age with any other process's
        // (not all at once here: a process that lost a race for the lock
        // may still be settling a write in doubt with them).
        self.spawn_token_sweep();
        let watch = Watch {
            cfg: self.cfg.driver_config(),
            schema: self.cfg.schema.clone(),
            owner: self.owner.clone(),
        };
        self.handle.spawn(watch.run(client));
        Ok(())
    }
}

/// Write-token prefixes: one per process that writes the schema, never
/// handed out twice ([`PgEngine::take_instance`]).
async fn create_instances(
    tx: &tokio_postgres::Transaction<'_>,
    s: &str,
) -> Result<(), EngineError> {
    tx.batch_execute(&format!("CREATE SEQUENCE IF NOT EXISTS {s}.instances"))
        .await
        .map_err(|e| pg_err("creating the instance sequence", e))
}

fn create_tables(s: &str) -> String {
    let mut ddl = String::new();
    for cf in Cf::ALL {
        ddl.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS {s}.{} (k bytea PRIMARY KEY, v bytea NOT NULL);",
            table(cf)
        ));
    }
    // One row per write until it is known to be settled: the proof, after
    // a write whose answer was lost, of whether it committed (`fenced`: the
    // row a settlement wrote first, so the write could not commit).
    ddl.push_str(&format!(
        "CREATE TABLE IF NOT EXISTS {s}.inflight (token bigint PRIMARY KEY, \
         fenced boolean NOT NULL DEFAULT false, at timestamptz NOT NULL DEFAULT now());"
    ));
    ddl.push_str(&fences_ddl(s));
    ddl.push_str(&format!(
        "INSERT INTO {s}.schema_version (version) VALUES ({SCHEMA_VERSION});"
    ));
    ddl
}

/// Version 1 had no fencing tokens and no age on its token rows: both
/// added, nothing else changed.
fn upgrade_from_1(s: &str) -> String {
    format!(
        "ALTER TABLE {s}.inflight ADD COLUMN IF NOT EXISTS at timestamptz NOT NULL DEFAULT now(); \
         {} UPDATE {s}.schema_version SET version = {SCHEMA_VERSION};",
        fences_ddl(s)
    )
}

/// Each entity group's newest lease token, and the check a statement ends
/// with: it fails (SQLSTATE [`super::sql::FENCED_SQLSTATE`]) when fewer tokens
/// were recorded than it carried, i.e. some group has a newer holder.
fn fences_ddl(s: &str) -> String {
    let code = super::sql::FENCED_SQLSTATE;
    format!(
        "CREATE TABLE IF NOT EXISTS {s}.fences (g bytea PRIMARY KEY, token bigint NOT NULL);\
         CREATE OR REPLACE FUNCTION {s}.check_fences(carried integer, recorded bigint) \
         RETURNS void LANGUAGE plpgsql AS $f$ BEGIN \
         IF recorded < coalesce(carried, 0) THEN RAISE EXCEPTION \
         'an entity group has a newer lease holder: this writer''s lease was lost' \
         USING ERRCODE = '{code}'; END IF; END $f$;"
    )
}

impl PgEngine {
    /// Takes the schema's owner lock in shared mode on a connection of its
    /// own, for as long as the engine lives: a process that would own the
    /// schema alone is refused while any sharer holds it, and a sharer is
    /// refused while such an owner runs (whatever their node names).
    pub(super) fn share_ownership(&self) -> Result<(), EngineError> {
        let (cfg, key) = (self.cfg.driver_config(), owner_key(&self.cfg.schema));
        let client =
            self.call(async move { within_owner_wait(|| lock_shared(&cfg, &key)).await })?;
        let Some(client) = client else {
            return Err(EngineError::Io(format!(
                "a northwest process owns PostgreSQL schema {} alone (store.postgres.shared = \
                 false): stop it, or set store.postgres.shared = true in its config too",
                self.cfg.schema
            )));
        };
        self.handle.spawn(hold_shared(
            self.cfg.driver_config(),
            owner_key(&self.cfg.schema),
            self.owner.clone(),
            client,
        ));
        Ok(())
    }
}

/// Tries `try_lock` until it takes the owner lock or [`OWNER_WAIT`] has
/// passed: a predecessor killed a moment ago may still hold the lock until
/// the server notices its session is gone.
async fn within_owner_wait<F, Fut>(try_lock: F) -> Result<Option<Client>, EngineError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Option<Client>, EngineError>>,
{
    let deadline = tokio::time::Instant::now() + OWNER_WAIT;
    loop {
        match try_lock().await? {
            Some(c) => return Ok(Some(c)),
            None if tokio::time::Instant::now() >= deadline => return Ok(None),
            None => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Connects and tries the owner lock in shared mode.
async fn lock_shared(
    cfg: &tokio_postgres::Config,
    key: &str,
) -> Result<Option<Client>, EngineError> {
    let (client, conn) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| pg_err("connect", e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let row = client
        .query_one(
            "SELECT pg_try_advisory_lock_shared(hashtext($1::text))",
            &[&key],
        )
        .await
        .map_err(|e| pg_err("shared owner lock", e))?;
    Ok(row.get::<_, bool>(0).then_some(client))
}

/// Keeps the shared lock: probes its session every 2 s and takes the lock
/// again on a new session when it dies. Writes go on meanwhile (the lease
/// tokens keep the sharers apart), unless a process took the schema alone
/// in the gap: then this one never writes again.
async fn hold_shared(
    cfg: tokio_postgres::Config,
    key: String,
    owner: Arc<Ownership>,
    mut client: Client,
) {
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let probe = tokio::time::timeout(Duration::from_secs(5), client.simple_query("SELECT 1"));
        if matches!(probe.await, Ok(Ok(_))) {
            continue;
        }
        tracing::warn!("lost the session holding this process's shared PostgreSQL schema lock; taking it again");
        // A process that took the schema alone meanwhile may be one started
        // without `shared` that leaves again at its name claim: give it a
        // minute before deciding this process must stop writing.
        let mut held_alone_since = None;
        loop {
            match lock_shared(&cfg, &key).await {
                Ok(Some(c)) => {
                    client = c;
                    break;
                }
                Ok(None)
                    if held_alone_since
                        .get_or_insert_with(tokio::time::Instant::now)
                        .elapsed()
                        < Duration::from_secs(60) =>
                {
                    tokio::time::sleep(Duration::from_secs(1)).await
                }
                Ok(None) => {
                    owner.lost.store(true, Ordering::Release);
                    tracing::error!("a northwest process has held this shared PostgreSQL schema alone for a minute: this process no longer writes; stop one of them, then restart this one");
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }
}

/// Older token rows than this are moot: a write whose answer was lost is
/// settled within `write::IN_DOUBT_WAIT` (5 min), or its process exits.
const TOKEN_ROWS_KEPT: &str = "15 minutes";

/// The token sweeper: every 2 s this process's settled
/// tokens, every minute every row older than [`TOKEN_ROWS_KEPT`] (those of
/// processes that died with writes unsettled).
impl PgEngine {
    pub(super) fn spawn_token_sweep(&self) {
        self.handle.spawn(sweep_tokens(
            self.pool.clone(),
            q(&self.cfg.schema),
            self.tokens.clone(),
        ));
    }
}

async fn sweep_tokens(pool: deadpool_postgres::Pool, s: String, tokens: Arc<super::write::Tokens>) {
    let mut tick = 0u64;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        tick += 1;
        let Ok(c) = pool.get().await else { continue };
        let (lo, below) = tokens.settled_range();
        let own = c
            .execute(
                &format!("DELETE FROM {s}.inflight WHERE token >= $1 AND token < $2"),
                &[&lo, &below],
            )
            .await;
        let old = if tick.is_multiple_of(30) {
            c.execute(
                &format!(
                    "DELETE FROM {s}.inflight WHERE at < now() - interval '{TOKEN_ROWS_KEPT}'"
                ),
                &[],
            )
            .await
            .map(|_| 0)
        } else {
            Ok(0)
        };
        if let Err(e) = own.and(old) {
            tracing::warn!(error = %e, "clearing settled PostgreSQL write tokens failed; retrying");
            drop(deadpool_postgres::Object::take(c));
        }
    }
}

/// Connects and tries the owner lock: the session holding it, or None when
/// another session holds it. The moment that session ends, `owner` says
/// unowned (before the watchdog's next probe).
async fn lock(
    cfg: &tokio_postgres::Config,
    schema: &str,
    owner: &Arc<Ownership>,
) -> Result<Option<Client>, EngineError> {
    let (client, conn) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| pg_err("connect", e))?;
    let on_close = owner.clone();
    tokio::spawn(async move {
        let _ = conn.await;
        on_close.unowned.store(true, Ordering::Release);
    });
    let row = client
        .query_one(
            "SELECT pg_try_advisory_lock(hashtext($1::text))",
            &[&owner_key(schema)],
        )
        .await
        .map_err(|e| pg_err("owner lock", e))?;
    Ok(row.get::<_, bool>(0).then_some(client))
}

/// The owner session's watchdog: probes it every two seconds and takes the
/// lock again on a new session when it dies.
struct Watch {
    cfg: tokio_postgres::Config,
    schema: String,
    owner: Arc<Ownership>,
}

impl Watch {
    async fn run(self, mut client: Client) {
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let probe =
                tokio::time::timeout(Duration::from_secs(5), client.simple_query("SELECT 1"));
            if matches!(probe.await, Ok(Ok(_))) {
                continue;
            }
            self.owner.unowned.store(true, Ordering::Release);
            tracing::warn!(schema = %self.schema, "lost the session holding this process's PostgreSQL schema lock; writes wait until it is taken again");
            loop {
                match lock(&self.cfg, &self.schema, &self.owner).await {
                    Ok(Some(c)) => {
                        client = c;
                        self.owner.unowned.store(false, Ordering::Release);
                        tracing::info!(schema = %self.schema, "took this process's PostgreSQL schema lock again");
                        break;
                    }
                    Ok(None) => {
                        self.owner.lost.store(true, Ordering::Release);
                        tracing::error!(schema = %self.schema, "another northwest process took this PostgreSQL schema while this one's session was lost: this process no longer writes; stop one of the two, then restart this one");
                        return;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                }
            }
        }
    }
}
