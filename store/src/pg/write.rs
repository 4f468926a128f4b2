//! The write path: a batch as one SQL transaction, and the outcome of a
//! COMMIT whose answer was lost, asked of the server rather than guessed.
//!
//! A batch is one statement (data-modifying CTEs), its own transaction:
//! one round trip. It also inserts a token row (`inflight`); when the answer
//! is lost, the token decides whether it committed ([`settle`]), not a
//! transaction id: after a crash of the server an id whose records never
//! reached disk is handed out again. Settled tokens are deleted in the
//! background ([`Tokens::settled_range`]).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
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

/// Leases' fencing tokens as the statement's two arrays (groups, tokens).
#[derive(Debug, Default)]
pub(super) struct Fences {
    groups: Vec<Vec<u8>>,
    tokens: Vec<i64>,
}

impl Fences {
    /// Each group once (ON CONFLICT may touch a row once per statement),
    /// with the newest token given for it.
    pub(super) fn of(fences: Vec<crate::engine::GroupFence>) -> Self {
        let mut f = Self::default();
        for (g, t) in crate::engine::newest_per_group(&fences) {
            f.groups.push(g);
            f.tokens.push(t);
        }
        f
    }

    fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// Records leases' fencing tokens: one statement, refused
/// ([`EngineError::Fenced`]) if any group has a newer one. Repeating it is
/// harmless, so a lost answer is an outage to retry.
pub(super) async fn fence_groups(
    pool: &Pool,
    sql: &Sql,
    fences: &Fences,
    t: Duration,
) -> Result<(), EngineError> {
    let client = pool.get().await.map_err(super::pool_err)?;
    let r = timed(t, "recording lease tokens", async {
        let stmt = client
            .prepare_cached(&sql.fence_groups)
            .await
            .map_err(|e| pg_err("prepare", e))?;
        client
            .execute(&stmt, &[&fences.groups, &fences.tokens])
            .await
            .map(|_| ())
            .map_err(|e| pg_err("recording lease tokens", e))
    })
    .await;
    super::discard_on_error(client, r)
}

/// A batch's shape: which keyspaces it puts into and deletes from, and
/// whether it carries fencing tokens.
pub(super) fn shape(cols: &Columns, fenced: bool) -> usize {
    let parts = cols.iter().enumerate().fold(0, |acc, (i, (k, _, d))| {
        acc | (usize::from(!k.is_empty()) << (2 * i)) | (usize::from(!d.is_empty()) << (2 * i + 1))
    });
    parts | if fenced { super::sql::FENCES_BIT } else { 0 }
}

/// This engine's write tokens: an instance prefix (high 32 bits) and a
/// counter, with the counters of writes not yet settled. The prefix is
/// random until a writer takes one from the schema
/// ([`Tokens::assign`]), before its first write.
pub(super) struct Tokens {
    instance: AtomicI64,
    next: AtomicU32,
    open: Mutex<BTreeSet<u32>>,
}

impl Tokens {
    pub(super) fn new() -> Self {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Self {
            instance: AtomicI64::new(prefix(random as i64)),
            next: AtomicU32::new(0),
            open: Mutex::default(),
        }
    }

    /// Sets the prefix from `n`, a number the schema gave this process.
    pub(super) fn assign(&self, n: i64) {
        self.instance.store(prefix(n), Ordering::Relaxed);
    }

    /// The prefix this process writes its tokens under.
    pub(super) fn instance(&self) -> i64 {
        self.instance.load(Ordering::Relaxed)
    }

