//! What clients felt between two dashboard samples: the data API's
//! requests, the ones that failed on the server's side (5xx) and latency
//! quantiles. Latencies go into log-spaced buckets (eight per doubling, so
//! a quantile is within ~9% of the true value) from 1 µs to ~70 min, which
//! keeps the window's cost fixed whatever the request rate.

use serde::Serialize;

/// Buckets per doubling of latency.
const PER_DOUBLING: f64 = 8.0;
/// Bucket 0 holds everything up to 2^(MIN_EXP) ms (~1 µs).
const MIN_EXP: i32 = -10;
const BUCKETS: usize = 8 * 32;

/// The requests of one window, as the history keeps them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientSample {
    /// How long the window was (ms): rates are counts over it.
    pub window_ms: i64,
    pub requests: u64,
    /// Answered 5xx: the node could not serve it (fenced past its wait,
    /// no route, a store or broker error).
    pub errors: u64,
    /// `None` when the window had no request.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

pub(super) struct ClientWindow {
    since_ms: i64,
    requests: u64,
    errors: u64,
    buckets: Box<[u64; BUCKETS]>,
}

fn bucket(ms: f64) -> usize {
    // Zero, negative and NaN latencies all go to the first bucket.
    if ms.is_nan() || ms <= 0.0 {
        return 0;
    }
    let b = ((ms.log2() - MIN_EXP as f64) * PER_DOUBLING).ceil();
    b.clamp(0.0, (BUCKETS - 1) as f64) as usize
}

/// The upper bound (ms) of bucket `b`.
fn upper(b: usize) -> f64 {
    2f64.powf(MIN_EXP as f64 + b as f64 / PER_DOUBLING)
}

/// Whether a status means the node failed the request (a 4xx is the
/// client's: a missing key, a version that did not match).
pub(super) fn failed(status: u16) -> bool {
    status >= 500
}

impl ClientWindow {
    pub(super) fn new(now_ms: i64) -> Self {
        Self {
            since_ms: now_ms,
            requests: 0,
            errors: 0,
            buckets: Box::new([0; BUCKETS]),
        }
    }

    pub(super) fn record(&mut self, ms: f64, status: u16) {
        self.requests += 1;
        self.errors += u64::from(failed(status));
        self.buckets[bucket(ms)] += 1;
    }

    fn quantile(&self, q: f64) -> Option<f64> {
        if self.requests == 0 {
            return None;
        }
        let want = ((self.requests as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= want {
                return Some(upper(b));
            }
        }
        Some(upper(BUCKETS - 1))
    }

    /// The window so far, and a new one from `now_ms`.
    pub(super) fn take(&mut self, now_ms: i64) -> ClientSample {
        let s = ClientSample {
            window_ms: (now_ms - self.since_ms).max(0),
            requests: self.requests,
            errors: self.errors,
            p50_ms: self.quantile(0.5),
            p99_ms: self.quantile(0.99),
        };
        *self = Self::new(now_ms);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_bucket_of_the_truth() {
        let mut w = ClientWindow::new(0);
        // 98 fast requests, two slow ones: p50 is fast, p99 slow.
        for _ in 0..98 {
            w.record(1.3, 200);
        }
        w.record(40.0, 200);
        w.record(250.0, 503);
        let s = w.take(2000);
        assert_eq!((s.window_ms, s.requests, s.errors), (2000, 100, 1));
        let p50 = s.p50_ms.unwrap();
        assert!((1.3..1.3 * 1.1).contains(&p50), "{p50}");
        let p99 = s.p99_ms.unwrap();
        assert!((40.0..40.0 * 1.1).contains(&p99), "{p99}");
        // The next window starts empty.
        let next = w.take(3000);
        assert_eq!(
            (next.window_ms, next.requests, next.p99_ms),
            (1000, 0, None)
        );
    }

    #[test]
    fn extreme_latencies_land_in_the_end_buckets() {
        let mut w = ClientWindow::new(0);
        w.record(0.0, 200);
        w.record(f64::NAN, 200);
        w.record(1e12, 200);
        let s = w.take(1);
        assert!(s.p50_ms.unwrap() <= 0.001);
        assert!(s.p99_ms.unwrap() > 1e6);
    }

    #[test]
    fn only_unserved_requests_are_errors() {
        assert!(failed(500) && failed(503) && failed(504));
        assert!(!failed(200) && !failed(404) && !failed(412) && !failed(409) && !failed(429));
    }
}
