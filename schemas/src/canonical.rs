//! Parsing Canonical Form and the CRC-64-AVRO (Rabin) fingerprint.
//!
//! We compute the canonical form ourselves instead of using
//! `apache_avro::Schema::canonical_form`: for a primitive carrying a logical
//! type (our `commit_ts_ms` is `{"type":"long","logicalType":"timestamp-millis"}`)
//! apache-avro 0.22 emits `{"type":"long"}`, while Java's
//! `SchemaNormalization` and fastavro emit `"long"`. Java's
//! `BinaryMessageDecoder` is the reference single-object reader, so our
//! fingerprints follow Java; otherwise Java and fastavro consumers could not
//! find our writer schema.

use std::collections::HashSet;

use serde_json::{Map, Value as Json};

use crate::SchemaError;

const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

/// Parsing Canonical Form of an Avro schema text, as Java's
/// `SchemaNormalization.toParsingForm` computes it.
pub fn parsing_canonical_form(avsc: &str) -> Result<String, SchemaError> {
    // Let apache-avro reject invalid schemas so the walk below can assume a
    // well-formed one.
    apache_avro::Schema::parse_str(avsc).map_err(|e| SchemaError::InvalidSchema(e.to_string()))?;
    let json: Json =
        serde_json::from_str(avsc).map_err(|e| SchemaError::InvalidSchema(e.to_string()))?;
    let mut out = String::with_capacity(avsc.len());
    let mut defined = HashSet::new();
    write_schema(&json, "", &mut defined, &mut out).map_err(SchemaError::InvalidSchema)?;
    Ok(out)
}

/// CRC-64-AVRO fingerprint of a schema text's Parsing Canonical Form.
pub fn parsing_fingerprint(avsc: &str) -> Result<u64, SchemaError> {
    Ok(crc64_avro(parsing_canonical_form(avsc)?.as_bytes()))
}

/// The 64-bit Rabin fingerprint of the Avro specification.
pub(crate) fn crc64_avro(data: &[u8]) -> u64 {
    data.iter().fold(EMPTY, |fp, &b| {
        (fp >> 8) ^ TABLE[((fp ^ u64::from(b)) & 0xff) as usize]
    })
}

const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
const TABLE: [u64; 256] = rabin_table();

const fn rabin_table() -> [u64; 256] {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut fp = i as u64;
        let mut bit = 0;
        while bit < 8 {
            fp = (fp >> 1) ^ (EMPTY & 0u64.wrapping_sub(fp & 1));
            bit += 1;
        }
        table[i] = fp;
        i += 1;
    }
    table
}

/// `namespace` is the enclosing namespace ("" for none); `defined` holds the full
/// names seen so far, because a second occurrence is written as a bare name.
fn write_schema(
    json: &Json,
    namespace: &str,
    defined: &mut HashSet<String>,
    out: &mut String,
) -> Result<(), String> {
    match json {
        Json::String(name) => write_name_ref(name, namespace, defined, out),
        Json::Array(branches) => {
            out.push('[');
            for (i, branch) in branches.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_schema(branch, namespace, defined, out)?;
            }
            out.push(']');
            Ok(())
        }
        Json::Object(object) => write_object(object, namespace, defined, out),
        other => Err(format!("unexpected schema element {other}")),
    }
}

fn write_name_ref(
    name: &str,
    namespace: &str,
    defined: &HashSet<String>,
    out: &mut String,
) -> Result<(), String> {
    if PRIMITIVES.contains(&name) {
        push_quoted(out, name);
        return Ok(());
    }
    let qualified = full_name(name, namespace);
    // A short name resolves in the enclosing namespace first, then the null one.
    let resolved = [qualified.as_str(), name]
        .into_iter()
        .find(|candidate| defined.contains(*candidate))
        .ok_or_else(|| format!("reference to undefined type {name}"))?;
    push_quoted(out, resolved);
    Ok(())
}

fn write_object(
    object: &Map<String, Json>,
    namespace: &str,
    defined: &mut HashSet<String>,
    out: &mut String,
) -> Result<(), String> {
    let kind = match object.get("type") {
        Some(Json::String(kind)) => kind.as_str(),
        // `{"type": {...}}` or `{"type": [...]}` wraps another schema.
        Some(inner) => return write_schema(inner, namespace, defined, out),
        None => return Err("schema object without \"type\"".to_owned()),
    };
    match kind {
        // Logical types and every other attribute of a primitive are stripped.
        _ if PRIMITIVES.contains(&kind) => {
            push_quoted(out, kind);
            Ok(())
        }
        "array" => write_container(object, "array", "items", namespace, defined, out),
        "map" => write_container(object, "map", "values", namespace, defined, out),
        "record" | "error" | "enum" | "fixed" => write_named(object, kind, namespace, defined, out),
        reference => write_name_ref(reference, namespace, defined, out),
    }
}

fn write_container(
    object: &Map<String, Json>,
    kind: &str,
    child: &str,
    namespace: &str,
    defined: &mut HashSet<String>,
    out: &mut String,
) -> Result<(), String> {
    let inner = object
        .get(child)
        .ok_or_else(|| format!("{kind} without \"{child}\""))?;
    out.push_str(&format!("{{\"type\":\"{kind}\",\"{child}\":"));
    write_schema(inner, namespace, defined, out)?;
    out.push('}');
    Ok(())
}

