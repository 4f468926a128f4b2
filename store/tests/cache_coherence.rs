//! The read cache under concurrency: readers on other threads never see a
//! value older than one whose commit returned, while a small cache evicts
//! all the time; deletes and applied records go through it too.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use northwest_store::{
    KeyPath, LocalCoordinator, MemEngine, Namespace, Op, ReplicatedWrite, Store, StoreConfig,
    Version,
};

const KEYS: usize = 8;

fn store(cache_bytes: u64) -> Arc<Store> {
    Store::open(
        Arc::new(MemEngine::new()),
        Arc::new(LocalCoordinator::default()),
        StoreConfig {
            read_cache_bytes: cache_bytes,
            ..StoreConfig::default()
        },
    )
    .unwrap()
}

fn key(i: usize) -> KeyPath {
    KeyPath::parse(&format!("Doc:{i}")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_older_than_an_acknowledged_write() {
    // Room for a few entries only: evictions race with fills and writes.
    let s = store(1200);
    let ns = Namespace::new("app").unwrap();
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for t in 0..3 {
        let (s, ns, acked, done) = (s.clone(), ns.clone(), acked.clone(), done.clone());
        readers.push(std::thread::spawn(move || {
            let mut reads = 0u64;
            let mut i = t;
            while !done.load(Ordering::SeqCst) {
                i = (i + 1) % KEYS;
                let floor = acked[i].load(Ordering::SeqCst);
                let got = s
                    .get(&ns, &key(i))
                    .unwrap()
                    .map_or(0, |e| u64::from_be_bytes(e.value.try_into().unwrap()));
                assert!(
                    got >= floor,
                    "Doc:{i}: read {got} after write {floor} was acknowledged"
                );
                reads += 1;
            }
            reads
        }));
    }
    for n in 1..=20_000u64 {
        let i = (n as usize * 7) % KEYS;
        s.run(
            &ns,
            &[Op::Put {
                key: key(i),
                value: n.to_be_bytes().to_vec(),
                if_version: None,
            }],
        )
        .await
        .unwrap();
        acked[i].store(n, Ordering::SeqCst);
    }
    done.store(true, Ordering::SeqCst);
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(reads > 1000, "{reads} reads");
    let c = s.cache_stats().unwrap();
    assert!(c.hits > 0 && c.misses > 0, "{c:?}");
}

#[tokio::test]
async fn deletes_and_applied_records_replace_cached_copies() {
    let s = store(1 << 20);
    let ns = Namespace::new("app").unwrap();
    let put = |v: &[u8]| Op::Put {
        key: key(1),
        value: v.to_vec(),
        if_version: None,
    };
    s.run(&ns, &[put(b"a")]).await.unwrap();
    assert_eq!(s.get(&ns, &key(1)).unwrap().unwrap().value, b"a");
    s.run(
        &ns,
        &[Op::Delete {
            key: key(1),
            if_version: None,
        }],
    )
    .await
    .unwrap();
    assert!(
        s.get(&ns, &key(1)).unwrap().is_none(),
        "a delete is read at once"
    );
    let v = s.run(&ns, &[put(b"b")]).await.unwrap();
    assert_eq!(s.get(&ns, &key(1)).unwrap().unwrap().value, b"b");
    // A newer record applied from the journal replaces the cached copy.
    s.apply_replicated(
        &[ReplicatedWrite {
            ns: ns.clone(),
            key: key(1),
            version: Version(v.0 + 10),
            value: Some(b"c".to_vec()),
            commit_ts_ms: 1,
        }],
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(s.get(&ns, &key(1)).unwrap().unwrap().value, b"c");
}
