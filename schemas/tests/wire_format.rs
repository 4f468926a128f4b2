//! The bytes on the wire are exactly what the Avro specification prescribes,
//! checked against values derived by hand from the spec, not from this crate.

mod common;

use apache_avro::headers::{HeaderBuilder, RabinFingerprintHeader};
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use northwest_schemas::{
    decode_journal, encode_journal, encode_snapshot, fingerprint_journal, fingerprint_snapshot,
    journal_schema, parsing_canonical_form, peek_fingerprint, snapshot_schema, JournalOp,
    JournalRecord, SchemaError, SnapshotRecord, JOURNAL_SCHEMA_JSON, SNAPSHOT_SCHEMA_JSON,
};

/// Parsing Canonical Form written out by hand from the spec's rules
/// ([PRIMITIVES], [FULLNAMES], [STRIP], [ORDER], [WHITESPACE]).
const JOURNAL_PCF: &str = concat!(
    r#"{"name":"northwest.JournalRecord","type":"record","fields":["#,
    r#"{"name":"txn_id","type":"long"},"#,
    r#"{"name":"namespace","type":"string"},"#,
    r#"{"name":"entity_group","type":"string"},"#,
    r#"{"name":"commit_ts_ms","type":"long"},"#,
    r#"{"name":"origin","type":"string"},"#,
    r#"{"name":"ops","type":{"type":"array","items":{"name":"northwest.Op","type":"record","fields":["#,
    r#"{"name":"kind","type":{"name":"northwest.OpKind","type":"enum","symbols":["PUT","DELETE"]}},"#,
    r#"{"name":"key","type":"string"},"#,
    r#"{"name":"value","type":["null","bytes"]}]}}}]}"#
);

const SNAPSHOT_PCF: &str = concat!(
    r#"{"name":"northwest.SnapshotRecord","type":"record","fields":["#,
    r#"{"name":"namespace","type":"string"},"#,
    r#"{"name":"key","type":"string"},"#,
    r#"{"name":"version","type":"long"},"#,
    r#"{"name":"deleted","type":"boolean"},"#,
    r#"{"name":"value","type":["null","bytes"]},"#,
    r#"{"name":"commit_ts_ms","type":"long"},"#,
    r#"{"name":"snapshot_id","type":"string"},"#,
    r#"{"name":"origin","type":"string"}]}"#
);

/// CRC-64-AVRO exactly as the specification's "Schema Fingerprints" section
/// gives it (table built from EMPTY, one table step per byte).
fn spec_fingerprint64(data: &[u8]) -> u64 {
    const EMPTY: u64 = 0xc15d213aa4d7a795;
    let mut table = [0u64; 256];
    for (i, slot) in table.iter_mut().enumerate() {
        let mut fp = i as u64;
        for _ in 0..8 {
            let mask = (fp & 1).wrapping_neg();
            fp = (fp >> 1) ^ (EMPTY & mask);
        }
        *slot = fp;
    }
    let mut fp = EMPTY;
    for &b in data {
        fp = (fp >> 8) ^ table[((fp ^ u64::from(b)) & 0xff) as usize];
    }
    fp
}

#[test]
fn canonical_forms_follow_the_spec() {
    assert_eq!(
        parsing_canonical_form(JOURNAL_SCHEMA_JSON).unwrap(),
        JOURNAL_PCF
    );
    assert_eq!(
        parsing_canonical_form(SNAPSHOT_SCHEMA_JSON).unwrap(),
        SNAPSHOT_PCF
    );
}

#[test]
fn fingerprints_are_crc64_avro_of_the_canonical_form() {
    assert_eq!(
        fingerprint_journal(),
        spec_fingerprint64(JOURNAL_PCF.as_bytes())
    );
    assert_eq!(
        fingerprint_snapshot(),
        spec_fingerprint64(SNAPSHOT_PCF.as_bytes())
    );
    // Pinned: changing either means a schema change; see README.md "Evolution".
    // fastavro's `fingerprint(to_parsing_canonical_form(s), "CRC-64-AVRO")`
    // prints these little-endian: 650224d1a6d83791 and 158b1b281c556722.
    assert_eq!(fingerprint_journal(), 0x9137_d8a6_d124_0265);
    assert_eq!(fingerprint_snapshot(), 0x2267_551c_281b_8b15);
}

#[test]
fn snapshot_fingerprint_agrees_with_apache_avro() {
    // No logical types in the snapshot schema, so every implementation agrees
    // on its canonical form (see src/canonical.rs for the journal's case).
    let header = RabinFingerprintHeader::from_schema(snapshot_schema()).build_header();
    assert_eq!(header[2..], fingerprint_snapshot().to_le_bytes());
}

