//! The outbox relay: reads outbox entries in commit order, produces them keyed
//! by entity group, and deletes each only after Kafka acknowledged it.
//!
//! Order: the idempotent producer keeps a partition's records in send order.
//! It never times a record out (librdkafka would then deliver later records
//! of the partition past the failed one) and any other error that would leave
//! a gap is fatal to it (`enable.gapless.guarantee`): so no record is ever
//! delivered after an earlier one of its partition failed. The relay
//! acknowledges the successes and, with a new producer after a fatal error,
//! re-sends from the lowest failed entry, so a group's records stay in
//! commit order. A record waiting longer than the configured
//! `message.timeout.ms` is reported (status, log), not failed. A crash
//! between delivery and acknowledgement re-sends entries on restart: the
//! journal is at-least-once and N2's version check absorbs the duplicates.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use northwest_kafka::{ensure_topic, KafkaSettings, TopicSpec};
use northwest_store::Store;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

use crate::ProducerError;

#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub kafka: KafkaSettings,
    pub topic: TopicSpec,
    /// Outbox entries read per read.
    pub batch: usize,
    /// Entries sent whose delivery report is still outstanding.
    pub max_in_flight: usize,
    /// After a commit wakes the relay, how long it lets further commits
    /// gather before it reads the outbox: one wake, one read and one send
    /// per batch rather than per commit (n1's CPU), for at most this much
    /// replication latency. Zero: read at once.
    pub coalesce: Duration,
    /// Ship records in the Confluent Schema Registry framing, naming the
    /// journal schema's registry id once the node's registration set it
    /// (nothing ships until then; the outbox keeps the writes). `None`:
    /// single-object, as the outbox holds them.
    pub confluent_id: Option<Arc<std::sync::OnceLock<u32>>>,
}

/// Counters the node exports as metrics.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub shipped: AtomicU64,
    pub send_errors: AtomicU64,
    pub last_error: parking_lot::Mutex<Option<String>>,
}

pub struct Relay {
    store: Arc<Store>,
    producer: FutureProducer,
    cfg: RelayConfig,
    stats: Arc<RelayStats>,
}

impl Relay {
    /// Ensures the journal topic exists and creates the producer.
    pub async fn new(
        store: Arc<Store>,
        cfg: RelayConfig,
        stats: Arc<RelayStats>,
    ) -> Result<Self, ProducerError> {
        ensure_topic(&cfg.kafka, &cfg.topic).await?;
        let producer: FutureProducer = cfg.kafka.relay_producer_config().create()?;
        Ok(Self {
            store,
            producer,
            cfg,
            stats,
        })
    }

