//! Several `northwest node` processes of one deployment over one PostgreSQL
//! schema (`store.postgres.shared`), as the paper's application servers
//! over one datastore: ZooKeeper leases keep them off each other's entity
//! groups and the leases' fencing tokens, checked in every commit, keep a
//! process that lost its lease from committing over the new holder.

use std::process::Command;
use std::time::{Duration, Instant};

use northwest_tests::*;

/// A process of the shared deployment `app` (`label` names its files).
fn shared_toml(dir: &std::path::Path, label: &str, root: &str, schema: &str) -> String {
    format!(
        r#"name = "app"
data_dir = "{data}"
[http]
listen = "127.0.0.1:{port}"
[coordination]
connect = "{zk}"
root = "{root}"
session_timeout_ms = 4000
[journal]
enabled = false
apply = false
brokers = "{kafka}"
{pg}shared = true
"#,
        data = dir.join(label).display(),
        port = free_port(),
        zk = zk_addr(),
        kafka = kafka_addr(),
        pg = pg_store_toml(schema),
    )
}

/// Process "a" of the deployment, each commit of it sleeping `ms` once it
/// has passed its lease checks (crash point `store::after_lease_check`).
fn delayed_past_lease_checks(dir: &std::path::Path, root: &str, schema: &str, ms: u64) -> NodeProc {
    let mut a = NodeProc::start(dir, "a", &shared_toml(dir, "a", root, schema)).with_env(
        "NORTHWEST_CRASH_POINTS",
        &format!("store::after_lease_check=delay:{ms}"),
    );
    // The first start has no crash point: restart with it.
    a.stop();
    a.spawn();
    a
}

fn url(base: &str, key: &str) -> String {
    format!("{base}/v1/ns/app/e/{key}")
}

/// The value and version of `key` read through `base` ((0, 0) if absent).
async fn read(c: &reqwest::Client, base: &str, key: &str) -> (u64, u64) {
    let r = c.get(url(base, key)).send().await.unwrap();
    match r.status().as_u16() {
        404 => (0, 0),
        200 => {
            let etag = r.headers()["etag"].to_str().unwrap().trim_matches('"');
            let version = etag.parse().unwrap();
            let n = r.text().await.unwrap().parse().unwrap();
            (n, version)
        }
        s => panic!("GET {key} through {base}: {s} {}", r.text().await.unwrap()),
    }
}

