//! The orchestrator's connections: the nodes' admin API over HTTP, the
//! migration record in ZooKeeper, and one broker client for high-water marks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use northwest_control::api::{
    self, DigestResponse, FenceRequest, FenceResponse, NamespaceRequest, NodeStatus,
    OffsetsResponse, PromoteRequest, PromoteResponse, ProxyRequest, ProxyResponse, UnfenceResponse,
    UnproxyRequest,
};
use northwest_control::{AdminClient, AdminError, MigrationRecord, RoutingRecord, ZkLayout};
use northwest_kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use zookeeper_client as zk;

use crate::args::MigrateArgs;
use crate::error::RecordError;

/// Warns on stderr about a secrets file every user can read.
pub(crate) fn warn_if_world_readable(path: &std::path::Path) {
    if northwest_control::client::world_readable(path) {
        eprintln!(
            "warning: {} is readable by every user on this machine; chmod o-r it",
            path.display()
        );
    }
}

pub(crate) struct Ctx {
    pub(crate) a: MigrateArgs,
    pub(crate) admin: AdminClient,
    pub(crate) zk: zk::Client,
    /// The migration record's path.
    pub(crate) path: String,
    pub(crate) layout: ZkLayout,
    pub(crate) kafka: KafkaSettings,
    /// One client for high-water marks: creating one per drain check costs
    /// a bootstrap round trip inside the cutover pause.
    pub(crate) hw: Arc<BaseConsumer>,
    /// The state znode's version as last read or written: every save is
    /// conditional on it, so two orchestrators can never interleave writes.
    pub(crate) version: std::sync::Mutex<Option<i32>>,
    /// ACLs of every znode the orchestrator creates (the deployment's
    /// credentials, or open without them).
    pub(crate) acls: zk::Acls<'static>,
}

/// The orchestrator's connections, for the deployment `status` (a node's
/// `/v1/admin/status`) belongs to: its ZooKeeper root, the broker (with
/// the node's message limit) and the admin API.
impl Ctx {
    pub(crate) async fn connect(
        a: &MigrateArgs,
        admin: AdminClient,
        status: &NodeStatus,
    ) -> anyhow::Result<Ctx> {
        let layout = ZkLayout::new(status.zk_root.clone());
        let digest = zk_digest(a.zk_auth_file.as_deref())?;
        let zk = digest
            .connector()
            .with_session_timeout(Duration::from_secs(10))
            .connect(&a.zk)
            .await
            .with_context(|| format!("ZooKeeper at {}", a.zk))?;
        let path = layout.migration(&a.namespace);
        let mut kafka = KafkaSettings::new(&a.brokers);
        if let Some(p) = &a.kafka_config {
            warn_if_world_readable(p);
            kafka.properties = northwest_kafka::read_properties_file(p)
                .map_err(|e| anyhow::anyhow!("--kafka-config {e}"))?;
            northwest_kafka::check_properties(&kafka)
                .with_context(|| format!("--kafka-config {}", p.display()))?;
        }
        // Snapshot rows are as large as n1's values: the same limits as its journal.
        kafka.max_message_bytes = status.max_message_bytes;
        let hw: BaseConsumer = kafka
            .client_config(&[("group.id", "northwest-migrate")])
            .create()?;
        Ok(Ctx {
            a: a.clone(),
            admin,
            zk,
            path,
            layout,
            kafka,
            hw: Arc::new(hw),
            version: std::sync::Mutex::new(None),
            acls: digest.acls(),
        })
    }
}

/// The deployment's ZooKeeper credentials from `--zk-auth-file` (none
/// without one).
pub(crate) fn zk_digest(
    file: Option<&std::path::Path>,
) -> anyhow::Result<northwest_store::ZkDigest> {
    let Some(f) = file else {
        return Ok(northwest_store::ZkDigest::default());
    };
    let text =
        std::fs::read_to_string(f).with_context(|| format!("--zk-auth-file {}", f.display()))?;
    warn_if_world_readable(f);
    northwest_store::ZkDigest::new(text.trim())
        .map_err(|e| anyhow!("--zk-auth-file {}: {e}", f.display()))
}

impl Ctx {
    pub(crate) async fn status(&self, node: &str) -> Result<NodeStatus, AdminError> {
        self.admin.status(node).await
    }

