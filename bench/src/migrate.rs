//! `northwest bench migrate`: the paper's measurements side by side with the
//! paper's numbers: request latency normal vs migrating (Table 2), snapshot
//! load time per entity by size (Table 3), and the cutover write pause.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use northwest_control::record::WarmReport;

use crate::common::say;
use crate::loadgen::{drive, Tally};
use nodes::{admin, bulk_preload, last_report, migrate_args, mixed, pair, pair_with, preload};

mod nodes;
mod rollback;
mod table3;

#[derive(clap::Args, Debug, Clone)]
pub struct MigrateBench {
    /// Entities preloaded for the latency and cutover runs.
    #[arg(long, default_value_t = 20_000)]
    pub entities: u64,
    /// Entities per size for the snapshot-load table.
    #[arg(long, default_value_t = 10_000)]
    pub load_entities: u64,
    #[arg(long, default_value_t = 10)]
    pub clients: usize,
    #[arg(long, default_value = "5s", value_parser = crate::loadgen::parse_duration)]
    pub phase_duration: Duration,
    #[arg(long, default_value_t = 10)]
    pub cutover_trials: usize,
    /// Migrate-then-roll-back trials for `--only rollback` (`bench rollback`).
    #[arg(long, default_value_t = 20)]
    pub rollback_trials: usize,
    /// Offered load (requests/s across all clients) for the latency and
    /// cutover runs: a fixed rate, so the migration can catch up under it.
    #[arg(long, default_value_t = 300)]
    pub rate: u64,
    /// Snapshot streaming limit in rows/s during the Table 2 runs (0 = as
    /// fast as possible): the knob that trades migration time for n1 latency.
    #[arg(long, default_value_t = 0)]
    pub snapshot_rate: u64,
    /// The closed-loop snapshot throttle for the Table 2 runs (`migrate
    /// --max-source-p99-ms`): the snapshot slows while n1's p99 is over it.
    #[arg(long)]
    pub max_source_p99_ms: Option<u64>,
    /// Which measurements to run (comma-separated: table2, table3, cutover,
    /// warm, scale, rollback; scale and rollback run only when named).
    #[arg(long, default_value = "table2,table3,cutover,warm")]
    pub only: String,
    /// Entities bulk-loaded (ten per transaction) for `--only scale`, then
    /// migrated under the bench's load.
    #[arg(long, default_value_t = 1_000_000)]
    pub scale_entities: u64,
    /// Value sizes (bytes) of Table 3's rows.
    #[arg(long, default_value = "100,1024,10240,102400", value_delimiter = ',')]
    pub table3_sizes: Vec<usize>,
    /// Keep perf samples (and flame graphs) of Table 3's loader runs here.
    #[arg(long)]
    pub profile: Option<std::path::PathBuf>,
    #[arg(long, env = "NW_ZK", default_value = "127.0.0.1:2181")]
    pub zk: String,
    #[arg(long, env = "NW_KAFKA", default_value = "127.0.0.1:9092")]
    pub brokers: String,
}

pub async fn run(b: MigrateBench) -> anyhow::Result<()> {
    say!(
        "bench migrate: {} entities, {} clients, {:?} per measurement",
        b.entities,
        b.clients,
        b.phase_duration
    );
    let want = |t: &str| b.only.split(',').any(|x| x.trim() == t);
    if want("table2") {
        table2(&b).await?;
    }
    if want("table3") {
        table3::table3(&b).await?;
    }
    if want("cutover") {
        cutover(&b).await?;
    }
    if want("warm") {
        warm(&b).await?;
    }
    if want("scale") {
        scale(&b).await?;
    }
    if want("rollback") {
        rollback::rollback(&b).await?;
    }
    Ok(())
}

