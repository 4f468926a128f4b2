//! Nothing claims health it does not have: nodes whose broker is
//! unreachable (a closed port) are alive but not ready, a target never says
//! "caught up", and a source serves while its relay says why it cannot ship.

use std::time::Duration;

use northwest_tests::*;

/// A node whose journal brokers are a loopback port nothing listens on.
fn node_without_broker(name: &str) -> (tempfile::TempDir, NodeProc) {
    node_with_brokers_at(name, &format!("127.0.0.1:{}", free_port()))
}

fn node_with_brokers_at(name: &str, dead: &str) -> (tempfile::TempDir, NodeProc) {
    require_zk();
    let dir = tempfile::tempdir().unwrap();
    let root = format!("/northwest-test/{}", unique("health"));
    let dead = dead.to_string();
    let toml = node_toml_at(
        &(zk_addr(), dead),
        name,
        dir.path(),
        free_port(),
        &root,
        &unique("journal"),
        "",
    );
    let node = NodeProc::start(dir.path(), name, &toml);
    (dir, node)
}

async fn readyz(base: &str) -> (u16, serde_json::Value) {
    let r = reqwest::get(format!("{base}/readyz")).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_without_broker_is_alive_not_ready_and_not_caught_up() {
    let (_dir, n2) = node_without_broker("n2");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let alive = reqwest::get(format!("{}/healthz", n2.base)).await.unwrap();
    assert_eq!(alive.status(), 200);
    let (code, body) = readyz(&n2.base).await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body["problems"].as_array().is_some_and(|p| !p.is_empty()),
        "{body}"
    );
    let s = get_json(&format!("{}/v1/admin/status", n2.base)).await;
    assert_eq!(s["apply"]["caught_up"], false, "{s}");
    assert_ne!(s["apply"]["state"], "caught_up", "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_without_broker_serves_keeps_writes_and_says_why() {
    let (_dir, n1) = node_without_broker("n1");
    let r = reqwest::Client::new()
        .put(format!("{}/v1/ns/app/e/A:1", n1.base))
        .body("kept")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "n1 takes writes while the broker is away");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let s = loop {
        let s = get_json(&format!("{}/v1/admin/status", n1.base)).await;
        if s["relay"]["last_error"].is_string() || std::time::Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        s["relay"]["last_error"].is_string(),
        "status names the relay's problem: {s}"
    );
    assert_eq!(s["outbox_pending"], 1, "the write waits in the outbox: {s}");
    let (code, body) = readyz(&n1.base).await;
    assert_eq!(code, 503, "{body}");
}

/// An idle source that started while the broker was away becomes ready once
/// the broker answers, though it has nothing to ship (its "cannot reach the
/// brokers" error once stayed until a write was shipped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_source_becomes_ready_when_the_broker_appears() {
    let bootstrap = format!("127.0.0.1:{}", free_port());
    let (_dir, n1) = node_with_brokers_at("n1", &bootstrap);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !get_json(&format!("{}/v1/admin/status", n1.base)).await["relay"]["last_error"]
        .is_string()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no relay error while the broker is away"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The broker appears at the configured bootstrap address (forwarded to
    // the dev stack's broker, which then advertises its own address).
    let _broker =
        northwest_tests::fault_proxy::FaultProxy::start_on(&bootstrap, &require_kafka()).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = readyz(&n1.base).await;
        if code == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "an idle source stayed unready after the broker appeared: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let s = get_json(&format!("{}/v1/admin/status", n1.base)).await;
    assert!(s["relay"]["last_error"].is_null(), "{s}");
}
