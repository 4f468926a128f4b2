//! Wire format of the Northwest topics: the Avro schemas (`*.avsc` beside this
//! crate), the typed records, and their encoding.
//!
//! Every Kafka value is one Avro single-object message: `C3 01`, the 8-byte
//! little-endian CRC-64-AVRO fingerprint of the writer schema's Parsing
//! Canonical Form, then the Avro binary datum. Readers find the writer schema
//! by fingerprint in a [`SchemaRegistry`] and resolve it to the current schema,
//! so schemas can evolve while old messages stay readable; an unknown
//! fingerprint is an error, never a guess. Readers also accept the
//! Confluent Schema Registry framing ([`confluent`]). See `README.md` for
//! external consumers and the evolution rules.
//!
//! May use: no other Northwest crate (the store and the pipeline crates
//! build on this one).

mod canonical;
pub mod confluent;
mod convert;
mod error;
mod framing;
mod records;
mod registry;

use apache_avro::Schema;

pub use canonical::{parsing_canonical_form, parsing_fingerprint};
pub use error::SchemaError;
pub use framing::{HEADER_LEN, SINGLE_OBJECT_MAGIC};
pub use records::{JournalOp, JournalRecord, SnapshotRecord};
pub use registry::{peek_fingerprint, SchemaRegistry, JOURNAL_SCHEMA_JSON, SNAPSHOT_SCHEMA_JSON};

use registry::{DEFAULT_REGISTRY, JOURNAL, SNAPSHOT};

/// The parsed current journal schema.
pub fn journal_schema() -> &'static Schema {
    JOURNAL.schema()
}

/// The parsed current snapshot schema.
pub fn snapshot_schema() -> &'static Schema {
    SNAPSHOT.schema()
}

/// CRC-64-AVRO fingerprint of the current journal schema, as written in each header.
pub fn fingerprint_journal() -> u64 {
    JOURNAL.fingerprint()
}

/// CRC-64-AVRO fingerprint of the current snapshot schema, as written in each header.
pub fn fingerprint_snapshot() -> u64 {
    SNAPSHOT.fingerprint()
}

/// Encodes with the current journal schema.
pub fn encode_journal(record: &JournalRecord) -> Result<Vec<u8>, SchemaError> {
    let value = convert::journal_to_value(record)?;
    let hint = record
        .ops
        .iter()
        .map(|op| match op {
            JournalOp::Put { key, value } => key.len() + value.len() + 8,
            JournalOp::Delete { key } => key.len() + 4,
        })
        .sum::<usize>()
        + record.namespace.len()
        + record.entity_group.len()
        + record.origin.len()
        + 32;
    JOURNAL.encode(&value, hint)
}

/// Decodes any journal message whose writer schema ships with this crate.
pub fn decode_journal(message: &[u8]) -> Result<JournalRecord, SchemaError> {
    DEFAULT_REGISTRY.decode_journal(message)
}

/// Encodes with the current snapshot schema.
pub fn encode_snapshot(record: &SnapshotRecord) -> Result<Vec<u8>, SchemaError> {
    let value = convert::snapshot_to_value(record)?;
    let hint = record.namespace.len()
        + record.key.len()
        + record.value.as_ref().map_or(0, Vec::len)
        + record.snapshot_id.len()
        + record.origin.len()
        + 40;
    SNAPSHOT.encode(&value, hint)
}

/// Decodes any snapshot message whose writer schema ships with this crate.
pub fn decode_snapshot(message: &[u8]) -> Result<SnapshotRecord, SchemaError> {
    DEFAULT_REGISTRY.decode_snapshot(message)
}
