//! `northwest node`: the long-running daemon of one deployment: the HTTP API,
//! and per its config the journal relay (source) or the apply loop (target),
//! metrics and the dashboard. Shutdown drains: the API finishes in-flight
//! requests, the relay its round, the apply loop its batch.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::Request;
use axum::middleware::Next;
use northwest_consumer::{ApplyConfig, ApplyShared, PoisonPolicy};
use northwest_producer::{KafkaSettings, Relay, RelayConfig, RelayStats, TopicSpec};
use northwest_store::{
    Coordinator, Engine, LocalCoordinator, MemEngine, OutboxFullPolicy, RetryPolicy, RocksEngine,
    Store, StoreConfig, ZkCoordinator,
};
use tokio::sync::watch;

use crate::admin::NodeState;
use crate::api::{router, ApiState};
use crate::config::{CoordinationMode, Durability, EngineKind, NodeConfig, OutboxFull};
use crate::telemetry::Metrics;

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
        sync_journal: (cfg.journal.enabled && cfg.journal.durability == Durability::Sync)
            .then(|| Duration::from_secs(10)),
    }
}

pub fn kafka_settings(cfg: &NodeConfig) -> KafkaSettings {
    KafkaSettings {
        brokers: cfg.journal.brokers.clone(),
        properties: cfg.kafka.clone(),
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
        ],
    }
}

