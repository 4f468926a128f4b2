//! The apply loop. One applier per target deployment: it assigns itself every
//! partition of the journal at the offsets stored in its own store (never
//! Kafka's group offsets), applies records in partition order in batches, and
//! writes data and next offsets in one atomic store write.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use northwest_kafka::{
    ensure_topic, partition_count, KafkaSettings, Offset, Partition, PartitionOffsets, TopicSpec,
};
use northwest_store::{Namespace, Store};
use parking_lot::Mutex;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::Message;
use tokio::sync::{mpsc, oneshot};

use crate::dead_letter::DeadLetters;
use crate::ConsumerError;

mod batch_write;

use batch_write::Batch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoisonPolicy {
    /// Send the record with the reason to the dead-letter topic; go on.
    DeadLetter,
    /// Stop applying that partition (others go on) until an operator acts.
    Halt,
}

/// What the consumed topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Journal records: one transaction each.
    Journal,
    /// Snapshot rows: one entity (or delete marker) each.
    Snapshot,
}

/// Which decoded records of the topic a loop applies. Every primary of a
/// namespace journals to the one journal topic, so a loop meets records it
/// must leave alone: its own node's commits (already in its store: applying
/// them again would only contend for its clients' locks), and on an old
/// primary the namespaces it does not follow. `true`: apply.
#[derive(Clone)]
pub struct RecordFilter(Arc<Keep>);

/// `(origin, namespace) -> apply?`
type Keep = dyn Fn(&str, &Namespace) -> bool + Send + Sync;

impl RecordFilter {
    /// Applies `(origin, namespace)` when `keep` says so.
    pub fn new(keep: impl Fn(&str, &Namespace) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(keep))
    }

    /// Every record except those `node` committed itself.
    pub fn not_from(node: &str) -> Self {
        let own = node.to_string();
        Self::new(move |origin, _| origin != own)
    }

    pub fn keeps(&self, origin: &str, ns: &Namespace) -> bool {
        (self.0)(origin, ns)
    }
}

impl std::fmt::Debug for RecordFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordFilter")
    }
}

/// Where a loop learns the writer schema of a Confluent-framed record whose
/// registry id it has not learnt: the registry's schema text for the id
/// (`Ok(None)`: the registry has no such id; `Err`: it could not be asked).
#[derive(Clone)]
pub struct SchemaLookup(Arc<LookupFn>);

type LookupFn = dyn Fn(u32) -> futures::future::BoxFuture<'static, Result<Option<String>, String>>
    + Send
    + Sync;

impl SchemaLookup {
    pub fn new(f: Arc<LookupFn>) -> Self {
        Self(f)
    }

    pub async fn schema(&self, id: u32) -> Result<Option<String>, String> {
        (self.0)(id).await
    }
}

impl std::fmt::Debug for SchemaLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SchemaLookup")
    }
}

#[derive(Debug, Clone)]
pub struct ApplyConfig {
    pub source: Source,
    pub kafka: KafkaSettings,
    pub topic: String,
    pub dead_letter_topic: String,
    pub poison: PoisonPolicy,
    /// Records per atomic store write.
    pub batch: usize,
    /// How long to wait to fill a batch once a record arrived.
    pub linger: Duration,
    /// Keep a per-transaction apply counter (proves no double apply in tests).
    pub apply_log: bool,
    /// Consumer group id (visibility only; offsets live in the store).
    pub group_id: String,
    /// Journal records this loop leaves alone (`None`: applies all).
    pub filter: Option<RecordFilter>,
    /// The schema registry, for Confluent-framed records (`None`: such a
    /// record with an id not learnt stops the loop, saying to configure it).
    pub schemas: Option<SchemaLookup>,
}

impl ApplyConfig {
    /// The loop's defaults for `topic`: dead letters to `<topic>.dlq`, batches
    /// of 2,000 records lingering 2 ms, no apply log.
    pub fn new(source: Source, kafka: KafkaSettings, topic: &str, group_id: &str) -> Self {
        Self {
            source,
            kafka,
            topic: topic.into(),
            dead_letter_topic: format!("{topic}.dlq"),
            poison: PoisonPolicy::DeadLetter,
            batch: 2000,
            linger: Duration::from_millis(2),
            apply_log: false,
            group_id: group_id.into(),
            filter: None,
            schemas: None,
        }
    }
}

