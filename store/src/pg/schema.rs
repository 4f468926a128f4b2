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
    pub(super) fn migrate(&self, create: bool) -> Result<(), EngineError> {
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
            tx.commit().await.map_err(|e| pg_err("commit", e))
        })
    }

    /// Takes this process's exclusive lock on the schema on a connection
    /// of its own, and watches it for as long as the engine lives.
    pub(super) fn take_ownership(&self) -> Result<(), EngineError> {
        let (cfg, schema, owner) = (
            self.cfg.driver_config(),
            self.cfg.schema.clone(),
            self.owner.clone(),
        );
        // A predecessor killed a moment ago may still hold the lock until the
        // server notices its session is gone: wait a little before refusing.
        let client = self.call(async move {
            let deadline = tokio::time::Instant::now() + OWNER_WAIT;
            loop {
                match lock(&cfg, &schema, &owner).await? {
                    Some(c) => return Ok(Some(c)),
                    None if tokio::time::Instant::now() >= deadline => return Ok(None),
                    None => tokio::time::sleep(Duration::from_millis(250)).await,
                }
            }
        })?;
        let Some(client) = client else {
            return Err(EngineError::Io(format!(
                "another northwest process uses PostgreSQL schema {} (it holds the schema's owner \
                 lock): stop it, or give this node another store.postgres.schema",
                self.cfg.schema
            )));
        };
        // A predecessor's in-doubt tokens are moot: it is gone.
        let (pool, s) = (self.pool.clone(), q(&self.cfg.schema));
        self.call(async move {
            let c = pool.get().await.map_err(super::pool_err)?;
            c.batch_execute(&format!("DELETE FROM {s}.inflight"))
                .await
                .map_err(|e| pg_err("clearing in-doubt tokens", e))
        })?;
        let watch = Watch {
            cfg: self.cfg.driver_config(),
            schema: self.cfg.schema.clone(),
            owner: self.owner.clone(),
            tokens: self.tokens.clone(),
        };
        self.handle.spawn(watch.run(client));
        Ok(())
    }
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
        "CREATE TABLE IF NOT EXISTS {s}.inflight \
         (token bigint PRIMARY KEY, fenced boolean NOT NULL DEFAULT false);\
         INSERT INTO {s}.schema_version (version) VALUES ({SCHEMA_VERSION});"
    ));
    ddl
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

/// The owner session's watchdog: probes it every two seconds, takes the
/// lock again on a new session when it dies, and clears settled tokens.
struct Watch {
    cfg: tokio_postgres::Config,
    schema: String,
    owner: Arc<Ownership>,
    tokens: Arc<super::write::Tokens>,
}

impl Watch {
    async fn run(self, mut client: Client) {
        let s = q(&self.schema);
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let probe =
                tokio::time::timeout(Duration::from_secs(5), client.simple_query("SELECT 1"));
            if matches!(probe.await, Ok(Ok(_))) {
                let (lo, below) = self.tokens.settled_range();
                let _ = client
                    .execute(
                        &format!("DELETE FROM {s}.inflight WHERE token >= $1 AND token < $2"),
                        &[&lo, &below],
                    )
                    .await;
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
