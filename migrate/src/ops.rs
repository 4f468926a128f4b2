//! Operator commands that talk to running nodes: `status`, `replay`, `digest`.

use std::time::Duration;

use anyhow::{bail, Context};
use northwest_control::api::{
    self, ApplyStatus, DigestResponse, NodeStatus, PartitionOffset, ReplayRequest, ReplayResponse,
};
use northwest_control::AdminClient;

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Node base URL.
    #[arg(long, default_value = "http://127.0.0.1:8082", value_parser = northwest_control::client::node_url)]
    pub node: String,
    /// Refresh every second until ctrl-c.
    #[arg(long)]
    pub watch: bool,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
// Only the starting points form the group: a struct-level group would take
// `--node` in too and refuse every `--node URL --from-...`.
#[group(skip)]
#[command(group = clap::ArgGroup::new("from").required(true).multiple(false))]
pub struct ReplayArgs {
    /// Target node (the one applying the journal).
    #[arg(long, default_value = "http://127.0.0.1:8082", value_parser = northwest_control::client::node_url)]
    pub node: String,
    /// Rewind partition P to offset O (`P:O`, repeatable).
    #[arg(long = "from-offset", value_parser = parse_part_offset, group = "from")]
    pub from_offset: Vec<(i32, i64)>,
    /// Rewind every partition to the first record at/after this time
    /// (milliseconds since the epoch).
    #[arg(long, group = "from")]
    pub from_timestamp: Option<i64>,
    /// Rewind every partition to its first retained record.
    #[arg(long, group = "from")]
    pub from_beginning: bool,
    /// Rewind every partition to where epoch K of `--namespace`'s timeline
    /// begins (`northwest timeline` lists them).
    #[arg(long, group = "from", requires = "namespace")]
    pub from_epoch: Option<u32>,
    /// The namespace whose timeline `--from-epoch` reads.
    #[arg(long, requires = "from_epoch")]
    pub namespace: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct DigestArgs {
    /// Node base URL.
    #[arg(long, default_value = "http://127.0.0.1:8081", value_parser = northwest_control::client::node_url)]
    pub node: String,
    /// A second node to compare with; exits non-zero on any difference.
    #[arg(long, value_parser = northwest_control::client::node_url)]
    pub compare: Option<String>,
    #[arg(long, default_value = "demo")]
    pub ns: String,
    #[arg(long)]
    pub prefix: Option<String>,
}

fn parse_part_offset(s: &str) -> Result<(i32, i64), String> {
    let (p, o) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected PARTITION:OFFSET, e.g. 0:1500"))?;
    Ok((
        p.parse().map_err(|_| format!("bad partition in {s:?}"))?,
        o.parse().map_err(|_| format!("bad offset in {s:?}"))?,
    ))
}

/// The status as aligned text lines.
fn status_text(s: &NodeStatus) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {} ({}, engine {}), outbox pending {}",
        s.name,
        s.role,
        if s.engine.is_empty() { "?" } else { &s.engine },
        s.outbox_pending
    );
    if let Some(r) = &s.relay {
        let _ = writeln!(
            out,
            "  relay: shipped {}, send errors {}, last error {}",
            r.shipped,
            r.send_errors,
            r.last_error.as_deref().unwrap_or("none")
        );
    }
    if let Some(a) = &s.apply {
        apply_text(&mut out, a);
    }
    if let Some(g) = &s.snapshot_gc {
        if let Some(e) = &g.last_error {
            let since = g.failing_since_ms.map_or(0, |t| {
                (northwest_store::store::now_ms_pub() - t).max(0) / 1000
            });
            let _ = writeln!(
                out,
                "  snapshot topic GC FAILING for {since} s (old snapshot topics stay): {e}"
            );
        }
    }
    for m in &s.migrations {
        let _ = writeln!(
            out,
            "  migration {} of {} ({} -> {}): {}{}",
            m.id,
            m.namespace,
            m.from,
            m.to,
            m.phase.name(),
            m.error
                .as_deref()
                .map(|e| format!(", STOPPED: {e}"))
                .unwrap_or_default()
        );
        if let Some(p) = &m.snapshot {
            let idle = (northwest_store::store::now_ms_pub() - p.advanced_at_ms).max(0) / 1000;
            let _ = writeln!(
                out,
                "    snapshot: streamed {} of ~{} rows ({:.1} MiB), loaded {}, {:.0} rows/s, eta {}{}",
                p.rows_streamed,
                p.rows_total,
                p.bytes_streamed as f64 / 1048576.0,
                p.rows_loaded,
                p.rows_per_sec,
                p.eta_seconds.map_or("?".into(), |e| format!("{e:.0} s")),
                if idle > 60 { format!(", NO PROGRESS for {idle} s") } else { String::new() }
            );
        }
    }
    out
}

