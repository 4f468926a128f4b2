//! Reverse replication and rollback: after a migration under load, clients
//! keep writing (through n1's proxy) to n2, which journals those writes to
//! the journal topic, where n1 applies them (its "reverse apply"); `migrate --rollback` then moves the
//! primary back to n1 with no failed request, n1 holds every acknowledged
//! write, and n2 forwards the namespace to n1 again.

use std::sync::atomic::Ordering;
use std::time::Duration;

use northwest_tests::*;

fn migrate(n1: &str, n2: &str, extra: &[&str]) -> std::process::Output {
    migrate_json(n1, n2, "app", extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_migration_is_rolled_back_with_no_lost_write() {
    let p = Pipeline::start("rollback", "");
    let (n1, n2) = (p.n1.base.clone(), p.n2.base.clone());
    random_load(&n1, "app", 1000, 150, 8).await;
    let load = LoadRun::start(&n1, "app", 150, 6);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let o = tokio::task::spawn_blocking({
        let (n1, n2) = (n1.clone(), n2.clone());
        move || migrate(&n1, &n2, &[])
    })
    .await
    .unwrap();
    assert_eq!(migrate_report(&o)["phase"], "done");
    // Writes after the switch exist on n2 first; n1 applies them from the
    // reverse journal.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s2 = get_json(&format!("{n2}/v1/admin/status")).await;
    assert!(
        s2["reverse_relay"]["shipped"].as_u64().unwrap() > 0,
        "n2 journals the writes it takes: {s2}"
    );
    let s1 = get_json(&format!("{n1}/v1/admin/status")).await;
    assert!(
        s1["reverse_apply"]["lag_records"].is_i64(),
        "n1 shows its reverse lag: {s1}"
    );
    let page = tokio::task::spawn_blocking({
        let url = format!("{n1}/");
        move || northwest_tests::browser::load(&url, 3000, None)
    })
    .await
    .unwrap();
    let summary = page.text_of("summary").unwrap_or_default();
    assert!(
        summary.contains("reverse journal: behind the new primary by"),
        "the dashboard shows the reverse lag: {summary}"
    );
    let o = tokio::task::spawn_blocking({
        let (n1, n2) = (n1.clone(), n2.clone());
        move || migrate(&n1, &n2, &["--rollback"])
    })
    .await
    .unwrap();
    let r = migrate_report(&o);
    assert_eq!(r["rolled_back"], "app", "{r}");
    assert!(r["write_pause_ms"].as_f64().unwrap() < 5000.0, "{r}");
    // Clients keep writing to n1, which serves the namespace itself again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let acked = load.stop().await;
    assert_eq!(
        acked.failed.load(Ordering::Relaxed),
        0,
        "failed requests: {:?}",
        acked.errors.lock().unwrap()
    );
    assert_eq!(
        acked.stale_reads.load(Ordering::Relaxed),
        0,
        "a read went back in time"
    );
    let s1 = get_json(&format!("{n1}/v1/admin/status")).await;
    assert!(s1["proxies"]["app"].is_null(), "n1 serves app again: {s1}");
    let s2 = get_json(&format!("{n2}/v1/admin/status")).await;
    assert_eq!(s2["proxies"]["app"], n1.as_str(), "{s2}");
    assert_eq!(s2["promoted"], serde_json::json!([]), "{s2}");
    // n1 holds every acknowledged write, including those n2 took.
    assert_holds_acked(&n1, "app", &acked).await;
    // n2 applies n1's journal again: its own copy catches up with n1.
    wait_caught_up(&n1, &n2, Duration::from_secs(60)).await;
    let d1 = digest(&n1, "app").await;
    let d2 = get_json(&format!("{n2}/v1/ns/app/digest?local=true")).await;
    assert_eq!(d1["digest"], d2["digest"], "n1 {d1} n2 {d2}");
    assert_eq!(d1["count"], d2["count"]);
    // The namespace can be migrated to n2 again.
    let o = tokio::task::spawn_blocking({
        let (n1, n2) = (n1.clone(), n2.clone());
        move || migrate(&n1, &n2, &[])
    })
    .await
    .unwrap();
    let r = migrate_report(&o);
    assert_eq!(r["phase"], "done", "{r}");
    assert_eq!(r["verify"]["differing_kinds"], serde_json::json!([]), "{r}");
}

/// The orchestrator dies between the two halves of the switch (n2 already
/// forwards to n1, n1 still forwards to n2): neither node accepts a write
/// (no two primaries; requests are refused, not bounced forever), and
/// running --rollback again finishes with every acknowledged write on n1.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollback_killed_midway_takes_no_write_twice_and_resumes() {
    let mut p = Pipeline::start("rollback-crash", "");
    let (n1, n2) = (p.n1.base.clone(), p.n2.base.clone());
    random_load(&n1, "app", 300, 50, 4).await;
    let o = migrate(&n1, &n2, &[]);
    assert_eq!(migrate_report(&o)["phase"], "done");
    let c = reqwest::Client::new();
    for i in 0..50 {
        let r = c
            .put(format!("{n1}/v1/ns/app/e/After:{i}"))
            .body(format!("v{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "a write after the switch (on n2)");
    }
    // Both nodes killed: n2's reverse outbox and n1's reverse position
    // survive, and the reverse journal flows again after the restart.
    p.n2.kill9();
    p.n1.kill9();
    p.n2.spawn();
    p.n1.spawn();
    let o = migrate(
        &n1,
        &n2,
        &[
            "--rollback",
            "--crash-points",
            "rollback::between_switches=error",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("rollback::between_switches"), "{err}");
    // Half switched: a write to either node is refused by neither taking it.
    for base in [&n1, &n2] {
        let r = c
            .put(format!("{base}/v1/ns/app/e/Midway:1"))
            .body("x")
            .timeout(Duration::from_secs(40))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 508, "{base}: {}", r.text().await.unwrap());
    }
    let o = migrate(&n1, &n2, &["--rollback"]);
    let r = migrate_report(&o);
    assert_eq!(r["rolled_back"], "app", "{r}");
    for i in 0..50 {
        let r = c
            .get(format!("{n1}/v1/ns/app/e/After:{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), format!("v{i}"));
    }
    let r = c
        .get(format!("{n1}/v1/ns/app/e/Midway:1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "the refused write was taken by no node");
    let s1 = get_json(&format!("{n1}/v1/admin/status")).await;
    assert!(s1["proxies"]["app"].is_null(), "{s1}");
    let r = c
        .put(format!("{n2}/v1/ns/app/e/Later:1"))
        .body("y")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "n2 forwards writes to n1 again");
    wait_caught_up(&n1, &n2, Duration::from_secs(60)).await;
    let d1 = digest(&n1, "app").await;
    let d2 = get_json(&format!("{n2}/v1/ns/app/digest?local=true")).await;
    assert_eq!(d1["digest"], d2["digest"], "n1 {d1} n2 {d2}");
}

/// A journal record n1's reverse apply cannot decode (a write n2 acknowledged) halts
/// n1's reverse apply instead of being skipped, and the rollback stops
/// saying so, with n2 still serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reverse_record_n1_cannot_apply_stops_the_rollback() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let p = Pipeline::start("rollback-poison", "");
    let (n1, n2) = (p.n1.base.clone(), p.n2.base.clone());
    random_load(&n1, "app", 200, 40, 4).await;
    assert_eq!(migrate_report(&migrate(&n1, &n2, &[]))["phase"], "done");
    let prod: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_addr())
        .create()
        .unwrap();
    prod.send(
        FutureRecord::to(&p.topic)
            .key("app/Doc")
            .payload(b"not an avro journal record".as_slice()),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let o = migrate(&n1, &n2, &["--rollback"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("halted"), "{err}");
    let s1 = get_json(&format!("{n1}/v1/admin/status")).await;
    assert_eq!(s1["proxies"]["app"], n2.as_str(), "n2 still serves: {s1}");
    assert!(s1["reverse_apply"]["halted"].is_string(), "{s1}");
}
