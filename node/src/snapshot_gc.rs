//! Snapshot topic GC: a migration's snapshot topic outlives the migration
//! (`migrate --from-topics` rebuilds a namespace from the newest one), but
//! not forever. Every `journal.snapshot_gc_interval_s` a node with
//! ZooKeeper coordination lists the deployment's snapshot topics
//! (`<journal>.snapshot.<ns>.<id>`) and deletes those [`verdict`] lets go,
//! then their manifests. Every such node runs it: deleting twice is
//! harmless, and a namespace whose orchestrator runs is left alone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use northwest_control::record::{parse_snapshot_topic as parse_topic, SnapshotManifest};
use northwest_control::status::SnapshotGcStatus;
use northwest_control::{MigrationRecord, Phase};

use crate::records::read_migrations;
use crate::state::NodeState;

/// What is known of one snapshot topic when the pass decides on it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Candidate {
    /// When it was made: its manifest's completion, else its migration
    /// id's time (`m<ms>`).
    pub made_ms: i64,
    pub manifest: bool,
    /// A running orchestrator holds the namespace, or the namespace's
    /// unfinished migration streams or loads this topic.
    pub busy: bool,
    /// A newer complete snapshot of the namespace over the same journal.
    pub superseded: bool,
    /// The journal still holds every record after the snapshot's marks.
    pub covered: bool,
}

/// Why a topic is kept or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Keep(&'static str),
    Delete(&'static str),
}

/// The rule: nothing in use, nothing younger than the retention; past
/// it, a complete snapshot goes once it is superseded or the journal no
/// longer covers it (the namespace's newest usable image stays), and one
/// that never completed goes.
pub(crate) fn verdict(c: &Candidate, now_ms: i64, retention_ms: i64) -> Verdict {
    if c.busy {
        return Verdict::Keep("a migration of its namespace is running");
    }
    if now_ms - c.made_ms < retention_ms {
        return Verdict::Keep("younger than journal.snapshot_retention_hours");
    }
    match (c.manifest, c.covered, c.superseded) {
        (false, _, _) => Verdict::Delete("it never completed and its migration is over"),
        (true, false, _) => Verdict::Delete(
            "the journal no longer holds the records after it: no rebuild can use it",
        ),
        (true, true, true) => Verdict::Delete("a newer complete snapshot of its namespace exists"),
        (true, true, false) => {
            Verdict::Keep("the newest usable snapshot of its namespace (migrate --from-topics)")
        }
    }
}

/// Runs a pass every `interval` until `stop`.
pub async fn run(
    st: Arc<NodeState>,
    interval: Duration,
    retention: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    *st.snapshot_gc.lock() = Some(SnapshotGcStatus::default());
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tick.tick() => {}
        }
        let outcome =
            match tokio::time::timeout(Duration::from_secs(120), pass(&st, retention)).await {
                Ok(Ok(n)) => Ok(n as u64),
                Ok(Err(e)) => Err(e),
                Err(_) => Err("the pass took over 120 s (a slow broker or ZooKeeper)".to_string()),
            };
        record(&st, outcome);
    }
}

/// Status, metrics and the log of one pass's outcome.
fn record(st: &NodeState, outcome: Result<u64, String>) {
    let now = northwest_store::store::now_ms_pub();
    let mut guard = st.snapshot_gc.lock();
    let s = guard.get_or_insert_with(Default::default);
    s.last_pass_ms = Some(now);
    match outcome {
        Ok(n) => {
            if n > 0 {
                tracing::info!(
                    deleted = n,
                    "snapshot topic GC: deleted {n} snapshot topic(s)"
                );
            }
            if s.last_error.is_some() {
                tracing::info!("snapshot topic GC passes again");
            }
            s.deleted += n;
            s.last_error = None;
            s.failing_since_ms = None;
            st.metrics.observe_snapshot_gc(n, false);
        }
        Err(e) => {
            tracing::warn!(error = %e, "snapshot topic GC pass failed; old snapshot topics stay until a pass succeeds (retried every journal.snapshot_gc_interval_s)");
            s.failing_since_ms.get_or_insert(now);
            s.last_error = Some(e);
            st.metrics.observe_snapshot_gc(0, true);
        }
    }
}

/// What the brokers hold: the deployment's snapshot topics, where each
/// journal partition starts, and the snapshots' empty dead-letter topics.
struct BrokerFacts {
    topics: BTreeSet<String>,
    starts: BTreeMap<i32, i64>,
    empty_dlqs: BTreeSet<String>,
}