fn apply_text(out: &mut String, a: &ApplyStatus) {
    use std::fmt::Write as _;
    let state = serde_json::to_value(a.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  apply: {} transactions, writes applied {} / stale {} / blacklisted {}, dead-lettered {}, {}",
        a.transactions, a.writes_applied, a.writes_stale, a.writes_blacklisted, a.dead_lettered,
        state.replace('_', " ").to_uppercase()
    );
    if let Some(r) = &a.reason {
        let _ = writeln!(out, "  why: {r}");
    }
    if let Some(e) = &a.lag_error {
        let _ = writeln!(out, "  lag unavailable: {e}");
    }
    let _ = writeln!(
        out,
        "  {:>4} {:>12} {:>12} {:>10} {:>9}  progress",
        "part", "stored", "high-water", "lag", "lag s"
    );
    for p in &a.partitions {
        let (stored, hw) = (p.stored.unwrap_or(0), p.high_watermark);
        let frac = if hw > 0 {
            stored as f64 / hw as f64
        } else {
            1.0
        };
        let filled = (frac.clamp(0.0, 1.0) * 30.0).round() as usize;
        let _ = writeln!(
            out,
            "  {:>4} {:>12} {:>12} {:>10} {:>9}  [{}{}]{}",
            p.partition,
            stored,
            hw,
            p.lag_records,
            p.lag_seconds.map_or("?".to_string(), |s| format!("{s:.1}")),
            "=".repeat(filled),
            " ".repeat(30 - filled),
            p.halted
                .as_deref()
                .map(|h| format!(" HALTED: {h}"))
                .unwrap_or_default()
        );
    }
}