    fn take(&self) -> (u32, i64) {
        // Under the lock `settled_range` reads `next` under: it never sees
        // `n` taken but not open (its sweep could then delete this write's
        // row once committed, and a settlement would find it gone).
        let mut open = self.open.lock();
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        open.insert(n);
        (n, self.instance() | i64::from(n))
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
        let instance = self.instance();
        (instance, instance | i64::from(below))
    }
}

/// A token prefix from `n`: its low 31 bits in the high half (tokens stay
/// positive; 2^31 processes later, prefixes repeat).
fn prefix(n: i64) -> i64 {
    (n & 0x7fff_ffff) << 32
}

/// How a write failed: the server answered with an error about the
/// statement (nothing committed), or the answer was lost or says nothing
/// about the statement (the token must tell).
pub(super) enum WriteFail {
    NotWritten(EngineError),
    InDoubt(String),
}

/// Writes `cols` on `client`: one statement, committed on its own (the
/// driver returns once the server reports the transaction ended, after
/// the commit's WAL flush), with `token`.
pub(super) async fn write_on(
    client: &Object,
    sql: &Sql,
    cols: &Columns,
    fences: &Fences,
    token: i64,
    t: Duration,
) -> Result<(), WriteFail> {
    let stmt = timed(t, "prepare", async {
        client
            .prepare_cached(&sql.write[shape(cols, !fences.is_empty())])
            .await
            .map_err(|e| pg_err("prepare", e))
    });
    let stmt = stmt.await.map_err(WriteFail::NotWritten)?;
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::with_capacity(8);
    for (k, v, d) in cols {
        if !k.is_empty() {
            params.push(k);
            params.push(v);
        }
        if !d.is_empty() {
            params.push(d);
        }
    }
    if !fences.is_empty() {
        params.push(&fences.groups);
        params.push(&fences.tokens);
    }
    params.push(&token);
    match tokio::time::timeout(t, client.execute(&stmt, &params)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.as_db_error().is_some_and(|d| !super::transient(d)) => {
            Err(WriteFail::NotWritten(pg_err("write", e)))
        }
        Ok(Err(e)) => Err(WriteFail::InDoubt(e.to_string())),
        Err(_) => Err(WriteFail::InDoubt(format!("no answer within {t:?}"))),
    }
}

/// Writes `cols` on a pooled connection; a write in doubt is settled
/// before this returns.
pub(super) async fn write(
    pool: &Pool,
    sql: &Sql,
    tokens: &Tokens,
    cols: Columns,
    fences: Fences,
    t: Duration,
) -> Result<(), EngineError> {
    let client = pool.get().await.map_err(super::pool_err)?;
    let (n, token) = tokens.take();
    let r = match write_on(&client, sql, &cols, &fences, token, t).await {
        Ok(()) => Ok(()),
        Err(WriteFail::NotWritten(e)) => super::discard_on_error(client, Err(e)),
        Err(WriteFail::InDoubt(error)) => {
            drop(Object::take(client));
            tracing::warn!(token, error = %error, "a PostgreSQL write's answer was lost; settling it with its token");
            settle(pool, sql, token, t).await
        }
    };
    tokens.settle(n);
    r
}

/// Settles a write in doubt by racing its token: this statement inserts
/// the token as fenced unless it is there. The token's primary key orders
/// the two: if the write committed, the fence finds its row; if it is
/// still running, the fence waits for it (up to `lock_timeout`, then
/// tries again); otherwise the fence's row is committed first and the
/// write, should it still run, fails on it. So the answer is final.
async fn settle(pool: &Pool, sql: &Sql, token: i64, t: Duration) -> Result<(), EngineError> {
    let deadline = Instant::now() + IN_DOUBT_WAIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        let asked = timed(t, "in-doubt fence", async {
            let c = pool.get().await.map_err(super::pool_err)?;
            let row = c
                .query_one(&sql.fence, &[&token])
                .await
                .map_err(|e| pg_err("in-doubt fence", e));
            super::discard_on_error(c, row)
        })
        .await;
        match asked.map(|r| (r.get::<_, i64>(0), r.get::<_, Option<bool>>(1))) {
            // The write's own row (seen, or committed while we waited).
            Ok((0, Some(false) | None)) => return Ok(()),
            // Fenced now, or by an earlier attempt whose answer was lost.
            Ok((1, _)) | Ok((_, Some(true))) => {
                return Err(EngineError::Unavailable(format!(
                "a write whose answer was lost did not commit (token {token}); nothing was written"
            )))
            }
            Ok(other) => last = format!("unexpected fence answer {other:?}"),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tracing::error!(
        token,
        last = %last,
        "the outcome of a PostgreSQL write is unknown: its answer was lost and the server did not \
         settle it for {IN_DOUBT_WAIT:?}; exiting so that a restart reads the tables afresh (bring \
         the database back, then start the node)"
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
            (t.instance(), ta),
            "a is open: nothing below it"
        );
        t.settle(a);
        assert_eq!(
            t.settled_range(),
            (t.instance(), t.instance() | i64::from(c))
        );
        t.settle(c);
        assert_eq!(t.settled_range(), (t.instance(), t.instance() | 3));
    }
}
