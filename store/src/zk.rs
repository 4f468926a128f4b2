//! ZooKeeper coordination shared by every process under one root znode.
//!
//! Locks are *leases*: a process that takes a group's ephemeral znode keeps it
//! after a transaction and serves further local transactions on that group
//! through its [`LockTable`] without a ZooKeeper round trip. Another process
//! that wants the group writes `wanted` into the lease znode; the holder
//! watches its own znode and gives the lease back once the transactions
//! already queued on it locally finish, so an uncontended lease costs nothing
//! and a contended one is handed over after one transaction. It is also given
//! back when idle for `lease_idle`, and at the end of a transaction once held
//! for `lease_max_hold` (a backstop should a signal be lost). Exclusivity
//! across processes comes from the ephemeral znode alone; a commit first checks ([`Coordinator::fence`]) that
//! the lease was taken under the current, connected session. A crashed holder's
//! znode disappears when its session expires (after `session_timeout`).
//!
//! Layout under `root`: `locks/[<domain>:]<ns>:<group>` (ephemeral leases;
//! the domain is the node's name under `lock_scope = "deployment"`),
//! `txn_counter` (next free transaction id, decimal, CAS-updated in blocks),
//! `blacklist/<id>` (failed transactions).

use std::collections::HashSet;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::RwLock;
use tokio::task::JoinHandle;
use zookeeper_client as zk;

use crate::coord::{distinct_sorted, Coordinator, GroupLock, LockTable};
use crate::error::CoordError;
use crate::key::EntityGroup;
use crate::types::TxnId;

pub use config::{ZkConfig, ZkDigest};

mod budget;
mod config;
mod lease;

/// Most lease znodes created or deleted in one ZooKeeper multi-op, and
/// most bytes of their paths: a request over ZooKeeper's limit (1 MB by
/// default) would cost the connection.
pub(super) const LEASE_BATCH: usize = 500;
pub(super) const LEASE_BATCH_BYTES: usize = 256 << 10;

fn zk_err(e: zk::Error) -> CoordError {
    match e {
        zk::Error::SessionExpired | zk::Error::ClientClosed => CoordError::SessionLost,
        other => CoordError::Zk(other.to_string()),
    }
}

struct Session {
    client: zk::Client,
    gen: u64,
    /// The path bytes of the leases held under this session.
    ledger: budget::Ledger,
}

struct Inner {
    cfg: ZkConfig,
    session: RwLock<Arc<Session>>,
    next_gen: AtomicU64,
    table: LockTable,
    blacklist: RwLock<HashSet<u64>>,
}

