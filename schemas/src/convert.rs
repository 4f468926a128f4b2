//! Hand-written mapping between the typed records and `apache_avro::types::Value`.
//!
//! Serde derive would need adapters for the op enum, `bytes` and the
//! `timestamp-millis` field; the explicit mapping is short, and on decode it
//! checks each field's name and type, so a shape mismatch becomes
//! `SchemaError::Corrupt` instead of a silently defaulted field.

use apache_avro::types::Value;

use crate::{JournalOp, JournalRecord, SchemaError, SnapshotRecord};

const PUT: (u32, &str) = (0, "PUT");
const DELETE: (u32, &str) = (1, "DELETE");

pub(crate) fn journal_to_value(record: &JournalRecord) -> Result<Value, SchemaError> {
    let ops = record.ops.iter().map(op_to_value).collect();
    Ok(Value::Record(vec![
        ("txn_id".into(), long("txn_id", record.txn_id)?),
        ("namespace".into(), Value::String(record.namespace.clone())),
        (
            "entity_group".into(),
            Value::String(record.entity_group.clone()),
        ),
        (
            "commit_ts_ms".into(),
            Value::TimestampMillis(record.commit_ts_ms),
        ),
        ("origin".into(), Value::String(record.origin.clone())),
        ("ops".into(), Value::Array(ops)),
    ]))
}

fn op_to_value(op: &JournalOp) -> Value {
    let ((index, symbol), key, value) = match op {
        JournalOp::Put { key, value } => (
            PUT,
            key,
            Value::Union(1, Box::new(Value::Bytes(value.clone()))),
        ),
        JournalOp::Delete { key } => (DELETE, key, Value::Union(0, Box::new(Value::Null))),
    };
    Value::Record(vec![
        ("kind".into(), Value::Enum(index, symbol.into())),
        ("key".into(), Value::String(key.clone())),
        ("value".into(), value),
    ])
}

pub(crate) fn snapshot_to_value(record: &SnapshotRecord) -> Result<Value, SchemaError> {
    let value = match &record.value {
        Some(bytes) => Value::Union(1, Box::new(Value::Bytes(bytes.clone()))),
        None => Value::Union(0, Box::new(Value::Null)),
    };
    Ok(Value::Record(vec![
        ("namespace".into(), Value::String(record.namespace.clone())),
        ("key".into(), Value::String(record.key.clone())),
        ("version".into(), long("version", record.version)?),
        ("deleted".into(), Value::Boolean(record.deleted)),
        ("value".into(), value),
        ("commit_ts_ms".into(), Value::Long(record.commit_ts_ms)),
        (
            "snapshot_id".into(),
            Value::String(record.snapshot_id.clone()),
        ),
        ("origin".into(), Value::String(record.origin.clone())),
    ]))
}

pub(crate) fn journal_from_value(value: Value) -> Result<JournalRecord, SchemaError> {
    let mut fields = Fields::of(value, "JournalRecord")?;
    let record = JournalRecord {
        txn_id: unsigned(fields.next("txn_id")?, "txn_id")?,
        namespace: string(fields.next("namespace")?, "namespace")?,
        entity_group: string(fields.next("entity_group")?, "entity_group")?,
        commit_ts_ms: signed(fields.next("commit_ts_ms")?, "commit_ts_ms")?,
        origin: string(fields.next("origin")?, "origin")?,
        ops: match fields.next("ops")? {
            Value::Array(items) => items
                .into_iter()
                .map(op_from_value)
                .collect::<Result<_, _>>()?,
            other => return Err(mismatch("ops", "array", &other)),
        },
    };
    fields.finish()?;
    Ok(record)
}

fn op_from_value(value: Value) -> Result<JournalOp, SchemaError> {
    let mut fields = Fields::of(value, "Op")?;
    let kind = fields.next("kind")?;
    let key = string(fields.next("key")?, "key")?;
    let value = optional_bytes(fields.next("value")?, "value")?;
    fields.finish()?;
    // Resolution maps enum indexes to the reader's order, so the symbol is
    // what identifies the kind.
    match (kind, value) {
        (Value::Enum(_, symbol), Some(value)) if symbol == PUT.1 => {
            Ok(JournalOp::Put { key, value })
        }
        (Value::Enum(_, symbol), None) if symbol == DELETE.1 => Ok(JournalOp::Delete { key }),
        (Value::Enum(_, symbol), value) => Err(SchemaError::Corrupt(format!(
            "op {symbol} on {key:?} {} a value",
            if value.is_some() { "has" } else { "lacks" }
        ))),
        (other, _) => Err(mismatch("kind", "enum", &other)),
    }
}

