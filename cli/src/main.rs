//! The `northwest` command: a thin shell over the library's `run` functions.
//!
//! Owns: argument parsing (flags with env fallbacks), the tracing subscriber,
//! signal handling, and anyhow at the top. May use: `northwest-node`,
//! `northwest-migrate`, `northwest-control` (the admin client),
//! `northwest-bench` (and the store's crash points); never the test harness
//! (the fault campaign is its own binary, `northwest-chaos`).

use std::path::PathBuf;

// Every request, journal record and applied row allocates: the profile of
// the snapshot loader spent ~30% of its samples in glibc's malloc/free.
// mimalloc also replaces malloc itself (the workspace's `override`
// feature), so RocksDB and librdkafka use it too: with glibc's arenas
// beside it, n1's memory kept climbing in the soak (README).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use northwest_node::config::NodeConfig;

#[derive(Parser)]
#[command(
    name = "northwest",
    version,
    about = "Live migration and replication for transactional data stores"
)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax). The ZooKeeper client's own INFO lines
    /// (sessions opening and closing) are hidden by default; our code logs what matters.
    #[arg(
        long,
        env = "NORTHWEST_LOG",
        default_value = "info,zookeeper_client=warn",
        global = true
    )]
    log: String,
    /// Log as JSON lines.
    #[arg(long, env = "NORTHWEST_LOG_JSON", global = true)]
    log_json: bool,
    /// A file holding the admin token: for `node`, overrides
    /// http.admin_token_file; for migrate, status, replay and digest, the
    /// bearer token they present to the nodes.
    #[arg(long, env = "NORTHWEST_ADMIN_TOKEN_FILE", global = true)]
    admin_token_file: Option<PathBuf>,
    /// A PEM CA bundle that https:// node URLs given to migrate, status,
    /// replay and digest are verified against (default: the public web
    /// roots). A node's own peer calls use http.tls_ca_file.
    #[arg(long, env = "NORTHWEST_CA_FILE", global = true)]
    ca_file: Option<PathBuf>,
    /// Crash points to arm, `name=error|abort,...` (tests only).
    #[arg(long, env = "NORTHWEST_CRASH_POINTS", global = true, hide = true)]
    crash_points: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a deployment's node daemon (HTTP API, journal relay/apply, metrics).
    Node(NodeArgs),
    /// Generate load against a node's HTTP API (also loads sample data).
    Loadgen(northwest_bench::loadgen::LoadgenArgs),
    /// Live-migrate a namespace from n1 to n2 (resumable; --abort rolls back).
    Migrate(northwest_migrate::MigrateArgs),
    /// Show a node's journal shipping / apply state and lag per partition.
    Status(northwest_migrate::ops::StatusArgs),
    /// Re-apply a range of the journal on a target node (always safe).
    Replay(northwest_migrate::ops::ReplayArgs),
    /// Order-independent digest of a namespace; --compare proves N1 == N2.
    Digest(northwest_migrate::ops::DigestArgs),
    /// A namespace's primaries over time and where each epoch lies in the journal.
    Timeline(northwest_migrate::timeline_cmd::TimelineArgs),
    /// Benchmarks (not tests): print side-by-side figures.
    Bench {
        /// Print one JSON document of every table and note (text to stderr).
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        what: northwest_bench::BenchCmd,
    },
}

#[derive(clap::Args)]
struct NodeArgs {
    /// TOML config file (see deploy/n1.toml).
    #[arg(long, env = "NORTHWEST_CONFIG")]
    config: PathBuf,
    /// Override http.listen.
    #[arg(long, env = "NORTHWEST_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Override data_dir.
    #[arg(long, env = "NORTHWEST_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Override coordination.connect (ZooKeeper host:port).
    #[arg(long, env = "NW_ZK")]
    zk: Option<String>,
    /// Override coordination.root.
    #[arg(long, env = "NORTHWEST_ZK_ROOT")]
    zk_root: Option<String>,
    /// Override journal.brokers.
    #[arg(long, env = "NW_KAFKA")]
    brokers: Option<String>,
    /// Override http.data_tokens_file.
    #[arg(long, env = "NORTHWEST_DATA_TOKENS_FILE")]
    data_tokens_file: Option<PathBuf>,
    /// Override journal.topic.
    #[arg(long, env = "NORTHWEST_TOPIC")]
    topic: Option<String>,
    /// Override journal.dead_letter_topic.
    #[arg(long, env = "NORTHWEST_DLQ_TOPIC")]
    dlq_topic: Option<String>,
}

fn init_tracing(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // No colour codes in files, pipes and journald.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

/// Resolves on SIGTERM or ctrl-c.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown requested; draining");
}

fn node_config(a: &NodeArgs, admin_token_file: Option<&PathBuf>) -> anyhow::Result<NodeConfig> {
    // Validated once the overrides are in (a token given by flag may be
    // what makes a non-loopback listen address acceptable).
    let mut cfg = NodeConfig::parse(&a.config).map_err(anyhow::Error::msg)?;
    if let Some(p) = admin_token_file {
        cfg.http.admin_token_file = Some(p.clone());
    }
    if let Some(p) = &a.data_tokens_file {
        cfg.http.data_tokens_file = Some(p.clone());
    }
    if let Some(l) = a.listen {
        cfg.http.listen = l;
    }
    if let Some(d) = &a.data_dir {
        cfg.data_dir = d.clone();
    }
    if let Some(z) = &a.zk {
        cfg.coordination.connect = z.clone();
    }
    if let Some(r) = &a.zk_root {
        cfg.coordination.root = r.clone();
    }
    if let Some(b) = &a.brokers {
        cfg.journal.brokers = b.clone();
    }
    if let Some(t) = &a.topic {
        cfg.journal.topic = t.clone();
    }
    if let Some(t) = &a.dlq_topic {
        cfg.journal.dead_letter_topic = t.clone();
    }
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("config {}: {e}", a.config.display()))?;
    Ok(cfg)
}

