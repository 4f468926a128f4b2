//! Coordination: entity-group locks, transaction ids and the blacklist.
//!
//! [`Coordinator`] is the contract; [`LocalCoordinator`] serves one process
//! (tests, single-node use) and [`crate::zk::ZkCoordinator`] shares locks, ids
//! and the blacklist through ZooKeeper across processes and deployments.
//! Both serialise a process's own transactions on a group with the same local
//! [`LockTable`], so the ZooKeeper path only decides which *process* owns a group.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::OwnedMutexGuard;

use crate::error::CoordError;
use crate::key::EntityGroup;
use crate::types::TxnId;

/// Per-group state in a process's lock table.
#[derive(Debug)]
pub struct Slot {
    /// The ZooKeeper session generation under which this process holds the
    /// group's lease, if it holds it.
    pub held_gen: Option<u64>,
    pub acquired_at: Instant,
    pub last_used: Instant,
    /// Set when another process asked for this group while we hold its
    /// lease; a fresh flag per acquisition, so a late signal about an older
    /// lease never releases a newer one.
    pub wanted: Arc<AtomicBool>,
    /// The last lease was given back because another process asked: the
    /// next local acquisition lets that process go first.
    pub yielded: bool,
    /// The held lease's fencing token (`None` with no lease, or under a
    /// coordinator that has none).
    pub token: Option<i64>,
    /// The token last recorded with the engine ([`GroupLock::needs_fence`]).
    pub fenced: Option<i64>,
}

/// Exclusive ownership of one entity group, released (locally) on drop.
pub struct GroupLock {
    pub(crate) guard: OwnedMutexGuard<Slot>,
    pub(crate) group: EntityGroup,
}

impl GroupLock {
    pub fn group(&self) -> &EntityGroup {
        &self.group
    }
    pub(crate) fn held_gen(&self) -> Option<u64> {
        self.guard.held_gen
    }
    /// The fencing token of the lease this lock holds, if its coordinator
    /// gives one (ZooKeeper does: the lease znode's creation zxid).
    pub fn token(&self) -> Option<i64> {
        self.guard.held_gen.and(self.guard.token)
    }
    /// Whether this lease's token must still be recorded with the engine
    /// before the group is read: once per lease, not per transaction.
    pub(crate) fn needs_fence(&self) -> bool {
        self.token().is_some_and(|t| self.guard.fenced != Some(t))
    }
    pub(crate) fn mark_fenced(&mut self) {
        self.guard.fenced = self.token();
    }
    /// Forgets the held lease (its token and that it was recorded).
    pub(crate) fn forget_lease(&mut self) {
        self.guard.held_gen = None;
        self.guard.token = None;
        self.guard.fenced = None;
    }
}

impl Drop for GroupLock {
    fn drop(&mut self) {
        self.guard.last_used = Instant::now();
    }
}

impl std::fmt::Debug for GroupLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GroupLock({})", self.group)
    }
}

/// A process's table of group slots; one async mutex per group (FIFO fair).
#[derive(Default)]
pub struct LockTable {
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
}

impl LockTable {
    pub async fn lock(&self, group: &EntityGroup) -> GroupLock {
        let slot = {
            let mut map = self.slots.lock();
            map.entry(group.journal_key())
                .or_insert_with(|| {
                    let now = Instant::now();
                    Arc::new(tokio::sync::Mutex::new(Slot {
                        held_gen: None,
                        acquired_at: now,
                        last_used: now,
                        wanted: Arc::default(),
                        yielded: false,
                        token: None,
                        fenced: None,
                    }))
                })
                .clone()
        };
        GroupLock {
            guard: slot.lock_owned().await,
            group: group.clone(),
        }
    }

    /// Whether `group`'s slot holds a lease taken under session `gen`, as
    /// far as can be seen without waiting (a slot in use reads as not).
    pub fn holds(&self, group: &EntityGroup, gen: u64) -> bool {
        let slot = self.slots.lock().get(&group.journal_key()).cloned();
        slot.is_some_and(|s| s.try_lock().is_ok_and(|g| g.held_gen == Some(gen)))
    }

