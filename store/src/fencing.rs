//! Fencing tokens: how a store several processes write keeps a holder whose
//! lease was lost (its ZooKeeper session expired while it ran on, stopped
//! or partitioned) from committing over the group's new holder.
//!
//! Each lease has a token that only grows from holder to holder (the lease
//! znode's creation zxid). A process records its token with the engine
//! before it first reads the group under that lease; every batch it writes
//! carries the token, and the engine refuses a batch whose token is older
//! than the one recorded ([`crate::error::EngineError::Fenced`]). So a
//! stale holder's commit either lands before the new holder's first read
//! (which then sees it) or is refused. An engine one process owns (RocksDB)
//! does not check tokens: these calls cost it nothing.

use crate::coord::GroupLock;
use crate::engine::GroupFence;
use crate::error::{EngineError, StoreError};
use crate::key::EntityGroup;
use crate::store::Store;

impl Store {
    /// The group's lock, its lease's token recorded with the engine.
    pub(crate) async fn lock_group(&self, group: &EntityGroup) -> Result<GroupLock, StoreError> {
        let mut lock = self.coord.lock(group).await?;
        match self.fence_leases(std::slice::from_mut(&mut lock)).await {
            Ok(()) => Ok(lock),
            Err(e) => {
                self.release_fenced(vec![lock], &e).await;
                Err(e)
            }
        }
    }

    /// Every group's lock (sorted, each once), their tokens recorded.
    pub(crate) async fn lock_groups(
        &self,
        groups: &[EntityGroup],
    ) -> Result<Vec<GroupLock>, StoreError> {
        let mut locks = self.coord.lock_many(groups).await?;
        match self.fence_leases(&mut locks).await {
            Ok(()) => Ok(locks),
            Err(e) => {
                self.release_fenced(locks, &e).await;
                Err(e)
            }
        }
    }

    /// Releases locks after `e`; when `e` says a newer holder fenced them
    /// out, their leases are given up first (a retry takes them afresh
    /// instead of presenting the stale token again).
    pub(crate) async fn release_fenced(&self, locks: Vec<GroupLock>, e: &StoreError) {
        if matches!(e, StoreError::Engine(EngineError::Fenced(_))) {
            tracing::warn!(error = %e, "an entity-group lease was superseded; taking it afresh");
            // The statement says only that some token was stale: all of the
            // batch's leases go back (valid ones are simply taken again).
            futures::future::join_all(locks.into_iter().map(|l| self.coord.surrender(l))).await;
        } else {
            futures::future::join_all(locks.into_iter().map(|l| self.coord.release(l))).await;
        }
    }

    /// Records with the engine the tokens of leases new since their groups
    /// were last fenced (one round trip for all of them, none when every
    /// lease is already recorded).
    async fn fence_leases(&self, locks: &mut [GroupLock]) -> Result<(), StoreError> {
        if !self.engine.checks_fences() {
            return Ok(());
        }
        let due: Vec<GroupFence> = locks
            .iter()
            .filter(|l| l.needs_fence())
            .filter_map(fence_of)
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        match self.engine.fence_groups(&due) {
            Ok(()) => {}
            // Refused: a newer token is recorded for one of the groups. If
            // our lease went meanwhile (the session expired while we took
            // it), that is the newer holder's, and a retry takes the lease
            // afresh. A lease still live and ours cannot be older than a
            // token this ensemble handed out: then another coordination
            // setup fences this schema, and retrying changes nothing.
            Err(EngineError::Fenced(m)) => {
                let mut live = true;
                for l in locks.iter().filter(|l| l.needs_fence()) {
                    live &= self.coord.lease_is_live(l).await;
                }
                if !live {
                    return Err(EngineError::Fenced(m).into());
                }
                let e = EngineError::Io(format!(
                    "{m}, for a lease this process holds: another ZooKeeper setup's leases \
                     fence this schema (every process writing it must use the same \
                     coordination.connect, root, lock_scope and node name), or ZooKeeper was \
                     reset or restored while the database kept its data (then, with every \
                     process stopped, clear the schema's `fences` table)"
                ));
                tracing::error!(error = %e, "entity-group leases refused by the engine");
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        }
        for l in locks.iter_mut() {
            l.mark_fenced();
        }
        Ok(())
    }

    /// The tokens a batch written under `locks` carries.
    pub(crate) fn fences_of<'a>(
        &self,
        locks: impl IntoIterator<Item = &'a GroupLock>,
    ) -> Vec<GroupFence> {
        if !self.engine.checks_fences() {
            return Vec::new();
        }
        locks.into_iter().filter_map(fence_of).collect()
    }
}

fn fence_of(l: &GroupLock) -> Option<GroupFence> {
    Some(GroupFence {
        group: l.group().journal_key().into_bytes(),
        token: l.token()?,
    })
}
