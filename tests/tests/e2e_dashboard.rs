//! The node's dashboard in a real browser (headless Chromium) against a
//! running n1 -> n2 pipeline: it renders without console errors, every
//! chart has its axes and unit, the client panels show n1's requests, n2's
//! lag chart rises under load and returns to zero, a halted partition shows
//! in red, the badge changes only on a state that held for two polls, a
//! namespace's timeline shows who was primary when, and migrations
//! finished more than a day ago fold away. A screenshot of the page and of
//! each panel is kept under the target directory's `tmp/artifacts`.

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

/// Every chart on the page has a y axis (three labelled ticks), a time
/// axis (three labels) and its unit; returns the charts' ids.
fn assert_charts_have_axes(page: &Page, what: &str) -> Vec<String> {
    let mut ids = Vec::new();
    // The rendered page, not the script's templates.
    let rendered = &page.dom[..page.dom.find("<script").unwrap_or(page.dom.len())];
    for part in rendered.split("<div class=\"chart\" ").skip(1) {
        let id = part["id=\"".len()..].split('"').next().unwrap().to_string();
        let body = &part[..part.find("</svg>").expect("an svg")];
        assert_eq!(
            body.matches("class=\"ytick\"").count(),
            3,
            "{what} {id}: y ticks"
        );
        assert_eq!(
            body.matches("class=\"xtick\"").count(),
            3,
            "{what} {id}: time axis"
        );
        assert!(
            body.contains("class=\"yunit\""),
            "{what} {id}: no unit on the axis"
        );
        assert!(
            page.attr_of(&id, "data-unit")
                .is_some_and(|u| !u.is_empty()),
            "{what} {id}: no unit"
        );
        ids.push(id);
    }
    assert!(!ids.is_empty(), "{what}: no chart");
    ids
}

fn chart_max(page: &Page, id: &str) -> f64 {
    page.attr_of(id, "data-max")
        .unwrap_or_else(|| panic!("no chart {id}"))
        .parse()
        .unwrap()
}

