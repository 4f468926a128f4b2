//! `northwest bench overhead`: what journaling and a migration cost n1 itself.
//!
//! n1 runs as its own process pinned (taskset) to one core; everything else
//! (this load generator, n2, the orchestrator, the broker and ZooKeeper) is
//! pinned to the other cores, identically in every mode. Load is open-loop at
//! a fixed offered rate, latency counted from when each request was due
//! (HDR histogram, p50 / p99 / p99.9), and n1's CPU time per request is read
//! from `/proc/<pid>/stat`. Modes run interleaved in one invocation, each
//! `--repeats` times (baseline, journaling, migrating, baseline, ...):
//! baseline (journaling off), journaling (n2 applying), journaling-eager
//! (the relay reads at every commit: `journal.relay_coalesce_ms = 0`, when
//! asked for), migrating (a migration's snapshot streaming throughout the
//! window). Each mode reports its median and spread; the baselines' spread
//! is the run's noise, so a difference inside it is not a cost.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::common::{json_mode, record, say};
use crate::loadgen::{drive, mixed_op, put_sample, LoadgenArgs, Tally};
use crate::procs::{
    cpu_seconds, free_port, other_cores, pin, spawn_pinned, stack_pids, wait_healthy, Proc,
};

mod report;

#[derive(clap::Args, Debug, Clone)]
pub struct OverheadBench {
    /// Entities preloaded before each mode (also the migration's snapshot).
    #[arg(long, default_value_t = 20_000)]
    pub entities: u64,
    /// Offered load, requests/s.
    #[arg(long, default_value_t = 500)]
    pub rate: u64,
    /// Measured window per mode (after a warm-up of a fifth of it).
    #[arg(long, default_value = "10s", value_parser = crate::loadgen::parse_duration)]
    pub duration: Duration,
    /// Fraction of reads in the mixed workload.
    #[arg(long, default_value_t = 0.5)]
    pub reads: f64,
    #[arg(long, default_value_t = 1024)]
    pub value_bytes: usize,
    /// Most requests outstanding at once (open loop: a request waits for a
    /// free slot only past this).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Runs of each mode, interleaved (medians and spreads are reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Modes, in the order each round runs them: baseline, journaling,
    /// journaling-eager, migrating.
    #[arg(long, default_value = "baseline,journaling,migrating")]
    pub modes: String,
    /// The core n1 runs on; everything else runs on the others.
    #[arg(long, default_value_t = 0)]
    pub n1_core: usize,
    #[arg(long, env = "NW_ZK", default_value = "127.0.0.1:2181")]
    pub zk: String,
    #[arg(long, env = "NW_KAFKA", default_value = "127.0.0.1:9092")]
    pub brokers: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Baseline,
    Journaling,
    /// Journaling with the relay reading at every commit (no coalescing).
    JournalingEager,
    Migrating,
}

