//! A snapshot's progress is visible while it streams, not only at its end:
//! rows streamed of the planned total, bytes and rate on n1's status and
//! `/metrics` (both nodes read the migration record); and when the
//! orchestrator dies mid-snapshot, the stall gauge grows (the alert's
//! input), and the same command resumes to done.

use std::process::Stdio;
use std::time::{Duration, Instant};

use northwest_tests::*;

/// The value of `name{namespace="app"}` in `base`'s metrics.
async fn gauge(base: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains("namespace=\"app\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_progress_shows_while_it_streams_and_a_dead_orchestrator_shows_as_stalled() {
    let s = Pipeline::start("snapprog", "");
    let (n1, n2) = (s.n1.base.clone(), s.n2.base.clone());
    random_load(&n1, "app", 3000, 300, 16).await;
    // Slow on purpose: 3000 rows at 150 rows/s take ~20 s.
    let mut orchestrator = migrate_cmd(&n1, &n2, "app")
        .args(["--rate", "150", "--chunk", "50"])
        .current_dir(s.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut streamed_seen = Vec::new();
    // The gauges are refreshed by each node's housekeeping tick, so they
    // trail the status (read at the call): they must show progress at some
    // point while the snapshot streams, not at the very instant it does.
    let mut gauges_seen = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "no progress shown: status {streamed_seen:?}, gauges {gauges_seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let st = get_json(&format!("{n1}/v1/admin/status")).await;
        let Some(m) = st["migrations"].as_array().and_then(|m| m.first()).cloned() else {
            continue;
        };
        let Some(p) = m.get("snapshot").filter(|p| p.is_object()) else {
            continue;
        };
        assert_ne!(
            m["phase"], "done",
            "the snapshot ended before its progress showed"
        );
        if m["phase"] != "snapshot" {
            continue;
        }
        let streamed = p["rows_streamed"].as_u64().unwrap();
        let total = p["rows_total"].as_u64().unwrap();
        // The first save may come before the plan counted the rows.
        if streamed > 0 && streamed < total {
            assert!(total >= 2000, "the plan's total: {p}");
            assert!(p["rows_per_sec"].as_f64().unwrap() > 0.0, "{p}");
            streamed_seen.push(streamed);
            let m_rows = gauge(&n1, "northwest_migration_snapshot_rows").await;
            let m_total = gauge(&n2, "northwest_migration_snapshot_rows_total").await;
            let m_bytes = gauge(&n1, "northwest_migration_snapshot_bytes").await;
            let shown = (m_rows, m_total, m_bytes);
            if m_rows.is_some_and(|v| v > 0.0 && v <= total as f64)
                && m_total.is_some_and(|v| v >= 2000.0)
                && m_bytes.is_some_and(|v| v > 0.0)
            {
                gauges_seen = Some(shown);
            } else if gauges_seen.is_none() {
                eprintln!("gauges not yet refreshed: {shown:?}");
            }
        }
        if gauges_seen.is_some()
            && streamed_seen.len() >= 2
            && streamed_seen.last() > streamed_seen.first()
        {
            break;
        }
    }
    // The orchestrator dies mid-snapshot: nothing moves any more, and the
    // stall gauge says for how long.
    orchestrator.kill().unwrap();
    orchestrator.wait().unwrap();
    tokio::time::sleep(Duration::from_secs(12)).await;
    let stalled = gauge(&n1, "northwest_migration_progress_stalled_seconds").await;
    assert!(
        stalled.is_some_and(|v| v >= 5.0),
        "stall gauge: {stalled:?}"
    );
    // The same command resumes; the finished migration's gauge is gone.
    let o = migrate_json(&n1, &n2, "app", &[]);
    assert_eq!(migrate_report(&o)["phase"], "done");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        gauge(&n1, "northwest_migration_progress_stalled_seconds").await,
        None,
        "a finished migration is not stalled"
    );
    let st = get_json(&format!("{n1}/v1/admin/status")).await;
    assert!(st.get("migrations").is_none(), "{st}");
}
