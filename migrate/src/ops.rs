//! Operator commands that talk to running nodes: `status`, `replay`, `digest`.

use std::time::Duration;

use anyhow::bail;
use serde_json::{json, Value};

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Node base URL.
    #[arg(long, default_value = "http://127.0.0.1:8082")]
    pub node: String,
    /// Refresh every second until ctrl-c.
    #[arg(long)]
    pub watch: bool,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
#[group(id = "from", required = true, multiple = false)]
pub struct ReplayArgs {
    /// Target node (the one applying the journal).
    #[arg(long, default_value = "http://127.0.0.1:8082")]
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
}

#[derive(clap::Args, Debug)]
pub struct DigestArgs {
    /// Node base URL.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    pub node: String,
    /// A second node to compare with; exits non-zero on any difference.
    #[arg(long)]
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

fn client() -> reqwest::Client {
    crate::client::admin_http(Duration::from_secs(60))
}

async fn get_json(url: &str) -> anyhow::Result<Value> {
    crate::client::send_json(client().get(url), &format!("GET {url}")).await
}

/// The status as aligned text lines.
fn status_text(s: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {} ({}), outbox pending {}",
        s["name"].as_str().unwrap_or("?"),
        s["role"].as_str().unwrap_or("?"),
        s["outbox_pending"].as_u64().unwrap_or(0)
    );
    if let Some(r) = s.get("relay") {
        let _ = writeln!(
            out,
            "  relay: shipped {}, send errors {}, last error {}",
            r["shipped"], r["send_errors"], r["last_error"]
        );
    }
    if let Some(a) = s.get("apply") {
        let _ = writeln!(
        out,
            "  apply: {} transactions, writes applied {} / stale {} / blacklisted {}, dead-lettered {}, {}",
            a["transactions"], a["writes_applied"], a["writes_stale"], a["writes_blacklisted"], a["dead_lettered"],
            a["state"].as_str().unwrap_or("?").replace('_', " ").to_uppercase()
        );
        if let Some(e) = a["lag_error"].as_str() {
            let _ = writeln!(out, "  lag unavailable: {e}");
        }
        let _ = writeln!(
            out,
            "  {:>4} {:>12} {:>12} {:>10} {:>9}  progress",
            "part", "stored", "high-water", "lag", "lag s"
        );
        for p in a["partitions"].as_array().into_iter().flatten() {
            let (stored, hw) = (
                p["stored"].as_i64().unwrap_or(0),
                p["high_watermark"].as_i64().unwrap_or(0),
            );
            let frac = if hw > 0 {
                stored as f64 / hw as f64
            } else {
                1.0
            };
            let filled = (frac.clamp(0.0, 1.0) * 30.0).round() as usize;
            let _ = writeln!(
                out,
                "  {:>4} {:>12} {:>12} {:>10} {:>9}  [{}{}]{}",
                p["partition"].as_i64().unwrap_or(-1),
                stored,
                hw,
                p["lag_records"].as_i64().unwrap_or(0),
                p["lag_seconds"]
                    .as_f64()
                    .map_or("?".to_string(), |s| format!("{s:.1}")),
                "=".repeat(filled),
                " ".repeat(30 - filled),
                p["halted"]
                    .as_str()
                    .map(|h| format!(" HALTED: {h}"))
                    .unwrap_or_default()
            );
        }
    }
    out
}

pub async fn status(a: StatusArgs) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};
    let tty = std::io::stdout().is_terminal();
    loop {
        let s = match get_json(&format!("{}/v1/admin/status", a.node)).await {
            Ok(s) => s,
            // A watch outlives a node restart: say so and keep watching.
            Err(e) if a.watch => {
                eprintln!("{e:#}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut text = String::new();
        if a.json {
            text = format!("{s}\n");
        } else {
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

pub async fn replay(a: ReplayArgs) -> anyhow::Result<()> {
    let body = if a.from_beginning {
        json!({"from_beginning": true})
    } else if let Some(ts) = a.from_timestamp {
        json!({"from_timestamp_ms": ts})
    } else if !a.from_offset.is_empty() {
        json!({"from_offsets": a.from_offset.iter().map(|(p, o)| json!({"partition": p, "offset": o})).collect::<Vec<_>>()})
    } else {
        bail!(
            "say where to replay from: --from-offset P:O, --from-timestamp MS or --from-beginning"
        );
    };
    let url = format!("{}/v1/admin/replay", a.node);
    let r = client()
        .post(&url)
        .json(&body)
        .send()
        .await
        .map_err(|e| crate::client::unreachable_node(e, &format!("POST {url}")))?;
    let status = r.status();
    let v: Value = r.json().await?;
    if !status.is_success() {
        bail!("replay refused: {}", v["error"]);
    }
    println!("replay started; stored offsets now {}", v["rewound_to"]);
    println!("follow progress with: northwest status --node {}", a.node);
    Ok(())
}

async fn fetch_digest(node: &str, a: &DigestArgs) -> anyhow::Result<Value> {
    let mut url = format!("{node}/v1/ns/{}/digest", a.ns);
    if let Some(p) = &a.prefix {
        url.push_str(&format!("?prefix={p}"));
    }
    get_json(&url).await
}

/// The node that really serves namespace `ns` when asked at `node`: itself,
/// or the target it forwards to after a cutover (whose digest it returns).
/// Named by the deployment's own name, so two spellings of one URL match.
async fn served_by(node: &str, ns: &str) -> anyhow::Result<(String, String)> {
    let s = get_json(&format!("{node}/v1/admin/status")).await?;
    let Some(t) = s["proxies"][ns].as_str() else {
        return Ok((
            node.to_string(),
            s["name"].as_str().unwrap_or(node).to_string(),
        ));
    };
    println!(
        "{node} no longer serves namespace {ns} (cut over): it forwards to {t}, so its digest below is {t}'s"
    );
    let st = get_json(&format!("{t}/v1/admin/status")).await?;
    Ok((t.to_string(), st["name"].as_str().unwrap_or(t).to_string()))
}

pub async fn digest(a: DigestArgs) -> anyhow::Result<()> {
    if let Some(other) = &a.compare {
        let (x, nx) = served_by(&a.node, &a.ns).await?;
        let (_, ny) = served_by(other, &a.ns).await?;
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
    let d1 = fetch_digest(&a.node, &a).await?;
    println!(
        "{}: {} entities, digest {}",
        a.node,
        d1["count"],
        d1["digest"].as_str().unwrap_or("")
    );
    let Some(other) = &a.compare else {
        for (k, v) in d1["kinds"].as_object().into_iter().flatten() {
            println!(
                "  {k:<24} {:>10} {}",
                v["count"],
                v["digest"].as_str().unwrap_or("")
            );
        }
        return Ok(());
    };
    let d2 = fetch_digest(other, &a).await?;
    println!(
        "{other}: {} entities, digest {}",
        d2["count"],
        d2["digest"].as_str().unwrap_or("")
    );
    let empty = serde_json::Map::new();
    let (k1, k2) = (
        d1["kinds"].as_object().unwrap_or(&empty),
        d2["kinds"].as_object().unwrap_or(&empty),
    );
    let mut differ = Vec::new();
    for k in k1.keys().chain(k2.keys().filter(|k| !k1.contains_key(*k))) {
        if k1.get(k) != k2.get(k) {
            differ.push(k.clone());
        }
    }
    if d1["digest"] == d2["digest"] && d1["count"] == d2["count"] {
        println!("EQUAL");
        Ok(())
    } else {
        bail!("digests differ; kinds that differ: {differ:?}")
    }
}
