//! Where the apply loop reads: assignment at the offsets stored in the
//! target's own store, detection of records that expired unapplied, and
//! replay (rewinding stored offsets, never raising them).

use std::time::Duration;

use northwest_kafka::{Offset, Partition, PartitionOffsets};
use rdkafka::consumer::Consumer;
use rdkafka::TopicPartitionList;

use crate::apply_loop::{Applier, Control, Source};
use crate::{offsets, ConsumerError};

impl Applier {
    /// (Re)assigns every partition at the offsets stored in our own store.
    ///
    /// A journal partition whose stored offset is below the partition's low
    /// watermark lost records to retention before they were applied: it is
    /// halted with the reason (librdkafka would otherwise skip ahead
    /// silently). A partition with no stored offset starts at its low
    /// watermark, recorded at once so lag and drains count from there.
    pub(crate) fn assign(&mut self, partitions: i32) -> Result<(), ConsumerError> {
        let mut stored = offsets::load(&self.store, &self.cfg.topic)?;
        if self.cfg.source == Source::Journal {
            self.check_retention(partitions, &mut stored)?;
        }
        let mut tpl = TopicPartitionList::new();
        let mut states = self.shared.partitions.lock();
        states.retain(|p, _| *p < partitions);
        for p in (0..partitions).map(Partition) {
            let st = states.entry(p.0).or_default();
            st.next_offset = stored.get(p);
            st.halted = self.halted.get(&p).cloned();
            if self.halted.contains_key(&p) {
                continue;
            }
            let at = stored
                .get(p)
                .map_or(rdkafka::Offset::Beginning, |o| rdkafka::Offset::Offset(o.0));
            tpl.add_partition_offset(&self.cfg.topic, p.0, at)?;
        }
        self.consumer.assign(&tpl)?;
        Ok(())
    }

    fn check_retention(
        &mut self,
        partitions: i32,
        stored: &mut PartitionOffsets,
    ) -> Result<(), ConsumerError> {
        let mut starts = Vec::new();
        for p in (0..partitions).map(Partition) {
            let (low, _) =
                self.consumer
                    .fetch_watermarks(&self.cfg.topic, p.0, Duration::from_secs(10))?;
            let low = Offset(low);
            match stored.get(p) {
                Some(s) if s < low => {
                    self.halted.insert(p, journal_gap(p, s, low));
                }
                Some(_) => {}
                None => {
                    starts.push((
                        offsets::offset_key(&self.cfg.topic, p),
                        offsets::encode(low.0),
                    ));
                    starts.push((
                        offsets::applied_from_key(&self.cfg.topic, p),
                        offsets::encode(low.0),
                    ));
                    stored.insert(p, low);
                }
            }
        }
        self.store.put_meta(starts)?;
        Ok(())
    }

    pub(crate) fn control(&mut self, c: Control, partitions: i32) -> Result<(), ConsumerError> {
        let (to, reply) = match c {
            Control::Rewind { to, reply } => (Ok(to), reply),
            Control::RewindToTime { ts_ms, reply } => {
                (self.offsets_for_time(ts_ms, partitions), reply)
            }
        };
        let result = match to {
            Ok(to) => self.rewind(&to, partitions).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let _ = reply.send(result);
        Ok(())
    }

    fn offsets_for_time(
        &self,
        ts_ms: i64,
        partitions: i32,
    ) -> Result<PartitionOffsets, ConsumerError> {
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(&self.cfg.topic, p, rdkafka::Offset::Offset(ts_ms))?;
        }
        let found = self
            .consumer
            .offsets_for_times(tpl, Duration::from_secs(10))?;
        let mut out = PartitionOffsets::new();
        for e in found.elements() {
            let (_, hw) = self.consumer.fetch_watermarks(
                &self.cfg.topic,
                e.partition(),
                Duration::from_secs(5),
            )?;
            let off = match e.offset() {
                rdkafka::Offset::Offset(o) => o,
                // No record at or after ts: nothing to replay in this partition.
                _ => hw,
            };
            out.insert(Partition(e.partition()), Offset(off));
        }
        Ok(out)
    }

    /// Lowers stored offsets (a replay); never raises them, which would skip records.
    fn rewind(
        &mut self,
        to: &PartitionOffsets,
        partitions: i32,
    ) -> Result<PartitionOffsets, ConsumerError> {
        let stored = offsets::load(&self.store, &self.cfg.topic)?;
        let from = offsets::applied_from(&self.store, &self.cfg.topic)?;
        let mut meta = Vec::new();
        for (p, o) in to {
            if p.0 < 0 || p.0 >= partitions {
                return Err(ConsumerError::BadRequest(format!(
                    "partition {p}: out of range (0..{partitions})"
                )));
            }
            let (low, high) =
                self.consumer
                    .fetch_watermarks(&self.cfg.topic, p.0, Duration::from_secs(10))?;
            if o.0 < low || o.0 > high {
                return Err(ConsumerError::BadRequest(format!(
                    "partition {p} offset {o}: the journal holds offsets {low}..{high} there"
                )));
            }
            if let Some(cur) = stored.get(p) {
                if o < cur {
                    meta.push((
                        offsets::offset_key(&self.cfg.topic, p),
                        offsets::encode(o.0),
                    ));
                    if from.get(p).is_some_and(|f| o < f) {
                        meta.push((
                            offsets::applied_from_key(&self.cfg.topic, p),
                            offsets::encode(o.0),
                        ));
                    }
                }
            }
        }
        self.store.put_meta(meta)?;
        self.assign(partitions)?;
        tracing::info!(?to, "journal replay: offsets rewound");
        Ok(offsets::load(&self.store, &self.cfg.topic)?)
    }

    /// Whether record `o` of partition `p` arrived after a jump over records
    /// that expired unapplied (the consumer resets to the log start when its
    /// position fell below it): the reason its partition must halt, if so.
    pub(crate) fn expired_gap(
        &mut self,
        p: Partition,
        o: Offset,
        batch_next: &PartitionOffsets,
    ) -> Result<Option<String>, ConsumerError> {
        let expected = batch_next.get(p).or_else(|| {
            let states = self.shared.partitions.lock();
            states.get(&p.0).and_then(|s| s.next_offset)
        });
        let Some(expected) = expected.filter(|e| o > *e) else {
            return Ok(None);
        };
        let (low, _) =
            self.consumer
                .fetch_watermarks(&self.cfg.topic, p.0, Duration::from_secs(10))?;
        let low = Offset(low);
        if low <= expected {
            return Ok(None);
        }
        Ok(Some(journal_gap(p, expected, low)))
    }
}

/// Records `from..low` of `p` expired before this node applied them: logs
/// it and returns why the partition halts.
fn journal_gap(p: Partition, from: Offset, low: Offset) -> String {
    let reason = format!(
        "records {from}..{low} expired (journal retention) before this node applied \
         them: its data is incomplete. Re-migrate it from a snapshot, or raise \
         journal.retention_ms for the future"
    );
    tracing::error!(
        partition = p.0,
        from = from.0,
        low = low.0,
        "journal gap: {reason}"
    );
    reason
}
