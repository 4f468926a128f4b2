//! Verification without holding writes for the digests: a digest job reads
//! a snapshot taken before it answers (writes after that never reach it),
//! and a migration's verify and a rollback's compare hold the namespace's
//! writes only for the drain and the two snapshots, with the digests slowed
//! down on both nodes (`digest::job=delay:MS`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use northwest_tests::*;

/// The digests take at least this long on each node.
const DIGEST_DELAY_MS: u64 = 2500;

async fn job(base: &str, id: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let j = get_json(&format!("{base}/v1/admin/digest-jobs/{id}")).await;
        if j["state"] != "running" {
            return j;
        }
        assert!(std::time::Instant::now() < deadline, "{j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_digest_job_reads_the_store_as_it_was_when_it_answered() {
    let Pipeline { dir: _dir, n1, .. } = Pipeline::start("verify-job", "");
    let mut n1 = n1;
    n1.stop();
    let mut n1 = n1.with_env(
        "NORTHWEST_CRASH_POINTS",
        &format!("digest::job=delay:{DIGEST_DELAY_MS}"),
    );
    n1.spawn();
    let c = reqwest::Client::new();
    for i in 0..20 {
        let r = c
            .put(format!("{}/v1/ns/app/e/Before:{i}", n1.base))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let before = digest(&n1.base, "app").await;
    let started: serde_json::Value = c
        .post(format!("{}/v1/admin/digest-jobs", n1.base))
        .json(&serde_json::json!({"namespace": "app"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(started["state"], "running", "{started}");
    // Writes after the answer, while the job waits before reading.
    for (m, k) in [("PUT", "After:1"), ("DELETE", "Before:3")] {
        let url = format!("{}/v1/ns/app/e/{k}", n1.base);
        let r = match m {
            "PUT" => c.put(&url).body("y").send().await.unwrap(),
            _ => c.delete(&url).send().await.unwrap(),
        };
        assert_eq!(r.status(), 200, "{m} {k}");
    }
    let now = digest(&n1.base, "app").await;
    assert_ne!(
        now["digest"], before["digest"],
        "the writes changed the copy"
    );
    let done = job(&n1.base, started["job"].as_str().unwrap()).await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["result"]["digest"], before["digest"], "{done}");
    assert_eq!(done["result"]["count"], 20, "{done}");
    assert!(
        done["elapsed_ms"].as_u64().unwrap() >= DIGEST_DELAY_MS,
        "{done}"
    );
    let missing = c
        .get(format!("{}/v1/admin/digest-jobs/nope", n1.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_and_the_rollback_compare_hold_writes_only_for_the_snapshots() {
    let Pipeline {
        dir: _dir, n1, n2, ..
    } = Pipeline::start("verify-pause", "");
    random_load(&n1.base, "app", 500, 60, 8).await;
    let delayed = format!("digest::job=delay:{DIGEST_DELAY_MS}");
    let (mut n1, mut n2) = (n1, n2);
    n1.stop();
    n2.stop();
    let mut n1 = n1.with_env("NORTHWEST_CRASH_POINTS", &delayed);
    let mut n2 = n2.with_env("NORTHWEST_CRASH_POINTS", &delayed);
    n1.spawn();
    n2.spawn();
    let load = LoadRun::start(&n1.base, "app", 100, 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = tokio::task::spawn_blocking({
        let (a, b) = (n1.base.clone(), n2.base.clone());
        move || migrate_report(&migrate_json(&a, &b, "app", &[]))
    })
    .await
    .unwrap();
    assert_eq!(r["phase"], "done", "{r}");
    assert_eq!(r["verify"]["n1"], r["verify"]["n2"], "{r}");
    let (pause, digests) = (
        r["verify_pause_ms"].as_f64().unwrap(),
        r["verify_digest_ms"].as_f64().unwrap(),
    );
    // Each digest waited DIGEST_DELAY_MS before reading: the writes were
    // held for neither.
    assert!(digests >= DIGEST_DELAY_MS as f64, "{r}");
    assert!(
        pause < DIGEST_DELAY_MS as f64,
        "verify held writes {pause} ms: {r}"
    );
    let r = tokio::task::spawn_blocking({
        let (a, b) = (n1.base.clone(), n2.base.clone());
        move || migrate_report(&migrate_json(&a, &b, "app", &["--rollback"]))
    })
    .await
    .unwrap();
    assert_eq!(r["rolled_back"], "app", "{r}");
    let pause = r["verify"]["pause_ms"].as_f64();
    assert!(
        pause.is_some_and(|p| p < DIGEST_DELAY_MS as f64),
        "the rollback's compare held writes {pause:?} ms: {r}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let acked = load.stop().await;
    assert_eq!(
        acked.failed.load(Ordering::Relaxed),
        0,
        "{:?}",
        acked.errors.lock().unwrap()
    );
    assert_holds_acked(&n1.base, "app", &acked).await;
}
