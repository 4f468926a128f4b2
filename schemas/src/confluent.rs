//! The Confluent Schema Registry wire format, what Kafka Connect's
//! AvroConverter and most Kafka consumers read: byte `00`, the writer
//! schema's 4-byte big-endian registry id, then the same Avro binary datum
//! a single-object message carries. Northwest writes it when the node's
//! `journal.framing = "confluent"`, and every reader accepts it beside
//! single-object messages once it knows which schema an id names
//! ([`learn_schema_id`]: the id's schema text from the registry, reduced to
//! its fingerprint, so the writer is still found by fingerprint and never
//! guessed).

use std::collections::HashMap;
use std::sync::{LazyLock, PoisonError, RwLock};

use crate::error::SchemaError;
use crate::framing::{HEADER_LEN, SINGLE_OBJECT_MAGIC};

pub const CONFLUENT_MAGIC: u8 = 0;
/// Magic plus the 4-byte schema id.
pub const CONFLUENT_HEADER_LEN: usize = 5;

/// Registry ids this process has learnt, to writer fingerprints. Ids are
/// global within one registry and one deployment uses one registry.
static IDS: LazyLock<RwLock<HashMap<u32, u64>>> = LazyLock::new(Default::default);

/// Records that registry id `id` names the schema with `fingerprint`.
pub fn learn_schema_id(id: u32, fingerprint: u64) {
    IDS.write()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id, fingerprint);
}

/// The fingerprint learnt for `id`, if any.
pub fn known_schema_id(id: u32) -> Option<u64> {
    IDS.read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&id)
        .copied()
}

/// The registry id of a Confluent-framed message; `None` for any other.
pub fn confluent_schema_id(message: &[u8]) -> Option<u32> {
    match message {
        [CONFLUENT_MAGIC, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

/// The same record framed for the registry: a single-object message's
/// header replaced by the Confluent one naming `id` (the datum is kept
/// byte for byte).
pub fn to_confluent(single_object: &[u8], id: u32) -> Result<Vec<u8>, SchemaError> {
    if !single_object.starts_with(&SINGLE_OBJECT_MAGIC) {
        return Err(SchemaError::BadMagic);
    }
    let datum = single_object.get(HEADER_LEN..).ok_or_else(|| {
        SchemaError::Corrupt(format!(
            "truncated header: {} of {HEADER_LEN} bytes",
            single_object.len()
        ))
    })?;
    let mut out = Vec::with_capacity(CONFLUENT_HEADER_LEN + datum.len());
    out.push(CONFLUENT_MAGIC);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(datum);
    Ok(out)
}

/// A Confluent-framed message's writer fingerprint (learnt for its id) and
/// datum; `None` when the message is not Confluent-framed.
pub(crate) fn split(message: &[u8]) -> Option<Result<(u64, &[u8]), SchemaError>> {
    if message.first() != Some(&CONFLUENT_MAGIC) {
        return None;
    }
    let Some(id) = confluent_schema_id(message) else {
        return Some(Err(SchemaError::Corrupt(format!(
            "truncated Confluent header: {} of {CONFLUENT_HEADER_LEN} bytes",
            message.len()
        ))));
    };
    Some(
        known_schema_id(id)
            .map(|fp| (fp, &message[CONFLUENT_HEADER_LEN..]))
            .ok_or(SchemaError::UnknownSchemaId(id)),
    )
}
