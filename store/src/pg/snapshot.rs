//! Point-in-time views: a `REPEATABLE READ READ ONLY` transaction on a
//! connection of its own, outside the pool (a snapshot stream may hold one
//! for minutes); dropping the view closes the connection, which ends the
//! transaction.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use super::{cf_index, pg_err, scan_on, timed, PgEngine};
use crate::engine::{Cf, Kv, Reader};
use crate::error::EngineError;
use crate::key::KeyRange;

/// A connection outside the pool.
pub(super) async fn connect(cfg: &tokio_postgres::Config) -> Result<Client, EngineError> {
    let (client, conn) = cfg.connect(NoTls).await.map_err(|e| pg_err("connect", e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

impl PgEngine {
    pub(super) fn open_snapshot(&self) -> Result<Arc<dyn Reader>, EngineError> {
        let (cfg, sql, t) = (self.cfg.driver_config(), self.sql.clone(), self.cfg.timeout);
        let (client, stmts) = self.call(async move {
            timed(t, "snapshot", async {
                let client = connect(&cfg).await?;
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
}

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
        super::wait_for(&self.handle, fut)
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
