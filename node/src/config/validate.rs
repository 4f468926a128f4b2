//! Config checks: values that parse but cannot work, refused at start with
//! what to change.

use super::{CoordinationMode, NodeConfig, JOURNAL_OVERHEAD, MAX_MESSAGE_CAP};

impl NodeConfig {
    /// Checks values that parse but cannot work, saying what to change.
    pub fn validate(&self) -> Result<(), String> {
        northwest_store::Namespace::new(&self.name)
            .map_err(|_| format!("name = {:?}: use letters, digits, '_', '.', '-'", self.name))?;
        self.check_http()?;
        self.check_coordination()?;
        self.check_store()?;
        self.check_shared()?;
        self.check_journal()
    }

    /// A schema several processes share needs what fences them (ZooKeeper
    /// leases), and nothing that assumes one process per node yet: the
    /// journal's outbox and its relay, and the apply loop.
    fn check_shared(&self) -> Result<(), String> {
        if !self.store.postgres.shared {
            return Ok(());
        }
        let why = if self.store.engine != super::EngineKind::Postgres {
            "is for engine = \"postgres\" (one process owns a RocksDB directory)"
        } else if self.coordination.mode != CoordinationMode::Zookeeper {
            "needs coordination.mode = \"zookeeper\": ZooKeeper leases are what keep the \
             processes off each other's entity groups"
        } else if self.journal.enabled || self.journal.apply {
            "cannot journal or apply a journal yet (the outbox relay and the apply loop run in \
             one process per node): set journal.enabled and journal.apply to false, or run one \
             process without shared"
        } else {
            return Ok(());
        };
        Err(format!("store.postgres.shared = true {why}"))
    }

    fn check_http(&self) -> Result<(), String> {
        if self.http.max_value_bytes == 0 || self.http.max_value_bytes > 64 << 20 {
            return Err("http.max_value_bytes must be between 1 and 67108864".into());
        }
        if !self.http.listen.ip().is_loopback() && self.http.admin_token_file.is_none() {
            return Err(format!(
                "http.listen = {} is reachable from other hosts, and its admin API (fence, \
                 proxy, replay, promote) would be open to all of them: set \
                 http.admin_token_file to a file holding a bearer token (e.g. `openssl rand \
                 -hex 32 > /etc/northwest/admin.token`), or listen on 127.0.0.1",
                self.http.listen
            ));
        }
        if self.http.data_tokens_file.is_some()
            && self.http.admin_token_file.is_none()
            && !self.http.admin_open
        {
            return Err(
                "http.data_tokens_file is set but http.admin_token_file is not: the data API \
                 would ask for tokens while the admin API (fence, promote, offsets, replay) \
                 takes any caller on this host; set http.admin_token_file (e.g. `openssl rand \
                 -hex 32 > admin.token`), or set http.admin_open = true if an open admin plane \
                 is meant"
                    .into(),
            );
        }
        if self.http.tls_cert_file.is_some() != self.http.tls_key_file.is_some() {
            return Err(
                "http.tls_cert_file and http.tls_key_file go together: set both to serve HTTPS, \
                 or neither"
                    .into(),
            );
        }
        Ok(())
    }

    fn check_coordination(&self) -> Result<(), String> {
        let c = &self.coordination;
        if c.mode == CoordinationMode::Zookeeper {
            if c.connect.trim().is_empty() {
                return Err("coordination.connect is empty: set host:port of ZooKeeper".into());
            }
            if !c.root.starts_with('/') || c.root.ends_with('/') || c.root.len() < 2 {
                return Err(format!(
                    "coordination.root = {:?}: must look like /northwest/<name>",
                    c.root
                ));
            }
            if !(4000..=40_000).contains(&c.session_timeout_ms) {
                return Err("coordination.session_timeout_ms must be 4000..=40000 (ZooKeeper's tickTime bounds)".into());
            }
        }
        if c.lock_timeout_ms == 0 || c.lease_idle_ms == 0 {
            return Err("coordination.lock_timeout_ms and lease_idle_ms must be > 0".into());
        }
        Ok(())
    }

