//! [`run`]: the long-running daemon of one deployment: the HTTP API,
//! and per its config the journal relay (source) or the apply loop (target),
//! metrics and the dashboard. Shutdown drains: the API finishes in-flight
//! requests, the relay its round, the apply loop its batch.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::IntoResponse;
use northwest_consumer::{ApplyConfig, ApplyShared, Control, PoisonPolicy, Source};
use northwest_control::client::read_ca_bundle;
use northwest_control::{ErrorCode, ZkLayout};
use northwest_kafka::{KafkaSettings, TopicSpec};
use northwest_producer::{Relay, RelayConfig, RelayStats};
use northwest_store::{
    Coordinator, Engine, LocalCoordinator, MemEngine, OutboxFullPolicy, RetryPolicy, RocksEngine,
    Store, StoreConfig, ZkCoordinator,
};
use tokio::sync::{mpsc, watch};

use crate::api::{router, ApiState};
use crate::config::{CoordinationMode, Durability, EngineKind, NodeConfig, OutboxFull};
use crate::cutover::{Gate, ProxyRecord};
use crate::state::NodeState;
use crate::telemetry::{Metrics, Roles};
use crate::topics::reverse_topic_name;

/// Opens the engine named by the config.
pub fn open_engine(cfg: &NodeConfig) -> anyhow::Result<Arc<dyn Engine>> {
    Ok(match cfg.store.engine {
        EngineKind::Memory => Arc::new(MemEngine::new()),
        EngineKind::Rocksdb => Arc::new(
            RocksEngine::open(&cfg.data_dir, cfg.store.sync_writes).with_context(|| {
                format!(
                    "opening RocksDB under {} (is another node using it?)",
                    cfg.data_dir.display()
                )
            })?,
        ),
    })
}

pub fn store_config(cfg: &NodeConfig) -> StoreConfig {
    StoreConfig {
        origin: cfg.name.clone(),
        max_value_bytes: cfg.http.max_value_bytes,
        journal: cfg.journal.enabled,
        outbox_limit: cfg.journal.outbox_limit,
        outbox_full: match cfg.journal.outbox_full {
            OutboxFull::Reject => OutboxFullPolicy::Reject,
            OutboxFull::Block => OutboxFullPolicy::Block,
        },
        id_block: cfg.store.id_block,
        retry: RetryPolicy {
            attempts: cfg.store.retries,
            ..RetryPolicy::default()
        },
        // Also on a target: once promoted it journals the namespace's client
        // writes (to the reverse journal) and acknowledges them under the
        // same promise.
        sync_journal: (cfg.journal.durability == Durability::Sync).then(|| Duration::from_secs(10)),
        journal_message_limit: cfg.journal.max_message_bytes,
        read_cache_bytes: cfg.store.read_cache_mb << 20,
    }
}

pub fn kafka_settings(cfg: &NodeConfig) -> KafkaSettings {
    KafkaSettings {
        brokers: cfg.journal.brokers.clone(),
        properties: cfg.kafka.clone(),
        max_message_bytes: cfg.journal.max_message_bytes,
    }
}

pub fn journal_topic(cfg: &NodeConfig) -> TopicSpec {
    TopicSpec {
        name: cfg.journal.topic.clone(),
        partitions: cfg.journal.partitions,
        replication: cfg.journal.replication_factor,
        configs: vec![
            ("cleanup.policy".into(), "delete".into()),
            ("retention.ms".into(), cfg.journal.retention_ms.to_string()),
            // acks=all then needs all but one replica: one broker may fail
            // without stopping the journal or losing an acknowledged record.
            (
                "min.insync.replicas".into(),
                (cfg.journal.replication_factor - 1).max(1).to_string(),
            ),
        ],
    }
}

