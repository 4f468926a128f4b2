//! The dev stack's addresses (failing loudly when a service is down),
//! names unique to a test run, built binaries and free ports.

use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub fn zk_addr() -> String {
    std::env::var("NW_ZK").unwrap_or_else(|_| "127.0.0.1:2181".into())
}

pub fn kafka_addr() -> String {
    std::env::var("NW_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn require(what: &str, addr: &str) -> String {
    if TcpStream::connect_timeout(&addr.parse().expect("host:port"), Duration::from_secs(2))
        .is_err()
    {
        panic!("{what} is not reachable at {addr}: start the dev stack with `deploy/stack.sh up` (or set NW_ZK / NW_KAFKA)");
    }
    addr.to_string()
}

/// The ZooKeeper address; panics with instructions when it is down.
pub fn require_zk() -> String {
    require("ZooKeeper", &zk_addr())
}

/// The broker address; panics with instructions when it is down.
pub fn require_kafka() -> String {
    require("the Kafka broker", &kafka_addr())
}

/// The dev stack's SASL_SSL (SCRAM-SHA-512) listener and the client
/// properties file for it, both made by `deploy/stack.sh up`; panics with
/// instructions when either is missing.
pub fn require_kafka_sasl() -> (String, std::path::PathBuf) {
    let addr = std::env::var("NW_KAFKA_SASL").unwrap_or_else(|_| "127.0.0.1:9192".into());
    let first = addr.split(',').next().unwrap_or_default();
    if TcpStream::connect_timeout(&first.parse().expect("host:port"), Duration::from_secs(2))
        .is_err()
    {
        panic!(
            "the Kafka broker's SASL_SSL listener is not reachable at {first}: start the dev stack \
             with `deploy/stack.sh up` (a broker started before the listener existed needs \
             `deploy/stack.sh down` first), or set NW_KAFKA_SASL"
        );
    }
    let config = std::env::var("NW_KAFKA_SASL_CONFIG").map_or_else(
        |_| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../.northwest/stack/kafka/tls/client.properties")
        },
        std::path::PathBuf::from,
    );
    assert!(
        config.is_file(),
        "{} is missing: start the dev stack with `deploy/stack.sh up` (or set NW_KAFKA_SASL_CONFIG)",
        config.display()
    );
    (addr, config)
}

/// A name unique to this test run (znode roots, topics, namespaces).
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{ms}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

static BINARY: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// Makes `bin_path("northwest")` this file from now on: the binary running
/// `northwest-chaos` names itself, and the campaign then runs a copy of it
/// (a rebuild during a campaign changes nothing).
pub fn use_binary(path: PathBuf) {
    *BINARY.lock().unwrap() = Some(path);
}

/// Path of a binary built by this workspace (same target dir as the tests).
pub fn bin_path(name: &str) -> PathBuf {
    if let Some(p) = BINARY
        .lock()
        .unwrap()
        .clone()
        .filter(|_| name == "northwest")
    {
        return p;
    }
    let exe = std::env::current_exe().expect("test exe path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --release --workspace` first",
        p.display()
    );
    p
}

/// A free loopback port (bound then released).
/// Never the same port twice in one test process: tests run in parallel,
/// and a port released by one must not become another node's too.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A stack of its own (`deploy/stack.sh` with its own directory and ports),
/// so a test may kill its brokers or ZooKeeper while the shared dev stack
/// keeps serving the others. Brought down on drop, pass or fail.
pub struct OwnStack {
    pub dir: tempfile::TempDir,
    pub brokers: u16,
    pub zk_port: u16,
    pub kafka_port: u16,
    /// Its own PostgreSQL's port, when it runs one.
    pub pg_port: Option<u16>,
}

impl OwnStack {
    /// Starts ZooKeeper and `brokers` (1 or 3) Kafka nodes; panics with
    /// where to look when they do not come up.
    pub fn start(brokers: u16, zk_port: u16, kafka_port: u16) -> Self {
        Self::start_with_pg(brokers, zk_port, kafka_port, None)
    }

    /// Like [`OwnStack::start`], with a PostgreSQL of its own on `pg_port`.
    pub fn start_with_pg(
        brokers: u16,
        zk_port: u16,
        kafka_port: u16,
        pg_port: Option<u16>,
    ) -> Self {
        let s = Self {
            dir: tempfile::tempdir().expect("tempdir"),
            brokers,
            zk_port,
            kafka_port,
            pg_port,
        };
        assert!(
            s.stack(&["up"]),
            "a {brokers}-broker stack did not start (deploy/stack.sh up with NW_STACK_DIR={}, \
             ZooKeeper port {zk_port}, Kafka port {kafka_port}); see its logs",
            s.dir.path().display()
        );
        s
    }

    /// Runs `deploy/stack.sh ARGS` against this stack; true on success.
    pub fn stack(&self, args: &[&str]) -> bool {
        std::process::Command::new(stack_script())
            .args(args)
            .env("NW_STACK_DIR", self.dir.path())
            .env("NW_ZK_PORT", self.zk_port.to_string())
            .env("NW_KAFKA_PORT", self.kafka_port.to_string())
            .env("NW_KAFKA_BROKERS", self.brokers.to_string())
            // Without a port of its own, the shared stack's database
            // serves: this stack is for killing brokers and ZooKeeper.
            .env(
                "NW_STACK_POSTGRES",
                if self.pg_port.is_some() { "1" } else { "0" },
            )
            .env("NW_PG_PORT", self.pg_port.unwrap_or(0).to_string())
            // The shared stack's schema registry serves private ones too.
            .env("NW_STACK_REGISTRY", "0")
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run deploy/stack.sh")
            .success()
    }

