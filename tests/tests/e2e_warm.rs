//! Cache warm-up: a migration reads n1's hot keys into n2's read cache, so
//! right after the switch n2 answers them from memory; records n2 applies
//! from the journal afterwards refresh the cached copies (never a stale
//! read), and without the warm-up the same reads all miss.

use std::time::Duration;

use northwest_tests::*;

async fn cache_hits(base: &str) -> u64 {
    get_json(&format!("{base}/v1/admin/status")).await["read_cache"]["hits"]
        .as_u64()
        .expect("a read cache")
}

/// Reads Doc:0..n of `ns` from `base`; returns each value.
async fn read_all(c: &reqwest::Client, base: &str, ns: &str, n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..n {
        let r = c
            .get(format!("{base}/v1/ns/{ns}/e/Doc:{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{ns}/Doc:{i} on {base}");
        out.push(r.bytes().await.unwrap().to_vec());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn n2_answers_n1s_hot_keys_from_its_cache_after_the_switch() {
    const N: usize = 300;
    let p = Pipeline::start("warm", "");
    let (n1, n2) = (p.n1.base.clone(), p.n2.base.clone());
    let c = reqwest::Client::new();
    for ns in ["hot", "cold"] {
        for i in 0..N {
            let r = c
                .put(format!("{n1}/v1/ns/{ns}/e/Doc:{i}"))
                .body(vec![i as u8; 200])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    }
    read_all(&c, &n1, "hot", N).await;

    let o = tokio::task::spawn_blocking({
        let (n1, n2) = (n1.clone(), n2.clone());
        move || migrate_json(&n1, &n2, "hot", &["--stop-after", "catch-up"])
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let st = northwest_migrate::load_state(
        &zk_addr(),
        None,
        &northwest_tests::admin_client(),
        &n1,
        "hot",
    )
    .await
    .unwrap();
    let warm = st.warm.clone().expect("the warm-up ran");
    assert!(
        matches!(warm, northwest_control::record::WarmReport::Warmed { found, .. } if found >= N as u64),
        "{warm:?}"
    );

    // Overwrites on n1 after the warm-up reach n2 through the journal and
    // must replace the cached copies.
    for i in 0..20 {
        let r = c
            .put(format!("{n1}/v1/ns/hot/e/Doc:{i}"))
            .body(b"new".to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    wait_caught_up(&n1, &n2, Duration::from_secs(60)).await;
    let o = tokio::task::spawn_blocking({
        let (n1, n2) = (n1.clone(), n2.clone());
        move || migrate_json(&n1, &n2, "hot", &[])
    })
    .await
    .unwrap();
    let r = migrate_report(&o);
    assert_eq!(r["phase"], "done", "{r}");

    let before = cache_hits(&n2).await;
    let got = read_all(&c, &n2, "hot", N).await;
    let hot_hits = cache_hits(&n2).await - before;
    for (i, v) in got.iter().enumerate() {
        let want = if i < 20 {
            b"new".to_vec()
        } else {
            vec![i as u8; 200]
        };
        assert_eq!(v, &want, "hot/Doc:{i} on n2");
    }
    assert_eq!(hot_hits, N as u64, "every hot key answered from n2's cache");

    // The same migration without the warm-up: n2 applied the records but
    // cached none of them.
    let o = tokio::task::spawn_blocking({
        let (n1, n2) = (n1.clone(), n2.clone());
        move || migrate_json(&n1, &n2, "cold", &["--warm-keys", "0"])
    })
    .await
    .unwrap();
    let r = migrate_report(&o);
    assert!(r["warm"].is_null(), "{r}");
    let before = cache_hits(&n2).await;
    read_all(&c, &n2, "cold", N).await;
    assert_eq!(cache_hits(&n2).await - before, 0, "a cold cache misses");

    let m = reqwest::get(format!("{n2}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let warmed: u64 = m
        .lines()
        .find(|l| l.starts_with("northwest_read_cache_warmed_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("northwest_read_cache_warmed_total");
    assert!(warmed >= N as u64, "{m}");
}
