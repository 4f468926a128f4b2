//! The one retry policy used wherever the store retries.

use std::future::Future;
use std::time::Duration;

/// Retries an operation on retriable errors with exponential backoff.
/// The paper retries failed transactions 3 times; that is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, including the first.
    pub attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(200),
        }
    }
}

impl RetryPolicy {
    /// Backoff before retry number `retry` (1-based).
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// Runs `op` until it succeeds, fails with an error `retriable` rejects,
    /// or the attempts are used up (the last error is returned).
    pub async fn run<T, E, F, Fut>(&self, retriable: impl Fn(&E) -> bool, mut op: F) -> Result<T, E>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 1;
        loop {
            match op(attempt).await {
                Ok(v) => return Ok(v),
                Err(e) if attempt < self.attempts.max(1) && retriable(&e) => {
                    tokio::time::sleep(self.backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn fast(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
        }
    }

    #[tokio::test]
    async fn retries_retriable_until_success() {
        let calls = Cell::new(0);
        let r: Result<u32, &str> = fast(3)
            .run(
                |_| true,
                |n| {
                    calls.set(calls.get() + 1);
                    async move {
                        if n < 3 {
                            Err("busy")
                        } else {
                            Ok(n)
                        }
                    }
                },
            )
            .await;
        assert_eq!(r, Ok(3));
        assert_eq!(calls.get(), 3);
    }

    #[tokio::test]
    async fn gives_up_after_attempts_and_returns_last_error() {
        let calls = Cell::new(0);
        let r: Result<(), u32> = fast(3)
            .run(
                |_| true,
                |n| {
                    calls.set(calls.get() + 1);
                    async move { Err(n) }
                },
            )
            .await;
        assert_eq!(r, Err(3));
        assert_eq!(calls.get(), 3);
    }

    #[tokio::test]
    async fn does_not_retry_permanent_errors() {
        let calls = Cell::new(0);
        let r: Result<(), &str> = fast(5)
            .run(
                |e| *e != "conflict",
                |_| {
                    calls.set(calls.get() + 1);
                    async { Err("conflict") }
                },
            )
            .await;
        assert_eq!(r, Err("conflict"));
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            attempts: 10,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(30),
        };
        assert_eq!(p.backoff(1), Duration::from_millis(5));
        assert_eq!(p.backoff(2), Duration::from_millis(10));
        assert_eq!(p.backoff(3), Duration::from_millis(20));
        assert_eq!(p.backoff(4), Duration::from_millis(30));
        assert_eq!(p.backoff(40), Duration::from_millis(30));
    }
}
