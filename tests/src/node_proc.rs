//! `northwest node` child processes, their config text, and the n1 + n2
//! pipeline most end-to-end tests start.

use std::path::PathBuf;
use std::time::Duration;

use crate::stack::{bin_path, free_port, kafka_addr, require_kafka, require_zk, unique, zk_addr};

/// A `northwest node` child process.
pub struct NodeProc {
    pub name: String,
    pub base: String,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<std::process::Child>,
    env: Vec<(String, String)>,
}

impl NodeProc {
    /// Writes `toml` to `<dir>/<name>.toml` and starts the node.
    pub fn start(dir: &std::path::Path, name: &str, toml: &str) -> Self {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, toml).expect("write config");
        let port = toml
            .lines()
            .find_map(|l| l.trim().strip_prefix("listen = \"127.0.0.1:"))
            .and_then(|r| r.trim_end_matches('"').parse::<u16>().ok())
            .expect("config has listen = \"127.0.0.1:PORT\"");
        let scheme = if toml.contains("tls_cert_file") {
            "https"
        } else {
            "http"
        };
        let mut n = Self {
            name: name.into(),
            base: format!("{scheme}://127.0.0.1:{port}"),
            log: dir.join(format!("{name}.log")),
            config,
            child: None,
            env: Vec::new(),
        };
        n.spawn();
        n
    }

    pub fn with_env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Drops the extra environment: the next spawn runs without it.
    pub fn clear_env(&mut self) {
        self.env.clear();
    }

    /// Waits up to `timeout` for the process to exit on its own (a crash
    /// point that aborts); its status, or `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(Ok(Some(s))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut cmd = std::process::Command::new(bin_path("northwest"));
        cmd.args(["node", "--config"])
            .arg(&self.config)
            .stdout(log.try_clone().expect("dup"))
            .stderr(log);
        // The config file is the truth: no inherited override (e.g. the dev
        // stack's NW_KAFKA) may redirect the node.
        for k in [
            "NW_ZK",
            "NW_KAFKA",
            "NORTHWEST_LISTEN",
            "NORTHWEST_DATA_DIR",
            "NORTHWEST_ZK_ROOT",
            "NORTHWEST_TOPIC",
            "NORTHWEST_DLQ_TOPIC",
            "NORTHWEST_ADMIN_TOKEN_FILE",
            "NORTHWEST_DATA_TOKENS_FILE",
            "NORTHWEST_CA_FILE",
        ] {
            cmd.env_remove(k);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn northwest node"));
        self.wait_healthy();
    }

    pub fn wait_healthy(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "node {} exited with {status}; log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if http_probe::blocking_get_ok(&format!("{}/healthz", self.base)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "node {} not healthy after 60 s; log:\n{}",
            self.name,
            self.log_tail()
        );
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Sends `sig` (e.g. "STOP", "CONT") to the running process.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("node running").id();
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} {pid} failed");
    }

    /// SIGKILL: no chance to drain.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let pid = self.child.as_ref()?.id();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        if let Some(s) = self.wait_exit(Duration::from_secs(30)) {
            return Some(s);
        }
        let mut c = self.child.take()?;
        let _ = c.kill();
        c.wait().ok()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Minimal blocking HTTP probe without pulling reqwest's blocking feature.
mod http_probe {
    use std::io::{Read, Write};
    pub fn blocking_get_ok(url: &str) -> bool {
        if let Some(rest) = url.strip_prefix("https://") {
            // A TLS listener: bound (it binds only once it is ready to
            // serve) is the most this probe checks without a TLS stack.
            let host = rest.split_once('/').map_or(rest, |(h, _)| h);
            return std::net::TcpStream::connect(host).is_ok();
        }
        let Some(rest) = url.strip_prefix("http://") else {
            return false;
        };
        let (host, path) = rest
            .split_once('/')
            .map(|(h, p)| (h, format!("/{p}")))
            .unwrap_or((rest, "/".into()));
        let Ok(mut s) = std::net::TcpStream::connect(host) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
        if write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .is_err()
        {
            return false;
        }
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf.starts_with("HTTP/1.1 200")
    }
}

/// Config text for a node of a test pipeline on the dev stack.
pub fn node_toml(
    name: &str,
    data_dir: &std::path::Path,
    port: u16,
    zk_root: &str,
    topic: &str,
    extra: &str,
) -> String {
    let stack = (zk_addr(), kafka_addr());
    node_toml_at(&stack, name, data_dir, port, zk_root, topic, extra)
}

