//! The orchestrator's connections: the nodes' admin API over HTTP, the
//! migration record in ZooKeeper, and one broker client for high-water marks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use northwest_kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::Value;
use zookeeper_client as zk;

use crate::args::MigrateArgs;
use crate::state::MigState;

/// The admin token every command presents to the nodes (set once at start
/// from `--admin-token-file`; see the node's `http.admin_token_file`).
static ADMIN_TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Reads the admin token the nodes require from `path`.
pub fn use_admin_token_file(path: &std::path::Path) -> anyhow::Result<()> {
    let t = std::fs::read_to_string(path)
        .with_context(|| format!("--admin-token-file {}", path.display()))?
        .trim()
        .to_string();
    if t.is_empty() || reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).is_err() {
        bail!(
            "--admin-token-file {}: empty, or not a token that fits an HTTP header",
            path.display()
        );
    }
    warn_if_world_readable(path);
    ADMIN_TOKEN
        .set(t)
        .map_err(|_| anyhow!("the admin token was already set"))?;
    Ok(())
}

/// CA certificates the nodes' HTTPS certificates must chain to (set once
/// at start from `--ca-file`); unset: the public web roots.
static CA_CERTS: std::sync::OnceLock<Vec<reqwest::Certificate>> = std::sync::OnceLock::new();

/// Reads the CA bundle (PEM) that `https://` node URLs are verified with.
pub fn use_ca_file(path: &std::path::Path) -> anyhow::Result<()> {
    let pem = std::fs::read(path).with_context(|| format!("--ca-file {}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .with_context(|| format!("--ca-file {}", path.display()))?;
    if certs.is_empty() {
        bail!("--ca-file {}: no PEM certificate in it", path.display());
    }
    CA_CERTS
        .set(certs)
        .map_err(|_| anyhow!("the CA file was already set"))?;
    Ok(())
}

/// Secrets files should be readable by their owner only.
pub(crate) fn warn_if_world_readable(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0) {
        eprintln!(
            "warning: {} is readable by every user on this machine; chmod o-r it",
            path.display()
        );
    }
}

/// An HTTP client for the nodes' admin API, presenting the admin token.
pub fn admin_http(timeout: Duration) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = ADMIN_TOKEN.get() {
        if let Ok(mut v) = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")) {
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
    }
    let roots = CA_CERTS.get().cloned().unwrap_or_default();
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .default_headers(headers)
        .tls_built_in_root_certs(roots.is_empty());
    for c in roots {
        b = b.add_root_certificate(c);
    }
    b.build().expect("static client config")
}

pub(crate) struct Ctx {
    pub(crate) a: MigrateArgs,
    pub(crate) http: reqwest::Client,
    pub(crate) zk: zk::Client,
    pub(crate) path: String,
    pub(crate) root: String,
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

impl Ctx {
    pub(crate) async fn get(&self, url: &str) -> anyhow::Result<Value> {
        send_json(self.http.get(url), &format!("GET {url}")).await
    }

    pub(crate) async fn post(&self, url: &str, body: Value) -> anyhow::Result<Value> {
        send_json(self.http.post(url).json(&body), &format!("POST {url}")).await
    }

    /// DELETE with a JSON body; an error status is an error.
    pub(crate) async fn delete(&self, url: &str, body: Value) -> anyhow::Result<()> {
        send_json(self.http.delete(url).json(&body), &format!("DELETE {url}"))
            .await
            .map(|_| ())
    }

    pub(crate) async fn load(&self) -> anyhow::Result<Option<MigState>> {
        match self.zk.get_data(&self.path).await {
            Ok((d, stat)) => {
                *self.version.lock().expect("not poisoned") = Some(stat.version);
                if d.is_empty() {
                    return Ok(None);
                }
                Ok(Some(serde_json::from_slice(&d)?))
            }
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(anyhow!("reading {}: {e}", self.path)),
        }
    }

    /// Creates `path` (under the deployment's root) and its parents.
    pub(crate) async fn mkdirs(&self, path: &str) -> anyhow::Result<()> {
        northwest_store::zk::ensure_path(&self.zk, path, &self.root, &self.acls)
            .await
            .map_err(|e| anyhow!("creating {path} in ZooKeeper: {e}"))
    }

    pub(crate) async fn save(&self, st: &MigState) -> anyhow::Result<()> {
        let data = serde_json::to_vec(st)?;
        let expected = *self.version.lock().expect("not poisoned");
        let stat = match expected {
            Some(v) => match self.zk.set_data(&self.path, &data, Some(v)).await {
                Ok(stat) => stat,
                Err(zk::Error::BadVersion) => bail!(
                    "the migration record {} changed under this orchestrator (another \
                     `northwest migrate` for namespace {}?); stop the other one and run again",
                    self.path,
                    st.ns
                ),
                Err(e) => bail!("saving migration state: {e}"),
            },
            None => {
                self.mkdirs(&format!("{}/migrations", self.root)).await?;
                let opts = zk::CreateMode::Persistent.with_acls(self.acls);
                match self.zk.create(&self.path, &data, &opts).await {
                    Ok((stat, _)) => stat,
                    Err(zk::Error::NodeExists) => bail!(
                        "another orchestrator created the migration record {} meanwhile; run again",
                        self.path
                    ),
                    Err(e) => bail!("creating the migration record: {e}"),
                }
            }
        };
        *self.version.lock().expect("not poisoned") = Some(stat.version);
        Ok(())
    }