/// Reads [`BrokerFacts`] (blocking calls, off the runtime's workers).
async fn broker_facts(st: &NodeState) -> Result<BrokerFacts, String> {
    let (kafka, journal) = (st.kafka.clone(), st.topic.clone());
    tokio::task::spawn_blocking(move || {
        let wait = Duration::from_secs(10);
        let all = northwest_kafka::list_topics(&kafka, wait)
            .map_err(|e| format!("listing topics: {e}"))?;
        let topics: BTreeSet<String> = all
            .iter()
            .map(|(t, _)| t.clone())
            .filter(|t| parse_topic(&journal, t).is_some())
            .collect();
        let parts = all
            .iter()
            .find(|(t, _)| *t == journal)
            .map_or(0, |(_, n)| *n);
        let starts = northwest_kafka::watermarks(&kafka, &journal, parts, wait)
            .map_err(|e| format!("reading where {journal} starts: {e}"))?
            .into_iter()
            .map(|(p, (low, _))| (p, low))
            .collect();
        // A snapshot's loader creates `<snapshot>.dlq` for rows it cannot
        // load: an empty one goes with its snapshot, one holding dead
        // letters stays for the operator.
        let mut empty_dlqs = BTreeSet::new();
        for (t, n) in all
            .iter()
            .filter(|(t, _)| t.strip_suffix(".dlq").is_some_and(|s| topics.contains(s)))
        {
            let marks = northwest_kafka::watermarks(&kafka, t, *n, wait)
                .map_err(|e| format!("reading {t}: {e}"))?;
            if marks.values().all(|(low, high)| low == high) {
                empty_dlqs.insert(t.clone());
            }
        }
        Ok(BrokerFacts {
            topics,
            starts,
            empty_dlqs,
        })
    })
    .await
    .map_err(|e| e.to_string())?
}

/// One pass: the topics deleted.
async fn pass(st: &NodeState, retention: Duration) -> Result<usize, String> {
    let Some(zk) = st.zk.as_deref() else {
        return Ok(0);
    };
    let facts = broker_facts(st).await?;
    let migrations = read_migrations::<MigrationRecord>(Some(zk), &st.layout).await?;
    if !migrations.unreadable.is_empty() {
        // An unreadable record could be the one using a topic.
        return Err(format!(
            "{} migration record(s) do not parse; nothing is deleted until they do",
            migrations.unreadable.len()
        ));
    }
    let namespaces: BTreeSet<&str> = facts
        .topics
        .iter()
        .filter_map(|t| parse_topic(&st.topic, t).map(|(ns, _)| ns))
        .collect();
    // This node's loader of a snapshot topic another node deleted would
    // wait for it forever.
    let orphan = st.loader.lock().as_ref().and_then(|l| {
        let gone = parse_topic(&st.topic, &l.topic).is_some() && !facts.topics.contains(&l.topic);
        gone.then(|| l.topic.clone())
    });
    if let Some(t) = orphan {
        stop_loader_of(st, &t);
    }
    // One namespace's failure (a refused delete) does not hold up the
    // others; the pass reports every one.
    let (mut deleted, mut failed) = (0, Vec::new());
    for ns in namespaces {
        let owner = st.layout.owner(ns);
        match zk.client().check_stat(&owner).await {
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(e) => {
                failed.push(format!("{owner}: {e}"));
                continue;
            }
        }
        let record = migrations.read.iter().find(|m| m.ns == ns);
        match gc_namespace(st, ns, &facts, record, retention).await {
            Ok(n) => deleted += n,
            Err(e) => failed.push(format!("namespace {ns}: {e}")),
        }
    }
    match failed.is_empty() {
        true => Ok(deleted),
        false => Err(format!("{deleted} deleted; {}", failed.join("; "))),
    }
}

