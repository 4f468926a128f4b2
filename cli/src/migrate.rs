//! `northwest migrate`: drives a live migration n1 → n2 through the phases of
//! the paper's Figure 2 adapted to the journal. The phase and its progress
//! live in ZooKeeper (`<root>/migrations/<ns>`), so killing the orchestrator
//! at any point and running the command again resumes; `--abort` rolls back
//! from any phase before `switch`, leaving n1 serving as before.
//!
//! The snapshot is streamed from a RocksDB checkpoint that n1 writes on
//! request; the orchestrator opens it read-only, so it must run on n1's host.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use northwest_producer::KafkaSettings;
use northwest_snapshotter::{stream_snapshot, SnapshotConfig, SnapshotStats, ZkProgress};
use northwest_store::Namespace;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use zookeeper_client as zk;

#[derive(clap::Args, Debug, Clone)]
pub struct MigrateArgs {
    /// Source node (n1) base URL.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    pub from: String,
    /// Target node (n2) base URL.
    #[arg(long, default_value = "http://127.0.0.1:8082")]
    pub to: String,
    #[arg(long, default_value = "demo")]
    pub namespace: String,
    #[arg(long, env = "NW_ZK", default_value = "127.0.0.1:2181")]
    pub zk: String,
    #[arg(long, env = "NW_KAFKA", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Roll back instead (any phase before `switch`).
    #[arg(long)]
    pub abort: bool,
    /// Key ranges snapshotted in parallel.
    #[arg(long, default_value_t = 4)]
    pub ranges: usize,
    #[arg(long, default_value_t = 2000)]
    pub chunk: usize,
    /// Snapshot rows per second (protects n1's latency); 0 = unlimited.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Journal lag (records) under which catch-up is done.
    #[arg(long, default_value_t = 500)]
    pub max_lag: i64,
    /// Stop after this phase (tests; the next run resumes).
    #[arg(long)]
    pub stop_after: Option<Phase>,
    /// Print the final report as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Init,
    MetadataSync,
    Journaling,
    Snapshot,
    CatchUp,
    Verify,
    Proxy,
    Switch,
    Done,
    Aborted,
}

impl Phase {
    fn next(self) -> Phase {
        use Phase::*;
        match self {
            Init => MetadataSync,
            MetadataSync => Journaling,
            Journaling => Snapshot,
            Snapshot => CatchUp,
            CatchUp => Verify,
            Verify => Proxy,
            Proxy => Switch,
            Switch => Done,
            Done => Done,
            Aborted => Aborted,
        }
    }
}

/// Everything a resumed run needs, persisted after every step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MigState {
    pub id: String,
    pub ns: String,
    pub from: String,
    pub to: String,
    pub phase: Phase,
    pub journal_topic: String,
    pub snapshot_topic: String,
    pub checkpoint_dir: Option<String>,
    /// Journal high-water marks recorded before the snapshot view was taken.
    pub hwms: BTreeMap<i32, i64>,
    pub kinds: Vec<String>,
    pub phase_seconds: BTreeMap<String, f64>,
    pub snapshot_rows: u64,
    pub snapshot_resumed_rows: u64,
    pub runs: u32,
    pub max_lag_records: i64,
    pub verify: Option<Value>,
    pub verify_pause_ms: Option<f64>,
    pub write_pause_ms: Option<f64>,
    pub error: Option<String>,
}

struct Ctx {
    a: MigrateArgs,
    http: reqwest::Client,
    zk: zk::Client,
    path: String,
    root: String,
    kafka: KafkaSettings,
    /// One client for high-water marks: creating one per drain check costs
    /// a bootstrap round trip inside the cutover pause.
    hw: Arc<BaseConsumer>,
}

