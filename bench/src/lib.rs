//! Benchmarks and the load generator: `northwest bench store | journal |
//! migrate | overhead | zk` print figures measured side by side in one run (nothing here
//! asserts on speed), and `northwest loadgen` drives a node's HTTP API.
//!
//! Owns: the benchmark drivers and the load generator.
//! May use: `northwest-node` (in-process nodes and the HTTP router),
//! `northwest-migrate` (driving migrations), `northwest-kafka`, the pipeline
//! crates and the store.

mod common;
pub mod journal;
pub mod loadgen;
pub mod migrate;
pub mod overhead;
mod procs;
mod profile;
pub mod soak;
pub mod store;
pub mod zk;

pub use journal::JournalBench;
pub use migrate::MigrateBench;
pub use overhead::OverheadBench;
pub use store::StoreBench;
pub use zk::ZkBench;

#[derive(clap::Subcommand, Debug, Clone)]
pub enum BenchCmd {
    /// Single-op transactions: raw RocksDB vs local locks vs ZooKeeper locks,
    /// in-process and over HTTP.
    Store(StoreBench),
    /// Journaling cost on n1, apply rate vs raw consume, replication latency.
    Journal(JournalBench),
    /// The paper's tables: latency normal vs migrating, snapshot load, cutover pause.
    Migrate(MigrateBench),
    /// The rollback's write pause: `migrate --only rollback` (20 trials by
    /// default, `--rollback-trials`).
    Rollback(MigrateBench),
    /// n1's own cost, n1 pinned to one core: open-loop latency and CPU per
    /// request with journaling off, on, and during a migration.
    Overhead(OverheadBench),
    /// What running costs over time: n1 and n2 as processes under load
    /// through a migration, a rollback and marker GC, sampled every minute.
    Soak(soak::SoakBench),
    /// The paper's Table 1: a new ZooKeeper client synchronizing 1k / 10k /
    /// 100k lock entries.
    Zk(ZkBench),
}

/// Runs a benchmark; with `json`, stdout is one JSON document of every
/// table and note (the text goes to stderr).
pub async fn run(cmd: BenchCmd, json: bool) -> anyhow::Result<()> {
    common::set_json(json);
    let name = match &cmd {
        BenchCmd::Store(_) => "store",
        BenchCmd::Journal(_) => "journal",
        BenchCmd::Migrate(_) => "migrate",
        BenchCmd::Rollback(_) => "rollback",
        BenchCmd::Overhead(_) => "overhead",
        BenchCmd::Zk(_) => "zk",
        BenchCmd::Soak(_) => "soak",
    };
    match cmd {
        BenchCmd::Store(b) => store::run(b).await?,
        BenchCmd::Journal(b) => journal::run(b).await?,
        BenchCmd::Migrate(b) => migrate::run(b).await?,
        BenchCmd::Rollback(b) => {
            migrate::run(MigrateBench {
                only: "rollback".into(),
                ..b
            })
            .await?
        }
        BenchCmd::Overhead(b) => overhead::run(b).await?,
        BenchCmd::Zk(b) => zk::run(b).await?,
        BenchCmd::Soak(b) => soak::run(b).await?,
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&common::take_document(name))?
        );
    }
    Ok(())
}
