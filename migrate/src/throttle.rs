//! The snapshot's closed-loop throttle (`--max-source-p99-ms`,
//! `--max-apply-lag`): while the snapshot streams, n1's data-API p99 over
//! the last 10 s and n2's journal lag are read every second; the pressure is
//! the larger of each over its budget. Above 1 the snapshot's rate is
//! halved, below 0.8 it grows again, up to `--rate` (or unlimited). Like
//! Vitess's tablet throttler, it keeps the migration from hurting n1's
//! users or leaving n2 behind on the journal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use northwest_control::api::NodeStatus;
use northwest_control::api::{path, LoaderRateRequest, LoaderRateResponse};
use northwest_control::record::ThrottleReport;
use northwest_control::AdminClient;

/// The snapshot never stops entirely: it keeps at least this many rows/s.
pub const FLOOR: u64 = 100;
/// Above this an unlimited ceiling is unlimited again.
const UNLIMITED_ABOVE: u64 = 1_000_000;

/// The next rate (rows/s, 0 = unlimited). `streamed`: rows/s streamed over
/// the last check (the starting point when the rate was unlimited);
/// `pressure`: the worst signal over its budget (1 = at the budget; None:
/// nothing measured); `ceiling`: `--rate` (0 = none).
pub fn next_rate(current: u64, streamed: u64, pressure: Option<f64>, ceiling: u64) -> u64 {
    // Never faster than --rate, even at the floor.
    let floor = if ceiling > 0 {
        FLOOR.min(ceiling)
    } else {
        FLOOR
    };
    // Halve what is actually streamed, not a limit far above it.
    let effective = match (current, streamed) {
        (0, s) => s.max(floor),
        (c, s) if s > 0 => c.min(s),
        (c, _) => c,
    };
    match pressure {
        Some(p) if p > 1.0 => (effective / 2).max(floor),
        Some(p) if p > 0.8 => current,
        _ if current == 0 => 0,
        _ => {
            let grown = current.saturating_add(current / 4 + FLOOR);
            match ceiling {
                0 if grown > UNLIMITED_ABOVE => 0,
                0 => grown,
                c => grown.min(c),
            }
        }
    }
}

/// A window with fewer requests says nothing: one slow request would be
/// its p99.
const MIN_REQUESTS: u64 = 50;
/// After a cut, the 10 s window still holds the slow samples that caused
/// it: the next cut waits until they have left.
const CUT_SPACING: Duration = Duration::from_secs(10);

/// What the throttle did, for the migration's report.
#[derive(Debug, Default)]
pub struct ThrottleStats {
    pub checks: AtomicU64,
    /// Checks that could not read n1's latency (each held the floor).
    pub unreadable: AtomicU64,
    /// Cuts of the rate.
    pub slowed: AtomicU64,
    /// Lowest rate the throttle set (0: it never set one).
    pub min_rate: AtomicU64,
    pub max_p99_ms: AtomicU64,
    /// Highest journal lag of n2 seen (records; with `--max-apply-lag`).
    pub max_apply_lag: AtomicU64,
}

/// Both phases' throttling as one report: the stream's, then the loader's.
pub fn merged(a: Option<ThrottleReport>, b: ThrottleReport) -> ThrottleReport {
    let Some(a) = a else { return b };
    ThrottleReport {
        checks: a.checks + b.checks,
        unreadable: a.unreadable + b.unreadable,
        slowed: a.slowed + b.slowed,
        min_rows_per_sec: match (a.min_rows_per_sec, b.min_rows_per_sec) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        },
        max_source_p99_ms: a.max_source_p99_ms.max(b.max_source_p99_ms),
        max_apply_lag_records: a.max_apply_lag_records.max(b.max_apply_lag_records),
    }
}

/// Sets n2's snapshot loader limit (0: none); its answer says the rows
/// loaded so far.
pub async fn set_loader_rate(
    admin: &AdminClient,
    n2: &str,
    rows_per_s: u64,
) -> Result<LoaderRateResponse, northwest_control::AdminError> {
    let req = LoaderRateRequest { rows_per_s };
    admin.post(n2, path::LOADER_RATE, &req).await
}

