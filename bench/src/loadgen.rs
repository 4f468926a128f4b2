//! `northwest loadgen`: drives a node's HTTP API with a mix of reads, writes,
//! deletes and multi-op transactions, or loads sample entities; reports
//! requests issued vs failed and latency percentiles.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use rand::Rng;

#[derive(clap::Args, Debug, Clone)]
pub struct LoadgenArgs {
    /// Node base URL.
    #[arg(long, default_value = "http://127.0.0.1:8081", value_parser = northwest_control::client::node_url)]
    pub target: String,
    /// A file holding a data token for `--ns` (one of the node's
    /// `http.data_tokens_file` tokens), sent as `Authorization: Bearer`.
    /// Without it the global `--admin-token-file`, when given, is sent (the
    /// admin token may call every namespace's data API).
    #[arg(long, env = "NORTHWEST_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
    #[arg(long, default_value = "demo")]
    pub ns: String,
    /// `load`: put every sample entity once; `mixed`: random operations.
    #[arg(long, default_value = "mixed")]
    pub mode: String,
    /// Sample entities (keys `Account:<g>/Item:<i>`).
    #[arg(long, default_value_t = 10_000)]
    pub entities: u64,
    /// Entity groups the entities are spread over.
    #[arg(long, default_value_t = 1_000)]
    pub groups: u64,
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Mixed mode: run this long (e.g. 10s, 2m); 0 = until ctrl-c.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Mixed mode: fraction of reads.
    #[arg(long, default_value_t = 0.5)]
    pub reads: f64,
    #[arg(long, default_value_t = 256)]
    pub value_bytes: usize,
    /// Mixed mode: target requests/s across all clients; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Print a JSON report instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?}: use e.g. 500ms, 10s, 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?}: use ms, s, m or h")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Outcome counters and latency histogram shared by the workers.
pub struct Tally {
    pub issued: AtomicU64,
    pub failed: AtomicU64,
    pub hist: Mutex<Histogram<u64>>,
    pub errors: Mutex<Vec<String>>,
    /// One histogram per [`WINDOW`] since the tally began, by when each
    /// request started: a throttle's budget holds per window, and a run's
    /// whole-run p99 can hide a bad window.
    windows: Mutex<Vec<Histogram<u64>>>,
    origin: Instant,
}

/// The span of each of [`Tally`]'s latency windows.
pub const WINDOW: Duration = Duration::from_secs(10);

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            issued: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            hist: Mutex::new(histogram()),
            errors: Mutex::new(Vec::new()),
            windows: Mutex::new(Vec::new()),
            origin: Instant::now(),
        }
    }
}

impl Tally {
    pub fn record(&self, started: Instant, ok: Result<(), String>) {
        self.issued.fetch_add(1, Ordering::Relaxed);
        let us = started.elapsed().as_micros().max(1) as u64;
        let _ = self.hist.lock().record(us);
        let w =
            (started.saturating_duration_since(self.origin).as_secs() / WINDOW.as_secs()) as usize;
        let mut windows = self.windows.lock();
        if windows.len() <= w {
            windows.resize_with(w + 1, histogram);
        }
        let _ = windows[w].record(us);
        if let Err(e) = ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut errs = self.errors.lock();
            if errs.len() < 10 {
                errs.push(e);
            }
        }
    }

    pub fn summary(&self, elapsed: Duration) -> serde_json::Value {
        let h = self.hist.lock();
        let issued = self.issued.load(Ordering::Relaxed);
        // Only whole windows with requests in them: the last one is cut
        // short by the run's end.
        let windows = self.windows.lock();
        let full = windows.len().saturating_sub(1);
        let window_p99: Vec<f64> = windows[..full]
            .iter()
            .filter(|w| !w.is_empty())
            .map(|w| w.value_at_quantile(0.99) as f64 / 1000.0)
            .collect();
        serde_json::json!({
            "issued": issued,
            "failed": self.failed.load(Ordering::Relaxed),
            "seconds": elapsed.as_secs_f64(),
            "rate_per_s": issued as f64 / elapsed.as_secs_f64().max(1e-9),
            "latency_ms": {
                "mean": h.mean() / 1000.0,
                "p50": h.value_at_quantile(0.5) as f64 / 1000.0,
                "p99": h.value_at_quantile(0.99) as f64 / 1000.0,
                "p99_9": h.value_at_quantile(0.999) as f64 / 1000.0,
                "max": h.max() as f64 / 1000.0,
            },
            "window_s": WINDOW.as_secs(),
            "window_p99_ms": window_p99,
            "worst_window_p99_ms": window_p99.iter().copied().fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v)))),
            "first_errors": *self.errors.lock(),
        })
    }
}

fn key(group: u64, item: u64) -> String {
    format!("Account:{group}/Item:{item}")
}

