//! Lease acquisition, hand-over on request and reaping (see the parent
//! module's doc for the protocol).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zookeeper_client as zk;

use super::{zk_err, Inner, Session, ZkCoordinator};
use crate::coord::{GroupLock, Slot};
use crate::error::CoordError;

impl Inner {
    /// Gives back leases of idle groups so other processes can take them.
    pub(super) async fn reap_leases(self: Arc<Self>) {
        let tick = (self.cfg.lease_idle / 2).max(Duration::from_millis(5));
        loop {
            tokio::time::sleep(tick).await;
            let s = self.session();
            for (key, slot) in self.table.entries() {
                let Ok(mut g) = slot.try_lock_owned() else {
                    continue;
                };
                if g.held_gen.is_some() && g.last_used.elapsed() >= self.cfg.lease_idle {
                    self.give_back(&s, &mut g, &key, false).await;
                }
            }
            self.table.prune();
        }
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
    ) -> Result<(zk::OneshotWatcher, bool), CoordError> {
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
                return Ok((watcher, !data.is_empty()));
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
            Err(zk::Error::SessionExpired | zk::Error::ClientClosed) => return,
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
    /// Makes `lock` hold the group's lease under session `s`.
    pub(super) async fn take_lease(
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
        let (watcher, asked) = self.inner.acquire_lease(s, &key, deadline).await?;
        // Asked already: give it back after this transaction.
        let wanted = Arc::new(AtomicBool::new(asked));
        lock.guard.held_gen = Some(s.gen);
        lock.guard.acquired_at = Instant::now();
        lock.guard.wanted = wanted.clone();
        let slot = Arc::downgrade(tokio::sync::OwnedMutexGuard::mutex(&lock.guard));
        tokio::spawn(Inner::watch_lease(
            self.inner.clone(),
            key,
            slot,
            wanted,
            s.gen,
            watcher,
        ));
        Ok(())
    }
}
