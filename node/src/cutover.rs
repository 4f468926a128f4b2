//! Cutover support on a node, per namespace: the write fence (new writes to
//! the namespace wait, in-flight ones finish), the data proxy that forwards
//! the namespace's API requests to its new primary, and on a replica (a node
//! applying another's journal) the refusal of client writes until the
//! namespace is promoted. Proxy and promotion are recorded in ZooKeeper
//! (`<root>/nodes/<node name>/{proxy,primary}/<ns>`) before they take effect,
//! so a node restarted at any instant comes back in the same state. Other
//! namespaces on the node are served as before and can be migrated later.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use northwest_control::{api, ErrorBody, ErrorCode};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::{OwnedRwLockWriteGuard, RwLock};
use zookeeper_client as zk;

use crate::api::data_namespace;
use crate::secrets::Secret;

/// How many times a request was forwarded between nodes. A request
/// forwarded to a node that forwards it back (in flight across a rollback's
/// switch) is served there; one that would bounce again is refused (both
/// nodes forwarding the namespace would otherwise bounce it until it timed
/// out).
const FORWARDED: &str = "x-northwest-forwarded";
const MAX_HOPS: u32 = 2;

fn hops(req: &Request) -> u32 {
    req.headers()
        .get(FORWARDED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// How long a forwarded request may take before the client gets a 504.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

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

/// How long n1 waits for the new primary to undo a promotion whose answer
/// was lost, after the fence's time ran out (the only wait past it).
const DEMOTE_TIMEOUT: Duration = Duration::from_secs(2);

/// Promotion attempts a replica remembers as cancelled (a demotion that
/// names one overtook it): a late promotion with that id is refused.
const CANCELLED_KEPT: usize = 256;

/// Clears a namespace's `fencing` flag unless the fence was taken.
struct TakingFence<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for TakingFence<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
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

/// Why a cutover step was refused.
#[derive(Debug, thiserror::Error)]
pub enum CutoverError {
    #[error("the write fence {0} is no longer held (it expired or was replaced): writes may have landed after the drain; fence and drain again")]
    FenceExpired(u64),
    #[error(transparent)]
    Record(#[from] ProxyRecordError),
    #[error("the new primary did not take the namespace: {0}")]
    Promote(String),
    #[error(
        "the new primary may hold an unconfirmed promotion (promote: {promote}) that could not \
         be cancelled (demote: {demote}); it serves nothing of the namespace but what this node \
         forwards, and this node serves the namespace again. Run the migration again to finish \
         the cutover, or --abort to demote it"
    )]
    Unknown { promote: String, demote: String },
}

/// A promotion or demotion sent to the target that did not succeed.
#[derive(Debug)]
enum PeerCall {
    /// The target did not do it: it answered so, or was never reached.
    Refused(String),
    /// No answer, or one that does not say what the target did.
    NoAnswer(String),
}

impl std::fmt::Display for PeerCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(e) | Self::NoAnswer(e) => f.write_str(e),
        }
    }
}

/// Why a promotion or demotion was not made.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    #[error(transparent)]
    Record(#[from] ProxyRecordError),
    #[error("promotion attempt {0} was cancelled by a demotion that arrived first")]
    Cancelled(String),
    #[error(
        "namespace {0} is not promoted here: nothing to confirm (a rollback may have demoted \
         it; run the migration again)"
    )]
    NotPromoted(String),
    #[error(
        "this node forwards namespace {ns} to {target}, which serves it: promoting it here \
         would make two primaries. Roll back or migrate instead, or pass \"force\": true if \
         {target} is gone for good"
    )]
    Forwards { ns: String, target: String },
}

