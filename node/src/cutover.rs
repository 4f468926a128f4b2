//! Cutover support on a node, per namespace: the write fence (new writes to
//! the namespace wait, in-flight ones finish), the data proxy that forwards
//! the namespace's API requests to its new primary, and on a replica (a node
//! applying another's journal) the refusal of client writes until the
//! namespace is promoted. Proxy and promotion are recorded in ZooKeeper
//! (`<root>/nodes/<node name>/{proxy,primary}/<ns>`) before they take effect,
//! so a node restarted at any instant comes back in the same state. Other
//! namespaces on the node are served as before and can be migrated later.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{OwnedRwLockWriteGuard, RwLock};
use zookeeper_client as zk;

pub use fence::CutoverError;
pub use forward::gate_layer;
pub use promotion::{PromoteError, Promotion};

mod fence;
mod forward;
mod promotion;

use crate::secrets::Secret;
use forward::forward_client;

/// One namespace's fence and proxy.
#[derive(Default)]
struct NsGate {
    lock: Arc<RwLock<()>>,
    fence: tokio::sync::Mutex<Option<Fence>>,
    /// A fence is held or being taken (set before waiting for in-flight
    /// writes): read without the fence lock, which a fence draining slow
    /// writes or a cutover may hold for seconds.
    fencing: std::sync::atomic::AtomicBool,
    proxy: Mutex<Option<String>>,
}

struct Fence {
    gen: u64,
    /// When the fence lifts itself: the cutover's own steps fit before it.
    deadline: tokio::time::Instant,
    _guard: OwnedRwLockWriteGuard<()>,
}

/// Where the proxy and promotion state is kept across restarts.
pub struct ProxyRecord {
    /// The coordinator's current session: after an expiry it reconnects with
    /// a new one, and a client kept from before would fail forever.
    pub zk: Arc<northwest_store::ZkCoordinator>,
    /// `<root>/nodes/<node name>`
    pub dir: String,
}

/// The fence and proxy state of a node's application API.
pub struct Gate {
    ns: Mutex<HashMap<String, Arc<NsGate>>>,
    fence_gen: AtomicU64,
    record: Option<ProxyRecord>,
    /// On a replica: the journal it applies (client writes are refused).
    replica_of: Option<String>,
    /// Namespaces this replica was promoted to serve writes for.
    promoted: Mutex<HashSet<String>>,
    client: reqwest::Client,
    /// Presented to the new primary's admin API at cutover (never added to
    /// forwarded client requests, which carry the client's own header).
    peer_token: Option<Secret>,
    /// Set with a peer CA: proxy targets must be `https://`.
    https_only: bool,
    /// Set when this process lost its node-name claim to another instance:
    /// it serves no namespace any more (it drains and stops).
    retired: Mutex<Option<String>>,
    /// Promotions and demotions run one at a time, so a demotion that
    /// cancels an attempt is ordered against that attempt's promotion.
    promoting: tokio::sync::Mutex<()>,
    /// Attempts whose demotion came first (most recent last).
    cancelled: Mutex<std::collections::VecDeque<String>>,
    /// Promoted by a cutover that is not confirmed yet (its switch has not
    /// run): the replica serves only requests the old primary forwarded,
    /// and keeps forwarding (or refusing) the rest. If the cutover fails
    /// after the promotion (its answer lost), the old primary serves again
    /// and this replica has taken no write of its own meanwhile.
    /// (With the attempt that made it.)
    unconfirmed: Mutex<HashMap<String, String>>,
}

impl Default for Gate {
    fn default() -> Self {
        Self::new(None, None)
    }
}

/// Why a proxy change could not be made durable.
#[derive(Debug, thiserror::Error)]
#[error("recording the proxy state in ZooKeeper ({path}): {source}")]
pub struct ProxyRecordError {
    path: String,
    source: zk::Error,
}

impl Gate {
    pub fn new(record: Option<ProxyRecord>, replica_of: Option<String>) -> Self {
        Self {
            ns: Mutex::new(HashMap::new()),
            fence_gen: AtomicU64::new(0),
            record,
            replica_of,
            promoted: Mutex::new(HashSet::new()),
            client: forward_client(Vec::new()),
            peer_token: None,
            https_only: false,
            retired: Mutex::new(None),
            promoting: tokio::sync::Mutex::new(()),
            cancelled: Mutex::new(std::collections::VecDeque::new()),
            unconfirmed: Mutex::new(HashMap::new()),
        }
    }

    /// Peers' certificates must chain to one of `roots` (the public web
    /// roots when empty).
    /// With a CA configured the peers are TLS deployments: forwarding to
    /// an `http://` target is refused rather than sending data in clear.
    pub fn with_peer_ca(mut self, roots: Vec<reqwest::Certificate>) -> Self {
        self.https_only = !roots.is_empty();
        self.client = forward_client(roots);
        self
    }

    /// Whether a proxy target must be an `https://` URL.
    pub fn https_only(&self) -> bool {
        self.https_only
    }

    fn of(&self, ns: &str) -> Arc<NsGate> {
        self.ns.lock().entry(ns.to_string()).or_default().clone()
    }

    /// Restores the proxies and promotions recorded before a restart;
    /// returns the proxies.
    pub async fn load(&self) -> Result<Vec<(String, String)>, ProxyRecordError> {
        let mut out = Vec::new();
        for (ns, target) in self.list("proxy").await? {
            *self.of(&ns).proxy.lock() = Some(target.clone());
            out.push((ns, target));
        }
        for (ns, data) in self.list("primary").await? {
            let rec = PrimaryRecord::parse(&data);
            if !rec.confirmed {
                let attempt = rec.attempt.unwrap_or_default();
                self.unconfirmed.lock().insert(ns.clone(), attempt);
            }
            self.promoted.lock().insert(ns);
        }
        Ok(out)
    }

