//! The write path: a batch as one SQL transaction, and the outcome of a
//! COMMIT whose answer was lost, asked of the server rather than guessed.
//!
//! Each write also inserts a token row (`inflight`) in its transaction. The
//! token, not the transaction id, decides a lost COMMIT: after a crash of
//! the server an id whose records never reached disk is handed out again, so
//! "transaction X committed" may be about another transaction. The id
//! serves only to wait while the transaction may still be running (and to
//! end it if its session hangs). Settled tokens are deleted in the
//! background ([`Tokens::settled_range`]).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use deadpool_postgres::{Object, Pool};
use parking_lot::Mutex;

use super::{cf_index, pg_err, timed, Sql};
use crate::engine::{BatchOp, WriteBatch};
use crate::error::EngineError;

/// How long a write whose COMMIT went unanswered waits for the server to
/// tell its outcome. Far longer than a call's timeout: answering before the
/// outcome is known would be a guess, and a wrong "failed" hides a commit
/// from every other copy (the store blacklists a failed transaction's id).
const IN_DOUBT_WAIT: Duration = Duration::from_secs(300);

/// A batch folded to its last operation per key (the batch's order
/// decides), as arrays per table: puts (keys, values) and deletes.
pub(super) type Columns = [(Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<Vec<u8>>); 3];

pub(super) fn fold(batch: WriteBatch) -> Columns {
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

/// This engine's write tokens: a random instance prefix (high 32 bits) and
/// a counter, with the counters of writes not yet settled.
pub(super) struct Tokens {
    instance: i64,
    next: AtomicU32,
    open: Mutex<BTreeSet<u32>>,
}

impl Tokens {
    pub(super) fn new() -> Self {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Self {
            instance: ((random & 0x7fff_ffff) as i64) << 32,
            next: AtomicU32::new(0),
            open: Mutex::default(),
        }
    }

    fn take(&self) -> (u32, i64) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.open.lock().insert(n);
        (n, self.instance | i64::from(n))
    }

    fn settle(&self, n: u32) {
        self.open.lock().remove(&n);
    }

    /// Tokens of this instance every write has settled: [lo, below).
    pub(super) fn settled_range(&self) -> (i64, i64) {
        let open = self.open.lock();
        let below = open
            .first()
            .copied()
            .unwrap_or_else(|| self.next.load(Ordering::Relaxed));
        (self.instance, self.instance | i64::from(below))
    }
}

/// How a write failed: before COMMIT was sent (nothing committed), or
/// while waiting for COMMIT's answer (the outcome is the server's to tell).
pub(super) enum WriteFail {
    Before(EngineError),
    InDoubt {
        txid: String,
        pid: i32,
        error: String,
    },
}

/// Writes `cols` as one transaction on `client`, with `token`.
pub(super) async fn write_on(
    client: &Object,
    sql: &Sql,
    cols: &Columns,
    token: i64,
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
    // answer carries the transaction's id and session before COMMIT.
    let written = timed(t, "write", async {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 10] =
            [pk0, pv0, d0, pk1, pv1, d1, pk2, pv2, d2, &token];
        let (begun, written) = futures::join!(
            client.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED"),
            client.query_one(&stmt, &params)
        );
        if let Err(e) = begun {
            // The write then ran as a statement of its own; COMMIT below
            // settles either case, and the token tells the outcome.
            tracing::debug!(error = %e, "BEGIN failed before a write");
        }
        let row = written.map_err(|e| pg_err("write", e))?;
        Ok((row.get::<_, String>(0), row.get::<_, i32>(1)))
    })
    .await;
    let (txid, pid) = match written {
        Ok(w) => w,
        // Not answered: it may have run (outside a transaction, had BEGIN
        // failed), so only the token can tell; answered with an error: it
        // did not, and the transaction is aborted.
        Err(e @ EngineError::Io(_)) => return Err(WriteFail::Before(e)),
        Err(e) => {
            return Err(WriteFail::InDoubt {
                txid: String::new(),
                pid: 0,
                error: e.to_string(),
            })
        }
    };
    match tokio::time::timeout(t, client.batch_execute("COMMIT")).await {
        Ok(Ok(())) => Ok(()),
        // The server refused the commit itself: it did not commit. An
        // error about the connection or the server's state (it is going
        // down) leaves the outcome to ask.
        Ok(Err(e)) if e.as_db_error().is_some_and(|d| !super::transient(d)) => {
            Err(WriteFail::Before(pg_err("commit", e)))
        }
        Ok(Err(e)) => Err(WriteFail::InDoubt {
            txid,
            pid,
            error: e.to_string(),
        }),
        Err(_) => Err(WriteFail::InDoubt {
            txid,
            pid,
            error: format!("no answer within {t:?}"),
        }),
    }
}

