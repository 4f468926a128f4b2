//! The current schemas, the single-object framing, and the registry of writer
//! schemas a reader accepts.

use std::collections::HashMap;
use std::sync::LazyLock;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;

use crate::canonical::parsing_fingerprint;
use crate::convert::{journal_from_value, snapshot_from_value};
use crate::framing::{HEADER_LEN, SINGLE_OBJECT_MAGIC};
use crate::{JournalRecord, SchemaError, SnapshotRecord};

/// Current journal schema text (`northwest.JournalRecord`).
pub const JOURNAL_SCHEMA_JSON: &str = include_str!("../journal_record.avsc");
/// Current snapshot schema text (`northwest.SnapshotRecord`).
pub const SNAPSHOT_SCHEMA_JSON: &str = include_str!("../snapshot_record.avsc");

/// Writer schemas of earlier versions that retained topic data may still use.
/// When a current `.avsc` changes, copy its previous text to
/// `schemas/history/<name>.vN.avsc` and list it here with `include_str!`.
const JOURNAL_HISTORY: &[&str] = &[];
const SNAPSHOT_HISTORY: &[&str] = &[];

static JOURNAL_SCHEMA: LazyLock<Schema> = LazyLock::new(|| builtin_schema(JOURNAL_SCHEMA_JSON));
static SNAPSHOT_SCHEMA: LazyLock<Schema> = LazyLock::new(|| builtin_schema(SNAPSHOT_SCHEMA_JSON));
pub(crate) static JOURNAL: LazyLock<Current> = LazyLock::new(|| {
    Current::new(
        "northwest.JournalRecord",
        JOURNAL_SCHEMA_JSON,
        LazyLock::force(&JOURNAL_SCHEMA),
    )
});
pub(crate) static SNAPSHOT: LazyLock<Current> = LazyLock::new(|| {
    Current::new(
        "northwest.SnapshotRecord",
        SNAPSHOT_SCHEMA_JSON,
        LazyLock::force(&SNAPSHOT_SCHEMA),
    )
});
pub(crate) static DEFAULT_REGISTRY: LazyLock<SchemaRegistry> = LazyLock::new(SchemaRegistry::new);

fn builtin_schema(avsc: &str) -> Schema {
    // The texts are compiled in and covered by tests; failing here means the
    // crate itself is broken, not the input.
    Schema::parse_str(avsc).expect("embedded .avsc is a valid Avro schema")
}

/// A current schema with its datum reader and writer built once: building them
/// resolves named types, which would otherwise cost more than decoding a record.
pub(crate) struct Current {
    name: &'static str,
    schema: &'static Schema,
    fingerprint: u64,
    reader: GenericDatumReader<'static>,
    writer: GenericDatumWriter<'static>,
}

impl Current {
    fn new(name: &'static str, avsc: &str, schema: &'static Schema) -> Self {
        Current {
            name,
            schema,
            fingerprint: parsing_fingerprint(avsc).expect("embedded .avsc has a canonical form"),
            reader: GenericDatumReader::builder(schema)
                .build()
                .expect("embedded schema resolves"),
            writer: GenericDatumWriter::builder(schema)
                .build()
                .expect("embedded schema resolves"),
        }
    }

    pub(crate) fn schema(&self) -> &'static Schema {
        self.schema
    }

    pub(crate) fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Frames `value` as one single-object message; `datum_hint` sizes the buffer.
    pub(crate) fn encode(&self, value: &Value, datum_hint: usize) -> Result<Vec<u8>, SchemaError> {
        let mut out = Vec::with_capacity(HEADER_LEN + datum_hint);
        out.extend_from_slice(&SINGLE_OBJECT_MAGIC);
        out.extend_from_slice(&self.fingerprint.to_le_bytes());
        self.writer
            .write_value_ref(&mut out, value)
            .map_err(|e| SchemaError::Encode(e.to_string()))?;
        Ok(out)
    }
}

/// Reads the writer fingerprint of a single-object message (or of a
/// Confluent-framed one whose id was learnt) without decoding it.
///
/// A message starting with neither `C3 01` nor `00` is `BadMagic`; a
/// marker followed by too few header bytes is `Corrupt`; a Confluent id not
/// learnt is `UnknownSchemaId`.
pub fn peek_fingerprint(message: &[u8]) -> Result<u64, SchemaError> {
    split_header(message).map(|(fingerprint, _)| fingerprint)
}

fn split_header(message: &[u8]) -> Result<(u64, &[u8]), SchemaError> {
    if let Some(framed) = crate::confluent::split(message) {
        return framed;
    }
    if !message.starts_with(&SINGLE_OBJECT_MAGIC) {
        return Err(SchemaError::BadMagic);
    }
    let Some((fingerprint, datum)) = message[SINGLE_OBJECT_MAGIC.len()..].split_first_chunk::<8>()
    else {
        return Err(SchemaError::Corrupt(format!(
            "truncated header: {} of {HEADER_LEN} bytes",
            message.len()
        )));
    };
    Ok((u64::from_le_bytes(*fingerprint), datum))
}

