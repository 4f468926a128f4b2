//! The SQL each engine call sends, schema-qualified once at open: reads,
//! the one-statement batch write by its shape, lease fencing tokens, and
//! the settlement of a write in doubt.

use super::{q, table};
use crate::engine::Cf;

/// The SQL each call uses, schema-qualified once at open.
pub(super) struct Sql {
    pub(super) get: [String; 3],
    pub(super) scan_to: [String; 3],
    pub(super) scan_open: [String; 3],
    /// By a batch's shape: bit 2i, puts into keyspace i; bit 2i+1, deletes;
    /// bit 6, fencing tokens ([`FENCES_BIT`]).
    pub(super) write: Vec<String>,
    /// Records leases' fencing tokens ([`crate::engine::Engine::fence_groups`]).
    pub(super) fence_groups: String,
    /// Settles a write in doubt ([`super::write`]): (fence rows inserted, the
    /// token's `fenced` as of the statement's start).
    pub(super) fence: String,
}

/// The shape bit of a batch that carries fencing tokens.
pub(super) const FENCES_BIT: usize = 1 << 6;

/// The SQLSTATE `check_fences` raises: a lease's token older than the one
/// recorded for its group.
pub(super) const FENCED_SQLSTATE: &str = "NWF01";

/// Upserts groups' tokens (`$a` groups, `$b` tokens) where none newer is
/// recorded; the statement fails (`check_fences`) unless every one was.
fn fences_cte(s: &str, a: usize, b: usize) -> String {
    format!(
        "fz AS (INSERT INTO {s}.fences (g, token) SELECT * FROM unnest(${a}::bytea[], ${b}::bigint[]) \
         ON CONFLICT (g) DO UPDATE SET token = EXCLUDED.token \
         WHERE {s}.fences.token <= EXCLUDED.token RETURNING 1)"
    )
}

fn fences_check(s: &str, a: usize) -> String {
    format!("{s}.check_fences(cardinality(${a}::bytea[]), (SELECT count(*) FROM fz))")
}

/// One statement writes a whole batch: upserts and deletes per table as
/// data-modifying CTEs (one snapshot, one round trip), only for the parts
/// the batch has (an empty part still costs the executor), then the
/// write's token. Each key appears once (the batch is folded first), as
/// ON CONFLICT requires. Parameters come in the order of the parts, the
/// token last.
fn write_sql(s: &str, shape: usize) -> String {
    let mut ctes = Vec::new();
    let mut n = 0;
    for (i, cf) in Cf::ALL.iter().enumerate() {
        let t = format!("{s}.{}", table(*cf));
        if shape & (1 << (2 * i)) != 0 {
            ctes.push(format!(
                "p{i} AS (INSERT INTO {t} (k, v) SELECT * FROM unnest(${}::bytea[], ${}::bytea[]) \
                 ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v)",
                n + 1,
                n + 2
            ));
            n += 2;
        }
        if shape & (1 << (2 * i + 1)) != 0 {
            ctes.push(format!(
                "d{i} AS (DELETE FROM {t} WHERE k = ANY(${}::bytea[]))",
                n + 1
            ));
            n += 1;
        }
    }
    let mut check = String::new();
    if shape & FENCES_BIT != 0 {
        ctes.push(fences_cte(s, n + 1, n + 2));
        check = format!(", {}", fences_check(s, n + 1));
        n += 2;
    }
    ctes.push(format!(
        "tok AS (INSERT INTO {s}.inflight (token) VALUES (${}))",
        n + 1
    ));
    format!(
        "WITH {} SELECT txid_current()::text, pg_backend_pid(){check}",
        ctes.join(", ")
    )
}

impl Sql {
    pub(super) fn new(schema: &str) -> Self {
        let s = q(schema);
        let per = |f: &dyn Fn(&str) -> String| Cf::ALL.map(|cf| f(&format!("{s}.{}", table(cf))));
        Self {
            get: per(&|t| format!("SELECT v FROM {t} WHERE k = $1")),
            scan_to: per(&|t| {
                format!("SELECT k, v FROM {t} WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3")
            }),
            scan_open: per(&|t| format!("SELECT k, v FROM {t} WHERE k >= $1 ORDER BY k LIMIT $2")),
            write: (0..2 * FENCES_BIT)
                .map(|shape| write_sql(&s, shape))
                .collect(),
            fence_groups: format!("WITH {} SELECT {}", fences_cte(&s, 1, 2), fences_check(&s, 1)),
            fence: format!(
                "WITH f AS (INSERT INTO {s}.inflight (token, fenced) VALUES ($1, true) \
                 ON CONFLICT (token) DO NOTHING RETURNING 1) \
                 SELECT (SELECT count(*) FROM f), (SELECT fenced FROM {s}.inflight WHERE token = $1)"
            ),
        }
    }
}