    /// ZooKeeper's and the brokers' addresses.
    pub fn addrs(&self) -> (String, String) {
        let kafka = (0..self.brokers)
            .map(|i| format!("127.0.0.1:{}", self.kafka_port + 2 * i))
            .collect::<Vec<_>>()
            .join(",");
        (format!("127.0.0.1:{}", self.zk_port), kafka)
    }
}

impl OwnStack {
    /// Config text putting a node's tables in `schema` of this stack's own
    /// PostgreSQL (appended after a node's `[store]` keys, or opening it).
    pub fn pg_store_toml(&self, schema: &str, open_store: bool) -> String {
        let port = self.pg_port.expect("a stack started with PostgreSQL");
        let password = self.dir.path().join("postgres/password");
        format!(
            "{}engine = \"postgres\"\n[store.postgres]\nhost = \"127.0.0.1\"\nport = {port}\n\
             password_file = \"{}\"\nschema = \"{schema}\"\n",
            if open_store { "\n[store]\n" } else { "" },
            password.display()
        )
    }
}

impl Drop for OwnStack {
    fn drop(&mut self) {
        // `reset`: also the data a root-run PostgreSQL keeps outside the
        // temporary directory.
        self.stack(&["reset"]);
    }
}

/// `deploy/stack.sh` of this checkout (or of the working directory).
pub fn stack_script() -> PathBuf {
    let built = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/stack.sh");
    if built.exists() {
        built
    } else {
        PathBuf::from("deploy/stack.sh")
    }
}

/// The dev stack's PostgreSQL: `NW_PG` (host:port, default 127.0.0.1:5433)
/// and the role's password file (`NW_PG_PASSWORD_FILE`, default the
/// stack's, under `NW_STACK_DIR` when set). Panics with instructions when
/// the server is down.
pub fn require_pg() -> (String, PathBuf) {
    let addr = require(
        "PostgreSQL",
        &std::env::var("NW_PG").unwrap_or_else(|_| "127.0.0.1:5433".into()),
    );
    let password = std::env::var("NW_PG_PASSWORD_FILE").map_or_else(
        |_| {
            std::env::var("NW_STACK_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| {
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.northwest/stack")
                })
                .join("postgres/password")
        },
        PathBuf::from,
    );
    assert!(
        password.is_file(),
        "{} is missing: start the dev stack with `deploy/stack.sh up` (or set NW_PG_PASSWORD_FILE)",
        password.display()
    );
    (addr, password)
}

/// Engine settings for a schema of the dev stack's database.
pub fn pg_config(schema: &str) -> northwest_store::PgConfig {
    let (addr, password) = require_pg();
    let (host, port) = addr.rsplit_once(':').expect("NW_PG is host:port");
    northwest_store::PgConfig {
        host: host.to_string(),
        port: port.parse().expect("NW_PG's port"),
        user: "northwest".into(),
        dbname: "northwest".into(),
        password: Some(northwest_store::pg::read_password(&password).expect("password file")),
        schema: schema.to_string(),
        pool_size: 8,
        timeout: Duration::from_secs(10),
    }
}

/// A schema name of the dev stack's database unique to this test run.
pub fn pg_schema(prefix: &str) -> String {
    unique(prefix).replace('-', "_").to_ascii_lowercase()
}

/// A fresh PostgreSQL engine in a schema of its own.
pub fn pg_engine() -> std::sync::Arc<dyn northwest_store::Engine> {
    let schema = pg_schema("t");
    std::sync::Arc::new(
        northwest_store::PgEngine::open(pg_config(&schema))
            .unwrap_or_else(|e| panic!("open PostgreSQL schema {schema}: {e}")),
    )
}

/// Config text that puts a node's tables in a fresh schema of the dev
/// stack's PostgreSQL (appended after a node's `[journal]` keys).
pub fn pg_store_toml(schema: &str) -> String {
    let (addr, password) = require_pg();
    let (host, port) = addr.rsplit_once(':').expect("NW_PG is host:port");
    format!(
        "\n[store]\nengine = \"postgres\"\n[store.postgres]\nhost = \"{host}\"\nport = {port}\n\
         password_file = \"{}\"\nschema = \"{schema}\"\n",
        password.display()
    )
}

/// A ZooKeeper coordinator on the dev stack's ZooKeeper under `root`,
/// its config adjusted by `tweak` first.
pub async fn zk_coord(
    root: &str,
    tweak: impl FnOnce(&mut northwest_store::ZkConfig),
) -> std::sync::Arc<northwest_store::ZkCoordinator> {
    let mut cfg = northwest_store::ZkConfig {
        connect: require_zk(),
        root: root.to_string(),
        ..northwest_store::ZkConfig::default()
    };
    tweak(&mut cfg);
    std::sync::Arc::new(
        northwest_store::ZkCoordinator::connect(cfg)
            .await
            .expect("connect to ZooKeeper"),
    )
}
