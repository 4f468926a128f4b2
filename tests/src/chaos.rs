//! `northwest-chaos`: a seeded fault campaign. Each run migrates a namespace
//! from n1 to n2 under mixed load, then (by the seed's [`Scenario`]) rolls
//! it back to n1 or moves it on to n3, while a schedule drawn from the seed
//! kills -9 and restarts n1, n2 and the orchestrator, restarts the broker
//! and ZooKeeper, and stalls the orchestrator while n1 is fenced so the
//! fence expires; n3 follows the journal throughout. Then the history
//! checker holds the final primary, and every other node once it caught
//! up, to everything the clients were told. A failing run prints its seed and schedule: `--seed S --runs 1`
//! replays it.
//!
//! The campaign runs on a stack of its own (ports `--zk-port` and
//! `--kafka-port`), so the faults never touch the dev stack.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::history::{self, History, Op, Outcome, Report};
use crate::node_proc::{node_toml_at, NodeProc};
use crate::stack::{bin_path, free_port, OwnStack};

#[derive(clap::Args, Debug, Clone)]
pub struct ChaosArgs {
    /// First seed; run i uses seed + i. Random when not given (and printed).
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long, default_value_t = 1)]
    pub runs: u64,
    /// Faults per run.
    #[arg(long, default_value_t = 4)]
    pub faults: usize,
    /// Seconds over which a run's faults are spread.
    #[arg(long, default_value_t = 20)]
    pub window_s: u64,
    /// Entities written before the migration starts.
    #[arg(long, default_value_t = 1000)]
    pub entities: u64,
    /// The orchestrator's snapshot rate (rows/s): slow enough that the
    /// faults land inside the migration rather than after it.
    #[arg(long, default_value_t = 100)]
    pub snapshot_rate: u64,
    /// Concurrent load clients.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// A run whose migration is not done this long after the fault window fails.
    #[arg(long, default_value_t = 240)]
    pub finish_timeout_s: u64,
    #[arg(long, default_value_t = 22181)]
    pub zk_port: u16,
    #[arg(long, default_value_t = 29092)]
    pub kafka_port: u16,
    /// The private stack's PostgreSQL (n2 and the rebuilt n5 keep their
    /// tables there on every other two seeds).
    #[arg(long, default_value_t = 25433)]
    pub pg_port: u16,
    /// Append one JSON line per run to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Keep each failed run's directory (node logs, orchestrator output) here.
    #[arg(long)]
    pub keep: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    KillN1,
    KillN2,
    KillOrchestrator,
    RestartBroker,
    RestartZookeeper,
    /// Stop the orchestrator (SIGSTOP) while n1 is fenced, past the fence.
    ExpireFence,
    /// Stop the broker (SIGSTOP) past the nodes' `message.timeout.ms`:
    /// deliveries hang rather than fail fast, and a relay that gave up on a
    /// record would deliver later ones of its group before it.
    PauseBroker,
    /// Stop n2 (SIGSTOP) past its ZooKeeper session: its leases and name
    /// claim expire while it believes it holds them.
    StopN2,
    /// n2's answers to promotions are lost and demotions never reach it
    /// (n1 reaches n2 through a fault proxy): the cutover cannot learn
    /// whether n2 took the namespace.
    LosePromote,
    /// kill -9 of PostgreSQL (postmaster and backends), started again: on
    /// runs whose n2 keeps its tables there.
    RestartPostgres,
}

const FAULTS: [Fault; 10] = [
    Fault::RestartPostgres,
    Fault::LosePromote,
    Fault::StopN2,
    Fault::KillN1,
    Fault::KillN2,
    Fault::KillOrchestrator,
    Fault::RestartBroker,
    Fault::RestartZookeeper,
    Fault::ExpireFence,
    Fault::PauseBroker,
];

/// The nodes' delivery timeout: a broker pause outlasts it.
const MESSAGE_TIMEOUT_MS: u64 = 2000;

/// The nodes' ZooKeeper session timeout (`node_toml_at`): a stopped n2
/// outlasts it.
const SESSION_TIMEOUT_MS: u64 = 4000;

/// Whether n2 runs marker GC with retention in seconds in run `seed`:
/// four seeds on, four off, so every [`Scenario`] meets both.
fn marker_gc_on(seed: u64) -> bool {
    (seed / 4).is_multiple_of(2)
}

/// Whether run `seed` ends with a rebuild of a fresh node from the topics:
/// eight seeds on, eight off, so every [`Scenario`] meets it with marker GC
/// on and off.
fn rebuild_on(seed: u64) -> bool {
    !(seed / 8).is_multiple_of(2)
}

/// Whether n2 (and a rebuilt n5) keep their tables in PostgreSQL in run
/// `seed`: bit 1 xor bit 4 of the seed, so every [`Scenario`] (bits 0-1)
/// and both marker GC settings (bit 2) meet both engines.
pub fn postgres_on(seed: u64) -> bool {
    ((seed >> 1) ^ (seed >> 4)) & 1 == 1
}

/// The migrations run with the closed-loop throttle (`--max-source-p99-ms
/// 100`: the stream and n2's loader slow while faults push n1's p99 up) on
/// every other seed, by bit 0 xor bit 2, so every scenario meets it.
pub fn throttled_on(seed: u64) -> bool {
    ((seed >> 2) ^ seed) & 1 == 1
}

/// n2's marker GC: markers kept 0.72 s past the journal it is told it has
/// (0.5 s), a pass every second; goes in its `[journal]` section.
const N2_MARKER_GC: &str =
    "retention_ms = 500\n[store]\nmarker_retention_hours = 0.0002\nmarker_gc_interval_s = 1\n";

