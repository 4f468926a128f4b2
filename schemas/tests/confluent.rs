//! The Confluent Schema Registry framing: reframing keeps the datum byte
//! for byte, and a framed record decodes only through an id learnt for
//! the schema that wrote it.

use northwest_schemas::confluent::{confluent_schema_id, learn_schema_id, to_confluent};
use northwest_schemas::{
    decode_journal, encode_journal, fingerprint_journal, JournalOp, JournalRecord, SchemaError,
    HEADER_LEN,
};

fn record() -> JournalRecord {
    JournalRecord {
        txn_id: 42,
        commit_ts_ms: 1_700_000_000_000,
        namespace: "app".into(),
        entity_group: "Acct:7".into(),
        origin: "n1".into(),
        ops: vec![JournalOp::Put {
            key: "Acct:7".into(),
            value: b"v".to_vec(),
        }],
    }
}

#[test]
fn a_confluent_framed_record_decodes_once_its_id_is_learnt() {
    let single = encode_journal(&record()).unwrap();
    let framed = to_confluent(&single, 90_001).unwrap();
    assert_eq!(framed[..5], [0, 0, 1, 0x5f, 0x91]);
    assert_eq!(framed[5..], single[HEADER_LEN..]);
    assert_eq!(confluent_schema_id(&framed), Some(90_001));
    assert_eq!(confluent_schema_id(&single), None);
    assert_eq!(
        decode_journal(&framed),
        Err(SchemaError::UnknownSchemaId(90_001))
    );
    learn_schema_id(90_001, fingerprint_journal());
    assert_eq!(decode_journal(&framed).unwrap(), record());
    // The single-object form still decodes.
    assert_eq!(decode_journal(&single).unwrap(), record());
}

#[test]
fn an_id_learnt_for_another_schema_is_an_unknown_writer_not_a_guess() {
    let framed = to_confluent(&encode_journal(&record()).unwrap(), 90_002).unwrap();
    learn_schema_id(90_002, 0xdead_beef);
    assert_eq!(
        decode_journal(&framed),
        Err(SchemaError::UnknownFingerprint(0xdead_beef))
    );
}

#[test]
fn truncated_and_foreign_bytes_are_refused() {
    assert!(matches!(
        decode_journal(&[0, 0, 1]),
        Err(SchemaError::Corrupt(_))
    ));
    assert_eq!(to_confluent(b"{}", 1), Err(SchemaError::BadMagic));
    assert!(matches!(
        to_confluent(&[0xC3, 0x01, 1], 1),
        Err(SchemaError::Corrupt(_))
    ));
}
