//! The node's reads of the records the orchestrator keeps in ZooKeeper.

use northwest_control::{MigrationRecord, ZkLayout};
use northwest_store::ZkCoordinator;

/// Every migration recorded under the deployment's ZooKeeper root (none on
/// local coordination, `zk` None). `strict`: a record that does not parse
/// as a migration record is an error (marker GC must not overlook a
/// migration), not skipped.
pub(crate) async fn read_migrations(
    zk: Option<&ZkCoordinator>,
    layout: &ZkLayout,
    strict: bool,
) -> Result<Vec<MigrationRecord>, String> {
    let Some(zk) = zk else {
        return Ok(Vec::new());
    };
    let client = zk.client();
    let dir = layout.migrations();
    let names = match client.list_children(&dir).await {
        Ok(n) => n,
        Err(zookeeper_client::Error::NoNode) => return Ok(Vec::new()),
        Err(e) => return Err(e.to_string()),
    };
    let mut out = Vec::new();
    for n in names {
        let path = layout.migration(&n);
        match client.get_data(&path).await {
            Ok((d, _)) => match serde_json::from_slice::<MigrationRecord>(&d) {
                Ok(m) => out.push(m),
                Err(e) if strict => return Err(format!("{path}: not a migration record: {e}")),
                Err(_) => {}
            },
            Err(zookeeper_client::Error::NoNode) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(out)
}