/// A node's tables in a fresh schema of the private stack's PostgreSQL,
/// after `extra` (which may have opened `[store]` already).
fn on_postgres(stack: &OwnStack, name: &str, seed: u64, extra: &str) -> String {
    let schema = crate::stack::pg_schema(&format!("chaos_s{seed}_{name}"));
    let opened = extra.contains("[store]\n");
    let (before, after) = match extra.find("\n[kafka]") {
        Some(i) => extra.split_at(i),
        None => (extra, ""),
    };
    format!("{before}{}{after}", stack.pg_store_toml(&schema, !opened))
}

/// What a run does after its first migration, by seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// n1 -> n2; n3 a follower.
    Migrate,
    /// n1 -> n2, then `--rollback` to n1; n3 a follower.
    Rollback,
    /// n1 -> n2, then n2 -> n3 (a chained hop).
    Chain,
    /// n1 -> n2 -> n3, then back to n1 (the source, which followed).
    Round,
}

impl Scenario {
    pub fn of(seed: u64) -> Scenario {
        match seed % 4 {
            0 => Scenario::Migrate,
            1 => Scenario::Rollback,
            2 => Scenario::Chain,
            _ => Scenario::Round,
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Planned {
    pub at_ms: u64,
    pub fault: Fault,
    /// How long the victim stays down.
    pub down_ms: u64,
}

/// The schedule of run `seed`: the same seed gives the same schedule.
pub fn schedule(seed: u64, faults: usize, window_ms: u64) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut s: Vec<Planned> = (0..faults)
        .map(|_| Planned {
            at_ms: rng.random_range(500..window_ms.max(1000)),
            fault: FAULTS[rng.random_range(0..FAULTS.len())],
            down_ms: rng.random_range(200..3000),
        })
        .collect();
    s.sort_by_key(|p| p.at_ms);
    s
}

#[derive(Debug, serde::Serialize)]
pub struct RunReport {
    pub seed: u64,
    pub schedule: Vec<Planned>,
    /// What each fault did (`injected`, or why it had nothing to hit).
    pub faults: Vec<(Fault, String)>,
    pub orchestrator_runs: u64,
    pub migration_seconds: f64,
    pub check: Report,
    pub dead_lettered: u64,
    pub halted_partitions: u64,
    pub error: Option<String>,
    pub seconds: f64,
    /// n2 collected delete markers (retention in seconds, a pass every
    /// second) during the run: every second seed.
    pub marker_gc: bool,
    pub scenario: Scenario,
    /// After the scenario, a fresh n5 was rebuilt from the topics alone
    /// (`migrate --from-topics`) and checked like every other copy.
    pub rebuild: bool,
    /// n2 (and n5) kept their tables in PostgreSQL.
    pub postgres: bool,
    /// The migrations ran with the throttle ([`throttled_on`]).
    pub throttled: bool,
}

impl RunReport {
    pub fn ok(&self) -> bool {
        self.error.is_none()
            && self.check.violations() == 0
            && self.dead_lettered == 0
            && self.halted_partitions == 0
    }
}

/// Runs the campaign; `Err` names every failing seed.
pub async fn run(a: ChaosArgs) -> Result<Vec<RunReport>, String> {
    let first = a
        .seed
        .unwrap_or_else(|| rand::rng().random_range(0..1_000_000));
    eprintln!(
        "chaos: seeds {first}..{} ({} runs); starting a private stack on ZooKeeper :{} / Kafka :{}",
        first + a.runs - 1,
        a.runs,
        a.zk_port,
        a.kafka_port
    );
    let (zk_port, kafka_port) = (a.zk_port, a.kafka_port);
    let pg_port = a.pg_port;
    let stack = tokio::task::spawn_blocking(move || {
        OwnStack::start_with_pg(1, zk_port, kafka_port, Some(pg_port))
    })
    .await
    .map_err(|e| format!("the chaos stack did not start: {e}"))?;
    let stack = Arc::new(stack);
    let bin = bin_path("northwest");
    let copy = stack.dir.path().join("northwest");
    std::fs::copy(&bin, &copy).map_err(|e| format!("copying {}: {e}", bin.display()))?;
    crate::stack::use_binary(copy);
    // Ctrl-C stops the campaign with its stack and processes, not leaving
    // a broker and ZooKeeper running on the chaos ports.
    {
        let s = stack.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("chaos: interrupted; stopping the private stack");
                let _ = std::process::Command::new("pkill")
                    .arg("-f")
                    .arg(s.dir.path().join("northwest"))
                    .status();
                s.stack(&["down"]);
                std::process::exit(130);
            }
        });
    }
    let mut reports = Vec::new();
    for i in 0..a.runs {
        let seed = first + i;
        let r = one_run(&a, seed, stack.clone()).await;
        eprintln!("run {}/{} {}", i + 1, a.runs, summary_line(&r));
        if !r.ok() {
            eprintln!(
                "  FAILED; replay with: northwest-chaos --seed {seed} --runs 1 --faults {} --window-s {} --entities {} --snapshot-rate {} --clients {} --finish-timeout-s {}\n  schedule: {}\n  error: {:?}\n  examples: {:#?}",
                a.faults,
                a.window_s,
                a.entities,
                a.snapshot_rate,
                a.clients,
                a.finish_timeout_s,
                serde_json::to_string(&r.schedule).unwrap_or_default(),
                r.error,
                r.check.examples
            );
        }
        if let Some(p) = &a.json {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
            {
                let _ = writeln!(f, "{}", serde_json::to_string(&r).unwrap_or_default());
            }
        }
        reports.push(r);
        // The stack must be whole again before the next run.
        let s = stack.clone();
        let up = tokio::task::spawn_blocking(move || s.stack(&["up"]))
            .await
            .map_err(|e| e.to_string())?;
        if !up {
            stack.stack(&["down"]);
            return Err(format!(
                "the chaos stack did not come back after run {}; see {}",
                i + 1,
                stack.dir.path().join("logs").display()
            ));
        }
    }
    println!("{}", table(&reports));
    // Down now: the Ctrl-C task holds the stack too, and a failed campaign
    // exits without dropping it.
    let s = stack.clone();
    let _ = tokio::task::spawn_blocking(move || s.stack(&["down"])).await;
    let failed: Vec<u64> = reports.iter().filter(|r| !r.ok()).map(|r| r.seed).collect();
    if failed.is_empty() {
        Ok(reports)
    } else {
        Err(format!("chaos runs failed for seeds {failed:?}"))
    }
}

