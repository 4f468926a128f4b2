//! The operator files in `deploy/` are checked by the tools that will read
//! them: Prometheus's promtool (Debian package `prometheus`, installed by
//! `deploy/stack.sh install`) for the alert rules, their unit tests and the
//! scrape config. (Every metric the Grafana dashboard graphs is checked
//! against a live node in `e2e_migrate`.)

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(deploy().join("prometheus"))
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool: {e}; run `deploy/stack.sh install` (apt package prometheus)")
        });
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn alert_rules_are_valid_and_their_unit_tests_pass() {
    let checked = promtool(&["check", "rules", "alerts.yml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", "alerts_test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn prometheus_scrape_config_is_valid() {
    // Syntax only: the token file it names exists on a Prometheus host, not here.
    let checked = promtool(&["check", "config", "--syntax-only", "prometheus.yml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
}

#[test]
fn grafana_dashboard_is_json_with_panels() {
    let text = std::fs::read_to_string(deploy().join("grafana/northwest.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    for p in panels {
        if p["type"] == "row" {
            continue;
        }
        assert!(p["title"].is_string(), "panel without title: {p}");
        assert!(
            p["targets"].as_array().is_some_and(|t| !t.is_empty()),
            "panel {} has no query",
            p["title"]
        );
    }
}

/// Every `northwest_*` series the Grafana dashboard and the alert rules
/// query is one the node defines (a renamed metric leaves no panel or
/// alert silently empty).
#[test]
fn dashboards_and_alerts_query_series_the_node_exports() {
    let defined =
        std::fs::read_to_string(deploy().join("../node/src/telemetry/series.rs")).unwrap();
    let names: std::collections::BTreeSet<&str> = defined
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .collect();
    assert!(
        names.contains("http_requests_total"),
        "no metric names read"
    );
    for file in ["grafana/northwest.json", "prometheus/alerts.yml"] {
        let text = std::fs::read_to_string(deploy().join(file)).unwrap();
        let mut used = 0;
        for (at, _) in text.match_indices("northwest_") {
            let name: String = text[at + "northwest_".len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if name.is_empty() {
                continue;
            }
            used += 1;
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| names.contains(b)))
                .unwrap_or(&name);
            assert!(
                names.contains(base),
                "{file} queries northwest_{name}, which the node does not define"
            );
        }
        assert!(used > 10, "{file}: only {used} series found");
    }
}
