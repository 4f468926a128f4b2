//! Schema evolution: old and new writers stay readable across a schema change.

mod common;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use northwest_schemas::{
    decode_journal, encode_journal, fingerprint_journal, parsing_fingerprint, peek_fingerprint,
    SchemaError, SchemaRegistry, HEADER_LEN,
};

const V2: &str = include_str!("fixtures/journal_record.v2.avsc");

fn field<'a>(record: &'a Value, name: &str) -> &'a Value {
    let Value::Record(fields) = record else {
        panic!("not a record: {record:?}")
    };
    &fields
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no field {name}"))
        .1
}

/// Today's records, read by a future reader whose schema added defaulted fields.
#[test]
fn v1_message_reads_with_a_v2_reader() {
    let record = common::small_journal();
    let message = encode_journal(&record).unwrap();

    let registry = SchemaRegistry::new();
    let writer = registry
        .journal_writer(peek_fingerprint(&message).unwrap())
        .unwrap();
    let v2 = Schema::parse_str(V2).unwrap();
    let reader = GenericDatumReader::builder(writer)
        .reader_schema(&v2)
        .build()
        .unwrap();
    let mut datum = &message[HEADER_LEN..];
    let value = reader.read_value(&mut datum).unwrap();

    assert!(datum.is_empty());
    assert_eq!(field(&value, "txn_id"), &Value::Long(42));
    assert_eq!(
        field(&value, "entity_group"),
        &Value::String("Blog:1".into())
    );
    assert_eq!(
        field(&value, "trace_id"),
        &Value::Union(0, Box::new(Value::Null))
    );
    assert_eq!(field(&value, "attempt"), &Value::Int(1));
    let Value::Array(ops) = field(&value, "ops") else {
        panic!("ops")
    };
    assert_eq!(ops.len(), 2);
}

fn v2_message() -> Vec<u8> {
    let v2 = Schema::parse_str(V2).unwrap();
    let op = |symbol: (u32, &str), key: &str, value: Value| {
        Value::Record(vec![
            ("kind".into(), Value::Enum(symbol.0, symbol.1.into())),
            ("key".into(), Value::String(key.into())),
            ("value".into(), value),
        ])
    };
    let value = Value::Record(vec![
        ("txn_id".into(), Value::Long(42)),
        ("namespace".into(), Value::String("app".into())),
        ("entity_group".into(), Value::String("Blog:1".into())),
        (
            "commit_ts_ms".into(),
            Value::TimestampMillis(1_700_000_000_000),
        ),
        ("origin".into(), Value::String("n1".into())),
        (
            "ops".into(),
            Value::Array(vec![
                op(
                    (0, "PUT"),
                    "Blog:1",
                    Value::Union(1, Box::new(Value::Bytes(b"{\"title\":\"hi\"}".to_vec()))),
                ),
                op(
                    (1, "DELETE"),
                    "Blog:1/Comment:7",
                    Value::Union(0, Box::new(Value::Null)),
                ),
            ]),
        ),
        (
            "trace_id".into(),
            Value::Union(1, Box::new(Value::String("abc".into()))),
        ),
        ("attempt".into(), Value::Int(3)),
    ]);
    let mut datum = Vec::new();
    GenericDatumWriter::builder(&v2)
        .build()
        .unwrap()
        .write_value_ref(&mut datum, &value)
        .unwrap();
    common::frame(parsing_fingerprint(V2).unwrap(), &datum)
}

/// A newer producer's records during a rolling upgrade: readable once its
/// schema is registered, rejected (not guessed) before.
#[test]
fn v2_message_reads_once_v2_is_registered() {
    let message = v2_message();
    let v2_fingerprint = parsing_fingerprint(V2).unwrap();
    assert_ne!(v2_fingerprint, fingerprint_journal());
    assert_eq!(
        decode_journal(&message),
        Err(SchemaError::UnknownFingerprint(v2_fingerprint))
    );

    let mut registry = SchemaRegistry::new();
    assert_eq!(registry.register_journal_writer(V2), Ok(v2_fingerprint));
    // Extra writer fields are dropped by resolution; the rest survive intact.
    assert_eq!(
        registry.decode_journal(&message).unwrap(),
        common::small_journal()
    );
    // Current-schema messages still take the direct path.
    let current = encode_journal(&common::small_journal()).unwrap();
    assert_eq!(
        registry.decode_journal(&current).unwrap(),
        common::small_journal()
    );
}

#[test]
fn registering_the_current_schema_is_a_no_op() {
    let mut registry = SchemaRegistry::new();
    let fp = registry
        .register_journal_writer(northwest_schemas::JOURNAL_SCHEMA_JSON)
        .unwrap();
    assert_eq!(fp, fingerprint_journal());
}

#[test]
fn unreadable_writer_schemas_are_refused_at_registration() {
    let mut registry = SchemaRegistry::new();
    // Drops `origin`, which the current reader needs and has no default for.
    let without_origin = V2.replace(r#"{"name": "origin", "type": "string"},"#, "");
    assert_ne!(without_origin, V2);
    assert!(matches!(
        registry.register_journal_writer(&without_origin),
        Err(SchemaError::Incompatible {
            reader: "northwest.JournalRecord",
            ..
        })
    ));
    // A snapshot schema is no journal writer.
    assert!(matches!(
        registry.register_journal_writer(northwest_schemas::SNAPSHOT_SCHEMA_JSON),
        Err(SchemaError::Incompatible { .. })
    ));
    assert!(matches!(
        registry.register_journal_writer("{"),
        Err(SchemaError::InvalidSchema(_))
    ));
}

#[test]
fn corrupt_datum_from_a_registered_writer_is_corrupt() {
    let mut registry = SchemaRegistry::new();
    registry.register_journal_writer(V2).unwrap();
    let message = v2_message();
    assert!(matches!(
        registry.decode_journal(&message[..message.len() - 1]),
        Err(SchemaError::Corrupt(_))
    ));
}
