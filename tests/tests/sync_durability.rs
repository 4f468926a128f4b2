//! `journal.durability = "sync"` holds on every node that journals client
//! writes, including a promoted target (its writes go to the journal topic
//! too): with no broker to acknowledge them, its writes are refused with
//! 503 instead of acknowledged. In-process nodes (memory engine, local
//! locks) whose broker address has nothing listening.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use northwest_node::config::{CoordinationMode, Durability, EngineKind, NodeConfig};
use serde_json::json;

async fn start_target(durability: Durability) -> (String, tokio::sync::oneshot::Sender<()>) {
    let mut cfg = NodeConfig {
        name: "n2".into(),
        ..NodeConfig::default()
    };
    cfg.store.engine = EngineKind::Memory;
    cfg.coordination.mode = CoordinationMode::Local;
    cfg.http.listen = "127.0.0.1:0".parse().unwrap();
    cfg.journal.apply = true;
    // Nothing listens here: no record can ever be acknowledged.
    cfg.journal.brokers = format!("127.0.0.1:{}", northwest_tests::free_port());
    cfg.journal.durability = durability;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready, addr) = tokio::sync::oneshot::channel::<SocketAddr>();
    tokio::spawn(async move {
        let stopped = async {
            let _ = stopped.await;
        };
        let _ = northwest_node::run(cfg, stopped, Some(ready)).await;
    });
    let addr = addr.await.expect("node started");
    (format!("http://{addr}"), stop)
}

/// Promotes `ns` on the target, then times one PUT to it.
async fn promoted_put(base: &str) -> (u16, Duration) {
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{base}/v1/admin/promote"))
        .json(&json!({"namespace": "app"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "promote: {}", r.text().await.unwrap());
    let t = Instant::now();
    let r = c
        .put(format!("{base}/v1/ns/app/e/Acct:1"))
        .body("v1")
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promoted_target_with_sync_durability_refuses_unshipped_writes() {
    let (base, _stop) = start_target(Durability::Sync).await;
    let (status, took) = promoted_put(&base).await;
    assert_eq!(
        status, 503,
        "a promoted target under sync durability acknowledged a write the journal never \
         shipped (took {took:?})"
    );
    // The same write on the same kind of node under async durability is
    // acknowledged at once: the refusal above is the durability promise.
    let (base, _stop) = start_target(Durability::Async).await;
    let (status, _) = promoted_put(&base).await;
    assert_eq!(status, 200, "async durability acknowledges at once");
}