fn summary_line(r: &RunReport) -> String {
    let c = &r.check;
    format!(
        "seed {} ({:?}): {} faults, {} orchestrator runs, {:.0} s; writes acked {} (refused {}, unknown {}), reads {}; lost {} duplicated {} divergent {} resurrected {} stale reads {}; dead-lettered {}, halted {} -> {}",
        r.seed,
        r.scenario,
        r.faults.len(),
        r.orchestrator_runs,
        r.seconds,
        c.acked_writes,
        c.refused_writes,
        c.unknown_writes,
        c.reads_checked,
        c.lost,
        c.duplicated,
        c.divergent,
        c.resurrected,
        c.stale_reads,
        r.dead_lettered,
        r.halted_partitions,
        if r.ok() { "ok" } else { "FAILED" }
    )
}

/// The soak table docs/verification.md records: faults by kind and the checker's totals.
pub fn table(reports: &[RunReport]) -> String {
    let mut by_kind: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in reports {
        for (f, what) in &r.faults {
            let kind = serde_json::to_value(f)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string();
            *by_kind.entry((kind, what.clone())).or_default() += 1;
        }
    }
    let sum = |f: fn(&RunReport) -> u64| reports.iter().map(f).sum::<u64>();
    let mut out = format!(
        "| runs | passed | acked writes checked | reads checked | lost | duplicated | divergent | resurrected | stale reads | dead-lettered | halted |\n|---|---|---|---|---|---|---|---|---|---|---|\n| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n\n| fault | outcome | count |\n|---|---|---|\n",
        reports.len(),
        reports.iter().filter(|r| r.ok()).count(),
        sum(|r| r.check.acked_writes),
        sum(|r| r.check.reads_checked),
        sum(|r| r.check.lost),
        sum(|r| r.check.duplicated),
        sum(|r| r.check.divergent),
        sum(|r| r.check.resurrected),
        sum(|r| r.check.stale_reads),
        sum(|r| r.dead_lettered),
        sum(|r| r.halted_partitions),
    );
    for ((kind, what), n) in by_kind {
        out.push_str(&format!("| {kind} | {what} | {n} |\n"));
    }
    out
}

/// n1, n2 and the orchestrator of one run, shared with the fault injector.
struct World {
    n1: Mutex<NodeProc>,
    n2: Mutex<NodeProc>,
    orchestrator: Mutex<Option<u32>>,
    migration_done: AtomicBool,
    stack: Arc<OwnStack>,
    /// n2 keeps its tables in the stack's PostgreSQL.
    postgres: bool,
    /// The migrations run throttled ([`throttled_on`]).
    throttled: bool,
    /// In front of n2 for n1 and the orchestrator.
    n2_proxy: crate::fault_proxy::FaultProxy,
}

async fn one_run(a: &ChaosArgs, seed: u64, stack: Arc<OwnStack>) -> RunReport {
    let t0 = Instant::now();
    let plan = schedule(seed, a.faults, a.window_s * 1000);
    let mut report = RunReport {
        seed,
        schedule: plan.clone(),
        faults: Vec::new(),
        orchestrator_runs: 0,
        migration_seconds: 0.0,
        check: Report::default(),
        dead_lettered: 0,
        halted_partitions: 0,
        error: None,
        seconds: 0.0,
        marker_gc: marker_gc_on(seed),
        scenario: Scenario::of(seed),
        rebuild: rebuild_on(seed),
        postgres: postgres_on(seed),
        throttled: throttled_on(seed),
    };
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            report.error = Some(format!("tempdir: {e}"));
            return report;
        }
    };
    let a2 = a.clone();
    let path = dir.path().to_path_buf();
    let inner = tokio::spawn(async move { drive(&a2, seed, stack, &path, plan).await });
    match inner.await {
        Ok((faults, runs, mig_s, check, dlq, halted, err)) => {
            report.faults = faults;
            report.orchestrator_runs = runs;
            report.migration_seconds = mig_s;
            report.check = check;
            report.dead_lettered = dlq;
            report.halted_partitions = halted;
            report.error = err;
        }
        Err(e) => report.error = Some(format!("the run panicked: {e}")),
    }
    if let Some(keep) = a.keep.as_ref().filter(|_| !report.ok()) {
        let to = keep.join(format!("seed-{seed}"));
        let _ = std::fs::create_dir_all(&to);
        let _ = std::process::Command::new("cp")
            .arg("-r")
            .arg(dir.path().join("."))
            .arg(&to)
            .status();
    }
    report.seconds = t0.elapsed().as_secs_f64();
    report
}

type Drove = (
    Vec<(Fault, String)>,
    u64,
    f64,
    Report,
    u64,
    u64,
    Option<String>,
);