    /// Ships until `shutdown` resolves, then waits for the deliveries in flight.
    ///
    /// Pipelined: entries are sent as soon as they are committed while earlier
    /// deliveries are outstanding (up to `max_in_flight`), and acknowledged
    /// in the order they were sent. On a failed delivery nothing more is sent;
    /// once the outstanding ones resolve, sending restarts from the lowest
    /// failed entry after a back-off.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ProducerError> {
        tokio::pin!(shutdown);
        let mut p = Pipeline::default();
        let mut stopping = false;
        let stall_after = self.cfg.kafka.relay_stall_after();
        // Records never time out: on shutdown the relay waits this long for
        // the ones in flight; the rest stay in the outbox and are re-sent
        // at the next start.
        let mut give_up = None;
        // A commit woke the relay: let the ones right behind it gather.
        let mut woken = false;
        loop {
            if stopping && give_up.is_none() {
                give_up = Some(tokio::time::Instant::now() + Duration::from_secs(10));
            }
            if std::mem::take(&mut woken) && !stopping && !self.cfg.coalesce.is_zero() {
                tokio::time::sleep(self.cfg.coalesce).await;
            }
            if !stopping && p.failed.is_none() {
                self.send_more(&mut p)?;
            }
            if p.in_flight.is_empty() {
                if stopping {
                    break;
                }
                (stopping, woken) = self.idle(&mut p, shutdown.as_mut()).await?;
                continue;
            }
            let can_send =
                !stopping && p.failed.is_none() && p.in_flight.len() < self.cfg.max_in_flight;
            // The oldest record waiting: reported once it waited
            // `stall_after`, then every second while it still waits.
            let stall_check = {
                let sent = p.in_flight.front().expect("not empty").1;
                (sent + stall_after).max(p.stall_checked + Duration::from_secs(1))
            };
            let delivered = {
                let front = &mut p.in_flight.front_mut().expect("not empty").2;
                tokio::select! {
                    biased;
                    r = front => Some(r),
                    _ = self.store.outbox().changed(), if can_send => {
                        woken = true;
                        None
                    }
                    _ = &mut shutdown, if !stopping => {
                        stopping = true;
                        None
                    }
                    _ = tokio::time::sleep_until(stall_check.into()) => {
                        p.stall_checked = Instant::now();
                        self.stalled(&mut p, stall_after);
                        // A fatal error can leave records in flight that
                        // will never resolve (nothing is sent after it, and
                        // they never time out): a new producer cancels them,
                        // and sending resumes from the lowest of them.
                        self.recreate_if_fatal()?;
                        None
                    }
                    _ = tokio::time::sleep_until(give_up.unwrap_or_else(tokio::time::Instant::now)), if give_up.is_some() => {
                        tracing::warn!(
                            in_flight = p.in_flight.len(),
                            "journal relay stopping with records not yet acknowledged by Kafka; \
                             they stay in the outbox and are sent again at the next start"
                        );
                        break;
                    }
                }
            };
            if let Some(r) = delivered {
                self.settle_ready(&mut p, r)?;
            }
        }
        let _ = self.producer.flush(Duration::from_secs(5));
        tracing::info!(pending = self.store.outbox().len(), "journal relay stopped");
        Ok(())
    }

    /// Nothing in flight: after a failed delivery, back off and resume from
    /// the lowest failed entry; otherwise wait for new commits. Returns
    /// whether `shutdown` resolved meanwhile, and whether a commit woke it.
    async fn idle(
        &mut self,
        p: &mut Pipeline,
        shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Result<(bool, bool), ProducerError> {
        if let Some(failed) = p.failed.take() {
            // Never forget an earlier resume point: an entry below
            // `failed` may have committed late and not been sent yet.
            p.from = p.from.min(failed).min(self.store.outbox().low_watermark());
            self.recreate_if_fatal()?;
            return Ok(tokio::select! {
                _ = shutdown => (true, false),
                _ = tokio::time::sleep(Duration::from_millis(500)) => (false, false),
            });
        }
        Ok(tokio::select! {
            _ = shutdown => (true, false),
            _ = self.store.outbox().changed() => (false, true),
            // Out-of-order commits below the watermark need a re-read.
            _ = tokio::time::sleep(Duration::from_millis(50)) => (false, false),
        })
    }

    /// The front delivery resolved with `r`: settles it with every report
    /// already in behind it, in one store write.
    fn settle_ready(
        &self,
        p: &mut Pipeline,
        r: <DeliveryFuture as Future>::Output,
    ) -> Result<(), ProducerError> {
        let (seq, _, _) = p.in_flight.pop_front().expect("not empty");
        let mut done = vec![(seq, r)];
        while let Some(r) = p
            .in_flight
            .front_mut()
            .and_then(|f| (&mut f.2).now_or_never())
        {
            let (seq, _, _) = p.in_flight.pop_front().expect("not empty");
            done.push((seq, r));
        }
        self.settle(p, done)
    }

    /// The registry id to frame records with (`Some(None)`: single-object);
    /// `None` while the journal schema has no id yet: nothing ships, and
    /// the relay's error says why.
    fn framing(&self) -> Option<Option<u32>> {
        let Some(cell) = &self.cfg.confluent_id else {
            return Some(None);
        };
        let waiting = "waiting for the schema registry to give the journal schema an id \
                       (journal.framing = \"confluent\"; the node's log says why it has none yet): \
                       writes stay in the outbox meanwhile";
        let mut e = self.stats.last_error.lock();
        if let Some(id) = cell.get() {
            // Over, even with nothing to ship (an idle relay would keep it).
            if e.as_deref() == Some(waiting) {
                *e = None;
                self.store.outbox().set_error(None);
            }
            return Some(Some(*id));
        }
        if e.as_deref() != Some(waiting) {
            *e = Some(waiting.to_string());
            self.store.outbox().set_error(Some(waiting.to_string()));
        }
        None
    }

    /// `record` as it ships: as the outbox holds it, or reframed into
    /// `buf`. `None`: it cannot be reframed (the outbox holds what this
    /// node encoded, so a bug): it waits, loudly, rather than ship
    /// unframed or be skipped.
    fn frame<'a>(
        &self,
        p: &mut Pipeline,
        seq: u64,
        record: &'a [u8],
        id: Option<u32>,
        buf: &'a mut Vec<u8>,
    ) -> Option<&'a [u8]> {
        let Some(id) = id else {
            return Some(record);
        };
        match northwest_schemas::confluent::to_confluent(record, id) {
            Ok(f) => {
                *buf = f;
                Some(buf)
            }
            Err(bad) => {
                // Logged by failed(), at most every 30 s.
                let err = KafkaError::MessageProduction(RDKafkaErrorCode::InvalidMessage);
                let what = format!("is not a single-object record ({bad}), so it cannot be framed for the schema registry (a bug: report it)");
                self.failed(p, seq, &err, &what);
                None
            }
        }
    }

    /// Reads committed entries from `p.from` and hands them to the producer.
    fn send_more(&self, p: &mut Pipeline) -> Result<(), ProducerError> {
        let Some(confluent_id) = self.framing() else {
            return Ok(());
        };
        while p.in_flight.len() < self.cfg.max_in_flight {
            // Read the watermark first: every entry below it is visible to the read.
            let low = self.store.outbox().low_watermark();
            let room = (self.cfg.max_in_flight - p.in_flight.len()).min(self.cfg.batch);
            let entries = self
                .store
                .outbox()
                .read(p.from, room + p.sent.len().min(room))?;
            let Some(last) = entries.last().map(|(s, _)| *s) else {
                p.from = p.from.min(low);
                return Ok(());
            };
            let mut next = last + 1;
            let mut sent_any = false;
            for (seq, e) in &entries {
                if p.sent.contains(seq) {
                    continue;
                }
                let mut framed = Vec::new();
                let Some(payload) = self.frame(p, *seq, &e.record, confluent_id, &mut framed)
                else {
                    next = *seq;
                    break;
                };
                let rec = FutureRecord::to(&self.cfg.topic.name)
                    .key(e.key.as_bytes())
                    .payload(payload)
                    .timestamp(e.ts_ms);
                match self.producer.send_result(rec) {
                    Ok(f) => {
                        p.in_flight.push_back((*seq, Instant::now(), f));
                        p.sent.insert(*seq);
                        sent_any = true;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        // Local queue full: resume here once deliveries drain it.
                        next = *seq;
                        break;
                    }
                    Err((err, _)) => {
                        // Refused outright (e.g. larger than message.max.bytes):
                        // retried after a back-off, loudly, never skipped.
                        self.failed(p, *seq, &err, "refused by the producer");
                        next = *seq;
                        break;
                    }
                }
            }
            // Entries below `low` that were in flight land later: re-read from there.
            p.from = next.min(low);
            if !sent_any || next <= last {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Acknowledges delivered entries; remembers the lowest failed one.
    fn settle(
        &self,
        p: &mut Pipeline,
        done: Vec<(u64, <DeliveryFuture as Future>::Output)>,
    ) -> Result<(), ProducerError> {
        let mut ok = Vec::with_capacity(done.len());
        for (seq, r) in done {
            p.sent.remove(&seq);
            match r {
                Ok(Ok(_)) => ok.push(seq),
                Ok(Err((err, _))) => self.failed(p, seq, &err, "not delivered"),
                Err(_canceled) => p.failed = Some(p.failed.map_or(seq, |f| f.min(seq))),
            }
        }
        self.store.outbox().ack(&ok)?;
        self.stats
            .shipped
            .fetch_add(ok.len() as u64, Ordering::Relaxed);
        if p.failed.is_none() && !ok.is_empty() {
            *self.stats.last_error.lock() = None;
            self.store.outbox().set_error(None);
            p.logged = None;
        }
        Ok(())
    }

    /// Records a failed send: counted, shown in status and to `sync` writers,
    /// logged at warn (once per distinct error and then every 30 s, so a long
    /// outage neither floods the log nor goes quiet).
    fn failed(&self, p: &mut Pipeline, seq: u64, err: &KafkaError, what: &str) {
        p.failed = Some(p.failed.map_or(seq, |f| f.min(seq)));
        self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
        let text = format!("journal entry {seq} {what}: {err}");
        *self.stats.last_error.lock() = Some(text.clone());
        self.store.outbox().set_error(Some(text.clone()));
        let due = match &p.logged {
            Some((last, at)) => last != &text || at.elapsed() >= Duration::from_secs(30),
            None => true,
        };
        if due {
            tracing::warn!(
                error = %err, seq, entry = what, topic = %self.cfg.topic.name,
                "journal relay cannot ship; retrying every 500 ms. Later entries wait behind it \
                 (order per entity group). Check the broker (deploy/stack.sh status) and that \
                 journal.max_message_bytes matches the topic's max.message.bytes"
            );
            p.logged = Some((text, Instant::now()));
        }
    }

    /// The oldest record in flight waited past `after` without an
    /// acknowledgement: shown in status, to `sync` writers and in the log
    /// (rate-limited as in [`Relay::failed`]); it keeps waiting, in order.
    fn stalled(&self, p: &mut Pipeline, after: Duration) {
        let Some((seq, sent, _)) = p.in_flight.front() else {
            return;
        };
        let waited = sent.elapsed().as_secs();
        let text = format!(
            "journal entry {seq} not acknowledged by Kafka for {waited} s (over {} s): the \
             broker is unreachable or the partition has no leader; later entries wait behind it",
            after.as_secs()
        );
        *self.stats.last_error.lock() = Some(text.clone());
        self.store.outbox().set_error(Some(text.clone()));
        let due = match &p.logged {
            Some((_, at)) => at.elapsed() >= Duration::from_secs(30),
            None => true,
        };
        if due {
            tracing::warn!(
                seq, waited_s = waited, topic = %self.cfg.topic.name,
                "journal relay waiting for Kafka; records are kept and sent in order once it \
                 answers. Check the broker (deploy/stack.sh status)"
            );
            p.logged = Some((text, Instant::now()));
        }
    }

    /// A fatal idempotent-producer error leaves the producer unusable: only a
    /// new producer (a new producer id) can send again.
    fn recreate_if_fatal(&mut self) -> Result<(), ProducerError> {
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            tracing::error!(?code, %reason, "fatal producer error; recreating the journal producer");
            *self.stats.last_error.lock() = Some(format!("fatal producer error: {reason}"));
            self.producer = self.cfg.kafka.relay_producer_config().create()?;
        }
        Ok(())
    }
}

/// The relay's sending state.
struct Pipeline {
    /// Next outbox sequence to read.
    from: u64,
    /// Sent (when), delivery outstanding, in send order.
    in_flight: VecDeque<(u64, Instant, DeliveryFuture)>,
    /// The sequences of `in_flight` (a re-read below the watermark skips them).
    sent: HashSet<u64>,
    /// Lowest entry whose delivery failed since the last restart of sending.
    failed: Option<u64>,
    /// The last error logged and when.
    logged: Option<(String, Instant)>,
    /// When the oldest record in flight was last checked for a stall.
    stall_checked: Instant,
}

impl Default for Pipeline {
    fn default() -> Self {
        Self {
            from: 0,
            in_flight: VecDeque::new(),
            sent: HashSet::new(),
            failed: None,
            logged: None,
            stall_checked: Instant::now(),
        }
    }
}
