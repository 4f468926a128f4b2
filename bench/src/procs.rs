//! Node processes for the benches that measure a process: spawned from
//! this binary, pinned to cores (taskset), watched through `/proc`, and
//! stopped (SIGTERM, then SIGKILL after 20 s) when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Cores other than n1's, as a taskset list.
pub(crate) fn other_cores(n1: usize) -> anyhow::Result<String> {
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
pub(crate) fn pin(pid: u32, cores: &str) -> anyhow::Result<()> {
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
pub(crate) fn stack_pids() -> Vec<u32> {
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
pub(crate) fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
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

pub(crate) struct Proc {
    pub(crate) child: Child,
}

impl Proc {
    pub(crate) fn pid(&self) -> u32 {
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

pub(crate) fn spawn_pinned(cores: &str, args: &[&str], log: &Path) -> anyhow::Result<Proc> {
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

pub(crate) async fn wait_healthy(base: &str, log: &Path) -> anyhow::Result<()> {
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

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
