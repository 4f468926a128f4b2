//! The paper's Table 3: the snapshot's load per entity by value size, as
//! the migration streams and loads it, and the loader alone (with
//! ZooKeeper leases and with in-process locks).

use super::nodes::{admin, last_report, migrate_args, pair, preload};
use super::MigrateBench;
use crate::common::say;

pub(super) async fn table3(b: &MigrateBench) -> anyhow::Result<()> {
    let b = b.clone();
    say!("\nTable 3: snapshot load per entity (stream n1 -> topic, then load into n2)");
    say!("(stream = n1's snapshot phase, rows streamed to the topic while n2 loads them; catch-up = n2's whole catch-up phase, which ends when n2 has loaded every row and applied the journal; loader = the same rows loaded again into a fresh store by the apply loop alone, clock from assignment to last row, with ZooKeeper leases as a node takes them and with in-process locks)");
    say!(
        "{:<8} {:>10} {:>14} {:>12} {:>14} {:>14} {:>14} {:>14} | paper",
        "size",
        "entities",
        "stream ms/ent",
        "stream e/s",
        "catch-up ms/e",
        "catch-up e/s",
        "loader ZK e/s",
        "loader local"
    );
    for (size, paper) in [
        (100usize, "2.45 ms"),
        (1024, "~2.6 ms"),
        (10 * 1024, "~2.9 ms"),
        (100 * 1024, "3.18 ms"),
    ]
    .into_iter()
    .filter(|(s, _)| b.table3_sizes.contains(s))
    {
        let n = if size >= 100 * 1024 {
            b.load_entities / 5
        } else {
            b.load_entities
        };
        let p = pair(&b, &format!("snap{size}")).await?;
        preload(&p.n1, n, size).await?;
        let mut args = migrate_args(&b, &p);
        args.stop_after = Some(northwest_migrate::Phase::CatchUp);
        northwest_migrate::run(args, admin()).await?;
        let st = last_report(&b, &p).await?;
        let snap = st.phase_seconds.get("Snapshot").copied().unwrap_or(0.0);
        let load = st.phase_seconds.get("CatchUp").copied().unwrap_or(0.0);
        let loader = loaders(&b, &st, size).await?;
        let stream_rate = n as f64 / snap.max(1e-9);
        crate::common::record(serde_json::json!({"table3": {
            "value_bytes": size, "entities": n, "snapshot_rows": st.snapshot_rows,
            "stream_s": snap, "catch_up_s": load, "stream_rows_per_s": stream_rate,
            "catch_up_rows_per_s": n as f64 / load.max(1e-9),
            "loader_zk_rows_per_s": loader[0], "loader_local_rows_per_s": loader[1],
        }}));
        say!(
            "{:<8} {:>10} {:>14.4} {:>12.0} {:>14.4} {:>14.0} {:>14.0} {:>14.0} | {paper}",
            if size >= 1024 {
                format!("{} KB", size / 1024)
            } else {
                format!("{size} B")
            },
            n,
            1000.0 * snap / n as f64,
            stream_rate,
            1000.0 * load / n as f64,
            n as f64 / load.max(1e-9),
            loader[0],
            loader[1]
        );
        p.stop().await;
    }
    Ok(())
}

/// The loader alone, on the same snapshot topic into a fresh store: with
/// ZooKeeper leases as a node takes them, and with in-process locks (the
/// difference is what the leases cost). Rows/s of each.
async fn loaders(
    b: &MigrateBench,
    st: &northwest_migrate::MigrationRecord,
    size: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut loader = Vec::new();
    for zk in [Some(b.zk.as_str()), None] {
        let dir = tempfile::tempdir()?;
        // Profiled at the first size only: drawing a DWARF profile
        // takes minutes.
        let prof = match &b.profile {
            Some(d) if size == 100 => Some(crate::profile::start(
                d,
                &format!(
                    "loader-{size}B-{}",
                    if zk.is_some() { "zk" } else { "local" }
                ),
            )?),
            _ => None,
        };
        loader.push(
            crate::common::apply_all(
                zk,
                &b.brokers,
                northwest_consumer::Source::Snapshot,
                dir.path(),
                &st.snapshot_topic,
                st.snapshot_rows,
                &format!(
                    "/northwest/bench-loader-{}-{}",
                    st.snapshot_topic,
                    zk.is_some()
                ),
            )
            .await?,
        );
        if let Some(p) = prof {
            say!("  profile: {}", p.finish()?);
        }
    }
    Ok(loader)
}
