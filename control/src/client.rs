//! The one client of the nodes' admin API: it presents the admin token,
//! trusts the configured CA, bounds every request, and turns every failure
//! into an [`AdminError`] that says what to do. The orchestrator and the
//! operator commands use it (the node's forwarding to its peers has its own
//! client: it relays data requests, not admin calls).

use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::{self, ErrorBody, ErrorCode, NodeStatus};

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The request never reached the node (no connection): it had no effect.
    #[error("{what}: {detail}; {hint}")]
    Unreachable {
        what: String,
        detail: String,
        hint: &'static str,
    },
    /// The request may have reached the node but no whole answer came back
    /// (timed out, connection closed mid-answer): whether it took effect is
    /// unknown, so a caller checks the node's state before acting on it.
    #[error("{what}: no answer ({detail}); the request may or may not have taken effect: check the node's status before retrying")]
    NoAnswer { what: String, detail: String },
    /// The node wants a (different) admin token.
    #[error("{what}: {status}: {message}; pass the nodes' admin token with --admin-token-file (or NORTHWEST_ADMIN_TOKEN_FILE)")]
    Unauthorized {
        what: String,
        status: u16,
        message: String,
    },
    /// The node answered with an error.
    #[error("{what}: {status} {code}: {message}")]
    Refused {
        what: String,
        status: u16,
        code: ErrorCode,
        message: String,
    },
    /// The node's answer is not what this build expects (another version?).
    #[error("{what}: the answer is not the expected JSON ({detail}); are the node and this command the same version?")]
    Malformed { what: String, detail: String },
    /// A token or CA file that cannot be used.
    #[error("{0}")]
    Setup(String),
}

impl AdminError {
    /// The node's error code, when it answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            AdminError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The node was never reached, so the request had no effect (one that
    /// may have been applied is [`AdminError::NoAnswer`], not this).
    pub fn unreachable(&self) -> bool {
        matches!(self, AdminError::Unreachable { .. })
    }

    /// Whether the request's outcome is unknown.
    pub fn no_answer(&self) -> bool {
        matches!(self, AdminError::NoAnswer { .. })
    }
}

/// A node's base URL as given on a command line: `http(s)://host:port`,
/// any trailing `/` dropped (paths are appended to it, and records compare
/// URLs as strings).
pub fn node_url(s: &str) -> Result<String, String> {
    let u = s.trim().trim_end_matches('/');
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .ok_or_else(|| format!("{s:?} is not a node URL: give it as http://host:port"))?;
    if rest.is_empty() || rest.starts_with(':') || rest.contains(['/', '@', ' ']) {
        return Err(format!(
            "{s:?} is not a node's base URL: give it as http://host:port, without a path"
        ));
    }
    Ok(u.to_string())
}

/// Whether a secrets file can be read by every user on the machine.
pub fn world_readable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
}

/// The CA certificates of a PEM bundle; `what` names the setting in errors.
pub fn read_ca_bundle(path: &Path, what: &str) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

/// Reads a bearer token from `path` (surrounding whitespace trimmed).
pub fn read_token_file(path: &Path, what: &str) -> Result<String, String> {
    let t = std::fs::read_to_string(path)
        .map_err(|e| format!("{what} {}: {e}", path.display()))?
        .trim()
        .to_string();
    if t.is_empty() || reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).is_err() {
        return Err(format!(
            "{what} {}: empty, or not a token that fits an HTTP header",
            path.display()
        ));
    }
    Ok(t)
}

/// The admin API client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AdminClient {
    http: reqwest::Client,
    token: Option<String>,
    roots: Vec<reqwest::Certificate>,
}

impl AdminClient {
    /// A client presenting `token` and trusting `roots` (none: the public
    /// web roots), every request bounded by `timeout`.
    pub fn new(token: Option<String>, roots: Vec<reqwest::Certificate>, timeout: Duration) -> Self {
        let http = build(token.as_deref(), &roots, timeout);
        Self { http, token, roots }
    }

    /// From `--admin-token-file` and `--ca-file`; a world-readable token
    /// file is warned about on stderr.
    pub fn from_files(
        token_file: Option<&Path>,
        ca_file: Option<&Path>,
        timeout: Duration,
    ) -> Result<Self, AdminError> {
        let token = token_file
            .map(|p| {
                let t = read_token_file(p, "--admin-token-file");
                if world_readable(p) {
                    eprintln!(
                        "warning: {} is readable by every user on this machine; chmod o-r it",
                        p.display()
                    );
                }
                t
            })
            .transpose()
            .map_err(AdminError::Setup)?;
        let roots = ca_file
            .map(|p| read_ca_bundle(p, "--ca-file"))
            .transpose()
            .map_err(AdminError::Setup)?
            .unwrap_or_default();
        Ok(Self::new(token, roots, timeout))
    }

