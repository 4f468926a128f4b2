//! How the engine connects: the settings (never printing the password)
//! and the driver's session options.

use std::time::Duration;

use crate::error::EngineError;

/// Where the engine's tables live and how it connects.
#[derive(Clone)]
pub struct PgConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub dbname: String,
    /// Read from `password_file` by the caller; never logged or printed
    /// (this struct's Debug leaves it out).
    pub password: Option<String>,
    /// The PostgreSQL schema holding this node's tables (one per node:
    /// several nodes may share one database).
    pub schema: String,
    pub pool_size: usize,
    /// How long a call waits for a connection, a statement or the server's
    /// answer before failing as unavailable.
    pub timeout: Duration,
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl PgConfig {
    /// The connection without its secret, for logs and errors.
    pub fn describe(&self) -> String {
        format!(
            "postgresql://{}@{}:{}/{} schema {}",
            self.user, self.host, self.port, self.dbname, self.schema
        )
    }

    pub(super) fn driver_config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name("northwest")
            .connect_timeout(self.timeout)
            // A peer that vanishes (a partition, a stopped server) is
            // noticed within seconds, not hours.
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3)
            .tcp_user_timeout(self.timeout);
        if let Some(p) = &self.password {
            c.password(p);
        }
        // A session that vanished mid-transaction must not hold its rows'
        // locks until the server's own keepalive fires.
        let idle_ms = 3 * self.timeout.as_millis().max(1000);
        // A row lock held past the call's timeout fails the waiter (55P03,
        // retriable) rather than wedging it.
        let lock_ms = self.timeout.as_millis().max(100);
        c.options(format!(
            "-c synchronous_commit=on -c idle_in_transaction_session_timeout={idle_ms} \
             -c lock_timeout={lock_ms}"
        ));
        c
    }
}

/// A schema name is spliced into SQL (quoted): only plain lower-case
/// identifiers.
pub(super) fn valid_schema(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Reads `store.postgres.password_file` (trailing newline ignored); the
/// secret never reaches a log.
pub fn read_password(path: &std::path::Path) -> Result<String, EngineError> {
    let s = std::fs::read_to_string(path).map_err(|e| {
        EngineError::Io(format!(
            "reading the PostgreSQL password file {}: {e}",
            path.display()
        ))
    })?;
    let s = s.trim_end_matches(['\n', '\r']).to_string();
    if s.is_empty() {
        return Err(EngineError::Io(format!(
            "the PostgreSQL password file {} is empty",
            path.display()
        )));
    }
    Ok(s)
}