fn write_named(
    object: &Map<String, Json>,
    kind: &str,
    enclosing: &str,
    defined: &mut HashSet<String>,
    out: &mut String,
) -> Result<(), String> {
    let name = str_attr(object, "name")?;
    let namespace = match object.get("namespace") {
        Some(Json::String(ns)) => ns.as_str(),
        _ => enclosing,
    };
    let full = full_name(name, namespace);
    if !defined.insert(full.clone()) {
        push_quoted(out, &full);
        return Ok(());
    }
    // Java writes errors as records: both have the same binary encoding.
    let kind = if kind == "error" { "record" } else { kind };
    out.push_str(&format!("{{\"name\":\"{full}\",\"type\":\"{kind}\""));
    match kind {
        "enum" => {
            let symbols = array_attr(object, "symbols")?;
            out.push_str(",\"symbols\":[");
            for (i, symbol) in symbols.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let symbol = symbol.as_str().ok_or("non-string enum symbol")?;
                push_quoted(out, symbol);
            }
            out.push(']');
        }
        "fixed" => {
            let size = object
                .get("size")
                .and_then(Json::as_u64)
                .ok_or("fixed without integer \"size\"")?;
            out.push_str(&format!(",\"size\":{size}"));
        }
        _ => write_fields(object, namespace_of(&full), defined, out)?,
    }
    out.push('}');
    Ok(())
}

fn write_fields(
    record: &Map<String, Json>,
    namespace: &str,
    defined: &mut HashSet<String>,
    out: &mut String,
) -> Result<(), String> {
    out.push_str(",\"fields\":[");
    for (i, field) in array_attr(record, "fields")?.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let field = field.as_object().ok_or("record field is not an object")?;
        out.push_str("{\"name\":");
        push_quoted(out, str_attr(field, "name")?);
        out.push_str(",\"type\":");
        let schema = field.get("type").ok_or("record field without \"type\"")?;
        write_schema(schema, namespace, defined, out)?;
        out.push('}');
    }
    out.push(']');
    Ok(())
}

fn full_name(name: &str, namespace: &str) -> String {
    if name.contains('.') || namespace.is_empty() {
        name.to_owned()
    } else {
        format!("{namespace}.{name}")
    }
}

fn namespace_of(full_name: &str) -> &str {
    full_name.rsplit_once('.').map_or("", |(ns, _)| ns)
}

fn str_attr<'a>(object: &'a Map<String, Json>, key: &str) -> Result<&'a str, String> {
    object
        .get(key)
        .and_then(Json::as_str)
        .ok_or_else(|| format!("missing string attribute \"{key}\""))
}

fn array_attr<'a>(object: &'a Map<String, Json>, key: &str) -> Result<&'a [Json], String> {
    object
        .get(key)
        .and_then(Json::as_array)
        .map(Vec::as_slice)
        .ok_or_else(|| format!("missing array attribute \"{key}\""))
}

/// Avro names and symbols are `[A-Za-z_][A-Za-z0-9_]*`, so nothing needs
/// escaping ([STRINGS] in the spec asks for unescaped text anyway).
fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    out.push_str(s);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rabin_matches_known_vector() {
        // Vector from apache-avro's `rabin` module docs.
        assert_eq!(
            crc64_avro(b"hello world").to_le_bytes(),
            [0x60, 0x33, 0x5b, 0xa6, 0xd0, 0x41, 0x55, 0x28]
        );
        assert_eq!(crc64_avro(b""), EMPTY);
    }

    #[test]
    fn primitive_with_logical_type_is_its_bare_name() {
        let pcf = parsing_canonical_form(
            r#"{"type":"record","name":"R","fields":[{"name":"t","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#,
        )
        .unwrap();
        assert_eq!(
            pcf,
            r#"{"name":"R","type":"record","fields":[{"name":"t","type":"long"}]}"#
        );
    }

    #[test]
    fn names_are_qualified_and_repeats_are_references() {
        let pcf = parsing_canonical_form(
            r#"{"type":"record","name":"R","namespace":"a.b","doc":"x","fields":[
                {"name":"f","type":{"type":"fixed","name":"F","size":4,"aliases":["G"]}},
                {"name":"g","type":"F","default":"abcd"},
                {"name":"h","type":{"type":"map","values":{"type":"enum","name":"c.E","symbols":["X"]}}},
                {"name":"i","type":["null","c.E"]}]}"#,
        )
        .unwrap();
        assert_eq!(
            pcf,
            concat!(
                r#"{"name":"a.b.R","type":"record","fields":["#,
                r#"{"name":"f","type":{"name":"a.b.F","type":"fixed","size":4}},"#,
                r#"{"name":"g","type":"a.b.F"},"#,
                r#"{"name":"h","type":{"type":"map","values":{"name":"c.E","type":"enum","symbols":["X"]}}},"#,
                r#"{"name":"i","type":["null","c.E"]}]}"#
            )
        );
    }

    #[test]
    fn invalid_schema_is_an_error() {
        assert!(matches!(
            parsing_canonical_form("{\"type\":\"nope\"}"),
            Err(SchemaError::InvalidSchema(_))
        ));
    }
}