/// A change of a replica's promotion for one namespace.
#[derive(Debug, Clone, Copy)]
pub enum Promotion<'a> {
    /// A cutover's promotion: unconfirmed, labelled with its attempt.
    Attempt(&'a str),
    /// The switch confirms an unconfirmed promotion.
    Confirm,
    /// An operator's promotion, confirmed at once.
    Operator { force: bool },
    /// A demotion; with the attempt it cancels.
    Demote(Option<&'a str>),
}

fn forward_client(roots: Vec<reqwest::Certificate>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(FORWARD_TIMEOUT)
        .https_only(!roots.is_empty())
        // A redirect would resend a client's write elsewhere; an
        // environment proxy would route peer traffic through a third host.
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .tls_built_in_root_certs(roots.is_empty());
    for c in roots {
        b = b.add_root_certificate(c);
    }
    b.build().expect("static client config")
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
            // Records before confirmation existed hold "primary": confirmed.
            let rec = serde_json::from_str::<serde_json::Value>(&data).ok();
            if let Some(rec) = rec.filter(|v| v["confirmed"] == false) {
                let attempt = rec["attempt"].as_str().unwrap_or_default().to_string();
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

    /// Lets this replica take client writes for `ns` (or refuse them
    /// again); `journal` switches the journaling of its client writes, called
    /// under the same lock (on before a promotion is recorded, off after a
    /// demotion is).
    ///
    /// - A cutover's promotion names its `attempt` and is unconfirmed: the
    ///   replica then serves only what the old primary forwards (so a cutover
    ///   that fails after it leaves one primary). Promoting again with a new
    ///   attempt re-labels it.
    /// - [`Promotion::Confirm`] (the switch, once the old primary forwards
    ///   here) confirms an unconfirmed one and ends this replica's own
    ///   forwarding; it never promotes a node that is not promoted (a late
    ///   confirmation after a rollback) and does nothing to a confirmed one.
    /// - [`Promotion::Operator`] promotes on purpose, confirmed, and stops the
    ///   replica's forwarding; refused while it forwards unless forced (its
    ///   forwarding target serves the namespace: two primaries).
    /// - A demotion naming an attempt cancels that attempt (a promotion
    ///   arriving after its own demotion is refused) and demotes only a
    ///   promotion still unconfirmed from it; one without attempt demotes.
    pub async fn promote(
        &self,
        ns: &str,
        change: Promotion<'_>,
        journal: impl Fn(bool),
    ) -> Result<(), PromoteError> {
        let _one_at_a_time = self.promoting.lock().await;
        let replica = self.replica_of.is_some();
        let promoted = self.promoted.lock().contains(ns);
        let unconfirmed = self.unconfirmed.lock().get(ns).cloned();
        match change {
            Promotion::Demote(attempt) => {
                if let Some(a) = attempt {
                    let mut c = self.cancelled.lock();
                    c.push_back(a.to_string());
                    while c.len() > CANCELLED_KEPT {
                        c.pop_front();
                    }
                    if promoted && unconfirmed.as_deref() != Some(a) {
                        // Confirmed, or re-labelled by a later attempt.
                        return Ok(());
                    }
                }
                self.record("primary", ns, None).await?;
                self.unconfirmed.lock().remove(ns);
                self.promoted.lock().remove(ns);
                journal(false);
                Ok(())
            }
            Promotion::Attempt(a) => {
                if self.cancelled.lock().iter().any(|c| c == a) {
                    return Err(PromoteError::Cancelled(a.to_string()));
                }
                if promoted && unconfirmed.is_none() {
                    return Ok(());
                }
                journal(true);
                let data = json!({"confirmed": false, "attempt": a}).to_string();
                if let Err(e) = self.record("primary", ns, Some(data.as_bytes())).await {
                    if !promoted {
                        journal(false);
                    }
                    return Err(e.into());
                }
                self.unconfirmed
                    .lock()
                    .insert(ns.to_string(), a.to_string());
                self.promoted.lock().insert(ns.to_string());
                Ok(())
            }
            Promotion::Confirm => {
                if !promoted {
                    return Err(PromoteError::NotPromoted(ns.to_string()));
                }
                if unconfirmed.is_some() {
                    let data = json!({"confirmed": true}).to_string();
                    self.record("primary", ns, Some(data.as_bytes())).await?;
                    self.unconfirmed.lock().remove(ns);
                    // Its own forwarding (back to the old primary, after a
                    // rollback) ends once the old primary forwards here.
                    if replica && self.proxy(ns).is_some() {
                        self.set_proxy(ns, None).await?;
                    }
                }
                Ok(())
            }
            Promotion::Operator { force } => {
                if let Some(t) = self.proxy(ns).filter(|_| replica && !force) {
                    return Err(PromoteError::Forwards {
                        ns: ns.to_string(),
                        target: t,
                    });
                }
                journal(true);
                let data = json!({"confirmed": true}).to_string();
                if let Err(e) = self.record("primary", ns, Some(data.as_bytes())).await {
                    if !promoted {
                        journal(false);
                    }
                    return Err(e.into());
                }
                self.unconfirmed.lock().remove(ns);
                self.promoted.lock().insert(ns.to_string());
                // A source's proxy is only ever lifted by the rollback itself.
                if replica && self.proxy(ns).is_some() {
                    self.set_proxy(ns, None).await?;
                }
                Ok(())
            }
        }
    }

    /// Gives up an unconfirmed promotion of `ns` when this node starts
    /// forwarding it (a rollback before the switch): under the fence, so no
    /// request already forwarded here and waiting on it is served here
    /// afterwards.
    async fn give_up_unconfirmed(&self, ns: &str) -> Result<bool, ProxyRecordError> {
        let _one_at_a_time = self.promoting.lock().await;
        if !self.unconfirmed.lock().contains_key(ns) {
            return Ok(false);
        }
        self.record("primary", ns, None).await?;
        self.unconfirmed.lock().remove(ns);
        self.promoted.lock().remove(ns);
        Ok(true)
    }

    /// Whether this replica serves a request to `ns` itself although it
    /// forwards or refuses the namespace otherwise: it is promoted, and
    /// either confirmed or the request was forwarded by the old primary.
    ///
    /// While it forwards the namespace (a rollback moved it back to the old
    /// primary), only an unconfirmed promotion serves, and only what was
    /// forwarded: a confirmed one whose node forwards is being rolled back,
    /// and its forwarding wins.
    fn serves_promoted(&self, ns: &str, hops: u32) -> bool {
        if self.replica_of.is_none() || !self.promoted.lock().contains(ns) {
            return false;
        }
        let unconfirmed = self.unconfirmed.lock().contains_key(ns);
        if self.proxy(ns).is_some() {
            unconfirmed && hops >= 1
        } else {
            !unconfirmed || hops >= 1
        }
    }

    /// The admin token presented to the new primary at cutover.
    pub fn with_peer_token(mut self, token: Option<Secret>) -> Self {
        self.peer_token = token;
        self
    }

    /// Why a client write to `ns` (forwarded `hops` times) is refused here,
    /// if it is.
    fn replica_refusal(&self, ns: &str, hops: u32) -> Option<String> {
        let journal = self.replica_of.as_ref()?;
        if self.serves_promoted(ns, hops) {
            return None;
        }
        if self.promoted.lock().contains(ns) {
            return Some(format!(
                "namespace {ns} is being cut over to this node and the switch is not done: \
                 write to its current primary (which forwards here once the switch is done)"
            ));
        }
        Some(format!(
            "namespace {ns} on this node is a read-only replica (it applies the journal \
             {journal}): write to its source deployment, or promote it on purpose with \
             POST /v1/admin/promote {{\"namespace\": \"{ns}\"}}"
        ))
    }

    /// This process lost its node name to another instance: from now on it
    /// serves no data request (another process acts under the name).
    pub fn retire(&self, why: String) {
        *self.retired.lock() = Some(why);
    }

    /// Namespaces promoted by a cutover whose switch has not confirmed it.
    pub fn unconfirmed(&self) -> Vec<String> {
        let mut v: Vec<String> = self.unconfirmed.lock().keys().cloned().collect();
        v.sort();
        v
    }

    /// Namespaces this replica takes writes for.
    pub fn promoted(&self) -> Vec<String> {
        let mut v: Vec<String> = self.promoted.lock().iter().cloned().collect();
        v.sort();
        v
    }

    /// Blocks new writes to `ns` and waits for in-flight ones; lifts itself
    /// after `max` in case the orchestrator dies holding it. Fencing again
    /// while fenced renews the timer. Returns the fence's generation.
    pub async fn fence(self: &Arc<Self>, ns: &str, max: Duration) -> u64 {
        let g = self.of(ns);
        let mut slot = g.fence.lock().await;
        let gen = self.fence_gen.fetch_add(1, Ordering::Relaxed) + 1;
        let deadline = tokio::time::Instant::now() + max;
        match slot.as_mut() {
            Some(f) => {
                f.gen = gen;
                f.deadline = deadline;
            }
            None => {
                // Shown as fenced while in-flight writes drain; a request
                // dropped meanwhile (its caller gone) leaves no fence.
                g.fencing.store(true, Ordering::Release);
                let taking = TakingFence(&g.fencing);
                let guard = g.lock.clone().write_owned().await;
                std::mem::forget(taking);
                *slot = Some(Fence {
                    gen,
                    // Counted from when the fence is held, like its lift.
                    deadline: tokio::time::Instant::now() + max,
                    _guard: guard,
                });
            }
        }
        drop(slot);
        let (g, ns) = (g.clone(), ns.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(max).await;
            let mut slot = g.fence.lock().await;
            if slot.as_ref().is_some_and(|f| f.gen == gen) {
                tracing::warn!(namespace = %ns, "write fence held longer than {max:?}; lifting it");
                *slot = None;
                g.fencing.store(false, Ordering::Release);
            }
        });
        gen
    }

    /// Lifts the fence on `ns`; returns the generation it lifted, if any.
    pub async fn unfence(&self, ns: &str) -> Option<u64> {
        let g = self.of(ns);
        let mut slot = g.fence.lock().await;
        g.fencing.store(false, Ordering::Release);
        slot.take().map(|f| f.gen)
    }

    /// Namespaces fenced now or being fenced (waiting for in-flight
    /// writes); never waits on a fence lock.
    pub async fn fenced_namespaces(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .ns
            .lock()
            .iter()
            .filter(|(_, g)| g.fencing.load(Ordering::Acquire))
            .map(|(k, _)| k.clone())
            .collect();
        out.sort();
        out
    }

    /// Makes `ns` forward to `target` (or serve locally again with `None`),
    /// recording it first so a restart keeps it.
    pub async fn set_proxy(
        &self,
        ns: &str,
        target: Option<String>,
    ) -> Result<(), ProxyRecordError> {
        self.record("proxy", ns, target.as_deref().map(str::as_bytes))
            .await?;
        *self.of(ns).proxy.lock() = target;
        Ok(())
    }

    /// The cutover on n1, under the fence `gen` on `ns`, whose lock is held
    /// throughout so it cannot lift midway: record the proxy (a restart
    /// from here on comes back forwarding), have the new primary take the
    /// namespace's writes, start forwarding, lift the fence. n1 takes no
    /// client write for `ns` while the new primary is promoted and n1 not yet
    /// forwarding: at no instant do both accept them.
    ///
    /// Every step fits in the fence's remaining time (so a pause budget
    /// holds). The promotion is unconfirmed until the switch: the target
    /// serves only what n1 forwards. If it fails or its answer is lost, n1
    /// demotes the target under the same attempt id (waiting
    /// [`DEMOTE_TIMEOUT`] at most) and serves again, fence lifted: whatever
    /// the target did, it takes none of the namespace's writes of its own.
    /// A step that fails lifts the fence itself.
    pub async fn cut_over(&self, ns: &str, gen: u64, target: &str) -> Result<(), CutoverError> {
        let g = self.of(ns);
        let mut slot = g.fence.lock().await;
        let Some(deadline) = slot.as_ref().filter(|f| f.gen == gen).map(|f| f.deadline) else {
            return Err(CutoverError::FenceExpired(gen));
        };
        let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
        let lift = |slot: &mut Option<Fence>| {
            *slot = None;
            g.fencing.store(false, Ordering::Release);
        };
        let recorded =
            tokio::time::timeout(left(), self.record("proxy", ns, Some(target.as_bytes()))).await;
        if !matches!(recorded, Ok(Ok(()))) {
            // The target was never asked: n1 keeps the namespace.
            lift(&mut slot);
            drop(slot);
            self.forget_proxy_record(ns).await;
            return Err(match recorded {
                Ok(Err(e)) => e.into(),
                _ => CutoverError::FenceExpired(gen),
            });
        }
        let attempt = format!("{}-{gen}", northwest_store::store::now_ms_pub());
        let e = match self
            .remote_promote(target, ns, true, &attempt, left())
            .await
        {
            Ok(()) => {
                *g.proxy.lock() = Some(target.to_string());
                let gave_up = self.give_up_unconfirmed(ns).await;
                lift(&mut slot);
                if let Err(e) = gave_up {
                    // Forwarding then still wins for requests not forwarded
                    // here; say so loudly.
                    tracing::error!(error = %e, namespace = ns, "could not remove this node's unconfirmed promotion after handing the namespace on");
                }
                return Ok(());
            }
            // It answered that it did not take the namespace.
            Err(PeerCall::Refused(e)) => e,
            // It may have taken it with the answer lost: cancel this
            // attempt there. Serving again is safe either way: an
            // unconfirmed promotion serves only what this node forwards.
            Err(PeerCall::NoAnswer(e)) => {
                match self
                    .remote_promote(target, ns, false, &attempt, DEMOTE_TIMEOUT)
                    .await
                {
                    Ok(()) => e,
                    Err(d) => {
                        let (promote, demote) = (e, d.to_string());
                        tracing::error!(%promote, %demote, %target, namespace = ns, "cutover outcome unknown: the target may hold an unconfirmed promotion (it serves nothing of the namespace but what this node forwards); serving the namespace here again");
                        lift(&mut slot);
                        drop(slot);
                        self.forget_proxy_record(ns).await;
                        return Err(CutoverError::Unknown { promote, demote });
                    }
                }
            }
        };
        // n1 serves again; the record goes after the fence is lifted (a
        // restart before it forwards to an unpromoted target, which
        // refuses writes: never a second primary).
        let expired = left().is_zero();
        lift(&mut slot);
        drop(slot);
        self.forget_proxy_record(ns).await;
        // Out of the fence's time: the orchestrator's budget handling
        // (fence and drain again) applies.
        Err(if expired {
            CutoverError::FenceExpired(gen)
        } else {
            CutoverError::Promote(e)
        })
    }

    /// Removes the proxy record of a cutover that did not happen, within
    /// a bound (ZooKeeper may be why it failed).
    async fn forget_proxy_record(&self, ns: &str) {
        match tokio::time::timeout(DEMOTE_TIMEOUT, self.record("proxy", ns, None)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, namespace = ns, "could not remove the proxy record of a failed cutover; a restart would forward the namespace (to a target that refuses its writes): run `northwest migrate --abort`")
            }
            Err(_) => {
                tracing::error!(namespace = ns, "removing the proxy record of a failed cutover timed out; a restart would forward the namespace (to a target that refuses its writes): run `northwest migrate --abort`")
            }
        }
    }

    async fn remote_promote(
        &self,
        target: &str,
        ns: &str,
        on: bool,
        attempt: &str,
        timeout: Duration,
    ) -> Result<(), PeerCall> {
        let url = format!("{}{}", target.trim_end_matches('/'), api::path::PROMOTE);
        let method = if on {
            reqwest::Method::POST
        } else {
            reqwest::Method::DELETE
        };
        let mut rb = self.client.request(method, &url);
        if let Some(t) = &self.peer_token {
            rb = rb.bearer_auth(t.expose());
        }
        let r = rb
            .timeout(timeout.max(Duration::from_millis(1)))
            .json(&api::PromoteRequest {
                namespace: ns.to_string(),
                attempt: Some(attempt.to_string()),
                ..Default::default()
            })
            .send()
            .await
            .map_err(|e| {
                let text = format!("{url}: {}", peer_error(&e));
                // No connection (refused, or a peer that failed TLS
                // verification): the request never reached it.
                if e.is_connect() {
                    PeerCall::Refused(text)
                } else {
                    PeerCall::NoAnswer(text)
                }
            })?;
        let status = r.status();
        if status.is_success() {
            return Ok(());
        }
        let text = r.text().await.unwrap_or_default();
        let e = format!(
            "{url}: {status}: {}",
            text.chars().take(300).collect::<String>()
        );
        // A 4xx is the target's own refusal; anything else (a 5xx, a
        // gateway's answer) says nothing certain about what it did.
        Err(if status.is_client_error() {
            PeerCall::Refused(e)
        } else {
            PeerCall::NoAnswer(e)
        })
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

    async fn forward(&self, target: &str, req: Request) -> Response {
        let hops = hops(&req) + 1;
        let (parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let url = format!("{}{path}", target.trim_end_matches('/'));
        // The URL parser resolves dot segments; the node refuses paths with
        // them before any layer judges the request (`run::serve::dot_segments`), so
        // what is forwarded is what was authorised.
        let body = match axum::body::to_bytes(body, 64 << 20).await {
            Ok(b) => b,
            Err(e) => return proxy_error(StatusCode::BAD_REQUEST, format!("reading body: {e}")),
        };
        let mut rb = self
            .client
            .request(parts.method.clone(), &url)
            .header(FORWARDED, hops.to_string())
            .body(body);
        for (name, value) in parts.headers.iter() {
            // Origin was judged here (auth::browser_guard); n2 would see
            // n1's origin as foreign.
            if name != "host" && name != "content-length" && name != "origin" && name != FORWARDED {
                rb = rb.header(name, value);
            }
        }
        let r = match rb.send().await {
            Ok(r) => r,
            Err(e) => return upstream_failed(target, &e),
        };
        let mut resp = Response::builder().status(r.status());
        for (name, value) in r.headers() {
            if name != "content-length" && name != "transfer-encoding" {
                resp = resp.header(name, value);
            }
        }
        // A body cut short is an upstream failure, never an empty 200.
        match r.bytes().await {
            Ok(bytes) => resp.body(Body::from(bytes)).unwrap_or_else(|e| {
                proxy_error(
                    StatusCode::BAD_GATEWAY,
                    format!("bad upstream response: {e}"),
                )
            }),
            Err(e) => upstream_failed(target, &e),
        }
    }
}

fn upstream_failed(target: &str, e: &reqwest::Error) -> Response {
    let status = if e.is_timeout() {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::BAD_GATEWAY
    };
    // A request that could not be built (a scheme the node refuses) fails
    // the same way every time.
    let next = if e.is_builder() {
        "the node's operator must fix the proxy target (see /readyz)"
    } else {
        "retry the request"
    };
    proxy_error(
        status,
        format!(
            "proxy to the namespace's new primary {target} failed: {}; {next}",
            peer_error(e)
        ),
    )
}

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

fn error_body(code: ErrorCode, error: String) -> axum::Json<ErrorBody> {
    axum::Json(ErrorBody { code, error })
}

fn proxy_error(status: StatusCode, message: String) -> Response {
    (status, error_body(ErrorCode::Proxy, message)).into_response()
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

fn is_write(m: &Method) -> bool {
    m == Method::PUT || m == Method::DELETE || m == Method::POST
}

/// Application-API middleware: writes to a namespace pass its fence; every
/// request of a proxied namespace is forwarded.
pub async fn gate_layer(State(gate): State<Arc<Gate>>, req: Request, next: Next) -> Response {
    let Some(ns) = data_namespace(req.uri().path()).map(str::to_string) else {
        return next.run(req).await;
    };
    if let Some(why) = gate.retired.lock().clone() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            error_body(ErrorCode::NameTaken, why),
        )
            .into_response();
    }
    // The handlers see the percent-decoded namespace: an encoded one would
    // be gated under another name. Valid namespaces never need encoding.
    if ns.contains('%') {
        return (
            StatusCode::BAD_REQUEST,
            error_body(
                ErrorCode::BadNamespace,
                "namespace must be written unencoded ([A-Za-z0-9_.-])".into(),
            ),
        )
            .into_response();
    }
    // An invalid namespace is the handler's 400; it must not get a gate
    // entry of its own (one per distinct string sent would never be freed).
    if northwest_store::key::Namespace::new(&ns).is_err() {
        return next.run(req).await;
    }
    let hops_in = hops(&req);
    if is_write(req.method()) {
        // Refused before the namespace gets a gate entry (and metric series):
        // writes to made-up namespaces on a replica must not grow them.
        if gate.proxy(&ns).is_none() {
            if let Some(why) = gate.replica_refusal(&ns, hops_in) {
                return (StatusCode::CONFLICT, error_body(ErrorCode::Replica, why)).into_response();
            }
        }
        let g = gate.of(&ns);
        let permit = g.lock.clone().read_owned().await;
        if let Some(target) = gate
            .proxy(&ns)
            .filter(|_| !gate.serves_promoted(&ns, hops_in))
        {
            drop(permit);
            if hops_in >= MAX_HOPS {
                return forward_loop(&ns, &target);
            }
            return gate.forward(&target, req).await;
        }
        if let Some(why) = gate.replica_refusal(&ns, hops_in) {
            return (StatusCode::CONFLICT, error_body(ErrorCode::Replica, why)).into_response();
        }
        let resp = next.run(req).await;
        drop(permit);
        return resp;
    }
    match gate.proxy(&ns) {
        Some(_) if local_digest(&req, &ns) => next.run(req).await,
        Some(_) if gate.serves_promoted(&ns, hops_in) => next.run(req).await,
        // Forwarded here by a node that forwards the namespace, while this
        // one does too: a switch is under way. Wait out this node's fence
        // (the switch holds it), then decide.
        Some(_) if hops(&req) >= 1 => {
            drop(gate.of(&ns).lock.clone().read_owned().await);
            match gate.proxy(&ns) {
                None => next.run(req).await,
                Some(target) if hops(&req) >= MAX_HOPS => forward_loop(&ns, &target),
                Some(target) => gate.forward(&target, req).await,
            }
        }
        Some(target) => gate.forward(&target, req).await,
        None => next.run(req).await,
    }
}