async fn drive(
    a: &ChaosArgs,
    seed: u64,
    stack: Arc<OwnStack>,
    dir: &Path,
    plan: Vec<Planned>,
) -> Drove {
    let addrs = stack.addrs();
    let root = format!(
        "/northwest-chaos/{}",
        crate::stack::unique(&format!("s{seed}"))
    );
    let topic = crate::stack::unique(&format!("chaos-s{seed}"));
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let (d, r, t) = (dir.to_path_buf(), root.clone(), topic.clone());
    let a1 = addrs.clone();
    let scenario = Scenario::of(seed);
    let stack_for_nodes = stack.clone();
    let started = tokio::task::spawn_blocking(move || {
        let kafka = format!("\n[kafka]\n\"message.timeout.ms\" = \"{MESSAGE_TIMEOUT_MS}\"\n");
        let mut n2_extra = if marker_gc_on(seed) {
            format!("{N2_MARKER_GC}{kafka}")
        } else {
            kafka.clone()
        };
        if postgres_on(seed) {
            n2_extra = on_postgres(&stack_for_nodes, "n2", seed, &n2_extra);
        }
        let n1 = NodeProc::start(&d, "n1", &node_toml_at(&a1, "n1", &d, p1, &r, &t, &kafka));
        let n2 = NodeProc::start(
            &d,
            "n2",
            &node_toml_at(&a1, "n2", &d, p2, &r, &t, &n2_extra),
        );
        let n3 = NodeProc::start(&d, "n3", &node_toml_at(&a1, "n3", &d, p3, &r, &t, &kafka));
        (n1, n2, n3)
    })
    .await;
    let (n1, n2, mut n3) = match started {
        Ok(n) => n,
        Err(e) => {
            return (
                vec![],
                0,
                0.0,
                Report::default(),
                0,
                0,
                Some(format!("nodes did not start: {e}")),
            )
        }
    };
    let (base1, base2, base3) = (n1.base.clone(), n2.base.clone(), n3.base.clone());
    let n2_proxy = crate::fault_proxy::FaultProxy::start(base2.trim_start_matches("http://")).await;
    // n1 forwards to n2, and the orchestrator promotes it, through the proxy.
    let via2 = format!("http://{}", n2_proxy.addr);
    let world = Arc::new(World {
        n1: Mutex::new(n1),
        n2: Mutex::new(n2),
        orchestrator: Mutex::new(None),
        migration_done: AtomicBool::new(false),
        stack: stack.clone(),
        postgres: postgres_on(seed),
        throttled: throttled_on(seed),
        n2_proxy,
    });
    let history = Arc::new(History::default());
    if let Err(e) = preload(&base1, a.entities, &history).await {
        return (vec![], 0, 0.0, Report::default(), 0, 0, Some(e));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..a.clients {
        clients.push(tokio::spawn(client(
            base1.clone(),
            c,
            seed,
            history.clone(),
            stop.clone(),
        )));
    }
    let mig_t0 = Instant::now();
    let orchestrator = tokio::spawn(orchestrate(
        world.clone(),
        dir.to_path_buf(),
        base1.clone(),
        via2,
        addrs.clone(),
        Duration::from_secs(a.window_s + a.finish_timeout_s),
        a.snapshot_rate,
        (scenario, base3.clone()),
    ));
    let faults = inject(world.clone(), &plan, &base1).await;
    let (runs, err) = orchestrator
        .await
        .unwrap_or_else(|e| (0, Some(format!("orchestrator driver panicked: {e}"))));
    let mig_s = mig_t0.elapsed().as_secs_f64();
    // Load keeps going through n1's proxy after the switch for a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let mut error = err.or_else(|| {
        faults
            .iter()
            .find(|(_, what)| what.contains(" FAILED"))
            .map(|(f, what)| format!("{f:?}: {what}"))
    });
    let primary = match scenario {
        Scenario::Migrate => &base2,
        Scenario::Rollback => &base1,
        Scenario::Chain => &base3,
        Scenario::Round => &base1,
    };
    let (check, dlq, halted) = if error.is_none() {
        match final_state(primary, &history.keys()).await {
            Ok(state) => match apply_health(&base2, &addrs.1, &topic).await {
                Ok((dlq, halted)) => {
                    let check = history::check(&history.events(), &state);
                    let nodes = [&base1, &base2, &base3];
                    let others = nodes.into_iter().filter(|b| *b != primary);
                    error = followers_hold(others, primary, &history).await.err();
                    if error.is_none() && rebuild_on(seed) {
                        let at = (dir, root.as_str(), topic.as_str());
                        let pg = postgres_on(seed).then_some((&*stack, seed));
                        error = rebuild(&addrs, at, primary, &history, pg).await.err();
                    }
                    (check, dlq, halted)
                }
                Err(e) => {
                    error = Some(e);
                    (Report::default(), 0, 0)
                }
            },
            Err(e) => {
                error = Some(e);
                (Report::default(), 0, 0)
            }
        }
    } else {
        (Report::default(), 0, 0)
    };
    let w = world.clone();
    let _ = tokio::task::spawn_blocking(move || {
        w.n1.lock().unwrap().kill9();
        w.n2.lock().unwrap().kill9();
    })
    .await;
    n3.kill9();
    delete_topics(&addrs.1, &topic).await;
    (faults, runs, mig_s, check, dlq, halted, error)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("static client config")
}

