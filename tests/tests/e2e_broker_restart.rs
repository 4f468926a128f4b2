//! The broker goes down while n1 writes and n2 applies, longer than n1's
//! `message.timeout.ms`, so deliveries really fail and the relay re-sends:
//! nothing is lost, nothing is reordered within an entity group, and the
//! outage shows in n1's status while it lasts. Own test binary: it stops the
//! shared dev-stack broker, so no other test may run beside it.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use northwest_tests::*;

fn stack() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/stack.sh")
}

fn stack_cmd(args: &[&str]) {
    let ok = Command::new(stack()).args(args).status().unwrap().success();
    assert!(ok, "deploy/stack.sh {args:?} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_restart_loses_and_reorders_nothing() {
    // Deliveries time out after 3 s: a 10 s outage fails them for real.
    let p = Pipeline::start_with("brk", "\n[kafka]\n\"message.timeout.ms\" = \"3000\"", "");
    let (n1, n2, topic) = (&p.n1, &p.n2, p.topic.clone());
    // An idle source beside it: no write would ever make its relay notice
    // the outage, so readiness must probe the broker itself.
    let idle = NodeProc::start(
        p.dir.path(),
        "idle",
        &node_toml(
            "n1",
            &p.dir.path().join("idle"),
            free_port(),
            &format!("/northwest-test/{}", unique("idle")),
            &unique("idle-journal"),
            "",
        ),
    );
    let ready = |base: String| async move {
        reqwest::get(format!("{base}/readyz"))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    // Ready once its relay created the journal topic.
    let up = std::time::Instant::now() + Duration::from_secs(60);
    while ready(idle.base.clone()).await != 200 {
        assert!(
            std::time::Instant::now() < up,
            "idle source never ready before the outage"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut idle_unready = false;
    let load = {
        let base = n1.base.clone();
        tokio::spawn(async move { random_load(&base, "app", 8000, 100, 8).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Hard stop of the broker mid-stream, then a restart with its data.
    stack_cmd(&["kill-broker", "1"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut seen_error = serde_json::Value::Null;
    let client = reqwest::Client::new();
    let mut n = 0;
    while std::time::Instant::now() < deadline {
        // Commits keep coming during the outage: their deliveries time out.
        n += 1;
        let r = client
            .put(format!("{}/v1/ns/app/e/Outage:{n}", n1.base))
            .body(format!("{n}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "n1 takes writes while the broker is down");
        let s1 = get_json(&format!("{}/v1/admin/status", n1.base)).await;
        if !s1["relay"]["last_error"].is_null() {
            seen_error = s1["relay"]["last_error"].clone();
        }
        idle_unready |= ready(idle.base.clone()).await == 503;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stack_cmd(&["start-broker", "1"]);
    assert!(
        seen_error.is_string(),
        "n1's status showed no relay error during a 10 s broker outage"
    );
    assert!(
        idle_unready,
        "an idle source's /readyz stayed 200 during a 10 s broker outage"
    );
    let back = std::time::Instant::now() + Duration::from_secs(60);
    while ready(idle.base.clone()).await != 200 {
        assert!(
            std::time::Instant::now() < back,
            "idle source not ready after the broker returned"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    load.await.unwrap();
    wait_caught_up(&n1.base, &n2.base, Duration::from_secs(240)).await;
    assert_eq!(
        digest(&n1.base, "app").await,
        digest(&n2.base, "app").await,
        "n2 differs after a broker restart"
    );

    // Per group, the journal holds transactions in commit order.
    let seen = assert_group_order(&journal_records(&topic));
    assert!(seen >= 8000, "journal holds {seen} transactions");
}
