//! Test helper: takes an entity-group lock through ZooKeeper, prints
//! `LOCKED <session>` and holds it until killed (the test kill -9s it).

use std::sync::Arc;
use std::time::Duration;

use northwest_store::{Coordinator, EntityGroup, Namespace, ZkConfig, ZkCoordinator};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (zk, root, group, session_ms) = (
        &args[1],
        &args[2],
        &args[3],
        args[4].parse::<u64>().expect("ms"),
    );
    let cfg = ZkConfig {
        connect: zk.clone(),
        root: root.clone(),
        session_timeout: Duration::from_millis(session_ms),
        lease_idle: Duration::from_secs(3600),
        ..ZkConfig::default()
    };
    let coord = Arc::new(ZkCoordinator::connect(cfg).await.expect("connect"));
    let ns = Namespace::new("t").expect("ns");
    let g = EntityGroup::parse(&ns, group).expect("group");
    let lock = coord.lock(&g).await.expect("lock");
    println!("LOCKED {}", coord.client().session_id());
    tokio::time::sleep(Duration::from_secs(3600)).await;
    drop(lock);
}
