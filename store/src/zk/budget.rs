//! How many lease znodes one ZooKeeper session may hold at once.
//!
//! When a session ends, ZooKeeper logs one `closeSession` transaction that
//! lists the path of every ephemeral znode the session held, and a server
//! reading a record above `jute.maxbuffer` (1 MB by default) refuses it:
//! an ensemble that logged one cannot restart (ZOOKEEPER-4306, open). The
//! same list of watched paths is sent again on every reconnect
//! (`SetWatches`). A snapshot load takes a lease per row's group and holds
//! it for `lease_idle`: at 60k rows/s that is megabytes of paths. So each
//! session keeps a ledger of the path bytes its leases take (as that
//! transaction encodes them) and stays under [`ZkConfig::max_lease_bytes`]:
//! a take that would pass it first has the reaper give back the least
//! recently used idle leases, and waits for room.
//!
//! The ledger has two parts. `reserved`: bytes a `lock_many` set aside
//! before it locks its groups' slots (so it waits for room holding none,
//! and the reaper can give back any idle lease meanwhile). `held`: what the
//! reaper last counted in the lock table (a slot in use counts as held),
//! plus what takes added since; give-backs are subtracted at the next
//! count, so between counts it can only be too high.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

use std::sync::Arc;

use super::{Inner, Session, ZkConfig, ZkCoordinator, LEASE_BATCH, LEASE_BATCH_BYTES};
use crate::coord::Slot;
use crate::error::CoordError;

impl ZkCoordinator {
    /// Bytes of lease paths this process's session holds or has reserved,
    /// and the most it may (`max_lease_bytes`).
    pub fn lease_bytes(&self) -> (usize, usize) {
        (
            self.inner.session().ledger.bytes(),
            self.inner.cfg.max_lease_bytes,
        )
    }
}

/// A slot the reaper may give back to make room: its key, the slot, and
/// when it was last used (as the reaper saw it, without keeping it locked).
pub(super) type Spare = (String, Arc<tokio::sync::Mutex<Slot>>, Instant);

/// What one held lease adds to the session's `closeSession` record: its
/// path and the path's length prefix.
pub(super) fn cost(path: &str) -> usize {
    path.len() + 4
}

/// A session's ledger of lease path bytes.
#[derive(Default)]
pub(super) struct Ledger {
    /// (held, reserved) bytes (see the module doc).
    bytes: Mutex<(usize, usize)>,
    /// Wakes the reaper when a take finds no room.
    pub(super) pressure: Notify,
    /// The largest reservation waiting for room since the reaper last
    /// made some: it gives back enough for it.
    wanted: Mutex<usize>,
    /// Wakes takes waiting for room once the reaper gave leases back.
    room: Notify,
}

impl Ledger {
    /// Reserves `need` bytes for leases about to be taken, waiting (up to
    /// `deadline`) while the reaper makes room. Returns what it reserved
    /// (at most the cap), which [`Ledger::settle`] takes back.
    pub(super) async fn reserve(
        &self,
        cfg: &ZkConfig,
        need: usize,
        deadline: Instant,
        alive: impl Fn() -> bool,
    ) -> Result<usize, CoordError> {
        let cap = cfg.max_lease_bytes;
        if need > cap {
            // One call's own groups cannot be split here: it waits until
            // the session holds nothing else, and passes the cap by the
            // rest (the apply batch, `journal.apply_batch`, sets its size).
            tracing::warn!(
                need,
                cap,
                "one batch locks more entity groups than a ZooKeeper session should hold \
                 leases for at once: lower journal.apply_batch"
            );
        }
        let need = need.min(cap);
        let mut warned = false;
        loop {
            let room = self.room.notified();
            {
                let mut b = self.bytes.lock();
                if b.0 + b.1 + need <= cap {
                    b.1 += need;
                    return Ok(need);
                }
            }
            {
                let mut w = self.wanted.lock();
                *w = (*w).max(need);
            }
            if !alive() {
                // No reaper counts this session's ledger any more.
                return Err(CoordError::SessionLost);
            }
            self.pressure.notify_one();
            if !warned && deadline.saturating_duration_since(Instant::now()) < cfg.lock_timeout / 2
            {
                warned = true;
                tracing::warn!(
                    held = self.bytes(),
                    cap,
                    "this process holds leases on so many entity groups that one more would \
                     pass what a ZooKeeper session may hold, and none is idle to give back: \
                     transactions wait for leases in use to end"
                );
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CoordError::LockTimeout(
                    cfg.lock_timeout,
                    "room for another lease in this ZooKeeper session".into(),
                ));
            }
            // The reaper may free room without a wake-up reaching us first.
            let _ = tokio::time::timeout(left.min(Duration::from_millis(20)), room).await;
        }
    }

    /// Turns a reservation of `reserved` bytes into `taken` held ones, once
    /// the `lock_many` that made it has locked its groups' slots (from then
    /// on a count sees them).
    pub(super) fn settle(&self, reserved: usize, taken: usize) {
        if reserved == 0 && taken == 0 {
            // Every lease already held: the common case, kept off the lock.
            return;
        }
        let mut b = self.bytes.lock();
        b.1 = b.1.saturating_sub(reserved);
        b.0 += taken;
        drop(b);
        if taken < reserved {
            self.room.notify_waiters();
        }
    }

    /// Sets `held` to `count()` (the bytes of the leases the lock table
    /// shows), with takes held off meanwhile.
    pub(super) fn recount_with(&self, count: impl FnOnce() -> usize) {
        let mut b = self.bytes.lock();
        b.0 = count();
        drop(b);
        self.room.notify_waiters();
    }

    /// Held and reserved bytes.
    pub(super) fn bytes(&self) -> usize {
        let b = self.bytes.lock();
        b.0 + b.1
    }
}

