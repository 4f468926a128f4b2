//! Encode → decode is the identity on every representable record.

mod common;

use apache_avro::reader::datum::GenericDatumReader;
use northwest_schemas::{
    decode_journal, decode_snapshot, encode_journal, encode_snapshot, journal_schema,
    JournalRecord, SchemaError, HEADER_LEN,
};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn journal_round_trips(record in common::journal()) {
        let message = encode_journal(&record).unwrap();
        prop_assert_eq!(decode_journal(&message).unwrap(), record);
    }

    #[test]
    fn snapshot_round_trips(record in common::snapshot()) {
        let message = encode_snapshot(&record).unwrap();
        prop_assert_eq!(decode_snapshot(&message).unwrap(), record);
    }

    /// The datum is plain Avro: a generic reader given only the .avsc decodes it.
    #[test]
    fn datum_is_readable_by_a_generic_reader(record in common::journal()) {
        let message = encode_journal(&record).unwrap();
        let reader = GenericDatumReader::builder(journal_schema()).build().unwrap();
        let mut datum = &message[HEADER_LEN..];
        reader.read_value(&mut datum).unwrap();
        prop_assert!(datum.is_empty());
    }
}

#[test]
fn ids_beyond_avro_long_are_rejected_on_encode() {
    let record = JournalRecord {
        txn_id: i64::MAX as u64 + 1,
        ..common::small_journal()
    };
    assert_eq!(
        encode_journal(&record),
        Err(SchemaError::OutOfRange {
            field: "txn_id",
            value: i64::MAX as u64 + 1
        })
    );
    let snapshot = northwest_schemas::SnapshotRecord {
        version: u64::MAX,
        ..common::small_snapshot()
    };
    assert!(matches!(
        encode_snapshot(&snapshot),
        Err(SchemaError::OutOfRange {
            field: "version",
            ..
        })
    ));
}

#[test]
fn topic_keys() {
    assert_eq!(common::small_journal().topic_key(), "app/Blog:1");
    assert_eq!(common::small_snapshot().topic_key(), "app/Blog:1/Comment:7");
}
