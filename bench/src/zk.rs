//! `northwest bench zk`: the paper's Table 1, the time a new ZooKeeper
//! client takes to synchronize 1k / 10k / 100k lock entries, side by side
//! with the paper's figures. A joining process here: opens a session, lists
//! the lock directory, and (second column) also reads every entry's data
//! and version (pipelined), which is what it needs to know each holder.

use std::time::{Duration, Instant};

use futures::StreamExt;
use zookeeper_client as zk;

use crate::common::{record, say};

#[derive(clap::Args, Debug, Clone)]
pub struct ZkBench {
    #[arg(long, env = "NW_ZK", default_value = "127.0.0.1:2181")]
    pub zk: String,
    /// Lock-entry counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    pub entries: Vec<usize>,
    /// Trials per count (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub trials: usize,
}

/// The paper's Table 1 (ms to synchronize the lock entries).
const PAPER: [(usize, f64); 3] = [(1_000, 4.49), (10_000, 8.47), (100_000, 43.0)];

/// Requests kept in flight while creating, reading and deleting entries.
const IN_FLIGHT: usize = 512;

async fn connect(addr: &str) -> anyhow::Result<zk::Client> {
    Ok(zk::Client::connector()
        .with_session_timeout(Duration::from_secs(20))
        .connect(addr)
        .await?)
}

fn median_ms(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

pub async fn run(b: ZkBench) -> anyhow::Result<()> {
    let admin = connect(&b.zk).await?;
    let stamp = northwest_store::store::now_ms_pub();
    let root = format!("/northwest-bench/zk-{stamp}");
    let dir = format!("{root}/locks");
    northwest_store::zk::ensure_path(&admin, &dir, &root, &zk::Acls::anyone_all()).await?;
    say!(
        "bench zk: a new client synchronizes N lock entries (persistent znodes named like leases, `<ns>:<group>`, 6 B of data, under {root}) from ZooKeeper at {}; median of {} trials",
        b.zk, b.trials.max(1)
    );
    // The entries are removed whatever happens to the measurement.
    let measured = measure(&admin, &b, &dir).await;
    let cleaned = cleanup(&admin, &dir, &root).await;
    measured.and(cleaned)
}

async fn measure(admin: &zk::Client, b: &ZkBench, dir: &str) -> anyhow::Result<()> {
    let opts = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    let mut have = 0usize;
    let mut rows = Vec::new();
    let mut counts = b.entries.clone();
    counts.sort_unstable();
    for &n in &counts {
        // Grow the directory to n entries.
        let t = Instant::now();
        futures::stream::iter(have..n)
            .map(|i| {
                let (path, opts) = (format!("{dir}/app:Account:{i}"), &opts);
                async move {
                    match admin.create(&path, b"wanted", opts).await {
                        Ok(_) | Err(zk::Error::NodeExists) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<()>, _>>()?;
        say!(
            "  created {} entries in {:.1} s",
            n - have,
            t.elapsed().as_secs_f64()
        );
        have = n;
        let (mut list, mut full) = (Vec::new(), Vec::new());
        for _ in 0..b.trials.max(1) {
            let t = Instant::now();
            let c = connect(&b.zk).await?;
            let names = c.list_children(dir).await?;
            list.push(t.elapsed());
            anyhow::ensure!(names.len() == n, "listed {} of {n}", names.len());
            futures::stream::iter(names)
                .map(|name| {
                    let (c, path) = (&c, format!("{dir}/{name}"));
                    async move { c.get_data(&path).await.map(|_| ()) }
                })
                .buffer_unordered(IN_FLIGHT)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<Vec<()>, _>>()?;
            full.push(t.elapsed());
            // Closed before the next trial's timer starts.
            drop(c);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let paper = PAPER.iter().find(|(k, _)| *k == n).map(|(_, ms)| *ms);
        rows.push((n, median_ms(list), median_ms(full), paper));
    }
    say!(
        "\nTable 1: time for a new client to synchronize the lock entries (ms)\n  {:>8} {:>22} {:>26} {:>8}",
        "entries",
        "connect + list (ours)",
        "+ read every entry (ours)",
        "paper"
    );
    for (n, list, full, paper) in &rows {
        say!(
            "  {n:>8} {list:>22.2} {full:>26.2} {:>8}",
            paper.map_or("-".into(), |p| format!("{p:.2}"))
        );
    }
    record(serde_json::json!({
        "table": "Table 1: new client synchronizes N lock entries (ms)",
        "rows": rows.iter().map(|(n, l, f, p)| serde_json::json!({
            "entries": n, "connect_list_ms": l, "read_all_ms": f, "paper_ms": p,
        })).collect::<Vec<_>>(),
    }));
    Ok(())
}

async fn cleanup(admin: &zk::Client, dir: &str, root: &str) -> anyhow::Result<()> {
    let t = Instant::now();
    let names = admin.list_children(dir).await?;
    let failed = futures::stream::iter(names)
        .map(|name| {
            let path = format!("{dir}/{name}");
            async move { admin.delete(&path, None).await }
        })
        .buffer_unordered(IN_FLIGHT)
        .filter(|r| std::future::ready(r.is_err()))
        .count()
        .await;
    admin.delete(dir, None).await?;
    admin.delete(root, None).await?;
    anyhow::ensure!(
        failed == 0,
        "{failed} entries under {dir} could not be deleted: remove them with zkCli deleteall {root}"
    );
    say!(
        "  (removed the entries in {:.1} s)",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
