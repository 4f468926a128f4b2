//! The apply batch, planned by a pure function: which records of a consumed
//! batch are applied, where each partition's stored offset moves, and which
//! partitions stop. The apply loop decodes and dead-letters (I/O), then
//! writes exactly what [`plan`] returns in one atomic store write.
//!
//! The invariants live here: a partition's offset advances only past records
//! that were applied or dead-lettered, in order, never past a record that
//! halted it; nothing of a halted partition is applied; every origin whose
//! records reached the store is recorded for marker GC.

use std::collections::BTreeMap;

use northwest_kafka::{Offset, Partition, PartitionOffsets};
use northwest_store::ReplicatedWrite;

use crate::decode::DecodedTxn;
use crate::offsets;

/// What became of one consumed record before the batch is written.
#[derive(Debug)]
pub(crate) enum Fate {
    /// Decoded: its writes join the batch.
    Apply(DecodedTxn),
    /// Undecodable and already on the dead-letter topic: only its offset
    /// advances.
    DeadLettered,
    /// Decoded, and left to others by the loop's [`crate::RecordFilter`]
    /// (this node's own commit, or a namespace it does not follow): only
    /// its offset advances.
    Skipped,
    /// Its partition stops at this record, for this reason (an expired gap
    /// before it, or a bad record that could not be dead-lettered).
    Halt(String),
}

/// One consumed record and its fate.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) partition: Partition,
    pub(crate) offset: Offset,
    pub(crate) fate: Fate,
}

/// What one batch writes and reports.
#[derive(Debug, Default)]
pub(crate) struct BatchPlan {
    pub(crate) writes: Vec<ReplicatedWrite>,
    /// Metadata written in the same store write: next offsets, applied
    /// commit times, origins.
    pub(crate) meta: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Each partition's next offset after this batch (partitions it moved).
    pub(crate) next: PartitionOffsets,
    /// Records applied (transactions or snapshot rows).
    pub(crate) txns: u64,
    pub(crate) dead_lettered: u64,
    /// Records the filter left alone.
    pub(crate) skipped: u64,
    /// Partitions this batch halted, with the reason.
    pub(crate) halted: BTreeMap<Partition, String>,
    /// Commit times of the applied records (latency sampling).
    pub(crate) commit_times: Vec<i64>,
    /// The records whose delivery the apply log counts (tests' proof of no
    /// double apply), in batch order.
    pub(crate) delivered: Vec<(Partition, Offset)>,
}

