//! Starting the node's parts in order: the name's claim, the relay and the
//! apply loop, the node state, the background tasks, the routing it resumes.

use std::sync::Arc;
use std::time::Duration;

use northwest_consumer::{ApplyConfig, ApplyShared, Control, PoisonPolicy, Source};
use northwest_control::ZkLayout;
use northwest_producer::{Relay, RelayConfig, RelayStats};
use northwest_store::{Store, ZkCoordinator};
use tokio::sync::{mpsc, watch};

use super::open::{journal_topic, kafka_settings};
use super::serve::HttpSetup;
use super::{stopped, Tasks};
use crate::config::NodeConfig;
use crate::cutover::{Gate, ProxyRecord};
use crate::state::NodeState;
use crate::telemetry::{Metrics, Roles};

/// Claims the node's name in ZooKeeper (none on local coordination).
pub(super) async fn claim_name(
    cfg: &NodeConfig,
    zk: Option<&Arc<ZkCoordinator>>,
    layout: &ZkLayout,
) -> anyhow::Result<Option<crate::claim::NameClaim>> {
    let Some(zk) = zk else {
        return Ok(None);
    };
    let wait = Duration::from_millis(cfg.coordination.session_timeout_ms) + Duration::from_secs(2);
    if cfg.store.postgres.shared {
        let c = crate::claim::NameClaim::join(zk.clone(), layout, &cfg.name, cfg.http.listen, wait)
            .await?;
        tracing::info!(node = %cfg.name, instance = %c.instance, "joined the node's processes (shared PostgreSQL schema)");
        return Ok(Some(c));
    }
    let c =
        crate::claim::NameClaim::take(zk.clone(), layout, &cfg.name, cfg.http.listen, wait).await?;
    tracing::info!(node = %cfg.name, instance = %c.instance, "node name claimed");
    Ok(Some(c))
}

/// What started before the node state: the pipeline's running parts, the
/// coordinator and the name's claimed instance.
pub(super) struct Parts {
    pub(super) relay: Option<Arc<RelayStats>>,
    pub(super) reverse_relay: Option<Arc<RelayStats>>,
    pub(super) control: Option<mpsc::Sender<Control>>,
    pub(super) apply: Option<Arc<ApplyShared>>,
    pub(super) zk: Option<Arc<ZkCoordinator>>,
    pub(super) instance: Option<String>,
}

pub(super) fn node_state(
    cfg: &NodeConfig,
    store: &Arc<Store>,
    layout: &ZkLayout,
    parts: Parts,
    http: &HttpSetup,
    stop: &watch::Receiver<bool>,
) -> Arc<NodeState> {
    let Parts {
        relay,
        reverse_relay,
        control,
        apply,
        zk,
        instance,
    } = parts;
    let gate = Gate::new(
        zk.as_ref().map(|zk| ProxyRecord {
            zk: zk.clone(),
            dir: layout.node(&cfg.name),
        }),
        cfg.journal.apply.then(|| cfg.journal.topic.clone()),
    )
    .with_peer_token(http.auth.admin_token().cloned())
    .with_peer_ca(http.peer_ca.clone());
    let roles = Roles {
        source: cfg.journal.enabled,
        target: cfg.journal.apply,
    };
    Arc::new(NodeState {
        name: cfg.name.clone(),
        instance,
        shared: cfg.store.postgres.shared,
        store: store.clone(),
        kafka: kafka_settings(cfg),
        topic: cfg.journal.topic.clone(),
        relay,
        reverse_relay,
        reverse_apply: parking_lot::Mutex::new(None),
        apply,
        control,
        metrics: Arc::new(Metrics::new(&cfg.name, roles)),
        gate: Arc::new(gate),
        data_dir: cfg.data_dir.clone(),
        pg_view: super::open::pg_view(cfg),
        apply_batch: cfg.journal.apply_batch,
        schemas: crate::schema_registry::lookup(cfg),
        stop: stop.clone(),
        loader: parking_lot::Mutex::new(None),
        layout: layout.clone(),
        lag_probe: Arc::default(),
        zk,
        history: Default::default(),
        marker_gc: Default::default(),
        snapshot_gc: Default::default(),
        timelines: Default::default(),
        consumer_groups: (cfg.consumer_group("load"), cfg.consumer_group("reverse")),
        digest_jobs: Default::default(),
    })
}

