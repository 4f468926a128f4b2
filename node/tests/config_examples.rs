//! The node's config as operators meet it: the example configs parse and
//! validate, bad values are explained, consumer groups are named after the
//! deployment, and every TOML example in README and docs parses as what it
//! shows (a node config, or a data tokens file the node loads).

use northwest_node::config::NodeConfig;

#[test]
fn example_configs_parse_and_validate() {
    for f in ["../deploy/n1.toml", "../deploy/n2.toml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
        NodeConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn consumer_groups_are_named_after_the_deployment_and_the_node() {
    let mut a: NodeConfig =
        toml::from_str("name = \"n2\"\n[coordination]\nroot = \"/northwest/prod-eu\"\n").unwrap();
    assert_eq!(a.consumer_group("apply"), "northwest-prod-eu-apply-n2");
    let mut b = a.clone();
    b.coordination.root = "/northwest/staging".into();
    assert_ne!(a.consumer_group("apply"), b.consumer_group("apply"));
    a.journal.consumer_group_prefix = "shop".into();
    assert_eq!(a.consumer_group("load"), "shop-load-n2");
    b.coordination.root = "/".into();
    assert_eq!(b.consumer_group("reverse"), "northwest-reverse-n2");
}

#[test]
fn unknown_field_is_an_error_naming_it() {
    let err = toml::from_str::<NodeConfig>("nmae = \"n1\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("nmae"), "{err}");
}

#[test]
fn bad_values_are_explained() {
    let mut c = NodeConfig::default();
    c.coordination.root = "northwest".into();
    assert!(c.validate().unwrap_err().contains("coordination.root"));
    let mut c = NodeConfig::default();
    c.journal.enabled = true;
    c.journal.apply = true;
    assert!(c.validate().unwrap_err().contains("source or a target"));
    let mut c = NodeConfig::default();
    c.http.max_value_bytes = 0;
    assert!(c.validate().is_err());
    // Journal retention longer than delete markers live is refused.
    let mut c = NodeConfig::default();
    c.journal.enabled = true;
    assert!(c.validate().is_ok());
    c.journal.retention_ms = -1;
    assert!(c.validate().unwrap_err().contains("marker_retention_hours"));
    c.journal.retention_ms = 7 * 24 * 3_600_000;
    c.store.marker_retention_hours = 24.0;
    assert!(c.validate().unwrap_err().contains("resurrect"));
    let mut c = NodeConfig::default();
    c.store.rocksdb_memory_mb = 4;
    assert!(c
        .validate()
        .unwrap_err()
        .contains("store.rocksdb_memory_mb"));
}

/// Data tokens without an admin token would leave fence, promote and
/// offsets open to any local caller while clients need tokens: refused,
/// unless `http.admin_open` says it is meant.
#[test]
fn data_tokens_without_an_admin_token_need_admin_open() {
    let mut c = NodeConfig::default();
    c.http.data_tokens_file = Some("tokens.toml".into());
    let e = c.validate().unwrap_err();
    assert!(
        e.contains("http.admin_token_file") && e.contains("http.admin_open = true"),
        "{e}"
    );
    c.http.admin_open = true;
    assert!(c.validate().is_ok());
    c.http.admin_open = false;
    c.http.admin_token_file = Some("admin.token".into());
    assert!(c.validate().is_ok());
}

/// The Confluent framing names schemas by registry id: refused without a
/// registry, and a registry URL must be one.
#[test]
fn confluent_framing_needs_a_registry_url() {
    let mut c = NodeConfig::default();
    c.journal.framing = northwest_node::config::Framing::Confluent;
    let e = c.validate().unwrap_err();
    assert!(e.contains("journal.schema_registry_url"), "{e}");
    c.journal.schema_registry_url = Some("127.0.0.1:8085".into());
    let e = c.validate().unwrap_err();
    assert!(
        e.contains("journal.schema_registry_url") && e.contains("http"),
        "{e}"
    );
    c.journal.schema_registry_url = Some("http://127.0.0.1:8085/apis/ccompat/v7/".into());
    assert!(c.validate().is_ok());
    let parsed: NodeConfig = toml::from_str(
        "[journal]\nframing = \"confluent\"\nschema_registry_url = \"http://r:8081\"\n",
    )
    .unwrap();
    assert_eq!(
        parsed.journal.framing,
        northwest_node::config::Framing::Confluent
    );
    assert!(toml::from_str::<NodeConfig>("[journal]\nframing = \"avro\"\n").is_err());
}

/// Every TOML example in README and docs parses as what it shows: a data
/// tokens file (loaded as the node loads it) or (part of) a node's config.
#[test]
fn every_toml_example_in_the_docs_parses() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![
        root.join("README.md"),
        root.join("deploy/production/README.md"),
    ];
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        files.push(e.unwrap().path());
    }
    let dir = tempfile::tempdir().unwrap();
    let mut seen = 0;
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "md"))
    {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for block in text.split("```toml\n").skip(1) {
            let block = block.split("```").next().unwrap_or_default();
            seen += 1;
            let parsed = if block.contains("[[token]]") {
                let path = dir.path().join(format!("tokens-{seen}.toml"));
                std::fs::write(&path, block).unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
                let http = northwest_node::config::HttpConfig {
                    data_tokens_file: Some(path),
                    ..Default::default()
                };
                northwest_node::auth::Auth::load(&http).map(|_| ())
            } else {
                toml::from_str::<NodeConfig>(block)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            };
            if let Err(e) = parsed {
                panic!(
                    "{}: a TOML example does not parse: {e}\n{block}",
                    f.display()
                );
            }
        }
    }
    assert!(seen >= 3, "only {seen} TOML examples found");
}
