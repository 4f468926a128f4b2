//! The node's reads of the records the orchestrator keeps in ZooKeeper.

use northwest_control::{Phase, ZkLayout};
use northwest_store::ZkCoordinator;
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// The part of a migration record marker GC decides on: a record written
/// by another version (fields added or renamed) still tells it whether a
/// migration holds its namespace.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct MigrationPhase {
    pub ns: String,
    pub phase: Phase,
}

/// The records read, and the ones that would not parse (`"path: why"`).
#[derive(Debug)]
pub(crate) struct Records<T> {
    pub read: Vec<T>,
    pub unreadable: Vec<String>,
}

/// Every migration recorded under the deployment's ZooKeeper root, read as
/// `T` (none on local coordination, `zk` None). A record that does not parse
/// is listed in `unreadable`, never dropped silently: the caller decides
/// whether it stops it (marker GC) or is shown (metrics, the log).
pub(crate) async fn read_migrations<T: DeserializeOwned>(
    zk: Option<&ZkCoordinator>,
    layout: &ZkLayout,
) -> Result<Records<T>, String> {
    let mut out = Records {
        read: Vec::new(),
        unreadable: Vec::new(),
    };
    let Some(zk) = zk else {
        return Ok(out);
    };
    let client = zk.client();
    let dir = layout.migrations();
    let names = match client.list_children(&dir).await {
        Ok(n) => n,
        Err(zookeeper_client::Error::NoNode) => return Ok(out),
        Err(e) => return Err(format!("listing {dir}: {e}")),
    };
    for n in names {
        let path = layout.migration(&n);
        match client.get_data(&path).await {
            Ok((d, _)) => match serde_json::from_slice::<T>(&d) {
                Ok(m) => out.read.push(m),
                Err(e) => out
                    .unreadable
                    .push(format!("{path}: not a migration record: {e}")),
            },
            Err(zookeeper_client::Error::NoNode) => {}
            Err(e) => return Err(format!("reading {path}: {e}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_gc_reads_the_phase_of_a_record_it_could_not_read_whole() {
        // A newer orchestrator's record: fields this build lacks, none it needs.
        let newer = br#"{"ns": "app", "phase": "catch-up", "epoch": 3, "hwms": "moved"}"#;
        let m: MigrationPhase = serde_json::from_slice(newer).unwrap();
        assert_eq!((m.ns.as_str(), m.phase), ("app", Phase::CatchUp));
        assert!(serde_json::from_slice::<northwest_control::MigrationRecord>(newer).is_err());
    }
}
