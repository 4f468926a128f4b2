//! The snapshot's closed-loop throttle (`--max-source-p99-ms`): while the
//! snapshot streams, n1's data-API p99 over the last 10 s is read every
//! second; above the budget the snapshot's rate is halved, below 80 % of it
//! the rate grows again, up to `--rate` (or unlimited). Like Vitess's
//! tablet throttler, it keeps the migration from hurting n1's users.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

/// The snapshot never stops entirely: it keeps at least this many rows/s.
pub const FLOOR: u64 = 100;
/// Above this an unlimited ceiling is unlimited again.
const UNLIMITED_ABOVE: u64 = 1_000_000;

/// The next rate (rows/s, 0 = unlimited). `streamed`: rows/s streamed over
/// the last check (the starting point when the rate was unlimited);
/// `ceiling`: `--rate` (0 = none). No p99 (no requests) is no pressure.
pub fn next_rate(
    current: u64,
    streamed: u64,
    p99_ms: Option<f64>,
    budget_ms: f64,
    ceiling: u64,
) -> u64 {
    let effective = if current == 0 {
        streamed.max(FLOOR)
    } else {
        current
    };
    match p99_ms {
        Some(p) if p > budget_ms => (effective / 2).max(FLOOR),
        Some(p) if p > budget_ms * 0.8 => current,
        _ if current == 0 => 0,
        _ => {
            let grown = current + current / 4 + FLOOR;
            match ceiling {
                0 if grown > UNLIMITED_ABOVE => 0,
                0 => grown,
                c => grown.min(c),
            }
        }
    }
}

/// What the throttle did, for the migration's report.
#[derive(Debug, Default)]
pub struct ThrottleStats {
    pub checks: AtomicU64,
    pub slowed: AtomicU64,
    /// Lowest rate set (u64::MAX: never limited).
    pub min_rate: AtomicU64,
    pub max_p99_ms: AtomicU64,
}

impl ThrottleStats {
    pub fn report(&self) -> Value {
        let min = self.min_rate.load(Ordering::Relaxed);
        json!({
            "checks": self.checks.load(Ordering::Relaxed),
            "slowed": self.slowed.load(Ordering::Relaxed),
            "min_rows_per_sec": (min != u64::MAX && min != 0).then_some(min),
            "max_source_p99_ms": self.max_p99_ms.load(Ordering::Relaxed),
        })
    }
}

/// Runs until aborted: reads n1's p99 every second and sets `rate`.
pub async fn control(
    http: reqwest::Client,
    n1: String,
    budget_ms: f64,
    ceiling: u64,
    rate: Arc<AtomicU64>,
    streamed: Arc<northwest_snapshotter::SnapshotStats>,
    stats: Arc<ThrottleStats>,
) {
    stats.min_rate.store(u64::MAX, Ordering::Relaxed);
    let rows_now = || streamed.streamed.load(Ordering::Relaxed);
    let mut last_rows = rows_now();
    let mut warned = false;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rows = rows_now();
        let per_sec = rows.saturating_sub(last_rows);
        last_rows = rows;
        let url = format!("{n1}/v1/admin/status");
        let p99 = match crate::client::send_json(http.get(&url), &format!("GET {url}")).await {
            Ok(s) => s["data_latency"]["p99_ms"].as_f64(),
            Err(e) => {
                // Without a reading, the safe side is the slow one.
                if !warned {
                    tracing::warn!(error = %e, "throttle: cannot read n1's latency; holding the snapshot at its floor until it can");
                    warned = true;
                }
                Some(f64::INFINITY)
            }
        };
        stats.checks.fetch_add(1, Ordering::Relaxed);
        if let Some(p) = p99.filter(|p| p.is_finite()) {
            stats
                .max_p99_ms
                .fetch_max(p.ceil() as u64, Ordering::Relaxed);
        }
        let current = rate.load(Ordering::Relaxed);
        let next = next_rate(current, per_sec, p99, budget_ms, ceiling);
        if next != current {
            let slower = next != 0 && (current == 0 || next < current);
            if slower {
                stats.slowed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(p99_ms = ?p99, budget_ms, rows_per_sec = next, "throttle: n1 is over its latency budget; snapshot slowed");
            }
            rate.store(next, Ordering::Relaxed);
        }
        if next != 0 {
            stats.min_rate.fetch_min(next, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_budget_halves_under_it_grows_back_to_the_ceiling() {
        // Unlimited and over budget: half of what was streamed.
        assert_eq!(next_rate(0, 10_000, Some(80.0), 20.0, 0), 5_000);
        assert_eq!(next_rate(5_000, 0, Some(80.0), 20.0, 0), 2_500);
        // Never below the floor.
        assert_eq!(next_rate(150, 0, Some(80.0), 20.0, 0), FLOOR);
        assert_eq!(next_rate(0, 0, Some(80.0), 20.0, 0), FLOOR);
        // Near the budget: hold.
        assert_eq!(next_rate(2_500, 0, Some(18.0), 20.0, 0), 2_500);
        // Under it (or idle): grow, up to --rate, or back to unlimited.
        assert_eq!(next_rate(2_500, 0, Some(5.0), 20.0, 0), 2_500 + 625 + FLOOR);
        assert_eq!(next_rate(2_500, 0, None, 20.0, 3_000), 3_000);
        assert_eq!(next_rate(900_000, 0, Some(1.0), 20.0, 0), 0);
        assert_eq!(next_rate(0, 50_000, Some(1.0), 20.0, 0), 0);
    }
}
