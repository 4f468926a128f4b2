//! TLS on one node's listener and on its calls to peers, with in-process
//! nodes (memory engine, local locks): HTTPS only, verified against the
//! configured CA; a node given a peer CA never forwards in clear nor to a
//! peer whose certificate does not chain to that CA; bad TLS files are
//! refused at start with the file named.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use northwest_node::config::{CoordinationMode, EngineKind, NodeConfig};
use northwest_tests::pki::TestPki;
use serde_json::{json, Value};

struct Node {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

fn config(tls: Option<&TestPki>, peer_ca: Option<PathBuf>) -> NodeConfig {
    let mut cfg = NodeConfig::default();
    cfg.store.engine = EngineKind::Memory;
    cfg.coordination.mode = CoordinationMode::Local;
    cfg.http.listen = "127.0.0.1:0".parse().unwrap();
    cfg.http.tls_cert_file = tls.map(|p| p.cert.clone());
    cfg.http.tls_key_file = tls.map(|p| p.key.clone());
    cfg.http.tls_ca_file = peer_ca;
    cfg
}

async fn start(cfg: NodeConfig) -> Node {
    let scheme = if cfg.http.tls_cert_file.is_some() {
        "https"
    } else {
        "http"
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready, addr) = tokio::sync::oneshot::channel::<SocketAddr>();
    let task = tokio::spawn(async move {
        let stopped = async {
            let _ = stopped.await;
        };
        northwest_node::run(cfg, stopped, Some(ready))
            .await
            .map_err(|e| format!("{e:#}"))
    });
    let addr = addr.await.expect("node started");
    Node {
        base: format!("{scheme}://{addr}"),
        stop: Some(stop),
        task,
    }
}

async fn shutdown(mut node: Node) {
    node.stop.take().unwrap().send(()).unwrap();
    node.task.await.unwrap().expect("node exits cleanly");
}

#[tokio::test]
async fn a_tls_node_answers_only_clients_that_trust_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path(), "good");
    let rogue = TestPki::generate(dir.path(), "rogue");
    let node = start(config(Some(&pki), None)).await;
    let c = pki.client();
    let url = format!("{}/v1/ns/app/e/Doc:1", node.base);
    let r = c.put(&url).body("over tls").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "over tls");
    // A client that trusts another CA refuses the node's certificate.
    let e = rogue.client().get(&url).send().await.unwrap_err();
    assert!(
        format!("{e:?}").contains("UnknownIssuer"),
        "not a certificate error: {e:?}"
    );
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = url.replacen("https://", "http://", 1);
    let r = reqwest::Client::new().get(&plain).send().await;
    assert!(
        r.is_err(),
        "plain HTTP answered: {:?}",
        r.map(|r| r.status())
    );
    // Clients that stall mid-handshake (more of them than the accept
    // queue holds) do not hold up others, and are dropped after 10 s.
    let addr = node.base.trim_start_matches("https://").to_string();
    let mut stalled = Vec::new();
    for _ in 0..80 {
        stalled.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // A new client: a pooled connection would need no handshake.
    let r = tokio::time::timeout(Duration::from_secs(2), pki.client().get(&url).send())
        .await
        .expect("a stalled handshake held up another client")
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut first = stalled.swap_remove(0);
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(15), first.read(&mut buf))
        .await
        .expect("a stalled handshake was kept open past its timeout");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    shutdown(node).await;
}

async fn fence(c: &reqwest::Client, base: &str) -> Value {
    let r = c
        .post(format!("{base}/v1/admin/fence"))
        .json(&json!({"namespace": "app", "max_ms": 20000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn proxy(c: &reqwest::Client, base: &str, target: &str, fence: &Value) -> (u16, Value) {
    let r = c
        .post(format!("{base}/v1/admin/proxy"))
        .json(&json!({"namespace": "app", "target": target, "fence": fence["fence"]}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn a_node_with_a_peer_ca_forwards_only_over_verified_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path(), "good");
    let rogue = TestPki::generate(dir.path(), "rogue");
    let n1 = start(config(None, Some(pki.ca.clone()))).await;
    let n2 = start(config(Some(&pki), None)).await;
    let impostor = start(config(Some(&rogue), None)).await;
    let c = reqwest::Client::new();
    let f = fence(&c, &n1.base).await;
    // In clear: refused before anything is sent.
    let clear = n2.base.replacen("https://", "http://", 1);
    let (st, body) = proxy(&c, &n1.base, &clear, &f).await;
    assert_eq!(
        (st, body["code"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    assert!(
        body["error"].as_str().unwrap().contains("https://"),
        "{body}"
    );
    // Credentials, paths or queries in a target are refused (they would
    // show in status and logs).
    let userinfo = n2.base.replacen("https://", "https://u:secret@", 1);
    for bad in [
        userinfo,
        format!("{}/v1", n2.base),
        format!("{}?x=1", n2.base),
        "ftp://x".into(),
    ] {
        let (st, body) = proxy(&c, &n1.base, &bad, &f).await;
        assert_eq!(
            (st, body["code"].as_str()),
            (400, Some("bad_request")),
            "{bad}: {body}"
        );
    }
    // A peer whose certificate does not chain to the CA is never promoted
    // nor sent data: the cutover fails and n1 keeps the namespace.
    let (st, body) = proxy(&c, &n1.base, &impostor.base, &f).await;
    assert_eq!(
        (st, body["code"].as_str()),
        (502, Some("promote_failed")),
        "{body}"
    );
    let st: Value = rogue
        .client()
        .get(format!("{}/v1/admin/status", impostor.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(st["promoted"], json!([]), "the impostor was promoted: {st}");
    let r = c
        .post(format!("{}/v1/admin/unfence", n1.base))
        .json(&json!({"namespace": "app"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .put(format!("{}/v1/ns/app/e/Doc:1", n1.base))
        .body("still n1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "n1 stopped serving after a refused cutover"
    );
    // The verified peer takes the namespace; writes through n1 land there.
    let f = fence(&c, &n1.base).await;
    let (st, body) = proxy(&c, &n1.base, &n2.base, &f).await;
    assert_eq!(st, 200, "{body}");
    let r = c
        .put(format!("{}/v1/ns/app/e/Doc:2", n1.base))
        .body("via n1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = pki
        .client()
        .get(format!("{}/v1/ns/app/e/Doc:2", n2.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "via n1");
    for n in [n1, n2, impostor] {
        shutdown(n).await;
    }
}

#[tokio::test]
async fn bad_tls_files_are_refused_at_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path(), "good");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let other = TestPki::generate(dir.path(), "other");
    let run = |cfg: NodeConfig| async move {
        let r = northwest_node::run(cfg, std::future::pending(), None).await;
        format!("{:#}", r.expect_err("the node started"))
    };
    let mut c = config(Some(&pki), None);
    c.http.tls_cert_file = Some(junk.clone());
    let e = run(c).await;
    assert!(
        e.contains("http.tls_cert_file") && e.contains("junk.pem"),
        "{e}"
    );
    let mut c = config(Some(&pki), None);
    c.http.tls_key_file = Some(other.key.clone());
    let e = run(c).await;
    assert!(e.contains("does the key belong"), "{e}");
    let mut c = config(None, Some(junk.clone()));
    c.http.tls_ca_file = Some(junk);
    let e = run(c).await;
    assert!(e.contains("http.tls_ca_file"), "{e}");
    let mut c = config(Some(&pki), None);
    c.http.tls_key_file = None;
    let e = c.validate().unwrap_err();
    assert!(e.contains("go together"), "{e}");
}
