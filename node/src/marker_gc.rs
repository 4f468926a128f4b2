//! Delete-marker GC: every `store.marker_gc_interval_s`, count the markers
//! and remove those no journal record or snapshot row can still undercut.
//!
//! A marker keeps an older put (a replayed or late journal record, a stale
//! snapshot row) from resurrecting its entity. Retention alone does not say
//! when the older records are gone: Kafka deletes whole segments, so a
//! record can outlive `retention.ms`, and a relay backlog, a re-send after a
//! crash or a retried delivery ships old commits late. So a target node
//! reasons in offsets and generations, by epochs:
//!
//! - Every source reports, in ZooKeeper (`<root>/outbox/<name>`), a horizon:
//!   every commit older than it has been acknowledged by Kafka (commits of
//!   one entity group are serialised by its lock, so a commit still in
//!   flight is newer than any marker of its keys already committed). Every
//!   deployment whose records were applied here must report.
//! - At a quiet moment (no snapshot load with rows left, no migration in
//!   progress in the deployment, every source's report fresh, every
//!   partition's position known) the node starts a new marker generation
//!   (markers carry the generation they were written in), then reads the
//!   sources' horizons, then each journal partition's high-water mark, and
//!   records the epoch: the generation that ended, the lowest horizon, the
//!   marks. Generations, not clock time, so a clock step changes nothing.
//! - The epoch has *expired* once every partition's log start offset and
//!   this node's applied position have passed its marks: every record that
//!   was in the broker when it was taken has left.
//! - Then a marker written in the ended generation or before, committed
//!   before the epoch's horizon and more than `marker_retention_hours` ago,
//!   is removed. Every older record of its key was acknowledged before the
//!   horizon was read (it is older than the marker, which is older than the
//!   horizon), so it sat below the marks, and is gone. A record that still
//!   ran into the marker later (a copy, a late delivery) renewed the
//!   marker's generation when it was skipped. A new epoch is then taken.
//!
//! A source node (nothing is applied to it) removes markers by age alone.
//! The epoch and the generation live in the store's metadata, so a restart
//! keeps their progress.

use std::sync::Arc;
use std::time::Duration;

use northwest_consumer::PartitionLag;
use northwest_store::engine::WriteBatch;
use northwest_store::Cf;
use serde_json::{json, Value};

use crate::records::{read_migrations, MigrationPhase};
use decision::{count_only, Decision, Epoch, OutboxReport};

mod decision;
use crate::state::NodeState;

const EPOCH_KEY: &[u8] = b"markergc/epoch";
/// Commits in flight while a source reads its outbox may carry a time a
/// little older than the oldest entry it sees.
const HORIZON_SLACK_MS: i64 = 60_000;
/// The first pass runs this soon after start (then every interval).
const FIRST_PASS: Duration = Duration::from_secs(10);

/// Runs a pass every `interval` until `stop`.
pub async fn gc_loop(
    st: Arc<NodeState>,
    interval: Duration,
    retention_ms: u64,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(stop);
    let mut wait = FIRST_PASS.min(interval);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
        wait = interval;
        let report = pass(&st, retention_ms).await;
        *st.marker_gc.lock() = report;
    }
}

/// A source's report of its outbox (called by the sampler).
pub async fn report_outbox(st: &NodeState) -> Result<(), String> {
    let Some(zk) = &st.zk else {
        return Ok(());
    };
    let now = northwest_store::store::now_ms_pub();
    let oldest = st
        .store
        .outbox()
        .oldest_pending_ts_ms()
        .map_err(|e| e.to_string())?;
    let horizon = oldest.unwrap_or(now).min(now) - HORIZON_SLACK_MS;
    let report = OutboxReport {
        at_ms: now,
        horizon_ms: Some(horizon),
        retired: false,
    };
    let data = serde_json::to_string(&report).expect("plain data");
    let path = st.layout.outbox(&st.name);
    crate::cutover::put_znode(
        &zk.client(),
        &path,
        data.as_bytes(),
        st.layout.root(),
        zk.acls(),
    )
    .await
    .map_err(|e| format!("{path}: {e}"))
}