/// The 2-second housekeeping tick and, when markers are retained, marker GC.
pub(super) fn start_housekeeping(
    cfg: &NodeConfig,
    state: &Arc<NodeState>,
    stop_rx: &watch::Receiver<bool>,
    tasks: &mut Tasks,
) {
    let (st, stop) = (state.clone(), stopped(stop_rx));
    tasks.push((
        "sampler",
        tokio::spawn(crate::housekeeping::sample_loop(st, stop)),
    ));
    if state.zk.is_some() && (cfg.journal.enabled || cfg.journal.apply) {
        let (st, stop) = (state.clone(), stopped(stop_rx));
        let every = Duration::from_secs(cfg.journal.snapshot_gc_interval_s);
        let keep = Duration::from_secs_f64(cfg.journal.snapshot_retention_hours * 3600.0);
        tasks.push((
            "snapshot-gc",
            tokio::spawn(crate::snapshot_gc::run(st, every, keep, stop)),
        ));
    }
    let retention_ms = cfg.marker_retention_ms();
    if retention_ms > 0 {
        let (st, stop) = (state.clone(), stopped(stop_rx));
        let every = Duration::from_secs(cfg.store.marker_gc_interval_s);
        tasks.push((
            "marker-gc",
            tokio::spawn(crate::marker_gc::gc_loop(st, every, retention_ms, stop)),
        ));
    }
}

/// Picks up where the node's routing stood: namespaces it forwards (and
/// the reverse journal it applies for them), namespaces it was promoted for.
pub(super) async fn resume_routing(cfg: &NodeConfig, state: &Arc<NodeState>) -> anyhow::Result<()> {
    let proxied = state.gate.load().await?;
    for (ns, target) in &proxied {
        tracing::warn!(namespace = %ns, %target, "namespace was migrated away: proxying it to its new primary");
    }
    if cfg.journal.apply {
        for ns in state.gate.promoted() {
            if let Ok(ns) = northwest_store::Namespace::new(&ns) {
                state.store.set_journaled(&ns, true);
            }
        }
    }
    // Before one history, a promoted target journaled to `<journal>.reverse`
    // and the old primary applied it from there: records still on that
    // topic would never be applied now.
    let legacy = format!("{}.reverse", cfg.journal.topic);
    let legacy_offsets = northwest_consumer::offsets::load(&state.store, &legacy)?;
    if proxied.is_empty() && !legacy_offsets.is_empty() {
        // Nothing forwarded: every cutover of that version was finished or
        // rolled back, its records applied. The offsets only mislead now.
        northwest_consumer::offsets::forget(&state.store, &legacy)?;
        tracing::info!(topic = %legacy, "forgot the offsets of the old reverse journal (nothing is forwarded)");
    } else if !legacy_offsets.is_empty() {
        anyhow::bail!(
            "this node forwards {:?} and applied its new primary's writes from {legacy} (a \
             version before one history per namespace): start the previous version, roll the \
             namespaces back or finish them, then upgrade",
            proxied.iter().map(|(ns, _)| ns).collect::<Vec<_>>()
        );
    }
    // Also after a rollback: records n2 took may still be on their way.
    let reverse_offsets = northwest_consumer::offsets::load(&state.store, &cfg.journal.topic)?;
    if cfg.journal.enabled && (!proxied.is_empty() || !reverse_offsets.is_empty()) {
        crate::migration_api::start_reverse_apply(state);
    }
    for problem in state.gate.proxy_problems() {
        tracing::error!("{problem}");
    }
    Ok(())
}

/// The relay (a source's), the reverse relay and the apply loop (a
/// target's), as the config asks.
pub(super) fn start_pipeline(
    cfg: &NodeConfig,
    store: &Arc<Store>,
    stop_rx: &watch::Receiver<bool>,
    tasks: &mut Tasks,
    zk: Option<Arc<ZkCoordinator>>,
    instance: Option<String>,
    confluent_id: Option<IdCell>,
) -> Parts {
    let mut relay_if = |on: bool| {
        on.then(|| {
            start_relay(
                cfg,
                relay_config(cfg, confluent_id.clone()),
                store,
                stop_rx,
                tasks,
            )
        })
    };
    let relay = relay_if(cfg.journal.enabled);
    // A target ships the writes of namespaces it is promoted for (none
    // until a cutover) to the journal topic too: one log holds a
    // namespace's whole history, whichever node served it.
    let reverse_relay = relay_if(cfg.journal.apply);
    let (control, apply) = start_apply(cfg, store, stop_rx, tasks);
    Parts {
        relay,
        reverse_relay,
        control,
        apply,
        zk,
        instance,
    }
}

/// How a relay ships to the journal topic (framed the Confluent way once
/// `confluent_id` holds the journal schema's registry id).
fn relay_config(cfg: &NodeConfig, confluent_id: Option<IdCell>) -> RelayConfig {
    RelayConfig {
        kafka: kafka_settings(cfg),
        topic: journal_topic(cfg),
        batch: 2000,
        max_in_flight: 20_000,
        coalesce: std::time::Duration::from_millis(cfg.journal.relay_coalesce_ms),
        confluent_id,
    }
}

