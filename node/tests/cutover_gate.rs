//! The cutover gate on one node: fences and proxies apply to one namespace,
//! routes are matched (no path can bypass them), and the proxy never turns an
//! upstream failure into a success. In-process node, local coordination.

mod common;

use std::time::Duration;

use common::{error_code, shutdown, start};
use serde_json::{json, Value};

async fn post(c: &reqwest::Client, url: String, body: Value) -> Value {
    let r = c.post(url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200, "admin call refused");
    r.json().await.unwrap()
}

/// Whether a PUT completes within 500 ms (a fenced write waits), and with
/// which status.
async fn put_completes(c: &reqwest::Client, url: String) -> Option<u16> {
    tokio::time::timeout(Duration::from_millis(500), c.put(url).body("v").send())
        .await
        .ok()
        .map(|r| r.unwrap().status().as_u16())
}

#[tokio::test]
async fn a_fence_holds_one_namespace_and_every_route_in_it() {
    let node = start(1 << 20).await;
    let c = reqwest::Client::new();
    let base = node.base.clone();
    for ns in ["app", "digests"] {
        post(
            &c,
            format!("{base}/v1/admin/fence"),
            json!({"namespace": ns, "max_ms": 20000}),
        )
        .await;
    }
    // Writes to the fenced namespaces wait, whatever their key or name.
    for key in ["app/e/Doc:1", "app/e/Doc:1/digest:2", "digests/e/Doc:1"] {
        assert_eq!(
            put_completes(&c, format!("{base}/v1/ns/{key}")).await,
            None,
            "PUT {key} passed the fence"
        );
    }
    // An encoded namespace cannot pass as another one.
    assert_eq!(
        put_completes(&c, format!("{base}/v1/ns/%61pp/e/Doc:1")).await,
        Some(400)
    );
    // Another namespace is not fenced.
    assert_eq!(
        put_completes(&c, format!("{base}/v1/ns/other/e/Doc:1")).await,
        Some(200)
    );
    // Reads are never fenced.
    let r = c
        .get(format!("{base}/v1/ns/app/digest"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let st: Value = c
        .get(format!("{base}/v1/admin/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(st["fenced"], json!(["app", "digests"]));
    for ns in ["app", "digests"] {
        post(
            &c,
            format!("{base}/v1/admin/unfence"),
            json!({"namespace": ns}),
        )
        .await;
    }
    shutdown(node).await;
}

/// An upstream that sends a status and headers, then closes before the body.
async fn truncating_upstream() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc")
                .await;
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_proxy_moves_one_namespace_and_reports_upstream_failures() {
    let node = start(1 << 20).await;
    let c = reqwest::Client::new();
    let base = node.base.clone();
    let f = post(
        &c,
        format!("{base}/v1/admin/fence"),
        json!({"namespace": "app", "max_ms": 20000}),
    )
    .await;
    // A proxy step presenting another fence is refused.
    let r = c
        .post(format!("{base}/v1/admin/proxy"))
        .json(&json!({"namespace": "app", "target": "http://127.0.0.1:1", "fence": 999}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (409, "fence_expired".into()));
    let target = truncating_upstream().await;
    post(
        &c,
        format!("{base}/v1/admin/proxy"),
        json!({"namespace": "app", "target": target, "fence": f["fence"]}),
    )
    .await;
    // A body cut short upstream is a 502 with a JSON error, not an empty 200.
    let r = c
        .get(format!("{base}/v1/ns/app/e/Doc:1"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (502, "proxy".into()));
    // Another namespace is still served here.
    let r = c
        .put(format!("{base}/v1/ns/other/e/Doc:1"))
        .body("local")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{base}/v1/ns/other/e/Doc:1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "local");
    shutdown(node).await;
}

/// An upstream that takes the promotion, then never answers a data request.
async fn hanging_upstream() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                if String::from_utf8_lossy(&buf[..n]).contains("/v1/admin/promote") {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                        .await;
                }
                // Anything else: hold the connection, never answer.
                tokio::time::sleep(std::time::Duration::from_secs(120)).await;
            });
        }
    });
    format!("http://{addr}")
}

/// A forwarded request the new primary never answers ends in a 504 with a
/// JSON error after the forward timeout (30 s), not a hang or an empty 200.
#[tokio::test]
async fn a_forwarded_request_that_times_out_is_a_json_504() {
    let node = start(1 << 20).await;
    let c = reqwest::Client::new();
    let base = node.base.clone();
    let f = post(
        &c,
        format!("{base}/v1/admin/fence"),
        json!({"namespace": "app", "max_ms": 20000}),
    )
    .await;
    let target = hanging_upstream().await;
    post(
        &c,
        format!("{base}/v1/admin/proxy"),
        json!({"namespace": "app", "target": target, "fence": f["fence"]}),
    )
    .await;
    let t = std::time::Instant::now();
    let r = c
        .get(format!("{base}/v1/ns/app/e/Doc:1"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (504, "proxy".into()));
    assert!(
        t.elapsed() >= std::time::Duration::from_secs(25),
        "{:?}",
        t.elapsed()
    );
    shutdown(node).await;
}