/// The store over the configured engine and coordinator (and the ZooKeeper
/// client the cutover gate records its state with), after checking the
/// pass-through Kafka properties.
async fn open_store(cfg: &NodeConfig) -> anyhow::Result<(Arc<Store>, Option<Arc<ZkCoordinator>>)> {
    let engine = open_engine(cfg)?;
    let (coord, zk): (Arc<dyn Coordinator>, _) = match cfg.coordination.mode {
        CoordinationMode::Local => (Arc::new(LocalCoordinator::default()), None),
        CoordinationMode::Zookeeper => {
            let mut zc = cfg.zk();
            if let Some(f) = &cfg.coordination.auth_file {
                let text = crate::secrets::read_secret_file(f, "coordination.auth_file")
                    .map_err(anyhow::Error::msg)?;
                zc.auth = northwest_store::ZkDigest::new(text.trim())
                    .map_err(|e| anyhow::anyhow!("coordination.auth_file {}: {e}", f.display()))?;
            }
            let z = Arc::new(ZkCoordinator::connect(zc).await?);
            (z.clone(), Some(z))
        }
    };
    northwest_kafka::check_properties(&kafka_settings(cfg)).map_err(|e| {
        anyhow::anyhow!(
            "[kafka] properties: {e}; fix or remove them (see librdkafka's CONFIGURATION.md)"
        )
    })?;
    Ok((Store::open(engine, coord, store_config(cfg))?, zk))
}