/// Bytes a `lock_many` set aside in its session's ledger. Given back if
/// the call ends, or is dropped (a client that hangs up cancels its
/// request), before it settles them.
pub(super) struct Reservation {
    session: Arc<Session>,
    bytes: usize,
    settled: bool,
}

impl Reservation {
    /// Reserves `need` bytes in `session`'s ledger (see [`Ledger::reserve`]).
    pub(super) async fn take(
        session: Arc<Session>,
        cfg: &ZkConfig,
        need: usize,
        deadline: Instant,
    ) -> Result<Self, CoordError> {
        let bytes = match need {
            0 => 0,
            _ => {
                let alive = || !session.client.state().is_terminated();
                session.ledger.reserve(cfg, need, deadline, alive).await?
            }
        };
        Ok(Self {
            session,
            bytes,
            settled: false,
        })
    }

    /// The leases are about to be taken: `taken` bytes are held from now
    /// on (their slots are locked, so a count sees them).
    pub(super) fn settle(mut self, taken: usize) {
        self.session.ledger.settle(self.bytes, taken);
        self.settled = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.settled {
            self.session.ledger.settle(self.bytes, 0);
        }
    }
}

impl Inner {
    /// Counts what session `s` holds into its ledger; if that is over
    /// three quarters of the cap (or over what a waiting reservation
    /// leaves), gives back `spare` leases, least recently used first, until
    /// it is not. Each is locked only for its batch's give-back, and only
    /// if still held under `s` and unused. Then wakes takes waiting for room.
    pub(super) async fn make_room(&self, s: &Session, mut spare: Vec<Spare>) {
        let cap = self.cfg.max_lease_bytes;
        let wanted = std::mem::take(&mut *s.ledger.wanted.lock());
        let target = (cap / 4 * 3).min(cap.saturating_sub(wanted));
        s.ledger.recount_with(|| self.held_bytes(s));
        let mut over = s.ledger.bytes().saturating_sub(target);
        if over == 0 {
            return;
        }
        spare.sort_by_key(|(_, _, used)| *used);
        let mut victims = spare.into_iter();
        while over > 0 {
            let mut batch = Vec::new();
            let mut bytes = 0;
            for (key, slot, _) in victims.by_ref() {
                let Ok(g) = slot.try_lock_owned() else {
                    continue;
                };
                if g.held_gen != Some(s.gen) {
                    continue;
                }
                let path = self.lease_path(&key);
                over = over.saturating_sub(cost(&path));
                bytes += path.len();
                batch.push((path, g));
                if over == 0 || batch.len() == LEASE_BATCH || bytes >= LEASE_BATCH_BYTES {
                    break;
                }
            }
            if batch.is_empty() {
                break;
            }
            self.give_back_idle(s, batch).await;
        }
        s.ledger.recount_with(|| self.held_bytes(s));
    }

    /// Bytes of the leases session `s` holds: a slot in use (locked) counts
    /// as held, since its transaction may be taking its lease.
    fn held_bytes(&self, s: &Session) -> usize {
        self.table
            .entries()
            .iter()
            .filter(|(_, slot)| {
                slot.try_lock()
                    .map(|g| g.held_gen == Some(s.gen))
                    .unwrap_or(true)
            })
            .map(|(key, _)| cost(&self.lease_path(key)))
            .sum()
    }
}
