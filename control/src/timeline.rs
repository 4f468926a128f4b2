//! A namespace's history as a first-class record, at
//! [`crate::ZkLayout::timeline`]: which node served the namespace when, and
//! where in the journal each of those epochs begins and ends.
//!
//! Every primary journals its client writes to the deployment's journal
//! topic, so the topic holds the namespace's whole history; the timeline
//! says whose records lie where. An epoch ends (and the next begins) under
//! the fences that order a cutover or a rollback: the old primary fenced and
//! drained, the journal's high-water marks read, and only then the new
//! primary takes a write. So on every partition the old primary's records of
//! the namespace lie below the boundary and the new primary's at or after it.
//! The transitions are pure functions here; the orchestrator writes the
//! record conditionally on its ZooKeeper version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Offsets on each partition of the journal topic.
pub type Offsets = BTreeMap<i32, i64>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub namespace: String,
    pub epochs: Vec<Epoch>,
}

/// One primary's stretch of the namespace's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Epoch {
    /// 0 for the first recorded primary, then one more per switch.
    pub epoch: u32,
    /// The primary's node name (what its journal records carry as origin).
    pub primary: String,
    /// Its base URL when the epoch began.
    pub primary_url: String,
    /// The topic its client writes are journaled to.
    pub topic: String,
    /// On each partition, the offset from which this epoch's records lie.
    /// Epoch 0 begins where the journal started when the timeline was
    /// first written (what had expired before is no one's to read).
    pub begins: Offsets,
    /// Where it ended (exclusive); `None` while it is the current epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends: Option<Offsets>,
    /// What opened it: `cutover m…`, `rollback of m…`, `recorded at first
    /// cutover m…`.
    pub opened_by: String,
    pub opened_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at_ms: Option<i64>,
    /// The boundary was read after the fact (an orchestrator that died
    /// between the switch and recording it): the offsets bound the switch
    /// from above rather than mark it exactly.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approximate: bool,
}

/// The new primary of a switch, and where its epoch begins.
#[derive(Debug, Clone, PartialEq)]
pub struct Switch {
    pub primary: String,
    pub primary_url: String,
    pub topic: String,
    pub at: Offsets,
    pub opened_by: String,
    pub now_ms: i64,
    pub approximate: bool,
}

/// A switch the timeline cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimelineError {
    #[error(
        "the timeline of {ns} says epoch {epoch} began at {begins:?}, after the switch's \
         boundary {at:?}: the record was written by another run; read it with `northwest \
         timeline` before going on"
    )]
    BoundaryBeforeBegin {
        ns: String,
        epoch: u32,
        begins: Offsets,
        at: Offsets,
    },
}

impl Timeline {
    /// A timeline whose first epoch is `primary`'s, begun at `begins`.
    pub fn first(
        namespace: &str,
        primary: &str,
        primary_url: &str,
        topic: &str,
        begins: Offsets,
        opened_by: String,
        now_ms: i64,
    ) -> Self {
        Timeline {
            namespace: namespace.to_string(),
            epochs: vec![Epoch {
                epoch: 0,
                primary: primary.to_string(),
                primary_url: primary_url.to_string(),
                topic: topic.to_string(),
                begins,
                ends: None,
                opened_by,
                opened_at_ms: now_ms,
                closed_at_ms: None,
                approximate: false,
            }],
        }
    }

    pub fn current(&self) -> Option<&Epoch> {
        self.epochs.last()
    }

    /// Closes the current epoch at `s.at` and opens `s.primary`'s there.
    /// Returns false (and changes nothing) when the current epoch is that
    /// switch already (a resumed run records it once).
    pub fn switch(&mut self, s: Switch) -> Result<bool, TimelineError> {
        if let Some(cur) = self.epochs.last() {
            if cur.primary == s.primary && cur.opened_by == s.opened_by {
                return Ok(false);
            }
            let before = |(p, o): (&i32, &i64)| cur.begins.get(p).is_some_and(|b| o < b);
            if s.at.iter().any(before) {
                return Err(TimelineError::BoundaryBeforeBegin {
                    ns: self.namespace.clone(),
                    epoch: cur.epoch,
                    begins: cur.begins.clone(),
                    at: s.at,
                });
            }
        }
        let epoch = self.epochs.last().map_or(0, |e| e.epoch + 1);
        if let Some(cur) = self.epochs.last_mut() {
            cur.ends = Some(s.at.clone());
            cur.closed_at_ms = Some(s.now_ms);
        }
        self.epochs.push(Epoch {
            epoch,
            primary: s.primary,
            primary_url: s.primary_url,
            topic: s.topic,
            begins: s.at,
            ends: None,
            opened_by: s.opened_by,
            opened_at_ms: s.now_ms,
            closed_at_ms: None,
            approximate: s.approximate,
        });
        Ok(true)
    }

