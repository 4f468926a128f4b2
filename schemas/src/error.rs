use thiserror::Error;

/// Everything that can go wrong turning records into wire bytes and back.
///
/// Decode errors are never retriable: the same bytes fail the same way, so the
/// caller decides between halting and dead-lettering.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SchemaError {
    /// The message starts with neither the single-object marker `C3 01` nor
    /// the Confluent framing's `00`.
    #[error("not an Avro single-object (C3 01) or Confluent-framed (00) message")]
    BadMagic,
    /// The writer schema's fingerprint is not registered. We never guess a
    /// schema: decoding with the wrong one yields plausible garbage.
    #[error("unknown writer schema fingerprint {0:#018x}")]
    UnknownFingerprint(u64),
    /// A Confluent-framed message whose registry id this process has not
    /// learnt (the registry was not asked, or has no such id).
    #[error("unknown schema registry id {0}")]
    UnknownSchemaId(u32),
    /// Truncated, trailing or otherwise undecodable bytes.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// An unsigned field does not fit Avro's signed `long`.
    #[error("{field} = {value} does not fit an Avro long")]
    OutOfRange { field: &'static str, value: u64 },
    /// The Avro library refused to encode a value (a bug in this crate's mapping).
    #[error("cannot encode record: {0}")]
    Encode(String),
    /// A schema text that does not parse as Avro.
    #[error("invalid Avro schema: {0}")]
    InvalidSchema(String),
    /// A writer schema the current reader schema cannot resolve.
    #[error("writer schema {fingerprint:#018x} cannot be read as {reader}: {reason}")]
    Incompatible {
        fingerprint: u64,
        reader: &'static str,
        reason: String,
    },
}