#[test]
fn header_is_magic_then_little_endian_fingerprint() {
    let journal = encode_journal(&common::small_journal()).unwrap();
    assert_eq!(journal[..2], [0xC3, 0x01]);
    assert_eq!(
        journal[2..10],
        spec_fingerprint64(JOURNAL_PCF.as_bytes()).to_le_bytes()
    );
    assert_eq!(peek_fingerprint(&journal), Ok(fingerprint_journal()));

    let snapshot = encode_snapshot(&common::small_snapshot()).unwrap();
    assert_eq!(snapshot[..2], [0xC3, 0x01]);
    assert_eq!(
        snapshot[2..10],
        spec_fingerprint64(SNAPSHOT_PCF.as_bytes()).to_le_bytes()
    );
}

#[test]
fn journal_datum_matches_hand_encoding() {
    let record = JournalRecord {
        txn_id: 1,
        namespace: "ns".into(),
        entity_group: "Blog:1".into(),
        commit_ts_ms: -1,
        origin: "n1".into(),
        ops: vec![
            JournalOp::Put {
                key: "k".into(),
                value: vec![0xAB],
            },
            JournalOp::Delete { key: "d".into() },
        ],
    };
    #[rustfmt::skip]
    let datum = [
        0x02,                                     // txn_id 1 (zig-zag)
        0x04, b'n', b's',                         // namespace
        0x0c, b'B', b'l', b'o', b'g', b':', b'1', // entity_group
        0x01,                                     // commit_ts_ms -1
        0x04, b'n', b'1',                         // origin
        0x04,                                     // ops: block of 2
        0x00, 0x02, b'k', 0x02, 0x02, 0xAB,       //   PUT "k" bytes[AB]
        0x02, 0x02, b'd', 0x00,                   //   DELETE "d" null
        0x00,                                     // end of array
    ];
    let message = encode_journal(&record).unwrap();
    assert_eq!(message[10..], datum);
    assert_eq!(decode_journal(&message).unwrap(), record);
}

#[test]
fn snapshot_datum_matches_hand_encoding() {
    let record = SnapshotRecord {
        namespace: "ns".into(),
        key: "k".into(),
        version: 300,
        deleted: true,
        value: None,
        commit_ts_ms: 1,
        snapshot_id: "s".into(),
        origin: "n1".into(),
    };
    #[rustfmt::skip]
    let datum = [
        0x04, b'n', b's', // namespace
        0x02, b'k',       // key
        0xd8, 0x04,       // version 300 (zig-zag 600, varint)
        0x01,             // deleted
        0x00,             // value: null branch
        0x02,             // commit_ts_ms 1
        0x02, b's',       // snapshot_id
        0x04, b'n', b'1', // origin
    ];
    assert_eq!(encode_snapshot(&record).unwrap()[10..], datum);
}

/// Encodes an arbitrary `Value` with the current journal schema, bypassing the typed API.
fn raw_journal(txn_id: i64, op: Value) -> Vec<u8> {
    let value = Value::Record(vec![
        ("txn_id".into(), Value::Long(txn_id)),
        ("namespace".into(), Value::String("ns".into())),
        ("entity_group".into(), Value::String("g".into())),
        ("commit_ts_ms".into(), Value::TimestampMillis(0)),
        ("origin".into(), Value::String("n1".into())),
        ("ops".into(), Value::Array(vec![op])),
    ]);
    let writer = GenericDatumWriter::builder(journal_schema())
        .build()
        .unwrap();
    let mut datum = Vec::new();
    writer.write_value_ref(&mut datum, &value).unwrap();
    common::frame(fingerprint_journal(), &datum)
}

fn raw_op(kind: (u32, &str), value: Option<Vec<u8>>) -> Value {
    let value = match value {
        Some(bytes) => Value::Union(1, Box::new(Value::Bytes(bytes))),
        None => Value::Union(0, Box::new(Value::Null)),
    };
    Value::Record(vec![
        ("kind".into(), Value::Enum(kind.0, kind.1.into())),
        ("key".into(), Value::String("k".into())),
        ("value".into(), value),
    ])
}

#[test]
fn negative_txn_id_is_corrupt() {
    let message = raw_journal(-1, raw_op((1, "DELETE"), None));
    assert!(
        matches!(decode_journal(&message), Err(SchemaError::Corrupt(m)) if m.contains("negative"))
    );
}

#[test]
fn put_without_value_and_delete_with_value_are_corrupt() {
    for op in [
        raw_op((0, "PUT"), None),
        raw_op((1, "DELETE"), Some(vec![1])),
    ] {
        let message = raw_journal(7, op);
        assert!(matches!(
            decode_journal(&message),
            Err(SchemaError::Corrupt(_))
        ));
    }
}
