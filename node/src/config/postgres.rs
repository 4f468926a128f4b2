//! The `[store.postgres]` section: where a `postgres` engine keeps its
//! tables.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::NodeConfig;

/// Where a `postgres` engine keeps its tables.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresSection {
    /// The server's address (default 127.0.0.1, the dev stack's).
    pub host: String,
    /// Default 5433 (the dev stack's cluster; 5432 is left to a system one).
    pub port: u16,
    /// Default `northwest`.
    pub user: String,
    /// Default `northwest`.
    pub database: String,
    /// A file holding the role's password (trailing newline ignored); the
    /// password is never logged. None: no password (trust or peer auth).
    pub password_file: Option<PathBuf>,
    /// The schema holding this node's tables, created on first start
    /// (several nodes may share one database, each in its own schema).
    /// Default: `northwest_<name>`, with the node's name lower-cased and any
    /// other character than [a-z0-9_] as `_`.
    pub schema: Option<String>,
    /// Connections in the pool (default 16; 1..=256).
    pub pool_size: usize,
    /// Milliseconds a call waits for a connection or an answer before it
    /// fails as unavailable (503 `engine_unavailable`; default 10000).
    pub timeout_ms: u64,
    /// Several `northwest node` processes of this deployment (one config,
    /// one `name`, each its own `http.listen`) serve the schema together:
    /// no process owns it, entity groups are locked by ZooKeeper leases
    /// and fenced by their tokens in every commit, and the read cache is
    /// off (another process may change what it would serve). Such a
    /// deployment does not journal or apply a journal yet (default false).
    pub shared: bool,
}

impl Default for PostgresSection {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 5433,
            user: "northwest".into(),
            database: "northwest".into(),
            password_file: None,
            schema: None,
            pool_size: 16,
            timeout_ms: 10_000,
            shared: false,
        }
    }
}

impl NodeConfig {
    /// The PostgreSQL schema of this node's tables.
    pub fn postgres_schema(&self) -> String {
        if let Some(s) = &self.store.postgres.schema {
            return s.clone();
        }
        let name: String = self
            .name
            .to_ascii_lowercase()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("northwest_{name}")
    }
}