/// A screenshot of each panel alone (`?panel=ID`).
fn shoot_panels(base: &str, tag: &str, panels: &[String]) {
    for id in panels {
        let size = if id.ends_with("-chart") {
            (440, 260)
        } else {
            (1200, 500)
        };
        browser::screenshot(
            &format!("{base}/?panel={id}"),
            3000,
            &artifact(&format!("dashboard-{tag}-{id}.png")),
            size,
        );
    }
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
    let mut charts = assert_charts_have_axes(&page, "n2");
    assert!(charts.iter().any(|c| c == "client-rate-chart"));
    charts.extend(["header-panel", "parts-panel"].map(String::from));
    shoot_panels(&p.n2.base, "n2", &charts);
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
    assert!(
        chart_max(&page, "ship-chart") > 0.0,
        "n1's ship rate chart is flat"
    );
    assert!(page.attr_of("lag-chart", "data-max").is_none());
    // The clients wrote through n1: its client panels show them.
    let mut charts = assert_charts_have_axes(&page, "n1");
    assert!(
        chart_max(&page, "client-rate-chart") > 0.0,
        "no client requests drawn"
    );
    assert!(
        chart_max(&page, "client-latency-chart") > 0.0,
        "no client latency drawn"
    );
    assert_eq!(
        chart_max(&page, "client-error-chart"),
        0.0,
        "errors drawn where none were"
    );
    charts.extend(["header-panel", "migrations-panel", "timelines-panel"].map(String::from));
    shoot_panels(&p.n1.base, "n1", &charts);

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_shows_who_was_primary_when_folds_old_migrations_and_steadies_its_badge() {
    let p = Pipeline::start("dashmig", "");
    let (n1, n2) = (p.n1.base.clone(), p.n2.base.clone());
    random_load(&n1, "app", 300, 30, 4).await;
    migrate_report(&migrate_json(&n1, &n2, "app", &[]));
    let o = migrate_json(&n1, &n2, "app", &["--rollback"]);
    assert_eq!(migrate_report(&o)["rolled_back"], "app");

    // A namespace migrated two days ago: its record as the orchestrator
    // leaves it, aged (one record per namespace lives in ZooKeeper).
    let (zk, root) = zk_and_root(&n1).await;
    let (data, _) = zk
        .get_data(&format!("{root}/migrations/app"))
        .await
        .unwrap();
    let mut old: serde_json::Value = serde_json::from_slice(&data).unwrap();
    let two_days_ago = northwest_store::store::now_ms_pub() - 2 * 86_400_000;
    old["ns"] = "archive".into();
    old["id"] = format!("m{two_days_ago}").into();
    old["phase"] = "done".into();
    old["rolled_back"] = serde_json::Value::Null;
    old["phase_started_ms"] = two_days_ago.into();
    zk.create(
        &format!("{root}/migrations/archive"),
        &serde_json::to_vec(&old).unwrap(),
        &zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all()),
    )
    .await
    .unwrap();
    // Until n2's housekeeping read it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !get_json(&format!("{n2}/v1/admin/history")).await["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["ns"] == "archive")
    {
        assert!(Instant::now() < deadline, "n2 never read the aged record");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let page = browser::load(
        &format!("{n2}/"),
        4000,
        Some(&artifact("dashboard-n2-migrations.png")),
    );
    assert_clean(&page, "n2 after a rollback");
    // The rolled-back migration is a day old at most: shown in full.
    assert!(
        page.dom.contains("class=\"migration\" data-ns=\"app\""),
        "the recent migration is not shown"
    );
    let folded = page
        .dom
        .split("id=\"finished-old\"")
        .nth(1)
        .expect("no folded list");
    let folded = &folded[..folded.find("</details>").unwrap()];
    assert!(
        folded.contains("1 migration(s) finished more than a day ago"),
        "{folded}"
    );
    assert!(
        folded.contains("class=\"migration-old\" data-ns=\"archive\""),
        "{folded}"
    );
    assert!(
        !folded.contains("data-ns=\"app\""),
        "a recent migration was folded"
    );
    assert!(
        !page.dom.contains("class=\"migration\" data-ns=\"archive\""),
        "the old migration is shown in full"
    );

    // Who was primary when: n1, then n2 from the cutover, then n1 again
    // from the rollback, each with the time it began.
    let rows: Vec<&str> = page
        .dom
        .split("<tr class=\"epoch\" data-ns=\"app\"")
        .skip(1)
        .map(|r| &r[..r.find("</tr>").unwrap()])
        .collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (row, (epoch, primary)) in rows.iter().zip([(0, "n1"), (1, "n2"), (2, "n1")]) {
        assert!(row.contains(&format!("data-epoch=\"{epoch}\"")), "{row}");
        assert!(row.contains(&format!("<td>{primary}</td>")), "{row}");
        let when = row.split("class=\"when\">").nth(1).expect("a when cell");
        assert!(when.starts_with("20") && when.contains(" .. "), "{row}");
    }
    assert!(
        rows[2].contains(" .. now"),
        "the current epoch has no end: {}",
        rows[2]
    );
    shoot_panels(
        &n2,
        "n2",
        &["migrations-panel".into(), "timelines-panel".into()],
    );
    // One panel alone: the rest is hidden, the page's errors are not.
    let page = browser::load(&format!("{n2}/?panel=timelines-panel"), 3000, None);
    assert_clean(&page, "n2 timelines alone");
    assert!(page.attr_of("timelines-panel", "hidden").is_none());
    for other in ["header-panel", "charts", "migrations-panel"] {
        assert!(
            page.attr_of(other, "hidden").is_some(),
            "{other} shown beside the panel"
        );
    }
    assert!(page.attr_of("errors", "hidden").is_none());

    // The badge rule as the page runs it: it changes only after two polls
    // in a row read other than it shows (the first poll's at once), then
    // shows the newest; alternating states never keep the old one up.
    let polls = "caught_up,catching_up,caught_up,catching_up,catching_up,halted,node_unreachable,halted,halted";
    let page = browser::load(&format!("{n2}/?selftest={polls}"), 1000, None);
    assert_eq!(
        page.text_of("selftest").as_deref(),
        Some("caught_up,caught_up,caught_up,caught_up,catching_up,catching_up,node_unreachable,node_unreachable,halted")
    );
}
