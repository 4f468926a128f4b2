//! The HTTP API contract: each status code, malformed input, oversized bodies,
//! graceful shutdown. In-memory engine and local locks (no external services).

mod common;

use common::{b64, error_code, shutdown, start};
use serde_json::{json, Value};

#[tokio::test]
async fn api_contract() {
    let node = start(1024).await;
    let c = reqwest::Client::new();
    let e = |k: &str| format!("{}/v1/ns/app/e/{k}", node.base);

    assert_eq!(
        c.get(format!("{}/healthz", node.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // PUT -> 200 {"version"}; GET -> value + ETag.
    let r = c
        .put(e("Blog:1/Post:1"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v1 = r.json::<Value>().await.unwrap()["version"]
        .as_u64()
        .unwrap();
    let r = c.get(e("Blog:1/Post:1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), format!("\"{v1}\""));
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"hello");

    // If-Match: stale -> 412, current -> 200.
    let r = c
        .put(e("Blog:1/Post:1"))
        .header("If-Match", format!("\"{}\"", v1 + 100))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (412, "version_mismatch".into()));
    let r = c
        .put(e("Blog:1/Post:1"))
        .header("If-Match", format!("\"{v1}\""))
        .body("world")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v2 = r.json::<Value>().await.unwrap()["version"]
        .as_u64()
        .unwrap();
    assert!(v2 > v1);
    let r = c
        .put(e("Blog:1/Post:1"))
        .header("If-Match", "not-a-version")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await.0, 400);

    // DELETE with stale If-Match -> 412; plain -> 200; then GET 404.
    let r = c
        .delete(e("Blog:1/Post:1"))
        .header("If-Match", format!("\"{v1}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    let r = c.delete(e("Blog:1/Post:1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.json::<Value>().await.unwrap()["version"]
            .as_u64()
            .unwrap()
            > v2
    );
    assert_eq!(
        error_code(c.get(e("Blog:1/Post:1")).send().await.unwrap()).await,
        (404, "not_found".into())
    );

    // Transactions.
    let txn = format!("{}/v1/ns/app/txn", node.base);
    let body = json!({"ops": [
        {"op": "put", "key": "Blog:2", "value_b64": b64(b"root")},
        {"op": "put", "key": "Blog:2/Post:1", "value_b64": b64(b"p1")},
        {"op": "delete", "key": "Blog:2/Post:9"}
    ]});
    let r = c.post(&txn).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let tv = r.json::<Value>().await.unwrap()["version"]
        .as_u64()
        .unwrap();
    let cross = json!({"ops": [
        {"op": "put", "key": "Blog:3", "value_b64": b64(b"a")},
        {"op": "put", "key": "Blog:4", "value_b64": b64(b"b")}
    ]});
    assert_eq!(
        error_code(c.post(&txn).json(&cross).send().await.unwrap()).await,
        (400, "cross_group".into())
    );
    let stale = json!({"ops": [
        {"op": "put", "key": "Blog:2/Post:2", "value_b64": b64(b"new")},
        {"op": "put", "key": "Blog:2", "value_b64": b64(b"x"), "if_version": tv - 1}
    ]});
    assert_eq!(
        c.post(&txn).json(&stale).send().await.unwrap().status(),
        412
    );
    assert_eq!(
        c.get(e("Blog:2/Post:2")).send().await.unwrap().status(),
        404,
        "a failed txn writes nothing"
    );
    for bad in [
        "{",
        "{\"ops\": []}",
        "{\"ops\": [{\"op\": \"frob\", \"key\": \"A:1\"}]}",
        "{\"ops\": [{\"op\": \"put\", \"key\": \"A:1\", \"value_b64\": \"***\"}]}",
    ] {
        let r = c
            .post(&txn)
            .header("content-type", "application/json")
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r).await.0, 400, "body {bad}");
    }

    // Scan: key order, prefix, start/end, limit.
    for k in ["Blog:2/Post:3", "Blog:2/Post:2", "Blog:5"] {
        c.put(e(k)).body(k.to_string()).send().await.unwrap();
    }
    let items: Value = c
        .get(format!("{}/v1/ns/app/scan?prefix=Blog:2", node.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys: Vec<&str> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["Blog:2", "Blog:2/Post:1", "Blog:2/Post:2", "Blog:2/Post:3"]
    );
    assert_eq!(items[1]["value_b64"], b64(b"p1"));
    assert_eq!(items[0]["version"].as_u64().unwrap(), tv);
    let items: Value = c
        .get(format!(
            "{}/v1/ns/app/scan?start=Blog:2/Post:2&end=Blog:5&limit=1",
            node.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(items.as_array().unwrap().len(), 1);
    assert_eq!(items[0]["key"], "Blog:2/Post:2");
    let r = c
        .get(format!("{}/v1/ns/app/scan?limit=0", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await.0, 400);
    let r = c
        .get(format!("{}/v1/ns/app/scan?limit=abc", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await.0, 400);

    // Bad keys and namespaces -> 400.
    for bad in ["Blog", "Blog:1//Post:1", "Blog:/x", "Bl%20og:1"] {
        assert_eq!(
            error_code(c.put(e(bad)).body("x").send().await.unwrap()).await,
            (400, "bad_key".into()),
            "key {bad}"
        );
    }
    let r = c
        .put(format!("{}/v1/ns/bad%2Fns/e/A:1", node.base))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Oversized -> 413 (PUT body and txn value); limit is 1024 here.
    let r = c
        .put(e("Big:1"))
        .body(vec![0u8; 1025])
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (413, "too_large".into()));
    assert_eq!(
        c.put(e("Big:1"))
            .body(vec![0u8; 1024])
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let big = json!({"ops": [{"op": "put", "key": "Big:2", "value_b64": b64(&[1u8; 2000])}]});
    assert_eq!(
        error_code(c.post(&txn).json(&big).send().await.unwrap())
            .await
            .0,
        413
    );

    // Unknown endpoint -> JSON 404.
    assert_eq!(
        error_code(
            c.get(format!("{}/v2/nope", node.base))
                .send()
                .await
                .unwrap()
        )
        .await
        .0,
        404
    );

    shutdown(node).await;
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let node = start(1 << 20).await;
    let c = reqwest::Client::new();
    let url = format!("{}/v1/ns/app/e/A:1", node.base);
    let inflight: Vec<_> = (0..200)
        .map(|i| tokio::spawn(c.put(url.clone()).body(format!("{i}")).send()))
        .collect();
    // Shut down once the server is taking them (a fixed sleep could end
    // before any was accepted on a loaded machine), with most still queued.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !inflight.iter().any(|t| t.is_finished()) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    shutdown(node).await;
    let mut completed = 0;
    for t in inflight {
        // Each request either completed with 200 or was never accepted; none half-done.
        if let Ok(r) = t.await.unwrap() {
            assert_eq!(r.status(), 200);
            completed += 1;
        }
    }
    assert!(completed > 0, "the server never took a request");
}

#[tokio::test]
async fn errors_are_json_short_and_coded() {
    let node = start(1024).await;
    let c = reqwest::Client::new();
    // Wrong method: 405 with Allow and a JSON body.
    let r = c
        .delete(format!("{}/v1/ns/app/scan", node.base))
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("allow"), "{:?}", r.headers());
    assert_eq!(error_code(r).await, (405, "method_not_allowed".into()));
    // A bad namespace has its own code.
    let r = c
        .put(format!("{}/v1/ns/bad!ns/e/A:1", node.base))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (400, "bad_namespace".into()));
    // A space is not allowed in an id, as the message says.
    let r = c
        .put(format!("{}/v1/ns/app/e/A:a%20b", node.base))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (400, "bad_key".into()));
    // A 6 KB key is refused without echoing it back.
    let huge = format!("A:{}", "x".repeat(6_000));
    let r = c
        .put(format!("{}/v1/ns/app/e/{huge}", node.base))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body = r.text().await.unwrap();
    assert!(body.len() < 512, "error body of {} bytes", body.len());
    // Parser messages quote the input: a 5 KB key with a bad value, an
    // unknown op and an unknown field still get a short body.
    let big = "k".repeat(5_000);
    for body in [
        serde_json::json!({"ops": [{"op": "put", "key": big, "value_b64": "!!"}]}),
        serde_json::json!({"ops": [{"op": big, "key": "A:1"}]}),
        serde_json::json!({"ops": [], big.clone(): 1}),
    ] {
        let r = c
            .post(format!("{}/v1/ns/app/txn", node.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let text = r.text().await.unwrap();
        assert!(text.len() < 512, "error body of {} bytes", text.len());
    }
    // An over-long URI (here a 20 KB namespace) is a JSON 414, not hyper's bare one.
    let r = c
        .get(format!("{}/v1/ns/{}/e/A:1", node.base, "n".repeat(20_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (414, "uri_too_long".into()));
    // Invalid UTF-8 in the path is a JSON error too.
    let r = c
        .get(format!("{}/v1/ns/app/e/A:%FF%FE", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (400, "bad_path".into()));
    shutdown(node).await;
}

#[tokio::test]
async fn conditional_requests_follow_rfc_9110() {
    let node = start(1024).await;
    let c = reqwest::Client::new();
    let e = format!("{}/v1/ns/app/e/Doc:1", node.base);
    let r = c.put(&e).body("v1").send().await.unwrap();
    let v = r.json::<Value>().await.unwrap()["version"]
        .as_u64()
        .unwrap();
    // If-None-Match with the current tag (strong or weak) or * -> 304 + ETag.
    for tag in [
        format!("\"{v}\""),
        format!("W/\"{v}\""),
        "*".into(),
        format!("\"1\", \"{v}\""),
    ] {
        let r = c
            .get(&e)
            .header("if-none-match", &tag)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 304, "If-None-Match {tag}");
        assert_eq!(r.headers()["etag"], format!("\"{v}\"").as_str());
    }
    let r = c
        .get(&e)
        .header("if-none-match", format!("\"{}\"", v + 1000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // If-Match compares strongly: weak tags, * and lists are refused.
    for tag in [format!("W/\"{v}\""), "*".into(), format!("\"{v}\", \"1\"")] {
        let r = c
            .put(&e)
            .header("if-match", &tag)
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r).await.0, 400, "If-Match {tag}");
    }
    let r = c
        .put(&e)
        .header("if-match", format!("\"{v}\""))
        .body("v2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A transaction writing one key twice is refused, nothing written.
    let r = c
        .post(format!("{}/v1/ns/app/txn", node.base))
        .json(&json!({"ops": [
            {"op": "put", "key": "Doc:2", "value_b64": b64(b"a")},
            {"op": "delete", "key": "Doc:2"},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (400, "duplicate_key".into()));
    let r = c
        .get(format!("{}/v1/ns/app/e/Doc:2", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // A path that is not UTF-8 gets a JSON error.
    let r = c
        .get(format!("{}/v1/ns/app/e/Doc:%FF", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (400, "bad_path".into()));
    shutdown(node).await;
}

/// One request as a browser would send it: `host` and `origin` headers set
/// by hand (an HTTP client library sets Host itself).
async fn browser_post(base: &str, path: &str, host: &str, origin: Option<&str>, body: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\n{origin}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// A node without tokens on loopback trusts local callers, not web pages
/// in a local browser: a cross-site form POST (no CORS preflight) and a
/// DNS-rebound page (its own host name on 127.0.0.1) are refused before
/// they fence, write or replay anything.
#[tokio::test]
async fn web_pages_cannot_drive_a_node_without_tokens() {
    let node = start(1 << 20).await;
    let base = node.base.clone();
    let own = base.trim_start_matches("http://").to_string();
    let fence = r#"{"namespace":"app","max_ms":20000}"#;
    let txn = r#"{"ops":[{"op":"put","key":"Doc:1","value_b64":"aGk="}]}"#;
    for (host, origin) in [
        (own.as_str(), Some("http://evil.example")),
        (own.as_str(), Some("null")),
        ("evil.example:80", None),
        ("evil.example:80", Some("http://evil.example:80")),
    ] {
        let st = browser_post(&base, "/v1/admin/fence", host, origin, fence).await;
        assert_eq!(st, 403, "fence from {host} {origin:?}");
        let st = browser_post(&base, "/v1/ns/app/txn", host, origin, txn).await;
        assert_eq!(st, 403, "txn from {host} {origin:?}");
    }
    let c = reqwest::Client::new();
    let st: Value = c
        .get(format!("{base}/v1/admin/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(st["fenced"], json!([]), "{st}");
    let r = c
        .get(format!("{base}/v1/ns/app/e/Doc:1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The node's own page (same origin) and plain clients still pass.
    let st = browser_post(&base, "/v1/ns/app/txn", &own, Some(&base), txn).await;
    assert_eq!(st, 200);
    let local = own.replacen("127.0.0.1", "localhost", 1);
    let st = browser_post(
        &base,
        "/v1/admin/unfence",
        &local,
        None,
        r#"{"namespace":"app"}"#,
    )
    .await;
    assert_eq!(st, 200);
    shutdown(node).await;
}