    async fn list(&self, kind: &str) -> Result<Vec<(String, String)>, ProxyRecordError> {
        let Some(rec) = &self.record else {
            return Ok(Vec::new());
        };
        let dir = format!("{}/{kind}", rec.dir);
        let err = |path: &str, source| ProxyRecordError {
            path: path.to_string(),
            source,
        };
        let client = rec.zk.client();
        let children = match client.list_children(&dir).await {
            Ok(c) => c,
            Err(zk::Error::NoNode) => return Ok(Vec::new()),
            Err(e) => return Err(err(&dir, e)),
        };
        let mut out = Vec::new();
        for ns in children {
            let path = format!("{dir}/{ns}");
            let (data, _) = client.get_data(&path).await.map_err(|e| err(&path, e))?;
            out.push((ns, String::from_utf8_lossy(&data).to_string()));
        }
        Ok(out)
    }

    /// Records (`Some`) or removes (`None`) `<dir>/<kind>/<ns>`.
    async fn record(
        &self,
        kind: &str,
        ns: &str,
        data: Option<&[u8]>,
    ) -> Result<(), ProxyRecordError> {
        let Some(rec) = &self.record else {
            return Ok(());
        };
        let path = format!("{}/{kind}/{ns}", rec.dir);
        let client = rec.zk.client();
        let r = match data {
            Some(d) => put_znode(&client, &path, d, rec.zk.root(), rec.zk.acls()).await,
            None => match client.delete(&path, None).await {
                Err(zk::Error::NoNode) => Ok(()),
                r => r,
            },
        };
        r.map_err(|source| ProxyRecordError { path, source })
    }

    /// The admin token presented to the new primary at cutover.
    pub fn with_peer_token(mut self, token: Option<Secret>) -> Self {
        self.peer_token = token;
        self
    }

    /// Proxies this node cannot serve: with a peer CA, a target recorded
    /// as `http://` (before TLS was set up) is refused on every request.
    pub fn proxy_problems(&self) -> Vec<String> {
        if !self.https_only {
            return Vec::new();
        }
        let mut out: Vec<String> = self
            .proxies()
            .into_iter()
            .filter(|(_, t)| !t.starts_with("https://"))
            .map(|(ns, t)| {
                format!(
                    "namespace {ns} is proxied to {t}, but http.tls_ca_file allows only https:// \
                     peers: every request to it fails; re-point it with POST /v1/admin/proxy to \
                     n2's https:// URL, or remove http.tls_ca_file"
                )
            })
            .collect();
        out.sort();
        out
    }

    pub fn proxy(&self, ns: &str) -> Option<String> {
        self.ns.lock().get(ns).and_then(|g| g.proxy.lock().clone())
    }

    /// Every namespace this node has seen a data or cutover request for.
    pub fn namespaces(&self) -> Vec<String> {
        self.ns.lock().keys().cloned().collect()
    }

    /// Every proxied namespace and its target.
    pub fn proxies(&self) -> HashMap<String, String> {
        self.ns
            .lock()
            .iter()
            .filter_map(|(ns, g)| g.proxy.lock().clone().map(|t| (ns.clone(), t)))
            .collect()
    }
}

/// Creates or overwrites a persistent znode, creating its parents.
pub(crate) async fn put_znode(
    client: &zk::Client,
    path: &str,
    data: &[u8],
    root: &str,
    acls: zk::Acls<'static>,
) -> Result<(), zk::Error> {
    match client.set_data(path, data, None).await {
        Ok(_) => return Ok(()),
        Err(zk::Error::NoNode) => {}
        Err(e) => return Err(e),
    }
    if let Some((parent, _)) = path.rsplit_once('/') {
        northwest_store::zk::ensure_path(client, parent, root, &acls).await?;
    }
    let opts = zk::CreateMode::Persistent.with_acls(acls);
    match client.create(path, data, &opts).await {
        Ok(_) => Ok(()),
        Err(zk::Error::NodeExists) => client.set_data(path, data, None).await.map(|_| ()),
        Err(e) => Err(e),
    }
}

/// A promotion as recorded at `<node>/primary/<ns>`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct PrimaryRecord {
    confirmed: bool,
    /// The cutover attempt that made an unconfirmed promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    attempt: Option<String>,
}

impl PrimaryRecord {
    fn confirmed() -> Self {
        Self {
            confirmed: true,
            attempt: None,
        }
    }

    fn unconfirmed(attempt: &str) -> Self {
        Self {
            confirmed: false,
            attempt: Some(attempt.to_string()),
        }
    }

    /// Records written before confirmation existed hold the text "primary":
    /// they are confirmed promotions. Anything else that does not parse is
    /// read as confirmed too (as before typing), and said in the log.
    fn parse(data: &str) -> Self {
        serde_json::from_str(data).unwrap_or_else(|e| {
            if data != "primary" {
                tracing::warn!(record = data, error = %e, "a primary record does not parse: read as a confirmed promotion; check it (migrate status) or rewrite it with promote");
            }
            Self::confirmed()
        })
    }

    fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain data")
    }
}

/// Promotion attempts a replica remembers as cancelled (a demotion that
/// names one overtook it): a late promotion with that id is refused.
const CANCELLED_KEPT: usize = 256;

/// A failed peer call with its cause (reqwest's own message stops at
/// "error sending request"), and what to check for a certificate.
fn peer_error(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    if out.contains("certificate") {
        out.push_str(
            " (the peer's certificate must chain to http.tls_ca_file and name the host in its URL)",
        );
    }
    out
}