/// A large namespace migrated under load: what the writes pause for
/// (verify's snapshots and the cutover), how fast the snapshot moves, and
/// what the clients feel before and during.
async fn scale(b: &MigrateBench) -> anyhow::Result<()> {
    let n = b.scale_entities;
    let b = MigrateBench {
        entities: n,
        ..b.clone()
    };
    say!(
        "\nScale: {n} entities of 100 B bulk-loaded (10 per transaction), then migrated under {} req/s (50% reads)",
        b.rate
    );
    let p = pair(&b, "scale").await?;
    let t = Instant::now();
    bulk_preload(&p.n1, n, 100).await?;
    let load_s = t.elapsed().as_secs_f64();
    say!(
        "  bulk load: {load_s:.1} s ({:.0} entities/s)",
        n as f64 / load_s
    );
    let before = mixed(&p.n1, &b, 0.5, stop_after(b.phase_duration)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (n1, b2, st) = (p.n1.clone(), b.clone(), stop.clone());
        tokio::spawn(async move { mixed(&n1, &b2, 0.5, st).await })
    };
    let mut args = migrate_args(&b, &p);
    args.rate = b.snapshot_rate;
    args.max_source_p99_ms = b.max_source_p99_ms;
    let t = Instant::now();
    northwest_migrate::run(args, admin()).await?;
    let migrate_s = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let during = load.await?;
    let st = last_report(&b, &p).await?;
    let snap_s = st.phase_seconds.get("Snapshot").copied().unwrap_or(0.0);
    let p99 = |v: &serde_json::Value| v["latency_ms"]["p99"].as_f64().unwrap_or(0.0);
    say!(
        "  migration {migrate_s:.1} s; snapshot {} rows in {snap_s:.1} s ({:.0} rows/s under load)",
        st.snapshot_rows,
        st.snapshot_rows as f64 / snap_s.max(1e-9)
    );
    say!(
        "  writes paused: verify {:.1} ms (digests then ran {:.0} ms with writes going on), cutover {:.1} ms; total {:.1} ms",
        st.verify_pause_ms.unwrap_or(0.0),
        st.verify_digest_ms.unwrap_or(0.0),
        st.write_pause_ms.unwrap_or(0.0),
        st.verify_pause_ms.unwrap_or(0.0) + st.write_pause_ms.unwrap_or(0.0)
    );
    say!(
        "  clients p99 {:.2} ms before, {:.2} ms during ({:.2}x); requests during {} failed {}",
        p99(&before),
        p99(&during),
        p99(&during) / p99(&before).max(1e-9),
        during["issued"],
        during["failed"]
    );
    crate::common::record(serde_json::json!({"scale": {
        "entities": n, "bulk_load_s": load_s, "migrate_s": migrate_s,
        "snapshot_rows": st.snapshot_rows, "snapshot_s": snap_s,
        "verify_pause_ms": st.verify_pause_ms, "verify_digest_ms": st.verify_digest_ms,
        "cutover_pause_ms": st.write_pause_ms,
        "before": before, "during": during,
    }}));
    p.stop().await;
    Ok(())
}

async fn table2(b: &MigrateBench) -> anyhow::Result<()> {
    let b = b.clone();
    say!(
        "\nTable 2: request latency (ms), normal vs during migration (snapshot rate limit: {}; throttle: {})",
        if b.snapshot_rate == 0 {
            "none".to_string()
        } else {
            format!("{} rows/s", b.snapshot_rate)
        },
        b.max_source_p99_ms
            .map_or("off".to_string(), |ms| format!("n1 p99 <= {ms} ms"))
    );
    say!("{:<10} {:>9} {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} {:>9} | {:>9} | {:>9} | paper normal vs migrating", "reads", "mean", "p50", "p99", "max", "mean", "p50", "p99", "max", "overhead", "migrate s");
    for (reads, paper) in [
        (0.2, "107.2 vs 115.8 (7.4%)"),
        (0.5, "n/a"),
        (0.8, "94.0 vs 94.2 (0.2%)"),
    ] {
        let p = pair(&b, &format!("lat{}", (reads * 100.0) as u32)).await?;
        preload(&p.n1, b.entities, 1024).await?;
        let normal = mixed(&p.n1, &b, reads, stop_after(b.phase_duration)).await;
        // During migration: load runs while the orchestrator streams the
        // snapshot and catches up (stopping before the cutover).
        let stop = Arc::new(AtomicBool::new(false));
        let mut args = migrate_args(&b, &p);
        args.stop_after = Some(northwest_migrate::Phase::CatchUp);
        args.rate = b.snapshot_rate;
        args.max_source_p99_ms = b.max_source_p99_ms;
        let load = {
            let (n1, b2, st) = (p.n1.clone(), b.clone(), stop.clone());
            tokio::spawn(async move { mixed(&n1, &b2, reads, st).await })
        };
        let t = Instant::now();
        northwest_migrate::run(args, admin()).await?;
        let migrate_s = t.elapsed().as_secs_f64();
        if t.elapsed() < b.phase_duration {
            tokio::time::sleep(b.phase_duration - t.elapsed()).await;
        }
        stop.store(true, Ordering::Relaxed);
        let during = load.await?;
        let f = |v: &serde_json::Value, k: &str| v["latency_ms"][k].as_f64().unwrap_or(0.0);
        say!(
            "{:<10} {:>9.2} {:>9.2} {:>9.2} {:>9.2} | {:>9.2} {:>9.2} {:>9.2} {:>9.2} | {:>8.1}% | {:>9.1} | {paper}",
            format!("{:.0}%", reads * 100.0),
            f(&normal, "mean"), f(&normal, "p50"), f(&normal, "p99"), f(&normal, "max"),
            f(&during, "mean"), f(&during, "p50"), f(&during, "p99"), f(&during, "max"),
            100.0 * (f(&during, "mean") / f(&normal, "mean") - 1.0),
            migrate_s
        );
        crate::common::record(serde_json::json!({"table2": {
            "reads": reads, "normal": normal, "migrating": during, "migrate_s": migrate_s,
            "max_source_p99_ms": b.max_source_p99_ms, "snapshot_rate": b.snapshot_rate,
        }}));
        if let Some(budget) = b.max_source_p99_ms {
            let w = &during["window_p99_ms"];
            let over = w.as_array().map_or(0, |w| {
                w.iter()
                    .filter(|p| p.as_f64().unwrap_or(0.0) > budget as f64 * 1.1)
                    .count()
            });
            say!(
                "{:<10} n1 p99 per {} s window while migrating (budget {budget} ms): {w}, {over} window(s) over budget + 10%",
                "",
                during["window_s"]
            );
        }
        p.stop().await;
    }
    Ok(())
}

