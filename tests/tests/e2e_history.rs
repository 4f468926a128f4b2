//! One history per namespace: whichever node serves a namespace journals its
//! client writes to the one journal topic, so the topics hold the whole
//! history across cutovers and rollbacks. A rebuild after a rollback gets the
//! writes the new primary took; a standing replica of the journal (a
//! follower) stays equal to the primary across a migration and a rollback,
//! killed midway.

use std::sync::atomic::Ordering;
use std::time::Duration;

use northwest_tests::*;

fn migrate(n1: &str, n2: &str, extra: &[&str]) -> std::process::Output {
    migrate_json(n1, n2, "app", extra)
}

async fn blocking_migrate(n1: &str, n2: &str, extra: &[&str]) -> std::process::Output {
    let (n1, n2) = (n1.to_string(), n2.to_string());
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        migrate(&n1, &n2, &extra)
    })
    .await
    .unwrap()
}

/// A further target of the pipeline's journal, named `name`.
fn another_target(p: &Pipeline, root: &str, name: &str) -> NodeProc {
    NodeProc::start(
        p.dir.path(),
        name,
        &node_toml(name, p.dir.path(), free_port(), root, &p.topic, ""),
    )
}

async fn status(base: &str) -> serde_json::Value {
    get_json(&format!("{base}/v1/admin/status")).await
}

