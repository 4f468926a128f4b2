//! `northwest bench overhead`: what journaling and a migration cost n1 itself.
//!
//! n1 runs as its own process pinned (taskset) to one core; everything else
//! (this load generator, n2, the orchestrator, the broker and ZooKeeper) is
//! pinned to the other cores, identically in every mode. Load is open-loop at
//! a fixed offered rate, latency counted from when each request was due
//! (HDR histogram, p50 / p99 / p99.9), and n1's CPU time per request is read
//! from `/proc/<pid>/stat`. Modes run one after another in one invocation:
//! baseline (journaling off), journaling (n2 applying), migrating (a
//! migration's snapshot streaming throughout the window), and baseline again,
//! whose difference from the first baseline is the run's noise.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::common::{json_mode, record, say};
use crate::loadgen::{drive, mixed_op, put_sample, LoadgenArgs, Tally};

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
    Migrating,
}

/// Cores other than n1's, as a taskset list.
fn other_cores(n1: usize) -> anyhow::Result<String> {
    let n = std::thread::available_parallelism()?.get();
    if n < 2 || n1 >= n {
        bail!("isolation needs 2 or more cores and --n1-core below {n}");
    }
    Ok((0..n)
        .filter(|c| *c != n1)
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(","))
}

/// Pins every thread of `pid` to `cores` (taskset -a).
fn pin(pid: u32, cores: &str) -> anyhow::Result<()> {
    let ok = Command::new("taskset")
        .args(["-a", "-p", "-c", cores, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .context("taskset (util-linux) is needed for pinning")?
        .success();
    if !ok {
        bail!("taskset could not pin pid {pid} to cores {cores}");
    }
    Ok(())
}

/// The broker's and ZooKeeper's pids (the dev stack's JVMs).
fn stack_pids() -> Vec<u32> {
    let mut out = Vec::new();
    for pat in ["QuorumPeerMain", "kafka.Kafka"] {
        if let Ok(o) = Command::new("pgrep").args(["-f", pat]).output() {
            out.extend(
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter_map(|l| l.trim().parse::<u32>().ok()),
            );
        }
    }
    out
}

/// utime + stime of `pid` in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    // CLK_TCK is 100 on Linux x86-64 and arm64.
    Ok(ticks / 100.0)
}

struct Proc {
    child: Child,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_pinned(cores: &str, args: &[&str], log: &Path) -> anyhow::Result<Proc> {
    let exe = std::env::current_exe()?;
    let logf = std::fs::File::create(log)?;
    let child = Command::new("taskset")
        .args(["-c", cores])
        .arg(exe)
        .args(args)
        .env("NORTHWEST_LOG", "warn")
        .stdout(logf.try_clone()?)
        .stderr(logf)
        .spawn()
        .context("spawning a pinned northwest process (needs taskset)")?;
    Ok(Proc { child })
}

async fn wait_healthy(base: &str, log: &Path) -> anyhow::Result<()> {
    let c = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = c.get(format!("{base}/healthz")).send().await {
            if r.status() == 200 {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{base} not healthy after 60 s; see {}", log.display())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
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
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let root = format!("/northwest/bench-overhead-{stamp}");
    let topic = format!("bench-overhead-{stamp}");
    let journal = mode != Mode::Baseline;
    let (p1, p2) = (free_port()?, free_port()?);
    let write = |name: &str, port, journal, apply| -> anyhow::Result<PathBuf> {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(
            &path,
            node_toml(name, &dir, port, b, &root, &topic, journal, apply),
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
    summary["mode"] = serde_json::json!(tag);
    if let Some(mut o) = orchestrator {
        // The migration must have been streaming for the whole window.
        let still = o.child.try_wait()?.is_none();
        summary["migration_ran_throughout"] = serde_json::json!(still);
    }
    Ok(summary)
}

/// The modes side by side, each against the baseline.
fn print_table(rows: &[serde_json::Value]) {
    let f = |r: &serde_json::Value, k: &str| r["latency_ms"][k].as_f64().unwrap_or(0.0);
    let cpu = |r: &serde_json::Value| r["n1_cpu_ms_per_request"].as_f64().unwrap_or(0.0);
    println!(
        "\n{:<15} {:>9} {:>8} {:>8} {:>8} {:>8} {:>12} {:>10} {:>10} {:>10} {:>7}",
        "mode",
        "achieved",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "mean ms",
        "n1 CPU ms/req",
        "p50 vs b",
        "p99 vs b",
        "CPU vs b",
        "failed"
    );
    for r in rows {
        println!(
            "{:<15} {:>9.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>12.4} {:>+9.1}% {:>+9.1}% {:>+9.1}% {:>7}{}",
            r["mode"].as_str().unwrap_or(""),
            r["rate_per_s"].as_f64().unwrap_or(0.0),
            f(r, "p50"),
            f(r, "p99"),
            f(r, "p99_9"),
            f(r, "mean"),
            cpu(r),
            r["vs_baseline"]["p50_pct"].as_f64().unwrap_or(0.0),
            r["vs_baseline"]["p99_pct"].as_f64().unwrap_or(0.0),
            r["vs_baseline"]["cpu_per_request_pct"].as_f64().unwrap_or(0.0),
            r["failed"],
            match r.get("migration_ran_throughout") {
                Some(serde_json::Value::Bool(false)) => "  (migration ended inside the window)",
                _ => "",
            }
        );
    }
}

pub async fn run(b: OverheadBench) -> anyhow::Result<()> {
    let others = other_cores(b.n1_core)?;
    let me = std::process::id();
    pin(me, &others)?;
    let stack = stack_pids();
    for pid in &stack {
        pin(*pid, &others)?;
    }
    {
        say!(
            "bench overhead: n1 pinned to core {}; this load generator, n2, the orchestrator and {} broker/ZooKeeper JVM(s) pinned to cores {others} (taskset -a). Open loop at {} req/s ({}% reads, {} B values) for {:?} per mode, latency from each request's due time",
            b.n1_core,
            stack.len(),
            b.rate,
            (b.reads * 100.0) as u32,
            b.value_bytes,
            b.duration
        );
    }
    let dir = tempfile::tempdir()?;
    let mut rows = Vec::new();
    for (mode, tag) in [
        (Mode::Baseline, "baseline"),
        (Mode::Journaling, "journaling"),
        (Mode::Migrating, "migrating"),
        (Mode::Baseline, "baseline-again"),
    ] {
        eprintln!("mode {tag} ...");
        rows.push(one_mode(&b, mode, dir.path(), &others, tag).await?);
    }
    // Give the stack its cores back.
    let all = format!("0-{}", std::thread::available_parallelism()?.get() - 1);
    for pid in &stack {
        let _ = pin(*pid, &all);
    }
    let f = |r: &serde_json::Value, k: &str| r["latency_ms"][k].as_f64().unwrap_or(0.0);
    let cpu = |r: &serde_json::Value| r["n1_cpu_ms_per_request"].as_f64().unwrap_or(0.0);
    let base = rows[0].clone();
    let pct = |x: f64, y: f64| 100.0 * (x / y.max(1e-9) - 1.0);
    for r in rows.iter_mut() {
        let ratio = serde_json::json!({
            "p50_pct": pct(f(r, "p50"), f(&base, "p50")),
            "p99_pct": pct(f(r, "p99"), f(&base, "p99")),
            "cpu_per_request_pct": pct(cpu(r), cpu(&base)),
        });
        r["vs_baseline"] = ratio;
    }
    record(serde_json::json!({
        "table": "n1's own cost, n1 pinned",
        "rate": b.rate, "reads": b.reads, "value_bytes": b.value_bytes,
        "seconds": b.duration.as_secs_f64(), "n1_core": b.n1_core,
        "other_cores": others, "modes": rows,
    }));
    if json_mode() {
        return Ok(());
    }
    print_table(&rows);
    say!("\nbaseline-again vs baseline is this run's noise; reproduce with: northwest bench overhead --rate {} --duration {}s", b.rate, b.duration.as_secs());
    Ok(())
}
