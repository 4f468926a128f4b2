//! The pure apply decision shared by the journal consumer and the snapshot
//! loader: no I/O, a function of the incoming write and what N2 holds.

use crate::types::Version;

/// What N2 holds for a key: its version and whether that is a delete marker.
pub type Current = Option<(Version, bool)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Newer than anything held: write it (a put, or a delete marker).
    Apply,
    /// Same or older version than held (a duplicate, a replay, or a stale
    /// snapshot row): leave N2 unchanged.
    SkipStale,
    /// Its transaction failed on N1; it must never become visible.
    SkipBlacklisted,
}

/// Decides one replicated write of `incoming` version against `current`.
/// Delete markers carry versions, so an older put never resurrects a delete.
pub fn decide(incoming: Version, blacklisted: bool, current: Current) -> Decision {
    if blacklisted {
        return Decision::SkipBlacklisted;
    }
    match current {
        Some((held, _)) if incoming <= held => Decision::SkipStale,
        _ => Decision::Apply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn table() {
        assert_eq!(decide(Version(5), false, None), Decision::Apply);
        assert_eq!(
            decide(Version(5), false, Some((Version(4), true))),
            Decision::Apply
        );
        assert_eq!(
            decide(Version(5), false, Some((Version(5), false))),
            Decision::SkipStale
        );
        assert_eq!(
            decide(Version(3), false, Some((Version(5), true))),
            Decision::SkipStale
        );
        assert_eq!(decide(Version(9), true, None), Decision::SkipBlacklisted);
    }

    /// A write: (key, version, is_delete).
    type W = (u8, u64, bool);

    fn fold(writes: &[W], blacklist: &[u64]) -> HashMap<u8, (Version, bool)> {
        let mut state: HashMap<u8, (Version, bool)> = HashMap::new();
        for &(k, v, del) in writes {
            if decide(Version(v), blacklist.contains(&v), state.get(&k).copied()) == Decision::Apply
            {
                state.insert(k, (Version(v), del));
            }
        }
        state
    }

    proptest! {
        /// Any interleaving, with duplicates and replays, converges to the
        /// state of the newest non-blacklisted write per key.
        #[test]
        fn converges_to_newest_under_any_order(
            mut writes in prop::collection::vec((0u8..6, 1u64..40, any::<bool>()), 0..60),
            dup in prop::collection::vec(any::<prop::sample::Index>(), 0..30),
            blacklist in prop::collection::vec(1u64..40, 0..5),
            seed in any::<u64>(),
        ) {
            // Each version belongs to one transaction: same version => same op.
            let mut by_version: HashMap<u64, bool> = HashMap::new();
            for w in writes.iter_mut() { w.2 = *by_version.entry(w.1).or_insert(w.2); }
            let mut expected: HashMap<u8, (Version, bool)> = HashMap::new();
            for &(k, v, del) in &writes {
                if blacklist.contains(&v) { continue; }
                let e = expected.entry(k).or_insert((Version(v), del));
                if Version(v) > e.0 { *e = (Version(v), del); }
            }
            let mut delivered = writes.clone();
            for i in &dup { if !writes.is_empty() { delivered.push(*i.get(&writes)); } }
            // Deterministic shuffle from the seed.
            let mut s = seed | 1;
            for i in (1..delivered.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                delivered.swap(i, (s % (i as u64 + 1)) as usize);
            }
            prop_assert_eq!(fold(&delivered, &blacklist), expected);
        }

        /// Applying a sequence twice (a replay) changes nothing the second time.
        #[test]
        fn replay_is_idempotent(writes in prop::collection::vec((0u8..4, 1u64..20, any::<bool>()), 0..30)) {
            let once = fold(&writes, &[]);
            let mut twice_in = writes.clone();
            twice_in.extend(writes.iter().copied());
            prop_assert_eq!(fold(&twice_in, &[]), once);
        }
    }
}