/// Requests from the node's admin API, served between batches.
pub enum Control {
    /// Rewind partitions to offsets (never forward); replies with new positions.
    Rewind {
        to: PartitionOffsets,
        reply: oneshot::Sender<Result<PartitionOffsets, String>>,
    },
    /// Rewind every partition to the first record at or after `ts_ms`.
    RewindToTime {
        ts_ms: i64,
        reply: oneshot::Sender<Result<PartitionOffsets, String>>,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionState {
    pub next_offset: Option<Offset>,
    pub halted: Option<String>,
}

/// Counters and per-partition state the node exports.
#[derive(Debug, Default)]
pub struct ApplyShared {
    pub txns: AtomicU64,
    pub writes_applied: AtomicU64,
    pub writes_stale: AtomicU64,
    pub writes_blacklisted: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Records its [`RecordFilter`] left alone.
    pub skipped: AtomicU64,
    pub batches: AtomicU64,
    pub retries: AtomicU64,
    pub running: AtomicBool,
    /// How many times the loop started (assigned its partitions).
    pub starts: AtomicU64,
    /// The error that last stopped the loop (cleared when it runs again).
    pub last_error: Mutex<Option<String>>,
    /// What the loop waits for before it can run (the journal topic to
    /// exist, its metadata to be readable); cleared when it runs.
    pub waiting_for: Mutex<Option<String>>,
    pub partitions: Mutex<BTreeMap<i32, PartitionState>>,
    /// Records applied per second at most (0: as fast as they come) until
    /// `rate_limit_until_ms`: the snapshot loader's share of the
    /// migration's throttle, which renews it while it runs.
    pub rate_limit: AtomicU64,
    pub rate_limit_until_ms: std::sync::atomic::AtomicI64,
    /// When set, commit-to-applied latencies (ms) are collected (benchmarks).
    pub record_latency: AtomicBool,
    pub latencies_ms: Mutex<Vec<u32>>,
}

impl ApplyShared {
    /// Limits the loop to `rows_per_s` (0: none) until `until_ms`.
    pub fn set_rate_limit(&self, rows_per_s: u64, until_ms: i64) {
        self.rate_limit_until_ms.store(until_ms, Ordering::Relaxed);
        self.rate_limit.store(rows_per_s, Ordering::Relaxed);
    }

    /// The limit in force now (0: none, or it lapsed).
    pub fn rate_limit_now(&self) -> u64 {
        let until = self.rate_limit_until_ms.load(Ordering::Relaxed);
        if northwest_store::store::now_ms_pub() < until {
            self.rate_limit.load(Ordering::Relaxed)
        } else {
            0
        }
    }
}

pub(crate) struct Applier {
    pub(crate) store: Arc<Store>,
    pub(crate) cfg: ApplyConfig,
    pub(crate) shared: Arc<ApplyShared>,
    pub(crate) consumer: StreamConsumer,
    dlq: DeadLetters,
    pub(crate) halted: BTreeMap<Partition, String>,
}

type Msg = (Partition, Offset, Option<Vec<u8>>);

/// A consumed record: where it sits and its payload.
fn msg(m: &impl Message) -> Msg {
    (
        Partition(m.partition()),
        Offset(m.offset()),
        m.payload().map(<[u8]>::to_vec),
    )
}

/// Runs the apply loop until `shutdown`; the batch in progress is finished.
///
/// An error that stops the loop (the broker unreachable, a topic refused,
/// a store write failing) is logged at error, shown in
/// [`ApplyShared::last_error`], and the loop starts again from the stored
/// offsets after 2 s: it never ends silently while the node runs.
pub async fn run(
    store: Arc<Store>,
    cfg: ApplyConfig,
    shared: Arc<ApplyShared>,
    mut control: mpsc::Receiver<Control>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ConsumerError> {
    tokio::pin!(shutdown);
    let mut failures = 0u32;
    loop {
        let starts = shared.starts.load(Ordering::Relaxed);
        let r = run_once(&store, &cfg, &shared, &mut control, &mut shutdown).await;
        let e = match r {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        // A loop that ran before failing starts a new series: its error is
        // logged, not counted among an earlier outage's repeats.
        if shared.starts.load(Ordering::Relaxed) != starts {
            failures = 0;
        }
        failures += 1;
        if failures % 30 == 1 {
            tracing::error!(error = %e, topic = %cfg.topic, failures, "apply loop stopped by an error; restarting it from the stored offsets every 2 s until it runs");
        }
        *shared.last_error.lock() = Some(e.to_string());
        tokio::select! {
            _ = &mut shutdown => return Err(e),
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

async fn run_once(
    store: &Arc<Store>,
    cfg: &ApplyConfig,
    shared: &Arc<ApplyShared>,
    control: &mut mpsc::Receiver<Control>,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<(), ConsumerError> {
    // N1 creates the journal topic; wait for it rather than guessing its shape.
    let partitions = loop {
        let waiting = match partition_count(&cfg.kafka, &cfg.topic, Duration::from_secs(5)) {
            Ok(n) if n > 0 => break n,
            Ok(_) => {
                tracing::info!(topic = %cfg.topic, "waiting for the journal topic to exist");
                format!(
                    "waiting for the journal topic {} to exist (its source creates it when it \
                     starts journaling: is n1 running with journal.enabled = true?)",
                    cfg.topic
                )
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read journal topic metadata; retrying");
                format!(
                    "cannot read the journal topic's metadata, retrying every second: {e} (is the \
                     broker up?)"
                )
            }
        };
        *shared.waiting_for.lock() = Some(waiting);
        tokio::select! {
            _ = shutdown.as_mut() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    };
    // Room for a dead letter wrapping the largest record the journal topic
    // holds, with its reason and source headers.
    let dlq_max = (cfg.kafka.topic_message_max() + (64 << 10)).to_string();
    let dlq_spec = TopicSpec {
        name: cfg.dead_letter_topic.clone(),
        partitions: 1,
        replication: 1,
        configs: vec![("max.message.bytes".into(), dlq_max)],
    };
    ensure_topic(&cfg.kafka, &dlq_spec).await?;
    let consumer: StreamConsumer = cfg
        .kafka
        .consumer_config(&[
            ("group.id", &cfg.group_id),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
        ])
        .create()?;
    let dlq = DeadLetters::new(
        &cfg.kafka,
        &cfg.topic,
        &cfg.dead_letter_topic,
        &cfg.group_id,
    );
    let mut a = Applier {
        store: store.clone(),
        cfg: cfg.clone(),
        shared: shared.clone(),
        consumer,
        dlq,
        halted: BTreeMap::new(),
    };
    a.assign(partitions)?;
    a.shared.running.store(true, Ordering::Release);
    a.shared.starts.fetch_add(1, Ordering::Relaxed);
    *a.shared.last_error.lock() = None;
    *a.shared.waiting_for.lock() = None;
    tracing::info!(topic = %a.cfg.topic, partitions, "journal apply loop started");
    let result = a.main_loop(partitions, control, shutdown).await;
    a.shared.running.store(false, Ordering::Release);
    tracing::info!("journal apply loop stopped");
    result
}

impl Applier {
    /// Tops a batch up with what arrives within the linger. Under a rate
    /// limit a batch holds at most 50 ms of records, so the store sees
    /// small writes spread out, not one burst a second.
    async fn fill(&mut self, msgs: &mut Vec<Msg>, limit: u64) {
        let most = match limit {
            0 => self.cfg.batch,
            l => (l as usize / 20).clamp(1, self.cfg.batch),
        };
        let deadline = tokio::time::Instant::now() + self.cfg.linger;
        while msgs.len() < most {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(m)) => msgs.push(msg(&m)),
                _ => break,
            }
        }
    }

    async fn main_loop(
        &mut self,
        partitions: i32,
        control: &mut mpsc::Receiver<Control>,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Result<(), ConsumerError> {
        enum Ev {
            Stop,
            Ctl(Control),
            Msg(Result<Msg, rdkafka::error::KafkaError>),
            Tick,
        }
        // Partitions added to the topic later are assigned by a restart of
        // the loop; until then they would be silently unconsumed.
        let mut tick = tokio::time::interval(Duration::from_secs(15));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Under a rate limit each batch books its records' time: the next
        // batch waits until then.
        let mut paced = tokio::time::Instant::now();
        loop {
            let ev = tokio::select! {
                _ = shutdown.as_mut() => Ev::Stop,
                Some(c) = control.recv() => Ev::Ctl(c),
                _ = tick.tick() => Ev::Tick,
                m = self.consumer.recv() => Ev::Msg(m.map(|m| msg(&m))),
            };
            let mut msgs: Vec<Msg> = Vec::new();
            match ev {
                Ev::Stop => return Ok(()),
                Ev::Ctl(c) => {
                    self.control(c, partitions)?;
                    continue;
                }
                Ev::Tick => {
                    let (kafka, topic) = (self.cfg.kafka.clone(), self.cfg.topic.clone());
                    let now = tokio::task::spawn_blocking(move || {
                        partition_count(&kafka, &topic, Duration::from_secs(5))
                    })
                    .await;
                    if let Ok(Ok(n)) = now {
                        if n > partitions {
                            return Err(ConsumerError::PartitionsChanged {
                                was: partitions,
                                now: n,
                            });
                        }
                    }
                    continue;
                }
                Ev::Msg(Ok(m)) => msgs.push(m),
                Ev::Msg(Err(e)) => {
                    tracing::warn!(error = %e, "journal consume error; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
            let limit = self.shared.rate_limit_now();
            let began = tokio::time::Instant::now();
            self.fill(&mut msgs, limit).await;
            let n = msgs.len() as f64;
            if let Batch::Stopped = self.process(msgs, shutdown).await? {
                return Ok(());
            }
            if limit > 0 {
                paced = paced.max(began) + Duration::from_secs_f64(n / limit as f64);
                tokio::select! {
                    _ = tokio::time::sleep_until(paced) => {}
                    _ = shutdown.as_mut() => return Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ApplyShared;
    use northwest_store::store::now_ms_pub;

    #[test]
    fn a_rate_limit_holds_until_its_lease_lapses() {
        let s = ApplyShared::default();
        assert_eq!(s.rate_limit_now(), 0, "no limit by default");
        s.set_rate_limit(500, now_ms_pub() + 60_000);
        assert_eq!(s.rate_limit_now(), 500);
        // Not renewed (the orchestrator that set it stopped): it lapses.
        s.set_rate_limit(500, now_ms_pub() - 1);
        assert_eq!(s.rate_limit_now(), 0);
        s.set_rate_limit(0, now_ms_pub() + 60_000);
        assert_eq!(s.rate_limit_now(), 0, "0 lifts it");
    }
}
