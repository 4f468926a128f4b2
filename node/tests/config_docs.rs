//! The example configs `deploy/n1.toml` and `deploy/n2.toml` are the node's
//! config reference: each names every table and key the node accepts, set
//! or as a commented-out `# key = default` line. The list of fields comes
//! from the config's own `Deserialize` impl (its unknown-field error names
//! every field it accepts), so a new field fails this test until both files
//! mention it, and a field renamed or removed fails it while a file still
//! names the old one. No running stack needed.

use std::collections::BTreeSet;
use std::path::Path;

use northwest_node::config::NodeConfig;

/// What probing one path of the config finds.
enum Probe {
    /// A struct table: the fields it accepts.
    Struct(Vec<String>),
    /// A table of free-form keys (`[kafka]`).
    Map,
    /// A plain value.
    Leaf,
}

/// Writes an unknown key into the table at `path` (dotted; empty: the
/// top level) and reads what the config says about it.
fn probe(path: &str) -> Probe {
    let doc = if path.is_empty() {
        "zz_not_a_field = \"x\"\n".to_string()
    } else {
        format!("[{path}]\nzz_not_a_field = \"x\"\n")
    };
    let err = match toml::from_str::<NodeConfig>(&doc) {
        Ok(_) => return Probe::Map,
        Err(e) => e.message().to_string(),
    };
    // serde's unknown-field message: "unknown field `zz_not_a_field`,
    // expected one of `a`, `b`" (or "expected `a`", "`a` or `b`").
    let Some(expected) = err
        .strip_prefix("unknown field `zz_not_a_field`, ")
        .and_then(|rest| rest.strip_prefix("expected "))
    else {
        return Probe::Leaf;
    };
    let fields: Vec<String> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    assert!(
        !fields.is_empty(),
        "cannot read the fields of [{path}] from: {err}"
    );
    Probe::Struct(fields)
}

/// The config's schema: tables (dotted paths, "" = top level) and, per
/// struct table, its keys (`table`, `key`), leaves and sub-tables alike.
#[derive(Default)]
struct Schema {
    tables: BTreeSet<String>,
    /// Tables whose keys are free-form (no key is required or refused).
    maps: BTreeSet<String>,
    keys: BTreeSet<(String, String)>,
}

fn schema() -> Schema {
    let mut s = Schema::default();
    let mut todo = vec![String::new()];
    while let Some(table) = todo.pop() {
        match probe(&table) {
            Probe::Struct(fields) => {
                for f in fields {
                    let path = if table.is_empty() {
                        f.clone()
                    } else {
                        format!("{table}.{f}")
                    };
                    s.keys.insert((table.clone(), f));
                    todo.push(path);
                }
                s.tables.insert(table);
            }
            Probe::Map => {
                s.tables.insert(table.clone());
                s.maps.insert(table);
            }
            Probe::Leaf => {}
        }
    }
    s
}

/// Tables and keys a config file names, set or commented out: `[table]`
/// headers and `key =` lines, each under the header above it.
fn mentioned(text: &str) -> (BTreeSet<String>, BTreeSet<(String, String)>) {
    let (mut tables, mut keys) = (BTreeSet::new(), BTreeSet::new());
    let mut table = String::new();
    for line in text.lines() {
        let body = line.trim_start().trim_start_matches('#').trim_start();
        if let Some(rest) = body.strip_prefix('[').filter(|r| !r.starts_with('[')) {
            if let Some((name, _)) = rest.split_once(']') {
                let name = name.trim();
                if !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                {
                    table = name.to_string();
                    tables.insert(table.clone());
                }
            }
            continue;
        }
        let Some((key, _)) = body.split_once('=') else {
            continue;
        };
        let key = key.trim();
        let bare = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let quoted = key.len() > 2 && key.starts_with('"') && key.ends_with('"');
        if bare || quoted {
            keys.insert((table.clone(), key.trim_matches('"').to_string()));
        }
    }
    (tables, keys)
}

/// What `file` lacks of the schema, and what it names that the config does
/// not accept.
fn problems(s: &Schema, file: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (tables, keys) = mentioned(&text);
    let show = |t: &str, k: &str| {
        if t.is_empty() {
            k.to_string()
        } else {
            format!("{t}.{k}")
        }
    };
    let mut out = Vec::new();
    for t in s.tables.iter().filter(|t| !t.is_empty()) {
        if !tables.contains(t) {
            out.push(format!("{file}: table [{t}] is not mentioned"));
        }
    }
    for (t, k) in &s.keys {
        // A sub-table is mentioned by its header.
        let sub = show(t, k);
        if !keys.contains(&(t.clone(), k.clone())) && !s.tables.contains(&sub) {
            out.push(format!("{file}: {sub} is not mentioned (set it or add `# {k} = <default>` under its table)"));
        }
    }
    for t in &tables {
        if !s.tables.contains(t) {
            out.push(format!("{file}: [{t}] is not a table of the config"));
        }
    }
    for (t, k) in &keys {
        if s.tables.contains(t) && !s.maps.contains(t) && !s.keys.contains(&(t.clone(), k.clone()))
        {
            out.push(format!(
                "{file}: {} is not a field of the config",
                show(t, k)
            ));
        }
    }
    out
}

#[test]
fn example_configs_name_every_config_field() {
    let s = schema();
    // Guards against a probe that silently finds nothing (e.g. serde
    // rewording its error): the config has over 40 keys in 5 tables.
    assert!(
        s.keys.len() > 40,
        "only {} config keys found: {:?}",
        s.keys.len(),
        s.keys
    );
    for t in ["", "http", "store", "coordination", "journal", "kafka"] {
        assert!(
            s.tables.contains(t),
            "table [{t}] not found: {:?}",
            s.tables
        );
    }
    // Only [kafka] passes its keys on unchecked (to librdkafka): any other
    // free-form table would let a misspelt key through without a word.
    assert_eq!(
        s.maps,
        BTreeSet::from(["kafka".to_string()]),
        "tables taking free-form keys"
    );
    let mut all = problems(&s, "n1.toml");
    all.extend(problems(&s, "n2.toml"));
    assert!(
        all.is_empty(),
        "the example configs are out of date:\n{}",
        all.join("\n")
    );
}

#[test]
fn a_config_missing_a_field_is_caught() {
    let s = schema();
    let (tables, keys) =
        mentioned("[http]\n# listen = \"127.0.0.1:8081\"\n[kafka] # x\n\"linger.ms\" = \"5\"\n");
    assert!(tables.contains("http") && tables.contains("kafka"));
    assert!(keys.contains(&("http".into(), "listen".into())));
    assert!(keys.contains(&("kafka".into(), "linger.ms".into())));
    assert!(!keys.contains(&("http".into(), "max_value_bytes".into())));
    assert!(s.keys.contains(&("http".into(), "max_value_bytes".into())));
}