/// Runs the node until `shutdown` resolves, then drains.
/// `ready` receives the bound address once the API is listening.
pub async fn run(
    cfg: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
) -> anyhow::Result<()> {
    cfg.validate().map_err(anyhow::Error::msg)?;
    let engine = open_engine(&cfg)?;
    let (coord, zk_client): (Arc<dyn Coordinator>, _) = match cfg.coordination.mode {
        CoordinationMode::Local => (Arc::new(LocalCoordinator::default()), None),
        CoordinationMode::Zookeeper => {
            let z = ZkCoordinator::connect(cfg.zk()).await?;
            let client = z.client();
            (Arc::new(z), Some(client))
        }
    };
    let store = Store::open(engine, coord, store_config(&cfg))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_rx_for_state = stop_rx.clone();
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let kafka = kafka_settings(&cfg);
    let metrics = Arc::new(Metrics::new(&cfg.name));
    let mut tasks: Vec<(&str, tokio::task::JoinHandle<anyhow::Result<()>>)> = Vec::new();

    let relay = if cfg.journal.enabled {
        let stats = Arc::new(RelayStats::default());
        let relay_cfg = RelayConfig {
            kafka: kafka.clone(),
            topic: journal_topic(&cfg),
            batch: 2000,
            max_in_flight: 20_000,
        };
        let relay = Relay::new(store.clone(), relay_cfg, stats.clone())
            .await
            .with_context(|| {
                format!(
                    "journal relay to {} (is the broker up? deploy/stack.sh up)",
                    cfg.journal.brokers
                )
            })?;
        let stop = stopped();
        tasks.push((
            "relay",
            tokio::spawn(async move { Ok(relay.run(stop).await?) }),
        ));
        Some(stats)
    } else {
        None
    };

    let (control, apply) = if cfg.journal.apply {
        let shared = Arc::new(ApplyShared::default());
        let (ctl_tx, ctl_rx) = tokio::sync::mpsc::channel(8);
        let apply_cfg = ApplyConfig {
            source: northwest_consumer::Source::Journal,
            kafka: kafka.clone(),
            topic: cfg.journal.topic.clone(),
            dead_letter_topic: cfg.journal.dead_letter_topic.clone(),
            poison: match cfg.journal.poison_policy {
                crate::config::PoisonPolicy::DeadLetter => PoisonPolicy::DeadLetter,
                crate::config::PoisonPolicy::Halt => PoisonPolicy::Halt,
            },
            batch: cfg.journal.apply_batch,
            linger: Duration::from_millis(2),
            apply_log: cfg.journal.apply_log,
            group_id: format!("northwest-apply-{}", cfg.name),
        };
        let (st, sh, stop) = (store.clone(), shared.clone(), stopped());
        tasks.push((
            "apply",
            tokio::spawn(async move {
                Ok(northwest_consumer::run(st, apply_cfg, sh, ctl_rx, stop).await?)
            }),
        ));
        (Some(ctl_tx), Some(shared))
    } else {
        (None, None)
    };

    let state = Arc::new(NodeState {
        name: cfg.name.clone(),
        store: store.clone(),
        kafka,
        topic: cfg.journal.topic.clone(),
        relay,
        apply,
        control,
        metrics: metrics.clone(),
        gate: Arc::new(crate::cutover::Gate::default()),
        data_dir: cfg.data_dir.clone(),
        apply_batch: cfg.journal.apply_batch,
        stop: stop_rx_for_state,
        loader: parking_lot::Mutex::new(None),
        zk_root: cfg.coordination.root.clone(),
        lag_probe: Arc::default(),
    });
    if state.apply.is_some() {
        let (st, stop) = (state.clone(), stopped());
        tasks.push(("lag-probe", tokio::spawn(async move {
            tokio::pin!(stop);
            loop {
                if let Ok(l) = st.lag().await {
                    st.metrics.observe_lag(&l);
                }
                tokio::select! { _ = &mut stop => return Ok(()), _ = tokio::time::sleep(Duration::from_secs(5)) => {} }
            }
        })));
    }

    if let Some(client) = &zk_client {
        if let Some(primary) = routed_elsewhere(client, &cfg).await {
            tracing::warn!(%primary, "routing record names a new primary replacing this node: serving as a data proxy");
            state.gate.set_proxy(Some(primary));
        }
    }
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| {
            format!(
                "binding {} (is another node on that port? change http.listen)",
                cfg.http.listen
            )
        })?;
    let addr = listener.local_addr()?;
    tracing::info!(
        node = %cfg.name, %addr, role = state.role(), engine = store.engine().name(),
        coordination = %store.coordinator().describe(), "node serving"
    );
    let m = metrics.clone();
    let app = router(ApiState {
        store: store.clone(),
        max_value_bytes: cfg.http.max_value_bytes,
    })
    .layer(axum::middleware::from_fn_with_state(
        state.gate.clone(),
        crate::cutover::gate_layer,
    ))
    .merge(crate::admin::router(state.clone()))
    .merge(crate::migration_api::router(state.clone()))
    .layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let m = m.clone();
            async move {
                let method = req.method().clone();
                let resp = next.run(req).await;
                m.http_request(method.as_str(), resp.status().as_u16());
                resp
            }
        },
    ));
    if let Some(tx) = ready {
        let _ = tx.send(addr);
    }
    let stop = stopped();
    let server = axum::serve(listener, app).with_graceful_shutdown(stop);
    let server = tokio::spawn(async move { server.await });
    shutdown.await;
    tracing::info!(node = %cfg.name, "draining");
    let _ = stop_tx.send(true);
    let mut result = server
        .await
        .context("HTTP server task")?
        .context("HTTP server");
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
    tracing::info!(node = %cfg.name, "node stopped");
    result
}

/// The new primary's URL if the routing record (written at a migration's
/// switch) says this node was replaced.
async fn routed_elsewhere(client: &zookeeper_client::Client, cfg: &NodeConfig) -> Option<String> {
    let (data, _) = client
        .get_data(&format!("{}/routing/primary", cfg.coordination.root))
        .await
        .ok()?;
    let rec: serde_json::Value = serde_json::from_slice(&data).ok()?;
    let me = format!("http://{}", cfg.http.listen);
    (rec["replaces"].as_str() == Some(me.as_str()))
        .then(|| rec["primary"].as_str().map(str::to_string))
        .flatten()
}
