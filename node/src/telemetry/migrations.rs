//! The migrations' series: each record's phase, age, snapshot progress
//! and stall, rebuilt from the records at every read.

use northwest_control::{MigrationRecord, Phase};

use super::series::SnapshotSeries;
use super::Metrics;

impl Metrics {
    /// How many migration records did not parse at the last read.
    pub fn migration_records_unreadable(&self) -> i64 {
        self.migration.migration_records_unreadable.get()
    }

    pub fn observe_migrations(
        &self,
        migrations: &[MigrationRecord],
        unreadable: usize,
        now_ms: i64,
    ) {
        let _seen = self.last.lock();
        self.migration
            .migration_records_unreadable
            .set(i64::try_from(unreadable).unwrap_or(i64::MAX));
        // Every series is rebuilt: a record that went away takes its series.
        self.migration.migration_phase.reset();
        self.migration.migration_phase_age.reset();
        self.migration.migration_snapshot_rows.reset();
        self.migration.snap.reset();
        self.migration.migration_pause.reset();
        self.migration.migration_failed.reset();
        for m in migrations {
            let ns = m.ns.as_str();
            self.migration
                .migration_phase
                .with_label_values(&[ns, m.phase.name()])
                .set(1);
            if let Some(t) = m.phase_started_ms {
                self.migration
                    .migration_phase_age
                    .with_label_values(&[ns])
                    .set((now_ms - t).max(0) as f64 / 1000.0);
            }
            self.migration
                .migration_snapshot_rows
                .with_label_values(&[ns])
                .set(int(m
                    .snapshot_progress
                    .as_ref()
                    .map_or(0, |p| p.rows_streamed)
                    .max(m.snapshot_rows)));
            self.migration.snap.observe(m, now_ms);
            if let Some(ms) = m.write_pause_ms {
                self.migration
                    .migration_pause
                    .with_label_values(&[ns])
                    .set(ms / 1000.0);
            }
            self.migration
                .migration_failed
                .with_label_values(&[ns])
                .set(m.error.is_some() as i64);
        }
    }
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl SnapshotSeries {
    fn reset(&self) {
        for g in [&self.rows_total, &self.rows_loaded, &self.bytes] {
            g.reset();
        }
        for g in [&self.rate, &self.eta, &self.stalled] {
            g.reset();
        }
    }

    /// One record's snapshot progress, and how long it has not moved.
    fn observe(&self, m: &MigrationRecord, now_ms: i64) {
        let ns = m.ns.as_str();
        let p = m.snapshot_progress.clone().unwrap_or_default();
        if m.snapshot_progress.is_some() {
            self.rows_total
                .with_label_values(&[ns])
                .set(int(p.rows_total));
            self.rows_loaded
                .with_label_values(&[ns])
                .set(int(p.rows_loaded));
            self.bytes
                .with_label_values(&[ns])
                .set(int(p.bytes_streamed));
            self.rate.with_label_values(&[ns]).set(p.rows_per_sec);
            if let Some(eta) = p.eta_seconds {
                self.eta.with_label_values(&[ns]).set(eta);
            }
        }
        // Only while rows should move: a stalled snapshot or load (a dead
        // orchestrator too, whose record stops changing).
        if matches!(m.phase, Phase::Snapshot | Phase::CatchUp) && m.error.is_none() && !m.paused {
            let since = match p.advanced_at_ms {
                0 => m.phase_started_ms.unwrap_or(now_ms),
                t => t.max(m.phase_started_ms.unwrap_or(0)),
            };
            self.stalled
                .with_label_values(&[ns])
                .set((now_ms - since).max(0) as f64 / 1000.0);
        }
    }
}
