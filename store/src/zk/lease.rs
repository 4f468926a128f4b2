//! Lease acquisition, hand-over on request and reaping (see the parent
//! module's doc for the protocol).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::OwnedMutexGuard;
use zookeeper_client as zk;

use super::{zk_err, Inner, Session, ZkCoordinator, LEASE_BATCH, LEASE_BATCH_BYTES};

use crate::coord::{GroupLock, Slot};
use crate::error::CoordError;
use crate::key::EntityGroup;

impl Inner {
    /// Gives back leases of idle groups so other processes can take them,
    /// [`LEASE_BATCH`] znodes per ZooKeeper round trip (a snapshot load
    /// leaves one idle lease per entity group it wrote).
    pub(super) async fn reap_leases(self: Arc<Self>) {
        let tick = (self.cfg.lease_idle / 2).max(Duration::from_millis(5));
        loop {
            let s = self.session();
            // A take that found no room in the session's ledger (see
            // `budget`) wakes this at once.
            let pressed = tokio::select! {
                _ = tokio::time::sleep(tick) => false,
                _ = s.ledger.pressure.notified() => true,
            };
            let s = self.session();
            let mut idle = Vec::new();
            let mut spare = Vec::new();
            let mut bytes = 0;
            for (key, slot) in self.table.entries() {
                let Ok(mut g) = slot.clone().try_lock_owned() else {
                    continue;
                };
                match g.held_gen {
                    Some(gen) if gen == s.gen && g.last_used.elapsed() >= self.cfg.lease_idle => {
                        let path = self.lease_path(&key);
                        bytes += path.len();
                        idle.push((path, g));
                    }
                    // Not idle yet, but unused now: given back oldest
                    // first should the session need room.
                    Some(gen) if gen == s.gen && pressed => {
                        spare.push((key, slot.clone(), g.last_used));
                    }
                    // Taken under a session that has ended: its znode
                    // went with it.
                    Some(gen) if gen < s.gen => {
                        g.held_gen = None;
                        g.yielded = false;
                    }
                    // Not idle, or taken under a newer session than `s`
                    // (the next tick sees it).
                    _ => {}
                }
                if idle.len() == LEASE_BATCH || bytes >= LEASE_BATCH_BYTES {
                    self.give_back_idle(&s, std::mem::take(&mut idle)).await;
                    bytes = 0;
                }
            }
            self.give_back_idle(&s, idle).await;
            self.make_room(&s, spare).await;
            self.table.prune();
            if pressed {
                // Waiting takes ask every 20 ms each: one pass per 10 ms
                // at most, each scanning the whole table.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// Gives idle leases (each taken under `s`, with its znode's path) back
    /// in one multi-op delete. Should it fail, each is removed only if its
    /// znode is still ours: a lost reply may hide a delete that landed, and
    /// another process may have created the znode since.
    pub(super) async fn give_back_idle(
        &self,
        s: &Session,
        idle: Vec<(String, OwnedMutexGuard<Slot>)>,
    ) {
        if idle.is_empty() {
            return;
        }
        let mut multi = s.client.new_multi_writer();
        let added = idle.iter().all(|(p, _)| multi.add_delete(p, None).is_ok());
        let deleted = added && multi.commit().await.is_ok();
        // Each slot's guard goes as soon as its own lease is settled: a
        // transaction waits on its group only, not on the whole batch.
        futures::future::join_all(idle.into_iter().map(|(path, mut g)| async move {
            g.held_gen = None;
            // Someone asked while it was idle: let them go first.
            g.yielded = g.wanted.load(Ordering::Acquire);
            if !deleted {
                // Under the slot's lock: this process cannot take the
                // group again meanwhile.
                remove_if_ours(&s.client, &path).await;
            }
        }))
        .await;
    }

    /// Creates the group's ephemeral lease znode, waiting while another
    /// process holds it. Returns a data watch on our own znode (a waiter
    /// asks for the group by setting data on it, see [`Inner::watch_lease`])
    /// and whether a waiter already asked: its write can land between our
    /// create and our read, and then no later change would tell us.
    async fn acquire_lease(
        &self,
        s: &Session,
        key: &str,
        deadline: Instant,
    ) -> Result<(zk::OneshotWatcher, bool, i64), CoordError> {
        let path = self.lease_path(key);
        let opts = zk::CreateMode::Ephemeral.with_acls(self.cfg.auth.acls());
        let timeout = || CoordError::LockTimeout(self.cfg.lock_timeout, key.to_string());
        loop {
            // Pipelined on one connection: the read sees the create's result.
            let created = s.client.create(&path, &[], &opts);
            let watched = s.client.get_and_watch_data(&path);
            let (created, watched) = futures::join!(created, watched);
            let (data, stat, watcher) = match (created, watched) {
                (Ok(_) | Err(zk::Error::NodeExists), Ok(w)) => w,
                // Deleted between the two requests: try again.
                (Ok(_) | Err(zk::Error::NodeExists), Err(zk::Error::NoNode)) => continue,
                // A create whose reply was lost may still have made the znode.
                (Err(_), Ok(w)) if w.1.ephemeral_owner == s.client.session_id().0 => w,
                (Err(e), _) | (_, Err(e)) => {
                    // Under the slot's lock: no take of this group by this
                    // process can interleave with the clean-up.
                    remove_if_ours(&s.client, &path).await;
                    return Err(zk_err(e));
                }
            };
            // Ours: just created, or a create whose reply was lost in a reconnect.
            if stat.ephemeral_owner == s.client.session_id().0 {
                return Ok((watcher, !data.is_empty(), stat.czxid));
            }
            if data.is_empty() {
                // Ask the holder to give the lease back after its current
                // transaction; our own watch fires on this change and we wait
                // on the next round.
                match s
                    .client
                    .set_data(&path, LEASE_WANTED, Some(stat.version))
                    .await
                {
                    // The holder moved on: our watch fires.
                    Ok(_) | Err(zk::Error::BadVersion | zk::Error::NoNode) => {}
                    // The ask may not have landed (a connection loss): nothing
                    // would wake us, so ask again.
                    Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    Err(_) => return Err(timeout()),
                }
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or_else(timeout)?;
            if tokio::time::timeout(left, watcher.changed()).await.is_err() {
                return Err(timeout());
            }
        }
    }

    /// Holds a lease's data watch: when another process asks for the group,
    /// the lease is given back as soon as the transactions already queued on
    /// it locally have finished.
    async fn watch_lease(
        self: Arc<Self>,
        key: String,
        slot: std::sync::Weak<tokio::sync::Mutex<Slot>>,
        wanted: Arc<AtomicBool>,
        gen: u64,
        watcher: zk::OneshotWatcher,
    ) {
        if wanted.load(Ordering::Acquire) {
            // Asked before we held it: no event will come. Give it back even
            // if no transaction of ours reaches `release` (one that fails
            // before commit only drops its lock). The give-back deletes the
            // znode, which ends the watch.
            tokio::spawn(async move {
                let _ = watcher.changed().await;
            });
        } else {
            let ev = watcher.changed().await;
            if ev.event_type != zk::EventType::NodeDataChanged {
                return; // we deleted it, or the session ended: nothing to give back
            }
            wanted.store(true, Ordering::Release);
        }
        let Some(slot) = slot.upgrade() else { return };
        let mut g = slot.lock_owned().await;
        if Arc::ptr_eq(&g.wanted, &wanted) && g.held_gen == Some(gen) {
            self.give_back(&self.session(), &mut g, &key, true).await;
        }
    }

    /// Gives `slot`'s lease back: deletes the znode if it was taken under
    /// session `s` (an older session's znode went with that session).
    /// `yielded`: another process asked for it (see [`Slot::yielded`]).
    pub(super) async fn give_back(&self, s: &Session, slot: &mut Slot, key: &str, yielded: bool) {
        let held = slot.held_gen.take();
        slot.yielded = yielded;
        if held == Some(s.gen) {
            let path = self.lease_path(key);
            if let Err(e) = s.client.delete(&path, None).await {
                // The session lives on, so its ephemeral znode would too: keep
                // trying, under the slot's lock (so this process cannot take
                // the group again meanwhile), rather than orphan the group.
                tracing::warn!(error = %e, key, "lease release failed; retrying");
                remove_if_ours(&s.client, &path).await;
            }
        }
    }
}

impl Inner {
    /// Whether `e`, met under session `s`, came of the session ending (the
    /// error itself says so, or the session is over or replaced now).
    pub(super) fn ended(&self, s: &Session, e: &CoordError) -> bool {
        matches!(e, CoordError::SessionLost)
            || s.client.state().is_terminated()
            || self.session().gen != s.gen
    }

    /// Waits (until `deadline`) for a session newer than `gen`.
    pub(super) async fn next_session(&self, gen: u64, deadline: Instant) -> Result<(), CoordError> {
        while self.session().gen == gen {
            if Instant::now() >= deadline {
                return Err(CoordError::SessionLost);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

/// Deletes `path` if this client's session owns it, retrying until that is
/// done or the session has ended (which removes its ephemeral znodes).
/// Callers hold the group's slot lock, so the znode cannot meanwhile become
/// a lease this process holds again.
pub(super) async fn remove_if_ours(client: &zk::Client, path: &str) {
    let me = client.session_id().0;
    let mut backoff = Duration::from_millis(50);
    loop {
        let r = match client.check_stat(path).await {
            Ok(Some(st)) if st.ephemeral_owner == me => client.delete(path, Some(st.version)).await,
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        match r {
            Ok(()) | Err(zk::Error::NoNode) => return,
            // The session has ended (its ephemeral znodes with it).
            Err(zk::Error::SessionExpired | zk::Error::ClientClosed | zk::Error::AuthFailed) => {
                return
            }
            Err(_) if client.state().is_terminated() => return,
            // A waiter wrote into it meanwhile: look again.
            Err(zk::Error::BadVersion) => continue,
            Err(e) => {
                tracing::warn!(error = %e, %path, "removing a lease znode failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// How long a process that handed a lease over waits for the asker to take
/// it before competing for it again.
const HANDOVER_GRACE: Duration = Duration::from_millis(100);

/// Data a waiting process writes into a held lease znode.
const LEASE_WANTED: &[u8] = b"wanted";

impl ZkCoordinator {
    /// [`crate::Coordinator::lock_many`] under session `s`: `groups` are
    /// distinct and sorted.
    pub(super) async fn lock_under(
        &self,
        s: &Arc<Session>,
        groups: &[EntityGroup],
        deadline: Instant,
    ) -> Result<Vec<GroupLock>, CoordError> {
        let timeout = self.inner.cfg.lock_timeout;
        // Room in the session for the leases this will take (see
        // `budget`), set aside before any slot is locked.
        let cost = |g: &EntityGroup| super::budget::cost(&self.inner.lease_path(&g.journal_key()));
        let need: usize = groups
            .iter()
            .filter(|g| !self.inner.table.holds(g, s.gen))
            .map(cost)
            .sum();
        let reserved =
            super::budget::Reservation::take(s.clone(), &self.inner.cfg, need, deadline).await?;
        let mut locks = Vec::with_capacity(groups.len());
        for g in groups {
            let left = deadline.saturating_duration_since(Instant::now());
            let lock = tokio::time::timeout(left, self.inner.table.lock(g))
                .await
                .map_err(|_| CoordError::LockTimeout(timeout, g.journal_key()))?;
            locks.push(lock);
        }
        // Local slots are ours; fetch the missing leases (batched, see
        // `take_leases`). Every take runs to its end even when one fails: a
        // take dropped midway could leave its create landing as a znode this
        // process holds without knowing (no watch, so askers would wait out
        // their lock timeouts). Leases taken meanwhile stay held, like any
        // cached lease.
        let missing: Vec<_> = locks
            .iter_mut()
            .filter(|l| l.guard.held_gen != Some(s.gen))
            .collect();
        reserved.settle(missing.iter().map(|l| cost(&l.group)).sum());
        self.take_leases(s, missing, deadline).await?;
        Ok(locks)
    }

    /// Makes every lock of `missing` hold its group's lease under session
    /// `s`. Fresh groups are created [`LEASE_BATCH`] per multi-op: one
    /// round trip and one ZooKeeper transaction instead of one each (the
    /// snapshot loader takes a lease per row's group). A multi-op is all or
    /// nothing; when it fails (a group held elsewhere, a lost reply that may
    /// still have created them all) its groups are taken one by one, which
    /// waits for holders and recognises znodes already ours.
    pub(super) async fn take_leases(
        &self,
        s: &Session,
        missing: Vec<&mut GroupLock>,
        deadline: Instant,
    ) -> Result<(), CoordError> {
        // A group just handed over waits for its asker: one by one.
        let (mut fresh, yielded): (Vec<_>, Vec<_>) =
            missing.into_iter().partition(|l| !l.guard.yielded);
        let singles = yielded.into_iter().map(|l| self.take_lease(s, l, deadline));
        let mut chunks: Vec<Vec<&mut GroupLock>> = Vec::new();
        let mut bytes = 0;
        for l in fresh.drain(..) {
            let len = self.inner.lease_path(&l.group.journal_key()).len();
            match chunks.last_mut() {
                Some(c) if c.len() < LEASE_BATCH && bytes + len <= LEASE_BATCH_BYTES => {
                    bytes += len;
                    c.push(l);
                }
                _ => {
                    bytes = len;
                    chunks.push(vec![l]);
                }
            }
        }
        let chunks = chunks
            .iter_mut()
            .map(|chunk| self.take_chunk(s, chunk, deadline));
        let (a, b) = futures::join!(
            futures::future::join_all(singles),
            futures::future::join_all(chunks)
        );
        a.into_iter().chain(b).collect()
    }

    async fn take_chunk(
        &self,
        s: &Session,
        chunk: &mut [&mut GroupLock],
        deadline: Instant,
    ) -> Result<(), CoordError> {
        for l in chunk.iter_mut() {
            l.guard.held_gen = None;
        }
        let mut rest: Vec<&mut GroupLock> = Vec::new();
        if chunk.len() > 1 && self.create_many(s, chunk).await {
            // Created: watch each (a waiter may already have asked).
            let watched = futures::future::join_all(chunk.iter().map(|l| {
                let path = self.inner.lease_path(&l.group.journal_key());
                async move { s.client.get_and_watch_data(&path).await }
            }))
            .await;
            for (lock, w) in chunk.iter_mut().zip(watched) {
                match w {
                    Ok((data, stat, watcher))
                        if stat.ephemeral_owner == s.client.session_id().0 =>
                    {
                        self.hold(s, lock, watcher, !data.is_empty(), stat.czxid);
                    }
                    // Gone with the session, or the read failed: the
                    // single take tells which, and cleans up.
                    _ => rest.push(lock),
                }
            }
        } else {
            rest.extend(chunk.iter_mut().map(|l| &mut **l));
        }
        let taken =
            futures::future::join_all(rest.into_iter().map(|l| self.take_lease(s, l, deadline)))
                .await;
        taken.into_iter().collect()
    }

    /// Creates every lock's lease znode in one multi-op; `false` if it
    /// failed (then none was created, or the reply was lost).
    async fn create_many(&self, s: &Session, chunk: &[&mut GroupLock]) -> bool {
        let opts = zk::CreateMode::Ephemeral.with_acls(self.inner.cfg.auth.acls());
        let mut multi = s.client.new_multi_writer();
        for l in chunk {
            let path = self.inner.lease_path(&l.group.journal_key());
            if multi.add_create(&path, &[], &opts).is_err() {
                return false;
            }
        }
        multi.commit().await.is_ok()
    }

    /// Makes `lock` hold the group's lease under session `s`.
    async fn take_lease(
        &self,
        s: &Session,
        lock: &mut GroupLock,
        deadline: Instant,
    ) -> Result<(), CoordError> {
        lock.guard.held_gen = None;
        let key = lock.group.journal_key();
        if std::mem::take(&mut lock.guard.yielded) {
            // We just handed the group over on request: our next local
            // transaction must not win the race to re-create the znode
            // before the process that asked (it would starve). Wait for its
            // create, bounded in case it gave up.
            let path = self.inner.lease_path(&key);
            if let Ok((None, w)) = s.client.check_and_watch_stat(&path).await {
                let _ = tokio::time::timeout(HANDOVER_GRACE, w.changed()).await;
            }
        }
        let (watcher, asked, token) = self.inner.acquire_lease(s, &key, deadline).await?;
        self.hold(s, lock, watcher, asked, token);
        Ok(())
    }

    /// Records that `lock` holds its lease under `s` and watches for askers
    /// (`asked`: one asked already; give it back after this transaction).
    /// `token`: the lease znode's creation zxid, its fencing token (zxids
    /// only grow, so every later holder's is larger).
    fn hold(
        &self,
        s: &Session,
        lock: &mut GroupLock,
        watcher: zk::OneshotWatcher,
        asked: bool,
        token: i64,
    ) {
        let wanted = Arc::new(AtomicBool::new(asked));
        lock.guard.held_gen = Some(s.gen);
        lock.guard.token = Some(token);
        lock.guard.acquired_at = Instant::now();
        lock.guard.wanted = wanted.clone();
        let slot = Arc::downgrade(tokio::sync::OwnedMutexGuard::mutex(&lock.guard));
        tokio::spawn(Inner::watch_lease(
            self.inner.clone(),
            lock.group.journal_key(),
            slot,
            wanted,
            s.gen,
            watcher,
        ));
    }
}
