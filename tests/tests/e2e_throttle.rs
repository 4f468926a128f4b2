//! The snapshot's closed-loop throttle on a real n1 -> n2 migration: with
//! n1's data API slowed past the budget (a delay point on every data
//! request), `--max-source-p99-ms` slows the snapshot below its `--rate`,
//! says so in the report, and the migration still loses nothing.

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use northwest_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_slows_down_while_n1_is_over_its_latency_budget() {
    let Pipeline { dir, n1, n2, .. } = Pipeline::start("throttle", "");
    random_load(&n1.base, "app", 3000, 600, 16).await;
    let mut n1 = n1;
    n1.stop();
    let mut n1 = n1.with_env("NORTHWEST_CRASH_POINTS", "http::data_request=delay:30");
    n1.spawn();
    let load = LoadRun::start(&n1.base, "app", 300, 4);
    // n1's latency window fills before the snapshot starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let o = tokio::task::spawn_blocking({
        let (n1, n2, d) = (n1.base.clone(), n2.base.clone(), dir.path().to_path_buf());
        move || {
            Command::new(bin_path("northwest"))
                .args(["migrate", "--from", &n1, "--to", &n2, "--namespace", "app"])
                .args([
                    "--quiet",
                    "--json",
                    "--zk",
                    &zk_addr(),
                    "--brokers",
                    &kafka_addr(),
                ])
                .args([
                    "--rate",
                    "300",
                    "--chunk",
                    "50",
                    "--max-source-p99-ms",
                    "10",
                ])
                .current_dir(d)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acked = load.stop().await;
    let r = migrate_report(&o);
    assert_eq!(r["phase"], "done", "{r}");
    let t = &r["throttle"];
    assert!(t["checks"].as_u64().unwrap() >= 2, "{r}");
    assert!(t["slowed"].as_u64().unwrap() >= 1, "never slowed: {r}");
    assert!(t["min_rows_per_sec"].as_u64().unwrap() < 300, "{r}");
    assert!(t["max_source_p99_ms"].as_u64().unwrap() >= 30, "{r}");
    // The snapshot really went slower than --rate (the limiter follows the
    // live rate), not just the report.
    let secs = r["phase_seconds"]["Snapshot"].as_f64().unwrap();
    let per_sec = r["snapshot_rows"].as_f64().unwrap() / secs;
    assert!(per_sec < 250.0, "{per_sec:.0} rows/s: {r}");
    // n2's loader was held to the throttle's rate too: unthrottled, it
    // loads these rows in well under a second.
    let load_s = r["phase_seconds"]["CatchUp"].as_f64().unwrap();
    let loaded_per_sec = r["snapshot_rows"].as_f64().unwrap() / load_s;
    assert!(
        loaded_per_sec < 250.0,
        "the loader ran unthrottled: {loaded_per_sec:.0} rows/s: {r}"
    );
    // The limit is lifted once the load caught up.
    let s = get_json(&format!("{}/v1/admin/status", n2.base)).await;
    if !s["loader"].is_null() {
        assert_eq!(s["loader"]["rate_limit"], 0, "{s}");
    }
    assert_eq!(
        acked.failed.load(Ordering::Relaxed),
        0,
        "{:?}",
        acked.errors
    );
    assert_holds_acked(&n2.base, "app", &acked).await;
}

/// With n2 applying the journal slowly (a delay before every batch) while n1
/// takes writes, `--max-apply-lag` slows the snapshot below `--rate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_slows_down_while_n2_lags_on_the_journal() {
    let Pipeline { dir, n1, n2, .. } = Pipeline::start("lagthrottle", "");
    random_load(&n1.base, "app", 3000, 600, 16).await;
    wait_caught_up(&n1.base, &n2.base, Duration::from_secs(60)).await;
    let mut n2 = n2;
    n2.stop();
    let mut n2 = n2.with_env(
        "NORTHWEST_CRASH_POINTS",
        "consumer::before_batch_write=delay:400",
    );
    n2.spawn();
    let load = LoadRun::start(&n1.base, "app", 300, 4);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let o = tokio::task::spawn_blocking({
        let (n1, n2, d) = (n1.base.clone(), n2.base.clone(), dir.path().to_path_buf());
        move || {
            Command::new(bin_path("northwest"))
                .args(["migrate", "--from", &n1, "--to", &n2, "--namespace", "app"])
                .args(["--quiet", "--zk", &zk_addr(), "--brokers", &kafka_addr()])
                .args(["--rate", "300", "--chunk", "50", "--max-apply-lag", "5"])
                .args(["--stop-after", "snapshot"])
                .current_dir(d)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let acked = load.stop().await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        acked.failed.load(Ordering::Relaxed),
        0,
        "failed requests while the throttle held n2's lag: {:?}",
        acked.errors.lock().unwrap()
    );
    let st = northwest_migrate::load_state(
        &zk_addr(),
        None,
        &northwest_tests::admin_client(),
        &n1.base,
        "app",
    )
    .await
    .unwrap();
    let t = st.throttle.clone().expect("the throttle ran");
    assert!(t.slowed >= 1, "never slowed: {t:?}");
    assert!(t.min_rows_per_sec.unwrap() < 300, "{t:?}");
    assert!(t.max_apply_lag_records > 5, "{t:?}");
    let secs = st.phase_seconds["Snapshot"];
    let per_sec = st.snapshot_rows as f64 / secs;
    assert!(per_sec < 250.0, "{per_sec:.0} rows/s: {t:?}");
}