impl Ctx {
    async fn get(&self, url: &str) -> anyhow::Result<Value> {
        let r = self
            .http
            .get(url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let st = r.status();
        let v: Value = r
            .json()
            .await
            .with_context(|| format!("GET {url}: not JSON"))?;
        if !st.is_success() {
            bail!("GET {url}: {st}: {}", v["error"]);
        }
        Ok(v)
    }

    async fn post(&self, url: &str, body: Value) -> anyhow::Result<Value> {
        let r = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let st = r.status();
        let v: Value = r
            .json()
            .await
            .with_context(|| format!("POST {url}: not JSON"))?;
        if !st.is_success() {
            bail!("POST {url}: {st}: {}", v["error"]);
        }
        Ok(v)
    }

    async fn load(&self) -> anyhow::Result<Option<MigState>> {
        match self.zk.get_data(&self.path).await {
            Ok((d, _)) if !d.is_empty() => Ok(Some(serde_json::from_slice(&d)?)),
            Ok(_) | Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(anyhow!("reading {}: {e}", self.path)),
        }
    }

    async fn save(&self, st: &MigState) -> anyhow::Result<()> {
        let data = serde_json::to_vec(st)?;
        match self.zk.set_data(&self.path, &data, None).await {
            Ok(_) => Ok(()),
            Err(zk::Error::NoNode) => {
                mkdirs(&self.zk, &format!("{}/migrations", self.root)).await?;
                let opts = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
                self.zk
                    .create(&self.path, &data, &opts)
                    .await
                    .map(|_| ())
                    .map_err(|e| anyhow!("{e}"))
            }
            Err(e) => Err(anyhow!("saving migration state: {e}")),
        }
    }
}

async fn mkdirs(client: &zk::Client, path: &str) -> anyhow::Result<()> {
    let opts = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    let mut at = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        at.push('/');
        at.push_str(part);
        match client.create(&at, &[], &opts).await {
            Ok(_) | Err(zk::Error::NodeExists) => {}
            Err(e) => bail!("creating {at}: {e}"),
        }
    }
    Ok(())
}

fn bar(len: u64, msg: &str, quiet: bool) -> indicatif::ProgressBar {
    let b = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(len)
    };
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>10} [{bar:40}] {pos}/{len} {per_sec} eta {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    b.set_message(msg.to_string());
    b
}

pub async fn run(a: MigrateArgs) -> anyhow::Result<()> {
    Namespace::new(&a.namespace).map_err(|e| anyhow!("{e}"))?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let s1: Value = http
        .get(format!("{}/v1/admin/status", a.from))
        .send()
        .await
        .with_context(|| format!("n1 at {} unreachable", a.from))?
        .json()
        .await?;
    let root = s1["zk_root"]
        .as_str()
        .ok_or_else(|| anyhow!("n1 status has no zk_root"))?
        .to_string();
    let zk = zk::Client::connector()
        .with_session_timeout(Duration::from_secs(10))
        .connect(&a.zk)
        .await
        .with_context(|| format!("ZooKeeper at {}", a.zk))?;
    let path = format!("{root}/migrations/{}", a.namespace);
    let kafka = KafkaSettings::new(&a.brokers);
    let hw: BaseConsumer = kafka
        .client_config(&[("group.id", "northwest-migrate")])
        .create()?;
    let ctx = Ctx {
        a: a.clone(),
        http,
        zk,
        path,
        root,
        kafka,
        hw: Arc::new(hw),
    };

    let existing = ctx.load().await?;
    if a.abort {
        return abort(&ctx, existing).await;
    }
    let mut st = match existing {
        Some(st) if st.phase == Phase::Done => {
            println!(
                "migration {} of namespace {} is already done (n2 {} is primary)",
                st.id, st.ns, st.to
            );
            return report(&st, a.json);
        }
        Some(st) if st.phase != Phase::Aborted => {
            if st.from != a.from || st.to != a.to {
                bail!(
                    "a migration {} -> {} is in progress for {}; finish or --abort it first",
                    st.from,
                    st.to,
                    st.ns
                );
            }
            println!("resuming migration {} at phase {:?}", st.id, st.phase);
            st
        }
        _ => {
            let id = format!("m{}", northwest_store::store::now_ms_pub());
            let topic = s1["journal_topic"].as_str().unwrap_or_default().to_string();
            MigState {
                snapshot_topic: format!("{topic}.snapshot.{}.{id}", a.namespace),
                journal_topic: topic,
                id,
                ns: a.namespace.clone(),
                from: a.from.clone(),
                to: a.to.clone(),
                phase: Phase::Init,
                checkpoint_dir: None,
                hwms: BTreeMap::new(),
                kinds: Vec::new(),
                phase_seconds: BTreeMap::new(),
                snapshot_rows: 0,
                snapshot_resumed_rows: 0,
                runs: 0,
                max_lag_records: 0,
                verify: None,
                verify_pause_ms: None,
                write_pause_ms: None,
                error: None,
            }
        }
    };
    st.runs += 1;
    st.error = None;
    ctx.save(&st).await?;
    while st.phase != Phase::Done {
        let phase = st.phase;
        let t = Instant::now();
        if !a.quiet {
            eprintln!("phase {phase:?}");
        }
        let r = run_phase(&ctx, &mut st).await;
        *st.phase_seconds.entry(format!("{phase:?}")).or_default() += t.elapsed().as_secs_f64();
        if let Err(e) = r {
            st.error = Some(format!("{e:#}"));
            ctx.save(&st).await?;
            bail!("migration stopped in phase {phase:?}: {e:#}\nfix the cause and run the same command again to resume, or run it with --abort to roll back");
        }
        st.phase = phase.next();
        ctx.save(&st).await?;
        if Some(phase) == a.stop_after {
            println!("stopped after phase {phase:?} as asked; run again to resume");
            return Ok(());
        }
    }
    report(&st, a.json)
}

