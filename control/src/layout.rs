//! Where a deployment keeps its control-plane state in ZooKeeper, under its
//! root (`coordination.root`, `/northwest/default` unless configured). The
//! data plane's own znodes (entity-group `locks`, the `blacklist`, the
//! `txn_counter`) belong to `northwest-store`'s coordinator, beside these.
//!
//! ```text
//! <root>/migrations/<ns>           the migration record (MigrationRecord)
//! <root>/migration-owners/<ns>     the running orchestrator (ephemeral)
//! <root>/routing/<ns>              where clients go (RoutingRecord)
//! <root>/timelines/<ns>            the namespace's primaries over time (Timeline)
//! <root>/migration-history/<ns>/<id>  records of finished hops (MigrationRecord)
//! <root>/snapshots/<ns>/<id>       manifests of complete snapshot images
//! <root>/outbox/<node>             a source's outbox report (marker GC)
//! <root>/nodes/<node>/claim        the process holding a node name (ephemeral)
//! <root>/nodes/<node>/<kind>/<ns>  the node's gate records (forwarding, promotion)
//! ```

/// The paths of one deployment's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkLayout {
    root: String,
}

impl ZkLayout {
    pub fn new(root: impl Into<String>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    pub fn migrations(&self) -> String {
        format!("{}/migrations", self.root)
    }

    pub fn migration(&self, ns: &str) -> String {
        format!("{}/migrations/{ns}", self.root)
    }

    pub fn owners(&self) -> String {
        format!("{}/migration-owners", self.root)
    }

    pub fn owner(&self, ns: &str) -> String {
        format!("{}/migration-owners/{ns}", self.root)
    }

    pub fn routings(&self) -> String {
        format!("{}/routing", self.root)
    }

    pub fn routing(&self, ns: &str) -> String {
        format!("{}/routing/{ns}", self.root)
    }

    pub fn timelines(&self) -> String {
        format!("{}/timelines", self.root)
    }

    pub fn timeline(&self, ns: &str) -> String {
        format!("{}/timelines/{ns}", self.root)
    }

    /// Where a finished migration's record is kept once a later hop of its
    /// namespace replaces it.
    pub fn finished(&self, ns: &str, id: &str) -> String {
        format!("{}/migration-history/{ns}/{id}", self.root)
    }

    pub fn finished_dir(&self, ns: &str) -> String {
        format!("{}/migration-history/{ns}", self.root)
    }

    pub fn snapshots(&self, ns: &str) -> String {
        format!("{}/snapshots/{ns}", self.root)
    }

    pub fn snapshot(&self, ns: &str, id: &str) -> String {
        format!("{}/snapshots/{ns}/{id}", self.root)
    }

    pub fn outboxes(&self) -> String {
        format!("{}/outbox", self.root)
    }

    pub fn outbox(&self, node: &str) -> String {
        format!("{}/outbox/{node}", self.root)
    }

    /// Everything one node name keeps: its claim and its gate records.
    pub fn node(&self, node: &str) -> String {
        format!("{}/nodes/{node}", self.root)
    }

    pub fn claim(&self, node: &str) -> String {
        format!("{}/nodes/{node}/claim", self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_where_deployed_nodes_look_for_them() {
        let l = ZkLayout::new("/northwest/default");
        assert_eq!(l.migration("app"), "/northwest/default/migrations/app");
        assert_eq!(l.owner("app"), "/northwest/default/migration-owners/app");
        assert_eq!(l.routing("app"), "/northwest/default/routing/app");
        assert_eq!(l.snapshots("app"), "/northwest/default/snapshots/app");
        assert_eq!(l.outbox("n1"), "/northwest/default/outbox/n1");
        assert_eq!(l.timeline("app"), "/northwest/default/timelines/app");
        assert!(l.finished("app", "m1").starts_with(&l.finished_dir("app")));
        assert_eq!(l.claim("n1"), "/northwest/default/nodes/n1/claim");
        assert!(l.claim("n1").starts_with(&l.node("n1")));
    }
}
