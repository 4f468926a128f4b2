//! What every part of a running node reads: [`NodeState`] (the store, the
//! pipeline's shared counters, the cutover gate, the coordination client)
//! and the snapshot [`Loader`], with the lag and broker probes over them.

use std::sync::Arc;

use northwest_consumer::{offsets, ApplyShared, Control, LagProbe, PartitionLag};
use northwest_control::ZkLayout;
use northwest_kafka::KafkaSettings;
use northwest_producer::RelayStats;
use northwest_store::Store;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::cutover::Gate;
use crate::history::History;
use crate::telemetry::Metrics;

/// Everything a running node's endpoints and background tasks read.
pub struct NodeState {
    pub name: String,
    /// This process's claim on the name (ZooKeeper coordination only).
    pub instance: Option<String>,
    /// One of several processes sharing the node's PostgreSQL schema
    /// (`store.postgres.shared`): what acts on one process only (fences,
    /// proxies, promotion, loaders) is refused.
    pub shared: bool,
    pub store: Arc<Store>,
    pub kafka: KafkaSettings,
    pub topic: String,
    pub relay: Option<Arc<RelayStats>>,
    /// On a target: the relay of its reverse journal (client writes to the
    /// namespaces it was promoted for, shipped for the old primary).
    pub reverse_relay: Option<Arc<RelayStats>>,
    /// On a source: the loop applying the reverse journal once it forwards
    /// a namespace (started at the cutover, or at start when it forwards).
    pub reverse_apply: parking_lot::Mutex<Option<Arc<ApplyShared>>>,
    pub apply: Option<Arc<ApplyShared>>,
    pub control: Option<mpsc::Sender<Control>>,
    pub metrics: Arc<Metrics>,
    pub gate: Arc<Gate>,
    pub data_dir: std::path::PathBuf,
    /// A PostgreSQL node's tables, for the snapshotter (None: RocksDB or
    /// memory, whose view is a checkpoint under `data_dir`).
    pub pg_view: Option<northwest_control::api::PgView>,
    pub apply_batch: usize,
    /// The schema registry the apply loops ask for ids they have not learnt.
    pub schemas: Option<northwest_consumer::SchemaLookup>,
    /// Flips to true when the node shuts down.
    pub stop: tokio::sync::watch::Receiver<bool>,
    pub loader: parking_lot::Mutex<Option<Loader>>,
    /// Where the deployment keeps its control-plane state in ZooKeeper.
    pub layout: ZkLayout,
    /// One broker client for every lag probe (created on first use).
    pub lag_probe: Arc<parking_lot::Mutex<Option<LagProbe>>>,
    /// Where migrations record their state (None: local coordination).
    pub zk: Option<Arc<northwest_store::ZkCoordinator>>,
    /// The dashboard's time series.
    pub history: History,
    /// What the last marker GC pass found (status `marker_gc`).
    pub marker_gc: parking_lot::Mutex<Value>,
    /// What snapshot topic GC did last (status `snapshot_gc`; `None`: the
    /// node runs none).
    pub snapshot_gc: parking_lot::Mutex<Option<northwest_control::status::SnapshotGcStatus>>,
    /// Every namespace's timeline as housekeeping last read it from
    /// ZooKeeper (status reads this copy: a drain polls status every few
    /// milliseconds under a fence).
    pub timelines: parking_lot::Mutex<Option<Result<Vec<northwest_control::Timeline>, String>>>,
    /// The Kafka consumer groups of the snapshot loader and the reverse
    /// apply (named after the deployment and the node).
    pub consumer_groups: (String, String),
    /// Digests running or finished from store snapshots.
    pub digest_jobs: crate::digest_jobs::DigestJobs,
}

/// The snapshot loader started by the orchestrator on a target node.
pub struct Loader {
    pub topic: String,
    pub shared: Arc<ApplyShared>,
    pub _control: mpsc::Sender<Control>,
    pub stop: tokio::sync::watch::Sender<bool>,
    /// When it started: one that has found no partition for long (its
    /// topic never appeared) stops blocking marker GC.
    pub started: std::time::Instant,
}

impl NodeState {
    pub fn role(&self) -> &'static str {
        match (self.relay.is_some(), self.apply.is_some()) {
            (true, _) => "source",
            (_, true) => "target",
            _ => "standalone",
        }
    }

    /// Probes journal lag now (blocking Kafka calls run on a blocking thread).
    pub async fn lag(&self) -> Result<Vec<PartitionLag>, String> {
        let Some(apply) = &self.apply else {
            return Ok(Vec::new());
        };
        self.lag_of(&self.topic.clone(), apply).await
    }

    /// Whether the broker serves the journal topic now (a source's
    /// readiness: an idle relay would not notice a dead broker).
    pub async fn broker_reachable(&self) -> Result<(), String> {
        let (kafka, topic, probe) = (
            self.kafka.clone(),
            self.topic.clone(),
            self.lag_probe.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let mut probe = probe.lock();
            if probe.is_none() {
                *probe = Some(LagProbe::new(&kafka)?);
            }
            probe.as_ref().expect("just created").reachable(&topic)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("the broker does not serve {}: {e}", self.topic))
    }

    /// Probes the lag of any applied topic.
    pub async fn lag_of(
        &self,
        topic: &str,
        apply: &ApplyShared,
    ) -> Result<Vec<PartitionLag>, String> {
        let stored = offsets::load(&self.store, topic).map_err(|e| e.to_string())?;
        let partitions = apply.partitions.lock().len() as i32;
        if partitions == 0 {
            return Ok(Vec::new());
        }
        let (kafka, topic) = (self.kafka.clone(), topic.to_string());
        let now = northwest_store::store::now_ms_pub();
        let probe = self.lag_probe.clone();
        tokio::task::spawn_blocking(move || {
            let mut probe = probe.lock();
            if probe.is_none() {
                *probe = Some(LagProbe::new(&kafka)?);
            }
            probe
                .as_ref()
                .expect("just created")
                .probe(&topic, &stored, partitions, now)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("lag probe: {e}"))
    }
}