/// The journal schema's registry id, once registration set it.
type IdCell = Arc<std::sync::OnceLock<u32>>;

/// The relay shipping the store's outbox: a source's journal, or a
/// target's (as a promoted primary).
fn start_relay(
    cfg: &NodeConfig,
    relay_cfg: RelayConfig,
    store: &Arc<Store>,
    stop: &watch::Receiver<bool>,
    tasks: &mut Tasks,
) -> Arc<RelayStats> {
    let stats = Arc::new(RelayStats::default());
    let stop = stop.clone();
    let (store, st) = (store.clone(), stats.clone());
    let brokers = cfg.journal.brokers.clone();
    tasks.push((
        "relay",
        tokio::spawn(async move {
            // The node serves while the broker is unreachable or the relay
            // failed: commits wait in the bounded outbox, the reason shows in
            // status, /readyz and the log, and the relay starts again.
            let mut attempt = 0u32;
            let mut unreachable = false;
            loop {
                let failed = match Relay::new(store.clone(), relay_cfg.clone(), st.clone()).await
                {
                    Ok(relay) => {
                        if attempt > 0 {
                            tracing::info!(%brokers, "journal relay started");
                        }
                        // The brokers answered: a "cannot reach" error is
                        // over, even with nothing to ship. An error from a
                        // failed run stays until the relay ships again.
                        if std::mem::take(&mut unreachable) {
                            *st.last_error.lock() = None;
                            store.outbox().set_error(None);
                        }
                        let ran = std::time::Instant::now();
                        match relay.run(stopped(&stop)).await {
                            Ok(()) => return Ok(()),
                            Err(e) => {
                                // A relay that ran a while failed anew: say so.
                                if ran.elapsed() > Duration::from_secs(30) {
                                    attempt = 0;
                                }
                                if attempt.is_multiple_of(15) {
                                    tracing::error!(error = %e, attempt, "journal relay stopped; starting it again every 2 s. Writes are kept in the outbox meanwhile; if this repeats, check the node's disk and the broker");
                                }
                                format!("journal relay stopped: {e}")
                            }
                        }
                    }
                    Err(e) => {
                        unreachable = true;
                        if attempt.is_multiple_of(15) {
                            tracing::warn!(attempt, error = %e, %brokers, "journal relay not started; retrying every 2 s (is the broker up? deploy/stack.sh status). Writes are kept in the outbox meanwhile");
                        }
                        format!("journal relay cannot reach the brokers at {brokers}: {e}")
                    }
                };
                attempt += 1;
                *st.last_error.lock() = Some(failed.clone());
                st.send_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                store.outbox().set_error(Some(failed));
                if *stop.borrow() {
                    return Ok(());
                }
                let mut s2 = stop.clone();
                tokio::select! {
                    _ = s2.wait_for(|s| *s) => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }),
    ));
    stats
}

/// The apply loop of a target node, and the channel its admin API drives it by.
fn start_apply(
    cfg: &NodeConfig,
    store: &Arc<Store>,
    stop: &watch::Receiver<bool>,
    tasks: &mut Tasks,
) -> (Option<mpsc::Sender<Control>>, Option<Arc<ApplyShared>>) {
    if !cfg.journal.apply {
        return (None, None);
    }
    let shared = Arc::new(ApplyShared::default());
    let (ctl_tx, ctl_rx) = mpsc::channel(8);
    let apply_cfg = ApplyConfig {
        dead_letter_topic: cfg.journal.dead_letter_topic.clone(),
        poison: match cfg.journal.poison_policy {
            crate::config::PoisonPolicy::DeadLetter => PoisonPolicy::DeadLetter,
            crate::config::PoisonPolicy::Halt => PoisonPolicy::Halt,
        },
        batch: cfg.journal.apply_batch,
        apply_log: cfg.journal.apply_log,
        schemas: crate::schema_registry::lookup(cfg),
        ..ApplyConfig::new(
            Source::Journal,
            kafka_settings(cfg),
            &cfg.journal.topic,
            &cfg.consumer_group("apply"),
        )
    };
    // Its own commits (as a promoted primary) come back through the topic.
    let apply_cfg = ApplyConfig {
        filter: Some(northwest_consumer::RecordFilter::not_from(&cfg.name)),
        ..apply_cfg
    };
    let (st, sh, stop) = (store.clone(), shared.clone(), stopped(stop));
    tasks.push((
        "apply",
        tokio::spawn(
            async move { Ok(northwest_consumer::run(st, apply_cfg, sh, ctl_rx, stop).await?) },
        ),
    ));
    (Some(ctl_tx), Some(shared))
}