/// `PUT key = value` if its version is still `version`: the status.
async fn put_if(c: &reqwest::Client, base: &str, key: &str, value: &str, version: u64) -> u16 {
    c.put(url(base, key))
        .header("If-Match", format!("\"{version}\""))
        .body(value.to_string())
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// Reads and increments `key` through `base` until an If-Match write of
/// its own succeeds. A 412 (someone else's increment came between) or a
/// 503 (nothing written: a lease moved, a lock wait timed out) retries.
async fn increment(c: &reqwest::Client, base: &str, key: &str) {
    loop {
        let (n, version) = read(c, base, key).await;
        match put_if(c, base, key, &(n + 1).to_string(), version).await {
            200 => return,
            412 | 503 => continue,
            s => panic!("PUT {key} through {base}: {s}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_processes_on_one_schema_lose_no_if_match_increment() {
    let dir = tempfile::tempdir().unwrap();
    let (root, schema) = (
        format!("/northwest-test/{}", unique("shared")),
        pg_schema("shared"),
    );
    let nodes: Vec<NodeProc> = (0..3)
        .map(|i| {
            let label = format!("p{i}");
            NodeProc::start(
                dir.path(),
                &label,
                &shared_toml(dir.path(), &label, &root, &schema),
            )
        })
        .collect();
    const TASKS: usize = 4;
    const EACH: usize = 25;
    let mut tasks = Vec::new();
    for n in &nodes {
        for _ in 0..TASKS {
            let base = n.base.clone();
            tasks.push(tokio::spawn(async move {
                let c = reqwest::Client::new();
                for _ in 0..EACH {
                    increment(&c, &base, "Counter:1").await;
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Every acknowledged increment is there, and every process reads the
    // same value and version (no process serves from a cache of its own).
    let c = reqwest::Client::new();
    let seen: Vec<(u64, u64)> =
        futures::future::join_all(nodes.iter().map(|n| read(&c, &n.base, "Counter:1"))).await;
    assert_eq!(seen[0].0, (nodes.len() * TASKS * EACH) as u64, "{seen:?}");
    assert!(seen.iter().all(|s| *s == seen[0]), "{seen:?}");

    // Migration calls would act on one process: refused, saying why.
    let r = c
        .post(format!("{}/v1/admin/fence", nodes[0].base))
        .body(r#"{"namespace":"app","max_ms":1000}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("store.postgres.shared"));
    // A process that would serve the name alone is refused while the
    // sharers run, and says why.
    let alone = dir.path().join("alone.toml");
    let toml = shared_toml(dir.path(), "alone", &root, &schema).replace("shared = true", "");
    std::fs::write(&alone, toml).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin_path("northwest"))
            .args(["node", "--config"])
            .arg(&alone)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("store.postgres.shared"), "{err}");
}

/// The process whose commit is stopped past its lease checks (SIGSTOP past
/// its ZooKeeper session) and one that takes the group meanwhile both
/// write `Acct:1` under If-Match of the same version: exactly one may
/// succeed. Without fencing tokens both are acknowledged (a lost update).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_stopped_past_its_session_cannot_commit_when_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let (root, schema) = (
        format!("/northwest-test/{}", unique("stale")),
        pg_schema("stale"),
    );
    let a = delayed_past_lease_checks(dir.path(), &root, &schema, 3000);
    let b = NodeProc::start(
        dir.path(),
        "b",
        &shared_toml(dir.path(), "b", &root, &schema),
    );
    let c = reqwest::Client::new();
    // A write through B makes the version both will expect.
    assert_eq!(put_if(&c, &b.base, "Acct:1", "0", 0).await, 200);
    let (_, v0) = read(&c, &b.base, "Acct:1").await;
    // A's write passes its lease checks and sleeps at the crash point...
    let a_put = {
        let (c, base) = (c.clone(), a.base.clone());
        tokio::spawn(async move { put_if(&c, &base, "Acct:1", "from-a", v0).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // ... and A stops there, past its session (4 s): its lease goes.
    a.signal("STOP");
    tokio::time::sleep(Duration::from_secs(7)).await;
    let t = Instant::now();
    let b_status = put_if(&c, &b.base, "Acct:1", "from-b", v0).await;
    assert_eq!(b_status, 200, "B takes the expired lease and writes");
    assert!(t.elapsed() < Duration::from_secs(10));
    a.signal("CONT");
    // A's stale commit is refused. Its retries find B's version (412) or,
    // while A's ZooKeeper client replaces the expired session, no lease
    // (503): either way nothing of it was written.
    let a_status = a_put.await.unwrap();
    assert!(
        matches!(a_status, 412 | 503),
        "A's stale write answered {a_status}"
    );
    assert_eq!(read_raw(&c, &b.base, "Acct:1").await, "from-b");
    assert_eq!(read_raw(&c, &a.base, "Acct:1").await, "from-b");
}

/// A process killed (-9) while it holds a lease mid-transaction: another
/// process takes the group once the killed one's session expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_killed_holding_a_lease_hands_it_over_with_its_session() {
    let dir = tempfile::tempdir().unwrap();
    let (root, schema) = (
        format!("/northwest-test/{}", unique("kill")),
        pg_schema("kill"),
    );
    let mut a = delayed_past_lease_checks(dir.path(), &root, &schema, 5000);
    let b = NodeProc::start(
        dir.path(),
        "b",
        &shared_toml(dir.path(), "b", &root, &schema),
    );
    let c = reqwest::Client::new();
    let a_put = {
        let (c, base) = (c.clone(), a.base.clone());
        tokio::spawn(async move { put_if(&c, &base, "Acct:2", "from-a", 0).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.kill9();
    assert_eq!(a_put.await.unwrap(), 0, "A's client saw its connection die");
    let t = Instant::now();
    assert_eq!(put_if(&c, &b.base, "Acct:2", "from-b", 0).await, 200);
    assert!(
        t.elapsed() < Duration::from_secs(12),
        "B waited {:?}: about the killed session's timeout (4 s)",
        t.elapsed()
    );
    assert_eq!(read_raw(&c, &b.base, "Acct:2").await, "from-b");
}

async fn read_raw(c: &reqwest::Client, base: &str, key: &str) -> String {
    let r = c.get(url(base, key)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{key} through {base}");
    r.text().await.unwrap()
}