async fn run_phase(ctx: &Ctx, st: &mut MigState) -> anyhow::Result<()> {
    let (n1, n2) = (st.from.clone(), st.to.clone());
    match st.phase {
        Phase::Init => {
            let s1 = ctx.get(&format!("{n1}/v1/admin/status")).await?;
            let s2 = ctx
                .get(&format!("{n2}/v1/admin/status"))
                .await
                .context("n2 unreachable")?;
            if s1["role"] != "source" {
                bail!("n1 ({n1}) is not journaling: set journal.enabled = true in its config and restart it");
            }
            if s2["role"] != "target" {
                bail!("n2 ({n2}) does not apply a journal: set journal.apply = true in its config and restart it");
            }
            if s1["journal_topic"] != s2["journal_topic"] || s1["zk_root"] != s2["zk_root"] {
                bail!("n1 and n2 must share the journal topic and the ZooKeeper root: n1 {} {}, n2 {} {}",
                    s1["journal_topic"], s1["zk_root"], s2["journal_topic"], s2["zk_root"]);
            }
            if s1["proxy"].is_string() {
                bail!("n1 is already a proxy to {}", s1["proxy"]);
            }
        }
        Phase::MetadataSync => {
            // The store is schemaless: the metadata to carry is the namespace
            // and its kinds, recorded so the report and verify can name them.
            let d = ctx.get(&format!("{n1}/v1/ns/{}/digest", st.ns)).await?;
            st.kinds = d["kinds"]
                .as_object()
                .map(|k| k.keys().cloned().collect())
                .unwrap_or_default();
        }
        Phase::Journaling => {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let s1 = ctx.get(&format!("{n1}/v1/admin/status")).await?;
                let s2 = ctx.get(&format!("{n2}/v1/admin/status")).await?;
                let relay_ok = s1["relay"]["last_error"].is_null();
                if relay_ok && s2["apply"]["running"] == true {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "journal not flowing: n1 relay error {}, n2 apply running {}",
                        s1["relay"]["last_error"],
                        s2["apply"]["running"]
                    );
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        Phase::Snapshot => snapshot(ctx, st).await?,
        Phase::CatchUp => catch_up(ctx, st).await?,
        Phase::Verify => {
            let t = Instant::now();
            ctx.post(&format!("{n1}/v1/admin/fence"), json!({"max_ms": 30000}))
                .await?;
            let r = async {
                drain(ctx, st, Duration::from_secs(25)).await?;
                let (u1, u2) = (
                    format!("{n1}/v1/ns/{}/digest", st.ns),
                    format!("{n2}/v1/ns/{}/digest", st.ns),
                );
                let (d1, d2) = tokio::try_join!(ctx.get(&u1), ctx.get(&u2))?;
                anyhow::Ok((d1, d2))
            }
            .await;
            ctx.post(&format!("{n1}/v1/admin/unfence"), json!({}))
                .await?;
            st.verify_pause_ms = Some(t.elapsed().as_secs_f64() * 1000.0);
            let (d1, d2) = r?;
            let mut differ = Vec::new();
            let empty = serde_json::Map::new();
            let (k1, k2) = (
                d1["kinds"].as_object().unwrap_or(&empty),
                d2["kinds"].as_object().unwrap_or(&empty),
            );
            for k in k1.keys().chain(k2.keys()) {
                if k1.get(k) != k2.get(k) && !differ.contains(k) {
                    differ.push(k.clone());
                }
            }
            st.verify = Some(
                json!({"n1": {"count": d1["count"], "digest": d1["digest"]}, "n2": {"count": d2["count"], "digest": d2["digest"]}, "differing_kinds": differ}),
            );
            if d1["digest"] != d2["digest"] || d1["count"] != d2["count"] {
                bail!("n1 and n2 differ (n1 {} entities {}, n2 {} entities {}); differing kinds: {differ:?}",
                    d1["count"], d1["digest"], d2["count"], d2["digest"]);
            }
        }
        Phase::Proxy => {
            let t = Instant::now();
            ctx.post(&format!("{n1}/v1/admin/fence"), json!({"max_ms": 10000}))
                .await?;
            if let Err(e) = drain(ctx, st, Duration::from_secs(8)).await {
                ctx.post(&format!("{n1}/v1/admin/unfence"), json!({}))
                    .await?;
                return Err(e.context("draining the journal at cutover"));
            }
            ctx.post(&format!("{n1}/v1/admin/proxy"), json!({"target": n2}))
                .await?;
            st.write_pause_ms = Some(t.elapsed().as_secs_f64() * 1000.0);
        }
        Phase::Switch => {
            let rec = json!({"primary": st.to, "replaces": st.from, "namespace": st.ns, "migration": st.id});
            let path = format!("{}/routing/primary", ctx.root);
            mkdirs(&ctx.zk, &format!("{}/routing", ctx.root)).await?;
            let data = serde_json::to_vec(&rec)?;
            match ctx.zk.set_data(&path, &data, None).await {
                Ok(_) => {}
                Err(zk::Error::NoNode) => {
                    let opts = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
                    ctx.zk
                        .create(&path, &data, &opts)
                        .await
                        .map_err(|e| anyhow!("{e}"))?;
                }
                Err(e) => bail!("writing the routing record: {e}"),
            }
            let name = st.id.clone();
            let _ = ctx
                .http
                .delete(format!("{n1}/v1/admin/checkpoint/{name}"))
                .send()
                .await;
        }
        Phase::Done | Phase::Aborted => {}
    }
    Ok(())
}

/// Journal high-water marks now (one broker round trip per partition).
fn high_watermarks(c: &BaseConsumer, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let parts = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len() as i32);
    if parts == 0 {
        bail!("journal topic {topic} does not exist (is n1 journaling?)");
    }
    let mut out = BTreeMap::new();
    for p in 0..parts {
        out.insert(p, c.fetch_watermarks(topic, p, Duration::from_secs(10))?.1);
    }
    Ok(out)
}

