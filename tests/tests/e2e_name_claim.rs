//! A node's name is claimed exclusively in ZooKeeper: a second process
//! started with n2's name (a copied config) refuses to start and names the
//! holder, while the real n2 keeps its claim and serves; n2 killed -9 and
//! started again takes its name back once the old session expired.

use std::time::{Duration, Instant};

use northwest_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_with_a_taken_name_refuses_to_start() {
    let mut p = Pipeline::start("nameclaim", "");
    let n2 = p.n2.base.clone();
    let before = get_json(&format!("{n2}/v1/admin/status")).await;
    let instance = before["instance"].clone();
    assert!(instance.is_string(), "n2 reports its instance: {before}");

    // n2's config on another port and data directory.
    let copied = std::fs::read_to_string(&p.n2.config)
        .unwrap()
        .replace(
            &format!("listen = \"{}\"", n2.trim_start_matches("http://")),
            &format!("listen = \"127.0.0.1:{}\"", free_port()),
        )
        .replace(
            &p.dir.path().join("n2").display().to_string(),
            &p.dir.path().join("n2-copy").display().to_string(),
        );
    let cfg = p.dir.path().join("n2-copy.toml");
    std::fs::write(&cfg, &copied).unwrap();
    let log = p.dir.path().join("n2-copy.log");
    let mut child = std::process::Command::new(bin_path("northwest"))
        .args(["node", "--config"])
        .arg(&cfg)
        .env_remove("NW_ZK")
        .env_remove("NW_KAFKA")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(p.dir.path().join("n2-copy.err")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("a second process with n2's name is still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = std::fs::read_to_string(&log).unwrap()
        + &std::fs::read_to_string(p.dir.path().join("n2-copy.err")).unwrap();
    assert!(!status.success(), "the copy exited with {status}: {out}");
    assert!(
        out.contains("held by another running instance")
            && out.contains(instance.as_str().unwrap()),
        "the refusal names the holder: {out}"
    );
    let after = get_json(&format!("{n2}/v1/admin/status")).await;
    assert_eq!(after["instance"], instance, "n2 keeps its claim: {after}");

    // A crash leaves the claim until the session expires; the restarted
    // node waits for that instead of refusing.
    p.n2.kill9();
    p.n2.spawn();
    let restarted = get_json(&format!("{n2}/v1/admin/status")).await;
    assert!(
        restarted["instance"].is_string() && restarted["instance"] != instance,
        "n2 restarted under a new instance: {restarted}"
    );
}
