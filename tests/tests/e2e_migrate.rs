//! Live migration end to end against the real stack: snapshot + journal +
//! verify + cutover under concurrent load; resume after the orchestrator is
//! killed; abort before the switch.

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use northwest_tests::*;

type Setup = Pipeline;

fn setup() -> Setup {
    Pipeline::start("mig", "")
}

fn migrate(s: &Setup, extra: &[&str]) -> std::process::Output {
    migrate_cmd(&s.n1.base, &s.n2.base, "app")
        .args(extra)
        .current_dir(s.dir.path())
        .output()
        .expect("run northwest migrate")
}

fn ok(o: &std::process::Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "migrate failed: {}\n{}",
        out,
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

async fn preload(base: &str) {
    random_load(base, "app", 4000, 300, 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migration_under_load_cuts_over_with_no_failed_request() {
    let mut s = setup();
    // History written before journaling started reaches n2 only via the snapshot.
    let cfg = std::fs::read_to_string(&s.n1.config).unwrap();
    s.n1.stop();
    std::fs::write(
        &s.n1.config,
        cfg.replace("enabled = true", "enabled = false"),
    )
    .unwrap();
    s.n1.spawn();
    preload(&s.n1.base).await;
    s.n1.stop();
    std::fs::write(&s.n1.config, &cfg).unwrap();
    s.n1.spawn();
    let load = LoadRun::start(&s.n1.base, "app", 300, 8);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let o = tokio::task::spawn_blocking({
        let (n1, n2, d) = (
            s.n1.base.clone(),
            s.n2.base.clone(),
            s.dir.path().to_path_buf(),
        );
        move || {
            Command::new(bin_path("northwest"))
                .args([
                    "migrate",
                    "--from",
                    &n1,
                    "--to",
                    &n2,
                    "--namespace",
                    "app",
                    "--quiet",
                    "--json",
                    "--zk",
                    &zk_addr(),
                    "--brokers",
                    &kafka_addr(),
                    "--chunk",
                    "500",
                ])
                .current_dir(d)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let r = migrate_report(&o);
    // Load keeps running against n1 (now a proxy) after the switch.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let acked = load.stop().await;
    assert_eq!(r["phase"], "done");
    assert_eq!(r["verify"]["differing_kinds"], serde_json::json!([]), "{r}");
    assert!(r["snapshot_rows"].as_u64().unwrap() > 500, "{r}");
    let s2 = get_json(&format!("{}/v1/admin/status", s.n2.base)).await;
    assert!(
        s2["loader"]["writes_applied"].as_u64().unwrap() > 500,
        "the snapshot was loaded: {s2}"
    );
    assert_eq!(
        acked.failed.load(Ordering::Relaxed),
        0,
        "failed requests: {:?}",
        acked.errors.lock().unwrap()
    );
    assert_eq!(
        acked.stale_reads.load(Ordering::Relaxed),
        0,
        "a read saw older data than before"
    );
    assert!(acked.issued.load(Ordering::Relaxed) > 200);
    let st = get_json(&format!("{}/v1/admin/status", s.n1.base)).await;
    assert_eq!(st["proxies"], serde_json::json!({"app": s.n2.base}));
    // n2 holds every acknowledged write: none lost, none stale, no delete resurrected.
    assert_holds_acked(&s.n2.base, "app", &acked).await;
    // n1's digest of the namespace it forwards is n2's, and `digest --compare`
    // says plainly that comparing them proves nothing (it once reported a
    // false mismatch from n1's stale local copy).
    assert_eq!(
        digest(&s.n1.base, "app").await,
        digest(&s.n2.base, "app").await
    );
    let o = Command::new(bin_path("northwest"))
        .args(["digest", "--ns", "app", "--node", &s.n1.base, "--compare"])
        .arg(&s.n2.base)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{said}");
    assert!(said.contains("no longer serves namespace app"), "{said}");
    eprintln!(
        "cutover write pause {} ms, verify pause {} ms",
        r["write_pause_ms"], r["verify_pause_ms"]
    );
}

/// The cutover moves one namespace: n1 keeps serving another one, and n1
/// killed between the proxy step and the switch comes back proxying.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cutover_moves_one_namespace_and_survives_n1_restart() {
    let mut s = setup();
    random_load(&s.n1.base, "app", 500, 50, 8).await;
    random_load(&s.n1.base, "other", 200, 20, 8).await;
    ok(&migrate(&s, &["--stop-after", "proxy"]));
    s.n1.kill9();
    s.n1.spawn();
    let c = reqwest::Client::new();
    let put = |ns: &str, key: &str, v: &str| {
        c.put(format!("{}/v1/ns/{ns}/e/{key}", s.n1.base))
            .body(v.to_string())
            .send()
    };
    // The migrated namespace is forwarded to n2 after the restart: n1
    // commits nothing (its outbox sequence does not move).
    let before = get_json(&format!("{}/v1/admin/status", s.n1.base)).await["outbox_next"].clone();
    let r = put("app", "After:1", "restarted").await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let on_n2 = c
        .get(format!("{}/v1/ns/app/e/After:1", s.n2.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        on_n2.text().await.unwrap(),
        "restarted",
        "n1 did not forward"
    );
    let after = get_json(&format!("{}/v1/admin/status", s.n1.base)).await["outbox_next"].clone();
    assert!(before.is_u64(), "status shows outbox_next");
    assert_eq!(
        before, after,
        "n1 committed the write locally instead of forwarding it"
    );
    // The other namespace is still n1's: written and read there.
    let r = put("other", "Mine:1", "n1").await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let st = get_json(&format!("{}/v1/admin/status", s.n1.base)).await;
    assert_eq!(st["proxies"], serde_json::json!({"app": s.n2.base}), "{st}");
    // n2 refuses direct writes to the namespace it still replicates.
    let r = c
        .put(format!("{}/v1/ns/other/e/Mine:2", s.n2.base))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    // Resuming finishes the switch (it checks n1 really forwards).
    let r = migrate_report(&migrate(&s, &["--json"]));
    assert_eq!(r["phase"], "done", "{r}");
    // Done already: `--json` prints one JSON document and nothing else.
    let again = ok(&migrate(&s, &["--json"]));
    let doc: serde_json::Value = serde_json::from_str(&again).expect("stdout is only JSON");
    assert_eq!(doc["phase"], "done");
    // A different target for the migrated namespace is refused: exit 2, reason on stderr.
    let o = Command::new(bin_path("northwest"))
        .args(["migrate", "--namespace", "app", "--from", &s.n1.base])
        .args(["--to", "http://127.0.0.1:9", "--zk", &zk_addr()])
        .args(["--brokers", &kafka_addr()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("refused: namespace app was migrated from")
            && err.contains(&format!("a next hop goes --from {}", s.n2.base)),
        "{err}"
    );
    assert!(o.stdout.is_empty());
    grafana_metrics_exist(&s).await;
}

/// Every metric the Grafana dashboard in deploy/ graphs exists on a live
/// node (n1 or n2, after a migration), so no panel is silently empty.
async fn grafana_metrics_exist(s: &Setup) {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/northwest.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("dashboard JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dash, &mut exprs);
    assert!(
        exprs.len() >= 10,
        "only {} queries in the dashboard",
        exprs.len()
    );
    // The nodes refresh these series every 2 s: wait for the migration's end to show.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut exported = String::new();
        for base in [&s.n1.base, &s.n2.base] {
            exported += &reqwest::get(format!("{base}/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
        }
        let missing = unexported(&exprs, &exported);
        if missing.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "graphed but not exported: {missing:?}\n{exported}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The metric names in `exprs` of which `exported` has no series.
fn unexported(exprs: &[String], exported: &str) -> Vec<String> {
    let mut missing = Vec::new();
    for e in exprs {
        for (i, _) in e.match_indices("northwest_") {
            let name: String = e[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                .collect();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suf| name.strip_suffix(suf))
                .unwrap_or(&name);
            let series = |n: &str| {
                exported.contains(&format!("\n{n}{{")) || exported.contains(&format!("\n{n} "))
            };
            if !series(&name) && !series(base) && !missing.contains(&name) {
                missing.push(name);
            }
        }
    }
    missing
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x.as_str()) {
                    ("expr" | "query", Some(q)) => out.push(q.to_string()),
                    _ => collect_exprs(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_exprs(x, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_orchestrator_resumes_and_snapshot_is_not_restarted() {
    let s = setup();
    random_load(&s.n1.base, "app", 6000, 1500, 16).await;
    // Stop at each boundary once (the state in ZooKeeper is all a run keeps).
    for phase in ["init", "metadata-sync", "journaling"] {
        ok(&migrate(&s, &["--stop-after", phase]));
    }
    // Kill -9 in the middle of a rate-limited snapshot stream.
    let mut child = Command::new(bin_path("northwest"))
        .args([
            "migrate",
            "--from",
            &s.n1.base,
            "--to",
            &s.n2.base,
            "--namespace",
            "app",
            "--quiet",
            "--zk",
            &zk_addr(),
            "--brokers",
            &kafka_addr(),
            "--rate",
            "1500",
            "--chunk",
            "100",
            "--ranges",
            "2",
        ])
        .spawn()
        .unwrap();
    // Kill once a few chunks are on the snapshot topic (a fixed sleep could
    // land before streaming starts on a loaded machine), well before the end.
    let prefix = format!("{}.snapshot.app.", s.topic);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while records_in_topics_with_prefix(&prefix) < 1000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the snapshot never started streaming"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "orchestrator ended early"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    ok(&migrate(&s, &["--stop-after", "snapshot"]));
    ok(&migrate(&s, &["--stop-after", "catch-up"]));
    ok(&migrate(&s, &["--stop-after", "verify"]));
    let r = migrate_report(&migrate(&s, &["--json"]));
    assert_eq!(r["phase"], "done");
    assert!(
        r["snapshot_resumed_rows"].as_u64().unwrap() > 0,
        "snapshot restarted from scratch: {r}"
    );
    assert!(r["runs"].as_u64().unwrap() >= 7, "{r}");
    assert_eq!(r["verify"]["differing_kinds"], serde_json::json!([]));
    assert_eq!(
        digest(&s.n2.base, "app").await["count"],
        r["verify"]["n1"]["count"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_in_each_phase_leaves_n1_serving_without_loss() {
    let s = setup();
    preload(&s.n1.base).await;
    for phase in [
        "init",
        "metadata-sync",
        "journaling",
        "snapshot",
        "catch-up",
        "verify",
    ] {
        let load = LoadRun::start(&s.n1.base, "app", 100, 4);
        let (n1, n2, d) = (
            s.n1.base.clone(),
            s.n2.base.clone(),
            s.dir.path().to_path_buf(),
        );
        let ph = phase.to_string();
        let out = tokio::task::spawn_blocking(move || {
            let run = |extra: &[&str]| {
                migrate_cmd(&n1, &n2, "app")
                    .args(extra)
                    .current_dir(&d)
                    .output()
                    .unwrap()
            };
            (run(&["--stop-after", &ph]), run(&["--abort"]))
        })
        .await
        .unwrap();
        ok(&out.0);
        let said = ok(&out.1);
        assert!(
            said.contains(&format!("aborted after phase {phase};")),
            "abort after --stop-after {phase} said: {said}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let acked = load.stop().await;
        assert_eq!(
            acked.failed.load(Ordering::Relaxed),
            0,
            "after abort in {phase}: {:?}",
            acked.errors.lock().unwrap()
        );
        let st = get_json(&format!("{}/v1/admin/status", s.n1.base)).await;
        assert_eq!(st["fenced"], serde_json::json!([]));
        assert_eq!(st["proxies"], serde_json::json!({}));
        assert_holds_acked(&s.n1.base, "app", &acked).await;
    }
}

/// `--max-pause-ms` bounds the cutover: a drain that would hold writes
/// longer lifts the fence and tries again; after the last attempt the
/// migration stops with n1 still serving (not fenced, not forwarding), and
/// running it again without the budget completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cutover_over_its_pause_budget_is_called_off_and_n1_keeps_serving() {
    let s = setup();
    random_load(&s.n1.base, "app", 300, 30, 8).await;
    // No drain (an HTTP round trip to each node at least) fits in 1 ms.
    let t = std::time::Instant::now();
    let o = migrate(&s, &["--max-pause-ms", "1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    // Five attempts, 2 s apart.
    assert!(
        t.elapsed() >= Duration::from_secs(8),
        "{:?}: {err}",
        t.elapsed()
    );
    assert!(
        err.contains("did not fit in --max-pause-ms 1") && err.contains("n1 keeps serving"),
        "{err}"
    );
    let st = get_json(&format!("{}/v1/admin/status", s.n1.base)).await;
    assert_eq!(st["fenced"], serde_json::json!([]), "{st}");
    assert_eq!(st["proxies"], serde_json::json!({}), "{st}");
    let r = reqwest::Client::new()
        .put(format!("{}/v1/ns/app/e/After:1", s.n1.base))
        .body("\"still n1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "n1 stopped serving");
    // The rerun resumes the same migration at the cutover.
    let o = migrate(&s, &["--json"]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        err.contains("resuming migration") && err.contains("at phase proxy"),
        "{err}"
    );
    let r = migrate_report(&o);
    assert_eq!(r["phase"], "done", "{r}");
}
