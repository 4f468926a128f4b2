//! One batch of the apply loop: each record's fate (decoded, dead-lettered,
//! or halting its partition), the pure plan of the store write
//! ([`crate::batch::plan`]), the atomic write of data and offsets, and what
//! the loop shows and pauses after it.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use northwest_kafka::{Offset, Partition, PartitionOffsets};
use northwest_store::engine::Cf;
use northwest_store::{failpoint, ApplyStats};
use rdkafka::consumer::Consumer;
use rdkafka::TopicPartitionList;

use super::{Applier, Msg, PoisonPolicy, Source};
use crate::batch::{self, BatchPlan, Fate};
use crate::decode::{decode, decode_snapshot_row};
use crate::offsets;
use crate::ConsumerError;

/// What became of a batch.
pub(super) enum Batch {
    Written,
    /// The node began to stop while the write was being retried: nothing
    /// of the batch was written, and the loop must stop before it consumes
    /// anything else (a later batch would store offsets past this one).
    Stopped,
}

/// How long a registry may answer "no such id" before the record is poison.
const NO_SUCH_ID_WAIT: Duration = Duration::from_secs(600);

impl Applier {
    pub(super) async fn process(
        &mut self,
        msgs: Vec<Msg>,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Result<Batch, ConsumerError> {
        let Some(records) = self.classify(msgs, shutdown).await? else {
            return Ok(Batch::Stopped);
        };
        let plan = batch::plan(&self.cfg.topic, records, &self.halted);
        self.write(plan, shutdown).await
    }

    /// Decides each record's fate: decoded, dead-lettered (sent now, before
    /// the batch that moves past it is written) or halting its partition.
    /// Records of a partition already halted are not looked at: a bad
    /// record behind a halt must not reach the dead-letter topic.
    pub(super) async fn classify(
        &mut self,
        msgs: Vec<Msg>,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Result<Option<Vec<batch::Record>>, ConsumerError> {
        let Some(registry_halts) = self.learn_schema_ids(&msgs, shutdown).await? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(msgs.len());
        let mut halted_now = BTreeSet::new();
        let mut next = PartitionOffsets::new();
        for (p, o, payload) in msgs {
            if self.halted.contains_key(&p) || halted_now.contains(&p) {
                continue;
            }
            let gap = match self.cfg.source {
                Source::Journal => self.expired_gap(p, o, &next)?,
                Source::Snapshot => None,
            };
            let unreadable = registry_halts
                .get(&p)
                .filter(|(from, _)| o >= *from)
                .map(|(_, why)| why.clone());
            let fate = if let Some(gap) = gap {
                Fate::Halt(gap)
            } else if let Some(why) = unreadable {
                Fate::Halt(why)
            } else {
                let decoded = match self.cfg.source {
                    Source::Journal => decode(payload.as_deref()),
                    Source::Snapshot => decode_snapshot_row(payload.as_deref()),
                };
                match decoded {
                    Ok(t)
                        if self
                            .cfg
                            .filter
                            .as_ref()
                            .is_some_and(|f| !f.keeps(&t.origin, &t.ns)) =>
                    {
                        Fate::Skipped
                    }
                    Ok(t) => Fate::Apply(t),
                    Err(reason) => self.poisoned(p, o, &payload, reason).await?,
                }
            };
            if matches!(fate, Fate::Halt(_)) {
                halted_now.insert(p);
            } else {
                next.insert(p, o.next());
            }
            out.push(batch::Record {
                partition: p,
                offset: o,
                fate,
            });
        }
        Ok(Some(out))
    }

    /// Learns the registry ids of `msgs`' Confluent-framed records that
    /// this process has not learnt, before any record's fate is decided.
    /// Without a registry configured, each partition halts at its first
    /// such record (returned), saying what to configure. A registry that
    /// cannot be asked, or has no schema for the id (yet: a follower behind
    /// its leader, a registry restarted empty), is asked again every 2 s
    /// while the loop waits, not running, with why in status: a readable
    /// record is never dead-lettered for it. An id naming a schema that is
    /// not Avro stays unknown (its records are poison). `None`: the node
    /// stopped while the loop waited.
    async fn learn_schema_ids(
        &mut self,
        msgs: &[Msg],
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Result<Option<BTreeMap<Partition, (Offset, String)>>, ConsumerError> {
        use northwest_schemas::confluent::{confluent_schema_id, known_schema_id};
        let mut halts = BTreeMap::new();
        let mut settled = BTreeSet::new();
        for (p, o, payload) in msgs {
            // A halted partition's records are not looked at (classify).
            if self.halted.contains_key(p) || halts.contains_key(p) {
                continue;
            }
            let Some(id) = payload.as_deref().and_then(confluent_schema_id) else {
                continue;
            };
            let Some(lookup) = self.cfg.schemas.clone() else {
                if known_schema_id(id).is_none() && !halts.contains_key(p) {
                    halts.insert(*p, (*o, format!(
                        "the record at offset {o} is Confluent-framed (schema registry id {id}) and this node \
                         has no journal.schema_registry_url: set it to the registry the writer uses and restart"
                    )));
                }
                continue;
            };
            if known_schema_id(id).is_some() || !settled.insert(id) {
                continue;
            }
            if !self.wait_for_schema(&lookup, id, (*p, *o), shutdown).await {
                return Ok(None);
            }
        }
        Ok(Some(halts))
    }

    /// Asks the registry for `id`'s schema until it answers (learnt, or not
    /// Avro, or "no such id" for [`NO_SUCH_ID_WAIT`]: then its records are
    /// poison), the loop waiting meanwhile with why in status. `false`: the
    /// node stopped while it waited.
    async fn wait_for_schema(
        &mut self,
        lookup: &super::SchemaLookup,
        id: u32,
        (p, o): (Partition, Offset),
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> bool {
        use northwest_schemas::confluent::learn_schema_id;
        let mut attempt = 0u32;
        let mut none_since: Option<std::time::Instant> = None;
        loop {
            let asked = tokio::select! {
                r = lookup.schema(id) => r,
                _ = shutdown.as_mut() => return false,
            };
            let why = match asked {
                Ok(Some(text)) => match northwest_schemas::parsing_fingerprint(&text) {
                    Ok(fp) => {
                        learn_schema_id(id, fp);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(id, error = %e, "the registry's schema for an id is not Avro: its records are poison");
                        break;
                    }
                },
                // The registry says no such id: a follower behind its
                // leader catches up in seconds; past NO_SUCH_ID_WAIT
                // the record is unreadable, and poison like any other.
                Ok(None) if none_since.is_some_and(|t| t.elapsed() > NO_SUCH_ID_WAIT) => {
                    tracing::warn!(id, partition = p.0, offset = o.0, "the schema registry has had no schema with this id for 10 minutes: its records are poison (journal.poison_policy)");
                    break;
                }
                Ok(None) => {
                    none_since.get_or_insert_with(std::time::Instant::now);
                    format!("the schema registry has no schema with id {id} (yet?; after 10 minutes its records are poison)")
                }
                Err(e) => format!("the schema registry could not be asked for id {id}: {e}"),
            };
            let why = format!(
                "waiting for the schema of a Confluent-framed record (partition {} offset {o}): {why}; \
                 asked again every 2 s (journal.schema_registry_url)",
                p.0
            );
            if attempt.is_multiple_of(30) {
                tracing::warn!(partition = p.0, offset = o.0, id, "{why}");
            }
            attempt += 1;
            self.shared.running.store(false, Ordering::Relaxed);
            *self.shared.waiting_for.lock() = Some(why);
            let stopped = tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => false,
                _ = shutdown.as_mut() => true,
            };
            if stopped {
                return false;
            }
        }
        if attempt > 0 {
            tracing::info!(id, "done waiting for the schema registry; applying again");
            *self.shared.waiting_for.lock() = None;
            self.shared.running.store(true, Ordering::Relaxed);
        }
        true
    }

    /// A record that cannot be applied: dead-lettered, or its partition
    /// halts (the policy says so, or the dead-letter topic refused it).
    async fn poisoned(
        &mut self,
        p: Partition,
        o: Offset,
        payload: &Option<Vec<u8>>,
        reason: String,
    ) -> Result<Fate, ConsumerError> {
        match self.cfg.poison {
            PoisonPolicy::DeadLetter => {
                tracing::warn!(partition = p.0, offset = o.0, %reason, "journal record dead-lettered");
                let sent = self.dlq.send(p, o, payload, &reason).await;
                if sent.is_ok() && failpoint::hit("consumer::after_dead_letter") {
                    return Err(northwest_store::StoreError::Injected(
                        "consumer::after_dead_letter",
                    )
                    .into());
                }
                match sent {
                    Ok(()) => Ok(Fate::DeadLettered),
                    Err(e) => {
                        let why = format!("offset {o}: {reason}; and it could not be dead-lettered ({e}): fix the dead-letter topic {} and restart", self.cfg.dead_letter_topic);
                        tracing::error!(
                            partition = p.0,
                            offset = o.0,
                            "journal partition halted: {why}"
                        );
                        Ok(Fate::Halt(why))
                    }
                }
            }
            PoisonPolicy::Halt => {
                tracing::error!(partition = p.0, offset = o.0, %reason, "journal partition halted on a bad record; set poison_policy = \"dead-letter\" and restart to move past it");
                Ok(Fate::Halt(format!("offset {o}: {reason}")))
            }
        }
    }

    /// Writes a planned batch (data and offsets atomically), then publishes
    /// its counters and positions and pauses the partitions it halted.
    pub(super) async fn write(
        &mut self,
        plan: BatchPlan,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Result<Batch, ConsumerError> {
        let BatchPlan {
            writes,
            mut meta,
            next,
            txns,
            dead_lettered: dead,
            skipped,
            halted: newly_halted,
            commit_times,
            delivered,
        } = plan;
        if self.cfg.apply_log {
            self.count_deliveries(&delivered, &mut meta)?;
        }
        if failpoint::hit("consumer::before_batch_write") {
            return Err(
                northwest_store::StoreError::Injected("consumer::before_batch_write").into(),
            );
        }
        let stats = loop {
            match self
                .store
                .apply_replicated_logged(
                    &writes,
                    meta.clone().into_iter().collect(),
                    self.cfg.apply_log,
                )
                .await
            {
                Ok(s) => break s,
                Err(e) if e.is_retriable() => {
                    self.shared.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "apply batch failed; retrying");
                    tokio::select! {
                        _ = shutdown.as_mut() => return Ok(Batch::Stopped),
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
                Err(e) => return Err(e.into()),
            }
        };
        if failpoint::hit("consumer::after_batch_write") {
            return Err(
                northwest_store::StoreError::Injected("consumer::after_batch_write").into(),
            );
        }
        self.shared.skipped.fetch_add(skipped, Ordering::Relaxed);
        self.publish(&stats, txns, dead, &commit_times);
        self.advance(next, newly_halted)?;
        Ok(Batch::Written)
    }

    /// The apply log's per-record delivery counts (tests' proof of no
    /// double apply), written with the batch.
    fn count_deliveries(
        &self,
        delivered: &[(Partition, Offset)],
        meta: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    ) -> Result<(), ConsumerError> {
        for &(p, o) in delivered {
            let key = offsets::delivery_key(&self.cfg.topic, p, o);
            let seen = self
                .store
                .engine()
                .get(Cf::Meta, &key)
                .map_err(northwest_store::StoreError::from)?;
            let n = seen
                .and_then(|b| b.try_into().ok().map(i64::from_be_bytes))
                .unwrap_or(0);
            meta.insert(key, offsets::encode(n + 1));
        }
        Ok(())
    }

    /// A written batch's counters.
    fn publish(&self, stats: &ApplyStats, txns: u64, dead: u64, commit_times: &[i64]) {
        let s = &self.shared;
        if s.record_latency.load(Ordering::Relaxed) {
            let now = northwest_store::store::now_ms_pub();
            s.latencies_ms
                .lock()
                .extend(commit_times.iter().map(|t| (now - t).max(0) as u32));
        }
        s.txns.fetch_add(txns, Ordering::Relaxed);
        s.writes_applied.fetch_add(stats.applied, Ordering::Relaxed);
        s.writes_stale.fetch_add(stats.stale, Ordering::Relaxed);
        s.writes_blacklisted
            .fetch_add(stats.blacklisted, Ordering::Relaxed);
        s.dead_lettered.fetch_add(dead, Ordering::Relaxed);
        s.batches.fetch_add(1, Ordering::Relaxed);
    }

    /// After a written batch: the partitions' new positions (shown, and
    /// committed to the consumer group for lag tools), and the partitions it
    /// halted paused.
    fn advance(
        &mut self,
        next: PartitionOffsets,
        newly_halted: BTreeMap<Partition, String>,
    ) -> Result<(), ConsumerError> {
        // Advisory: the applied offsets also go to the consumer group, so
        // the lag tools operators run (kafka-consumer-groups, Burrow, a Kafka
        // UI) see n2. Never read back: the store's offsets are the truth.
        if !next.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (p, o) in &next {
                let _ =
                    tpl.add_partition_offset(&self.cfg.topic, p.0, rdkafka::Offset::Offset(o.0));
            }
            if let Err(e) = self
                .consumer
                .commit(&tpl, rdkafka::consumer::CommitMode::Async)
            {
                tracing::debug!(error = %e, "advisory group offset commit failed");
            }
        }
        let mut states = self.shared.partitions.lock();
        for (p, o) in next {
            states.entry(p.0).or_default().next_offset = Some(o);
        }
        for (p, why) in &newly_halted {
            states.entry(p.0).or_default().halted = Some(why.clone());
        }
        drop(states);
        if !newly_halted.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for p in newly_halted.keys() {
                tpl.add_partition(&self.cfg.topic, p.0);
            }
            self.halted.extend(newly_halted);
            self.consumer.pause(&tpl)?;
        }
        Ok(())
    }
}