    /// Slots currently in the table (for the lease reaper).
    pub fn entries(&self) -> Vec<(String, Arc<tokio::sync::Mutex<Slot>>)> {
        self.slots
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Forgets slots nobody uses and that hold no lease, bounding memory.
    pub fn prune(&self) {
        self.slots.lock().retain(|_, slot| {
            Arc::strong_count(slot) > 1
                || slot
                    .try_lock()
                    .map(|s| s.held_gen.is_some())
                    .unwrap_or(true)
        });
    }

    pub fn len(&self) -> usize {
        self.slots.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The lock order of [`Coordinator::lock_many`]: each group once, sorted.
pub(crate) fn distinct_sorted(groups: &[EntityGroup]) -> Vec<EntityGroup> {
    let mut sorted = groups.to_vec();
    sorted.sort();
    sorted.dedup();
    sorted
}

/// Locks, transaction ids and the blacklist.
#[async_trait]
pub trait Coordinator: Send + Sync + 'static {
    /// Exclusive ownership of `group` among every process sharing this
    /// coordinator's root. Waits up to the configured lock timeout.
    async fn lock(&self, group: &EntityGroup) -> Result<GroupLock, CoordError>;

    /// Exclusive ownership of every group in `groups` (any order, duplicates
    /// allowed), returned sorted by group. Local slots are taken one by one in
    /// sorted order, so two multi-group callers in one process cannot
    /// deadlock; implementations may then fetch remote ownership concurrently.
    async fn lock_many(&self, groups: &[EntityGroup]) -> Result<Vec<GroupLock>, CoordError> {
        let sorted = distinct_sorted(groups);
        let mut out = Vec::with_capacity(sorted.len());
        for g in &sorted {
            out.push(self.lock(g).await?);
        }
        Ok(out)
    }

    /// Ends a transaction's use of `lock`. The process may keep the group's
    /// lease for its next transaction; dropping the lock instead is also safe.
    async fn release(&self, lock: GroupLock) {
        drop(lock);
    }

    /// Gives the group's lease back now, whatever its age: the engine holds
    /// a newer fencing token for it, so this process must take it afresh
    /// (a new znode, a new token) rather than present the old one again.
    async fn surrender(&self, mut lock: GroupLock) {
        lock.forget_lease();
    }

    /// Whether `lock`'s lease is still this process's, as the coordinator
    /// sees it now (asked, not remembered): its session current and its
    /// token the live one.
    async fn lease_is_live(&self, _lock: &GroupLock) -> bool {
        true
    }

    /// Errs when `lock` may no longer be exclusive (its lease was lost with the
    /// ZooKeeper session). Checked right before a commit writes.
    fn fence(&self, lock: &GroupLock) -> Result<(), CoordError>;

    /// A block of `count` fresh ids, each greater than every id any process
    /// obtained before this call returned.
    async fn allocate_ids(&self, count: u64) -> Result<Range<u64>, CoordError>;

    /// A block like [`Coordinator::allocate_ids`] whose ids are all at least
    /// `min`: a shared counter jumps up to it (ids need only be unique and
    /// increasing), so a version applied here from another deployment is
    /// never undercut by a later local one.
    async fn allocate_ids_above(&self, count: u64, min: u64) -> Result<Range<u64>, CoordError> {
        self.raise_id_floor(min);
        self.allocate_ids(count).await
    }

    /// Records that `id` failed: its writes must never become visible anywhere.
    async fn blacklist(&self, id: TxnId) -> Result<(), CoordError>;

    /// Tells the coordinator that ids below `floor` were handed out before
    /// (learnt from the store after a restart). A process-local counter
    /// continues above it; a shared counter is authoritative and ignores it.
    fn raise_id_floor(&self, _floor: u64) {}

    /// Whether the coordinator can serve now (a ZooKeeper session is
    /// connected); readiness probes report the reason when not.
    fn check_ready(&self) -> Result<(), CoordError> {
        Ok(())
    }

    /// Whether `id` is known to be blacklisted.
    fn is_blacklisted(&self, id: TxnId) -> bool;

    /// Short description for logs and status output.
    fn describe(&self) -> String;
}

/// In-process coordination: correct for one process only.
pub struct LocalCoordinator {
    table: LockTable,
    next_id: AtomicU64,
    blacklist: Mutex<HashSet<u64>>,
}

impl LocalCoordinator {
    /// `first_id` must exceed every version already stored.
    pub fn new(first_id: u64) -> Self {
        Self {
            table: LockTable::default(),
            next_id: AtomicU64::new(first_id.max(1)),
            blacklist: Mutex::default(),
        }
    }
}

impl Default for LocalCoordinator {
    fn default() -> Self {
        Self::new(1)
    }
}

#[async_trait]
impl Coordinator for LocalCoordinator {
    async fn lock(&self, group: &EntityGroup) -> Result<GroupLock, CoordError> {
        let lock = self.table.lock(group).await;
        if self.table.len() > 100_000 {
            self.table.prune();
        }
        Ok(lock)
    }

    fn fence(&self, _lock: &GroupLock) -> Result<(), CoordError> {
        Ok(())
    }

    async fn allocate_ids(&self, count: u64) -> Result<Range<u64>, CoordError> {
        let start = self.next_id.fetch_add(count, Ordering::SeqCst);
        Ok(start..start + count)
    }

    async fn blacklist(&self, id: TxnId) -> Result<(), CoordError> {
        self.blacklist.lock().insert(id.0);
        Ok(())
    }

    fn raise_id_floor(&self, floor: u64) {
        self.next_id.fetch_max(floor, Ordering::SeqCst);
    }

    fn is_blacklisted(&self, id: TxnId) -> bool {
        self.blacklist.lock().contains(&id.0)
    }

    fn describe(&self) -> String {
        "local (single process)".to_string()
    }
}