/// One pass; returns what status shows as `marker_gc`.
async fn pass(st: &NodeState, retention_ms: u64) -> Value {
    let now = northwest_store::store::now_ms_pub();
    let retained_before = now.saturating_sub(retention_ms.min(i64::MAX as u64) as i64);
    let forwarding = !st.gate.proxies().is_empty();
    let decision = if forwarding && st.reverse_apply.lock().is_some() {
        // While it forwards a namespace, records its new primary takes
        // arrive here late through the reverse journal and may be sent
        // twice: a marker removed by age could be undercut by one. (After a
        // rollback the reverse journal was applied to its end.)
        Err(
            "this node forwards a namespace and applies its reverse journal: markers are kept \
             until it serves every namespace itself again"
                .to_string(),
        )
    } else if st.apply.is_none() {
        Ok(decision::on_source(retained_before))
    } else {
        target_decision(st, retained_before).await
    };
    let (rule, next, waiting, blocked) = match decision {
        Ok(d) => (d.rule, d.next, d.waiting, None),
        Err(why) => (count_only(), false, None, Some(why)),
    };
    let stats = match st.store.gc_delete_markers(rule).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "marker GC pass failed; retrying next interval");
            return json!({"at_ms": now, "blocked": format!("store: {e}")});
        }
    };
    // The next epoch is taken only after the removal the expired one
    // allowed: a crash in between repeats the pass with the old epoch.
    let mut epoch_error = None;
    if next {
        if let Err(e) = take_epoch(st).await {
            tracing::warn!(error = %e, "marker GC could not take its next epoch; retrying next interval");
            epoch_error = Some(e);
        }
    }
    if stats.removed > 0 {
        tracing::info!(
            removed = stats.removed,
            left = stats.markers,
            "marker GC removed delete markers"
        );
    }
    let blocked = blocked.or(epoch_error);
    st.metrics
        .observe_marker_gc(stats.markers, stats.removed, blocked.is_some());
    let held = load_epoch(st).ok().flatten();
    json!({
        "at_ms": now,
        "markers": stats.markers,
        "removed": stats.removed,
        "blocked": blocked,
        "waiting": waiting,
        "epoch": held,
    })
}

/// Every journal partition's position, or why they are not known.
async fn journal_positions(st: &NodeState) -> Result<Vec<PartitionLag>, String> {
    let lag = st
        .lag()
        .await
        .map_err(|e| format!("journal positions: {e}"))?;
    if lag.is_empty() {
        return Err("the journal's partitions are not known yet".into());
    }
    Ok(lag)
}

/// On a target: whether the held epoch allows removal, or why nothing can
/// be decided now (an error: GC is blocked and says why).
async fn target_decision(st: &NodeState, retained_before: i64) -> Result<Decision, String> {
    quiet(st).await?;
    let lag = journal_positions(st).await?;
    let held = load_epoch(st).map_err(|e| format!("reading the epoch: {e}"))?;
    Ok(decision::on_target(
        held.as_ref(),
        &st.topic,
        &lag,
        retained_before,
    ))
}

/// How long a snapshot loader may find no partition before marker GC
/// stops waiting on it.
const LOADER_TOPIC_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// No snapshot load with rows left, no migration in progress: otherwise
/// rows older than a marker may still arrive.
async fn quiet(st: &NodeState) -> Result<(), String> {
    let loader = st
        .loader
        .lock()
        .as_ref()
        .map(|l| (l.topic.clone(), l.shared.clone(), l.started.elapsed()));
    // A loader that never found its topic (deleted, or a typo) has no
    // position: once it has waited for it a while (a rebuild's loader has
    // no migration record, and a new one takes a moment to assign its
    // partitions) it blocks only while a migration could still fill it.
    let mut idle_loader = None;
    if let Some((topic, shared, age)) = loader {
        let lag = st
            .lag_of(&topic, &shared)
            .await
            .map_err(|e| format!("snapshot load position: {e}"))?;
        if lag.is_empty() && age >= LOADER_TOPIC_WAIT {
            idle_loader = Some(topic);
        } else if lag.is_empty() || lag.iter().any(|p| p.lag_records > 0) {
            return Err(format!("the snapshot load of {topic} has rows left"));
        }
    }
    if st.zk.is_none() {
        return Err("local coordination: no migration records or source reports to consult".into());
    }
    let records = read_migrations::<MigrationPhase>(st.zk.as_deref(), &st.layout).await?;
    if let Some(bad) = records.unreadable.first() {
        // Marker GC must not overlook a migration it cannot read.
        return Err(format!("{bad}; fix or remove the record"));
    }
    for m in records.read {
        if m.phase.in_progress() {
            // Quoted, as the record's JSON spells them.
            return Err(format!(
                "migration of {:?} is in progress (phase {:?})",
                m.ns,
                m.phase.name()
            ));
        }
    }
    if let Some(topic) = idle_loader {
        let mut slot = st.loader.lock();
        if slot.as_ref().is_some_and(|l| l.topic == topic) {
            tracing::warn!(%topic, "stopping the snapshot loader: its topic never appeared and no migration is in progress");
            if let Some(l) = slot.take() {
                let _ = l.stop.send(true);
            }
        }
    }
    Ok(())
}

