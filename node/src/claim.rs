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
    #[error(
        "node name {name} is served by {count} process(es) sharing its PostgreSQL schema \
         (store.postgres.shared = true): set shared in this node's config too, or give this \
         node its own `name`"
    )]
    Shared { name: String, count: usize },
    #[error(
        "node name {name} is held by a process that does not share its schema ({holder}): \
         stop it, or set store.postgres.shared = true in its config too"
    )]
    Exclusive { name: String, holder: String },
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

/// Where the processes sharing a node's schema each keep an ephemeral
/// znode (`<root>/nodes/<name>/instances/<instance>`).
fn instances_dir(layout: &ZkLayout, name: &str) -> String {
    let claim = layout.claim(name);
    let parent = claim.rsplit_once('/').map_or(claim.as_str(), |(p, _)| p);
    format!("{parent}/instances")
}

impl NameClaim {
    fn new(
        zk: Arc<ZkCoordinator>,
        path: impl FnOnce(&str) -> String,
        name: &str,
        listen: SocketAddr,
    ) -> Self {
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
        Self {
            zk,
            path: path(&instance),
            name: name.to_string(),
            instance,
            data,
        }
    }

    fn zk_err(&self, source: zk::Error) -> ClaimError {
        ClaimError::Zk {
            name: self.name.clone(),
            path: self.path.clone(),
            source,
        }
    }

    /// Gives the claim back (a conflict found after creating it).
    async fn remove(&self) {
        if let Err(e) = self.zk.client().delete(&self.path, None).await {
            tracing::warn!(path = %self.path, error = %e, "could not remove this process's claim; it goes with the session");
        }
    }

    /// Joins the processes serving `name` over one shared PostgreSQL schema
    /// (`store.postgres.shared`): each has an ephemeral znode of its own.
    /// Refused while a process holds the name alone, as that process is
    /// refused while any sharer is there: each side creates its own znode
    /// first and then looks for the other's, so one of two racing starts
    /// always sees the other.
    /// A crashed holder's claim is waited out, up to `wait`, as by
    /// [`NameClaim::take`].
    pub async fn join(
        zk: Arc<ZkCoordinator>,
        layout: &ZkLayout,
        name: &str,
        listen: SocketAddr,
        wait: Duration,
    ) -> Result<Self, ClaimError> {
        let dir = instances_dir(layout, name);
        let claim = Self::new(zk, |i| format!("{dir}/{i}"), name, listen);
        claim.create().await?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let holder = match claim.zk.client().get_data(&layout.claim(name)).await {
                Err(zk::Error::NoNode) => return Ok(claim),
                Ok((holder, _)) => holder,
                Err(e) => {
                    claim.remove().await;
                    return Err(claim.zk_err(e));
                }
            };
            if tokio::time::Instant::now() >= deadline {
                claim.remove().await;
                return Err(ClaimError::Exclusive {
                    name: name.to_string(),
                    holder: describe(&holder),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// How many processes share the name's schema now.
    async fn sharers(&self, layout: &ZkLayout) -> Result<usize, ClaimError> {
        let dir = instances_dir(layout, &self.name);
        match self.zk.client().list_children(&dir).await {
            Ok(c) => Ok(c.len()),
            Err(zk::Error::NoNode) => Ok(0),
            Err(source) => Err(ClaimError::Zk {
                name: self.name.clone(),
                path: dir,
                source,
            }),
        }
    }

    /// Claims `name`, waiting up to `wait` (the session timeout and a
    /// margin) for a crashed holder's claim to expire.
    pub async fn take(
        zk: Arc<ZkCoordinator>,
        layout: &ZkLayout,
        name: &str,
        listen: SocketAddr,
        wait: Duration,
    ) -> Result<Self, ClaimError> {
        let claim = Self::new(zk, |_| layout.claim(name), name, listen);
        let deadline = tokio::time::Instant::now() + wait;
        let mut logged = false;
        loop {
            match claim.create().await? {
                None => match claim.sharers(layout).await? {
                    0 => return Ok(claim),
                    count if tokio::time::Instant::now() >= deadline => {
                        claim.remove().await;
                        return Err(ClaimError::Shared {
                            name: claim.name.clone(),
                            count,
                        });
                    }
                    // Crashed sharers' znodes go with their sessions.
                    _ => tokio::time::sleep(Duration::from_millis(250)).await,
                },
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
