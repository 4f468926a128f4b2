use thiserror::Error;

/// Everything that can go wrong turning records into wire bytes and back.
///
/// Decode errors are never retriable: the same bytes fail the same way, so the
/// caller decides between halting and dead-lettering.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SchemaError {
    /// The message does not start with the single-object marker `C3 01`.
    #[error("not an Avro single-object message: missing magic bytes C3 01")]
    BadMagic,
    /// The writer schema's fingerprint is not registered. We never guess a
    /// schema: decoding with the wrong one yields plausible garbage.
    #[error("unknown writer schema fingerprint {0:#018x}")]
    UnknownFingerprint(u64),
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