    /// The epoch a record at `offset` of `partition` belongs to: the last
    /// one that began at or before it.
    pub fn epoch_of(&self, partition: i32, offset: i64) -> Option<&Epoch> {
        self.epochs
            .iter()
            .rev()
            .find(|e| e.begins.get(&partition).is_none_or(|b| *b <= offset))
    }

    /// Whether every record of the epoch migration `id` opened has left the
    /// journal (`log_starts`: each partition's first offset now): the epoch
    /// ended and retention passed its end on every partition. A finished
    /// hop's record is kept until then.
    pub fn expired(&self, id: &str, log_starts: &Offsets) -> bool {
        let opened = |e: &&Epoch| {
            e.opened_by == format!("cutover {id}")
                || e.opened_by.starts_with(&format!("migration {id} "))
        };
        let Some(e) = self.epochs.iter().find(opened) else {
            return false;
        };
        e.ends.as_ref().is_some_and(|ends| {
            ends.iter()
                .all(|(p, end)| log_starts.get(p).is_some_and(|start| start >= end))
        })
    }

    /// Every partition's range `[begins, ends)` of epoch `n` (`ends` None:
    /// to the end of the topic).
    pub fn range_of(&self, n: u32) -> Option<(&Offsets, Option<&Offsets>)> {
        let e = self.epochs.iter().find(|e| e.epoch == n)?;
        Some((&e.begins, e.ends.as_ref()))
    }
}

/// `GET /v1/admin/timeline/{ns}`: the namespace's timeline and how far
/// the answering node applied each epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineView {
    pub timeline: Timeline,
    /// The node that answered, and where it stands in the journal (its
    /// stored offsets; empty when it applies no journal).
    pub node: String,
    pub applied: Offsets,
    /// Per epoch, records of it this node has not reached yet (closed
    /// epochs; the current one's is the node's apply lag).
    pub behind: Vec<EpochBehind>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochBehind {
    pub epoch: u32,
    /// `None` for the current epoch when the partitions' high-water marks
    /// were not known (its end is where the topic ends now).
    pub records: Option<i64>,
}