/// The lowest horizon of the sources: every deployment whose records were
/// applied here must have a fresh report (or have retired with an empty
/// outbox); a source that cannot be checked blocks GC.
async fn sources_horizon(st: &NodeState, now: i64) -> Result<i64, String> {
    let zk = st.zk.as_ref().ok_or("local coordination")?;
    let client = zk.client();
    let dir = st.layout.outboxes();
    let origins = northwest_consumer::offsets::origins(&st.store)
        .map_err(|e| format!("reading the journal's origins: {e}"))?;
    let names = match client.list_children(&dir).await {
        Ok(n) => n,
        Err(zookeeper_client::Error::NoNode) => Vec::new(),
        Err(e) => return Err(format!("{dir}: {e}")),
    };
    let mut reports = Vec::with_capacity(names.len());
    for n in names {
        let path = st.layout.outbox(&n);
        let (data, _) = client
            .get_data(&path)
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        let report: OutboxReport =
            serde_json::from_slice(&data).map_err(|e| format!("{path}: not a report: {e}"))?;
        reports.push((n, report));
    }
    reports.sort_by(|a, b| a.0.cmp(&b.0));
    decision::lowest_horizon(&dir, &origins, &reports, now)
}

/// Reads the horizons, starts a generation, then reads the marks: every
/// marker of the ended generation was applied before the marks were read,
/// and every commit before the horizon was in the broker then.
async fn take_epoch(st: &NodeState) -> Result<(), String> {
    // The scan may have taken a while: look again.
    quiet(st).await?;
    let now = northwest_store::store::now_ms_pub();
    let horizon_ms = sources_horizon(st, now).await?;
    let generation = st
        .store
        .advance_marker_generation()
        .map_err(|e| format!("starting a marker generation: {e}"))?;
    let lag = journal_positions(st).await?;
    let epoch = Epoch {
        generation,
        taken_ms: now,
        horizon_ms,
        topic: st.topic.clone(),
        marks: lag
            .iter()
            .map(|p| (p.partition, p.high_watermark))
            .collect(),
    };
    save_epoch(st, &epoch)
}

/// A source stopping cleanly with nothing left to ship: targets need not
/// wait for its reports any more (a restart reports again).
pub async fn report_retired(st: &NodeState) {
    let (Some(zk), Some(_)) = (&st.zk, &st.relay) else {
        return;
    };
    if !st.store.outbox().is_empty() {
        return;
    }
    let path = st.layout.outbox(&st.name);
    let report = OutboxReport {
        at_ms: northwest_store::store::now_ms_pub(),
        horizon_ms: None,
        retired: true,
    };
    let data = serde_json::to_string(&report).expect("plain data");
    let client = zk.client();
    let put =
        crate::cutover::put_znode(&client, &path, data.as_bytes(), st.layout.root(), zk.acls());
    if let Err(e) = tokio::time::timeout(Duration::from_secs(5), put)
        .await
        .unwrap_or_else(|_| Err(zookeeper_client::Error::Timeout))
    {
        tracing::warn!(error = %e, "could not report this source retired; targets' marker GC waits for its reports until it runs again");
    }
}

fn load_epoch(st: &NodeState) -> Result<Option<Epoch>, String> {
    match st
        .store
        .engine()
        .get(Cf::Meta, EPOCH_KEY)
        .map_err(|e| e.to_string())?
    {
        // An epoch of an earlier layout is dropped: a new one is taken.
        Some(b) => Ok(serde_json::from_slice(&b).ok()),
        None => Ok(None),
    }
}

fn save_epoch(st: &NodeState, e: &Epoch) -> Result<(), String> {
    let mut b = WriteBatch::default();
    b.put(
        Cf::Meta,
        EPOCH_KEY.to_vec(),
        serde_json::to_vec(e).expect("plain data"),
    );
    st.store.engine().write(b).map_err(|e| e.to_string())
}