/// Writes `cols` on a pooled connection; a write in doubt is resolved
/// before this returns.
pub(super) async fn write(
    pool: &Pool,
    sql: &Sql,
    tokens: &Tokens,
    cols: Columns,
    t: Duration,
) -> Result<(), EngineError> {
    let client = pool.get().await.map_err(super::pool_err)?;
    let (n, token) = tokens.take();
    let r = match write_on(&client, sql, &cols, token, t).await {
        Ok(()) => Ok(()),
        Err(WriteFail::Before(e)) => super::discard_on_error(client, Err(e)),
        Err(WriteFail::InDoubt { txid, pid, error }) => {
            // Closing the connection ends the transaction either way; the
            // server then knows which.
            drop(Object::take(client));
            tracing::warn!(txid = %txid, error = %error, "a PostgreSQL write's outcome is in doubt; asking the server");
            resolve(pool, sql, &txid, pid, token, t).await
        }
    };
    tokens.settle(n);
    r
}

enum Outcome {
    Committed,
    RolledBack,
    Running,
}

/// The outcome of a write in doubt: once its transaction is not running
/// (ended by the server, or by us if its session hangs), its token says.
async fn resolve(
    pool: &Pool,
    sql: &Sql,
    txid: &str,
    pid: i32,
    token: i64,
    t: Duration,
) -> Result<(), EngineError> {
    let deadline = Instant::now() + IN_DOUBT_WAIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        let asked = timed(t, "in-doubt check", async {
            let c = pool.get().await.map_err(super::pool_err)?;
            if !txid.is_empty() {
                let running = c
                    .query_one(
                        "SELECT txid_status($1::text::bigint) = 'in progress'",
                        &[&txid],
                    )
                    .await
                    .map_err(|e| pg_err("txid_status", e))?;
                if running.get::<_, Option<bool>>(0) == Some(true) {
                    // Ours only if that session still runs that transaction.
                    let xid = txid.parse::<u64>().unwrap_or(0) % (1 << 32);
                    c.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE pid = $1 AND backend_xid::text = $2",
                        &[&pid, &xid.to_string()],
                    )
                    .await
                    .map_err(|e| pg_err("ending an in-doubt session", e))?;
                    return Ok(Outcome::Running);
                }
            }
            let found = c
                .query_opt(&sql.token, &[&token])
                .await
                .map_err(|e| pg_err("in-doubt token", e))?;
            Ok(if found.is_some() {
                Outcome::Committed
            } else {
                Outcome::RolledBack
            })
        })
        .await;
        match asked {
            Ok(Outcome::Committed) => return Ok(()),
            Ok(Outcome::RolledBack) => {
                return Err(EngineError::Unavailable(format!(
                    "a write was rolled back when its connection was lost (token {token})"
                )))
            }
            Ok(Outcome::Running) => last = format!("transaction {txid} still running"),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tracing::error!(
        token,
        last = %last,
        "the outcome of a PostgreSQL write is unknown: its answer was lost and the server did not \
         tell for {IN_DOUBT_WAIT:?}; exiting so that a restart reads the tables afresh (bring the \
         database back, then start the node)"
    );
    std::process::exit(75)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Cf;

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
    fn only_settled_tokens_are_cleared() {
        let t = Tokens::new();
        let (a, ta) = t.take();
        let (b, _) = t.take();
        let (c, _) = t.take();
        t.settle(b);
        assert_eq!(
            t.settled_range(),
            (t.instance, ta),
            "a is open: nothing below it"
        );
        t.settle(a);
        assert_eq!(t.settled_range(), (t.instance, t.instance | i64::from(c)));
        t.settle(c);
        assert_eq!(t.settled_range(), (t.instance, t.instance | 3));
    }
}