async fn put(base: &str, key: &str, body: &str) {
    let r = reqwest::Client::new()
        .put(format!("{base}/v1/ns/app/e/{key}"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "PUT {key}: {:?}", r.text().await);
}

async fn delete(base: &str, key: &str) {
    let r = reqwest::Client::new()
        .delete(format!("{base}/v1/ns/app/e/{key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "DELETE {key}: {:?}", r.text().await);
}

async fn get_status(base: &str, key: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{base}/v1/ns/app/e/{key}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The issue's reproduction: PUT `Old:1` on n1, migrate, PUT `New:1` and
/// DELETE `Old:1` through n1 (served by n2), roll back, rebuild a fresh n3
/// from the topics: n3 holds `New:1`, not `Old:1`, and equals n1. Before one
/// history, n2's writes were only in its reverse journal, which the rebuild
/// never read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_after_a_rollback_holds_the_writes_the_new_primary_took() {
    let p = Pipeline::start("history-rebuild", "");
    let (n1, n2) = (p.n1.base.clone(), p.n2.base.clone());
    random_load(&n1, "app", 400, 60, 6).await;
    put(&n1, "Old:1", "old").await;
    let load = LoadRun::start(&n1, "app", 80, 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let o = blocking_migrate(&n1, &n2, &[]).await;
    assert_eq!(migrate_report(&o)["phase"], "done");
    put(&n1, "New:1", "new").await;
    delete(&n1, "Old:1").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let o = blocking_migrate(&n1, &n2, &["--rollback"]).await;
    assert_eq!(migrate_report(&o)["rolled_back"], "app");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acked = load.stop().await;
    assert_eq!(
        acked.failed.load(Ordering::Relaxed),
        0,
        "{:?}",
        acked.errors.lock().unwrap()
    );

    let root = status(&n2).await["zk_root"].as_str().unwrap().to_string();
    let n3 = another_target(&p, &root, "n3");
    let o = tokio::task::spawn_blocking({
        let n3 = n3.base.clone();
        move || run_migrate(&["--from-topics", "--to", &n3, "--json", "--namespace", "app"])
    })
    .await
    .unwrap();
    // Compared by default with the primary, here the source n1 again.
    let r = migrate_report(&o);
    assert_eq!(r["compare"]["with"], n1, "{r}");
    assert_eq!(r["compare"]["equal"], true, "n3 equals n1: {r}");
    wait_caught_up(&n1, &n3.base, Duration::from_secs(60)).await;
    let d1 = digest(&n1, "app").await;
    let d3 = get_json(&format!("{}/v1/ns/app/digest?local=true", n3.base)).await;
    assert_eq!(d1["digest"], d3["digest"], "n3 equals n1: n1 {d1} n3 {d3}");
    assert_eq!(
        get_status(&n3.base, "New:1").await,
        200,
        "n2's put is on n3"
    );
    assert_eq!(
        get_status(&n3.base, "Old:1").await,
        404,
        "n2's delete is on n3"
    );
    assert_holds_acked(&n3.base, "app", &acked).await;
    assert_one_history(&n1, &p.topic, &["n1", "n2", "n1"]).await;
}

/// The namespace's timeline names `primaries` in order, every record of it
/// on the journal lies in its committer's epoch (each epoch has some), and
/// every group's transactions appear in commit order across the epochs.
async fn assert_one_history(node: &str, topic: &str, primaries: &[&str]) {
    let o = std::process::Command::new(bin_path("northwest"))
        .args(["timeline", "--node", node, "--namespace", "app", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let t: northwest_control::Timeline = serde_json::from_value(v["timeline"].clone()).unwrap();
    let names: Vec<&str> = t.epochs.iter().map(|e| e.primary.as_str()).collect();
    assert_eq!(names, primaries, "{v}");
    assert!(t.epochs.iter().all(|e| !e.approximate), "{v}");
    let topic = topic.to_string();
    let records = tokio::task::spawn_blocking(move || journal_records_at(&topic))
        .await
        .unwrap();
    let per_epoch = assert_epochs_hold_their_primary(&t, &records, "app");
    assert!(
        per_epoch.iter().all(|n| *n > 0),
        "records per epoch {per_epoch:?}"
    );
    let app: Vec<_> = records
        .into_iter()
        .filter(|(_, _, r)| r.namespace == "app")
        .map(|(_, _, r)| r)
        .collect();
    assert_group_order(&app);
}

/// A follower: a fourth node that applies the journal and is never
/// migrated to. Started before the first cutover, it stays equal to the
/// primary through a migration and a rollback under load, killed with -9
/// while n2 serves the namespace and started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_stays_equal_to_the_primary_across_a_migration_and_a_rollback() {
    let p = Pipeline::start("history-follower", "");
    let (n1, n2) = (p.n1.base.clone(), p.n2.base.clone());
    let root = status(&n2).await["zk_root"].as_str().unwrap().to_string();
    let mut n4 = another_target(&p, &root, "n4");
    random_load(&n1, "app", 400, 60, 6).await;
    let load = LoadRun::start(&n1, "app", 80, 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let o = blocking_migrate(&n1, &n2, &[]).await;
    assert_eq!(migrate_report(&o)["phase"], "done");
    // n2 serves; its writes reach the follower through the journal. The
    // follower dies mid-stream and resumes from its stored offsets.
    tokio::time::sleep(Duration::from_millis(800)).await;
    n4.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    n4.spawn();
    n4.wait_healthy();
    let o = blocking_migrate(&n1, &n2, &["--rollback"]).await;
    assert_eq!(migrate_report(&o)["rolled_back"], "app");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acked = load.stop().await;
    assert_eq!(
        acked.failed.load(Ordering::Relaxed),
        0,
        "{:?}",
        acked.errors.lock().unwrap()
    );
    wait_caught_up(&n1, &n4.base, Duration::from_secs(60)).await;
    let d1 = digest(&n1, "app").await;
    let d4 = get_json(&format!("{}/v1/ns/app/digest?local=true", n4.base)).await;
    assert_eq!(d1["digest"], d4["digest"], "n1 {d1} n4 {d4}");
    assert_holds_acked(&n4.base, "app", &acked).await;
    assert_one_history(&n4.base, &p.topic, &["n1", "n2", "n1"]).await;
    let v = get_json(&format!("{}/v1/admin/timeline/app", n4.base)).await;
    assert_eq!(
        v["behind"],
        serde_json::json!([{"epoch": 0, "records": 0}, {"epoch": 1, "records": 0}, {"epoch": 2, "records": 0}]),
        "the follower read every epoch to its end (the current one to the high-water marks): {v}"
    );
    // Its status and metrics say the same per epoch (from the timelines
    // its housekeeping reads every 2 s).
    type Row = (String, u64, String, bool, i64);
    let want: Vec<Row> = vec![
        ("app".into(), 0, "n1".into(), false, 0),
        ("app".into(), 1, "n2".into(), false, 0),
        ("app".into(), 2, "n1".into(), true, 0),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let st = get_json(&format!("{}/v1/admin/status", n4.base)).await;
        let epochs: Vec<Row> = st["apply"]["epochs"]
            .as_array()
            .unwrap_or(&Vec::new())
            .iter()
            .map(|e| {
                (
                    e["namespace"].as_str().unwrap_or("").to_string(),
                    e["epoch"].as_u64().unwrap_or(99),
                    e["primary"].as_str().unwrap_or("").to_string(),
                    e["current"].as_bool().unwrap_or(false),
                    e["lag_records"].as_i64().unwrap_or(-1),
                )
            })
            .collect();
        if epochs == want {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{epochs:?} != {want:?}: {st}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = reqwest::get(format!("{}/metrics", n4.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"northwest_epoch_lag_records{epoch="2",namespace="app",node="n4"} 0"#),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("epoch_lag"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let page = tokio::task::spawn_blocking({
        let url = format!("{}/", n4.base);
        move || northwest_tests::browser::load(&url, 3000, None)
    })
    .await
    .unwrap();
    let shown = page.text_of("timelines").unwrap_or_default();
    // Replaying n2's epoch on the follower changes nothing (always safe),
    // and it comes back to the same copy.
    let o = std::process::Command::new(bin_path("northwest"))
        .args([
            "replay",
            "--node",
            &n4.base,
            "--from-epoch",
            "1",
            "--namespace",
            "app",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rewound = String::from_utf8_lossy(&o.stdout).to_string();
    // It rewound every partition to where epoch 1 begins.
    let begins = v["timeline"]["epochs"][1]["begins"]
        .as_object()
        .unwrap()
        .clone();
    assert!(!begins.is_empty(), "{v}");
    for (p, o) in &begins {
        let want = format!("{p}: {o}");
        assert!(rewound.contains(&want), "{want} not in {rewound}");
    }
    wait_caught_up(&n1, &n4.base, Duration::from_secs(60)).await;
    let again = get_json(&format!("{}/v1/ns/app/digest?local=true", n4.base)).await;
    assert_eq!(again["digest"], d1["digest"], "{rewound}");
    let o = std::process::Command::new(bin_path("northwest"))
        .args([
            "replay",
            "--node",
            &n4.base,
            "--from-epoch",
            "9",
            "--namespace",
            "app",
        ])
        .output()
        .unwrap();
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("has no epoch 9"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        shown.contains("epoch 2") && shown.contains("rollback of"),
        "the dashboard shows the timeline: {shown}"
    );
}

/// A chain: n1 -> n2, then n2 -> n3 under continuous mixed load through n1
/// with no failed request. Each hop is verified; n1 then forwards straight
/// to n3 (one hop), n2 forwards to n3 and takes no write of its own, and
/// both old primaries keep a copy equal to n3. The timeline names n1, n2,
/// n3, and every record on the journal lies in its committer's epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_namespace_moves_on_from_the_node_it_was_migrated_to() {
    let p = Pipeline::start("history-chain", "");
    let (n1, n2) = (p.n1.base.clone(), p.n2.base.clone());
    let root = status(&n2).await["zk_root"].as_str().unwrap().to_string();
    let n3 = another_target(&p, &root, "n3");
    let n3u = n3.base.clone();
    random_load(&n1, "app", 400, 60, 6).await;
    let load = LoadRun::start(&n1, "app", 80, 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = migrate_report(&blocking_migrate(&n1, &n2, &[]).await);
    assert_eq!(r["verify"]["differing_kinds"], serde_json::json!([]), "{r}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    // The old direction is refused with where to go instead.
    let o = blocking_migrate(&n1, &n3u, &[]).await;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("--from {n2}")), "{err}");
    let r = migrate_report(&blocking_migrate(&n2, &n3u, &[]).await);
    assert_eq!(r["phase"], "done", "{r}");
    assert_eq!(r["verify"]["differing_kinds"], serde_json::json!([]), "{r}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let acked = load.stop().await;
    assert_eq!(
        acked.failed.load(Ordering::Relaxed),
        0,
        "{:?}",
        acked.errors.lock().unwrap()
    );
    assert_eq!(acked.stale_reads.load(Ordering::Relaxed), 0);
    let (s1, s2, s3) = (status(&n1).await, status(&n2).await, status(&n3u).await);
    assert_eq!(
        s1["proxies"]["app"],
        n3u.as_str(),
        "n1 forwards one hop: {s1}"
    );
    assert_eq!(s2["proxies"]["app"], n3u.as_str(), "{s2}");
    assert_eq!(
        s2["promoted"],
        serde_json::json!([]),
        "n2 was demoted: {s2}"
    );
    assert_eq!(s3["promoted"], serde_json::json!(["app"]), "{s3}");
    assert_holds_acked(&n3u, "app", &acked).await;
    // Both old primaries follow the namespace: n2 applies the journal, n1
    // applies what the primary of a namespace it forwards writes.
    wait_caught_up(&n3u, &n2, Duration::from_secs(60)).await;
    let d3 = digest(&n3u, "app").await;
    for n in [&n1, &n2] {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let d = get_json(&format!("{n}/v1/ns/app/digest?local=true")).await;
            if d["digest"] == d3["digest"] {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{n}'s copy {d} != n3's {d3}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    assert_one_history(&n1, &p.topic, &["n1", "n2", "n3"]).await;
    let kept = std::process::Command::new(bin_path("northwest"))
        .args(["timeline", "--node", &n3u, "--namespace", "app"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&kept.stdout);
    assert!(
        text.contains("epoch 2") && text.contains("(current)"),
        "{text}"
    );
    // A rebuild from the topics (n2's snapshot, then the journal) is
    // compared with the primary, n3, without being asked to.
    let n5 = another_target(&p, &root, "n5");
    let o = tokio::task::spawn_blocking({
        let n5 = n5.base.clone();
        move || run_migrate(&["--from-topics", "--to", &n5, "--json", "--namespace", "app"])
    })
    .await
    .unwrap();
    let r = migrate_report(&o);
    assert_eq!(r["snapshot"]["source"], "n2", "{r}");
    assert_eq!(r["compare"]["with"], n3u.as_str(), "{r}");
    assert_eq!(r["compare"]["equal"], true, "{r}");
}

/// n1 -> n2 -> n3, then the last hop rolled back (n2 serves again, a target
/// that applies n3's writes by its apply loop), then the namespace moves on
/// to n3 once more: all under load through n1 with no failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chained_hop_rolls_back_and_moves_on_again() {
    let p = Pipeline::start("history-chain-back", "");
    let (n1, n2) = (p.n1.base.clone(), p.n2.base.clone());
    let root = status(&n2).await["zk_root"].as_str().unwrap().to_string();
    let n3 = another_target(&p, &root, "n3");
    let n3u = n3.base.clone();
    random_load(&n1, "app", 300, 50, 6).await;
    let load = LoadRun::start(&n1, "app", 60, 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        migrate_report(&blocking_migrate(&n1, &n2, &[]).await)["phase"],
        "done"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        migrate_report(&blocking_migrate(&n2, &n3u, &[]).await)["phase"],
        "done"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = migrate_report(&blocking_migrate(&n2, &n3u, &["--rollback"]).await);
    assert_eq!(r["rolled_back"], "app", "{r}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s1, s2, s3) = (status(&n1).await, status(&n2).await, status(&n3u).await);
    assert_eq!(
        s1["proxies"]["app"],
        n2.as_str(),
        "n1 forwards one hop: {s1}"
    );
    assert!(s2["proxies"]["app"].is_null(), "n2 serves: {s2}");
    assert_eq!(s2["promoted"], serde_json::json!(["app"]), "{s2}");
    assert_eq!(s2["promotion_unconfirmed"], serde_json::json!([]), "{s2}");
    assert_eq!(s3["proxies"]["app"], n2.as_str(), "{s3}");
    assert_eq!(s3["promoted"], serde_json::json!([]), "{s3}");
    // Clients of n2 itself are served (not only what n1 forwards).
    put(&n2, "Direct:1", "on n2").await;
    let r = migrate_report(&blocking_migrate(&n2, &n3u, &[]).await);
    assert_eq!(r["verify"]["differing_kinds"], serde_json::json!([]), "{r}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acked = load.stop().await;
    assert_eq!(
        acked.failed.load(Ordering::Relaxed),
        0,
        "{:?}",
        acked.errors.lock().unwrap()
    );
    assert_holds_acked(&n3u, "app", &acked).await;
    assert_eq!(get_status(&n3u, "Direct:1").await, 200);
    assert_one_history(&n3u, &p.topic, &["n1", "n2", "n3", "n2", "n3"]).await;
}

/// Three namespaces migrate at once under load on all of them: two from n1
/// to n2, one from n1 to n3, each with its own orchestrator, fences and
/// timeline; nothing fails and each new primary holds every acknowledged
/// write of its namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_namespaces_migrate_concurrently_under_load() {
    let p = Pipeline::start("history-concurrent", "");
    let (n1, n2) = (p.n1.base.clone(), p.n2.base.clone());
    let root = status(&n2).await["zk_root"].as_str().unwrap().to_string();
    let n3 = another_target(&p, &root, "n3");
    let plan = [
        ("red", n2.clone()),
        ("green", n2.clone()),
        ("blue", n3.base.clone()),
    ];
    let mut loads = Vec::new();
    for (ns, _) in &plan {
        random_load(&n1, ns, 200, 40, 4).await;
        loads.push(LoadRun::start(&n1, ns, 40, 2));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let runs: Vec<_> = plan
        .iter()
        .map(|(ns, to)| {
            let (n1, to, ns) = (n1.clone(), to.clone(), ns.to_string());
            tokio::task::spawn_blocking(move || migrate_json(&n1, &to, &ns, &[]))
        })
        .collect();
    for (run, (ns, to)) in runs.into_iter().zip(&plan) {
        let r = migrate_report(&run.await.unwrap());
        assert_eq!(r["phase"], "done", "{ns}: {r}");
        assert_eq!(r["to"], to.as_str(), "{r}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s1 = status(&n1).await;
    for ((ns, to), load) in plan.iter().zip(loads) {
        let acked = load.stop().await;
        assert_eq!(
            acked.failed.load(Ordering::Relaxed),
            0,
            "{ns}: {:?}",
            acked.errors.lock().unwrap()
        );
        assert_eq!(s1["proxies"][ns], to.as_str(), "{s1}");
        assert_holds_acked(to, ns, &acked).await;
        let v = get_json(&format!("{to}/v1/admin/timeline/{ns}")).await;
        assert_eq!(v["timeline"]["epochs"].as_array().unwrap().len(), 2, "{v}");
    }
}

/// Round trip: n1 -> n2 -> n3 -> n1 (back onto the original source, which
/// followed the namespace all along), then n1 -> n2 once more, under
/// continuous mixed load through n1 with no failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_namespace_goes_round_to_its_first_node_and_out_again() {
    let p = Pipeline::start("history-round", "");
    let (n1, n2) = (p.n1.base.clone(), p.n2.base.clone());
    let root = status(&n2).await["zk_root"].as_str().unwrap().to_string();
    let n3 = another_target(&p, &root, "n3");
    let n3u = n3.base.clone();
    random_load(&n1, "app", 300, 50, 6).await;
    let mut loads = Vec::new();
    for (i, (from, to)) in [(&n1, &n2), (&n2, &n3u), (&n3u, &n1), (&n1, &n2)]
        .into_iter()
        .enumerate()
    {
        // The way back first dies between the switch's two steps (n3
        // forwards to n1, n1 does not serve yet: requests are refused
        // meanwhile, so it runs before this hop's load): the rerun finishes
        // it, recorded once under an id named after the hop it follows.
        let finished = if i == 2 {
            let o = blocking_migrate(
                from,
                to,
                &["--crash-points", "rollback::between_switches=error"],
            )
            .await;
            let err = String::from_utf8_lossy(&o.stderr).to_string();
            assert_eq!(o.status.code(), Some(1), "{err}");
            assert!(err.contains("rollback::between_switches"), "{err}");
            let r = migrate_report(&blocking_migrate(from, to, &[]).await);
            assert_eq!(
                r["id"].as_str().map(|id| id.ends_with("-back")),
                Some(true),
                "{r}"
            );
            Some(r)
        } else {
            None
        };
        // A load per hop, so a failure names its hop.
        let load = LoadRun::start(&n1, "app", 60, 4);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = match finished {
            Some(r) => r,
            None => migrate_report(&blocking_migrate(from, to, &[]).await),
        };
        assert_eq!(r["phase"], "done", "{from} -> {to}: {r}");
        assert_eq!(r["to"], to.as_str(), "{r}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let acked = load.stop().await;
        assert_eq!(
            acked.failed.load(Ordering::Relaxed),
            0,
            "hop {i} ({from} -> {to}): {:?}",
            acked.errors.lock().unwrap()
        );
        let s = status(to).await;
        assert!(s["proxies"]["app"].is_null(), "{to} serves: {s}");
        loads.push(acked);
    }
    let (s1, s3) = (status(&n1).await, status(&n3u).await);
    assert_eq!(s1["proxies"]["app"], n2.as_str(), "{s1}");
    assert_eq!(s3["proxies"]["app"], n2.as_str(), "one hop: {s3}");
    // What every load was told, newest version per key.
    let all = northwest_tests::Acked::default();
    {
        let mut keys = all.keys.lock().unwrap();
        for acked in &loads {
            for (k, (v, value)) in acked.keys.lock().unwrap().iter() {
                let e = keys.entry(k.clone()).or_insert((0, None));
                if *v > e.0 {
                    *e = (*v, value.clone());
                }
            }
        }
    }
    assert_holds_acked(&n2, "app", &all).await;
    assert_one_history(&n2, &p.topic, &["n1", "n2", "n3", "n1", "n2"]).await;
}
