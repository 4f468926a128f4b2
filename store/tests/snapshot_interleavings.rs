//! Property: n2 converges to n1's final state whatever the interleaving of
//! journal records and snapshot rows (taken at any point of n1's history),
//! with duplicates (re-sent records, lagging compaction): no stale snapshot row
//! overwrites a newer version, no delete is resurrected. The journal may start
//! anywhere up to the snapshot's cut (n2 consumes from the high-water marks
//! recorded when the snapshot began, or retention removed older records), so
//! early writes can exist only in the snapshot: losing a snapshot row fails.

use std::collections::BTreeMap;
use std::sync::Arc;

use northwest_store::{
    KeyPath, KeyRange, LocalCoordinator, MemEngine, Namespace, ReplicatedWrite, Store, StoreConfig,
    Version,
};
use proptest::prelude::*;

fn ns() -> Namespace {
    Namespace::new("app").unwrap()
}

/// n1's history: (key index, is_delete) per transaction; versions 1, 2, ...
fn history() -> impl Strategy<Value = Vec<(u8, bool)>> {
    prop::collection::vec((0u8..5, any::<bool>()), 1..40)
}

fn write(k: u8, v: u64, del: bool) -> ReplicatedWrite {
    ReplicatedWrite {
        ns: ns(),
        key: KeyPath::parse(&format!("G:{k}")).unwrap(),
        version: Version(v),
        commit_ts_ms: v as i64,
        value: (!del).then(|| format!("v{v}").into_bytes()),
    }
}

proptest! {
    #[test]
    fn converges_for_any_interleaving(
        hist in history(),
        cut in any::<prop::sample::Index>(),
        from in any::<prop::sample::Index>(),
        order in prop::collection::vec(any::<u64>(), 0..200),
        dups in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let journal: Vec<ReplicatedWrite> =
            hist.iter().enumerate().map(|(i, (k, d))| write(*k, i as u64 + 1, *d)).collect();
        // The snapshot reads n1's state after the first `cut` transactions,
        // delete markers included.
        let cut = cut.index(journal.len() + 1);
        let mut at_cut: BTreeMap<u8, ReplicatedWrite> = BTreeMap::new();
        for (i, (k, _)) in hist.iter().enumerate().take(cut) {
            at_cut.insert(*k, journal[i].clone());
        }
        // The journal delivers from `from` on (never after the cut: the
        // snapshot must be able to cover what it skips).
        let from = from.index(cut + 1);
        let mut deliveries: Vec<ReplicatedWrite> = journal[from..].to_vec();
        deliveries.extend(at_cut.values().cloned());
        for d in &dups {
            if !deliveries.is_empty() {
                let w = d.get(&deliveries).clone();
                deliveries.push(w);
            }
        }
        // Arbitrary interleaving.
        let mut keyed: Vec<(u64, ReplicatedWrite)> =
            deliveries.into_iter().enumerate().map(|(i, w)| (order.get(i).copied().unwrap_or(i as u64), w)).collect();
        keyed.sort_by_key(|(o, _)| *o);

        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let n2 = Store::open(Arc::new(MemEngine::new()), Arc::new(LocalCoordinator::default()), StoreConfig::default()).unwrap();
            for chunk in keyed.chunks(3) {
                let ws: Vec<_> = chunk.iter().map(|(_, w)| w.clone()).collect();
                n2.apply_replicated(&ws, vec![]).await.unwrap();
            }
            let mut expected: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            for w in &journal {
                match &w.value {
                    Some(v) => { expected.insert(w.key.to_string(), v.clone()); }
                    None => { expected.remove(w.key.as_str()); }
                }
            }
            let got: BTreeMap<String, Vec<u8>> = n2
                .scan(&KeyRange::namespace(&ns()), 100)
                .unwrap()
                .into_iter()
                .map(|e| (e.key.to_string(), e.value))
                .collect();
            prop_assert_eq!(got, expected);
            Ok(())
        })?;
    }
}
