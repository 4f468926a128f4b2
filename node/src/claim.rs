//! The node's name, claimed exclusively in ZooKeeper: an ephemeral znode
//! `<root>/nodes/<name>/claim` holding this process's instance id and
//! listen address. Proxy and promotion records live under the name, so two
//! processes with one name (a copied config, a host restarted while the old
//! process still runs) would both act on them and fork the data. A second
//! claimant waits out a crashed holder's session (its claim vanishes at
//! expiry) and refuses to start, naming the holder, while the holder lives.
//! A holder that loses its claim to another instance (its session expired
//! while it was paused) stops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use northwest_control::ZkLayout;
use northwest_store::ZkCoordinator;
use serde::{Deserialize, Serialize};
use zookeeper_client as zk;

/// A claim this process holds.
pub struct NameClaim {
    zk: Arc<ZkCoordinator>,
    path: String,
    name: String,
    pub instance: String,
    data: Vec<u8>,
}

/// Why the name could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(
        "node name {name} is held by another running instance ({holder}): two processes \
         with one name would both act on its proxy and promotion records. Stop the other \
         process, or give this node its own `name`"
    )]
    Held { name: String, holder: String },
    #[error("claiming node name {name} in ZooKeeper ({path}): {source}")]
    Zk {
        name: String,
        path: String,
        source: zk::Error,
    },
}

/// What a claim holds: who holds the name, and where it listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ClaimRecord {
    instance: String,
    listen: String,
    pid: u32,
    started_ms: i64,
}

fn describe(data: &[u8]) -> String {
    match serde_json::from_slice::<ClaimRecord>(data) {
        Ok(c) => format!(
            "instance {} listening on {}, pid {}, since {} ms",
            c.instance, c.listen, c.pid, c.started_ms
        ),
        Err(e) => format!(
            "a claim that does not parse ({e}): {}",
            String::from_utf8_lossy(data)
        ),
    }
}

fn instance_of(data: &[u8]) -> Option<String> {
    serde_json::from_slice::<ClaimRecord>(data)
        .ok()
        .map(|c| c.instance)
}

impl NameClaim {
    /// Claims `name`, waiting up to `wait` (the session timeout and a
    /// margin) for a crashed holder's claim to expire.
    pub async fn take(
        zk: Arc<ZkCoordinator>,
        layout: &ZkLayout,
        name: &str,
        listen: SocketAddr,
        wait: Duration,
    ) -> Result<Self, ClaimError> {
        let instance = format!(
            "{:016x}",
            rand::random::<u64>() ^ northwest_store::store::now_ms_pub() as u64
        );
        let data = serde_json::to_vec(&ClaimRecord {
            instance: instance.clone(),
            listen: listen.to_string(),
            pid: std::process::id(),
            started_ms: northwest_store::store::now_ms_pub(),
        })
        .expect("plain data");
        let claim = Self {
            zk,
            path: layout.claim(name),
            name: name.to_string(),
            instance,
            data,
        };
        let deadline = tokio::time::Instant::now() + wait;
        let mut logged = false;
        loop {
            match claim.create().await? {
                None => return Ok(claim),
                Some(holder) if tokio::time::Instant::now() >= deadline => {
                    return Err(ClaimError::Held {
                        name: claim.name.clone(),
                        holder: describe(&holder),
                    })
                }
                Some(holder) => {
                    if !logged {
                        tracing::warn!(node = %claim.name, holder = %describe(&holder), "node name already claimed; waiting up to {wait:?} for a crashed holder's session to expire");
                        logged = true;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    /// Creates the claim; `Some(data)` of the holder if another has it.
    async fn create(&self) -> Result<Option<Vec<u8>>, ClaimError> {
        let client = self.zk.client();
        let err = |source| ClaimError::Zk {
            name: self.name.clone(),
            path: self.path.clone(),
            source,
        };
        if let Some((parent, _)) = self.path.rsplit_once('/') {
            northwest_store::zk::ensure_path(&client, parent, self.zk.root(), &self.zk.acls())
                .await
                .map_err(err)?;
        }
        let opts = zk::CreateMode::Ephemeral.with_acls(self.zk.acls());
        match client.create(&self.path, &self.data, &opts).await {
            Ok(_) => Ok(None),
            Err(zk::Error::NodeExists) => match client.get_data(&self.path).await {
                Ok((d, _)) if instance_of(&d).as_deref() == Some(self.instance.as_str()) => {
                    Ok(None)
                }
                Ok((d, _)) => Ok(Some(d)),
                // Gone between the two calls: try again.
                Err(zk::Error::NoNode) => Ok(Some(Vec::new())),
                Err(e) => Err(err(e)),
            },
            Err(e) => Err(err(e)),
        }
    }

    /// Keeps the claim for as long as the node runs: after a session
    /// expiry it is taken again. Resolves (with the reason) only if another
    /// instance holds it then: this process must stop serving.
    pub async fn keep(self) -> String {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            match self.create().await {
                Ok(None) => {}
                Ok(Some(holder)) if holder.is_empty() => {}
                Ok(Some(holder)) => {
                    return format!(
                        "node name {} was claimed by another instance ({}) while this one's \
                         ZooKeeper session was gone: this process stops so that one node \
                         acts under the name",
                        self.name,
                        describe(&holder)
                    )
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot check this node's name claim; retrying")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_names_its_holder_and_an_unreadable_one_says_so() {
        let data = serde_json::to_vec(&ClaimRecord {
            instance: "00ab".into(),
            listen: "127.0.0.1:8081".into(),
            pid: 42,
            started_ms: 7,
        })
        .unwrap();
        assert_eq!(instance_of(&data).as_deref(), Some("00ab"));
        let d = describe(&data);
        assert!(
            d.contains("00ab") && d.contains("127.0.0.1:8081") && d.contains("pid 42"),
            "{d}"
        );
        assert_eq!(instance_of(b"garbage"), None);
        assert!(describe(b"garbage").contains("does not parse"));
    }
}