/// Keeps n2's snapshot loader at `rate` (0: no limit) while the throttle
/// moves it, and `loaded` at the rows it applied, until aborted. n2 drops
/// a limit not renewed within a few seconds, so a stopped orchestrator
/// leaves none behind.
pub async fn drive_loader(
    admin: AdminClient,
    n2: String,
    rate: Arc<AtomicU64>,
    loaded: Arc<AtomicU64>,
) {
    let mut last_warn: Option<Instant> = None;
    loop {
        match set_loader_rate(&admin, &n2, rate.load(Ordering::Relaxed)).await {
            Ok(r) => loaded.store(r.rows, Ordering::Relaxed),
            Err(e) => {
                if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    last_warn = Some(Instant::now());
                    tracing::warn!(error = %e, "throttle: cannot set n2's snapshot loader rate; n2 drops a limit not renewed within 5 s");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Lifts n2's loader limit (a throttled run that stopped may have left
/// one, until it lapses).
pub async fn lift_loader_limit(admin: &AdminClient, n2: &str) {
    match set_loader_rate(admin, n2, 0).await {
        Ok(r) if r.rate_limit == 0 => {}
        Ok(r) => tracing::warn!(
            rate_limit = r.rate_limit,
            "n2's snapshot loader kept a rate limit after it was lifted; it lapses within 5 s"
        ),
        // No loader (a node older than the endpoint, or none started).
        Err(northwest_control::AdminError::Refused { status: 404, .. }) => {}
        Err(e) => {
            tracing::warn!(error = %e, "lifting n2's snapshot loader limit failed; a limit lapses within 5 s unless renewed")
        }
    }
}

impl ThrottleStats {
    pub fn report(&self) -> ThrottleReport {
        let min = self.min_rate.load(Ordering::Relaxed);
        ThrottleReport {
            checks: self.checks.load(Ordering::Relaxed),
            unreadable: self.unreadable.load(Ordering::Relaxed),
            slowed: self.slowed.load(Ordering::Relaxed),
            min_rows_per_sec: (min != 0).then_some(min),
            max_source_p99_ms: self.max_p99_ms.load(Ordering::Relaxed),
            max_apply_lag_records: self.max_apply_lag.load(Ordering::Relaxed),
        }
    }
}

/// What the throttle holds the migration to.
#[derive(Debug, Clone)]
pub struct Budgets {
    pub n1: String,
    pub n2: String,
    /// n1's data-API p99 (ms).
    pub source_p99_ms: Option<f64>,
    /// n2's journal lag (records, summed over partitions).
    pub apply_lag: Option<u64>,
}

/// A node's status, read with a short timeout: a node too loaded to answer
/// in time is over budget.
async fn status_now(admin: &AdminClient, node: &str) -> anyhow::Result<NodeStatus> {
    Ok(admin.status(node).await?)
}

/// n1's p99 over the budget (None: too few requests to say).
async fn source_pressure(
    admin: &AdminClient,
    b: &Budgets,
    budget: f64,
    stats: &ThrottleStats,
) -> anyhow::Result<Option<f64>> {
    let l = status_now(admin, &b.n1).await?.data_latency;
    if l.requests < MIN_REQUESTS {
        return Ok(None);
    }
    let p = l.p99_ms;
    if let Some(p) = p.filter(|p| p.is_finite()) {
        stats
            .max_p99_ms
            .fetch_max(p.ceil() as u64, Ordering::Relaxed);
    }
    Ok(p.map(|p| p / budget))
}

/// n2's journal lag over the budget.
async fn lag_pressure(
    admin: &AdminClient,
    b: &Budgets,
    budget: u64,
    stats: &ThrottleStats,
) -> anyhow::Result<Option<f64>> {
    let s = status_now(admin, &b.n2).await?;
    if let Some(e) = s.apply.as_ref().and_then(|a| a.lag_error.as_deref()) {
        anyhow::bail!("n2 cannot tell its journal lag: {e}");
    }
    let lag = s.journal_lag().max(0) as u64;
    stats.max_apply_lag.fetch_max(lag, Ordering::Relaxed);
    Ok(Some(lag as f64 / budget.max(1) as f64))
}

/// Runs until aborted: reads the budgets' signals every second and sets
/// `rate`.
pub async fn control(
    admin: AdminClient,
    budgets: Budgets,
    ceiling: u64,
    rate: Arc<AtomicU64>,
    sent: impl Fn() -> u64,
    stats: Arc<ThrottleStats>,
) {
    let mut last_rows = sent();
    let mut last_warn: Option<Instant> = None;
    let mut last_cut: Option<Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rows = sent();
        let per_sec = rows.saturating_sub(last_rows);
        last_rows = rows;
        let source = match budgets.source_p99_ms {
            Some(budget) => Some(source_pressure(&admin, &budgets, budget, &stats).await),
            None => None,
        };
        let lag = match budgets.apply_lag {
            Some(budget) => Some(lag_pressure(&admin, &budgets, budget, &stats).await),
            None => None,
        };
        stats.checks.fetch_add(1, Ordering::Relaxed);
        let mut pressure: Option<f64> = None;
        let mut unreadable = false;
        for r in [source, lag].into_iter().flatten() {
            let p = match r {
                Ok(p) => p,
                Err(e) => {
                    unreadable = true;
                    if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                        tracing::warn!(error = %format!("{e:#}"), rows_per_sec = FLOOR, "throttle: cannot read what it watches; the snapshot slows to its floor until it can");
                        last_warn = Some(Instant::now());
                    }
                    Some(f64::INFINITY)
                }
            };
            if let Some(p) = p {
                pressure = Some(pressure.map_or(p, |q| q.max(p)));
            }
        }
        if unreadable {
            stats.unreadable.fetch_add(1, Ordering::Relaxed);
        }
        let current = rate.load(Ordering::Relaxed);
        let mut next = next_rate(current, per_sec, pressure, ceiling);
        let cut = next != 0 && (current == 0 || next < current);
        if cut && last_cut.is_some_and(|t| t.elapsed() < CUT_SPACING) {
            // The window still holds the samples behind the last cut.
            next = current;
        } else if cut {
            last_cut = Some(Instant::now());
            stats.slowed.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                ?pressure,
                rows_per_sec = next,
                "throttle: over budget (n1's latency or n2's journal lag); snapshot slowed"
            );
            let min = stats.min_rate.load(Ordering::Relaxed);
            stats.min_rate.store(
                if min == 0 { next } else { min.min(next) },
                Ordering::Relaxed,
            );
        }
        rate.store(next, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_budget_halves_under_it_grows_back_to_the_ceiling() {
        // Unlimited and over budget: half of what was streamed.
        assert_eq!(next_rate(0, 10_000, Some(4.0), 0), 5_000);
        assert_eq!(next_rate(5_000, 0, Some(4.0), 0), 2_500);
        // Never below the floor.
        assert_eq!(next_rate(150, 0, Some(4.0), 0), FLOOR);
        assert_eq!(next_rate(0, 0, Some(4.0), 0), FLOOR);
        // Near the budget: hold.
        assert_eq!(next_rate(2_500, 0, Some(0.9), 0), 2_500);
        // Halves what is streamed when the limit is far above it.
        assert_eq!(next_rate(1_000_000, 20_000, Some(4.0), 1_000_000), 10_000);
        // Never above a --rate below the floor.
        assert_eq!(next_rate(50, 0, Some(4.0), 50), 50);
        // Under it (or idle): grow, up to --rate, or back to unlimited.
        assert_eq!(next_rate(2_500, 0, Some(0.25), 0), 2_500 + 625 + FLOOR);
        assert_eq!(next_rate(2_500, 0, None, 3_000), 3_000);
        assert_eq!(next_rate(900_000, 0, Some(0.05), 0), 0);
        assert_eq!(next_rate(0, 50_000, Some(0.05), 0), 0);
    }
}