impl Mode {
    fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s.trim() {
            "baseline" => Mode::Baseline,
            "journaling" => Mode::Journaling,
            "journaling-eager" => Mode::JournalingEager,
            "migrating" => Mode::Migrating,
            other => bail!(
                "unknown mode {other:?}: use baseline, journaling, journaling-eager, migrating"
            ),
        })
    }

    fn tag(self) -> &'static str {
        match self {
            Mode::Baseline => "baseline",
            Mode::Journaling => "journaling",
            Mode::JournalingEager => "journaling-eager",
            Mode::Migrating => "migrating",
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn node_toml(
    name: &str,
    dir: &Path,
    port: u16,
    b: &OverheadBench,
    root: &str,
    topic: &str,
    journal: bool,
    apply: bool,
    coalesce_ms: u64,
) -> String {
    format!(
        r#"name = "{name}"
data_dir = "{data}"
[http]
listen = "127.0.0.1:{port}"
[coordination]
connect = "{zk}"
root = "{root}"
[journal]
enabled = {journal}
apply = {apply}
brokers = "{brokers}"
topic = "{topic}"
partitions = 8
relay_coalesce_ms = {coalesce_ms}
"#,
        data = dir.join(name).display(),
        zk = b.zk,
        brokers = b.brokers,
    )
}

/// Writes `entities` entities as fast as they go (not measured).
async fn preload(client: &reqwest::Client, a: &LoadgenArgs, entities: u64) -> anyhow::Result<()> {
    let pre = Arc::new(Tally::default());
    {
        let (c, a2) = (client.clone(), a.clone());
        drive(
            16,
            Some(entities),
            Arc::new(AtomicBool::new(false)),
            0,
            pre.clone(),
            move |n| {
                let (c, a2) = (c.clone(), a2.clone());
                async move { put_sample(&c, &a2, n).await }
            },
        )
        .await;
    }
    if pre.failed.load(Ordering::Relaxed) > 0 {
        bail!("preload failed: {:?}", pre.errors.lock());
    }
    Ok(())
}

/// The migration streaming its snapshot over the warm-up and the window.
fn start_migration(
    b: &OverheadBench,
    others: &str,
    dir: &Path,
    n1_base: &str,
    n2_base: &str,
) -> anyhow::Result<Proc> {
    // Stream the snapshot over the warm-up and the whole window.
    let window = b.duration.as_secs_f64() * 1.2;
    let rate = ((b.entities as f64 / window) as u64).max(1);
    spawn_pinned(
        others,
        &[
            "migrate",
            "--from",
            n1_base,
            "--to",
            n2_base,
            "--namespace",
            "bench",
            "--zk",
            &b.zk,
            "--brokers",
            &b.brokers,
            "--rate",
            &rate.to_string(),
            "--chunk",
            "500",
            "--stop-after",
            "catch-up",
            "--quiet",
        ],
        &dir.join("migrate.log"),
    )
}

/// Runs the mixed open-loop load for `secs`: the tally and how long it took.
async fn measure(
    b: &OverheadBench,
    client: &reqwest::Client,
    a: &LoadgenArgs,
    secs: Duration,
) -> (Arc<Tally>, Duration) {
    let (tally, stop) = (Arc::new(Tally::default()), Arc::new(AtomicBool::new(false)));
    let st = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(secs).await;
        st.store(true, Ordering::Relaxed);
    });
    let (c, a2, value) = (client.clone(), a.clone(), vec![b'v'; b.value_bytes]);
    let t = Instant::now();
    drive(
        b.concurrency,
        None,
        stop,
        b.rate,
        tally.clone(),
        move |_| {
            let (c, a2, value) = (c.clone(), a2.clone(), value.clone());
            async move { mixed_op(&c, &a2, &value).await }
        },
    )
    .await;
    (tally, t.elapsed())
}

/// The load each mode offers n1: mixed reads and writes, open loop.
fn mixed_args(b: &OverheadBench, n1_base: &str) -> LoadgenArgs {
    LoadgenArgs {
        token_file: None,
        target: n1_base.to_string(),
        ns: "bench".into(),
        mode: "mixed".into(),
        entities: b.entities,
        groups: (b.entities / 20).max(1),
        concurrency: b.concurrency,
        duration: b.duration,
        reads: b.reads,
        value_bytes: b.value_bytes,
        rate: b.rate,
        json: true,
    }
}

/// n1 pinned to its core and, when the mode journals, n2 on the others:
/// their processes and base URLs.
async fn start_nodes(
    b: &OverheadBench,
    mode: Mode,
    dir: &Path,
    others: &str,
) -> anyhow::Result<(Proc, Option<Proc>, String, String)> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let root = format!("/northwest/bench-overhead-{stamp}");
    let topic = format!("bench-overhead-{stamp}");
    let journal = mode != Mode::Baseline;
    let (p1, p2) = (free_port()?, free_port()?);
    let coalesce_ms = if mode == Mode::JournalingEager { 0 } else { 2 };
    let write = |name: &str, port, journal, apply| -> anyhow::Result<PathBuf> {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(
            &path,
            node_toml(
                name,
                dir,
                port,
                b,
                &root,
                &topic,
                journal,
                apply,
                coalesce_ms,
            ),
        )?;
        Ok(path)
    };
    let c1 = write("n1", p1, journal, false)?;
    let n1_base = format!("http://127.0.0.1:{p1}");
    let n1 = spawn_pinned(
        &b.n1_core.to_string(),
        &["node", "--config", &c1.to_string_lossy()],
        &dir.join("n1.log"),
    )?;
    wait_healthy(&n1_base, &dir.join("n1.log")).await?;
    let n2_base = format!("http://127.0.0.1:{p2}");
    let _n2 = if journal {
        let c2 = write("n2", p2, false, true)?;
        let n2 = spawn_pinned(
            others,
            &["node", "--config", &c2.to_string_lossy()],
            &dir.join("n2.log"),
        )?;
        wait_healthy(&n2_base, &dir.join("n2.log")).await?;
        Some(n2)
    } else {
        None
    };
    Ok((n1, _n2, n1_base, n2_base))
}