async fn preload(base: &str, n: u64, h: &History) -> Result<(), String> {
    let c = http();
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut i, mut attempt) = (0, 0u64);
    while i < n {
        if Instant::now() > deadline {
            return Err(format!(
                "preload: only {i} of {n} entities acknowledged in 120 s"
            ));
        }
        attempt += 1;
        let key = format!("Pre:{i}");
        let value = format!("pre-{i}-a{attempt}").into_bytes();
        let start = h.now();
        let outcome = write(
            c.put(format!("{base}/v1/ns/app/e/{key}"))
                .body(value.clone()),
        )
        .await;
        let ok = matches!(outcome, Outcome::Acked(_));
        h.record(usize::MAX, Op::Put { key, value }, start, outcome);
        // A preload write that failed for a moment is retried under a new value.
        if ok {
            i += 1;
        }
    }
    Ok(())
}

/// One load client: reads, puts, deletes and two-key transactions on a
/// small key space, every request and answer recorded.
async fn client(base: String, c: usize, seed: u64, h: Arc<History>, stop: Arc<AtomicBool>) {
    use base64::Engine as _;
    let http = http();
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1000).wrapping_add(c as u64));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (g, i, kind) = (
            rng.random_range(0..30u32),
            rng.random_range(0..5u32),
            rng.random_range(0..10u32),
        );
        let key = format!("Acct:{g}/Item:{i}");
        let value = format!("s{seed}c{c}n{n}").into_bytes();
        let url = format!("{base}/v1/ns/app/e/{key}");
        let start = h.now();
        let (op, outcome) = match kind {
            0..=3 => (Op::Read { key }, read(http.get(&url)).await),
            4 => (Op::Delete { key }, write(http.delete(&url)).await),
            5 | 6 => {
                let root = format!("Acct:{g}");
                let other = format!("Acct:{g}/Item:{}", (i + 1) % 5);
                let b64 = base64::engine::general_purpose::STANDARD.encode(&value);
                let body = serde_json::json!({"ops": [
                    {"op": "put", "key": key, "value_b64": b64},
                    {"op": "put", "key": root, "value_b64": b64},
                    {"op": "delete", "key": other},
                ]});
                let o = write(http.post(format!("{base}/v1/ns/app/txn")).json(&body)).await;
                (
                    Op::Txn {
                        puts: vec![key, root],
                        deletes: vec![other],
                        value,
                    },
                    o,
                )
            }
            _ => {
                let o = write(http.put(&url).body(value.clone())).await;
                (Op::Put { key, value }, o)
            }
        };
        h.record(c, op, start, outcome);
    }
}

/// A write's outcome as the client must class it.
async fn write(req: reqwest::RequestBuilder) -> Outcome {
    let r = match req.send().await {
        Ok(r) => r,
        // Never connected: nothing was sent.
        Err(e) if e.is_connect() => return Outcome::Refused(0),
        Err(e) => return Outcome::Unknown(e.to_string()),
    };
    let s = r.status().as_u16();
    match s {
        200 => match r.json::<serde_json::Value>().await {
            Ok(v) => match v["version"].as_u64() {
                Some(v) => Outcome::Acked(v),
                None => Outcome::Unknown(format!("200 without a version: {v}")),
            },
            Err(e) => Outcome::Unknown(format!("200, body lost: {e}")),
        },
        400..=499 => Outcome::Refused(s),
        _ => {
            let body = r.text().await.unwrap_or_default();
            // Refused before the commit: the outbox had no room.
            if s == 503 && body.contains("\"outbox_full\"") {
                Outcome::Refused(s)
            } else {
                Outcome::Unknown(format!("{s}: {body}"))
            }
        }
    }
}

async fn read(req: reqwest::RequestBuilder) -> Outcome {
    let r = match req.send().await {
        Ok(r) => r,
        Err(e) => return Outcome::Unknown(e.to_string()),
    };
    match r.status().as_u16() {
        404 => Outcome::Read(None),
        200 => {
            let v = r
                .headers()
                .get("etag")
                .and_then(|e| e.to_str().ok())
                .and_then(|e| e.trim_matches('"').parse::<u64>().ok());
            match (v, r.bytes().await) {
                (Some(v), Ok(b)) => Outcome::Read(Some((v, b.to_vec()))),
                _ => Outcome::Unknown("200 without an etag or body".into()),
            }
        }
        s => Outcome::Unknown(s.to_string()),
    }
}

/// Every node other than the primary, once it applied everything the
/// primary shipped, holds what the clients were told too.
async fn followers_hold(
    nodes: impl Iterator<Item = &String>,
    primary: &str,
    h: &History,
) -> Result<(), String> {
    for node in nodes {
        caught_up(primary, node).await?;
        // A node that forwards the namespace answers reads from its
        // primary: its own copy is compared by digest, which it always
        // computes locally.
        let (dp, dn) = (local_digest(primary).await?, local_digest(node).await?);
        if dp != dn {
            return Err(format!(
                "{node}'s own copy differs from the primary {primary}'s once caught up: {dn} vs {dp}"
            ));
        }
        let state = final_state(node, &h.keys()).await?;
        let c = history::check(&h.events(), &state);
        if c.violations() > 0 {
            return Err(format!(
                "{node} (not the primary) lost {} duplicated {} divergent {} resurrected {}: {:?}",
                c.lost, c.duplicated, c.divergent, c.resurrected, c.examples
            ));
        }
    }
    Ok(())
}

/// The count and digest of the node's own copy of the namespace.
async fn local_digest(node: &str) -> Result<String, String> {
    let url = format!("{node}/v1/ns/app/digest?local=true");
    let v: serde_json::Value = http()
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    match (v["count"].as_u64(), v["digest"].as_str()) {
        (Some(c), Some(d)) => Ok(format!("{c} entities {d}")),
        _ => Err(format!("GET {url}: no digest in {v}")),
    }
}

