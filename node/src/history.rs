//! What the dashboard draws: the node's own pipeline sampled every
//! [`INTERVAL`] (journal lag per partition, apply and ship counters, outbox
//! depth and age, the clients' request and error rates and latency), the last [`KEEP`] samples kept, so a page opened now shows
//! whether lag is shrinking or growing; and the migrations as last read from
//! ZooKeeper. The sampling itself is `housekeeping`'s.

use std::collections::VecDeque;
use std::time::Duration;

use northwest_control::MigrationRecord;
use parking_lot::Mutex;
use serde::Serialize;

pub const INTERVAL: Duration = Duration::from_secs(2);
/// Ten minutes of samples.
pub const KEEP: usize = 300;

#[derive(Debug, Clone, Serialize)]
pub struct PartSample {
    pub partition: i32,
    pub lag_records: i64,
    /// `None`: records pending but their age unknown.
    pub lag_seconds: Option<f64>,
    pub halted: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub t_ms: i64,
    /// Source: unshipped commits, the oldest one's age, records shipped.
    pub outbox: Option<u64>,
    pub outbox_age_seconds: Option<f64>,
    pub shipped: Option<u64>,
    /// Target: transactions applied so far and the lag per partition
    /// (empty with `lag_error` set when the broker could not be asked).
    pub applied: Option<u64>,
    pub lag: Vec<PartSample>,
    pub lag_error: Option<String>,
    /// What the data API's clients felt since the previous sample.
    pub client: crate::telemetry::ClientSample,
}

#[derive(Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
    migrations: Mutex<Vec<MigrationRecord>>,
}

impl History {
    pub fn push(&self, s: Sample) {
        let mut q = self.samples.lock();
        if q.len() == KEEP {
            q.pop_front();
        }
        q.push_back(s);
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().iter().cloned().collect()
    }

    /// The migrations' persisted states as last read from ZooKeeper.
    pub fn migrations(&self) -> Vec<MigrationRecord> {
        self.migrations.lock().clone()
    }

    pub fn set_migrations(&self, m: Vec<MigrationRecord>) {
        *self.migrations.lock() = m;
    }
}