/// A request another node forwarded here, for a namespace this node
/// forwards too.
fn forward_loop(ns: &str, target: &str) -> Response {
    tracing::warn!(namespace = ns, %target, "a request forwarded twice would be forwarded again: both nodes forward this namespace");
    proxy_error(
        StatusCode::LOOP_DETECTED,
        format!(
            "namespace {ns} is forwarded by this node to {target} and by the node that sent \
             this here: a rollback or cutover stopped midway; run `northwest migrate --rollback` \
             (or the migration) again to finish it"
        ),
    )
}

/// The namespace digest itself (`GET /v1/ns/{ns}/digest?local=true`, an
/// admin read) asking for this node's own copy.
fn local_digest(req: &Request, ns: &str) -> bool {
    req.method() == Method::GET
        && req.uri().path() == format!("/v1/ns/{ns}/digest")
        && req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "local=true"))
}

#[cfg(test)]
mod promotion_tests {
    use super::{Gate, PromoteError, Promotion};

    fn replica() -> Gate {
        Gate::new(None, Some("journal".into()))
    }

    /// A late confirmation, a late demotion and a late promotion each leave
    /// the state the newer step made.
    #[tokio::test]
    async fn late_steps_never_undo_newer_ones() {
        let g = replica();
        let ok = |r: Result<(), PromoteError>| r.expect("step");
        ok(g.promote("app", Promotion::Attempt("a1"), |_| {}).await);
        assert_eq!(g.unconfirmed(), vec!["app".to_string()]);
        // Only requests the old primary forwarded are served meanwhile.
        assert!(!g.serves_promoted("app", 0) && g.serves_promoted("app", 1));
        // A demotion of another attempt leaves this one.
        ok(g.promote("app", Promotion::Demote(Some("a0")), |_| {})
            .await);
        assert_eq!(g.promoted(), vec!["app".to_string()]);
        ok(g.promote("app", Promotion::Confirm, |_| {}).await);
        assert!(g.unconfirmed().is_empty() && g.serves_promoted("app", 0));
        // The first attempt's demotion arriving after the switch: kept.
        ok(g.promote("app", Promotion::Demote(Some("a1")), |_| {})
            .await);
        assert_eq!(g.promoted(), vec!["app".to_string()]);
        // A rollback demotes; a confirmation arriving after it is refused.
        ok(g.promote("app", Promotion::Demote(None), |_| {}).await);
        assert!(matches!(
            g.promote("app", Promotion::Confirm, |_| {}).await,
            Err(PromoteError::NotPromoted(_))
        ));
        assert!(g.promoted().is_empty());
        // A promotion whose own demotion came first is refused.
        assert!(matches!(
            g.promote("app", Promotion::Attempt("a1"), |_| {}).await,
            Err(PromoteError::Cancelled(_))
        ));
    }

    /// An operator's promotion of a replica that forwards the namespace
    /// (its old primary serves it) is refused unless forced.
    #[tokio::test]
    async fn an_operator_promotion_of_a_forwarding_replica_needs_force() {
        let g = replica();
        g.set_proxy("app", Some("http://127.0.0.1:1".into()))
            .await
            .unwrap();
        assert!(matches!(
            g.promote("app", Promotion::Operator { force: false }, |_| {})
                .await,
            Err(PromoteError::Forwards { .. })
        ));
        assert!(g.promoted().is_empty() && g.proxy("app").is_some());
        let journaled = std::sync::Mutex::new(None);
        g.promote("app", Promotion::Operator { force: true }, |on| {
            *journaled.lock().unwrap() = Some(on)
        })
        .await
        .unwrap();
        assert!(g.proxy("app").is_none() && g.serves_promoted("app", 0));
        assert_eq!(*journaled.lock().unwrap(), Some(true));
    }
}