async fn cutover(b: &MigrateBench) -> anyhow::Result<()> {
    let b = b.clone();
    say!(
        "\nCutover write pause over {} trials (paper: DNS switchover 46.4 s)",
        b.cutover_trials
    );
    let mut pauses = Vec::new();
    for i in 0..b.cutover_trials {
        let p = pair(&b, &format!("cut{i}")).await?;
        preload(&p.n1, 2000, 256).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let load = {
            let (n1, b2, st) = (p.n1.clone(), b.clone(), stop.clone());
            tokio::spawn(async move {
                mixed(
                    &n1,
                    &MigrateBench {
                        entities: 2000,
                        ..b2
                    },
                    0.5,
                    st,
                )
                .await
            })
        };
        northwest_migrate::run(migrate_args(&b, &p), admin()).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        let l = load.await?;
        let st = last_report(&b, &p).await?;
        pauses.push(st.write_pause_ms.unwrap_or(0.0));
        say!(
            "  trial {i}: write pause {:.1} ms, requests {} failed {}",
            pauses[i],
            l["issued"],
            l["failed"]
        );
        p.stop().await;
    }
    let q = quantiles(&pauses);
    say!(
        "write pause ms: p50 {:.1}, p99 {:.1}, max {:.1}",
        q.0,
        q.1,
        q.2
    );
    crate::common::record(serde_json::json!({"cutover": {
        "trials": pauses.len(), "write_pause_ms": pauses,
        "p50_ms": q.0, "p99_ms": q.1, "max_ms": q.2,
    }}));
    Ok(())
}

