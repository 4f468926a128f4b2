//! The node's dashboard in a real browser (headless Chromium) against a
//! running n1 -> n2 pipeline: it renders without console errors, n2's lag
//! chart rises under load and returns to zero, a halted partition shows in
//! red. Screenshots are kept under the target directory's `tmp/artifacts`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use northwest_tests::browser::{self, Page};
use northwest_tests::*;

fn artifact(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("artifacts")
        .join(name)
}

fn assert_clean(page: &Page, what: &str) {
    assert!(
        page.console.is_empty(),
        "{what}: console messages {:?}",
        page.console
    );
    assert_eq!(
        page.text_of("errors").as_deref(),
        Some(""),
        "{what}: page errors"
    );
    assert!(
        page.dom.contains("data-refreshed="),
        "{what}: the page never rendered the node's data"
    );
}

/// Total lag of each history sample of `node` that read it, oldest first,
/// and the newest sample's time.
async fn lag_history(node: &str) -> (Vec<i64>, i64) {
    let h = get_json(&format!("{node}/v1/admin/history")).await;
    let samples = h["samples"].as_array().expect("samples");
    let newest = samples.last().map_or(0, |s| s["t_ms"].as_i64().unwrap());
    let lags = samples
        .iter()
        // A sample without a reading (lag_error) is not a zero.
        .filter(|s| s["lag_error"].is_null() && s["lag"].as_array().is_some_and(|l| !l.is_empty()))
        .map(|s| {
            s["lag"].as_array().map_or(0, |l| {
                l.iter().map(|p| p["lag_records"].as_i64().unwrap()).sum()
            })
        })
        .collect();
    (lags, newest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_shows_lag_rising_and_draining_and_a_halted_partition_in_red() {
    let mut p = Pipeline::start("dash", "");
    random_load(&p.n1.base, "app", 200, 40, 4).await;
    wait_caught_up(&p.n1.base, &p.n2.base, Duration::from_secs(60)).await;

    // Lag that n2's own history records: n2 is stopped (SIGSTOP) while n1
    // takes writes, then resumes and drains. Its sampler may resume after
    // the apply loop has drained a small backlog, so the backlog is large
    // and the round repeated until a sample caught it.
    let mut rose = false;
    for _ in 0..3 {
        p.n2.signal("STOP");
        let stopped = Instant::now();
        random_load(&p.n1.base, "app", 6000, 400, 8).await;
        // Stopped past a sampling tick: the missed tick fires on resume.
        tokio::time::sleep(Duration::from_secs(3).saturating_sub(stopped.elapsed())).await;
        p.n2.signal("CONT");
        let resumed = northwest_store::store::now_ms_pub();
        wait_caught_up(&p.n1.base, &p.n2.base, Duration::from_secs(60)).await;
        // Until a sample taken after the drain is in the history.
        let deadline = Instant::now() + Duration::from_secs(30);
        let lags = loop {
            let (lags, newest) = lag_history(&p.n2.base).await;
            if (lags.last() == Some(&0) && newest > resumed + 2500) || Instant::now() > deadline {
                break lags;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        assert_eq!(lags.last(), Some(&0), "history ends with lag: {lags:?}");
        if lags.iter().any(|l| *l > 0) {
            rose = true;
            break;
        }
    }
    assert!(
        rose,
        "no history sample of n2 ever saw the backlog: {}",
        get_json(&format!("{}/v1/admin/history", p.n2.base)).await["samples"]
    );

    let page = browser::load(
        &format!("{}/", p.n2.base),
        6000,
        Some(&artifact("dashboard-n2-drained.png")),
    );
    assert_clean(&page, "n2");
    assert_eq!(
        page.attr_of("badge", "class").as_deref(),
        Some("badge ok"),
        "n2 caught up"
    );
    assert!(page.dom.contains("data-state=\"caught_up\""));
    let peak: f64 = page
        .attr_of("lag-chart", "data-max")
        .unwrap()
        .parse()
        .unwrap();
    let last: f64 = page
        .attr_of("lag-chart", "data-last")
        .unwrap()
        .parse()
        .unwrap();
    assert!(peak > 0.0, "the lag chart never rose");
    assert_eq!(last, 0.0, "the lag chart did not return to zero");
    assert!(page.attr_of("apply-chart", "data-max").is_some());
    assert!(
        page.attr_of("outbox-chart", "data-max").is_none(),
        "a target shows no outbox chart"
    );

    // n1: the same page, as a source.
    let page = browser::load(
        &format!("{}/", p.n1.base),
        6000,
        Some(&artifact("dashboard-n1.png")),
    );
    assert_clean(&page, "n1");
    assert!(page.dom.contains("(source)"));
    let shipped: f64 = page
        .attr_of("ship-chart", "data-max")
        .unwrap()
        .parse()
        .unwrap();
    assert!(shipped > 0.0, "n1's ship rate chart is flat");
    assert!(page.attr_of("lag-chart", "data-max").is_none());

    // A halted partition: n2 away while retention removes partition 0's
    // backlog, so n2 cannot apply it without a gap.
    p.n2.kill9();
    random_load(&p.n1.base, "app", 400, 40, 4).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while get_json(&format!("{}/v1/admin/status", p.n1.base)).await["outbox_pending"] != 0 {
        assert!(Instant::now() < deadline, "n1 never shipped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    expire_partition_backlog(&p.topic, 0, p.dir.path());
    p.n2.spawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    while get_json(&format!("{}/v1/admin/status", p.n2.base)).await["apply"]["state"] != "halted" {
        assert!(Instant::now() < deadline, "partition 0 never halted");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let page = browser::load(
        &format!("{}/", p.n2.base),
        6000,
        Some(&artifact("dashboard-n2-halted.png")),
    );
    assert_clean(&page, "n2 halted");
    assert_eq!(page.attr_of("badge", "class").as_deref(), Some("badge bad"));
    assert!(page.dom.contains("data-state=\"halted\""));
    let row = page
        .dom
        .split("<tr")
        .find(|r| r.contains("data-partition=\"0\""))
        .expect("partition 0's row");
    assert!(
        row.contains("data-halted=\"1\"") && row.contains("class=\"red\">halted:"),
        "partition 0 not shown halted in red: {row}"
    );
    let problems = page.text_of("problems").unwrap();
    assert!(
        problems.contains("journal partition 0 halted") && problems.contains("expired"),
        "{problems}"
    );
    eprintln!("screenshots: {}", artifact("").display());
}
