//! Marker GC's decisions, pure: what a pass may remove given the held epoch
//! and the journal's positions, and the lowest horizon the sources report.
//! The pass (`marker_gc.rs`) reads the store, ZooKeeper and the broker and
//! acts on what these return.

use std::collections::BTreeMap;

use northwest_consumer::PartitionLag;
use northwest_store::MarkerGcRule;
use serde::{Deserialize, Serialize};

/// A source report older than this blocks GC (the source may be stuck).
pub(crate) const REPORT_STALE_MS: i64 = 10 * 60_000;

/// The generation that ended, the sources' lowest horizon and the journal's
/// high-water marks, read in that order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Epoch {
    pub(crate) generation: u64,
    pub(crate) taken_ms: i64,
    pub(crate) horizon_ms: i64,
    pub(crate) topic: String,
    pub(crate) marks: BTreeMap<i32, i64>,
}

/// A source's outbox report (`<root>/outbox/<name>`): every commit older
/// than `horizon_ms` has been acknowledged by Kafka; or, `retired`, the
/// source stopped cleanly with an empty outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OutboxReport {
    pub(crate) at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) horizon_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) retired: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) rule: MarkerGcRule,
    /// Take a new epoch after the pass.
    pub(crate) next: bool,
    /// Why nothing is removed yet, when nothing is wrong.
    pub(crate) waiting: Option<String>,
}

/// Counts the markers and removes none.
pub(crate) fn count_only() -> MarkerGcRule {
    MarkerGcRule {
        committed_before_ms: i64::MIN,
        generation_at_most: Some(0),
        remove: false,
    }
}

/// A source (nothing is applied to it) removes markers by age alone.
pub(crate) fn on_source(retained_before: i64) -> Decision {
    Decision {
        rule: MarkerGcRule {
            committed_before_ms: retained_before,
            generation_at_most: None,
            remove: true,
        },
        next: false,
        waiting: None,
    }
}

/// On a quiet target: whether the held epoch allows removal. `lag` is every
/// journal partition's position (not empty).
pub(crate) fn on_target(
    held: Option<&Epoch>,
    topic: &str,
    lag: &[PartitionLag],
    retained_before: i64,
) -> Decision {
    let wait = |next: bool, why: String| Decision {
        rule: count_only(),
        next,
        waiting: Some(why),
    };
    let Some(held) = held else {
        return wait(true, "first epoch being taken".into());
    };
    let same_journal = held.topic == topic
        && held.marks.len() == lag.len()
        && lag.iter().all(|p| held.marks.contains_key(&p.partition));
    if !same_journal {
        // Offsets of another topic or partition layout say nothing about
        // this one: start over.
        return wait(
            true,
            format!(
                "the journal changed (topic or partitions) since the epoch of {}: a new epoch is taken",
                held.taken_ms
            ),
        );
    }
    let behind: Vec<String> = lag
        .iter()
        .filter_map(|p| {
            let mark = held.marks[&p.partition];
            let applied = p.stored.unwrap_or(p.low_watermark);
            (p.low_watermark < mark || applied < mark).then(|| {
                format!(
                    "partition {}: log start {}, applied {applied}, mark {mark}",
                    p.partition, p.low_watermark
                )
            })
        })
        .collect();
    if !behind.is_empty() {
        return wait(
            false,
            format!(
                "the journal still holds records from before the epoch ({})",
                behind.join("; ")
            ),
        );
    }
    Decision {
        rule: MarkerGcRule {
            committed_before_ms: retained_before.min(held.horizon_ms),
            generation_at_most: Some(held.generation),
            remove: true,
        },
        next: true,
        waiting: None,
    }
}

