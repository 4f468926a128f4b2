//! Delete-marker GC on a real n1 -> n2 pipeline: markers older than their
//! retention and than n1's outbox horizon (a minute) stay while the journal
//! still holds records that could undercut them (a time rule alone would
//! drop them), go once those records have left
//! the broker (expired here with Kafka's own kafka-delete-records), are
//! counted in status and /metrics, and a replay after GC resurrects nothing.

use std::time::Duration;

use northwest_tests::*;
use serde_json::Value;

/// n2 keeps markers 0.72 s (the journal it is told it has: 0.5 s) and runs
/// a pass every second.
const N2_GC: &str =
    "retention_ms = 500\n[store]\nmarker_retention_hours = 0.0002\nmarker_gc_interval_s = 1\n";

async fn gc_status(n2: &str) -> Value {
    get_json(&format!("{n2}/v1/admin/status")).await["marker_gc"].clone()
}

/// Polls n2's status until `ok` holds for its `marker_gc` (passes run every
/// second).
async fn wait_gc(n2: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    loop {
        let g = gc_status(n2).await;
        if ok(&g) {
            return g;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {g}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn put(c: &reqwest::Client, base: &str, i: u32, v: &str) {
    let r = c
        .put(format!("{base}/v1/ns/app/e/Doc:{i}"))
        .body(v.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn delete(c: &reqwest::Client, base: &str, i: u32) {
    let r = c
        .delete(format!("{base}/v1/ns/app/e/Doc:{i}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn absent(c: &reqwest::Client, base: &str, keys: std::ops::RangeInclusive<u32>) {
    for i in keys {
        let r = c
            .get(format!("{base}/v1/ns/app/e/Doc:{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "Doc:{i} came back on {base}");
    }
}

async fn replay_from_beginning(c: &reqwest::Client, p: &Pipeline) {
    let r = c
        .post(format!("{}/v1/admin/replay", p.n2.base))
        .json(&serde_json::json!({"from_beginning": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    wait_caught_up(&p.n1.base, &p.n2.base, Duration::from_secs(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn markers_go_only_after_the_journal_that_could_undercut_them() {
    let p = Pipeline::start_with("markergc", "", N2_GC);
    let (n1, n2) = (p.n1.base.clone(), p.n2.base.clone());
    let c = reqwest::Client::new();
    for i in 1..=40 {
        put(&c, &n1, i, &format!("v1-{i}")).await;
    }
    for i in 1..=20 {
        delete(&c, &n1, i).await;
    }
    let deleted_at = tokio::time::Instant::now();
    wait_caught_up(&n1, &n2, Duration::from_secs(120)).await;
    wait_gc(&n2, "20 markers counted and an epoch taken", |g| {
        g["markers"] == 20 && g["epoch"]["generation"].is_u64()
    })
    .await;

    // Older than their retention and than n1's outbox horizon (a minute),
    // but the puts they shadow are still in the journal: they stay, and a
    // replay of everything resurrects nothing.
    replay_from_beginning(&c, &p).await;
    absent(&c, &n2, 1..=20).await;
    tokio::time::sleep_until(deleted_at + Duration::from_secs(70)).await;
    let g = wait_gc(&n2, "a pass that is not blocked", |g| {
        g["blocked"].is_null()
    })
    .await;
    assert_eq!(
        g["markers"], 20,
        "markers removed while their journal is retained: {g}"
    );
    assert!(
        g["waiting"]
            .as_str()
            .is_some_and(|w| w.contains("still holds records")),
        "{g}"
    );
    replay_from_beginning(&c, &p).await;
    absent(&c, &n2, 1..=20).await;

    // The journal's records leave the broker (what retention does): the
    // markers go, and the metrics say so.
    for partition in 0..4 {
        expire_partition_backlog(&p.topic, partition, p.dir.path());
    }
    wait_gc(&n2, "markers removed once the journal expired", |g| {
        g["markers"] == 0
    })
    .await;
    let m = reqwest::get(format!("{n2}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sample = |name: &str| {
        m.lines()
            .find(|l| l.starts_with(name) && !l.starts_with(&format!("{name}_")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert_eq!(sample("northwest_delete_markers{"), Some(0.0), "{m}");
    assert_eq!(
        sample("northwest_delete_markers_removed_total{"),
        Some(20.0),
        "{m}"
    );

    // New history after the GC: a marker whose records are retained stays,
    // and a replay of all that is left changes nothing.
    put(&c, &n1, 21, "v2-21").await;
    delete(&c, &n1, 21).await;
    for i in 30..=40 {
        put(&c, &n1, i, &format!("v2-{i}")).await;
    }
    wait_caught_up(&n1, &n2, Duration::from_secs(120)).await;
    wait_gc(&n2, "the new marker counted", |g| g["markers"] == 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        gc_status(&n2).await["markers"],
        1,
        "a retained marker was removed"
    );
    replay_from_beginning(&c, &p).await;
    absent(&c, &n2, 1..=21).await;
    assert_eq!(digest(&n2, "app").await, digest(&n1, "app").await);
}

/// Snapshot rows carry the source's own name: a target that loaded a
/// snapshot from a source named anything but `n1` still takes GC epochs
/// (rows marked with a name no source reports under would block it forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_rows_name_their_real_source() {
    let p = Pipeline::start_named("gcorigin", ("east", "west"), "", N2_GC);
    let (n1, n2) = (p.n1.base.clone(), p.n2.base.clone());
    let c = reqwest::Client::new();
    for i in 1..=30 {
        put(&c, &n1, i, &format!("v1-{i}")).await;
    }
    for i in 1..=5 {
        delete(&c, &n1, i).await;
    }
    let o = run_migrate(&["--from", &n1, "--to", &n2, "--namespace", "app", "--json"]);
    let report = migrate_report(&o);
    assert!(
        report["snapshot_rows"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let g = gc_status(&n2).await;
        let blocked = g["blocked"].as_str().unwrap_or_default().to_string();
        assert!(
            !blocked.contains("records from n1"),
            "snapshot rows named a source that does not exist: {g}"
        );
        if g["epoch"]["generation"].is_u64() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no GC epoch after the migration: {g}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