/// Coordination through ZooKeeper; see the module docs.
pub struct ZkCoordinator {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for ZkCoordinator {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn connect_client(cfg: &ZkConfig) -> Result<zk::Client, CoordError> {
    let client = cfg
        .auth
        .connector()
        .with_session_timeout(cfg.session_timeout)
        .with_connection_timeout(Duration::from_secs(5))
        .connect(&cfg.connect)
        .await
        .map_err(|e| {
            CoordError::Zk(format!(
                "cannot connect to ZooKeeper at {}: {e} (is it running? try deploy/stack.sh up)",
                cfg.connect
            ))
        })?;
    let acls = cfg.auth.acls();
    for dir in ["", "/locks", "/blacklist"] {
        ensure_path(&client, &format!("{}{dir}", cfg.root), &cfg.root, &acls)
            .await
            .map_err(zk_err)?;
    }
    let opts = zk::CreateMode::Persistent.with_acls(acls);
    match client
        .create(&format!("{}/txn_counter", cfg.root), b"1", &opts)
        .await
    {
        Ok(_) | Err(zk::Error::NodeExists) => {}
        Err(zk::Error::NoAuth) => return Err(no_auth(cfg)),
        Err(e) => return Err(zk_err(e)),
    }
    if cfg.auth.is_set() {
        check_closed(&client, cfg).await?;
    }
    Ok(client)
}

fn no_auth(cfg: &ZkConfig) -> CoordError {
    CoordError::Zk(format!(
        "ZooKeeper refused access to {} (NoAuth): its znodes were created with credentials; \
         set coordination.auth_file (or migrate --zk-auth-file) to the deployment's",
        cfg.root
    ))
}

/// With credentials, the protection holds only if the root and the znodes
/// made with it are closed: a root that already existed with open ACLs (a
/// run without credentials, or created by someone else) would leave leases,
/// the id counter and the routing state writable by anyone. Refused.
async fn check_closed(client: &zk::Client, cfg: &ZkConfig) -> Result<(), CoordError> {
    for dir in ["", "/locks", "/blacklist", "/txn_counter"] {
        let path = format!("{}{dir}", cfg.root);
        let (acls, _) = client.get_acl(&path).await.map_err(|e| match e {
            zk::Error::NoAuth => no_auth(cfg),
            e => zk_err(e),
        })?;
        if let Some(open) = acls.iter().find(|a| a.scheme() != "digest") {
            return Err(CoordError::Zk(format!(
                "{path} exists with an ACL that is not the deployment's credentials \
                 ({}:{}): it was created without coordination.auth_file. Start on a fresh \
                 coordination.root, or set its ACLs with ZooKeeper's setAcl",
                open.scheme(),
                open.id()
            )));
        }
    }
    Ok(())
}

/// Creates `path` and its missing parents as empty persistent znodes:
/// those at or under the deployment's `root` with `acls`, those above it
/// (shared by other deployments' roots) open.
pub async fn ensure_path(
    client: &zk::Client,
    path: &str,
    root: &str,
    acls: &zk::Acls<'_>,
) -> Result<(), zk::Error> {
    let mut at = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        at.push('/');
        at.push_str(part);
        let above_root = at.len() < root.len() && root.starts_with(&format!("{at}/"));
        let opts = if above_root {
            zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
        } else {
            zk::CreateMode::Persistent.with_acls(*acls)
        };
        match client.create(&at, &[], &opts).await {
            Ok(_) | Err(zk::Error::NodeExists) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl ZkCoordinator {
    pub async fn connect(cfg: ZkConfig) -> Result<Self, CoordError> {
        if !cfg.root.starts_with('/') || cfg.root.ends_with('/') {
            return Err(CoordError::Zk(format!(
                "root {:?} must start with '/' and not end with one",
                cfg.root
            )));
        }
        let client = connect_client(&cfg).await?;
        let inner = Arc::new(Inner {
            session: RwLock::new(Arc::new(Session {
                client,
                gen: 1,
                ledger: budget::Ledger::default(),
            })),
            next_gen: AtomicU64::new(2),
            table: LockTable::default(),
            blacklist: RwLock::default(),
            cfg,
        });
        inner.load_blacklist().await?;
        let tasks = vec![
            tokio::spawn(Inner::watch_session(inner.clone())),
            tokio::spawn(Inner::reap_leases(inner.clone())),
            tokio::spawn(Inner::watch_blacklist(inner.clone())),
        ];
        Ok(Self { inner, tasks })
    }

    /// The underlying client of the current session (for other ZooKeeper
    /// state such as migration phases).
    pub fn client(&self) -> zk::Client {
        self.inner.session().client.clone()
    }

    pub fn root(&self) -> &str {
        &self.inner.cfg.root
    }

    /// The ACLs for znodes this deployment creates (see [`ZkDigest`]).
    pub fn acls(&self) -> zk::Acls<'static> {
        self.inner.cfg.auth.acls()
    }

    /// Number of groups this process currently holds a lease on.
    pub fn leases_held(&self) -> usize {
        let gen = self.inner.session().gen;
        self.inner
            .table
            .entries()
            .iter()
            .filter(|(_, s)| {
                s.try_lock()
                    .map(|s| s.held_gen == Some(gen))
                    .unwrap_or(true)
            })
            .count()
    }
}

impl Inner {
    fn session(&self) -> Arc<Session> {
        self.session.read().clone()
    }

    fn lease_path(&self, key: &str) -> String {
        let domain = if self.cfg.lock_domain.is_empty() {
            String::new()
        } else {
            format!("{}:", self.cfg.lock_domain)
        };
        format!(
            "{}/locks/{domain}{}",
            self.cfg.root,
            key.replacen('/', ":", 1)
        )
    }

    async fn load_blacklist(&self) -> Result<(), CoordError> {
        let s = self.session();
        let ids = s
            .client
            .list_children(&format!("{}/blacklist", self.cfg.root))
            .await
            .map_err(zk_err)?;
        let mut set = self.blacklist.write();
        set.extend(ids.iter().filter_map(|c| c.parse::<u64>().ok()));
        Ok(())
    }

    /// Replaces an expired session: every lease taken under the old one is void.
    async fn watch_session(self: Arc<Self>) {
        loop {
            let client = self.session().client.clone();
            let mut watcher = client.state_watcher();
            // Read after the watcher is taken: a session that ended before
            // it would never fire it, and no session would replace it.
            let mut state = client.state();
            while !state.is_terminated() {
                state = watcher.changed().await;
            }
            tracing::warn!(
                ?state,
                "ZooKeeper session ended; reconnecting with a new session"
            );
            loop {
                match connect_client(&self.cfg).await {
                    Ok(client) => {
                        let gen = self.next_gen.fetch_add(1, Ordering::SeqCst);
                        *self.session.write() = Arc::new(Session {
                            client,
                            gen,
                            ledger: budget::Ledger::default(),
                        });
                        if let Err(e) = self.load_blacklist().await {
                            tracing::warn!(error = %e, "reloading the blacklist failed");
                        }
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "ZooKeeper reconnect failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }
    }

    async fn watch_blacklist(self: Arc<Self>) {
        let dir = format!("{}/blacklist", self.cfg.root);
        loop {
            let s = self.session();
            match s
                .client
                .watch(&dir, zk::AddWatchMode::PersistentRecursive)
                .await
            {
                Ok(mut w) => {
                    // A reload after registering closes the gap before the watch.
                    let _ = self.load_blacklist().await;
                    loop {
                        let ev = w.changed().await;
                        if ev.event_type == zk::EventType::Session {
                            break;
                        }
                        if let Some(id) = ev
                            .path
                            .rsplit('/')
                            .next()
                            .and_then(|c| c.parse::<u64>().ok())
                        {
                            self.blacklist.write().insert(id);
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "blacklist watch failed; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[async_trait]
impl Coordinator for ZkCoordinator {
    async fn lock(&self, group: &EntityGroup) -> Result<GroupLock, CoordError> {
        let mut locks = self.lock_many(std::slice::from_ref(group)).await?;
        Ok(locks.pop().expect("one lock per distinct group"))
    }

    async fn lock_many(&self, groups: &[EntityGroup]) -> Result<Vec<GroupLock>, CoordError> {
        let deadline = Instant::now() + self.inner.cfg.lock_timeout;
        let groups = distinct_sorted(groups);
        loop {
            let s = self.inner.session();
            match self.lock_under(&s, &groups, deadline).await {
                // The session ended under us (its leases with it); a new one
                // is on its way (`watch_session`): take them there, within
                // the lock's time, rather than fail the transaction.
                Err(e) if Instant::now() < deadline && self.inner.ended(&s, &e) => {
                    self.inner.next_session(s.gen, deadline).await?;
                }
                r => return r,
            }
        }
    }

    async fn release(&self, mut lock: GroupLock) {
        let wanted = lock.guard.wanted.load(Ordering::Acquire);
        if !wanted && lock.guard.acquired_at.elapsed() < self.inner.cfg.lease_max_hold {
            return;
        }
        let key = lock.group.journal_key();
        self.inner
            .give_back(&self.inner.session(), &mut lock.guard, &key, wanted)
            .await;
    }

    async fn surrender(&self, mut lock: GroupLock) {
        // The znode goes if this session owns it (owner-checked: whatever
        // happened to our lease, a newer holder's znode stays): one left
        // behind would be recognised as ours by the next take, old token
        // and all.
        let s = self.inner.session();
        if lock.held_gen() == Some(s.gen) {
            let path = self.inner.lease_path(&lock.group.journal_key());
            lease::remove_if_ours(&s.client, &path).await;
        }
        lock.forget_lease();
    }

    async fn lease_is_live(&self, lock: &GroupLock) -> bool {
        let s = self.inner.session();
        if lock.held_gen() != Some(s.gen) {
            return false;
        }
        let path = self.inner.lease_path(&lock.group.journal_key());
        matches!(
            s.client.check_stat(&path).await,
            Ok(Some(st)) if st.ephemeral_owner == s.client.session_id().0
                && Some(st.czxid) == lock.token()
        )
    }

    fn fence(&self, lock: &GroupLock) -> Result<(), CoordError> {
        let s = self.inner.session();
        let connected = matches!(s.client.state(), zk::SessionState::SyncConnected);
        if lock.held_gen() == Some(s.gen) && connected {
            Ok(())
        } else {
            Err(CoordError::SessionLost)
        }
    }

    fn check_ready(&self) -> Result<(), CoordError> {
        let s = self.inner.session();
        match s.client.state() {
            zk::SessionState::SyncConnected => Ok(()),
            other => Err(CoordError::Zk(format!(
                "ZooKeeper session is {other:?} (is ZooKeeper up? deploy/stack.sh status)"
            ))),
        }
    }

    async fn allocate_ids(&self, count: u64) -> Result<Range<u64>, CoordError> {
        self.allocate_ids_above(count, 0).await
    }

    async fn allocate_ids_above(&self, count: u64, min: u64) -> Result<Range<u64>, CoordError> {
        let s = self.inner.session();
        let path = format!("{}/txn_counter", self.inner.cfg.root);
        loop {
            let (data, stat) = s.client.get_data(&path).await.map_err(zk_err)?;
            let cur: u64 = std::str::from_utf8(&data)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .ok_or_else(|| CoordError::Zk(format!("{path} holds {data:?}, not a number")))?;
            let start = cur.max(min);
            let next = (start + count).to_string();
            match s
                .client
                .set_data(&path, next.as_bytes(), Some(stat.version))
                .await
            {
                Ok(_) => return Ok(start..start + count),
                Err(zk::Error::BadVersion) => continue,
                Err(e) => return Err(zk_err(e)),
            }
        }
    }

    async fn blacklist(&self, id: TxnId) -> Result<(), CoordError> {
        self.inner.blacklist.write().insert(id.0);
        let s = self.inner.session();
        let opts = zk::CreateMode::Persistent.with_acls(self.inner.cfg.auth.acls());
        match s
            .client
            .create(
                &format!("{}/blacklist/{}", self.inner.cfg.root, id.0),
                &[],
                &opts,
            )
            .await
        {
            Ok(_) | Err(zk::Error::NodeExists) => Ok(()),
            Err(e) => Err(zk_err(e)),
        }
    }

    fn is_blacklisted(&self, id: TxnId) -> bool {
        self.inner.blacklist.read().contains(&id.0)
    }

    fn describe(&self) -> String {
        format!(
            "zookeeper {} {}",
            self.inner.cfg.connect, self.inner.cfg.root
        )
    }
}
