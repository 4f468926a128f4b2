//! Whether a recorded snapshot image can rebuild a namespace now: pure
//! checks of the topics' offsets against its manifest, and of where the
//! rebuilt node began applying the journal.

use std::collections::BTreeMap;

use northwest_control::record::SnapshotManifest as Manifest;

use crate::error::Refused;

/// The snapshot topic and the journal still hold what snapshot `m` needs:
/// the topic every row it was written with, the journal the same partitions,
/// not recreated, and every record just after the image. `jw`/`sw`: the
/// journal's and the snapshot topic's (log start, end) per partition.
pub(crate) fn check_offsets(
    m: &Manifest,
    journal: &str,
    n3: &str,
    jw: &BTreeMap<i32, (i64, i64)>,
    sw: Result<BTreeMap<i32, (i64, i64)>, String>,
) -> Result<(), Refused> {
    if m.journal_topic != journal {
        return Err(Refused(format!(
            "snapshot {} continues journal {}, but {n3} applies {journal}",
            m.id, m.journal_topic
        )));
    }
    check_snapshot_topic(m, sw)?;
    if jw.len() != m.journal_from.len() {
        return Err(Refused(format!(
            "the journal {journal} has {} partitions but snapshot {} recorded {}: it was \
             recreated or resized, so the snapshot's offsets mean nothing in it",
            jw.len(),
            m.id,
            m.journal_from.len()
        )));
    }
    if let Some((p, h)) = m
        .journal_from
        .iter()
        .find(|(p, h)| jw.get(p).is_some_and(|(_, high)| high < h))
    {
        return Err(Refused(format!(
            "the journal {journal} ends at {} in partition {p}, before snapshot {}'s offset {h}: \
             it was recreated, so the snapshot's offsets mean nothing in it",
            jw[p].1, m.id
        )));
    }
    // Partitions whose records just after the image are gone from the
    // journal. Even a node that applied them must not load this image: its
    // marker GC may have removed markers of deletes after the image (GC
    // waits for the journal to drop the records they shadow), and the image's
    // older rows would resurrect those keys.
    let expired: Vec<String> = m
        .journal_from
        .iter()
        .filter(|(p, h)| jw.get(p).is_some_and(|(low, _)| low > h))
        .map(|(p, h)| format!("partition {p} starts at {} > {h}", jw[p].0))
        .collect();
    if !expired.is_empty() {
        return Err(Refused(format!(
            "snapshot {} is too old: the journal no longer holds the records just after it ({}), \
             and its rows could undercut deletes whose markers were collected since; take a fresh \
             snapshot with `northwest migrate` from a live source",
            m.id,
            expired.join("; ")
        )));
    }
    Ok(())
}

/// The snapshot topic holds every row it was written with (`sw`: its log
/// start and end per partition, or why they could not be read).
fn check_snapshot_topic(
    m: &Manifest,
    sw: Result<BTreeMap<i32, (i64, i64)>, String>,
) -> Result<(), Refused> {
    let unusable = |why: String| {
        Refused(format!(
            "snapshot {} is unusable: {why}; choose another with --snapshot, or take a fresh one",
            m.id
        ))
    };
    let sw = sw.map_err(unusable)?;
    if !m.topic_ends.is_empty() {
        if sw.len() != m.topic_ends.len() {
            return Err(unusable(format!(
                "its topic {} has {} partitions, {} when it was written",
                m.topic,
                sw.len(),
                m.topic_ends.len()
            )));
        }
        // Compaction keeps offsets and the log start; only a cut, a
        // recreated topic or lost data moves them.
        if let Some((p, (low, high))) = sw
            .iter()
            .find(|(p, (low, high))| *low > 0 || *high < m.topic_ends[p])
        {
            return Err(unusable(format!(
                "its topic {} partition {p} holds offsets {low}..{high}, but 0..{} were written",
                m.topic, m.topic_ends[p]
            )));
        }
    }
    Ok(())
}

