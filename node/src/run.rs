//! [`run`]: the long-running daemon of one deployment: the HTTP API,
//! and per its config the journal relay (source) or the apply loop (target),
//! metrics and the dashboard. Shutdown drains: the API finishes in-flight
//! requests, the relay its round, the apply loop its batch.

use std::future::Future;

use anyhow::Context;
use northwest_control::ZkLayout;
use tokio::sync::watch;

use crate::config::NodeConfig;
use open::open_store;
use serve::{app, serve, HttpSetup};
use start::{claim_name, node_state, resume_routing, start_housekeeping, start_pipeline};

pub use open::{journal_topic, kafka_settings, open_engine, store_config};

mod open;
mod serve;
mod start;

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
    let http = HttpSetup::load(&cfg)?;
    let (store, zk_client) = open_store(&cfg).await?;
    let layout = ZkLayout::new(cfg.coordination.root.clone());
    // Before anything acts under the name: relay, apply loop, records.
    let claim = claim_name(&cfg, zk_client.as_ref(), &layout).await?;
    let instance = claim.as_ref().map(|c| c.instance.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks: Tasks = Vec::new();
    // A Confluent-framed record names its schema's id: the relays wait
    // for it; registration runs beside the node.
    let confluent_id = crate::schema_registry::start(&cfg, stopped(&stop_rx));
    let parts = start_pipeline(
        &cfg,
        &store,
        &stop_rx,
        &mut tasks,
        zk_client,
        instance,
        confluent_id,
    );
    let state = node_state(&cfg, &store, &layout, parts, &http, &stop_rx);
    start_housekeeping(&cfg, &state, &stop_rx, &mut tasks);
    resume_routing(&cfg, &state).await?;
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("binding {} (another node on that port?)", cfg.http.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        node = %cfg.name, %addr, role = state.role(), engine = store.engine().name(),
        coordination = %store.coordinator().describe(), tls = http.tls.is_some(), "node serving"
    );
    let app = app(&cfg, &state, http.auth.clone());
    if let Some(tx) = ready {
        let _ = tx.send(addr);
    }
    let server = serve(listener, app, http.tls, stopped(&stop_rx))?;
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