    /// Whether `node` holds at least one live entity of the namespace (one
    /// row of its scan; the admin token may read every namespace); `None`
    /// when the node refuses this run's token the data API (data tokens
    /// with an open admin plane).
    pub(crate) async fn holds_entities(&self, node: &str) -> Result<Option<bool>, AdminError> {
        let path = format!("/v1/ns/{}/scan?limit=1", self.a.namespace);
        match self.admin.get::<Vec<serde_json::Value>>(node, &path).await {
            Ok(rows) => Ok(Some(!rows.is_empty())),
            Err(AdminError::Unauthorized { .. }) => Ok(None),
            Err(AdminError::Refused { status: 403, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `topic`'s high-water marks now (a blocking Kafka query, run off the
    /// runtime's workers).
    pub(crate) async fn marks(&self, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
        let (c, t) = (self.hw.clone(), topic.to_string());
        tokio::task::spawn_blocking(move || high_watermarks(&c, &t)).await?
    }

    /// `node`'s outbox marks (cheap: no Kafka round trip).
    pub(crate) async fn outbox(&self, node: &str) -> Result<api::OutboxStatus, AdminError> {
        self.admin.outbox(node).await
    }

    pub(crate) async fn offsets(&self, node: &str) -> Result<OffsetsResponse, AdminError> {
        self.admin.get(node, api::path::OFFSETS).await
    }

    /// `node`'s digest of the namespace; `local`: its own copy even while it
    /// forwards the namespace.
    pub(crate) async fn digest(
        &self,
        node: &str,
        local: bool,
    ) -> Result<DigestResponse, AdminError> {
        let path = api::path::digest(&self.a.namespace, local);
        self.admin.get(node, &path).await
    }

    pub(crate) async fn fence(&self, node: &str, max_ms: u64) -> Result<FenceResponse, AdminError> {
        let req = FenceRequest {
            namespace: self.a.namespace.clone(),
            max_ms,
        };
        self.admin.post(node, api::path::FENCE, &req).await
    }

    pub(crate) async fn unfence(&self, node: &str) -> Result<UnfenceResponse, AdminError> {
        let req = NamespaceRequest {
            namespace: self.a.namespace.clone(),
        };
        self.admin.post(node, api::path::UNFENCE, &req).await
    }

    /// Makes `node` forward the namespace to `target` under fence `fence`.
    pub(crate) async fn proxy(
        &self,
        node: &str,
        target: &str,
        fence: u64,
    ) -> Result<ProxyResponse, AdminError> {
        let req = ProxyRequest {
            namespace: self.a.namespace.clone(),
            target: target.to_string(),
            fence,
            retarget_from: None,
        };
        self.admin.post(node, api::path::PROXY, &req).await
    }

    /// Makes `node`, which forwards the namespace to `from`, forward it to
    /// `to` instead.
    pub(crate) async fn retarget(
        &self,
        node: &str,
        from: &str,
        to: &str,
    ) -> Result<ProxyResponse, AdminError> {
        let req = ProxyRequest {
            namespace: self.a.namespace.clone(),
            target: to.to_string(),
            fence: 0,
            retarget_from: Some(from.to_string()),
        };
        self.admin.post(node, api::path::PROXY, &req).await
    }

    /// Makes `node` serve the namespace again.
    pub(crate) async fn unproxy(
        &self,
        node: &str,
        keep_fence: bool,
    ) -> Result<ProxyResponse, AdminError> {
        let req = UnproxyRequest {
            namespace: self.a.namespace.clone(),
            keep_fence,
        };
        self.admin.delete(node, api::path::PROXY, &req).await
    }

    pub(crate) async fn promote(
        &self,
        node: &str,
        req: &PromoteRequest,
    ) -> Result<PromoteResponse, AdminError> {
        self.admin.post(node, api::path::PROMOTE, req).await
    }

    pub(crate) async fn demote(&self, node: &str) -> Result<PromoteResponse, AdminError> {
        let req = PromoteRequest {
            namespace: self.a.namespace.clone(),
            ..Default::default()
        };
        self.admin.delete(node, api::path::PROMOTE, &req).await
    }

    /// Removes n1's checkpoint `name`; best effort (n1 removes stale ones too).
    pub(crate) async fn drop_checkpoint(&self, node: &str, name: &str) {
        let path = api::path::checkpoint(name);
        let _: Result<serde_json::Value, _> = self.admin.delete(node, &path, &()).await;
    }

    pub(crate) async fn load(&self) -> Result<Option<MigrationRecord>, RecordError> {
        match self.zk.get_data(&self.path).await {
            Ok((d, stat)) => {
                *self.version.lock().expect("not poisoned") = Some(stat.version);
                if d.is_empty() {
                    return Ok(None);
                }
                let record = serde_json::from_slice(&d).map_err(|e| RecordError::Unreadable {
                    path: self.path.clone(),
                    reason: e.to_string(),
                })?;
                Ok(Some(record))
            }
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(RecordError::zk(format!("reading {}", self.path))(e)),
        }
    }

    /// Creates `path` (under the deployment's root) and its parents.
    pub(crate) async fn mkdirs(&self, path: &str) -> Result<(), RecordError> {
        northwest_store::zk::ensure_path(&self.zk, path, self.layout.root(), &self.acls)
            .await
            .map_err(RecordError::zk(format!("creating {path} in ZooKeeper")))
    }

    pub(crate) async fn save(&self, st: &MigrationRecord) -> Result<(), RecordError> {
        let data = serde_json::to_vec(st).expect("plain data");
        let expected = *self.version.lock().expect("not poisoned");
        let stat = match expected {
            Some(v) => match self.zk.set_data(&self.path, &data, Some(v)).await {
                Ok(stat) => stat,
                Err(zk::Error::BadVersion) => {
                    return Err(RecordError::ChangedUnderUs {
                        path: self.path.clone(),
                        ns: st.ns.clone(),
                    })
                }
                Err(e) => return Err(RecordError::zk("saving migration state")(e)),
            },
            None => {
                self.mkdirs(&self.layout.migrations()).await?;
                let opts = zk::CreateMode::Persistent.with_acls(self.acls);
                match self.zk.create(&self.path, &data, &opts).await {
                    Ok((stat, _)) => stat,
                    Err(zk::Error::NodeExists) => {
                        return Err(RecordError::CreatedMeanwhile {
                            path: self.path.clone(),
                        })
                    }
                    Err(e) => return Err(RecordError::zk("creating the migration record")(e)),
                }
            }
        };
        *self.version.lock().expect("not poisoned") = Some(stat.version);
        Ok(())
    }

    /// Keeps a finished migration's record at
    /// `<root>/migration-history/<ns>/<id>` before a next hop replaces it.
    pub(crate) async fn keep_finished(&self, st: &MigrationRecord) -> Result<(), RecordError> {
        let path = self.layout.finished(&st.ns, &st.id);
        self.mkdirs(&self.layout.finished_dir(&st.ns)).await?;
        let data = serde_json::to_vec(st).expect("plain data");
        let opts = zk::CreateMode::Persistent.with_acls(self.acls);
        match self.zk.create(&path, &data, &opts).await {
            Ok(_) | Err(zk::Error::NodeExists) => Ok(()),
            Err(e) => Err(RecordError::zk(format!("keeping {path}"))(e)),
        }
    }

    /// Writes the routing record `<root>/routing/<ns>`: where clients of the
    /// namespace should go.
    pub(crate) async fn write_routing(&self, rec: &RoutingRecord) -> Result<(), RecordError> {
        let path = self.layout.routing(&rec.namespace);
        self.mkdirs(&self.layout.routings()).await?;
        let data = serde_json::to_vec(rec).expect("plain data");
        let failed = || RecordError::zk(format!("writing the routing record {path}"));
        match self.zk.set_data(&path, &data, None).await {
            Ok(_) => Ok(()),
            Err(zk::Error::NoNode) => {
                let opts = zk::CreateMode::Persistent.with_acls(self.acls);
                self.zk
                    .create(&path, &data, &opts)
                    .await
                    .map(|_| ())
                    .map_err(failed())
            }
            Err(e) => Err(failed()(e)),
        }
    }

    /// Makes this run the only orchestrator of the namespace: an ephemeral
    /// owner znode, waited for while another live orchestrator holds it (a
    /// killed one's goes when its ZooKeeper session expires).
    pub(crate) async fn take_ownership(&self, quiet: bool) -> Result<(), RecordError> {
        self.mkdirs(&self.layout.owners()).await?;
        let path = self.layout.owner(&self.a.namespace);
        let opts = zk::CreateMode::Ephemeral.with_acls(self.acls);
        let a = &self.a;
        let what = if a.from_topics {
            format!("migrate --from-topics --to {}", a.to)
        } else if a.abort {
            format!("migrate --from {} --to {} --abort", a.from, a.to)
        } else if a.rollback {
            format!("migrate --from {} --to {} --rollback", a.from, a.to)
        } else {
            format!("migrate --from {} --to {}", a.from, a.to)
        };
        let me = format!("`{what}` (pid {} on {})", std::process::id(), hostname());
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match self.zk.create(&path, me.as_bytes(), &opts).await {
                Ok(_) => return Ok(()),
                Err(zk::Error::NodeExists) => {}
                Err(e) => {
                    let action = format!("taking ownership of the migration ({path})");
                    return Err(RecordError::zk(action)(e));
                }
            }
            let (owner, since_ms, w) = match self.zk.get_and_watch_data(&path).await {
                Ok((d, stat, w)) => (String::from_utf8_lossy(&d).to_string(), stat.ctime, w),
                Err(zk::Error::NoNode) => continue,
                Err(e) => return Err(RecordError::zk(format!("reading {path}"))(e)),
            };
            if std::time::Instant::now() > deadline {
                return Err(RecordError::Owned {
                    owner,
                    ns: a.namespace.clone(),
                    since: since_text(since_ms),
                    record: self.record_summary().await,
                });
            }
            if !quiet {
                eprintln!("waiting for the orchestrator {owner} of namespace {} to finish (a killed one is released when its ZooKeeper session expires)", a.namespace);
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), w.changed()).await;
        }
    }

    /// The namespace's migration record in one line (which migration, its
    /// phase), for a refusal to name; read without taking its version.
    async fn record_summary(&self) -> String {
        match self.zk.get_data(&self.path).await {
            Ok((d, _)) => match serde_json::from_slice::<MigrationRecord>(&d) {
                Ok(r) => format!(
                    "migration {} ({} -> {}) is in phase {}",
                    r.id,
                    r.from,
                    r.to,
                    r.phase.name()
                ),
                Err(_) if d.is_empty() => "no migration record yet".into(),
                Err(e) => format!("its record does not parse ({e})"),
            },
            Err(zk::Error::NoNode) => "no migration record yet".into(),
            Err(e) => format!("its record is unreadable ({e})"),
        }
    }
}

/// `ms` (a znode's creation time) as UTC and how long ago.
fn since_text(ms: i64) -> String {
    let now = northwest_store::store::now_ms_pub();
    let ago = (now - ms).max(0) / 1000;
    let secs = ms.div_euclid(1000);
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02} UTC ({ago} s ago)")
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Journal high-water marks now (one broker round trip per partition).
pub(crate) fn high_watermarks(c: &BaseConsumer, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
    let w = watermarks(c, topic).context("is n1 journaling?")?;
    Ok(w.into_iter().map(|(p, (_, high))| (p, high)).collect())
}

/// Every partition's (log start, high-water mark) now; an error if the
/// topic does not exist.
pub(crate) fn watermarks(
    c: &BaseConsumer,
    topic: &str,
) -> anyhow::Result<BTreeMap<i32, (i64, i64)>> {
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let parts = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len() as i32);
    if parts == 0 {
        bail!("topic {topic} does not exist");
    }
    // One round trip each, asked at once: a drain reads them under a fence.
    std::thread::scope(|s| {
        let asks: Vec<_> = (0..parts)
            .map(|p| s.spawn(move || (p, c.fetch_watermarks(topic, p, Duration::from_secs(10)))))
            .collect();
        let mut out = BTreeMap::new();
        for a in asks {
            let (p, w) = a
                .join()
                .map_err(|_| anyhow::anyhow!("a watermark query panicked"))?;
            out.insert(p, w?);
        }
        Ok(out)
    })
}

/// Whether `e`, or a cause under it, is a node's error answer with `code`.
pub(crate) fn answered(e: &anyhow::Error, code: northwest_control::ErrorCode) -> bool {
    e.chain()
        .any(|c| c.downcast_ref::<AdminError>().and_then(AdminError::code) == Some(code))
}
