//! `northwest bench store`: single-op transactions, raw RocksDB vs local
//! locks vs ZooKeeper leases, in-process and over HTTP, and the same store
//! on PostgreSQL beside it.

use std::sync::Arc;
use std::time::Duration;

use northwest_store::engine::{Cf, WriteBatch};
use northwest_store::{
    Coordinator, Engine, LocalCoordinator, PgConfig, PgEngine, RocksEngine, Store, StoreConfig,
    ZkConfig, ZkCoordinator,
};

use crate::common::{in_process, measure, over_http, print_rows, say, Row, Shape};

mod shared;

#[derive(clap::Args, Debug, Clone)]
pub struct StoreBench {
    /// Operations per variant.
    #[arg(long, default_value_t = 20_000)]
    pub ops: u64,
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Entity groups the operations spread over (uniformly at random).
    #[arg(long, default_value_t = 256)]
    pub groups: u64,
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    #[arg(long, env = "NW_ZK", default_value = "127.0.0.1:2181")]
    pub zk: String,
    /// PostgreSQL (host:port) for the (d) rows: the dev stack's by default.
    #[arg(long, env = "NW_PG", default_value = "127.0.0.1:5433")]
    pub postgres: String,
    /// The `northwest` role's password file (the dev stack's by default).
    #[arg(
        long,
        env = "NW_PG_PASSWORD_FILE",
        default_value = ".northwest/stack/postgres/password"
    )]
    pub pg_password_file: std::path::PathBuf,
    /// Skip the PostgreSQL rows.
    #[arg(long)]
    pub no_postgres: bool,
    /// The (e) rows: how many `northwest node` processes share one
    /// PostgreSQL schema in each (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub processes: Vec<usize>,
}

/// (a): RocksDB alone, no store around it.
async fn raw_row(shape: &Shape, dir: &std::path::Path) -> anyhow::Result<Row> {
    let raw: Arc<dyn Engine> = Arc::new(RocksEngine::open(&dir.join("raw"), false)?);
    let value = vec![7u8; shape.value_bytes];
    let summary = measure(shape, move |n| {
        let (raw, value) = (raw.clone(), value.clone());
        async move {
            let mut wb = WriteBatch::default();
            wb.put(Cf::Entities, format!("k{n}").into_bytes(), value);
            raw.write(wb).map_err(|e| e.to_string())
        }
    })
    .await;
    Ok(Row {
        name: "(a) raw RocksDB put, in-process".into(),
        summary,
    })
}

/// A store over RocksDB at `dir/name` with `coord`'s locks.
fn store_at(
    dir: &std::path::Path,
    name: &str,
    coord: Arc<dyn Coordinator>,
    sync: bool,
) -> anyhow::Result<Arc<Store>> {
    let engine: Arc<dyn Engine> = Arc::new(RocksEngine::open(&dir.join(name), sync)?);
    Ok(Store::open(engine, coord, StoreConfig::default())?)
}

/// (b): the store with in-process locks, without and with fsync.
async fn local_rows(shape: &Shape, dir: &std::path::Path) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let local = store_at(dir, "local", Arc::new(LocalCoordinator::default()), false)?;
    rows.push(Row {
        name: "(b) store, local locks, in-process".into(),
        summary: in_process(shape, local.clone()).await,
    });
    // store.sync_writes = true: every commit waits for an fsync of the WAL;
    // concurrent commits share one sync through RocksDB's write group.
    let synced = store_at(dir, "sync", Arc::new(LocalCoordinator::default()), true)?;
    rows.push(Row {
        name: "(b) store, local locks, in-process, fsync per commit".into(),
        summary: in_process(shape, synced.clone()).await,
    });
    rows.push(Row {
        name: "(b) store, local locks, HTTP API, fsync per commit".into(),
        summary: over_http(shape, synced).await?,
    });
    rows.push(Row {
        name: "(b) store, local locks, HTTP API".into(),
        summary: over_http(shape, local).await?,
    });

    Ok(rows)
}