/// Reads (or, with `write`, 5 KB puts) of Acct:*/Item:0..keys at the
/// bench's rate for `d`.
async fn hot_load(
    base: &str,
    b: &MigrateBench,
    keys: u64,
    write: bool,
    d: Duration,
) -> serde_json::Value {
    let client = reqwest::Client::new();
    let tally = Arc::new(Tally::default());
    let stop = stop_after(d);
    let base = base.to_string();
    let t = Instant::now();
    drive(b.clients, None, stop, b.rate, tally.clone(), move |_| {
        let (c, base) = (client.clone(), base.clone());
        async move {
            let i = {
                use rand::Rng;
                rand::rng().random_range(0..keys)
            };
            let url = format!("{base}/v1/ns/bench/e/Acct:{}/Item:{i}", i / 10);
            let resp = if write {
                c.put(url).body(vec![b'w'; 5120]).send().await
            } else {
                c.get(url).send().await
            };
            match resp {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(r.status().to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await;
    tally.summary(t.elapsed())
}

async fn cache_counts(base: &str) -> anyhow::Result<(u64, u64)> {
    let s: serde_json::Value = reqwest::get(format!("{base}/v1/admin/status"))
        .await?
        .json()
        .await?;
    let c = &s["read_cache"];
    Ok((
        c["hits"].as_u64().unwrap_or(0),
        c["misses"].as_u64().unwrap_or(0),
    ))
}

/// Paper section 3.3: n2's hit rate and latency in the first 10 s after the
/// switch with and without the warm-up, and what the cache costs n1 per
/// request (5 KB values).
async fn warm(b: &MigrateBench) -> anyhow::Result<()> {
    let b = b.clone();
    let hot = (b.entities / 10).max(1);
    say!(
        "\nCache warm-up: reads of n1's {hot} hot keys (5 KB) on n2 in the first 10 s after the switch"
    );
    say!(
        "{:<8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "n2 cache",
        "hit rate",
        "mean ms",
        "p50 ms",
        "p99 ms",
        "warm s",
        "keys"
    );
    for warmed in [false, true] {
        let p = pair(&b, if warmed { "warm" } else { "cold" }).await?;
        preload(&p.n1, b.entities, 5120).await?;
        // n1 serves its hot set for a while before the migration.
        hot_load(&p.n1, &b, hot, false, Duration::from_secs(3)).await;
        let mut args = migrate_args(&b, &p);
        args.warm_keys = if warmed { 100_000 } else { 0 };
        northwest_migrate::run(args, admin()).await?;
        let st = last_report(&b, &p).await?;
        let (h0, m0) = cache_counts(&p.n2).await?;
        let r = hot_load(&p.n1, &b, hot, false, Duration::from_secs(10)).await;
        let (h1, m1) = cache_counts(&p.n2).await?;
        let f = |k: &str| r["latency_ms"][k].as_f64().unwrap_or(0.0);
        let reads = (h1 - h0) + (m1 - m0);
        say!(
            "{:<8} {:>8.1}% {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9}",
            if warmed { "warmed" } else { "cold" },
            100.0 * (h1 - h0) as f64 / reads.max(1) as f64,
            f("mean"),
            f("p50"),
            f("p99"),
            match &st.warm {
                Some(WarmReport::Warmed { seconds, .. }) => *seconds,
                _ => 0.0,
            },
            match &st.warm {
                Some(WarmReport::Warmed { found, .. }) => found.to_string(),
                Some(WarmReport::Failed { error }) => format!("failed: {error}"),
                None => "-".into(),
            }
        );
        p.stop().await;
    }
    say!("(reads go to n1, which forwards them to n2, as clients of n1 do after a switch)");
    say!(
        "\nWhat the cache costs n1 per request (5 KB values, {} req/s, {:?} each; paper: COW +0.17 ms, COR +0.85 ms)",
        b.rate, b.phase_duration
    );
    say!(
        "{:<22} {:>9} {:>9} {:>9}",
        "",
        "mean ms",
        "p50 ms",
        "p99 ms"
    );
    for (label, mb) in [("cache off", 0u64), ("cache on (128 MiB)", 128)] {
        let p = pair_with(&b, &format!("cost{mb}"), |c| c.store.read_cache_mb = mb).await?;
        preload(&p.n1, hot, 5120).await?;
        for (what, write) in [("put", true), ("get", false)] {
            let r = hot_load(&p.n1, &b, hot, write, b.phase_duration).await;
            let f = |k: &str| r["latency_ms"][k].as_f64().unwrap_or(0.0);
            say!(
                "{:<22} {:>9.3} {:>9.3} {:>9.3}",
                format!("{what}, {label}"),
                f("mean"),
                f("p50"),
                f("p99")
            );
        }
        p.stop().await;
    }
    Ok(())
}

/// p50, p99 and max of `v` (nearest rank: below 100 values p99 is the max).
fn quantiles(v: &[f64]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |f: f64| v[((v.len() as f64 - 1.0) * f).round() as usize];
    (q(0.5), q(0.99), v[v.len() - 1])
}

/// A flag that turns true after `d`: a load driven with it runs that long.
fn stop_after(d: Duration) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(d).await;
        s2.store(true, Ordering::Relaxed);
    });
    stop
}
