//! A cutover whose promotion reaches the new primary but whose answer is
//! lost (and whose demotion never arrives) leaves one primary, not two:
//! after a migration and a rollback, the next migration's promote reaches n2
//! through a fault proxy that drops its reply and every DELETE of it. n1 and
//! n2 must then not both serve the namespace (also once n1's fence would have
//! lifted itself), writes sent to either node end on one primary in the
//! order they were acknowledged, and running the migration again finishes
//! the cutover.

use std::time::Duration;

use northwest_tests::fault_proxy::FaultProxy;
use northwest_tests::*;
use serde_json::Value;

fn migrate(n1: &str, n2: &str, extra: &[&str]) -> std::process::Output {
    migrate_json(n1, n2, "app", extra)
}

async fn migrate_async(n1: &str, n2: &str, extra: &[&str]) -> std::process::Output {
    let (n1, n2) = (n1.to_string(), n2.to_string());
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        migrate(&n1, &n2, &extra)
    })
    .await
    .unwrap()
}

/// Whether each node takes client writes of `app` itself: n1 unless it
/// forwards; n2 when promoted and not forwarding.
async fn primaries(n1: &str, n2: &str) -> (bool, bool, Value, Value) {
    let s1 = get_json(&format!("{n1}/v1/admin/status")).await;
    let s2 = get_json(&format!("{n2}/v1/admin/status")).await;
    let n1_serves = s1["proxies"]["app"].is_null();
    let has = |v: &Value| v.as_array().is_some_and(|a| a.iter().any(|n| n == "app"));
    // An unconfirmed promotion serves only what n1 forwards.
    let n2_serves = s2["proxies"]["app"].is_null()
        && has(&s2["promoted"])
        && !has(&s2["promotion_unconfirmed"]);
    (n1_serves, n2_serves, s1, s2)
}

async fn put(c: &reqwest::Client, base: &str, key: &str, v: &str) -> u16 {
    c.put(format!("{base}/v1/ns/app/e/{key}"))
        .body(v.to_string())
        .timeout(Duration::from_secs(40))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn get(c: &reqwest::Client, base: &str, key: &str) -> (u16, String) {
    let r = c
        .get(format!("{base}/v1/ns/app/e/{key}"))
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_promote_reply_never_leaves_two_primaries() {
    let p = Pipeline::start("recutover", "");
    let (n1, n2) = (p.n1.base.clone(), p.n2.base.clone());
    random_load(&n1, "app", 300, 50, 4).await;
    assert_eq!(
        migrate_report(&migrate_async(&n1, &n2, &[]).await)["phase"],
        "done"
    );
    let r = migrate_report(&migrate_async(&n1, &n2, &["--rollback"]).await);
    assert_eq!(r["rolled_back"], "app", "{r}");
    let (n1_serves, n2_serves, s1, s2) = primaries(&n1, &n2).await;
    assert!(
        n1_serves && !n2_serves,
        "after the rollback n1 serves: {s1} {s2}"
    );

    // The next cutover reaches n2 only through the fault proxy.
    let proxy = FaultProxy::start(n2.trim_start_matches("http://")).await;
    let via = format!("http://{}", proxy.addr);
    proxy.lose_promotions(true);
    let o = migrate_async(&n1, &via, &[]).await;
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        !o.status.success(),
        "the cutover cannot have been confirmed: {err}"
    );
    proxy.lose_promotions(false);
    proxy.cut();

    // Never two primaries: now, and after n1's fence (10 s) would have
    // lifted itself.
    for wait in [0, 12] {
        tokio::time::sleep(Duration::from_secs(wait)).await;
        let (n1_serves, n2_serves, s1, s2) = primaries(&n1, &n2).await;
        assert!(
            !(n1_serves && n2_serves),
            "both nodes take writes for app {wait} s after the failed cutover:\nn1 {s1}\nn2 {s2}\n{err}"
        );
    }

    // Writes through either node land on the one primary, in order: the
    // last acknowledged value of each key is what both nodes return.
    let c = reqwest::Client::new();
    let mut last = std::collections::BTreeMap::new();
    for round in 0..3 {
        for (i, base) in [&n1, &n2, &n1].into_iter().enumerate() {
            let key = format!("Race:{round}");
            let v = format!("r{round}-w{i}");
            if put(&c, base, &key, &v).await == 200 {
                last.insert(key, v);
            }
        }
    }
    assert!(!last.is_empty(), "no write was acknowledged by either node");
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (key, v) in &last {
        for base in [&n1, &n2] {
            let (status, body) = get(&c, base, key).await;
            assert_eq!(
                (status, body.as_str()),
                (200, v.as_str()),
                "{key} on {base}: the last acknowledged write was {v}"
            );
        }
    }

    // Running the migration again finishes the cutover.
    let r = migrate_report(&migrate_async(&n1, &via, &[]).await);
    assert_eq!(r["phase"], "done", "{r}");
    let (n1_serves, n2_serves, s1, s2) = primaries(&n1, &n2).await;
    assert!(!n1_serves && n2_serves, "n2 is the one primary: {s1} {s2}");
    for (key, v) in &last {
        let (status, body) = get(&c, &n2, key).await;
        assert_eq!((status, body.as_str()), (200, v.as_str()), "{key} on n2");
    }
}
