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

/// Path of a binary built by this workspace (same target dir as the tests).
pub fn bin_path(name: &str) -> PathBuf {
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