/// The lowest horizon of the sources that reported under `dir`: every
/// origin whose records were applied here must have reported, freshly, or
/// have retired.
pub(crate) fn lowest_horizon(
    dir: &str,
    origins: &[String],
    reports: &[(String, OutboxReport)],
    now: i64,
) -> Result<i64, String> {
    if let Some(o) = origins
        .iter()
        .find(|o| !reports.iter().any(|(n, _)| n == *o))
    {
        return Err(format!(
            "records from {o} were applied here, but it has not reported its outbox under \
             {dir}/{o} (sources report every 2 s; a source on local coordination or under \
             another coordination.root cannot be checked)"
        ));
    }
    if reports.is_empty() {
        return Err(format!(
            "no source has reported its outbox under {dir} (sources report every 2 s)"
        ));
    }
    let mut lowest = i64::MAX;
    for (n, r) in reports {
        if r.retired {
            continue;
        }
        let Some(horizon) = r.horizon_ms else {
            return Err(format!("{dir}/{n}: not a report (no horizon_ms)"));
        };
        if now - r.at_ms > REPORT_STALE_MS {
            return Err(format!(
                "source {n} last reported its outbox at {} ({} s ago): it may be stuck, and \
                 commits in its outbox could still undercut markers; a source stopped cleanly \
                 with an empty outbox reports itself retired",
                r.at_ms,
                (now - r.at_ms) / 1000
            ));
        }
        lowest = lowest.min(horizon);
    }
    Ok(lowest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(partition: i32, low: i64, stored: Option<i64>, high: i64) -> PartitionLag {
        PartitionLag {
            partition,
            stored,
            low_watermark: low,
            high_watermark: high,
            lag_records: high - stored.unwrap_or(low),
            lag_seconds: Some(0.0),
        }
    }

    fn epoch(marks: &[(i32, i64)]) -> Epoch {
        Epoch {
            generation: 7,
            taken_ms: 1_000,
            horizon_ms: 5_000,
            topic: "journal".into(),
            marks: marks.iter().copied().collect(),
        }
    }

    #[test]
    fn without_an_epoch_nothing_is_removed_and_one_is_taken() {
        let d = on_target(None, "journal", &[part(0, 0, Some(3), 3)], 9_000);
        assert_eq!(d.rule, count_only());
        assert!(d.next);
    }

    #[test]
    fn an_epoch_of_another_journal_is_replaced_and_allows_nothing() {
        let held = epoch(&[(0, 3)]);
        let lag = [part(0, 10, Some(10), 10)];
        let d = on_target(Some(&held), "other", &lag, 9_000);
        assert_eq!((d.rule, d.next), (count_only(), true));
        let two = [part(0, 10, Some(10), 10), part(1, 0, Some(0), 0)];
        let d = on_target(Some(&held), "journal", &two, 9_000);
        assert_eq!((d.rule, d.next), (count_only(), true), "partitions added");
    }

    #[test]
    fn records_from_before_the_epoch_still_in_the_journal_or_unapplied_keep_every_marker() {
        let held = epoch(&[(0, 5), (1, 5)]);
        for lag in [
            // The log start is below the mark: older records may be read.
            [part(0, 4, Some(9), 9), part(1, 6, Some(9), 9)],
            // Applied below the mark: older records still arrive here.
            [part(0, 6, Some(9), 9), part(1, 6, Some(4), 9)],
            // Nothing applied yet and the log start below the mark.
            [part(0, 6, Some(9), 9), part(1, 2, None, 9)],
        ] {
            let d = on_target(Some(&held), "journal", &lag, 9_000);
            assert_eq!(d.rule, count_only(), "{lag:?}");
            assert!(!d.next, "the epoch is kept until it expires");
            assert!(d.waiting.unwrap().contains("mark 5"));
        }
    }

    #[test]
    fn an_expired_epoch_removes_markers_of_its_generation_before_its_horizon() {
        let held = epoch(&[(0, 5), (1, 5)]);
        let lag = [part(0, 5, Some(9), 9), part(1, 8, None, 8)];
        let d = on_target(Some(&held), "journal", &lag, 9_000);
        assert_eq!(
            d.rule,
            MarkerGcRule {
                committed_before_ms: 5_000,
                generation_at_most: Some(7),
                remove: true
            }
        );
        assert!(d.next);
        let d = on_target(Some(&held), "journal", &lag, 4_000);
        assert_eq!(d.rule.committed_before_ms, 4_000, "retention still applies");
    }

    #[test]
    fn the_horizon_is_the_lowest_fresh_report_and_every_origin_must_report() {
        let report = |at_ms, horizon_ms| OutboxReport {
            at_ms,
            horizon_ms: Some(horizon_ms),
            retired: false,
        };
        let retired = OutboxReport {
            at_ms: 0,
            horizon_ms: None,
            retired: true,
        };
        let now = 1_000_000;
        let reports = vec![
            ("n1".to_string(), report(now - 1_000, 700)),
            ("n3".to_string(), report(now - 2_000, 500)),
            ("old".to_string(), retired),
        ];
        let origins = ["n1".to_string(), "n3".to_string()];
        assert_eq!(lowest_horizon("/o", &origins, &reports, now), Ok(500));
        let missing = ["n1".to_string(), "n9".to_string()];
        let e = lowest_horizon("/o", &missing, &reports, now).unwrap_err();
        assert!(e.contains("n9"), "{e}");
        assert!(
            lowest_horizon("/o", &[], &[], now).is_err(),
            "no report at all"
        );
        let stale = vec![("n1".to_string(), report(now - REPORT_STALE_MS - 1, 700))];
        let e = lowest_horizon("/o", &origins[..1], &stale, now).unwrap_err();
        assert!(e.contains("may be stuck"), "{e}");
    }

    #[test]
    fn reports_read_as_sources_write_them() {
        let r: OutboxReport = serde_json::from_str(r#"{"at_ms": 5, "horizon_ms": 3}"#).unwrap();
        assert_eq!((r.horizon_ms, r.retired), (Some(3), false));
        let r: OutboxReport = serde_json::from_str(r#"{"retired": true, "at_ms": 5}"#).unwrap();
        assert!(r.retired);
        assert!(serde_json::from_str::<OutboxReport>(r#"{"horizon_ms": 3}"#).is_err());
    }
}
