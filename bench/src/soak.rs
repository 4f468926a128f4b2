//! `northwest bench soak`: what a month of running costs, compressed. n1
//! and n2 run as processes under a fixed mixed load (journaling on, n2
//! applying) while a migration, a rollback and marker GC happen; every
//! `--sample-every` the bench samples each node's RSS, open file
//! descriptors, data directory size, outbox entries and delete markers, the
//! znodes under the deployment's ZooKeeper root and the records its topics
//! hold. The report gives each series' growth over the last
//! `--growth-window` (targets: memory and descriptors <= 5%, the outbox back
//! to 0 once the load stops, markers collected) as JSON and an SVG chart.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

use crate::common::{record, say};
use crate::loadgen::{drive, mixed_op, LoadgenArgs, Tally};
use crate::procs::{free_port, spawn_pinned, wait_healthy, Proc};

mod chart;
mod sample;

#[derive(clap::Args, Debug, Clone)]
pub struct SoakBench {
    /// How long the load runs.
    #[arg(long, default_value = "30m", value_parser = crate::loadgen::parse_duration)]
    pub duration: Duration,
    /// Offered load, requests/s (open loop), mixed: reads, two-entity
    /// transactions, single puts and deletes.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    #[arg(long, default_value_t = 0.5)]
    pub reads: f64,
    #[arg(long, default_value_t = 20_000)]
    pub entities: u64,
    #[arg(long, default_value_t = 512)]
    pub value_bytes: usize,
    #[arg(long, default_value = "60s", value_parser = crate::loadgen::parse_duration)]
    pub sample_every: Duration,
    /// Growth is measured over this last stretch of the run.
    #[arg(long, default_value = "20m", value_parser = crate::loadgen::parse_duration)]
    pub growth_window: Duration,
    /// When the migration n1 -> n2 starts (after the load started).
    #[arg(long, default_value = "2m", value_parser = crate::loadgen::parse_duration)]
    pub migrate_at: Duration,
    /// When the rollback to n1 starts.
    #[arg(long, default_value = "5m", value_parser = crate::loadgen::parse_duration)]
    pub rollback_at: Duration,
    /// Both nodes' `store.marker_retention_hours` (the journal's retention
    /// is the same): short, so marker GC and the broker's retention act
    /// inside the run.
    #[arg(long, default_value_t = 0.05)]
    pub marker_retention_hours: f64,
    #[arg(long, default_value_t = 30)]
    pub marker_gc_interval_s: u64,
    /// Where the JSON report and the SVG chart go.
    #[arg(long, default_value = "target/soak")]
    pub out: PathBuf,
    #[arg(long, env = "NW_ZK", default_value = "127.0.0.1:2181")]
    pub zk: String,
    #[arg(long, env = "NW_KAFKA", default_value = "127.0.0.1:9092")]
    pub brokers: String,
}

/// The deployment under test.
pub(crate) struct Deployment {
    pub(crate) root: String,
    pub(crate) topic: String,
    pub(crate) nodes: Vec<(String, String, PathBuf, Proc)>,
}

fn node_toml(b: &SoakBench, name: &str, data: &Path, port: u16, root: &str, topic: &str) -> String {
    let retention_ms = (b.marker_retention_hours * 3_600_000.0) as i64;
    format!(
        r#"name = "{name}"
data_dir = "{data}"
[http]
listen = "127.0.0.1:{port}"
[store]
marker_retention_hours = {hours}
marker_gc_interval_s = {gc}
[coordination]
connect = "{zk}"
root = "{root}"
[journal]
enabled = {journal}
apply = {apply}
brokers = "{brokers}"
topic = "{topic}"
dead_letter_topic = "{topic}.dlq"
partitions = 8
retention_ms = {retention_ms}
"#,
        data = data.display(),
        hours = b.marker_retention_hours,
        gc = b.marker_gc_interval_s,
        zk = b.zk,
        brokers = b.brokers,
        journal = name == "n1",
        apply = name == "n2",
    )
}

async fn start(b: &SoakBench, dir: &Path) -> anyhow::Result<Deployment> {
    let stamp = northwest_store::store::now_ms_pub();
    let root = format!("/northwest/bench-soak-{stamp}");
    let topic = format!("bench-soak-{stamp}");
    let all = format!("0-{}", std::thread::available_parallelism()?.get() - 1);
    let mut nodes = Vec::new();
    for name in ["n1", "n2"] {
        let port = free_port()?;
        let data = dir.join(name);
        let conf = dir.join(format!("{name}.toml"));
        std::fs::write(&conf, node_toml(b, name, &data, port, &root, &topic))?;
        let log = dir.join(format!("{name}.log"));
        let p = spawn_pinned(&all, &["node", "--config", &conf.to_string_lossy()], &log)?;
        let base = format!("http://127.0.0.1:{port}");
        wait_healthy(&base, &log).await?;
        nodes.push((name.to_string(), base, data, p));
    }
    Ok(Deployment { root, topic, nodes })
}