    /// The same credentials with another bound per request.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self::new(self.token.clone(), self.roots.clone(), timeout)
    }

    /// The underlying client (for requests outside the admin API).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub async fn get<T: DeserializeOwned>(&self, base: &str, path: &str) -> Result<T, AdminError> {
        let url = format!("{base}{path}");
        send(self.http.get(&url), &format!("GET {url}")).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        base: &str,
        path: &str,
        body: &B,
    ) -> Result<T, AdminError> {
        let url = format!("{base}{path}");
        send(self.http.post(&url).json(body), &format!("POST {url}")).await
    }

    pub async fn delete<B: Serialize, T: DeserializeOwned>(
        &self,
        base: &str,
        path: &str,
        body: &B,
    ) -> Result<T, AdminError> {
        let url = format!("{base}{path}");
        send(self.http.delete(&url).json(body), &format!("DELETE {url}")).await
    }

    pub async fn status(&self, base: &str) -> Result<NodeStatus, AdminError> {
        self.get(base, api::path::STATUS).await
    }

    /// `base`'s outbox marks; from its whole status when it is a node
    /// without the outbox endpoint (404).
    pub async fn outbox(&self, base: &str) -> Result<api::OutboxStatus, AdminError> {
        match self.get(base, api::path::OUTBOX).await {
            Err(AdminError::Refused { status: 404, .. }) => {
                let s = self.status(base).await?;
                Ok(api::OutboxStatus {
                    pending: s.outbox_pending,
                    shipped_below: s.outbox_shipped_below,
                    next: s.outbox_next,
                    relay_error: s.relay_error,
                })
            }
            r => r,
        }
    }
}

fn build(
    token: Option<&str>,
    roots: &[reqwest::Certificate],
    timeout: Duration,
) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        if let Ok(mut v) = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")) {
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
    }
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .default_headers(headers)
        .tls_built_in_root_certs(roots.is_empty());
    for c in roots {
        b = b.add_root_certificate(c.clone());
    }
    b.build().expect("static client config")
}

/// What to do about a request that got no answer.
pub fn unreachable_hint(e: &reqwest::Error) -> &'static str {
    let chain = error_chain(e);
    if chain.contains("UnknownIssuer") {
        "the node's TLS certificate is not trusted: pass the CA that signed it with --ca-file \
         (or NORTHWEST_CA_FILE)"
    } else if chain.contains("NotValidForName") {
        "the node's TLS certificate does not name the host in its URL: use a URL with a name \
         or address the certificate lists"
    } else if chain.contains("certificate") {
        "the node's TLS certificate was refused (expired, or not for a server?): check it"
    } else {
        "is the node running, and is the URL's scheme (http/https) the one it serves?"
    }
}

/// `e` and every cause under it, joined.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

async fn send<T: DeserializeOwned>(
    req: reqwest::RequestBuilder,
    what: &str,
) -> Result<T, AdminError> {
    let r = req.send().await.map_err(|e| {
        if e.is_connect() {
            AdminError::Unreachable {
                what: what.to_string(),
                detail: error_chain(&e),
                hint: unreachable_hint(&e),
            }
        } else {
            AdminError::NoAnswer {
                what: what.to_string(),
                detail: error_chain(&e),
            }
        }
    })?;
    let status = r.status();
    let body = r.bytes().await.map_err(|e| AdminError::NoAnswer {
        what: what.to_string(),
        detail: format!("reading the answer: {}", error_chain(&e)),
    })?;
    if !status.is_success() {
        let err: Option<ErrorBody> = serde_json::from_slice(&body).ok();
        let message = err
            .as_ref()
            .map(|e| e.error.clone())
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(AdminError::Unauthorized {
                what: what.to_string(),
                status: status.as_u16(),
                message,
            });
        }
        return Err(AdminError::Refused {
            what: what.to_string(),
            status: status.as_u16(),
            code: err.map_or(ErrorCode::Unknown, |e| e.code),
            message,
        });
    }
    serde_json::from_slice(&body).map_err(|e| AdminError::Malformed {
        what: what.to_string(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_url_loses_its_trailing_slash_and_needs_a_scheme() {
        assert_eq!(
            node_url("http://127.0.0.1:8081/").unwrap(),
            "http://127.0.0.1:8081"
        );
        assert_eq!(node_url("https://n1:8443").unwrap(), "https://n1:8443");
        assert!(node_url("127.0.0.1:8081").is_err());
        assert!(node_url("http://n1:8081/v1/admin").is_err());
        assert!(node_url("https://").is_err());
        assert!(node_url("http://:8081").is_err());
        assert!(node_url("http://user:pw@n1:8081").is_err());
    }

    #[tokio::test]
    async fn a_node_that_is_not_there_is_unreachable_with_a_hint() {
        // A port nothing listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = AdminClient::new(None, Vec::new(), Duration::from_secs(2));
        let e = c
            .status(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_err();
        assert!(e.unreachable(), "{e}");
        assert!(e.to_string().contains("is the node running"), "{e}");
    }

    #[tokio::test]
    async fn a_node_that_takes_the_request_and_never_answers_is_no_answer() {
        // Accepts and reads, never writes back: the request may have
        // been applied, so this must not read as "never reached".
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(s);
        });
        let c = AdminClient::new(None, Vec::new(), Duration::from_millis(300));
        let e = c.status(&format!("http://{addr}")).await.unwrap_err();
        assert!(e.no_answer() && !e.unreachable(), "{e:?}");
        assert!(e.to_string().contains("may or may not"), "{e}");
        held.abort();
    }

    #[test]
    fn token_files_must_hold_a_header_safe_token() {
        let dir = std::env::temp_dir().join(format!("nw-control-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("token");
        std::fs::write(&f, "  s3cret-token\n").unwrap();
        assert_eq!(read_token_file(&f, "--t").unwrap(), "s3cret-token");
        std::fs::write(&f, "bad\ntoken").unwrap();
        assert!(read_token_file(&f, "--t").unwrap_err().contains("--t"));
        std::fs::write(&f, "").unwrap();
        assert!(read_token_file(&f, "--t").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
