//! The Confluent Schema Registry framing on real nodes and a real registry
//! (Apicurio Registry, started by `deploy/stack.sh up`): n1 with
//! `journal.framing = "confluent"` writes byte 0 + the registry id of the
//! journal schema; an external consumer decodes a record with nothing but
//! the registry's schema for that id; a target without a registry says
//! what to configure rather than dead-letter what it cannot read, then
//! applies everything once configured; a migration and writes through the
//! new primary work with both nodes framing that way.

use std::time::{Duration, Instant};

use apache_avro::types::Value;
use northwest_tests::*;

async fn registry() -> String {
    let url = std::env::var("NW_SCHEMA_REGISTRY")
        .unwrap_or_else(|_| "http://127.0.0.1:8085/apis/ccompat/v7".into());
    let up = reqwest::get(format!("{url}/subjects"))
        .await
        .is_ok_and(|r| r.status().is_success());
    assert!(
        up,
        "no schema registry at {url}: start the dev stack with `deploy/stack.sh up` \
         (it runs Apicurio Registry; needs Java 21+)"
    );
    url
}

/// An Avro datum read with the writer's schema, as any Avro library does.
fn datum(schema: &apache_avro::Schema, bytes: &[u8]) -> Value {
    apache_avro::reader::datum::GenericDatumReader::builder(schema)
        .build()
        .unwrap()
        .read_value(&mut &bytes[..])
        .unwrap()
}

fn field<'a>(v: &'a Value, name: &str) -> &'a Value {
    let Value::Record(fields) = v else {
        panic!("not a record: {v:?}")
    };
    &fields.iter().find(|(n, _)| n == name).expect(name).1
}

/// Replaces the `[journal]` lines of `node`'s config that name the
/// registry with `lines`, and restarts it.
fn reconfigure(node: &mut NodeProc, lines: &str) {
    node.stop();
    let cfg = std::fs::read_to_string(&node.config).unwrap();
    let kept: Vec<&str> = cfg
        .lines()
        .filter(|l| !l.starts_with("framing") && !l.starts_with("schema_registry_url"))
        .collect();
    let cfg = kept
        .join("\n")
        .replace("partitions = 4", &format!("partitions = 4\n{lines}"));
    std::fs::write(&node.config, cfg + "\n").unwrap();
    node.spawn();
    node.wait_healthy();
}

async fn wait_status(node: &str, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = get_json(&format!("{node}/v1/admin/status")).await;
        if done(&st) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {st}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_confluent_framed_journal_is_read_by_the_target_and_by_a_plain_avro_consumer() {
    let reg = registry().await;
    let framed = format!("framing = \"confluent\"\nschema_registry_url = \"{reg}\"\n");
    // n1 first with a registry that does not answer: it serves, and its
    // relay ships nothing until the journal schema has an id.
    let nowhere = "http://127.0.0.1:9/apis/ccompat/v7";
    let unreachable = format!("framing = \"confluent\"\nschema_registry_url = \"{nowhere}\"\n");
    let mut p = Pipeline::start_with("schemareg", &unreachable, "");
    let (n1, n2) = (p.n1.base.clone(), p.n2.base.clone());
    random_load(&n1, "app", 200, 20, 4).await;
    wait_status(
        &n1,
        "n1's relay never said it waits for the registry",
        |st| {
            st["relay_error"]
                .as_str()
                .is_some_and(|e| e.contains("waiting for the schema registry"))
        },
    )
    .await;
    assert_eq!(records_in_topic(&p.topic), 0, "shipped without a schema id");
    reconfigure(&mut p.n1, &framed);

    // n2 without a registry: it halts each partition at its first framed
    // record, saying what to configure; nothing is dead-lettered.
    wait_status(&n2, "n2 never said what to configure", |st| {
        st["apply"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("journal.schema_registry_url"))
            && st["apply"]["state"] == "halted"
    })
    .await;
    // With a registry it cannot reach: it waits, not running, and says so.
    reconfigure(&mut p.n2, &format!("schema_registry_url = \"{nowhere}\"\n"));
    wait_status(&n2, "n2 never said it waits for the registry", |st| {
        st["apply"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("waiting for the schema of a Confluent-framed record"))
            && st["apply"]["state"] == "not_running"
    })
    .await;
    let st = get_json(&format!("{n2}/v1/admin/status")).await;
    assert_eq!(st["apply"]["dead_lettered"], 0, "{st}");
    assert_eq!(st["apply"]["transactions"], 0, "{st}");

    // Configured: it reads all of it (and frames its own journal too).
    reconfigure(&mut p.n2, &framed);
    wait_caught_up(&n1, &n2, Duration::from_secs(60)).await;
    assert_eq!(digest(&n1, "app").await, digest(&n2, "app").await);
    let st = get_json(&format!("{n2}/v1/admin/status")).await;
    assert_eq!(st["apply"]["dead_lettered"], 0, "{st}");

    // On the wire: byte 0 and the registry's id of the journal schema.
    let latest = get_json(&format!(
        "{reg}/subjects/northwest.JournalRecord/versions/latest"
    ))
    .await;
    let id = latest["id"].as_u64().expect("an id") as u32;
    let payloads = journal_payloads_at(&p.topic);
    assert_eq!(payloads.len(), 200);
    // An external consumer: the schema by id from the registry, the datum
    // after the five header bytes, no Northwest code.
    let text = get_json(&format!("{reg}/schemas/ids/{id}")).await["schema"]
        .as_str()
        .unwrap()
        .to_string();
    let schema = apache_avro::Schema::parse_str(&text).unwrap();
    for (_, _, bytes) in &payloads {
        assert_eq!(bytes[0], 0, "not Confluent-framed");
        assert_eq!(u32::from_be_bytes(bytes[1..5].try_into().unwrap()), id);
        let v = datum(&schema, &bytes[5..]);
        assert_eq!(field(&v, "namespace"), &Value::String("app".into()));
        assert_eq!(field(&v, "origin"), &Value::String("n1".into()));
    }

    // A migration and writes through the new primary, both nodes framing.
    migrate_report(&migrate_json(&n1, &n2, "app", &[]));
    random_load(&n1, "app", 100, 20, 4).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        let after = journal_payloads_at(&p.topic);
        if after.len() >= 300 || Instant::now() > deadline {
            break after;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(after.len(), 300, "writes through n2 not all journaled");
    assert!(
        after.iter().all(|(_, _, b)| b[0] == 0),
        "a record not framed"
    );
    let by_n2 = after
        .iter()
        .filter(|(_, _, b)| {
            let v = datum(&schema, &b[5..]);
            field(&v, "origin") == &Value::String("n2".into())
        })
        .count();
    assert_eq!(by_n2, 100);
    // n1 follows the namespace again (reverse apply of framed records).
    let deadline = Instant::now() + Duration::from_secs(60);
    while digest(&n1, "app").await != digest(&n2, "app").await {
        assert!(
            Instant::now() < deadline,
            "n1 never caught up with n2's writes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
