//! Authentication of the admin and data planes on real nodes: every admin
//! endpoint refuses a caller without the admin token (401) and one with a
//! data token (403); data tokens reach only their namespaces; an
//! orchestrator without the token changes nothing, one with it migrates;
//! the proxy forwards the caller's own credentials; tokens never show in
//! logs, status or metrics; a node open to other hosts without a token is
//! refused at start.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use northwest_tests::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

const ADMIN: &str = "admin-0f3c9a7e5d1b4a2c8e6f0a9b";
const DATA: &str = "data-app-7c1e5a9d3b2f4e6a8c0d";
const N1_ONLY: &str = "data-n1-only-3e8b1f7a9c5d2e4b";

struct Authed {
    dir: tempfile::TempDir,
    n1: NodeProc,
    n2: NodeProc,
    admin_file: std::path::PathBuf,
    zk_auth: std::path::PathBuf,
    root: String,
    /// With TLS: the brokers' SASL_SSL listener and its client properties.
    kafka: (String, Option<std::path::PathBuf>),
}

fn start() -> Authed {
    start_in(tempfile::tempdir().unwrap(), None)
}

/// Two nodes with tokens and ZooKeeper ACLs; with `tls`, both serve HTTPS
/// with its certificate, n1 verifies n2 against its CA, and both reach Kafka
/// over SASL_SSL.
fn start_in(dir: tempfile::TempDir, tls: Option<&pki::TestPki>) -> Authed {
    require_zk();
    require_kafka();
    let admin_file = dir.path().join("admin.token");
    std::fs::write(&admin_file, format!("{ADMIN}\n")).unwrap();
    std::fs::set_permissions(&admin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    // n1 also knows N1_ONLY; n2 does not: a request n1 forwards with it
    // must be refused by n2 (n1 never lends its own credentials).
    let token = |name: &str, t: &str| {
        format!("[[token]]\nname = \"{name}\"\ntoken = \"{t}\"\nnamespaces = [\"app\"]\n")
    };
    let write_secret = |file: &str, text: String| {
        let path = dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    };
    let tokens_n1 = write_secret(
        "tokens-n1.toml",
        token("app-client", DATA) + &token("n1-only", N1_ONLY),
    );
    let tokens_n2 = write_secret("tokens-n2.toml", token("app-client", DATA));
    let zk_auth = dir.path().join("zk.auth");
    std::fs::write(&zk_auth, "northwest:zk-digest-password\n").unwrap();
    std::fs::set_permissions(&zk_auth, std::fs::Permissions::from_mode(0o600)).unwrap();
    let root = format!("/northwest-test/{}", unique("auth"));
    let topic = unique("journal");
    let kafka = match tls {
        Some(_) => {
            let (brokers, props) = require_kafka_sasl();
            (brokers, Some(props))
        }
        None => (kafka_addr(), None),
    };
    let tls_toml = tls.map_or(String::new(), |p| {
        format!("{}tls_ca_file = \"{}\"\n", p.http_toml(), p.ca.display())
    });
    let http = |tokens: &std::path::Path| {
        format!(
            "[http]\nadmin_token_file = \"{}\"\ndata_tokens_file = \"{}\"\n{tls_toml}",
            admin_file.display(),
            tokens.display()
        )
    };
    let coordination = format!("[coordination]\nauth_file = \"{}\"\n", zk_auth.display());
    let toml = |name: &str, tokens: &std::path::Path| {
        let (brokers, props) = &kafka;
        let head = props.as_ref().map_or(String::new(), |p| {
            format!("kafka_properties_file = \"{}\"\n", p.display())
        });
        head + &node_toml_at(
            &(zk_addr(), brokers.clone()),
            name,
            dir.path(),
            free_port(),
            &root,
            &topic,
            "",
        )
        .replacen("[http]\n", &http(tokens), 1)
        .replacen("[coordination]\n", &coordination, 1)
    };
    let n1 = NodeProc::start(dir.path(), "n1", &toml("n1", &tokens_n1));
    let n2 = NodeProc::start(dir.path(), "n2", &toml("n2", &tokens_n2));
    Authed {
        dir,
        n1,
        n2,
        admin_file,
        zk_auth,
        root,
        kafka,
    }
}

/// One HTTP/1.1 request with `path` sent as is (an HTTP client library
/// would normalise it); returns the start of the reply.
async fn raw_request(base: &str, method: &str, path: &str, token: Option<&str>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out
}

async fn call(
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (StatusCode, String) {
    let mut rb = reqwest::Client::new().request(method, url);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

fn migrate(a: &Authed, token_file: Option<&std::path::Path>) -> std::process::Output {
    migrate_cmd(a, token_file).output().unwrap()
}

fn migrate_cmd(a: &Authed, token_file: Option<&std::path::Path>) -> Command {
    let mut c = Command::new(bin_path("northwest"));
    c.args([
        "migrate",
        "--quiet",
        "--namespace",
        "app",
        "--from",
        &a.n1.base,
        "--to",
        &a.n2.base,
    ])
    .args(["--zk", &zk_addr(), "--brokers", &a.kafka.0])
    .env_remove("NORTHWEST_ADMIN_TOKEN_FILE")
    .env_remove("NORTHWEST_CA_FILE")
    .env_remove("NORTHWEST_KAFKA_CONFIG")
    .arg("--zk-auth-file")
    .arg(&a.zk_auth)
    .current_dir(a.dir.path());
    if let Some(f) = token_file {
        c.env("NORTHWEST_ADMIN_TOKEN_FILE", f);
    }
    if let Some(p) = &a.kafka.1 {
        c.arg("--kafka-config").arg(p);
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_and_data_planes_need_their_tokens_and_a_migration_runs_with_them() {
    let a = start();
    let (n1, n2) = (a.n1.base.clone(), a.n2.base.clone());
    // Every admin endpoint, on the node that serves it. Bodies name a
    // namespace nobody uses, so an admitted call changes nothing here.
    let zz = json!({"namespace": "zz"});
    let admin_calls: Vec<(Method, String, Option<serde_json::Value>)> = vec![
        (Method::GET, format!("{n1}/v1/admin/status"), None),
        (Method::GET, format!("{n1}/v1/admin/history"), None),
        (Method::GET, format!("{n2}/v1/admin/offsets"), None),
        (Method::GET, format!("{n1}/metrics"), None),
        (Method::GET, format!("{n1}/v1/ns/app/digest"), None),
        (
            Method::POST,
            format!("{n1}/v1/admin/fence"),
            Some(json!({"namespace": "zz", "max_ms": 100})),
        ),
        (
            Method::POST,
            format!("{n1}/v1/admin/unfence"),
            Some(zz.clone()),
        ),
        (
            Method::POST,
            format!("{n1}/v1/admin/proxy"),
            Some(json!({"namespace": "zz", "target": "http://127.0.0.1:9", "fence": 0})),
        ),
        (
            Method::DELETE,
            format!("{n1}/v1/admin/proxy"),
            Some(zz.clone()),
        ),
        (
            Method::POST,
            format!("{n2}/v1/admin/promote"),
            Some(zz.clone()),
        ),
        (
            Method::DELETE,
            format!("{n2}/v1/admin/promote"),
            Some(zz.clone()),
        ),
        (
            Method::POST,
            format!("{n1}/v1/admin/checkpoint"),
            Some(json!({"name": "authtest"})),
        ),
        (
            Method::DELETE,
            format!("{n1}/v1/admin/checkpoint/authtest"),
            None,
        ),
        (
            Method::POST,
            format!("{n2}/v1/admin/load-snapshot"),
            Some(json!({"topic": "no-such-topic-auth"})),
        ),
        (
            Method::POST,
            format!("{n2}/v1/admin/replay"),
            Some(json!({"from_offsets": [{"partition": 99, "offset": 0}]})),
        ),
    ];
    for (m, url, body) in &admin_calls {
        let (st, text) = call(m.clone(), url, None, body.clone()).await;
        assert_eq!(
            st,
            StatusCode::UNAUTHORIZED,
            "{m} {url} without a token: {text}"
        );
        assert!(text.contains("\"code\":\"unauthorized\""), "{text}");
        let (st, text) = call(m.clone(), url, Some(DATA), body.clone()).await;
        assert_eq!(
            st,
            StatusCode::FORBIDDEN,
            "{m} {url} with a data token: {text}"
        );
        let (st, text) = call(m.clone(), url, Some(ADMIN), body.clone()).await;
        assert!(
            st != StatusCode::UNAUTHORIZED && st != StatusCode::FORBIDDEN,
            "{m} {url} with the admin token: {st} {text}"
        );
    }
    // Probes and the page itself stay open.
    for p in ["/healthz", "/readyz", "/"] {
        let (st, _) = call(Method::GET, &format!("{n1}{p}"), None, None).await;
        assert_ne!(st, StatusCode::UNAUTHORIZED, "{p}");
    }

    // Data tokens reach their namespaces only.
    let put = |ns: &str, key: &str| format!("{n1}/v1/ns/{ns}/e/{key}");
    assert_eq!(
        call(Method::PUT, &put("app", "Doc:1"), None, Some(json!("v")))
            .await
            .0,
        401
    );
    assert_eq!(
        call(
            Method::PUT,
            &put("app", "Doc:1"),
            Some(DATA),
            Some(json!("v"))
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(
            Method::PUT,
            &put("other", "Doc:1"),
            Some(DATA),
            Some(json!("v"))
        )
        .await
        .0,
        403
    );
    assert_eq!(
        call(
            Method::PUT,
            &put("other", "Doc:1"),
            Some(ADMIN),
            Some(json!("v"))
        )
        .await
        .0,
        200
    );

    // The load generator presents a data token (--token-file) or the admin
    // token (the global --admin-token-file); without one it stops at once
    // and says which flag to pass, rather than failing every request.
    let data_file = a.dir.path().join("data.token");
    std::fs::write(&data_file, format!("{DATA}\n")).unwrap();
    std::fs::set_permissions(&data_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let loadgen = |auth: &[&std::ffi::OsStr]| {
        Command::new(bin_path("northwest"))
            .args(["loadgen", "--target", &n1, "--ns", "app", "--mode", "load"])
            .args(["--entities", "40", "--groups", "4", "--concurrency", "2"])
            .args(auth)
            .env_remove("NORTHWEST_ADMIN_TOKEN_FILE")
            .env_remove("NORTHWEST_TOKEN_FILE")
            .output()
            .unwrap()
    };
    let o = loadgen(&[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("--token-file"), "{err}");
    for flag in [
        ["--token-file".as_ref(), data_file.as_os_str()],
        ["--admin-token-file".as_ref(), a.admin_file.as_os_str()],
    ] {
        let o = loadgen(&flag);
        assert!(
            o.status.success(),
            "loadgen {flag:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(String::from_utf8_lossy(&o.stdout).contains(" 0 failed"));
    }

    // An orchestrator without the token is refused at the first call and
    // changes nothing.
    let o = migrate(&a, None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("401"), "{err}");
    let st: serde_json::Value = serde_json::from_str(
        &call(
            Method::GET,
            &format!("{n1}/v1/admin/status"),
            Some(ADMIN),
            None,
        )
        .await
        .1,
    )
    .unwrap();
    assert_eq!(st["fenced"], json!([]), "{st}");
    assert_eq!(st["proxies"], json!({}), "{st}");

    // With it, the migration runs; n1 then forwards the caller's own
    // credentials, so n2 applies its rules to the same caller.
    let o = migrate(&a, Some(&a.admin_file));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The record of the migration is readable with the deployment's
    // credentials (its znodes carry ACLs).
    let admin = northwest_control::AdminClient::from_files(
        Some(&a.admin_file),
        None,
        northwest_migrate::ADMIN_TIMEOUT,
    )
    .unwrap();
    let rec = northwest_migrate::load_state(&zk_addr(), Some(&a.zk_auth), &admin, &n1, "app")
        .await
        .expect("the migration record, read with the deployment's credentials");
    assert_eq!(rec.phase, northwest_migrate::Phase::Done, "{rec:?}");
    let (st, text) = call(
        Method::PUT,
        &put("app", "Doc:2"),
        Some(DATA),
        Some(json!("after")),
    )
    .await;
    assert_eq!(st, 200, "{text}");
    assert_eq!(
        call(Method::PUT, &put("app", "Doc:3"), None, Some(json!("x")))
            .await
            .0,
        401
    );
    let (st, text) = call(
        Method::GET,
        &format!("{n2}/v1/ns/app/e/Doc:2"),
        Some(DATA),
        None,
    )
    .await;
    assert_eq!((st, text.as_str()), (StatusCode::OK, "\"after\""));
    // A token only n1 knows passes n1 and is forwarded as the caller's: n2
    // refuses it (were n1 to lend its own admin token, n2 would accept).
    let (st, text) = call(
        Method::PUT,
        &put("app", "Doc:4"),
        Some(N1_ONLY),
        Some(json!("x")),
    )
    .await;
    assert_eq!(
        st, 401,
        "n2 judged the forwarded request by another identity: {text}"
    );
    // Paths that a URL parser would resolve to another endpoint are refused
    // before any layer judges them (n1 forwards `app` now).
    for path in [
        "/v1/ns/app/e/../../../admin/promote",
        "/v1/ns/app/e/%2e%2e/%2E%2E/.%2e/admin/promote",
        "/v1/ns/app/e/Doc:1/..",
        "/v1/ns/app/e/.\\..\\admin",
    ] {
        let reply = raw_request(&n1, "POST", path, Some(DATA)).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{path}: {reply}");
        assert!(reply.contains("bad_path"), "{path}: {reply}");
    }
    // Default-deny: a path no route serves still needs the admin token.
    assert_eq!(
        call(Method::GET, &format!("{n1}/v1/whatever"), None, None)
            .await
            .0,
        401
    );
    // Every znode under the root carries only the deployment's credentials.
    let digest = northwest_store::ZkDigest::new("northwest:zk-digest-password").unwrap();
    let authed = digest.connector().connect(&zk_addr()).await.unwrap();
    let mut stack = vec![a.root.clone()];
    let mut checked = 0;
    while let Some(path) = stack.pop() {
        let (acls, _) = authed.get_acl(&path).await.unwrap();
        assert!(
            acls.iter().all(|x| x.scheme() == "digest"),
            "{path} has an open ACL: {acls:?}"
        );
        checked += 1;
        for c in authed.list_children(&path).await.unwrap() {
            stack.push(format!("{path}/{c}"));
        }
    }
    assert!(checked > 15, "only {checked} znodes under the root");

    // The deployment's znodes (migration record, routing, proxy state,
    // leases) are closed to a ZooKeeper client without the credentials.
    let anon = zookeeper_client::Client::connector()
        .connect(&zk_addr())
        .await
        .unwrap();
    for path in [
        "migrations/app",
        "routing/app",
        "nodes/n1/proxy/app",
        "txn_counter",
    ] {
        let r = anon.get_data(&format!("{}/{path}", a.root)).await;
        assert!(
            matches!(r, Err(zookeeper_client::Error::NoAuth)),
            "{path} readable without credentials: {r:?}"
        );
    }
    let r = anon
        .set_data(&format!("{}/routing/app", a.root), b"{}", None)
        .await;
    assert!(matches!(r, Err(zookeeper_client::Error::NoAuth)), "{r:?}");

    // No token in logs, status, history or metrics.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut seen =
        std::fs::read_to_string(&a.n1.log).unwrap() + &std::fs::read_to_string(&a.n2.log).unwrap();
    for node in [&n1, &n2] {
        for p in ["/v1/admin/status", "/v1/admin/history", "/metrics"] {
            seen += &call(Method::GET, &format!("{node}{p}"), Some(ADMIN), None)
                .await
                .1;
        }
    }
    assert!(seen.len() > 1000);
    assert!(
        !seen.contains(ADMIN) && !seen.contains(DATA),
        "a token leaked"
    );
}

/// The whole migration with tokens, ZooKeeper ACLs, TLS on both nodes and
/// SASL_SSL to Kafka, under writes through n1: no failed request, every acknowledged write on
/// n2, digests equal (migrate's verify step). An orchestrator that does not
/// trust the nodes' CA changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_migration_runs_over_tls_with_tokens_and_acls() {
    let dir = tempfile::tempdir().unwrap();
    let tls = pki::TestPki::generate(dir.path(), "deploy");
    let a = start_in(dir, Some(&tls));
    let (n1, n2) = (a.n1.base.clone(), a.n2.base.clone());
    assert!(n1.starts_with("https://") && n2.starts_with("https://"));
    let client = tls.client();
    let put = {
        let n1 = n1.clone();
        move |c: &reqwest::Client, i: u64, v: String| {
            c.put(format!("{n1}/v1/ns/app/e/Doc:{i}"))
                .bearer_auth(DATA)
                .json(&v)
                .send()
        }
    };
    for i in 0..200 {
        let r = put(&client, i, format!("v{i}")).await.unwrap();
        assert_eq!(r.status(), 200);
    }

    // Without the CA the orchestrator cannot verify n1 and stops at once.
    let out = tokio::task::spawn_blocking({
        let mut c = migrate_cmd(&a, Some(&a.admin_file));
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "migrated without trusting the CA");
    assert!(
        err.contains("UnknownIssuer") && err.contains("--ca-file"),
        "{err}"
    );
    let st: serde_json::Value = client
        .get(format!("{n1}/v1/admin/status"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&st["fenced"], &st["proxies"]),
        (&json!([]), &json!({})),
        "{st}"
    );

    // Writes through n1 all along the migration.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn({
        let (client, stop, put) = (client.clone(), stop.clone(), put.clone());
        async move {
            let (mut acked, mut failed) = (Vec::new(), Vec::new());
            let mut i = 1000;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let v = format!("w{i}");
                match put(&client, i % 300, v.clone()).await {
                    Ok(r) if r.status() == 200 => acked.push((i % 300, v)),
                    other => failed.push(format!("{:?}", other.map(|r| r.status()))),
                }
                i += 1;
            }
            (acked, failed)
        }
    });
    let out = tokio::task::spawn_blocking({
        let mut c = migrate_cmd(&a, Some(&a.admin_file));
        c.arg("--ca-file").arg(&tls.ca);
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, failed) = writer.await.unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(
        acked.len() > 50,
        "only {} writes during the migration",
        acked.len()
    );
    // The last acknowledged value of every key is what n2 serves.
    let last: std::collections::BTreeMap<u64, String> = acked.into_iter().collect();
    for (i, v) in &last {
        let r = client
            .get(format!("{n2}/v1/ns/app/e/Doc:{i}"))
            .bearer_auth(DATA)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "Doc:{i}");
        assert_eq!(r.json::<String>().await.unwrap(), *v, "Doc:{i}");
    }
    let st: serde_json::Value = client
        .get(format!("{n1}/v1/admin/status"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(st["proxies"]["app"], json!(n2), "{st}");
}

#[test]
fn a_node_open_to_other_hosts_without_an_admin_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("n.toml");
    let toml = node_toml(
        "n1",
        dir.path(),
        free_port(),
        "/northwest-test/refuse",
        "t",
        "",
    )
    .replace("listen = \"127.0.0.1:", "listen = \"0.0.0.0:");
    std::fs::write(&cfg, toml).unwrap();
    let mut child = Command::new(bin_path("northwest"))
        .args(["node", "--config"])
        .arg(&cfg)
        .env_remove("NORTHWEST_ADMIN_TOKEN_FILE")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A node that wrongly starts would serve forever: bounded wait.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the node started on 0.0.0.0 without an admin token");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(
        err.contains("is reachable from other hosts") && err.contains("http.admin_token_file"),
        "{err}"
    );
}
