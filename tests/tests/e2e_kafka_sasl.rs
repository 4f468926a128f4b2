//! The journal over an authenticated, encrypted broker connection: the dev
//! stack's SASL_SSL listener (SCRAM-SHA-512 over TLS, deploy/stack.sh) with
//! the client settings in a properties file (`kafka_properties_file`,
//! `migrate --kafka-config`). A whole migration under load runs over it;
//! a wrong password shows as the brokers' own reason (the node keeps
//! serving, as through any broker outage) without the password.

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use northwest_tests::*;

fn sasl_toml(
    name: &str,
    dir: &std::path::Path,
    root: &str,
    topic: &str,
    (brokers, props): &(String, std::path::PathBuf),
) -> String {
    format!("kafka_properties_file = \"{}\"\n", props.display())
        + &node_toml_at(
            &(zk_addr(), brokers.clone()),
            name,
            dir,
            free_port(),
            root,
            topic,
            "",
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_migration_runs_over_sasl_ssl_with_scram() {
    require_zk();
    let sasl = require_kafka_sasl();
    let dir = tempfile::tempdir().unwrap();
    let root = format!("/northwest-test/{}", unique("sasl"));
    let topic = unique("journal");
    let n1 = NodeProc::start(
        dir.path(),
        "n1",
        &sasl_toml("n1", dir.path(), &root, &topic, &sasl),
    );
    let n2 = NodeProc::start(
        dir.path(),
        "n2",
        &sasl_toml("n2", dir.path(), &root, &topic, &sasl),
    );
    random_load(&n1.base, "app", 1500, 200, 8).await;
    let load = LoadRun::start(&n1.base, "app", 200, 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let o = tokio::task::spawn_blocking({
        let (n1, n2, d) = (n1.base.clone(), n2.base.clone(), dir.path().to_path_buf());
        let (brokers, props) = sasl.clone();
        move || {
            Command::new(bin_path("northwest"))
                .args(["migrate", "--from", &n1, "--to", &n2, "--namespace", "app"])
                .args([
                    "--quiet",
                    "--json",
                    "--zk",
                    &zk_addr(),
                    "--brokers",
                    &brokers,
                ])
                .arg("--kafka-config")
                .arg(&props)
                .env_remove("NORTHWEST_KAFKA_CONFIG")
                .current_dir(d)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acked = load.stop().await;
    let r = migrate_report(&o);
    assert_eq!(r["phase"], "done", "{r}");
    assert_eq!(r["verify"]["differing_kinds"], serde_json::json!([]), "{r}");
    assert!(r["snapshot_rows"].as_u64().unwrap() > 100, "{r}");
    assert_eq!(
        acked.failed.load(Ordering::Relaxed),
        0,
        "{:?}",
        acked.errors
    );
    assert!(acked.issued.load(Ordering::Relaxed) > 100);
    assert_holds_acked(&n2.base, "app", &acked).await;
    // The records went through the broker: the journal topic holds them.
    assert!(
        records_in_topic(&topic) > 1000,
        "journal topic nearly empty"
    );
}

/// A refused login is not a silent timeout: the node serves (commits wait
/// in the outbox, as with any broker outage) and status, /readyz and the
/// log say the brokers refused the credentials, without the password.
#[tokio::test]
async fn a_wrong_kafka_password_shows_as_the_brokers_reason() {
    require_zk();
    let (brokers, props) = require_kafka_sasl();
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.properties");
    let text: String = std::fs::read_to_string(&props)
        .unwrap()
        .lines()
        .map(|l| match l.starts_with("sasl.password=") {
            true => "sasl.password=not-the-password\n".to_string(),
            false => format!("{l}\n"),
        })
        .collect();
    assert!(text.contains("not-the-password"));
    std::fs::write(&wrong, text).unwrap();
    let root = format!("/northwest-test/{}", unique("sasl-bad"));
    let toml = sasl_toml(
        "n1",
        dir.path(),
        &root,
        &unique("journal"),
        &(brokers, wrong),
    );
    let n1 = NodeProc::start(dir.path(), "n1", &toml);
    let r = reqwest::Client::new()
        .put(format!("{}/v1/ns/app/e/Doc:1", n1.base))
        .body("kept in the outbox")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        let st = get_json(&format!("{}/v1/admin/status", n1.base)).await;
        if st["relay_error"]
            .as_str()
            .is_some_and(|e| e.contains("Authentication failed"))
        {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no authentication error in status: {st}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(status["outbox_pending"], 1, "{status}");
    let ready = reqwest::get(format!("{}/readyz", n1.base)).await.unwrap();
    let code = ready.status();
    let body = ready.text().await.unwrap();
    assert_ne!(code, 200, "ready while the journal cannot ship: {body}");
    assert!(body.contains("Authentication failed"), "{body}");
    assert!(
        !body.contains("not-the-password"),
        "the password in /readyz"
    );
    assert!(
        !status.to_string().contains("not-the-password"),
        "the password in status"
    );
    let log = std::fs::read_to_string(&n1.log).unwrap();
    assert!(log.contains("Authentication failed"), "{log}");
    assert!(!log.contains("not-the-password"), "the password was logged");
}