type Tasks = Vec<(&'static str, tokio::task::JoinHandle<anyhow::Result<()>>)>;

/// Resolves once the node's stop flag flips.
fn stopped(rx: &watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut rx = rx.clone();
    async move {
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// Runs the node until `shutdown` resolves, then drains.
/// `ready` receives the bound address once the API is listening.
pub async fn run(
    cfg: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
) -> anyhow::Result<()> {
    let mut cfg = cfg;
    cfg.validate().map_err(anyhow::Error::msg)?;
    cfg.merge_kafka_properties_file()
        .map_err(anyhow::Error::msg)?;
    let auth = Arc::new(crate::auth::Auth::load(&cfg.http).map_err(anyhow::Error::msg)?);
    let tls = match (&cfg.http.tls_cert_file, &cfg.http.tls_key_file) {
        (Some(cert), Some(key)) => {
            Some(crate::tls::server_config(cert, key).map_err(anyhow::Error::msg)?)
        }
        _ => None,
    };
    let peer_ca = match &cfg.http.tls_ca_file {
        Some(p) => read_ca_bundle(p, "http.tls_ca_file").map_err(anyhow::Error::msg)?,
        None => Vec::new(),
    };
    if tls.is_none() && !cfg.http.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %cfg.http.listen,
            "serving plain HTTP to other hosts: tokens and data cross the network in clear; \
             set http.tls_cert_file and http.tls_key_file (or terminate TLS in front of the node)"
        );
    }
    let (store, zk_client) = open_store(&cfg).await?;
    let layout = ZkLayout::new(cfg.coordination.root.clone());
    // Before anything acts under the name: relay, apply loop, records.
    let claim = match &zk_client {
        Some(zk) => {
            let wait =
                Duration::from_millis(cfg.coordination.session_timeout_ms) + Duration::from_secs(2);
            let c = crate::claim::NameClaim::take(
                zk.clone(),
                &layout,
                &cfg.name,
                cfg.http.listen,
                wait,
            )
            .await?;
            tracing::info!(node = %cfg.name, instance = %c.instance, "node name claimed");
            Some(c)
        }
        None => None,
    };
    let instance = claim.as_ref().map(|c| c.instance.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks: Tasks = Vec::new();
    let relay = cfg
        .journal
        .enabled
        .then(|| start_relay(&cfg, journal_topic(&cfg), &store, &stop_rx, &mut tasks));
    // A target ships the writes of namespaces it is promoted for (none
    // until a cutover) to the reverse journal.
    let reverse_relay = cfg.journal.apply.then(|| {
        let mut spec = journal_topic(&cfg);
        spec.name = reverse_topic_name(&cfg.journal.topic);
        start_relay(&cfg, spec, &store, &stop_rx, &mut tasks)
    });
    let (control, apply) = start_apply(&cfg, &store, &stop_rx, &mut tasks);
    let state = Arc::new(NodeState {
        name: cfg.name.clone(),
        instance,
        store: store.clone(),
        kafka: kafka_settings(&cfg),
        topic: cfg.journal.topic.clone(),
        relay,
        reverse_relay,
        reverse_apply: parking_lot::Mutex::new(None),
        apply,
        control,
        metrics: Arc::new(Metrics::new(
            &cfg.name,
            Roles {
                source: cfg.journal.enabled,
                target: cfg.journal.apply,
            },
        )),
        gate: Arc::new(
            Gate::new(
                zk_client.as_ref().map(|zk| ProxyRecord {
                    zk: zk.clone(),
                    dir: layout.node(&cfg.name),
                }),
                cfg.journal.apply.then(|| cfg.journal.topic.clone()),
            )
            .with_peer_token(auth.admin_token().cloned())
            .with_peer_ca(peer_ca),
        ),
        data_dir: cfg.data_dir.clone(),
        apply_batch: cfg.journal.apply_batch,
        stop: stop_rx.clone(),
        loader: parking_lot::Mutex::new(None),
        layout: layout.clone(),
        lag_probe: Arc::default(),
        zk: zk_client.clone(),
        history: Default::default(),
        marker_gc: Default::default(),
    });
    let (st, stop) = (state.clone(), stopped(&stop_rx));
    tasks.push((
        "sampler",
        tokio::spawn(crate::housekeeping::sample_loop(st, stop)),
    ));
    let retention_ms = cfg.marker_retention_ms();
    if retention_ms > 0 {
        let (st, stop) = (state.clone(), stopped(&stop_rx));
        let every = Duration::from_secs(cfg.store.marker_gc_interval_s);
        tasks.push((
            "marker-gc",
            tokio::spawn(crate::marker_gc::gc_loop(st, every, retention_ms, stop)),
        ));
    }
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
    // Also after a rollback: records n2 took may still be on their way.
    let reverse_offsets =
        northwest_consumer::offsets::load(&store, &reverse_topic_name(&cfg.journal.topic))?;
    if cfg.journal.enabled && (!proxied.is_empty() || !reverse_offsets.is_empty()) {
        crate::migration_api::start_reverse_apply(&state);
    }
    for problem in state.gate.proxy_problems() {
        tracing::error!("{problem}");
    }
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("binding {} (another node on that port?)", cfg.http.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        node = %cfg.name, %addr, role = state.role(), engine = store.engine().name(),
        coordination = %store.coordinator().describe(), tls = tls.is_some(), "node serving"
    );
    let app = app(&cfg, &state, auth);
    if let Some(tx) = ready {
        let _ = tx.send(addr);
    }
    let stop = stopped(&stop_rx);
    let server = match tls {
        Some(tls) => {
            let listener = crate::tls::TlsListener::new(listener, tls)?;
            let server = axum::serve(listener, app).with_graceful_shutdown(stop);
            tokio::spawn(async move { server.await })
        }
        None => {
            let server = axum::serve(listener, app).with_graceful_shutdown(stop);
            tokio::spawn(async move { server.await })
        }
    };
    let lost_claim = async move {
        match claim {
            Some(c) => c.keep().await,
            None => std::future::pending().await,
        }
    };
    let lost = tokio::select! {
        _ = shutdown => None,
        why = lost_claim => {
            tracing::error!(node = %cfg.name, "{why}");
            state.gate.retire(why.clone());
            Some(why)
        }
    };
    tracing::info!(node = %cfg.name, "draining");
    let _ = stop_tx.send(true);
    let result = server
        .await
        .context("HTTP server task")?
        .context("HTTP server");
    let result = join_tasks(tasks, result).await;
    // Another instance now acts under the name: its report is not ours.
    if lost.is_none() {
        crate::marker_gc::report_retired(&state).await;
    }
    tracing::info!(node = %cfg.name, "node stopped");
    match lost {
        Some(why) => Err(anyhow::anyhow!(why)),
        None => result,
    }
}

/// The relay shipping the store's outbox to `topic`: a source's journal, or
/// a target's reverse journal.
fn start_relay(
    cfg: &NodeConfig,
    topic: TopicSpec,
    store: &Arc<Store>,
    stop: &watch::Receiver<bool>,
    tasks: &mut Tasks,
) -> Arc<RelayStats> {
    let stats = Arc::new(RelayStats::default());
    let relay_cfg = RelayConfig {
        kafka: kafka_settings(cfg),
        topic,
        batch: 2000,
        max_in_flight: 20_000,
    };
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
        ..ApplyConfig::new(
            Source::Journal,
            kafka_settings(cfg),
            &cfg.journal.topic,
            &format!("northwest-apply-{}", cfg.name),
        )
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

/// The data API and digest behind the cutover gate, the admin and migration APIs, and
/// request metrics around all of them.
fn app(cfg: &NodeConfig, state: &Arc<NodeState>, auth: Arc<crate::auth::Auth>) -> axum::Router {
    let m = state.metrics.clone();
    router(ApiState {
        store: state.store.clone(),
        max_value_bytes: cfg.http.max_value_bytes,
    })
    // The digest (an admin route) sits behind the gate too: a proxied
    // namespace's digest is the target's, never n1's stale local copy.
    .merge(crate::admin::router(state.clone()))
    .layer(axum::middleware::from_fn_with_state(
        state.gate.clone(),
        crate::cutover::gate_layer,
    ))
    .merge(crate::migration_api::router(state.clone()))
    .method_not_allowed_fallback(|| async {
        crate::api::ApiError {
            status: axum::http::StatusCode::METHOD_NOT_ALLOWED,
            code: ErrorCode::MethodNotAllowed,
            message: "method not allowed on this path; the Allow header lists the methods".into(),
        }
    })
    // Before the gate: a proxied namespace's caller is checked here too.
    .layer(axum::middleware::from_fn_with_state(
        auth,
        crate::auth::layer,
    ))
    .layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let m = m.clone();
            async move {
                let method = req.method().clone();
                let route = req
                    .extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map_or("unmatched", |p| p.as_str())
                    .to_string();
                let started = std::time::Instant::now();
                let resp = match uri_too_long(&req).or_else(|| dot_segments(&req)) {
                    Some(e) => e.into_response(),
                    None => {
                        // Tests slow the data API down with this point.
                        if route.starts_with("/v1/ns/") {
                            northwest_store::failpoint::hit("http::data_request");
                        }
                        next.run(req).await
                    }
                };
                let secs = started.elapsed().as_secs_f64();
                m.http_request(method.as_str(), &route, resp.status().as_u16(), secs);
                resp
            }
        },
    ))
}