    fn check_store(&self) -> Result<(), String> {
        if self.store.retries == 0 || self.store.id_block == 0 {
            return Err("store.retries and store.id_block must be >= 1".into());
        }
        let hours = self.store.marker_retention_hours;
        if !(hours.is_finite() && (0.0..=876_000.0).contains(&hours)) {
            return Err(format!(
                "store.marker_retention_hours = {hours}: must be 0..=876000 hours (0 disables marker GC)"
            ));
        }
        if !(8..=1 << 20).contains(&self.store.rocksdb_memory_mb) {
            return Err(format!(
                "store.rocksdb_memory_mb = {}: between 8 and 1048576 (MiB)",
                self.store.rocksdb_memory_mb
            ));
        }
        if self.store.read_cache_mb > 1 << 20 {
            return Err(format!(
                "store.read_cache_mb = {}: at most 1048576 (1 TiB); 0 disables the cache",
                self.store.read_cache_mb
            ));
        }
        if !(1..=86_400).contains(&self.store.marker_gc_interval_s) {
            return Err("store.marker_gc_interval_s must be 1..=86400".into());
        }
        if self.store.engine == super::EngineKind::Postgres {
            let pg = &self.store.postgres;
            if !self.store.sync_writes {
                return Err(
                    "store.sync_writes = false with engine = \"postgres\": PostgreSQL commits are \
                     always durable here (synchronous_commit off would lose, in a crash of the \
                     server, commits the relay may already have shipped); remove the setting"
                        .into(),
                );
            }
            if !(1..=256).contains(&pg.pool_size) {
                return Err("store.postgres.pool_size must be 1..=256".into());
            }
            if pg.timeout_ms < 100 {
                return Err("store.postgres.timeout_ms must be at least 100".into());
            }
            let schema = self.postgres_schema();
            let plain = schema.len() <= 63
                && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && schema
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !plain {
                return Err(format!(
                    "store.postgres.schema = {schema:?}: use 1-63 characters of [a-z0-9_], not starting with a digit"
                ));
            }
            if let Some(f) = &pg.password_file {
                if !f.is_file() {
                    return Err(format!(
                        "store.postgres.password_file = {}: no such file",
                        f.display()
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_journal(&self) -> Result<(), String> {
        let j = &self.journal;
        if (j.enabled || j.apply) && j.brokers.trim().is_empty() {
            return Err("journal.brokers is empty: set host:port of the Kafka brokers".into());
        }
        if j.partitions < 1 || j.apply_batch == 0 || j.outbox_limit == 0 {
            return Err("journal.partitions, apply_batch and outbox_limit must be >= 1".into());
        }
        if j.relay_coalesce_ms > 20 {
            return Err(format!(
                "journal.relay_coalesce_ms = {} is above 20: it delays every journal record by up \
                 to that; use 0..=20 (2 is the default)",
                j.relay_coalesce_ms
            ));
        }
        if j.topic.is_empty() || j.topic == j.dead_letter_topic {
            return Err(
                "journal.topic must be set and differ from journal.dead_letter_topic".into(),
            );
        }
        if j.max_message_bytes > MAX_MESSAGE_CAP {
            return Err(format!(
                "journal.max_message_bytes = {} is above {MAX_MESSAGE_CAP} (90 MiB): larger \
                 records exceed Kafka's socket.request.max.bytes and librdkafka's \
                 receive.message.max.bytes (100 MiB); lower it and http.max_value_bytes",
                j.max_message_bytes
            ));
        }
        let txn_body = self.http.max_txn_body_bytes();
        if (j.enabled || j.apply) && j.max_message_bytes < txn_body + JOURNAL_OVERHEAD {
            return Err(format!(
                "journal.max_message_bytes = {} cannot carry what the API accepts: a transaction \
                 body may be up to {txn_body} bytes (8 × http.max_value_bytes); set \
                 journal.max_message_bytes >= {} or lower http.max_value_bytes",
                j.max_message_bytes,
                txn_body + JOURNAL_OVERHEAD
            ));
        }
        // A delete marker must outlive every journal record that could carry
        // an older version of its key: a replay from the oldest retained
        // record would otherwise resurrect the entity once the marker is gone.
        let hours = self.store.marker_retention_hours;
        let marker_ms = self.marker_retention_ms();
        if (j.enabled || j.apply)
            && hours > 0.0
            && (j.retention_ms < 0 || j.retention_ms as u64 > marker_ms)
        {
            return Err(format!(
                "journal.retention_ms = {} outlives store.marker_retention_hours = {} ({marker_ms} ms): \
                 a replay could re-deliver a put older than a removed delete marker and resurrect \
                 the entity; raise marker_retention_hours or lower retention_ms (not -1)",
                j.retention_ms, self.store.marker_retention_hours
            ));
        }
        if !(j.snapshot_retention_hours >= 0.0 && j.snapshot_retention_hours.is_finite()) {
            return Err("journal.snapshot_retention_hours must be >= 0 (hours)".into());
        }
        if !(1..=86_400).contains(&j.snapshot_gc_interval_s) {
            return Err("journal.snapshot_gc_interval_s must be 1..=86400 (seconds)".into());
        }
        if let Some(url) = &j.schema_registry_url {
            check_registry_url(url).map_err(|e| format!("journal.schema_registry_url: {e}"))?;
        }
        if j.framing == super::Framing::Confluent && j.schema_registry_url.is_none() {
            return Err("journal.framing = \"confluent\" needs journal.schema_registry_url (the registry that gives the schemas their ids)".into());
        }
        if j.enabled && j.apply {
            return Err("journal.enabled (journal this node's writes) and journal.apply (apply the journal here) cannot both be on: a node is a source or a target".into());
        }
        Ok(())
    }
}

/// An `http(s)://host[:port][/path]` base URL.
fn check_registry_url(url: &str) -> Result<(), String> {
    let u = reqwest::Url::parse(url)
        .map_err(|e| format!("{url:?} is not a URL ({e}): want http(s)://host[:port][/path]"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(format!("{url:?}: want http(s)://host[:port][/path]"));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(format!("{url:?}: no query or fragment"));
    }
    Ok(())
}
