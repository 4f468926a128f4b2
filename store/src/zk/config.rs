//! How the store reaches ZooKeeper: the connection settings and the digest
//! credentials (never printed).

use std::time::Duration;

use zookeeper_client as zk;

#[derive(Debug, Clone)]
pub struct ZkConfig {
    /// `host:port[,host:port...]`
    pub connect: String,
    /// Root znode shared by every deployment taking part (e.g. `/northwest/prod`).
    pub root: String,
    pub session_timeout: Duration,
    pub lock_timeout: Duration,
    pub lease_idle: Duration,
    pub lease_max_hold: Duration,
    /// Lock domain: processes with the same domain exclude each other on a
    /// group. A node uses its deployment name, so n1's writers and n2's
    /// apply loop (different stores; version-fenced) do not convoy; an empty
    /// domain shares locks across every deployment under the root.
    pub lock_domain: String,
    /// Digest credentials: every znode at or under `root` is created
    /// readable and writable only by sessions holding them.
    pub auth: ZkDigest,
    /// Most bytes of lease paths one session holds at once (see
    /// `zk::budget`): their sum is the size of the record ZooKeeper logs
    /// when the session ends, which must stay under the servers'
    /// `jute.maxbuffer` (1 MB by default) or they cannot read their log.
    pub max_lease_bytes: usize,
}

/// Half of ZooKeeper's default `jute.maxbuffer` (0xfffff): room for the
/// session's other ephemeral znodes and for a server with the default.
pub const DEFAULT_MAX_LEASE_BYTES: usize = 512 << 10;

/// ZooKeeper digest credentials (`user:password`). Never printed.
#[derive(Clone, Default)]
pub struct ZkDigest(Option<String>);

impl std::fmt::Debug for ZkDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "ZkDigest(<redacted>)"
        } else {
            "ZkDigest(none)"
        })
    }
}

impl ZkDigest {
    /// `user:password`, as ZooKeeper's digest scheme takes it.
    pub fn new(user_password: &str) -> Result<Self, String> {
        match user_password.split_once(':') {
            Some((u, p)) if !u.is_empty() && p.len() >= 8 => Ok(Self(Some(user_password.to_string()))),
            _ => Err("ZooKeeper credentials must be user:password with a password of 8 or more characters".into()),
        }
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// A connector that authenticates each session it opens.
    pub fn connector(&self) -> zk::Connector {
        let c = zk::Client::connector();
        match &self.0 {
            Some(d) => c.with_auth("digest", d.as_bytes()),
            None => c,
        }
    }

    /// ACLs for znodes of the deployment: only the credentials' holders
    /// when set, open otherwise.
    pub fn acls(&self) -> zk::Acls<'static> {
        if self.is_set() {
            zk::Acls::creator_all()
        } else {
            zk::Acls::anyone_all()
        }
    }
}

impl Default for ZkConfig {
    fn default() -> Self {
        Self {
            connect: "127.0.0.1:2181".into(),
            root: "/northwest/default".into(),
            session_timeout: Duration::from_secs(6),
            lock_timeout: Duration::from_secs(10),
            lease_idle: Duration::from_secs(2),
            lease_max_hold: Duration::from_secs(5),
            lock_domain: String::new(),
            auth: ZkDigest::default(),
            max_lease_bytes: DEFAULT_MAX_LEASE_BYTES,
        }
    }
}
