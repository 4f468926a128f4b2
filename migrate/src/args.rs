//! What `northwest migrate` is asked to do.

use northwest_control::Phase;

#[derive(clap::Args, Debug, Clone)]
pub struct MigrateArgs {
    /// Source node (n1) base URL.
    #[arg(long, default_value = "http://127.0.0.1:8081", value_parser = northwest_control::client::node_url)]
    pub from: String,
    /// Target node (n2) base URL.
    #[arg(long, default_value = "http://127.0.0.1:8082", value_parser = northwest_control::client::node_url)]
    pub to: String,
    /// The namespace to move (required: a typo must not move another one).
    #[arg(long)]
    pub namespace: String,
    /// Migrate the namespace even when n1 holds no entity of it (an empty
    /// namespace is refused by default: usually a misspelt name).
    #[arg(long, conflicts_with_all = ["abort", "rollback", "from_topics"])]
    pub allow_empty: bool,
    #[arg(long, env = "NW_ZK", default_value = "127.0.0.1:2181")]
    pub zk: String,
    #[arg(long, env = "NW_KAFKA", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// A Kafka client properties file (`name=value` lines: security.protocol,
    /// sasl.*, ssl.ca.location...) for a secured broker: the nodes'
    /// kafka_properties_file.
    #[arg(long, env = "NORTHWEST_KAFKA_CONFIG")]
    pub kafka_config: Option<std::path::PathBuf>,
    /// A file holding the deployment's ZooKeeper digest credentials
    /// (`user:password`, the nodes' coordination.auth_file).
    #[arg(long, env = "NORTHWEST_ZK_AUTH_FILE")]
    pub zk_auth_file: Option<std::path::PathBuf>,
    /// Re-migration without n1: build the namespace on --to (a fresh
    /// target) from its newest complete snapshot topic plus the journal
    /// alone; --from is not contacted.
    #[arg(long, conflicts_with_all = ["abort", "stop_after", "max_source_p99_ms", "max_apply_lag", "max_pause_ms"])]
    pub from_topics: bool,
    /// With --from-topics: the snapshot to use (its id, as listed in
    /// `<root>/snapshots/<namespace>`) instead of the newest.
    #[arg(long, requires = "from_topics")]
    pub snapshot: Option<String>,
    /// With --from-topics: a node applying the same journal (n2) to compare
    /// the rebuilt namespace with, at one journal position. Without it the
    /// namespace's primary is compared with when it is such a node (a
    /// target it was migrated to), and the run says why not otherwise.
    #[arg(long, requires = "from_topics", value_parser = northwest_control::client::node_url)]
    pub compare: Option<String>,
    /// Roll back instead (any phase before `switch`).
    #[arg(long)]
    pub abort: bool,
    /// Move the primary back to n1 after the cutover: n1 catches up with the
    /// writes n2 took (the reverse journal), then a fenced switch like the
    /// forward one makes n1 serve the namespace and n2 forward it there.
    #[arg(long, conflicts_with_all = ["abort", "from_topics", "stop_after"])]
    pub rollback: bool,
    /// Key ranges snapshotted in parallel.
    #[arg(long, default_value_t = 4)]
    pub ranges: usize,
    #[arg(long, default_value_t = 2000)]
    pub chunk: usize,
    /// Snapshot rows per second (protects n1's latency); 0 = unlimited.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Closed-loop throttle: while the snapshot streams, n1's data-API p99
    /// over the last 10 s is read every second; above this budget the
    /// snapshot slows down (halved at most every 10 s, down to 100 rows/s),
    /// below 80 % of it it speeds up again (up to --rate). n1 measures in
    /// buckets (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000 ms), so
    /// the budget acts at the bucket bounds.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=2000))]
    pub max_source_p99_ms: Option<u64>,
    /// Closed-loop throttle on n2: while the snapshot streams, n2's journal
    /// lag (records, all partitions) is read every second, and above this
    /// budget the snapshot slows down the same way (with
    /// --max-source-p99-ms too, the worse of the two decides).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_apply_lag: Option<u64>,
    /// Budget for the cutover's write pause (fence + drain; the switch
    /// comes on top): n1 lifts the fence itself when it runs out, and a
    /// cutover that does not fit is called off and tried again (5 attempts
    /// in all, 2 s apart) before the migration stops with n1 serving.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=8000))]
    pub max_pause_ms: Option<u64>,
    /// At the end of catch-up, read up to this many of n1's hot keys (its
    /// read cache) into n2's cache, so n2 serves them from memory right
    /// after the switch; 0: no warm-up, at most 200000.
    #[arg(long, default_value_t = 100_000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=200_000))]
    pub warm_keys: usize,
    /// Journal lag (records) under which catch-up is done.
    #[arg(long, default_value_t = 500)]
    pub max_lag: i64,
    /// Stop after this phase (tests; the next run resumes): init,
    /// metadata-sync, journaling, snapshot, catch-up, verify, proxy.
    #[arg(long, value_parser = parse_phase)]
    pub stop_after: Option<Phase>,
    /// Print the final report as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

fn parse_phase(s: &str) -> Result<Phase, String> {
    s.parse()
}

/// [`MigrateArgs`] as a parser of its own (for [`MigrateArgs::defaults`]).
#[derive(clap::Parser)]
struct Command {
    #[command(flatten)]
    args: MigrateArgs,
}

impl MigrateArgs {
    /// A quiet migration of `namespace` from `from` to `to` with the
    /// command's own defaults for everything else (parsed by its clap
    /// definition, so a changed default reaches every caller).
    pub fn defaults(
        from: &str,
        to: &str,
        namespace: &str,
        zk: &str,
        brokers: &str,
    ) -> Result<Self, clap::Error> {
        use clap::Parser;
        let argv = [
            "migrate",
            "--from",
            from,
            "--to",
            to,
            "--namespace",
            namespace,
            "--zk",
            zk,
            "--brokers",
            brokers,
            "--quiet",
        ];
        Ok(Command::try_parse_from(argv)?.args)
    }
}