/// One mode: fresh n1 (and n2), preload, warm up, measure.
async fn one_mode(
    b: &OverheadBench,
    mode: Mode,
    dir: &Path,
    others: &str,
    tag: &str,
) -> anyhow::Result<serde_json::Value> {
    let dir = dir.join(tag);
    std::fs::create_dir_all(&dir)?;
    let (n1, _n2, n1_base, n2_base) = start_nodes(b, mode, &dir, others).await?;
    let a = mixed_args(b, &n1_base);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(b.concurrency * 2)
        .build()?;
    preload(&client, &a, b.entities).await?;
    let orchestrator = if mode == Mode::Migrating {
        Some(start_migration(b, others, &dir, &n1_base, &n2_base)?)
    } else {
        None
    };
    measure(b, &client, &a, b.duration / 5).await;
    let cpu0 = cpu_seconds(n1.pid())?;
    let (tally, elapsed) = measure(b, &client, &a, b.duration).await;
    let cpu = cpu_seconds(n1.pid())? - cpu0;
    let mut summary = tally.summary(elapsed);
    let issued = tally.issued.load(Ordering::Relaxed).max(1);
    summary["n1_cpu_seconds"] = serde_json::json!(cpu);
    summary["n1_cpu_ms_per_request"] = serde_json::json!(cpu * 1000.0 / issued as f64);
    summary["mode"] = serde_json::json!(mode.tag());
    summary["run"] = serde_json::json!(tag);
    if let Some(mut o) = orchestrator {
        // The migration must have been streaming for the whole window.
        let still = o.child.try_wait()?.is_none();
        summary["migration_ran_throughout"] = serde_json::json!(still);
    }
    Ok(summary)
}

pub async fn run(b: OverheadBench) -> anyhow::Result<()> {
    let modes = b
        .modes
        .split(',')
        .map(Mode::parse)
        .collect::<anyhow::Result<Vec<_>>>()?;
    if !modes.contains(&Mode::Baseline) || b.repeats == 0 {
        bail!(
            "--modes must include baseline (every cost is against it) and --repeats must be >= 1"
        );
    }
    let others = other_cores(b.n1_core)?;
    let me = std::process::id();
    pin(me, &others)?;
    let stack = stack_pids();
    for pid in &stack {
        pin(*pid, &others)?;
    }
    say!(
        "bench overhead: n1 pinned to core {}; this load generator, n2, the orchestrator and {} broker/ZooKeeper JVM(s) pinned to cores {others} (taskset -a). Open loop at {} req/s ({}% reads, {} B values) for {:?} per run, latency from each request's due time; {} round(s) of {}",
        b.n1_core,
        stack.len(),
        b.rate,
        (b.reads * 100.0) as u32,
        b.value_bytes,
        b.duration,
        b.repeats,
        b.modes
    );
    let dir = tempfile::tempdir()?;
    let mut runs = Vec::new();
    for round in 0..b.repeats {
        for &mode in &modes {
            let tag = format!("{}-{round}", mode.tag());
            eprintln!("round {}/{}: {} ...", round + 1, b.repeats, mode.tag());
            runs.push(one_mode(&b, mode, dir.path(), &others, &tag).await?);
        }
    }
    // Give the stack its cores back.
    let all = format!("0-{}", std::thread::available_parallelism()?.get() - 1);
    for pid in &stack {
        let _ = pin(*pid, &all);
    }
    let tags: Vec<&str> = modes.iter().map(|m| m.tag()).collect();
    let rows = report::summarize(&runs, &tags);
    record(serde_json::json!({
        "table": "n1's own cost, n1 pinned, modes interleaved",
        "rate": b.rate, "reads": b.reads, "value_bytes": b.value_bytes,
        "seconds": b.duration.as_secs_f64(), "repeats": b.repeats, "n1_core": b.n1_core,
        "other_cores": others, "modes": rows, "runs": runs,
    }));
    if json_mode() {
        return Ok(());
    }
    report::print_table(&rows);
    say!(
        "\nmedians of {} interleaved runs each; the baseline's spread is this run's noise; reproduce with: northwest bench overhead --rate {} --duration {}s --repeats {} --modes {}",
        b.repeats,
        b.rate,
        b.duration.as_secs(),
        b.repeats,
        b.modes
    );
    Ok(())
}
