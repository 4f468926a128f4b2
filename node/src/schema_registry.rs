//! The node's Schema Registry client (the Confluent REST API, as Apicurio
//! Registry's `ccompat/v7`, Confluent's and Karapace serve it): at start
//! it registers Northwest's schemas and learns their ids, so the relays can
//! frame journal records the Confluent way (`journal.framing`); the apply
//! loops ask it for the schema of an id they have not learnt (a writer of
//! another version). Subjects are per record type, not per topic: snapshot
//! topics come and go, and one subject per type keeps the registry bounded
//! and each type's evolution checked in one place.

use std::sync::Arc;
use std::time::{Duration, Instant};

use northwest_consumer::SchemaLookup;
use northwest_schemas::{
    confluent::learn_schema_id, parsing_fingerprint, JOURNAL_SCHEMA_JSON, SNAPSHOT_SCHEMA_JSON,
};
use serde::Deserialize;

use crate::config::{Framing, NodeConfig};

pub const JOURNAL_SUBJECT: &str = "northwest.JournalRecord";
pub const SNAPSHOT_SUBJECT: &str = "northwest.SnapshotRecord";
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
/// How long a start waits for the registry before refusing.
const START_WAIT: Duration = Duration::from_secs(30);

/// An `http(s)://host[:port][/path]` base URL.
pub fn check_url(url: &str) -> Result<(), String> {
    let u = reqwest::Url::parse(url)
        .map_err(|e| format!("{url:?} is not a URL ({e}): want http(s)://host[:port][/path]"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(format!("{url:?}: want http(s)://host[:port][/path]"));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(format!("{url:?}: no query or fragment"));
    }
    Ok(())
}

#[derive(Clone)]
pub struct RegistryClient {
    base: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct Id {
    id: u32,
}

#[derive(Deserialize)]
struct SchemaText {
    schema: String,
}

impl RegistryClient {
    pub fn new(url: &str) -> Self {
        Self {
            base: url.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client"),
        }
    }

    /// Registers `schema` under `subject` (an identical one already there
    /// keeps its id) and returns its id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, String> {
        let url = format!("{}/subjects/{subject}/versions", self.base);
        let r = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .json(&serde_json::json!({ "schema": schema }))
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = r.status();
        if !status.is_success() {
            let body = r.text().await.unwrap_or_default();
            return Err(format!("POST {url}: HTTP {status}: {body}"));
        }
        let id: Id = r
            .json()
            .await
            .map_err(|e| format!("POST {url}: not a registry answer: {e}"))?;
        Ok(id.id)
    }

    /// The schema text the registry holds for `id`; `None`: it has none.
    pub async fn schema(&self, id: u32) -> Result<Option<String>, String> {
        let url = format!("{}/schemas/ids/{id}", self.base);
        let r = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        match r.status() {
            s if s.is_success() => {
                let t: SchemaText = r
                    .json()
                    .await
                    .map_err(|e| format!("GET {url}: not a registry answer: {e}"))?;
                Ok(Some(t.schema))
            }
            reqwest::StatusCode::NOT_FOUND => Ok(None),
            s => Err(format!(
                "GET {url}: HTTP {s}: {}",
                r.text().await.unwrap_or_default()
            )),
        }
    }
}

/// With a registry configured: registers both schemas and learns their
/// ids (retrying for [`START_WAIT`], then refusing to start with the
/// reason). Returns the journal schema's id when the node frames the
/// Confluent way.
pub async fn prepare(cfg: &NodeConfig) -> anyhow::Result<Option<u32>> {
    let Some(url) = &cfg.journal.schema_registry_url else {
        return Ok(None);
    };
    let client = RegistryClient::new(url);
    let deadline = Instant::now() + START_WAIT;
    let mut ids = Vec::new();
    for (subject, text) in [
        (JOURNAL_SUBJECT, JOURNAL_SCHEMA_JSON),
        (SNAPSHOT_SUBJECT, SNAPSHOT_SCHEMA_JSON),
    ] {
        let id = loop {
            match client.register(subject, text).await {
                Ok(id) => break id,
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(error = %e, "schema registry not ready; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => anyhow::bail!(
                    "registering the {subject} schema in journal.schema_registry_url failed for {}s: {e}. \
                     Start the registry (or fix the URL: a Confluent-compatible API, e.g. Apicurio's \
                     http://host:port/apis/ccompat/v7), or remove schema_registry_url and framing",
                    START_WAIT.as_secs()
                ),
            }
        };
        let fp = parsing_fingerprint(text).expect("the shipped schemas have a canonical form");
        learn_schema_id(id, fp);
        ids.push(id);
    }
    tracing::info!(
        registry = %url, journal_id = ids[0], snapshot_id = ids[1],
        framing = ?cfg.journal.framing, "schemas registered"
    );
    Ok((cfg.journal.framing == Framing::Confluent).then_some(ids[0]))
}

/// How the node's apply loops resolve an id they have not learnt.
pub fn lookup(cfg: &NodeConfig) -> Option<SchemaLookup> {
    let client = RegistryClient::new(cfg.journal.schema_registry_url.as_deref()?);
    Some(SchemaLookup::new(Arc::new(move |id| {
        let c = client.clone();
        Box::pin(async move { c.schema(id).await })
    })))
}