/// Plans the store write for `records` (in consumption order) of `topic`,
/// given the partitions that were halted before this batch.
pub(crate) fn plan(
    topic: &str,
    records: Vec<Record>,
    halted_before: &BTreeMap<Partition, String>,
) -> BatchPlan {
    let mut out = BatchPlan::default();
    for Record {
        partition: p,
        offset: o,
        fate,
    } in records
    {
        if halted_before.contains_key(&p) || out.halted.contains_key(&p) {
            continue;
        }
        match fate {
            Fate::Halt(reason) => {
                out.halted.insert(p, reason);
                continue;
            }
            Fate::DeadLettered => out.dead_lettered += 1,
            Fate::Skipped => out.skipped += 1,
            Fate::Apply(t) => {
                out.commit_times.push(t.commit_ts_ms);
                out.meta.insert(offsets::origin_key(&t.origin), Vec::new());
                out.meta.insert(
                    offsets::applied_ts_key(topic, p),
                    offsets::encode(t.commit_ts_ms),
                );
                out.writes.extend(t.writes);
                out.txns += 1;
            }
        }
        out.next.insert(p, o.next());
        out.meta
            .insert(offsets::offset_key(topic, p), offsets::encode(o.next().0));
        out.delivered.push((p, o));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use northwest_store::{KeyPath, Namespace, Version};

    fn txn(origin: &str, ts: i64, key: &str) -> Fate {
        Fate::Apply(DecodedTxn {
            txn_id: ts as u64,
            commit_ts_ms: ts,
            origin: origin.into(),
            ns: Namespace::new("demo").unwrap(),
            writes: vec![ReplicatedWrite {
                ns: Namespace::new("demo").unwrap(),
                key: KeyPath::parse(key).unwrap(),
                version: Version(ts as u64),
                commit_ts_ms: ts,
                value: Some(b"v".to_vec()),
            }],
        })
    }

    fn rec(p: i32, o: i64, fate: Fate) -> Record {
        Record {
            partition: Partition(p),
            offset: Offset(o),
            fate,
        }
    }

    fn stored_offset(plan: &BatchPlan, p: i32) -> Option<i64> {
        plan.meta
            .get(&offsets::offset_key("j", Partition(p)))
            .map(|b| i64::from_be_bytes(b[..8].try_into().unwrap()))
    }

    #[test]
    fn offsets_advance_past_applied_and_dead_lettered_records_in_order() {
        let plan = plan(
            "j",
            vec![
                rec(0, 10, txn("n1", 1, "Acct:1")),
                rec(1, 5, Fate::DeadLettered),
                rec(0, 11, txn("n3", 2, "Acct:2")),
            ],
            &BTreeMap::new(),
        );
        assert_eq!(plan.next.get(Partition(0)), Some(Offset(12)));
        assert_eq!(plan.next.get(Partition(1)), Some(Offset(6)));
        assert_eq!(stored_offset(&plan, 0), Some(12));
        assert_eq!(stored_offset(&plan, 1), Some(6));
        assert_eq!((plan.txns, plan.dead_lettered), (2, 1));
        assert_eq!(plan.writes.len(), 2);
        assert_eq!(plan.commit_times, vec![1, 2]);
        for origin in ["n1", "n3"] {
            assert!(plan.meta.contains_key(&offsets::origin_key(origin)));
        }
        assert_eq!(
            plan.meta.get(&offsets::applied_ts_key("j", Partition(0))),
            Some(&offsets::encode(2)),
            "the partition's applied time is its last record's"
        );
        assert_eq!(plan.delivered.len(), 3);
    }

    #[test]
    fn a_skipped_record_moves_its_offset_and_writes_nothing() {
        let plan = plan(
            "j",
            vec![
                rec(0, 10, Fate::Skipped),
                rec(0, 11, txn("n1", 2, "Acct:2")),
                rec(1, 3, Fate::Skipped),
            ],
            &BTreeMap::new(),
        );
        assert_eq!(stored_offset(&plan, 0), Some(12));
        assert_eq!(stored_offset(&plan, 1), Some(4));
        assert_eq!((plan.txns, plan.skipped), (1, 2));
        assert_eq!(plan.writes.len(), 1);
        assert_eq!(
            plan.commit_times,
            vec![2],
            "a skipped record is not applied"
        );
        assert!(
            !plan
                .meta
                .contains_key(&offsets::applied_ts_key("j", Partition(1))),
            "nor does it move the partition's applied time"
        );
    }

    #[test]
    fn a_halt_stops_its_partition_at_the_record_and_nothing_after_it_applies() {
        let plan = plan(
            "j",
            vec![
                rec(0, 10, txn("n1", 1, "Acct:1")),
                rec(0, 11, Fate::Halt("gap".into())),
                rec(0, 12, txn("n1", 3, "Acct:3")),
                rec(1, 0, txn("n1", 4, "Acct:4")),
            ],
            &BTreeMap::new(),
        );
        assert_eq!(plan.next.get(Partition(0)), Some(Offset(11)));
        assert_eq!(stored_offset(&plan, 0), Some(11), "never past the halt");
        assert_eq!(
            plan.halted.get(&Partition(0)).map(String::as_str),
            Some("gap")
        );
        assert_eq!(plan.next.get(Partition(1)), Some(Offset(1)), "others go on");
        assert_eq!(plan.txns, 2);
        assert!(plan.writes.iter().all(|w| w.key.to_string() != "Acct:3"));
    }

    #[test]
    fn a_partition_halted_before_the_batch_applies_nothing_and_keeps_its_offset() {
        let halted = BTreeMap::from([(Partition(2), "bad record".to_string())]);
        let plan = plan(
            "j",
            vec![
                rec(2, 7, txn("n1", 1, "Acct:1")),
                rec(2, 8, Fate::DeadLettered),
            ],
            &halted,
        );
        assert!(plan.writes.is_empty());
        assert!(plan.next.is_empty());
        assert!(plan.meta.is_empty());
        assert!(plan.halted.is_empty(), "not newly halted");
        assert_eq!(plan.dead_lettered, 0);
    }
}
