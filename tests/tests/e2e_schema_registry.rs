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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_confluent_framed_journal_is_read_by_the_target_and_by_a_plain_avro_consumer() {
    let reg = registry().await;
    let framed = format!("framing = \"confluent\"\nschema_registry_url = \"{reg}\"\n");
    // n2 first without a registry: it cannot learn the ids.
    let mut p = Pipeline::start_with("schemareg", &framed, "");
    let (n1, n2) = (p.n1.base.clone(), p.n2.base.clone());
    random_load(&n1, "app", 200, 20, 4).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = get_json(&format!("{n2}/v1/admin/status")).await;
        let said = format!("{} {}", st["apply"]["last_error"], st["apply"]["reason"]);
        if said.contains("journal.schema_registry_url") {
            assert_eq!(st["apply"]["dead_lettered"], 0, "{st}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "n2 never said what to configure: {st}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Configured: it reads all of it (and frames its own journal too).
    p.n2.stop();
    let cfg = std::fs::read_to_string(&p.n2.config).unwrap();
    let cfg = cfg.replace("partitions = 4\n", &format!("partitions = 4\n{framed}"));
    std::fs::write(&p.n2.config, cfg).unwrap();
    p.n2.spawn();
    p.n2.wait_healthy();
    wait_caught_up(&n1, &n2, Duration::from_secs(60)).await;
    assert_eq!(digest(&n1, "app").await, digest(&n2, "app").await);

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
