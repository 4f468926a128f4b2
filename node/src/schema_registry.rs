//! The node's Schema Registry client (the Confluent REST API, as Apicurio
//! Registry's `ccompat/v7`, Confluent's and Karapace serve it): from the
//! start it registers Northwest's schemas and learns their ids, so the
//! relays can frame journal records the Confluent way (`journal.framing`);
//! the apply loops ask it for the schema of an id they have not learnt
//! (another registry's numbering of the same schema, say). A writer schema
//! of another version still needs a reader that knows it, as with
//! single-object records: upgrade readers first. Subjects are per record
//! type, not per topic: snapshot
//! topics come and go, and one subject per type keeps the registry bounded
//! and each type's evolution checked in one place.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use northwest_consumer::SchemaLookup;
use northwest_schemas::{
    confluent::learn_schema_id, parsing_fingerprint, JOURNAL_SCHEMA_JSON, SNAPSHOT_SCHEMA_JSON,
};
use serde::Deserialize;

use crate::config::{Framing, NodeConfig};

pub const JOURNAL_SUBJECT: &str = "northwest.JournalRecord";
pub const SNAPSHOT_SUBJECT: &str = "northwest.SnapshotRecord";
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
/// Between registration attempts.
const RETRY: Duration = Duration::from_secs(5);

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
            s => {
                let body = r.text().await.unwrap_or_default();
                // Only the registry's own "schema not found" means no such
                // id; any other 404 is a wrong URL or a proxy's.
                let code = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["error_code"].as_i64());
                if s == reqwest::StatusCode::NOT_FOUND && code == Some(40403) {
                    return Ok(None);
                }
                Err(format!(
                    "GET {url}: HTTP {s}: {body} (is journal.schema_registry_url the registry's API \
                     root, e.g. http://host:8085/apis/ccompat/v7?)"
                ))
            }
        }
    }
}

/// With a registry configured: registers both schemas and learns their
/// ids in the background, asking again every 5 s until the registry
/// answers (a warning each minute says why), so a registry that is down
/// never keeps the node from serving. Returns, when the node frames the
/// Confluent way, the cell its relays read the journal schema's id from:
/// they ship nothing until it is set, and the writes wait in the outbox.
pub fn start(
    cfg: &NodeConfig,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Option<Arc<OnceLock<u32>>> {
    let url = cfg.journal.schema_registry_url.clone()?;
    let journal_id = Arc::new(OnceLock::new());
    let cell = journal_id.clone();
    let framing = cfg.journal.framing;
    tokio::spawn(async move {
        tokio::pin!(stop);
        let client = RegistryClient::new(&url);
        for (subject, text) in [
            (JOURNAL_SUBJECT, JOURNAL_SCHEMA_JSON),
            (SNAPSHOT_SUBJECT, SNAPSHOT_SCHEMA_JSON),
        ] {
            let mut attempt = 0u32;
            let id = loop {
                match client.register(subject, text).await {
                    Ok(id) => break id,
                    Err(e) => {
                        if attempt.is_multiple_of(12) {
                            tracing::warn!(
                                registry = %url, error = %e,
                                "registering the {subject} schema failed; asked again every 5 s{}",
                                if framing == Framing::Confluent {
                                    " (the journal ships nothing until then)"
                                } else {
                                    ""
                                }
                            );
                        }
                        attempt += 1;
                        tokio::select! {
                            _ = &mut stop => return,
                            _ = tokio::time::sleep(RETRY) => {}
                        }
                    }
                }
            };
            let fp = parsing_fingerprint(text).expect("the shipped schemas have a canonical form");
            learn_schema_id(id, fp);
            tracing::info!(registry = %url, subject, id, "schema registered");
            if subject == JOURNAL_SUBJECT {
                let _ = cell.set(id);
            }
        }
    });
    (cfg.journal.framing == Framing::Confluent).then_some(journal_id)
}

/// How the node's apply loops resolve an id they have not learnt.
pub fn lookup(cfg: &NodeConfig) -> Option<SchemaLookup> {
    let client = RegistryClient::new(cfg.journal.schema_registry_url.as_deref()?);
    Some(SchemaLookup::new(Arc::new(move |id| {
        let c = client.clone();
        Box::pin(async move { c.schema(id).await })
    })))
}
