//! Snapshot topic GC on real nodes (n2 with `snapshot_retention_hours = 0`
//! and a 2 s pass): a finished migration's snapshot topic stays while it is
//! the namespace's newest usable image (a rebuild needs it); once a later
//! migration of the namespace completed a newer one, the old topic, its
//! empty dead-letter topic and its manifest go, and the newer one stays. A
//! pass that fails (a znode left under the manifest) shows in status and
//! metrics, deletes nothing, and the next one after the cause is gone
//! succeeds.

use std::time::{Duration, Instant};

use northwest_tests::*;

fn topics_with_prefix(prefix: &str) -> std::collections::BTreeSet<String> {
    high_water_marks_at(&kafka_addr(), |t| t.starts_with(prefix))
        .into_keys()
        .map(|(t, _)| t)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_old_snapshot_topic_goes_once_a_newer_one_exists() {
    let p = Pipeline::start_with(
        "snapgc",
        "",
        "snapshot_retention_hours = 0.0\nsnapshot_gc_interval_s = 2\n",
    );
    let (n1, n2) = (p.n1.base.clone(), p.n2.base.clone());
    random_load(&n1, "app", 500, 50, 8).await;
    let first = migrate_report(&migrate_json(&n1, &n2, "app", &[]));
    let t1 = first["snapshot_topic"].as_str().unwrap().to_string();
    let prefix = format!("{}.snapshot.app.", p.topic);
    // Past its retention, yet the namespace's only complete image: kept.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        topics_with_prefix(&prefix).contains(&t1),
        "the newest usable snapshot was deleted"
    );
    // Back to n1, then migrated again: a newer snapshot supersedes t1.
    let o = migrate_json(&n1, &n2, "app", &["--rollback"]);
    assert_eq!(migrate_report(&o)["rolled_back"], "app");
    // A znode someone left under t1's manifest: its removal fails, and so
    // does every pass, visibly, until it is gone.
    let (zk, root) = zk_and_root(&n1).await;
    let blocker = format!(
        "{root}/snapshots/app/{}/left-behind",
        first["id"].as_str().unwrap()
    );
    zk.create(
        &blocker,
        b"",
        &zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all()),
    )
    .await
    .unwrap();
    let second = migrate_report(&migrate_json(&n1, &n2, "app", &[]));
    let t2 = second["snapshot_topic"].as_str().unwrap().to_string();
    assert_ne!(t1, t2);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let gc = get_json(&format!("{n2}/v1/admin/status")).await["snapshot_gc"].clone();
        if gc["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("manifest"))
        {
            assert!(gc["failing_since_ms"].is_i64(), "{gc}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the failing pass never showed: {gc}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let metrics = metrics_text(&n2).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("northwest_snapshot_gc_failing") && l.ends_with(" 1")),
        "no failing gauge"
    );
    assert!(
        topics_with_prefix(&prefix).contains(&t1),
        "t1 went while its pass failed"
    );
    zk.delete(&blocker, None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = topics_with_prefix(&prefix);
        if !now.contains(&t1) && !now.contains(&format!("{t1}.dlq")) {
            assert!(now.contains(&t2), "the newer snapshot went too: {now:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "t1 not deleted: {now:?}\n{}",
            p.n2.log_tail()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Its manifest went with it: a rebuild lists only the newer snapshot.
    let ids = zk
        .list_children(&format!("{root}/snapshots/app"))
        .await
        .unwrap();
    assert_eq!(ids, vec![second["id"].as_str().unwrap().to_string()]);
    // The broker can show the topic gone before n2's delete call returns
    // and logs it: wait for the line rather than race it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = std::fs::read_to_string(&p.n2.log).unwrap();
        if log.contains("deleted a snapshot topic") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no deletion logged by n2:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gc = get_json(&format!("{n2}/v1/admin/status")).await["snapshot_gc"].clone();
    assert!(
        gc["last_error"].is_null() && gc["failing_since_ms"].is_null(),
        "{gc}"
    );
    assert!(gc["deleted"].as_u64().unwrap() >= 1, "{gc}");
}