/// Operator commands answer within this (a migration's calls may take
/// longer: they wait on drains and digests).
const OPS_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn status(a: StatusArgs, admin: &AdminClient) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};
    let tty = std::io::stdout().is_terminal();
    let admin = admin.with_timeout(OPS_TIMEOUT);
    loop {
        // As the node wrote it: `--json` passes on fields this build does
        // not know (a newer node's) instead of dropping them.
        let raw = match admin
            .get::<serde_json::Value>(&a.node, api::path::STATUS)
            .await
        {
            Ok(s) => s,
            // A watch outlives a node restart: say so and keep watching.
            Err(e) if a.watch => {
                eprintln!("{e:#}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let mut text = String::new();
        if a.json {
            text = format!("{}\n", serde_json::to_string(&raw)?);
        } else {
            let s: NodeStatus = serde_json::from_value(raw).map_err(|e| {
                anyhow::anyhow!(
                    "{}'s status is not what this build reads ({e}); are the node and this \
                     command the same version? `status --json` shows it as it is",
                    a.node
                )
            })?;
            if a.watch {
                if tty {
                    // Clear the screen and redraw in place.
                    text.push_str("\x1b[2J\x1b[H");
                } else {
                    text.push_str(&format!("--- {}\n", northwest_store::store::now_ms_pub()));
                }
            }
            text.push_str(&status_text(&s));
        }
        let mut out = std::io::stdout().lock();
        // A closed pipe (`status --watch | head`) ends the command quietly.
        if out
            .write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return Ok(());
        }
        drop(out);
        if !a.watch {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub async fn replay(a: ReplayArgs, admin: &AdminClient) -> anyhow::Result<()> {
    let admin = &admin.with_timeout(OPS_TIMEOUT);
    let req = if a.from_beginning {
        ReplayRequest {
            from_beginning: true,
            ..Default::default()
        }
    } else if let Some(ts) = a.from_timestamp {
        ReplayRequest {
            from_timestamp_ms: Some(ts),
            ..Default::default()
        }
    } else if let (Some(k), Some(ns)) = (a.from_epoch, a.namespace.as_deref()) {
        ReplayRequest {
            from_offsets: epoch_start(admin, &a.node, ns, k).await?,
            ..Default::default()
        }
    } else if !a.from_offset.is_empty() {
        ReplayRequest {
            from_offsets: a
                .from_offset
                .iter()
                .map(|&(partition, offset)| PartitionOffset { partition, offset })
                .collect(),
            ..Default::default()
        }
    } else {
        bail!(
            "say where to replay from: --from-offset P:O, --from-timestamp MS or --from-beginning"
        );
    };
    let r: ReplayResponse = admin
        .post(&a.node, api::path::REPLAY, &req)
        .await
        .context("replay refused")?;
    println!("replay started; stored offsets now {:?}", r.rewound_to);
    println!("follow progress with: northwest status --node {}", a.node);
    Ok(())
}

/// Where epoch `k` of `ns`'s timeline begins on every partition, as `node`
/// reads the timeline.
async fn epoch_start(
    admin: &AdminClient,
    node: &str,
    ns: &str,
    k: u32,
) -> anyhow::Result<Vec<PartitionOffset>> {
    let v: northwest_control::timeline::TimelineView = admin
        .get(node, &api::path::timeline(ns))
        .await
        .with_context(|| format!("reading the timeline of {ns} from {node}"))?;
    let Some((begins, _)) = v.timeline.range_of(k) else {
        let known: Vec<u32> = v.timeline.epochs.iter().map(|e| e.epoch).collect();
        bail!("namespace {ns} has no epoch {k} (its epochs: {known:?}; see northwest timeline)");
    };
    Ok(begins
        .iter()
        .map(|(&partition, &offset)| PartitionOffset { partition, offset })
        .collect())
}

async fn fetch_digest(
    admin: &AdminClient,
    node: &str,
    a: &DigestArgs,
) -> anyhow::Result<DigestResponse> {
    let mut path = api::path::digest(&a.ns, false);
    if let Some(p) = &a.prefix {
        path.push_str(&format!("?prefix={p}"));
    }
    Ok(admin.get(node, &path).await?)
}

/// The node that really serves namespace `ns` when asked at `node`: itself,
/// or the target it forwards to after a cutover (whose digest it returns).
/// Named by the deployment's own name, so two spellings of one URL match.
async fn served_by(admin: &AdminClient, node: &str, ns: &str) -> anyhow::Result<(String, String)> {
    let s = admin.status(node).await?;
    let Some(t) = s.forwards(ns) else {
        return Ok((node.to_string(), s.name));
    };
    println!(
        "{node} no longer serves namespace {ns} (cut over): it forwards to {t}, so its digest below is {t}'s"
    );
    let st = admin.status(t).await?;
    Ok((t.to_string(), st.name))
}

pub async fn digest(a: DigestArgs, admin: &AdminClient) -> anyhow::Result<()> {
    let admin = &admin.with_timeout(OPS_TIMEOUT);
    if let Some(other) = &a.compare {
        let (x, nx) = served_by(admin, &a.node, &a.ns).await?;
        let (_, ny) = served_by(admin, other, &a.ns).await?;
        if nx == ny {
            bail!(
                "{} and {other} both serve namespace {} from deployment {nx} ({x}): comparing it \
                 with itself proves nothing. Compare before the switch (migrate's verify phase \
                 does), or compare {x} with another copy",
                a.node,
                a.ns
            );
        }
    }
    let d1 = fetch_digest(admin, &a.node, &a).await?;
    println!("{}: {} entities, digest {}", a.node, d1.count, d1.digest);
    let Some(other) = &a.compare else {
        for (k, v) in &d1.kinds {
            println!("  {k:<24} {:>10} {}", v.count, v.digest);
        }
        return Ok(());
    };
    let d2 = fetch_digest(admin, other, &a).await?;
    println!("{other}: {} entities, digest {}", d2.count, d2.digest);
    let differ: Vec<&String> = d1
        .kinds
        .keys()
        .chain(d2.kinds.keys().filter(|k| !d1.kinds.contains_key(*k)))
        .filter(|k| d1.kinds.get(*k) != d2.kinds.get(*k))
        .collect();
    if d1.digest == d2.digest && d1.count == d2.count {
        println!("EQUAL");
        Ok(())
    } else {
        bail!("digests differ; kinds that differ: {differ:?}")
    }
}
