//! The node's reads of the records the orchestrator keeps in ZooKeeper.

use serde_json::Value;

use crate::state::NodeState;

/// Every migration recorded under the deployment's ZooKeeper root.
/// `strict`: a record that is not JSON is an error (marker GC must not
/// overlook a migration), not skipped.
pub(crate) async fn read_migrations(st: &NodeState, strict: bool) -> Result<Vec<Value>, String> {
    let Some(zk) = &st.zk else {
        return Ok(Vec::new());
    };
    let client = zk.client();
    let dir = format!("{}/migrations", st.zk_root);
    let names = match client.list_children(&dir).await {
        Ok(n) => n,
        Err(zookeeper_client::Error::NoNode) => return Ok(Vec::new()),
        Err(e) => return Err(e.to_string()),
    };
    let mut out = Vec::new();
    for n in names {
        match client.get_data(&format!("{dir}/{n}")).await {
            Ok((d, _)) => match serde_json::from_slice::<Value>(&d) {
                Ok(v) => out.push(v),
                Err(e) if strict => return Err(format!("{dir}/{n}: not a migration record: {e}")),
                Err(_) => {}
            },
            Err(zookeeper_client::Error::NoNode) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(out)
}