/// How many offsets of each epoch lie at or after `applied` (the next
/// offsets a node would read): what it still has to read of them. A closed
/// epoch ends at its recorded end, the current one at `high_watermarks`
/// when they are known. Records of other namespaces that share the topic
/// count too: a reader has to read past them all the same.
pub fn behind(
    t: &Timeline,
    applied: &Offsets,
    high_watermarks: Option<&Offsets>,
) -> Vec<EpochBehind> {
    t.epochs
        .iter()
        .map(|e| EpochBehind {
            epoch: e.epoch,
            records: e.ends.as_ref().or(high_watermarks).map(|ends| {
                ends.iter()
                    .map(|(p, end)| {
                        let from = e.begins.get(p).copied().unwrap_or(0);
                        let at = applied.get(p).copied().unwrap_or(0).max(from);
                        (end - at).max(0)
                    })
                    .sum()
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offs(v: &[(i32, i64)]) -> Offsets {
        v.iter().copied().collect()
    }

    fn to(primary: &str, at: Offsets, by: &str) -> Switch {
        Switch {
            primary: primary.into(),
            primary_url: format!("http://{primary}"),
            topic: "j".into(),
            at,
            opened_by: by.into(),
            now_ms: 1000,
            approximate: false,
        }
    }

    fn first() -> Timeline {
        Timeline::first(
            "app",
            "n1",
            "http://n1",
            "j",
            offs(&[(0, 0), (1, 0)]),
            "recorded at first cutover m1".into(),
            5,
        )
    }

    #[test]
    fn a_cutover_then_a_rollback_close_and_open_epochs_at_one_boundary() {
        let mut t = first();
        assert!(t
            .switch(to("n2", offs(&[(0, 10), (1, 4)]), "cutover m1"))
            .unwrap());
        assert!(t
            .switch(to("n1", offs(&[(0, 25), (1, 9)]), "rollback of m1"))
            .unwrap());
        let e: Vec<(u32, &str)> = t
            .epochs
            .iter()
            .map(|e| (e.epoch, e.primary.as_str()))
            .collect();
        assert_eq!(e, vec![(0, "n1"), (1, "n2"), (2, "n1")]);
        assert_eq!(t.epochs[0].ends, Some(offs(&[(0, 10), (1, 4)])));
        assert_eq!(t.epochs[1].begins, offs(&[(0, 10), (1, 4)]));
        assert_eq!(t.epochs[1].ends.as_ref(), Some(&t.epochs[2].begins));
        assert_eq!(t.current().unwrap().ends, None);
        assert_eq!(t.epoch_of(0, 9).unwrap().epoch, 0);
        assert_eq!(t.epoch_of(0, 10).unwrap().epoch, 1);
        assert_eq!(t.epoch_of(1, 9).unwrap().epoch, 2);
        assert_eq!(
            t.range_of(1),
            Some((&t.epochs[1].begins, t.epochs[1].ends.as_ref()))
        );
    }

    #[test]
    fn a_resumed_run_records_its_switch_once() {
        let mut t = first();
        assert!(t.switch(to("n2", offs(&[(0, 10)]), "cutover m1")).unwrap());
        assert!(!t.switch(to("n2", offs(&[(0, 12)]), "cutover m1")).unwrap());
        assert_eq!(t.epochs.len(), 2);
        assert_eq!(
            t.epochs[1].begins,
            offs(&[(0, 10)]),
            "the first boundary stays"
        );
    }

    #[test]
    fn a_boundary_before_the_current_epoch_began_is_refused() {
        let mut t = first();
        t.switch(to("n2", offs(&[(0, 10), (1, 4)]), "cutover m1"))
            .unwrap();
        let before = t.clone();
        let e = t.switch(to("n3", offs(&[(0, 11), (1, 3)]), "cutover m2"));
        assert!(matches!(
            e,
            Err(TimelineError::BoundaryBeforeBegin { epoch: 1, .. })
        ));
        assert_eq!(t, before, "nothing changed");
    }

    #[test]
    fn behind_counts_what_a_node_has_not_read_of_each_closed_epoch() {
        let mut t = first();
        t.switch(to("n2", offs(&[(0, 10), (1, 4)]), "cutover m1"))
            .unwrap();
        t.switch(to("n1", offs(&[(0, 20), (1, 8)]), "rollback of m1"))
            .unwrap();
        let applied = offs(&[(0, 15), (1, 2)]);
        let got = |hwm: Option<&Offsets>| -> Vec<Option<i64>> {
            behind(&t, &applied, hwm)
                .iter()
                .map(|e| e.records)
                .collect()
        };
        // epoch 0: p0 read through, p1 2 of [0,4) left; epoch 1: p0 5 of
        // [10,20), p1 all 4 of [4,8); epoch 2 is current: unknown without
        // the high-water marks, else all of [20,26) and [8,9).
        assert_eq!(got(None), vec![Some(2), Some(9), None]);
        assert_eq!(
            got(Some(&offs(&[(0, 26), (1, 9)]))),
            vec![Some(2), Some(9), Some(7)]
        );
    }

    #[test]
    fn a_hop_expires_once_retention_passed_the_end_of_its_epoch() {
        let mut t = first();
        t.switch(to("n2", offs(&[(0, 10), (1, 4)]), "cutover m1"))
            .unwrap();
        assert!(
            !t.expired("m1", &offs(&[(0, 50), (1, 50)])),
            "still current"
        );
        t.switch(to("n3", offs(&[(0, 20), (1, 8)]), "cutover m2"))
            .unwrap();
        assert!(
            !t.expired("m1", &offs(&[(0, 20), (1, 7)])),
            "p1 still holds some"
        );
        assert!(t.expired("m1", &offs(&[(0, 20), (1, 8)])));
        assert!(!t.expired("m2", &offs(&[(0, 99), (1, 99)])), "current");
        assert!(
            !t.expired("m9", &offs(&[(0, 99), (1, 99)])),
            "unknown hop: kept"
        );
    }

    #[test]
    fn a_timeline_reads_back_and_omits_what_is_unset() {
        let mut t = first();
        t.switch(to("n2", offs(&[(0, 10)]), "cutover m1")).unwrap();
        let v = serde_json::to_value(&t).unwrap();
        assert!(v["epochs"][1].get("ends").is_none());
        assert!(v["epochs"][1].get("approximate").is_none());
        let back: Timeline = serde_json::from_value(v).unwrap();
        assert_eq!(back, t);
    }
}