/// n3 applied every journal partition from at or before the image's offsets
/// (`from3`: where it began), so no record between image and journal is lost.
pub(crate) fn check_n3_start(
    m: &Manifest,
    n3: &str,
    from3: &BTreeMap<i32, i64>,
) -> Result<(), Refused> {
    let late: Vec<String> = m
        .journal_from
        .iter()
        .filter(|(p, h)| from3.get(p).is_none_or(|f| f > h))
        .map(|(p, h)| match from3.get(p) {
            Some(f) => format!("partition {p} from {f} (the image needs {h})"),
            None => format!("partition {p}: unknown start"),
        })
        .collect();
    if !late.is_empty() {
        return Err(Refused(format!(
            "{n3} began applying the journal after snapshot {}'s offsets ({}), so the records \
             in between would be on neither: restart it with an empty data directory (a fresh \
             target starts at the journal's log start, still at or before those offsets)",
            m.id,
            late.join("; ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            id: "m1".into(),
            namespace: "app".into(),
            topic: "j.snapshot.app.m1".into(),
            journal_topic: "j".into(),
            journal_from: BTreeMap::from([(0, 100), (1, 50)]),
            journal_from_at_ms: Some(1),
            rows: 10,
            topic_ends: BTreeMap::from([(0, 6), (1, 4)]),
            source: "n1".into(),
            completed_at_ms: 2,
        }
    }

    fn check(jw: &[(i32, (i64, i64))], sw: &[(i32, (i64, i64))]) -> Result<(), Refused> {
        let jw: BTreeMap<_, _> = jw.iter().copied().collect();
        let sw = Ok(sw.iter().copied().collect());
        check_offsets(&manifest(), "j", "n3", &jw, sw)
    }

    #[test]
    fn an_intact_image_with_its_journal_records_passes() {
        // The journal's log start at or before the image's offsets, the
        // snapshot topic whole (compaction keeps its offsets).
        check(&[(0, (90, 200)), (1, (0, 50))], &[(0, (0, 6)), (1, (0, 4))]).unwrap();
    }

    #[test]
    fn a_journal_that_dropped_records_after_the_image_is_refused() {
        let e = check(
            &[(0, (101, 200)), (1, (0, 50))],
            &[(0, (0, 6)), (1, (0, 4))],
        );
        assert!(e.unwrap_err().0.contains("too old"));
    }

    #[test]
    fn a_recreated_or_resized_journal_is_refused() {
        let shorter = check(&[(0, (0, 99)), (1, (0, 50))], &[(0, (0, 6)), (1, (0, 4))]);
        assert!(shorter.unwrap_err().0.contains("recreated"));
        let resized = check(&[(0, (0, 200))], &[(0, (0, 6)), (1, (0, 4))]);
        assert!(resized.unwrap_err().0.contains("resized"));
    }

    #[test]
    fn a_cut_or_lost_snapshot_topic_is_refused() {
        let cut = check(&[(0, (0, 200)), (1, (0, 50))], &[(0, (2, 6)), (1, (0, 4))]);
        assert!(cut.unwrap_err().0.contains("unusable"));
        let short = check(&[(0, (0, 200)), (1, (0, 50))], &[(0, (0, 5)), (1, (0, 4))]);
        assert!(short.unwrap_err().0.contains("unusable"));
        let jw = BTreeMap::from([(0, (0, 200)), (1, (0, 50))]);
        let unreadable = check_offsets(&manifest(), "j", "n3", &jw, Err("gone".into()));
        assert!(unreadable.unwrap_err().0.contains("gone"));
    }

    #[test]
    fn another_journal_is_refused() {
        let jw = BTreeMap::from([(0, (0, 200)), (1, (0, 50))]);
        let e = check_offsets(&manifest(), "other", "n3", &jw, Ok(BTreeMap::new()));
        assert!(e.unwrap_err().0.contains("continues journal j"));
    }

    #[test]
    fn n3_must_have_applied_from_the_image_on() {
        let m = manifest();
        check_n3_start(&m, "n3", &BTreeMap::from([(0, 100), (1, 0)])).unwrap();
        let late = check_n3_start(&m, "n3", &BTreeMap::from([(0, 101), (1, 0)]));
        assert!(late.unwrap_err().0.contains("partition 0 from 101"));
        let unknown = check_n3_start(&m, "n3", &BTreeMap::from([(0, 0)]));
        assert!(unknown
            .unwrap_err()
            .0
            .contains("partition 1: unknown start"));
    }
}