/// How a command that did not succeed ends: what it prints and its exit
/// code (README's "Exit codes" table).
struct Failure {
    /// 1: stopped or failed (for migrate: midway, the same command
    /// resumes); 2: refused before changing anything, or a usage error.
    code: i32,
    /// `refused`, `error` or `usage`: the word before the message on
    /// stderr, and `outcome` in the JSON object.
    label: &'static str,
    message: String,
    /// The command printed its `--json` report already (it says why).
    reported: bool,
}

impl Failure {
    fn error(e: anyhow::Error) -> Self {
        Self {
            code: 1,
            label: "error",
            reported: e.downcast_ref::<northwest_control::Reported>().is_some(),
            message: format!("{e:#}"),
        }
    }

    /// The one JSON object a command run with `--json` prints on stdout
    /// when it fails (its report, when it succeeds).
    fn json(&self) -> String {
        serde_json::json!({
            "ok": false,
            "outcome": self.label,
            "exit_code": self.code,
            "error": self.message,
        })
        .to_string()
    }

    fn exit(self, json: bool) -> ! {
        if json && !self.reported {
            println!("{}", self.json());
        }
        eprintln!("{}: {}", self.label, self.message);
        std::process::exit(self.code)
    }
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let informational =
                matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
            if !informational && std::env::args().any(|a| a == "--json") {
                let f = Failure {
                    code: 2,
                    label: "usage",
                    reported: false,
                    message: e.kind().as_str().map_or_else(
                        || e.to_string().trim().to_string(),
                        |k| format!("{k}: {}", e.to_string().trim()),
                    ),
                };
                println!("{}", f.json());
            }
            e.exit()
        }
    };
    let json = match &cli.cmd {
        Cmd::Migrate(a) => a.json,
        Cmd::Status(a) => a.json,
        Cmd::Timeline(a) => a.json,
        Cmd::Loadgen(a) => a.json,
        Cmd::Bench { json, .. } => *json,
        Cmd::Node(_) | Cmd::Replay(_) | Cmd::Digest(_) => false,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if let Err(f) = runtime.block_on(run(cli)) {
        f.exit(json)
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    init_tracing(&cli.log, cli.log_json);
    if cli.ca_file.is_some() && matches!(cli.cmd, Cmd::Node(_)) {
        return Err(Failure {
            code: 2,
            label: "usage",
            reported: false,
            message: "--ca-file (NORTHWEST_CA_FILE) is for the commands that call nodes; a node \
                      verifies its peers with http.tls_ca_file in its config"
                .into(),
        });
    }
    // The client of the nodes' admin API for migrate, status, replay and
    // digest: their token and CA, and the longest one call may take.
    let admin = || {
        northwest_control::AdminClient::from_files(
            cli.admin_token_file.as_deref(),
            cli.ca_file.as_deref(),
            northwest_migrate::ADMIN_TIMEOUT,
        )
        .map_err(|e| Failure::error(e.into()))
    };
    if let Some(spec) = &cli.crash_points {
        northwest_store::failpoint::arm_spec(spec)
            .map_err(anyhow::Error::msg)
            .map_err(Failure::error)?;
    }
    let r = match cli.cmd {
        Cmd::Node(ref a) => {
            let cfg = node_config(a, cli.admin_token_file.as_ref()).map_err(Failure::error)?;
            northwest_node::run(cfg, shutdown_signal(), None)
                .await
                .context("node failed")
        }
        Cmd::Loadgen(a) => {
            let (token, ca) = (cli.admin_token_file.as_deref(), cli.ca_file.as_deref());
            northwest_bench::loadgen::run(a, token, ca, shutdown_signal()).await
        }
        Cmd::Migrate(a) => {
            return northwest_migrate::run(a, admin()?)
                .await
                .map_err(|e| Failure {
                    code: e.exit_code(),
                    label: e.label(),
                    reported: matches!(&e, northwest_migrate::MigrateError::Stopped(x)
                        if x.downcast_ref::<northwest_control::Reported>().is_some()),
                    message: e.to_string(),
                });
        }
        Cmd::Status(a) => northwest_migrate::ops::status(a, &admin()?).await,
        Cmd::Replay(a) => northwest_migrate::ops::replay(a, &admin()?).await,
        Cmd::Digest(a) => northwest_migrate::ops::digest(a, &admin()?).await,
        Cmd::Timeline(a) => northwest_migrate::timeline_cmd::timeline(a, &admin()?).await,
        Cmd::Bench { json, what } => northwest_bench::run(what, json).await,
    };
    r.map_err(Failure::error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_takes_exactly_one_starting_point() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["northwest", "replay"], args].concat());
        assert!(parse(&["--from-beginning", "--from-offset", "0:1"]).is_err());
        assert!(parse(&["--from-timestamp", "5", "--from-beginning"]).is_err());
        assert!(parse(&[]).is_err());
        assert!(parse(&["--from-offset", "0:1", "--from-offset", "1:2"]).is_ok());
        assert!(parse(&["--from-beginning"]).is_ok());
        assert!(parse(&["--from-epoch", "1", "--namespace", "app"]).is_ok());
        assert!(parse(&["--node", "http://127.0.0.1:8082", "--from-offset", "0:1"]).is_ok());
        assert!(
            parse(&["--from-epoch", "1"]).is_err(),
            "an epoch of which namespace?"
        );
        assert!(parse(&["--namespace", "app"]).is_err());
        assert!(parse(&[
            "--from-epoch",
            "1",
            "--namespace",
            "app",
            "--from-beginning"
        ])
        .is_err());
    }
}
