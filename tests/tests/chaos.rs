//! A few seeds of the fault campaign (`northwest-chaos`): a migration under
//! load, then a rollback, a chained hop or a round trip back to n1, while n1, n2, the orchestrator,
//! the broker and ZooKeeper are killed and restarted on a seeded schedule;
//! the history checker then holds the final primary and every other node to
//! every acknowledged write, and so a fresh node rebuilt from the topics.
//! Two of the seeds keep n2 and the rebuilt node on PostgreSQL; two run the
//! migrations throttled (the stream and n2's loader).
//! The 100-run soak is recorded in docs/verification.md.

use northwest_tests::chaos::{run, ChaosArgs};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seeded_fault_campaign_loses_nothing() {
    let reports = run(ChaosArgs {
        // One run of each scenario: migrate, roll back, chained hop, round
        // trip back to the source.
        seed: Some(7004),
        runs: 4,
        faults: 4,
        window_s: 20,
        entities: 1000,
        snapshot_rate: 100,
        clients: 4,
        finish_timeout_s: 240,
        zk_port: 22181,
        kafka_port: 29092,
        pg_port: 25433,
        json: None,
        keep: None,
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // The checker saw real client traffic beyond the preload, and faults
    // landed while the migration ran.
    for r in &reports {
        assert!(
            r.rebuild,
            "every CI seed ends with a rebuild from the topics: {r:?}"
        );
        assert_eq!(
            r.postgres,
            r.seed < 7006,
            "n2 on PostgreSQL in the migrate and rollback seeds, RocksDB in the others: {r:?}"
        );
        assert_eq!(
            r.throttled,
            r.seed % 2 == 0,
            "the migrate and chained-hop seeds run throttled: {r:?}"
        );
        assert!(r.check.acked_writes > 1000 + 500, "{r:?}");
        assert!(r.check.reads_checked > 100, "{r:?}");
    }
    assert!(
        reports
            .iter()
            .flat_map(|r| &r.faults)
            .any(|(_, what)| what == "injected"),
        "no fault landed during a migration: {reports:?}"
    );
}
