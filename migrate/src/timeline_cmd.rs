//! `northwest timeline`: a namespace's primaries over time, as a node of
//! the deployment reads them from ZooKeeper, with how far that node applied
//! each epoch.

use anyhow::Context;
use northwest_control::api;
use northwest_control::timeline::TimelineView;
use northwest_control::AdminClient;

#[derive(clap::Args, Debug)]
pub struct TimelineArgs {
    /// Any node of the deployment (its base URL).
    #[arg(long, default_value = "http://127.0.0.1:8081", value_parser = northwest_control::client::node_url)]
    pub node: String,
    /// The namespace.
    #[arg(long = "namespace", visible_alias = "ns")]
    pub namespace: String,
    /// Print the node's JSON answer.
    #[arg(long)]
    pub json: bool,
}

pub async fn timeline(a: TimelineArgs, admin: &AdminClient) -> anyhow::Result<()> {
    let v: TimelineView = admin
        .get(&a.node, &api::path::timeline(&a.namespace))
        .await
        .with_context(|| format!("reading the timeline of {} from {}", a.namespace, a.node))?;
    if a.json {
        println!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    print!("{}", text(&v));
    Ok(())
}

/// The timeline as aligned lines, one per epoch.
pub fn text(v: &TimelineView) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let t = &v.timeline;
    let _ = writeln!(out, "timeline of namespace {}", t.namespace);
    if t.epochs.is_empty() {
        let _ = writeln!(
            out,
            "  no switch of primary recorded: its first primary has served it since the \
             journal began"
        );
    }
    for e in &t.epochs {
        let ends = match &e.ends {
            Some(o) => format!("{o:?}"),
            None => "(current)".into(),
        };
        let behind = v
            .behind
            .iter()
            .find(|b| b.epoch == e.epoch)
            .and_then(|b| b.records)
            .map(|r| format!(", {} has {r} of its records to read", v.node))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  epoch {:<3} {:<10} {}  topic {}  offsets {:?} .. {ends}{}{behind}\n            opened by {}",
            e.epoch,
            e.primary,
            e.primary_url,
            e.topic,
            e.begins,
            if e.approximate { " (approximate)" } else { "" },
            e.opened_by,
        );
    }
    out
}