/// Longest request target served. Keys and namespaces are far shorter; hyper
/// itself answers URIs over 64 KiB with a bare 414 before any handler runs.
pub const MAX_URI_BYTES: usize = 8 * 1024;

fn uri_too_long(req: &Request) -> Option<crate::api::ApiError> {
    let len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    (len > MAX_URI_BYTES).then(|| crate::api::ApiError {
        status: axum::http::StatusCode::URI_TOO_LONG,
        code: ErrorCode::UriTooLong,
        message: format!("request URI of {len} bytes; the limit is {MAX_URI_BYTES}"),
    })
}

/// A path with `.` or `..` segments (also percent-encoded) or a backslash:
/// neither hyper nor axum normalises them, so the auth layer and the router
/// would judge one path while a URL parser further on (the proxy's client)
/// resolves another (`/v1/ns/app/e/../../../admin/promote`). No valid key,
/// namespace or route has such a segment.
fn dot_segments(req: &Request) -> Option<crate::api::ApiError> {
    let path = req.uri().path();
    let bad = path.contains('\\')
        || path.split('/').any(|seg| {
            let s = seg.to_ascii_lowercase().replace("%2e", ".");
            s == "." || s == ".."
        });
    bad.then(|| crate::api::ApiError {
        status: axum::http::StatusCode::BAD_REQUEST,
        code: ErrorCode::BadPath,
        message: "the path has '.' or '..' segments or a backslash; send it normalised".into(),
    })
}

/// Waits for the pipeline tasks after the server stopped; the first error wins.
async fn join_tasks(tasks: Tasks, mut result: anyhow::Result<()>) -> anyhow::Result<()> {
    for (name, t) in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(task = name, error = %e, "pipeline task failed");
                result = result.and(Err(e.context(name)));
            }
            Err(e) => result = result.and(Err(anyhow::anyhow!("{name} task panicked: {e}"))),
        }
    }
    result
}
