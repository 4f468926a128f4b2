//! PostgreSQL killed with -9 and started again under load, on a source
//! node whose tables it holds: while it is down, writes and reads are
//! refused with a retriable 503 and nothing else; once it is back the node
//! serves again without a restart, every acknowledged write is there, and the
//! journal carries them all to n2.
//!
//! The server is the dev stack's: this binary has one test, so no other test
//! shares the outage (test binaries run one after another).

use std::sync::atomic::Ordering;
use std::time::Duration;

use northwest_tests::*;

/// Starts the stack's PostgreSQL again when the test ends, pass or fail.
struct RestartOnDrop;

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new(stack_script())
            .arg("start-pg")
            .status();
    }
}

fn stack(cmd: &str) {
    let o = std::process::Command::new(stack_script())
        .arg(cmd)
        .output()
        .expect("deploy/stack.sh");
    assert!(
        o.status.success(),
        "stack.sh {cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_crash_under_load_costs_retriable_503s_and_no_acknowledged_write() {
    let extra = format!("{}timeout_ms = 3000\n", pg_store_toml(&pg_schema("n1")));
    let p = Pipeline::start_with("pg-restart", &extra, "");
    let (n1, n2) = (p.n1.base.clone(), p.n2.base.clone());
    random_load(&n1, "app", 300, 40, 4).await;
    let load = LoadRun::start(&n1, "app", 60, 6);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _restart = RestartOnDrop;
    tokio::task::spawn_blocking(|| stack("kill-pg"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = load.acked.failed.load(Ordering::Relaxed);
    tokio::task::spawn_blocking(|| stack("start-pg"))
        .await
        .unwrap();
    // Serving again without a restart of the node.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = reqwest::Client::new()
            .put(format!("{n1}/v1/ns/app/e/After:1"))
            .body("back")
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "n1 still answers {} 30 s after PostgreSQL came back: {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let acked = load.stop().await;
    let (failed, unavailable) = (
        acked.failed.load(Ordering::Relaxed),
        acked.unavailable.load(Ordering::Relaxed),
    );
    assert!(during > 0, "requests failed while PostgreSQL was down");
    assert_eq!(
        failed,
        unavailable,
        "every failure was a 503 engine_unavailable (nothing written): {:?}",
        acked.errors.lock().unwrap()
    );
    assert_holds_acked(&n1, "app", &acked).await;
    wait_caught_up(&n1, &n2, Duration::from_secs(60)).await;
    let (d1, d2) = (
        digest(&n1, "app").await,
        get_json(&format!("{n2}/v1/ns/app/digest?local=true")).await,
    );
    assert_eq!(d1["digest"], d2["digest"], "n2 equals n1: {d1} {d2}");
    assert_holds_acked(&n2, "app", &acked).await;
}
