//! Values derived from a node's config: its consumer groups, its
//! ZooKeeper settings, the marker retention in milliseconds, the largest
//! transaction body.

use std::time::Duration;

use super::{HttpConfig, LockScope, NodeConfig};

impl HttpConfig {
    /// The largest transaction body (JSON, values base64) the API reads.
    pub fn max_txn_body_bytes(&self) -> usize {
        self.max_value_bytes.saturating_mul(8)
    }
}

impl NodeConfig {
    /// The consumer group of this node's reader `kind` (`apply`, `load`,
    /// `reverse`): see [`super::JournalConfig::consumer_group_prefix`].
    pub fn consumer_group(&self, kind: &str) -> String {
        let prefix = match self.journal.consumer_group_prefix.as_str() {
            "" => {
                let root = self.coordination.root.trim_matches('/').replace('/', "-");
                if root.is_empty() {
                    "northwest".to_string()
                } else {
                    root
                }
            }
            p => p.to_string(),
        };
        format!("{prefix}-{kind}-{}", self.name)
    }

    /// `store.marker_retention_hours` in milliseconds.
    pub fn marker_retention_ms(&self) -> u64 {
        (self.store.marker_retention_hours * 3_600_000.0) as u64
    }

    pub fn zk(&self) -> northwest_store::ZkConfig {
        let c = &self.coordination;
        northwest_store::ZkConfig {
            connect: c.connect.clone(),
            root: c.root.clone(),
            session_timeout: Duration::from_millis(c.session_timeout_ms),
            lock_timeout: Duration::from_millis(c.lock_timeout_ms),
            lease_idle: Duration::from_millis(c.lease_idle_ms),
            lease_max_hold: Duration::from_millis(c.lease_max_hold_ms),
            lock_domain: match c.lock_scope {
                LockScope::Deployment => self.name.clone(),
                LockScope::Shared => String::new(),
            },
            auth: northwest_store::ZkDigest::default(),
            ..Default::default()
        }
    }
}
