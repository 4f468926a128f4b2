//! Bad input yields an error, never a panic and never a wrong record.

mod common;

use northwest_schemas::{
    decode_journal, decode_snapshot, encode_journal, encode_snapshot, fingerprint_journal,
    fingerprint_snapshot, peek_fingerprint, SchemaError, HEADER_LEN,
};
use proptest::prelude::*;

#[test]
fn wrong_magic_is_bad_magic() {
    let mut message = encode_journal(&common::small_journal()).unwrap();
    message[1] = 0x02;
    assert_eq!(decode_journal(&message), Err(SchemaError::BadMagic));
    assert_eq!(decode_journal(&[]), Err(SchemaError::BadMagic));
    assert_eq!(decode_journal(&[0xC3]), Err(SchemaError::BadMagic));
    // A plain JSON value must not be mistaken for ours.
    assert_eq!(
        decode_journal(b"{\"txn_id\":1}"),
        Err(SchemaError::BadMagic)
    );
    // A Confluent-framed value is read only by a registry id this process
    // learnt: never guessed.
    assert_eq!(
        decode_journal(&[0, 0, 0, 0, 1, 2]),
        Err(SchemaError::UnknownSchemaId(1))
    );
    for short in [&[0u8][..], &[0, 0], &[0, 0, 0, 1]] {
        assert!(
            matches!(decode_journal(short), Err(SchemaError::Corrupt(_))),
            "{short:?}"
        );
    }
}

#[test]
fn unknown_fingerprint_is_reported_not_guessed() {
    let message = encode_journal(&common::small_journal()).unwrap();
    let mut altered = message.clone();
    altered[2] ^= 0x01;
    let altered_fp = fingerprint_journal() ^ 0x01;
    assert_eq!(
        decode_journal(&altered),
        Err(SchemaError::UnknownFingerprint(altered_fp))
    );

    // Each topic's reader knows only its own record type.
    let snapshot = encode_snapshot(&common::small_snapshot()).unwrap();
    assert_eq!(
        decode_journal(&snapshot),
        Err(SchemaError::UnknownFingerprint(fingerprint_snapshot()))
    );
    assert_eq!(
        decode_snapshot(&message),
        Err(SchemaError::UnknownFingerprint(fingerprint_journal()))
    );
}

#[test]
fn every_truncation_is_corrupt() {
    let message = encode_journal(&common::small_journal()).unwrap();
    for len in 2..message.len() {
        match decode_journal(&message[..len]) {
            Err(SchemaError::Corrupt(_)) => {}
            other => panic!("truncated to {len} of {} bytes: {other:?}", message.len()),
        }
    }
    let snapshot = encode_snapshot(&common::small_snapshot()).unwrap();
    for len in 2..snapshot.len() {
        assert!(
            matches!(
                decode_snapshot(&snapshot[..len]),
                Err(SchemaError::Corrupt(_))
            ),
            "len {len}"
        );
    }
    assert!(matches!(
        peek_fingerprint(&message[..HEADER_LEN - 1]),
        Err(SchemaError::Corrupt(_))
    ));
}

#[test]
fn trailing_bytes_are_corrupt() {
    let mut message = encode_journal(&common::small_journal()).unwrap();
    message.push(0);
    assert!(
        matches!(decode_journal(&message), Err(SchemaError::Corrupt(m)) if m.contains("trailing"))
    );
}

#[test]
fn huge_declared_lengths_are_corrupt() {
    // namespace length varint claiming ~2^62 bytes.
    let mut datum = vec![0x02];
    datum.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
    let message = common::frame(fingerprint_journal(), &datum);
    assert!(matches!(
        decode_journal(&message),
        Err(SchemaError::Corrupt(_))
    ));
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Set { at: usize, byte: u8 },
    Insert { at: usize, byte: u8 },
    Remove { at: usize },
    Truncate { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<usize>();
    prop_oneof![
        (at, 1..=255u8).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        (at, any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        (at, any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        at.prop_map(|at| Mutation::Remove { at }),
        at.prop_map(|at| Mutation::Truncate { at }),
    ]
}

/// Mutations land in the datum only: header damage is covered above, and
/// keeping the header valid makes the decoder actually parse the rest.
fn apply(message: &mut Vec<u8>, mutation: &Mutation) {
    let span = message.len() - HEADER_LEN;
    if span == 0 {
        return;
    }
    match *mutation {
        Mutation::Flip { at, mask } => message[HEADER_LEN + at % span] ^= mask,
        Mutation::Set { at, byte } => message[HEADER_LEN + at % span] = byte,
        Mutation::Insert { at, byte } => message.insert(HEADER_LEN + at % (span + 1), byte),
        Mutation::Remove { at } => {
            message.remove(HEADER_LEN + at % span);
        }
        Mutation::Truncate { at } => message.truncate(HEADER_LEN + at % span),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn mutated_journal_never_panics(
        record in common::journal(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let mut message = encode_journal(&record).unwrap();
        for m in &mutations {
            apply(&mut message, m);
        }
        // Ok is possible (e.g. a flipped payload byte); the result must then be
        // a well-formed record. Not necessarily the same bytes: Avro admits
        // non-minimal varints and negative array block counts.
        if let Ok(decoded) = decode_journal(&message) {
            prop_assert_eq!(decode_journal(&encode_journal(&decoded).unwrap()).unwrap(), decoded);
        }
    }

    #[test]
    fn mutated_snapshot_never_panics(
        record in common::snapshot(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let mut message = encode_snapshot(&record).unwrap();
        for m in &mutations {
            apply(&mut message, m);
        }
        if let Ok(decoded) = decode_snapshot(&message) {
            prop_assert_eq!(decode_snapshot(&encode_snapshot(&decoded).unwrap()).unwrap(), decoded);
        }
    }

    #[test]
    fn random_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_journal(&common::frame(fingerprint_journal(), &tail));
        let _ = decode_snapshot(&common::frame(fingerprint_snapshot(), &tail));
        let _ = decode_journal(&tail);
    }
}