/// Waits (up to 60 s) until `primary` shipped its outbox and `node`
/// applied the journal to its end (by its apply loop, or an old primary's
/// reverse apply).
async fn caught_up(primary: &str, node: &str) -> Result<(), String> {
    let c = http();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = serde_json::Value::Null;
    while Instant::now() < deadline {
        let get = |b: &str| c.get(format!("{b}/v1/admin/status")).send();
        if let (Ok(p), Ok(n)) = (get(primary).await, get(node).await) {
            let p: serde_json::Value = p.json().await.unwrap_or_default();
            let n: serde_json::Value = n.json().await.unwrap_or_default();
            let applied = n["apply"]["caught_up"] == true || n["reverse_apply"]["lag_records"] == 0;
            if p["outbox_pending"] == 0 && applied {
                return Ok(());
            }
            last = n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "{node} did not catch up with {primary} in 60 s: {last}"
    ))
}

/// Rebuilds a fresh n5 from the topics alone (the newest complete image,
/// then every epoch after it) with the default comparison against the
/// routed primary, and holds it to everything the clients were told.
async fn rebuild(
    addrs: &(String, String),
    (dir, root, topic): (&Path, &str, &str),
    primary: &str,
    h: &History,
    postgres: Option<(&OwnStack, u64)>,
) -> Result<(), String> {
    let (a, d, r, t) = (
        addrs.clone(),
        dir.to_path_buf(),
        root.to_string(),
        topic.to_string(),
    );
    let mut extra = format!("\n[kafka]\n\"message.timeout.ms\" = \"{MESSAGE_TIMEOUT_MS}\"\n");
    if let Some((stack, seed)) = postgres {
        extra = on_postgres(stack, "n5", seed, &extra);
    }
    let n5 = tokio::task::spawn_blocking(move || {
        NodeProc::start(
            &d,
            "n5",
            &node_toml_at(&a, "n5", &d, free_port(), &r, &t, &extra),
        )
    })
    .await
    .map_err(|e| format!("rebuild: n5 did not start: {e}"))?;
    let base5 = n5.base.clone();
    let (zk, kafka) = addrs.clone();
    let out = dir.join("rebuild.json");
    let log = dir.join("rebuild.log");
    let ran = tokio::task::spawn_blocking({
        let (base5, out, log) = (base5.clone(), out.clone(), log.clone());
        move || -> std::io::Result<std::process::ExitStatus> {
            std::process::Command::new(bin_path("northwest"))
                .args(["migrate", "--from-topics", "--to", &base5])
                .args(["--namespace", "app", "--zk", &zk, "--brokers", &kafka])
                .args(["--json", "--quiet"])
                .env_remove("NW_ZK")
                .env_remove("NW_KAFKA")
                .stdout(std::fs::File::create(&out)?)
                .stderr(std::fs::File::create(&log)?)
                .status()
        }
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r.map_err(|e| e.to_string()));
    let result = async {
        let status = ran.map_err(|e| format!("rebuild: cannot run northwest migrate: {e}"))?;
        let report: serde_json::Value = std::fs::read_to_string(&out)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        if !status.success() || report["compare"]["equal"] != true {
            return Err(format!(
                "rebuild of n5 from the topics: {status}, report {report}, log {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ));
        }
        followers_hold([&base5].into_iter(), primary, h)
            .await
            .map_err(|e| format!("rebuild: {e}"))
    }
    .await;
    let mut n5 = n5;
    n5.kill9();
    result
}

/// Runs the scenario's migrations as an operator would, each again after
/// every failure or kill until it reports success; `(runs, error)`.
#[allow(clippy::too_many_arguments)]
async fn orchestrate(
    w: Arc<World>,
    dir: PathBuf,
    n1: String,
    n2: String,
    stack: (String, String),
    timeout: Duration,
    rate: u64,
    (scenario, n3): (Scenario, String),
) -> (u64, Option<String>) {
    let t0 = Instant::now();
    let first = ["--from", &n1, "--to", &n2];
    let (mut runs, err) = until_done(&w, &dir, &first, &stack, t0 + timeout, rate, "done").await;
    if err.is_some() {
        return (runs, err);
    }
    w.migration_done.store(true, Ordering::Relaxed);
    let rollback = vec!["--from", &n1, "--to", &n2, "--rollback"];
    let (on, back) = (
        vec!["--from", &n2, "--to", &n3],
        vec!["--from", &n3, "--to", &n1],
    );
    let then: Vec<(Vec<&str>, &str)> = match scenario {
        Scenario::Migrate => vec![],
        Scenario::Rollback => vec![(rollback, "rollback")],
        Scenario::Chain => vec![(on, "done")],
        Scenario::Round => vec![(on, "done"), (back, "done")],
    };
    for (args, expect) in then {
        let deadline = Instant::now() + timeout;
        let (more, err) = until_done(&w, &dir, &args, &stack, deadline, rate, expect).await;
        runs += more;
        if err.is_some() {
            return (runs, err);
        }
    }
    (runs, None)
}

/// Runs `northwest migrate ARGS` until it exits 0 with a report saying
/// `expect` (`done`: the phase; `rollback`: rolled back).
#[allow(clippy::too_many_arguments)]
async fn until_done(
    w: &World,
    dir: &Path,
    args: &[&str],
    (zk, kafka): &(String, String),
    deadline: Instant,
    rate: u64,
    expect: &str,
) -> (u64, Option<String>) {
    let mut runs = 0;
    let log = dir.join("migrate.log");
    loop {
        if Instant::now() > deadline {
            return (
                runs,
                Some(format!(
                    "migrate {args:?} did not succeed in time ({runs} orchestrator runs; see {})",
                    log.display()
                )),
            );
        }
        runs += 1;
        let out = dir.join(format!(
            "migrate-{}-{runs}.json",
            args.join("_").replace(['/', ':'], "")
        ));
        let spawned = (|| -> std::io::Result<std::process::Child> {
            let logf = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)?;
            std::process::Command::new(bin_path("northwest"))
                .arg("migrate")
                .args(args)
                .args(["--namespace", "app"])
                .args(["--zk", zk, "--brokers", kafka, "--json", "--quiet"])
                .args(["--chunk", "100", "--rate", &rate.to_string()])
                .args(if w.throttled {
                    &["--max-source-p99-ms", "100"][..]
                } else {
                    &[]
                })
                .env_remove("NW_ZK")
                .env_remove("NW_KAFKA")
                .stdout(std::fs::File::create(&out)?)
                .stderr(logf)
                .spawn()
        })();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => return (runs, Some(format!("cannot start northwest migrate: {e}"))),
        };
        *w.orchestrator.lock().unwrap() = Some(child.id());
        let left = deadline.saturating_duration_since(Instant::now());
        let status = tokio::task::spawn_blocking(move || {
            let until = Instant::now() + left;
            loop {
                match child.try_wait() {
                    Ok(Some(s)) => return Ok(s),
                    Ok(None) if Instant::now() > until => {
                        let _ = child.kill();
                        return child.wait();
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                    Err(e) => return Err(e),
                }
            }
        })
        .await;
        *w.orchestrator.lock().unwrap() = None;
        let done = matches!(status, Ok(Ok(s)) if s.success())
            && std::fs::read_to_string(&out)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .is_some_and(|v| match expect {
                    "rollback" => v["rolled_back"] == "app",
                    _ => v["phase"] == "done",
                });
        if done {
            return (runs, None);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Applies the schedule; what each fault did.
async fn inject(w: Arc<World>, plan: &[Planned], n1: &str) -> Vec<(Fault, String)> {
    let t0 = Instant::now();
    let mut done = Vec::new();
    for p in plan {
        let at = Duration::from_millis(p.at_ms);
        if let Some(wait) = at.checked_sub(t0.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let down = Duration::from_millis(p.down_ms);
        let after_switch = w.migration_done.load(Ordering::Relaxed);
        let what = match p.fault {
            Fault::KillN1 | Fault::KillN2 => {
                let w = w.clone();
                let first = p.fault == Fault::KillN1;
                tokio::task::spawn_blocking(move || {
                    let node = if first { &w.n1 } else { &w.n2 };
                    node.lock().unwrap().kill9();
                    std::thread::sleep(down);
                    node.lock().unwrap().spawn();
                })
                .await
                .map(|_| "injected".to_string())
                .unwrap_or_else(|e| format!("RESTART FAILED: {e}"))
            }
            Fault::KillOrchestrator => match *w.orchestrator.lock().unwrap() {
                Some(pid) => {
                    signal(pid, "KILL");
                    "injected".into()
                }
                None if w.migration_done.load(Ordering::Relaxed) => "migration already done".into(),
                None => "orchestrator between runs".into(),
            },
            Fault::RestartBroker | Fault::RestartZookeeper => {
                let w = w.clone();
                let (kill, start) = if p.fault == Fault::RestartBroker {
                    (vec!["kill-broker", "1"], vec!["start-broker", "1"])
                } else {
                    (vec!["kill-zk"], vec!["start-zk"])
                };
                tokio::task::spawn_blocking(move || {
                    let killed = w.stack.stack(&kill);
                    std::thread::sleep(down);
                    // Kafka itself sometimes fails to start right after a
                    // kill -9 (its old registration has not expired yet); an
                    // operator starts it again, and so does the campaign.
                    let mut started = w.stack.stack(&start);
                    let mut again = 0;
                    while !started && again < 3 {
                        again += 1;
                        std::thread::sleep(Duration::from_secs(10));
                        started = w.stack.stack(&start);
                    }
                    match (killed, started, again) {
                        (true, true, 0) => "injected".to_string(),
                        (true, true, n) => format!("injected (started again {n}x)"),
                        _ => format!("RESTART FAILED: stack.sh {kill:?}/{start:?}"),
                    }
                })
                .await
                .unwrap_or_else(|e| e.to_string())
            }
            Fault::ExpireFence => expire_fence(&w, n1).await,
            Fault::RestartPostgres if !w.postgres => "no PostgreSQL in this run".into(),
            Fault::RestartPostgres => {
                let w = w.clone();
                tokio::task::spawn_blocking(move || {
                    let killed = w.stack.stack(&["kill-pg"]);
                    std::thread::sleep(down);
                    let mut started = w.stack.stack(&["start-pg"]);
                    for _ in 0..3 {
                        if started {
                            break;
                        }
                        std::thread::sleep(Duration::from_secs(5));
                        started = w.stack.stack(&["start-pg"]);
                    }
                    match (killed, started) {
                        (true, true) => "injected".to_string(),
                        _ => "RESTART FAILED: stack.sh kill-pg/start-pg".to_string(),
                    }
                })
                .await
                .unwrap_or_else(|e| e.to_string())
            }
            Fault::StopN2 => {
                let w = w.clone();
                let stopped = down.max(Duration::from_millis(SESSION_TIMEOUT_MS + 2000));
                tokio::task::spawn_blocking(move || {
                    w.n2.lock().unwrap().signal("STOP");
                    std::thread::sleep(stopped);
                    w.n2.lock().unwrap().signal("CONT");
                    "injected".to_string()
                })
                .await
                .unwrap_or_else(|e| format!("RESUME FAILED: {e}"))
            }
            Fault::LosePromote => {
                let before = w.n2_proxy.promotions_lost();
                w.n2_proxy.lose_promotions(true);
                // Long enough to span a proxy step more often than not.
                tokio::time::sleep(down * 5).await;
                w.n2_proxy.lose_promotions(false);
                let lost = w.n2_proxy.promotions_lost() - before;
                if lost > 0 {
                    format!("injected: {lost} promote answer(s) lost")
                } else {
                    "injected: no promotion meanwhile".to_string()
                }
            }
            Fault::PauseBroker => {
                let w = w.clone();
                // Past the delivery timeout whatever the drawn duration.
                let paused = down.max(Duration::from_millis(MESSAGE_TIMEOUT_MS + 1500));
                tokio::task::spawn_blocking(move || {
                    if !w.stack.stack(&["pause-broker", "1"]) {
                        return "PAUSE FAILED: stack.sh pause-broker 1".to_string();
                    }
                    std::thread::sleep(paused);
                    if w.stack.stack(&["resume-broker", "1"]) {
                        "injected".to_string()
                    } else {
                        "RESUME FAILED: stack.sh resume-broker 1".to_string()
                    }
                })
                .await
                .unwrap_or_else(|e| e.to_string())
            }
        };
        let what = if after_switch && what == "injected" {
            "injected after the switch".to_string()
        } else {
            what
        };
        done.push((p.fault, what));
    }
    done
}

/// Waits (up to 30 s) for n1 to fence the namespace, then stops the
/// orchestrator for 11 s and lets it continue; "injected" when the fence
/// expired meanwhile.
async fn expire_fence(w: &World, n1: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let c = http();
    while Instant::now() < deadline {
        if w.migration_done.load(Ordering::Relaxed) {
            return "migration already done".into();
        }
        let fenced = match c.get(format!("{n1}/v1/admin/status")).send().await {
            Ok(r) => r
                .json::<serde_json::Value>()
                .await
                .ok()
                .is_some_and(|s| s["fenced"].as_array().is_some_and(|f| !f.is_empty())),
            Err(_) => false,
        };
        let pid = *w.orchestrator.lock().unwrap();
        if let (true, Some(pid)) = (fenced, pid) {
            // Past the cutover fence's 10 s; verify's 30 s fence outlives it
            // and the stall is then only a stall.
            signal(pid, "STOP");
            tokio::time::sleep(Duration::from_secs(11)).await;
            let still = match c.get(format!("{n1}/v1/admin/status")).send().await {
                Ok(r) => r
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .is_some_and(|s| s["fenced"].as_array().is_some_and(|f| !f.is_empty())),
                Err(_) => true,
            };
            signal(pid, "CONT");
            return if still {
                "injected: stalled 11 s, the fence held".into()
            } else {
                "injected".into()
            };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    "n1 was not fenced within 30 s".into()
}

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

/// Each key's version and value on `base` (404 = absent).
async fn final_state(base: &str, keys: &[String]) -> Result<history::Final, String> {
    let c = http();
    let mut out = history::Final::new();
    for k in keys {
        match read(c.get(format!("{base}/v1/ns/app/e/{k}"))).await {
            Outcome::Read(s) => {
                out.insert(k.clone(), s);
            }
            other => return Err(format!("reading {k} from n2 for the check: {other:?}")),
        }
    }
    Ok(out)
}

/// Deletes the run's journal, dead-letter and snapshot topics, so the
/// broker's recovery after the next kill -9 does not grow run by run.
async fn delete_topics(brokers: &str, topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let Ok(admin) = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create::<AdminClient<DefaultClientContext>>()
    else {
        return;
    };
    let (b, t) = (brokers.to_string(), topic.to_string());
    let names = tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &b)
            .create()
            .ok()?;
        let md = c.fetch_metadata(None, Duration::from_secs(5)).ok()?;
        Some(
            md.topics()
                .iter()
                .map(|x| x.name().to_string())
                .filter(|n| n.starts_with(&t))
                .collect::<Vec<_>>(),
        )
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_default();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    if !refs.is_empty() {
        let _ = admin.delete_topics(&refs, &AdminOptions::new()).await;
    }
}

/// Records on the dead-letter topic (kept by the broker, so a restarted n2
/// cannot forget them) and n2's halted partitions.
async fn apply_health(base: &str, brokers: &str, topic: &str) -> Result<(u64, u64), String> {
    let s: serde_json::Value = http()
        .get(format!("{base}/v1/admin/status"))
        .send()
        .await
        .map_err(|e| format!("n2 status: {e}"))?
        .json()
        .await
        .map_err(|e| format!("n2 status: {e}"))?;
    let halted = s["apply"]["partitions"]
        .as_array()
        .ok_or_else(|| format!("n2 status lists no partitions: {s}"))?
        .iter()
        .filter(|p| !p["halted"].is_null() && p["halted"] != false)
        .count();
    let (brokers, dlq_topic) = (brokers.to_string(), format!("{topic}.dlq"));
    let dlq = tokio::task::spawn_blocking(move || {
        crate::load::high_water_marks_at(&brokers, |t| t == dlq_topic)
            .values()
            .sum::<i64>()
    })
    .await
    .map_err(|e| e.to_string())?;
    Ok((dlq as u64, halted as u64))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_seed_replays_its_schedule() {
        let a = super::schedule(42, 5, 20_000);
        let b = super::schedule(42, 5, 20_000);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_ne!(
            format!("{a:?}"),
            format!("{:?}", super::schedule(43, 5, 20_000))
        );
        assert!(a.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    }
}
