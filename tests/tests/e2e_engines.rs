//! Migrations between engines, end to end on the dev stack: RocksDB to
//! PostgreSQL and PostgreSQL to RocksDB under load with no failed request and
//! every acknowledged write on the target; after a rollback, a PostgreSQL
//! node rebuilt from the topics alone equals the source.

use std::sync::atomic::Ordering;
use std::time::Duration;

use northwest_tests::*;

async fn blocking_migrate(n1: &str, n2: &str, extra: &[&str]) -> std::process::Output {
    let (n1, n2) = (n1.to_string(), n2.to_string());
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        migrate_json(&n1, &n2, "app", &extra)
    })
    .await
    .unwrap()
}

async fn engine_of(base: &str) -> String {
    let v = get_json(&format!("{base}/v1/admin/status")).await;
    v["engine"].as_str().unwrap_or_default().to_string()
}

/// Preloads n1, migrates under load, and checks the outcome: a done
/// migration with equal digests, no failed request, every acknowledged
/// write on n2 (which now serves the namespace).
async fn migrate_under_load(p: &Pipeline) -> std::sync::Arc<Acked> {
    let (n1, n2) = (p.n1.base.clone(), p.n2.base.clone());
    random_load(&n1, "app", 1500, 150, 8).await;
    let load = LoadRun::start(&n1, "app", 150, 6);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let o = blocking_migrate(&n1, &n2, &[]).await;
    let r = migrate_report(&o);
    assert_eq!(r["phase"], "done", "{r}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acked = load.stop().await;
    assert_eq!(
        acked.failed.load(Ordering::Relaxed),
        0,
        "{:?}",
        acked.errors.lock().unwrap()
    );
    let n = acked.keys.lock().unwrap().len();
    assert!(n > 50, "the load ran: {n} keys acknowledged");
    assert_holds_acked(&n2, "app", &acked).await;
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rocksdb_to_postgres_under_load_then_rollback_and_a_postgres_rebuild() {
    let p = Pipeline::start("eng-r2p", &pg_store_toml(&pg_schema("n2")));
    assert_eq!(engine_of(&p.n1.base).await, "rocksdb");
    assert_eq!(engine_of(&p.n2.base).await, "postgres");
    let acked = migrate_under_load(&p).await;

    // Back to n1, then a fresh PostgreSQL n3 from the topics alone.
    let o = blocking_migrate(&p.n1.base, &p.n2.base, &["--rollback"]).await;
    assert_eq!(migrate_report(&o)["rolled_back"], "app");
    let root = get_json(&format!("{}/v1/admin/status", p.n2.base)).await["zk_root"]
        .as_str()
        .unwrap()
        .to_string();
    let extra = pg_store_toml(&pg_schema("n3"));
    let n3 = NodeProc::start(
        p.dir.path(),
        "n3",
        &node_toml("n3", p.dir.path(), free_port(), &root, &p.topic, &extra),
    );
    assert_eq!(engine_of(&n3.base).await, "postgres");
    let o = tokio::task::spawn_blocking({
        let n3 = n3.base.clone();
        move || run_migrate(&["--from-topics", "--to", &n3, "--json", "--namespace", "app"])
    })
    .await
    .unwrap();
    let r = migrate_report(&o);
    assert_eq!(r["compare"]["equal"], true, "the rebuild equals n1: {r}");
    assert_holds_acked(&n3.base, "app", &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_to_rocksdb_under_load() {
    let p = Pipeline::start_with("eng-p2r", &pg_store_toml(&pg_schema("n1")), "");
    assert_eq!(engine_of(&p.n1.base).await, "postgres");
    assert_eq!(engine_of(&p.n2.base).await, "rocksdb");
    migrate_under_load(&p).await;
}
