//! Re-migration from the topics alone: with n1 stopped, `migrate
//! --from-topics` builds the namespace on a fresh n3 from the snapshot topic
//! plus the journal, n3 equals n2 at one journal position and holds every
//! acknowledged write; a node that began applying the journal after the
//! snapshot's offsets is refused.

use std::sync::atomic::Ordering;
use std::time::Duration;

use northwest_tests::*;

fn migrate(args: &[&str]) -> std::process::Output {
    run_migrate(&[args, &["--namespace", "app"]].concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fresh_node_is_rebuilt_from_the_topics_with_n1_stopped() {
    let mut p = Pipeline::start("rebuild", "");
    random_load(&p.n1.base, "app", 600, 80, 8).await;
    // Writes (puts, deletes, transactions) go on while the snapshot streams:
    // the journal after the snapshot's offsets carries them.
    let load = LoadRun::start(&p.n1.base, "app", 200, 6);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A snapshot that stops midway gets no manifest: nothing to rebuild from.
    let root = get_json(&format!("{}/v1/admin/status", p.n2.base)).await["zk_root"]
        .as_str()
        .unwrap()
        .to_string();
    let mut n5 = NodeProc::start(
        p.dir.path(),
        "n5",
        &node_toml("n5", p.dir.path(), free_port(), &root, &p.topic, ""),
    );
    let o = tokio::task::spawn_blocking({
        let (n1, n2) = (p.n1.base.clone(), p.n2.base.clone());
        move || {
            migrate(&[
                "--crash-points",
                "snapshotter::after_chunk=error",
                "--from",
                &n1,
                "--to",
                &n2,
                "--chunk",
                "100",
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = migrate(&["--from-topics", "--to", &n5.base]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "refused: {err}");
    assert!(err.contains("no complete snapshot"), "{err}");
    n5.stop();
    let o = tokio::task::spawn_blocking({
        let (n1, n2) = (p.n1.base.clone(), p.n2.base.clone());
        move || {
            migrate(&[
                "--from",
                &n1,
                "--to",
                &n2,
                "--chunk",
                "100",
                "--rate",
                "1500",
                "--stop-after",
                "catch-up",
            ])
        }
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acked = load.stop().await;
    assert_eq!(
        acked.failed.load(Ordering::Relaxed),
        0,
        "{:?}",
        acked.errors.lock().unwrap()
    );
    let st = northwest_migrate::load_state(
        &zk_addr(),
        None,
        &northwest_tests::admin_client(),
        &p.n1.base,
        "app",
    )
    .await
    .unwrap();
    // n1 stops (cleanly: everything it acknowledged is in the journal) and
    // the journal loses every record before the snapshot's offsets, so n3
    // can get the older history from the snapshot topic only.
    p.n1.stop();
    delete_records_below(&p.topic, &st.hwms, p.dir.path());

    let n3 = NodeProc::start(
        p.dir.path(),
        "n3",
        &node_toml("n3", p.dir.path(), free_port(), &root, &p.topic, ""),
    );
    let o = tokio::task::spawn_blocking({
        let (n3, n2) = (n3.base.clone(), p.n2.base.clone());
        move || migrate(&["--from-topics", "--to", &n3, "--compare", &n2, "--json"])
    })
    .await
    .unwrap();
    let r = migrate_report(&o);
    assert_eq!(r["snapshot"]["id"], st.id.as_str(), "{r}");
    assert_eq!(r["compare"]["equal"], true, "{r}");
    assert!(r["compare"]["n3"]["count"].as_u64().unwrap() > 100, "{r}");
    assert!(
        r["loaded_rows"].as_u64().unwrap() >= st.snapshot_rows,
        "n3 loaded the whole snapshot: {r}"
    );
    // n3 began exactly where the image continues (the journal's new start).
    let from: std::collections::BTreeMap<i32, i64> =
        serde_json::from_value(r["n3_journal_from"].clone()).unwrap();
    assert_eq!(from, st.hwms, "{r}");
    assert_holds_acked(&n3.base, "app", &acked).await;

    // The journal after the snapshot's offsets expires too: a node started
    // now begins after them, and is refused before anything is loaded.
    let ends = records_per_partition(&p.topic);
    delete_records_below(&p.topic, &ends, p.dir.path());
    let n4 = NodeProc::start(
        p.dir.path(),
        "n4",
        &node_toml("n4", p.dir.path(), free_port(), &root, &p.topic, ""),
    );
    let o = migrate(&["--from-topics", "--to", &n4.base]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "refused: {err}");
    assert!(
        err.contains("is too old") && err.contains("take a fresh snapshot"),
        "{err}"
    );
    let s4 = get_json(&format!("{}/v1/admin/status", n4.base)).await;
    assert!(s4["loader"].is_null(), "n4 loaded nothing: {s4}");
}