    /// Writes the routing record `<root>/routing/<ns>`: where clients of the
    /// namespace should go.
    pub(crate) async fn write_routing(&self, ns: &str, rec: Value) -> anyhow::Result<()> {
        let path = format!("{}/routing/{ns}", self.root);
        self.mkdirs(&format!("{}/routing", self.root)).await?;
        let data = serde_json::to_vec(&rec)?;
        match self.zk.set_data(&path, &data, None).await {
            Ok(_) => Ok(()),
            Err(zk::Error::NoNode) => {
                let opts = zk::CreateMode::Persistent.with_acls(self.acls);
                self.zk
                    .create(&path, &data, &opts)
                    .await
                    .map(|_| ())
                    .map_err(|e| anyhow!("writing the routing record {path}: {e}"))
            }
            Err(e) => bail!("writing the routing record {path}: {e}"),
        }
    }

    /// Makes this run the only orchestrator of the namespace: an ephemeral
    /// owner znode, waited for while another live orchestrator holds it (a
    /// killed one's goes when its ZooKeeper session expires).
    pub(crate) async fn take_ownership(&self, quiet: bool) -> anyhow::Result<()> {
        let dir = format!("{}/migration-owners", self.root);
        self.mkdirs(&dir).await?;
        let path = format!("{dir}/{}", self.a.namespace);
        let opts = zk::CreateMode::Ephemeral.with_acls(self.acls);
        let me = format!("pid {} on {}", std::process::id(), hostname());
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match self.zk.create(&path, me.as_bytes(), &opts).await {
                Ok(_) => return Ok(()),
                Err(zk::Error::NodeExists) => {}
                Err(e) => bail!("taking ownership of the migration ({path}): {e}"),
            }
            let (owner, w) = match self.zk.get_and_watch_data(&path).await {
                Ok((d, _, w)) => (String::from_utf8_lossy(&d).to_string(), w),
                Err(zk::Error::NoNode) => continue,
                Err(e) => bail!("reading {path}: {e}"),
            };
            if std::time::Instant::now() > deadline {
                bail!(
                    "another orchestrator ({owner}) is running the migration of namespace {}; \
                     wait for it to finish or stop it, then run again",
                    self.a.namespace
                );
            }
            if !quiet {
                eprintln!("waiting for the orchestrator {owner} of namespace {} to finish (a killed one is released when its ZooKeeper session expires)", self.a.namespace);
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), w.changed()).await;
        }
    }
}

/// A request that got no HTTP answer, with what to do about it.
pub(crate) fn unreachable_node(e: reqwest::Error, what: &str) -> anyhow::Error {
    let chain = format!("{:#}", anyhow::Error::from(e));
    let hint = if chain.contains("UnknownIssuer") {
        "the node's TLS certificate is not trusted: pass the CA that signed it with --ca-file \
         (or NORTHWEST_CA_FILE)"
    } else if chain.contains("NotValidForName") {
        "the node's TLS certificate does not name the host in its URL: use a URL with a name \
         or address the certificate lists"
    } else if chain.contains("certificate") {
        "the node's TLS certificate was refused (expired, or not for a server?): check it"
    } else {
        "is the node running, and is the URL's scheme (http/https) the one it serves?"
    };
    anyhow!("{what}: {chain}; {hint}")
}

/// Sends a request to a node's API: its JSON reply, or an error naming the
/// request, the status and the node's error code and message.
pub(crate) async fn send_json(req: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
    let r = req.send().await.map_err(|e| unreachable_node(e, what))?;
    let st = r.status();
    let v: Value = r
        .json()
        .await
        .with_context(|| format!("{what}: response is not JSON"))?;
    if st == reqwest::StatusCode::UNAUTHORIZED || st == reqwest::StatusCode::FORBIDDEN {
        bail!(
            "{what}: {st}: {}; pass the nodes' admin token with --admin-token-file \
             (or NORTHWEST_ADMIN_TOKEN_FILE)",
            v["error"]
        );
    }
    if !st.is_success() {
        bail!("{what}: {st} {}: {}", v["code"], v["error"]);
    }
    Ok(v)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The reason a journal partition of a node is halted, from its status.
pub(crate) fn halted(status: &Value) -> Option<String> {
    status["apply"]["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|p| p["halted"].as_str().map(str::to_string))
}

/// A node's journal lag (records, all partitions), from its status.
pub(crate) fn journal_lag(status: &Value) -> i64 {
    status["apply"]["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["lag_records"].as_i64().unwrap_or(0))
        .sum()
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
    let mut out = BTreeMap::new();
    for p in 0..parts {
        out.insert(p, c.fetch_watermarks(topic, p, Duration::from_secs(10))?);
    }
    Ok(out)
}