/// Decides on, and deletes, the snapshot topics of `ns`.
async fn gc_namespace(
    st: &NodeState,
    ns: &str,
    facts: &BrokerFacts,
    record: Option<&MigrationRecord>,
    retention: Duration,
) -> Result<usize, String> {
    let client = st.zk.as_deref().expect("checked").client();
    let manifests = read_manifests(st, ns).await?;
    let made = |m: &SnapshotManifest| m.journal_from_at_ms.unwrap_or(m.completed_at_ms);
    let newest = manifests
        .values()
        .filter(|m| m.journal_topic == st.topic)
        .map(made)
        .max();
    let now = northwest_store::store::now_ms_pub();
    let mut deleted = 0;
    for topic in &facts.topics {
        let Some((_, id)) = parse_topic(&st.topic, topic).filter(|(n, _)| *n == ns) else {
            continue;
        };
        let m = manifests.get(id).filter(|m| m.topic == *topic);
        let Some(made_ms) = m
            .map(|m| m.completed_at_ms)
            .or_else(|| id[1..].parse().ok())
        else {
            continue;
        };
        let c = Candidate {
            made_ms,
            manifest: m.is_some(),
            busy: record.is_some_and(|r| {
                r.snapshot_topic == *topic && !matches!(r.phase, Phase::Done | Phase::Aborted)
            }),
            superseded: m.is_some_and(|m| newest.is_some_and(|n| n > made(m))),
            covered: m.is_some_and(|m| {
                m.journal_from
                    .iter()
                    .all(|(p, from)| facts.starts.get(p).is_none_or(|low| low <= from))
            }),
        };
        let why = match verdict(&c, now, retention.as_millis() as i64) {
            Verdict::Keep(_) => continue,
            Verdict::Delete(why) => why,
        };
        // The manifest first: a rebuild never picks a snapshot whose topic
        // is gone, and a topic left without its manifest (a failure in
        // between) goes at a later pass as one that never completed.
        if m.is_some() {
            let path = st.layout.snapshot(ns, id);
            match client.delete(&path, None).await {
                Ok(()) | Err(zookeeper_client::Error::NoNode) => {}
                Err(e) => return Err(format!("removing the manifest {path}: {e}")),
            }
        }
        stop_loader_of(st, topic);
        delete_topic(st, topic).await?;
        let dlq = format!("{topic}.dlq");
        if facts.empty_dlqs.contains(&dlq) {
            delete_topic(st, &dlq).await?;
        }
        tracing::info!(%topic, namespace = ns, reason = why, "deleted a snapshot topic");
        deleted += 1;
    }
    Ok(deleted)
}

/// The namespace's snapshot manifests by id (an unreadable one is left
/// out: its topic then counts as never completed only if it is old).
async fn read_manifests(
    st: &NodeState,
    ns: &str,
) -> Result<BTreeMap<String, SnapshotManifest>, String> {
    let client = st.zk.as_deref().expect("checked").client();
    let dir = st.layout.snapshots(ns);
    let ids = match client.list_children(&dir).await {
        Ok(ids) => ids,
        Err(zookeeper_client::Error::NoNode) => return Ok(BTreeMap::new()),
        Err(e) => return Err(format!("listing {dir}: {e}")),
    };
    let mut out = BTreeMap::new();
    for id in ids {
        let path = format!("{dir}/{id}");
        match client.get_data(&path).await {
            Ok((d, _)) => match serde_json::from_slice::<SnapshotManifest>(&d) {
                Ok(m) => {
                    out.insert(id, m);
                }
                Err(e) => {
                    // Its topic must not go as "never completed".
                    return Err(format!("the manifest {path} does not parse: {e}"));
                }
            },
            Err(zookeeper_client::Error::NoNode) => {}
            Err(e) => return Err(format!("reading {path}: {e}")),
        }
    }
    Ok(out)
}

/// This node's snapshot loader reads the topic: stopped first (it would
/// wait for the topic to come back, and a broker that creates topics on
/// demand would make it again).
fn stop_loader_of(st: &NodeState, topic: &str) {
    let mut slot = st.loader.lock();
    if slot.as_ref().is_some_and(|l| l.topic == topic) {
        if let Some(l) = slot.take() {
            let _ = l.stop.send(true);
        }
    }
}

async fn delete_topic(st: &NodeState, topic: &str) -> Result<(), String> {
    northwest_kafka::delete_topic(&st.kafka, topic)
        .await
        .map_err(|e| format!("deleting topic {topic}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c() -> Candidate {
        Candidate {
            made_ms: 0,
            manifest: true,
            busy: false,
            superseded: false,
            covered: true,
        }
    }

    #[test]
    fn the_newest_usable_snapshot_stays_and_others_go_after_the_retention() {
        let day = 86_400_000;
        assert!(
            matches!(verdict(&c(), 10 * day, day), Verdict::Keep(_)),
            "newest usable"
        );
        let superseded = Candidate {
            superseded: true,
            ..c()
        };
        assert!(matches!(
            verdict(&superseded, 10 * day, day),
            Verdict::Delete(_)
        ));
        assert!(
            matches!(verdict(&superseded, day / 2, day), Verdict::Keep(_)),
            "young"
        );
        let uncovered = Candidate {
            covered: false,
            ..c()
        };
        assert!(matches!(
            verdict(&uncovered, 10 * day, day),
            Verdict::Delete(_)
        ));
        let unfinished = Candidate {
            manifest: false,
            ..c()
        };
        assert!(matches!(
            verdict(&unfinished, 10 * day, day),
            Verdict::Delete(_)
        ));
        let busy = Candidate {
            busy: true,
            ..unfinished
        };
        assert!(
            matches!(verdict(&busy, 10 * day, day), Verdict::Keep(_)),
            "in use"
        );
    }
}