pub(crate) fn snapshot_from_value(value: Value) -> Result<SnapshotRecord, SchemaError> {
    let mut fields = Fields::of(value, "SnapshotRecord")?;
    let record = SnapshotRecord {
        namespace: string(fields.next("namespace")?, "namespace")?,
        key: string(fields.next("key")?, "key")?,
        version: unsigned(fields.next("version")?, "version")?,
        deleted: match fields.next("deleted")? {
            Value::Boolean(deleted) => deleted,
            other => return Err(mismatch("deleted", "boolean", &other)),
        },
        value: optional_bytes(fields.next("value")?, "value")?,
        commit_ts_ms: signed(fields.next("commit_ts_ms")?, "commit_ts_ms")?,
        snapshot_id: string(fields.next("snapshot_id")?, "snapshot_id")?,
        origin: string(fields.next("origin")?, "origin")?,
    };
    fields.finish()?;
    Ok(record)
}

/// Walks a decoded record's fields in reader-schema order, checking names.
struct Fields {
    record: &'static str,
    fields: std::vec::IntoIter<(String, Value)>,
}

impl Fields {
    fn of(value: Value, record: &'static str) -> Result<Self, SchemaError> {
        match value {
            Value::Record(fields) => Ok(Fields {
                record,
                fields: fields.into_iter(),
            }),
            other => Err(mismatch(record, "record", &other)),
        }
    }

    fn next(&mut self, name: &'static str) -> Result<Value, SchemaError> {
        match self.fields.next() {
            Some((found, value)) if found == name => Ok(value),
            Some((found, _)) => Err(SchemaError::Corrupt(format!(
                "{}: expected field {name}, found {found}",
                self.record
            ))),
            None => Err(SchemaError::Corrupt(format!(
                "{}: missing field {name}",
                self.record
            ))),
        }
    }

    fn finish(mut self) -> Result<(), SchemaError> {
        match self.fields.next() {
            None => Ok(()),
            Some((found, _)) => Err(SchemaError::Corrupt(format!(
                "{}: unexpected field {found}",
                self.record
            ))),
        }
    }
}

fn long(field: &'static str, value: u64) -> Result<Value, SchemaError> {
    i64::try_from(value)
        .map(Value::Long)
        .map_err(|_| SchemaError::OutOfRange { field, value })
}

fn unsigned(value: Value, field: &'static str) -> Result<u64, SchemaError> {
    let signed = signed(value, field)?;
    u64::try_from(signed)
        .map_err(|_| SchemaError::Corrupt(format!("{field} is negative: {signed}")))
}

/// Accepts both representations because a writer without the logical type
/// resolves to `Long`, one with it to `TimestampMillis`.
fn signed(value: Value, field: &'static str) -> Result<i64, SchemaError> {
    match value {
        Value::Long(n) | Value::TimestampMillis(n) => Ok(n),
        other => Err(mismatch(field, "long", &other)),
    }
}

fn string(value: Value, field: &'static str) -> Result<String, SchemaError> {
    match value {
        Value::String(s) => Ok(s),
        // apache-avro decodes a string cut short by end of input as `Null`.
        other => Err(mismatch(field, "string", &other)),
    }
}

fn optional_bytes(value: Value, field: &'static str) -> Result<Option<Vec<u8>>, SchemaError> {
    match value {
        Value::Union(_, inner) => match *inner {
            Value::Null => Ok(None),
            Value::Bytes(bytes) => Ok(Some(bytes)),
            other => Err(mismatch(field, "null or bytes", &other)),
        },
        other => Err(mismatch(field, "union", &other)),
    }
}

fn mismatch(field: &str, expected: &str, found: &Value) -> SchemaError {
    SchemaError::Corrupt(format!(
        "{field}: expected {expected}, found {}",
        kind_of(found)
    ))
}

/// Names the variant only: printing a whole `Value` could dump megabytes of payload.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Boolean(_) => "boolean",
        Value::Int(_) => "int",
        Value::Long(_) | Value::TimestampMillis(_) => "long",
        Value::Bytes(_) => "bytes",
        Value::String(_) => "string",
        Value::Enum(..) => "enum",
        Value::Union(..) => "union",
        Value::Array(_) => "array",
        Value::Map(_) => "map",
        Value::Record(_) => "record",
        _ => "another Avro type",
    }
}
