//! What a node's config opens: the engine, the store over its coordinator,
//! the Kafka settings and the journal topic's shape.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use northwest_kafka::{KafkaSettings, TopicSpec};
use northwest_store::{
    Coordinator, Engine, LocalCoordinator, MemEngine, OutboxFullPolicy, PgConfig, PgEngine,
    RetryPolicy, RocksEngine, Store, StoreConfig, ZkCoordinator,
};

use crate::config::{CoordinationMode, Durability, EngineKind, NodeConfig, OutboxFull};

/// Opens the engine named by the config.
pub fn open_engine(cfg: &NodeConfig) -> anyhow::Result<Arc<dyn Engine>> {
    Ok(match cfg.store.engine {
        EngineKind::Memory => Arc::new(MemEngine::new()),
        EngineKind::Postgres => Arc::new(open_postgres(cfg)?),
        EngineKind::Rocksdb => Arc::new(
            RocksEngine::open_with_budget(
                &cfg.data_dir,
                cfg.store.sync_writes,
                cfg.store.rocksdb_memory_mb,
            )
            .with_context(|| {
                format!(
                    "opening RocksDB under {} (is another node using it?)",
                    cfg.data_dir.display()
                )
            })?,
        ),
    })
}

fn open_postgres(cfg: &NodeConfig) -> anyhow::Result<PgEngine> {
    let pg = &cfg.store.postgres;
    let password = match &pg.password_file {
        Some(f) => Some(northwest_store::pg::read_password(f)?),
        None => None,
    };
    let pc = PgConfig {
        host: pg.host.clone(),
        port: pg.port,
        user: pg.user.clone(),
        dbname: pg.database.clone(),
        password,
        schema: cfg.postgres_schema(),
        pool_size: pg.pool_size,
        timeout: Duration::from_millis(pg.timeout_ms),
    };
    let desc = pc.describe();
    let engine = if pg.shared {
        PgEngine::open_shared(pc)
    } else {
        PgEngine::open(pc)
    }
    .with_context(|| format!("opening PostgreSQL ({desc})"))?;
    tracing::info!(postgres = %desc, shared = pg.shared, "storage engine: PostgreSQL");
    Ok(engine)
}

/// A PostgreSQL node's tables as the snapshotter opens them.
pub fn pg_view(cfg: &NodeConfig) -> Option<northwest_control::api::PgView> {
    let pg = &cfg.store.postgres;
    (cfg.store.engine == EngineKind::Postgres).then(|| northwest_control::api::PgView {
        host: pg.host.clone(),
        port: pg.port,
        user: pg.user.clone(),
        database: pg.database.clone(),
        schema: cfg.postgres_schema(),
        password_file: pg.password_file.as_ref().map(|f| {
            std::path::absolute(f)
                .unwrap_or_else(|_| f.clone())
                .display()
                .to_string()
        }),
    })
}

pub fn store_config(cfg: &NodeConfig) -> StoreConfig {
    StoreConfig {
        origin: cfg.name.clone(),
        max_value_bytes: cfg.http.max_value_bytes,
        journal: cfg.journal.enabled,
        outbox_limit: cfg.journal.outbox_limit,
        outbox_full: match cfg.journal.outbox_full {
            OutboxFull::Reject => OutboxFullPolicy::Reject,
            OutboxFull::Block => OutboxFullPolicy::Block,
        },
        id_block: cfg.store.id_block,
        retry: RetryPolicy {
            attempts: cfg.store.retries,
            ..RetryPolicy::default()
        },
        // Also on a target: once promoted it journals the namespace's client
        // writes (to the reverse journal) and acknowledges them under the
        // same promise.
        sync_journal: (cfg.journal.durability == Durability::Sync).then(|| Duration::from_secs(10)),
        journal_message_limit: cfg.journal.max_message_bytes,
        // Another process of a shared schema may change what it would serve.
        read_cache_bytes: if cfg.store.postgres.shared {
            0
        } else {
            cfg.store.read_cache_mb << 20
        },
    }
}

pub fn kafka_settings(cfg: &NodeConfig) -> KafkaSettings {
    KafkaSettings {
        brokers: cfg.journal.brokers.clone(),
        properties: cfg.kafka.clone(),
        max_message_bytes: cfg.journal.max_message_bytes,
    }
}

pub fn journal_topic(cfg: &NodeConfig) -> TopicSpec {
    let retention = cfg.journal.retention_ms;
    let mut configs = vec![
        ("cleanup.policy".into(), "delete".into()),
        ("retention.ms".into(), retention.to_string()),
        // acks=all then needs all but one replica: one broker may fail
        // without stopping the journal or losing an acknowledged record.
        (
            "min.insync.replicas".into(),
            (cfg.journal.replication_factor - 1).max(1).to_string(),
        ),
    ];
    // Kafka deletes whole segments, and rolls one by default only after 7
    // days or 1 GiB: with a shorter retention the broker would keep (and a
    // replay from the start would read) up to a week more than configured.
    // Not below 10 min: managed Kafka services refuse shorter segments.
    if retention > 0 {
        let segment = (retention / 4).clamp(600_000, 86_400_000);
        configs.push(("segment.ms".into(), segment.to_string()));
    }
    TopicSpec {
        name: cfg.journal.topic.clone(),
        partitions: cfg.journal.partitions,
        replication: cfg.journal.replication_factor,
        configs,
    }
}

/// The store over the configured engine and coordinator (and the ZooKeeper
/// client the cutover gate records its state with), after checking the
/// pass-through Kafka properties.
pub(super) async fn open_store(
    cfg: &NodeConfig,
) -> anyhow::Result<(Arc<Store>, Option<Arc<ZkCoordinator>>)> {
    let engine = open_engine(cfg)?;
    let (coord, zk): (Arc<dyn Coordinator>, _) = match cfg.coordination.mode {
        CoordinationMode::Local => (Arc::new(LocalCoordinator::default()), None),
        CoordinationMode::Zookeeper => {
            let mut zc = cfg.zk();
            if let Some(f) = &cfg.coordination.auth_file {
                let text = crate::secrets::read_secret_file(f, "coordination.auth_file")
                    .map_err(anyhow::Error::msg)?;
                zc.auth = northwest_store::ZkDigest::new(text.trim())
                    .map_err(|e| anyhow::anyhow!("coordination.auth_file {}: {e}", f.display()))?;
            }
            let z = Arc::new(ZkCoordinator::connect(zc).await?);
            (z.clone(), Some(z))
        }
    };
    northwest_kafka::check_properties(&kafka_settings(cfg)).map_err(|e| {
        anyhow::anyhow!(
            "[kafka] properties: {e}; fix or remove them (see librdkafka's CONFIGURATION.md)"
        )
    })?;
    Ok((Store::open(engine, coord, store_config(cfg))?, zk))
}