async fn snapshot(ctx: &Ctx, st: &mut MigState) -> anyhow::Result<()> {
    if st.hwms.is_empty() {
        // Recorded before the view is taken: everything committed after the
        // view is in the journal at or after these offsets.
        let (c, t) = (ctx.hw.clone(), st.journal_topic.clone());
        st.hwms = tokio::task::spawn_blocking(move || high_watermarks(&c, &t)).await??;
        ctx.save(st).await?;
    }
    if st.checkpoint_dir.is_none() {
        let r = ctx
            .post(
                &format!("{}/v1/admin/checkpoint", st.from),
                json!({"name": st.id}),
            )
            .await?;
        st.checkpoint_dir = r["dir"].as_str().map(str::to_string);
        ctx.save(st).await?;
    }
    let dir = st.checkpoint_dir.clone().expect("set above");
    let reader =
        northwest_store::rocks::open_checkpoint(std::path::Path::new(&dir)).with_context(|| {
            format!("opening n1's checkpoint {dir} (the orchestrator must run on n1's host)")
        })?;
    let progress =
        Arc::new(ZkProgress::new(ctx.zk.clone(), &format!("{}/snapshot", ctx.path)).await?);
    let stats = Arc::new(SnapshotStats::default());
    let cfg = SnapshotConfig {
        kafka: ctx.kafka.clone(),
        topic: st.snapshot_topic.clone(),
        partitions: 4,
        snapshot_id: st.id.clone(),
        origin: "n1".into(),
        ranges: ctx.a.ranges,
        chunk: ctx.a.chunk,
        rows_per_sec: ctx.a.rate,
    };
    let ns = Namespace::new(&st.ns).map_err(|e| anyhow!("{e}"))?;
    let b = bar(0, "snapshot", ctx.a.quiet);
    let ticker = {
        let (b, stats) = (b.clone(), stats.clone());
        tokio::spawn(async move {
            loop {
                b.set_length(stats.total.load(Ordering::Relaxed));
                b.set_position(stats.streamed.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let r = stream_snapshot(reader, &ns, &cfg, progress, stats.clone()).await;
    ticker.abort();
    b.finish_and_clear();
    let rows = r?;
    st.snapshot_rows = rows;
    st.snapshot_resumed_rows += stats.resumed.load(Ordering::Relaxed);
    Ok(())
}

async fn catch_up(ctx: &Ctx, st: &mut MigState) -> anyhow::Result<()> {
    let n2 = st.to.clone();
    ctx.post(
        &format!("{n2}/v1/admin/load-snapshot"),
        json!({"topic": st.snapshot_topic}),
    )
    .await?;
    let b = bar(st.snapshot_rows, "load", ctx.a.quiet);
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let s2 = ctx.get(&format!("{n2}/v1/admin/status")).await?;
        let off = ctx.get(&format!("{n2}/v1/admin/offsets")).await?;
        let loaded = s2["loader"]["caught_up"] == true;
        b.set_position(s2["loader"]["rows"].as_u64().unwrap_or(0));
        let lag: i64 = s2["apply"]["partitions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| p["lag_records"].as_i64().unwrap_or(0))
            .sum();
        st.max_lag_records = st.max_lag_records.max(lag);
        b.set_message(format!("lag {lag}"));
        let past_hwm = st
            .hwms
            .iter()
            .all(|(p, hw)| off["journal"][p.to_string()].as_i64().unwrap_or(0) >= *hw);
        if loaded && past_hwm && lag <= ctx.a.max_lag && s2["apply"]["lag_error"].is_null() {
            break;
        }
        if Instant::now() > deadline {
            bail!("n2 did not catch up in 30 min (lag {lag}, snapshot loaded {loaded})");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    b.finish_and_clear();
    Ok(())
}

/// With n1 fenced: waits until n1 shipped everything and n2 applied every
/// journal record up to the high-water marks.
async fn drain(ctx: &Ctx, st: &MigState, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let s1 = ctx.get(&format!("{}/v1/admin/status", st.from)).await?;
        if s1["outbox_pending"] == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "n1's outbox did not drain ({} pending): is the broker up?",
                s1["outbox_pending"]
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (c, t) = (ctx.hw.clone(), st.journal_topic.clone());
    let hw = tokio::task::spawn_blocking(move || high_watermarks(&c, &t)).await??;
    loop {
        let off = ctx.get(&format!("{}/v1/admin/offsets", st.to)).await?;
        if hw
            .iter()
            .all(|(p, h)| off["journal"][p.to_string()].as_i64().unwrap_or(0) >= *h)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "n2 did not apply the journal up to {hw:?} in time (stored {})",
                off["journal"]
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn abort(ctx: &Ctx, st: Option<MigState>) -> anyhow::Result<()> {
    let Some(mut st) = st else {
        println!("no migration of {} in progress", ctx.a.namespace);
        return Ok(());
    };
    match st.phase {
        Phase::Done | Phase::Switch => bail!(
            "migration {} already switched to {}; migrate back instead of aborting",
            st.id,
            st.to
        ),
        Phase::Aborted => {
            println!("migration {} was already aborted", st.id);
            return Ok(());
        }
        _ => {}
    }
    // Once n1 forwards to n2, writes exist only on n2: that is the cutover,
    // and rolling back would lose them.
    let s1 = ctx
        .get(&format!("{}/v1/admin/status", st.from))
        .await
        .context("n1 unreachable")?;
    if s1["proxy"].is_string() {
        bail!(
            "n1 already forwards to {}: the cutover happened; migrate back instead of aborting",
            s1["proxy"]
        );
    }
    // n1 serves exactly as before: no fence, no proxy.
    ctx.http
        .delete(format!("{}/v1/admin/proxy", st.from))
        .send()
        .await
        .context("n1 unreachable: cannot lift its fence/proxy")?;
    let _ = ctx
        .http
        .delete(format!("{}/v1/admin/checkpoint/{}", st.from, st.id))
        .send()
        .await;
    let from = st.phase;
    st.phase = Phase::Aborted;
    ctx.save(&st).await?;
    println!(
        "migration {} aborted in phase {from:?}; n1 ({}) keeps serving",
        st.id, st.from
    );
    Ok(())
}

/// The persisted state of the migration of `ns` whose source is `from`.
pub async fn load_state(zk_addr: &str, from: &str, ns: &str) -> anyhow::Result<MigState> {
    let s1: Value = reqwest::get(format!("{from}/v1/admin/status"))
        .await?
        .json()
        .await?;
    let root = s1["zk_root"]
        .as_str()
        .ok_or_else(|| anyhow!("no zk_root"))?;
    let zk = zk::Client::connector().connect(zk_addr).await?;
    let (d, _) = zk.get_data(&format!("{root}/migrations/{ns}")).await?;
    Ok(serde_json::from_slice(&d)?)
}

fn report(st: &MigState, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        println!("{}", serde_json::to_string(st)?);
        return Ok(());
    }
    println!(
        "\nmigration {} of namespace {}: {} -> {}",
        st.id, st.ns, st.from, st.to
    );
    for (p, s) in &st.phase_seconds {
        println!("  {p:<14} {s:>8.2} s");
    }
    println!(
        "  snapshot rows streamed      {} ({} resumed from an earlier run)",
        st.snapshot_rows, st.snapshot_resumed_rows
    );
    println!(
        "  max journal lag in catch-up {} records",
        st.max_lag_records
    );
    println!(
        "  verify                      {}",
        st.verify
            .as_ref()
            .map(|v| v.to_string())
            .unwrap_or_default()
    );
    println!(
        "  verify pause                {:.1} ms",
        st.verify_pause_ms.unwrap_or(0.0)
    );
    println!(
        "  cutover write pause         {:.1} ms",
        st.write_pause_ms.unwrap_or(0.0)
    );
    println!("  orchestrator runs           {}", st.runs);
    Ok(())
}