/// The writer schemas a reader accepts, keyed by fingerprint, for each record type.
///
/// `SchemaRegistry::new()` knows the current schemas and every historical one
/// this crate ships; `register_*_writer` adds more (e.g. a newer producer's
/// schema during a rolling upgrade). Every registered writer is checked at
/// registration to be fully readable by the current schema, so decode-time
/// resolution failures can only come from corrupt bytes.
pub struct SchemaRegistry {
    journal: Writers,
    snapshot: Writers,
}

struct Writers {
    current: &'static Current,
    others: HashMap<u64, Schema>,
}

impl SchemaRegistry {
    pub fn new() -> Self {
        let mut registry = SchemaRegistry {
            journal: Writers::new(&JOURNAL),
            snapshot: Writers::new(&SNAPSHOT),
        };
        for avsc in JOURNAL_HISTORY {
            registry
                .register_journal_writer(avsc)
                .expect("shipped journal history schema is readable");
        }
        for avsc in SNAPSHOT_HISTORY {
            registry
                .register_snapshot_writer(avsc)
                .expect("shipped snapshot history schema is readable");
        }
        registry
    }

    /// Accepts journal messages written with `avsc`; returns its fingerprint.
    pub fn register_journal_writer(&mut self, avsc: &str) -> Result<u64, SchemaError> {
        self.journal.register(avsc)
    }

    /// Accepts snapshot messages written with `avsc`; returns its fingerprint.
    pub fn register_snapshot_writer(&mut self, avsc: &str) -> Result<u64, SchemaError> {
        self.snapshot.register(avsc)
    }

    /// The journal writer schema with this fingerprint, if known.
    pub fn journal_writer(&self, fingerprint: u64) -> Option<&Schema> {
        self.journal.get(fingerprint)
    }

    /// The snapshot writer schema with this fingerprint, if known.
    pub fn snapshot_writer(&self, fingerprint: u64) -> Option<&Schema> {
        self.snapshot.get(fingerprint)
    }

    pub fn decode_journal(&self, message: &[u8]) -> Result<JournalRecord, SchemaError> {
        journal_from_value(self.journal.decode(message)?)
    }

    pub fn decode_snapshot(&self, message: &[u8]) -> Result<SnapshotRecord, SchemaError> {
        snapshot_from_value(self.snapshot.decode(message)?)
    }
}

impl Default for SchemaRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl Writers {
    fn new(current: &'static LazyLock<Current>) -> Self {
        Writers {
            current: LazyLock::force(current),
            others: HashMap::new(),
        }
    }

    fn get(&self, fingerprint: u64) -> Option<&Schema> {
        if fingerprint == self.current.fingerprint {
            Some(self.current.schema)
        } else {
            self.others.get(&fingerprint)
        }
    }

    fn register(&mut self, avsc: &str) -> Result<u64, SchemaError> {
        let schema =
            Schema::parse_str(avsc).map_err(|e| SchemaError::InvalidSchema(e.to_string()))?;
        let fingerprint = parsing_fingerprint(avsc)?;
        if fingerprint == self.current.fingerprint {
            return Ok(fingerprint);
        }
        let incompatible = |reason: String| SchemaError::Incompatible {
            fingerprint,
            reader: self.current.name,
            reason,
        };
        // `Partial` means some values (an enum symbol, a union branch) would
        // fail at decode time; refuse those up front.
        match SchemaCompatibility::can_read(&schema, self.current.schema) {
            Ok(Compatibility::Full) => {}
            Ok(Compatibility::Partial) => {
                return Err(incompatible("only partially compatible".into()))
            }
            Err(e) => return Err(incompatible(e.to_string())),
        }
        GenericDatumReader::builder(&schema)
            .reader_schema(self.current.schema)
            .build()
            .map_err(|e| incompatible(e.to_string()))?;
        self.others.insert(fingerprint, schema);
        Ok(fingerprint)
    }

    fn decode(&self, message: &[u8]) -> Result<Value, SchemaError> {
        let (fingerprint, mut datum) = split_header(message)?;
        let decoded = if fingerprint == self.current.fingerprint {
            // Writer = reader: no resolution step.
            self.current.reader.read_value(&mut datum)
        } else {
            let writer = self
                .others
                .get(&fingerprint)
                .ok_or(SchemaError::UnknownFingerprint(fingerprint))?;
            GenericDatumReader::builder(writer)
                .reader_schema(self.current.schema)
                .build()
                .and_then(|reader| reader.read_value(&mut datum))
        };
        let value = decoded.map_err(|e| SchemaError::Corrupt(e.to_string()))?;
        if !datum.is_empty() {
            return Err(SchemaError::Corrupt(format!(
                "{} trailing bytes after the datum",
                datum.len()
            )));
        }
        Ok(value)
    }
}
