//! An in-process node on the in-memory engine with local locks (no external
//! services), shared by the API test files.

#![allow(dead_code)]

use std::net::SocketAddr;

use base64::Engine as _;
use northwest_node::config::{CoordinationMode, EngineKind, NodeConfig};
use serde_json::Value;

pub struct Node {
    pub base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub async fn start(max_value_bytes: usize) -> Node {
    let mut cfg = NodeConfig::default();
    cfg.store.engine = EngineKind::Memory;
    cfg.coordination.mode = CoordinationMode::Local;
    cfg.http.listen = "127.0.0.1:0".parse().unwrap();
    cfg.http.max_value_bytes = max_value_bytes;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready, addr) = tokio::sync::oneshot::channel::<SocketAddr>();
    let task = tokio::spawn(northwest_node::run(
        cfg,
        async {
            let _ = stopped.await;
        },
        Some(ready),
    ));
    let addr = addr.await.expect("node started");
    Node {
        base: format!("http://{addr}"),
        stop: Some(stop),
        task,
    }
}

pub fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(v)
}

pub async fn error_code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.expect("errors are JSON");
    assert!(
        body["error"].as_str().is_some_and(|m| !m.is_empty()),
        "error message present: {body}"
    );
    (status, body["code"].as_str().unwrap().to_string())
}

pub async fn shutdown(mut node: Node) {
    node.stop.take().unwrap().send(()).unwrap();
    node.task
        .await
        .unwrap()
        .expect("node exits cleanly on shutdown");
}