/// (c): the store with ZooKeeper group leases; (c') a lock per transaction.
async fn zk_rows(
    b: &StoreBench,
    shape: &Shape,
    dir: &std::path::Path,
    stamp: u128,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let zk_cfg = ZkConfig {
        connect: b.zk.clone(),
        root: format!("/northwest/bench-{stamp}"),
        ..ZkConfig::default()
    };
    let zk = ZkCoordinator::connect(zk_cfg)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let zk_store = store_at(dir, "zk", Arc::new(zk), false)?;
    rows.push(Row {
        name: "(c) store, ZooKeeper group leases, in-process".into(),
        summary: in_process(shape, zk_store.clone()).await,
    });
    rows.push(Row {
        name: "(c) store, ZooKeeper group leases, HTTP API".into(),
        summary: over_http(shape, zk_store).await?,
    });
    // The node's default: ZooKeeper leases and an fsync before every
    // acknowledgement (store.sync_writes = true).
    let zk_durable = ZkCoordinator::connect(ZkConfig {
        connect: b.zk.clone(),
        root: format!("/northwest/bench-{stamp}-durable"),
        ..ZkConfig::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let zk_durable = store_at(dir, "zk-durable", Arc::new(zk_durable), true)?;
    rows.push(Row {
        name: "(c) store, ZooKeeper group leases, HTTP API, fsync per commit (default)".into(),
        summary: over_http(shape, zk_durable).await?,
    });

    // Every transaction pays a ZooKeeper lock round trip: no lease reuse.
    let no_lease = ZkConfig {
        connect: b.zk.clone(),
        root: format!("/northwest/bench-{stamp}-nolease"),
        lease_max_hold: Duration::ZERO,
        ..ZkConfig::default()
    };
    let zk2 = ZkCoordinator::connect(no_lease)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let zk2_store = store_at(dir, "zk2", Arc::new(zk2), false)?;
    rows.push(Row {
        name: "(c') store, ZooKeeper lock per txn, in-process".into(),
        summary: in_process(shape, zk2_store).await,
    });
    Ok(rows)
}

/// A store on a fresh schema of `b.postgres`.
fn pg_store(
    b: &StoreBench,
    schema: &str,
    coord: Arc<dyn Coordinator>,
) -> anyhow::Result<(Arc<Store>, Arc<PgEngine>)> {
    let (host, port) = b
        .postgres
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("--postgres {}: use host:port", b.postgres))?;
    let password = northwest_store::pg::read_password(&b.pg_password_file).map_err(|e| {
        anyhow::anyhow!("{e} (start the dev stack with `deploy/stack.sh up`, set --pg-password-file, or pass --no-postgres)")
    })?;
    let engine = Arc::new(
        PgEngine::open(PgConfig {
            host: host.to_string(),
            port: port.parse()?,
            user: "northwest".into(),
            dbname: "northwest".into(),
            password: Some(password),
            schema: schema.to_string(),
            pool_size: 32,
            timeout: Duration::from_secs(10),
        })
        .map_err(|e| {
            anyhow::anyhow!("{e} (is PostgreSQL up? `deploy/stack.sh up`, or pass --no-postgres)")
        })?,
    );
    let dyn_engine: Arc<dyn Engine> = engine.clone();
    Ok((
        Store::open(dyn_engine, coord, StoreConfig::default())?,
        engine,
    ))
}

/// (d): PostgreSQL (durable commits: the engine always runs with
/// synchronous_commit on): the engine alone, the store with local locks
/// in-process and over HTTP, and the PostgreSQL node's default (ZooKeeper
/// leases) over HTTP.
async fn pg_rows(b: &StoreBench, shape: &Shape, stamp: u128) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut engines = Vec::new();
    let (_, raw) = pg_store(
        b,
        &format!("bench_{stamp}_raw"),
        Arc::new(LocalCoordinator::default()),
    )?;
    engines.push(raw.clone());
    let value = vec![7u8; shape.value_bytes];
    let summary = measure(shape, move |n| {
        let (raw, value) = (raw.clone(), value.clone());
        async move {
            let mut wb = WriteBatch::default();
            wb.put(Cf::Entities, format!("k{n}").into_bytes(), value);
            tokio::task::block_in_place(|| raw.write(wb)).map_err(|e| e.to_string())
        }
    })
    .await;
    rows.push(Row {
        name: "(d) raw PostgreSQL engine put (one SQL transaction), in-process, durable".into(),
        summary,
    });
    let (durable, e) = pg_store(
        b,
        &format!("bench_{stamp}_sync"),
        Arc::new(LocalCoordinator::default()),
    )?;
    engines.push(e);
    rows.push(Row {
        name: "(d) PostgreSQL store, local locks, in-process, durable commits".into(),
        summary: in_process(shape, durable.clone()).await,
    });
    rows.push(Row {
        name: "(d) PostgreSQL store, local locks, HTTP API, durable commits".into(),
        summary: over_http(shape, durable).await?,
    });
    let zk = ZkCoordinator::connect(ZkConfig {
        connect: b.zk.clone(),
        root: format!("/northwest/bench-{stamp}-pg"),
        ..ZkConfig::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (zk_store, e) = pg_store(b, &format!("bench_{stamp}_zk"), Arc::new(zk))?;
    engines.push(e);
    rows.push(Row {
        name: "(d) PostgreSQL store, ZooKeeper group leases, HTTP API, durable commits (default)"
            .into(),
        summary: over_http(shape, zk_store).await?,
    });
    for e in engines {
        if let Err(err) = e.drop_schema() {
            say!("could not drop the bench schema {}: {err}", e.describe());
        }
    }
    Ok(rows)
}

pub async fn run(b: StoreBench) -> anyhow::Result<()> {
    let shape = Shape {
        ops: b.ops,
        clients: b.clients,
        groups: b.groups,
        value_bytes: b.value_bytes,
    };
    let dir = tempfile::tempdir()?;
    let mut rows = Vec::new();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    say!(
        "bench store: {} single-op put transactions per variant, {} concurrent clients, {} entity groups, {} B values, RocksDB (no fsync unless a row says so) and PostgreSQL",
        b.ops, b.clients, b.groups, b.value_bytes
    );

    rows.push(raw_row(&shape, dir.path()).await?);
    rows.extend(local_rows(&shape, dir.path()).await?);
    rows.extend(zk_rows(&b, &shape, dir.path(), stamp).await?);
    if !b.no_postgres {
        rows.extend(pg_rows(&b, &shape, stamp).await?);
        rows.extend(shared::shared_rows(&b, &shape, stamp).await?);
    }
    print_rows("results", &rows);
    Ok(())
}