fn migrate_args(
    b: &SoakBench,
    d: &Deployment,
    rollback: bool,
) -> anyhow::Result<northwest_migrate::MigrateArgs> {
    let (n1, n2) = (&d.nodes[0].1, &d.nodes[1].1);
    let mut a = northwest_migrate::MigrateArgs::defaults(n1, n2, "soak", &b.zk, &b.brokers)?;
    a.rollback = rollback;
    Ok(a)
}

/// Runs the migration at `migrate_at` and the rollback at `rollback_at`
/// (from `t0`); returns what happened to each, with when.
async fn events(b: SoakBench, d: Arc<Deployment>, t0: Instant) -> Vec<Value> {
    let admin =
        northwest_control::AdminClient::new(None, Vec::new(), northwest_migrate::ADMIN_TIMEOUT);
    let mut out = Vec::new();
    for (what, at, rollback) in [
        ("migration", b.migrate_at, false),
        ("rollback", b.rollback_at, true),
    ] {
        if at >= b.duration {
            let why = "not run: scheduled at or after --duration";
            out.push(json!({"event": what, "start_s": null, "end_s": null, "error": why}));
            continue;
        }
        tokio::time::sleep_until((t0 + at).into()).await;
        let began = t0.elapsed().as_secs_f64();
        let r = match migrate_args(&b, &d, rollback) {
            Ok(args) => northwest_migrate::run(args, admin.clone())
                .await
                .map_err(anyhow::Error::from),
            Err(e) => Err(e),
        };
        let ended = t0.elapsed().as_secs_f64();
        let error = r.as_ref().err().map(|e| format!("{e:#}"));
        match &error {
            None => say!("  {what}: {began:.0} s .. {ended:.0} s, done"),
            Some(e) => say!("  {what}: {began:.0} s .. {ended:.0} s, FAILED: {e}"),
        }
        out.push(json!({"event": what, "start_s": began, "end_s": ended, "error": error}));
    }
    out
}

pub async fn run(b: SoakBench) -> anyhow::Result<()> {
    anyhow::ensure!(
        b.sample_every >= Duration::from_secs(1) && b.duration >= b.sample_every * 3,
        "--sample-every must be >= 1s and --duration at least three samples long"
    );
    std::fs::create_dir_all(&b.out)
        .with_context(|| format!("creating the output directory {}", b.out.display()))?;
    let dir = tempfile::tempdir_in(&b.out)?;
    say!(
        "bench soak: n1 and n2 as processes, {} req/s mixed ({}% reads, {} B values, {} entities) for {:?}; migration at {:?}, rollback at {:?}; marker retention {} h (GC every {} s); a sample every {:?}",
        b.rate, (b.reads * 100.0) as u32, b.value_bytes, b.entities, b.duration,
        b.migrate_at, b.rollback_at, b.marker_retention_hours, b.marker_gc_interval_s, b.sample_every
    );
    let d = Arc::new(start(&b, dir.path()).await?);
    let probe = sample::Probe::new(&b, &d).await?;
    let t0 = Instant::now();
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load(
        b.clone(),
        d.nodes[0].1.clone(),
        stop.clone(),
        tally.clone(),
    ));
    let ev = tokio::spawn(events(b.clone(), d.clone(), t0));
    let mut samples = vec![probe.sample(&d, 0.0).await];
    let mut next = t0 + b.sample_every;
    while next <= t0 + b.duration {
        tokio::time::sleep_until(next.into()).await;
        let s = probe.sample(&d, t0.elapsed().as_secs_f64()).await;
        sample::say_sample(&s, &tally);
        samples.push(s);
        next += b.sample_every;
    }
    stop.store(true, Ordering::Relaxed);
    load.await?;
    let events = ev.await?;
    // The load stopped: the outbox must drain and n2 catch up.
    let drained = sample::wait_drained(&d, Duration::from_secs(60)).await;
    samples.push(probe.sample(&d, t0.elapsed().as_secs_f64()).await);
    let report = sample::report(&b, &samples, &events, &tally, drained);
    let stamp = northwest_store::store::now_ms_pub();
    let json_path = b.out.join(format!("soak-{stamp}.json"));
    let svg_path = b.out.join(format!("soak-{stamp}.svg"));
    std::fs::write(&json_path, serde_json::to_vec_pretty(&report)?)?;
    std::fs::write(&svg_path, chart::svg(&samples, &events))?;
    say!(
        "report: {} (chart: {})",
        json_path.display(),
        svg_path.display()
    );
    sample::say_verdict(&report);
    record(json!({"soak": report, "json": json_path, "svg": svg_path}));
    Ok(())
}

async fn load(b: SoakBench, target: String, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let a = LoadgenArgs {
        token_file: None,
        target,
        ns: "soak".into(),
        mode: "mixed".into(),
        entities: b.entities,
        groups: (b.entities / 20).max(1),
        concurrency: 64,
        duration: b.duration,
        reads: b.reads,
        value_bytes: b.value_bytes,
        rate: b.rate,
        json: true,
    };
    let client = reqwest::Client::new();
    let value = vec![b's'; b.value_bytes];
    drive(64, None, stop, b.rate, tally, move |_| {
        let (c, a, v) = (client.clone(), a.clone(), value.clone());
        async move { mixed_op(&c, &a, &v).await }
    })
    .await;
}
