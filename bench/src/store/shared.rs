//! (e): one PostgreSQL schema served by one, two, three ... `northwest node`
//! processes of one deployment (`store.postgres.shared`), ZooKeeper leases
//! between them, the clients spread over the processes: what adding a
//! process to a deployment buys.

use std::path::Path;
use std::sync::Arc;

use crate::common::{measure, say, Row, Shape};
use crate::procs::{free_port, spawn_pinned, wait_healthy, Proc};

use super::StoreBench;

/// A process's config: the shared deployment `bench` on `schema`.
fn toml(
    b: &StoreBench,
    data: &Path,
    port: u16,
    root: &str,
    schema: &str,
) -> anyhow::Result<String> {
    let (host, pg_port) = b
        .postgres
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("--postgres {}: use host:port", b.postgres))?;
    let password = std::path::absolute(&b.pg_password_file)?;
    Ok(format!(
        r#"name = "bench"
data_dir = "{data}"
[http]
listen = "127.0.0.1:{port}"
[coordination]
connect = "{zk}"
root = "{root}"
[journal]
enabled = false
apply = false
[store]
engine = "postgres"
[store.postgres]
host = "{host}"
port = {pg_port}
password_file = "{password}"
schema = "{schema}"
shared = true
"#,
        data = data.display(),
        zk = b.zk,
        password = password.display(),
    ))
}

/// Starts `k` processes of one shared deployment; their base URLs.
async fn start(
    b: &StoreBench,
    dir: &Path,
    k: usize,
    root: &str,
    schema: &str,
) -> anyhow::Result<(Vec<Proc>, Vec<String>)> {
    let cores = (0..std::thread::available_parallelism()?.get())
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let (mut procs, mut bases) = (Vec::new(), Vec::new());
    for i in 0..k {
        let port = free_port()?;
        let conf = dir.join(format!("p{k}-{i}.toml"));
        std::fs::write(
            &conf,
            toml(b, &dir.join(format!("p{k}-{i}")), port, root, schema)?,
        )?;
        let log = dir.join(format!("p{k}-{i}.log"));
        procs.push(spawn_pinned(
            &cores,
            &["node", "--config", &conf.to_string_lossy()],
            &log,
        )?);
        let base = format!("http://127.0.0.1:{port}");
        wait_healthy(&base, &log).await?;
        bases.push(base);
    }
    Ok((procs, bases))
}

/// Two rows per process count in `b.processes`: clients spreading their
/// requests over every process (each group's lease then moves between
/// processes), and clients sending each entity group to one process (as a
/// router that knows the groups would: leases stay put).
pub(super) async fn shared_rows(
    b: &StoreBench,
    shape: &Shape,
    stamp: u128,
) -> anyhow::Result<Vec<Row>> {
    let dir = tempfile::tempdir()?;
    let mut rows = Vec::new();
    for &k in &b.processes {
        for by_group in [false, true] {
            if by_group && k == 1 {
                continue;
            }
            let tag = if by_group { "g" } else { "s" };
            let (root, schema) = (
                format!("/northwest/bench-{stamp}-p{k}{tag}"),
                format!("bench_{stamp}_p{k}{tag}"),
            );
            let (procs, bases) = start(b, dir.path(), k, &root, &schema).await?;
            let summary = drive_puts(shape, bases, by_group).await?;
            drop(procs);
            let how = if by_group {
                "each entity group sent to one process"
            } else {
                "requests spread over the processes"
            };
            rows.push(Row {
                name: format!(
                    "(e) PostgreSQL, {k} node process(es) sharing one schema, {how}, ZooKeeper group leases, HTTP API, durable commits"
                ),
                summary,
            });
            if let Err(e) = super::pg_store(
                b,
                &schema,
                Arc::new(northwest_store::LocalCoordinator::default()),
            )
            .and_then(|(_, e)| e.drop_schema().map_err(anyhow::Error::from))
            {
                say!("could not drop the bench schema {schema}: {e}");
            }
        }
    }
    Ok(rows)
}

/// Single-op puts over HTTP to `bases`: the n-th request to process
/// n mod k, or (`by_group`) to the process its entity group hashes to.
async fn drive_puts(
    shape: &Shape,
    bases: Vec<String>,
    by_group: bool,
) -> anyhow::Result<serde_json::Value> {
    use rand::Rng;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(shape.clients * 2)
        .build()?;
    let (groups, value, bases) = (
        shape.groups.max(1),
        vec![7u8; shape.value_bytes],
        Arc::new(bases),
    );
    Ok(measure(shape, move |n| {
        let (client, value, bases) = (client.clone(), value.clone(), bases.clone());
        async move {
            let g = rand::rng().random_range(0..groups);
            let i = if by_group { g } else { n } as usize % bases.len();
            let url = format!("{}/v1/ns/bench/e/Bench:{g}/Item:{n}", bases[i]);
            match client.put(url).body(value).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(r.status().to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await)
}