async fn check(resp: Result<reqwest::Response, reqwest::Error>, ok: &[u16]) -> Result<(), String> {
    match resp {
        Ok(r) if ok.contains(&r.status().as_u16()) => Ok(()),
        Ok(r) => {
            let status = r.status();
            Err(format!("{status}: {}", r.text().await.unwrap_or_default()))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// The HTTP client of the workers: the bearer token (`--token-file`, else
/// the admin token) and the CA of an https:// target.
fn client(
    a: &LoadgenArgs,
    admin_token_file: Option<&std::path::Path>,
    ca_file: Option<&std::path::Path>,
) -> anyhow::Result<reqwest::Client> {
    use northwest_control::client::{read_ca_bundle, read_token_file};
    let token = match (&a.token_file, admin_token_file) {
        (Some(p), _) => Some(read_token_file(p, "--token-file")),
        (None, Some(p)) => Some(read_token_file(p, "--admin-token-file")),
        (None, None) => None,
    }
    .transpose()
    .map_err(anyhow::Error::msg)?;
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
            .map_err(|_| anyhow::anyhow!("the token holds characters a header cannot carry"))?;
        v.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    let mut b = reqwest::Client::builder()
        .pool_max_idle_per_host(a.concurrency * 2)
        .default_headers(headers);
    if let Some(p) = ca_file {
        b = b.tls_built_in_root_certs(false);
        for c in read_ca_bundle(p, "--ca-file").map_err(anyhow::Error::msg)? {
            b = b.add_root_certificate(c);
        }
    }
    Ok(b.build()?)
}

/// One read before the load: a node that refuses this client's
/// credentials (or cannot be reached) stops the run with what to do,
/// rather than failing every request of it.
async fn preflight(c: &reqwest::Client, a: &LoadgenArgs) -> anyhow::Result<()> {
    let url = format!("{}/v1/ns/{}/scan?limit=1", a.target, a.ns);
    let r = c.get(&url).send().await.map_err(|e| {
        anyhow::anyhow!(
            "{}: {e} ({})",
            a.target,
            northwest_control::client::unreachable_hint(&e)
        )
    })?;
    let hint = match r.status().as_u16() {
        401 => {
            "the node requires a bearer token: pass --token-file (a data token for the \
                namespace) or --admin-token-file"
        }
        403 => {
            "the node refused this token for the namespace: use a token whose namespaces \
                list it"
        }
        _ => return Ok(()),
    };
    let body = r.text().await.unwrap_or_default();
    anyhow::bail!("{}: {body} ({hint})", a.target)
}

/// Writes sample entity `n` (the `load` mode's operation).
pub(crate) async fn put_sample(c: &reqwest::Client, a: &LoadgenArgs, n: u64) -> Result<(), String> {
    let per = (a.entities / a.groups.max(1)).max(1);
    let url = format!("{}/v1/ns/{}/e/{}", a.target, a.ns, key(n / per, n));
    let value = format!(
        "{{\"item\":{n},\"pad\":\"{}\"}}",
        "x".repeat(a.value_bytes.saturating_sub(24))
    );
    check(c.put(url).body(value).send().await, &[200]).await
}

/// One random operation of the mixed workload.
pub(crate) async fn mixed_op(
    c: &reqwest::Client,
    a: &LoadgenArgs,
    value: &[u8],
) -> Result<(), String> {
    let (g, i, r, kind) = {
        let mut rng = rand::rng();
        let g = rng.random_range(0..a.groups.max(1));
        let per = (a.entities / a.groups.max(1)).max(1);
        (
            g,
            g * per + rng.random_range(0..per),
            rng.random::<f64>(),
            rng.random_range(0..10u8),
        )
    };
    let base = format!("{}/v1/ns/{}", a.target, a.ns);
    if r < a.reads {
        return check(
            c.get(format!("{base}/e/{}", key(g, i))).send().await,
            &[200, 404],
        )
        .await;
    }
    match kind {
        0 => {
            check(
                c.delete(format!("{base}/e/{}", key(g, i))).send().await,
                &[200],
            )
            .await
        }
        1 | 2 => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(value);
            let body = serde_json::json!({"ops": [
                {"op": "put", "key": key(g, i), "value_b64": b64},
                {"op": "put", "key": format!("Account:{g}"), "value_b64": b64},
            ]});
            check(
                c.post(format!("{base}/txn")).json(&body).send().await,
                &[200],
            )
            .await
        }
        _ => {
            check(
                c.put(format!("{base}/e/{}", key(g, i)))
                    .body(value.to_vec())
                    .send()
                    .await,
                &[200],
            )
            .await
        }
    }
}

/// Runs `op` from `concurrency` workers until `stop` or `total` operations.
pub async fn drive<F, Fut>(
    concurrency: usize,
    total: Option<u64>,
    stop: Arc<AtomicBool>,
    rate: u64,
    tally: Arc<Tally>,
    op: F,
) where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let op = Arc::new(op);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (next, op, stop, tally) = (next.clone(), op.clone(), stop.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if total.is_some_and(|t| n >= t) {
                    break;
                }
                // At a fixed rate, latency counts from when the request was
                // due, not when a free worker sent it: a stall then shows in
                // every request it delayed (no coordinated omission).
                let t = if rate > 0 {
                    let due = started + Duration::from_secs_f64(n as f64 / rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                    due
                } else {
                    Instant::now()
                };
                let r = op(n).await;
                tally.record(t, r);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// A progress bar (entities for `load`, seconds for `mixed`) and the task
/// that moves it until `stop`.
fn progress(
    a: &LoadgenArgs,
    tally: &Arc<Tally>,
    stop: &Arc<AtomicBool>,
    started: Instant,
) -> (indicatif::ProgressBar, tokio::task::JoinHandle<()>) {
    let bar = indicatif::ProgressBar::new(if a.mode == "load" {
        a.entities
    } else {
        a.duration.as_secs().max(1)
    });
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>8} [{bar:40}] {pos}/{len} {per_sec} eta {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.set_message(a.mode.clone());
    let ticker = {
        let (bar, tally, stop, load) = (bar.clone(), tally.clone(), stop.clone(), a.mode == "load");
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if load {
                    bar.set_position(tally.issued.load(Ordering::Relaxed));
                } else {
                    bar.set_position(started.elapsed().as_secs());
                }
            }
        })
    };
    (bar, ticker)
}

/// Prints the run's summary: one JSON object under `--json`, else a line
/// and the first errors.
fn report(a: &LoadgenArgs, summary: &serde_json::Value) {
    if a.json {
        println!("{summary}");
    } else {
        let l = &summary["latency_ms"];
        println!(
            "loadgen {}: {} requests in {:.1}s ({:.0}/s), {} failed; latency ms mean {:.2} p50 {:.2} p99 {:.2} max {:.2}",
            a.mode, summary["issued"], summary["seconds"].as_f64().unwrap_or(0.0), summary["rate_per_s"].as_f64().unwrap_or(0.0),
            summary["failed"], l["mean"].as_f64().unwrap_or(0.0), l["p50"].as_f64().unwrap_or(0.0),
            l["p99"].as_f64().unwrap_or(0.0), l["max"].as_f64().unwrap_or(0.0),
        );
        for e in summary["first_errors"].as_array().into_iter().flatten() {
            println!("  error: {e}");
        }
    }
}

/// Runs `northwest loadgen`. `admin_token_file` (the global flag) is sent
/// when `--token-file` is not given; `ca_file` verifies an https:// target.
pub async fn run(
    a: LoadgenArgs,
    admin_token_file: Option<&std::path::Path>,
    ca_file: Option<&std::path::Path>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let client = client(&a, admin_token_file, ca_file)?;
    preflight(&client, &a).await?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            stop.store(true, Ordering::Relaxed);
        });
    }
    let tally = Arc::new(Tally::default());
    let value = vec![b'v'; a.value_bytes];
    let started = Instant::now();
    let total = if a.mode == "load" {
        a.entities
    } else {
        u64::MAX
    };
    let (bar, ticker) = progress(&a, &tally, &stop, started);
    if a.mode != "load" && !a.duration.is_zero() {
        let (stop, d) = (stop.clone(), a.duration);
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            stop.store(true, Ordering::Relaxed);
        });
    }
    match a.mode.as_str() {
        "load" => {
            let (c, a2) = (client.clone(), a.clone());
            drive(
                a.concurrency,
                Some(total),
                stop.clone(),
                0,
                tally.clone(),
                move |n| {
                    let (c, a2) = (c.clone(), a2.clone());
                    async move { put_sample(&c, &a2, n).await }
                },
            )
            .await
        }
        "mixed" => {
            let (c, a2) = (client.clone(), a.clone());
            drive(
                a.concurrency,
                None,
                stop.clone(),
                a.rate,
                tally.clone(),
                move |_| {
                    let (c, a2, value) = (c.clone(), a2.clone(), value.clone());
                    async move { mixed_op(&c, &a2, &value).await }
                },
            )
            .await
        }
        other => anyhow::bail!("unknown --mode {other:?}: use load or mixed"),
    }
    stop.store(true, Ordering::Relaxed);
    let _ = ticker.await;
    bar.finish_and_clear();
    report(&a, &tally.summary(started.elapsed()));
    failed_requests(&a, &tally)
}

/// The run's outcome once reported: an error when any request failed
/// (under --json the report on stdout says so already).
fn failed_requests(a: &LoadgenArgs, tally: &Tally) -> anyhow::Result<()> {
    if tally.failed.load(Ordering::Relaxed) == 0 {
        return Ok(());
    }
    let e = format!(
        "{} of {} requests failed",
        tally.failed.load(Ordering::Relaxed),
        tally.issued.load(Ordering::Relaxed)
    );
    Err(match a.json {
        true => northwest_control::Reported(e).into(),
        false => anyhow::anyhow!(e),
    })
}