/// Config text for a node using the given ZooKeeper and Kafka addresses.
pub fn node_toml_at(
    (zk, kafka): &(String, String),
    name: &str,
    data_dir: &std::path::Path,
    port: u16,
    zk_root: &str,
    topic: &str,
    extra: &str,
) -> String {
    role_toml_at(
        (zk, kafka),
        name,
        name == "n1",
        data_dir,
        port,
        zk_root,
        topic,
        extra,
    )
}

/// Config text for a source (`source`) or target node named `name`.
#[allow(clippy::too_many_arguments)]
pub fn role_toml_at(
    (zk, kafka): (&str, &str),
    name: &str,
    source: bool,
    data_dir: &std::path::Path,
    port: u16,
    zk_root: &str,
    topic: &str,
    extra: &str,
) -> String {
    let target = !source;
    format!(
        r#"name = "{name}"
data_dir = "{data}"
[http]
listen = "127.0.0.1:{port}"
[coordination]
connect = "{zk}"
root = "{zk_root}"
session_timeout_ms = 4000
[journal]
enabled = {source}
apply = {target}
brokers = "{kafka}"
topic = "{topic}"
dead_letter_topic = "{topic}.dlq"
partitions = 4
{extra}
"#,
        data = data_dir.join(name).display(),
    )
}

/// An n1 (journaling) + n2 (applying) pair of node processes with a unique
/// ZooKeeper root and journal topic; requires the dev stack.
pub struct Pipeline {
    pub dir: tempfile::TempDir,
    pub n1: NodeProc,
    pub n2: NodeProc,
    pub topic: String,
}

impl Pipeline {
    /// `extra_n2` is appended to n2's `[journal]` section.
    pub fn start(tag: &str, extra_n2: &str) -> Self {
        Self::start_with(tag, "", extra_n2)
    }

    /// `extra_n1` and `extra_n2` are appended to each node's `[journal]`
    /// section (and may open further sections, e.g. `[kafka]`).
    pub fn start_with(tag: &str, extra_n1: &str, extra_n2: &str) -> Self {
        Self::start_named(tag, ("n1", "n2"), extra_n1, extra_n2)
    }

    /// Like [`Pipeline::start_with`], with the source and the target named
    /// `names` (each node's `n1`/`n2` handle keeps its role).
    pub fn start_named(tag: &str, names: (&str, &str), extra_n1: &str, extra_n2: &str) -> Self {
        require_zk();
        require_kafka();
        let dir = tempfile::tempdir().expect("tempdir");
        let root = format!("/northwest-test/{}", unique(tag));
        let topic = unique("journal");
        let (p1, p2) = (free_port(), free_port());
        let (zk, kafka) = (zk_addr(), kafka_addr());
        let toml = |name: &str, source: bool, port: u16, extra: &str| {
            role_toml_at(
                (&zk, &kafka),
                name,
                source,
                dir.path(),
                port,
                &root,
                &topic,
                extra,
            )
        };
        let n1 = NodeProc::start(dir.path(), names.0, &toml(names.0, true, p1, extra_n1));
        let n2 = NodeProc::start(dir.path(), names.1, &toml(names.1, false, p2, extra_n2));
        Self { dir, n1, n2, topic }
    }
}

/// Runs `northwest migrate ARGS --quiet` against the dev stack.
pub fn run_migrate(args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin_path("northwest"))
        .arg("migrate")
        .args(args)
        .args(["--quiet", "--zk", &zk_addr(), "--brokers", &kafka_addr()])
        .output()
        .expect("run northwest migrate")
}

/// `northwest migrate --from n1 --to n2 --namespace ns --quiet` against the
/// dev stack, for a test to add its flags to.
pub fn migrate_cmd(n1: &str, n2: &str, ns: &str) -> std::process::Command {
    let mut c = std::process::Command::new(bin_path("northwest"));
    c.args(["migrate", "--from", n1, "--to", n2, "--namespace", ns])
        .args(["--quiet", "--zk", &zk_addr(), "--brokers", &kafka_addr()]);
    c
}

/// `northwest migrate` of `ns` from n1 to n2 with `--json` and `extra`.
pub fn migrate_json(n1: &str, n2: &str, ns: &str, extra: &[&str]) -> std::process::Output {
    migrate_cmd(n1, n2, ns)
        .arg("--json")
        .args(extra)
        .output()
        .expect("run northwest migrate")
}

/// The JSON report `northwest migrate --json` prints on its last line;
/// panics with both outputs when the run failed.
pub fn migrate_report(o: &std::process::Output) -> serde_json::Value {
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "migrate failed: {out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let last = out.lines().last().expect("migrate printed nothing");
    serde_json::from_str(last).expect("a JSON report on the last line")
}
