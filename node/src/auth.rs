//! Who may call what. Three planes:
//! - probes (`/healthz`, `/readyz`) and the dashboard page itself (static
//!   HTML; the data it shows comes from admin endpoints) are open;
//! - the data API of a namespace (`/v1/ns/{ns}/e|txn|scan`) needs a data
//!   token scoped to that namespace, or the admin token, when data tokens
//!   are configured (`http.data_tokens_file`); otherwise it is open;
//! - everything else is admin (status, history, metrics, offsets, replay,
//!   fence, proxy, promote, checkpoint, snapshot load, and the digest, which
//!   reads a whole namespace) and needs the admin token when one is
//!   configured (`http.admin_token_file`, required off loopback).
//!
//! Tokens are bearer tokens compared in constant time; they never appear in
//! logs, status, metrics or error bodies (a data token is named by its
//! `name`). A proxied request is forwarded with the client's own
//! `Authorization` header, so n2 applies its own rules to the same caller.

mod bearer;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use northwest_control::{ErrorBody, ErrorCode};
use serde::Deserialize;

use crate::api::data_namespace;
use crate::config::HttpConfig;
use crate::secrets::{read_secret_file, Secret};

#[derive(Debug)]
struct DataToken {
    name: String,
    token: Secret,
    /// `*` = every namespace.
    namespaces: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Auth {
    admin: Option<Secret>,
    data: Option<Vec<DataToken>>,
    /// The listener is on loopback without TLS: only loopback host names
    /// (and `http.allowed_hosts`) are served; a DNS-rebinding page names
    /// its own host. With TLS the page's name fails the certificate check.
    check_host: bool,
    allowed_hosts: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    token: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    token: String,
    namespaces: Vec<String>,
}

const MIN_TOKEN_BYTES: usize = 16;

fn check_token(t: &str, what: &str) -> Result<(), String> {
    if t.len() < MIN_TOKEN_BYTES || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{what}: a token must be at least {MIN_TOKEN_BYTES} printable characters without \
             spaces (e.g. `openssl rand -hex 32`)"
        ));
    }
    Ok(())
}

impl Auth {
    /// Loads the configured token files; an unreadable or malformed one
    /// refuses the start.
    pub fn load(cfg: &HttpConfig) -> Result<Self, String> {
        let admin = match &cfg.admin_token_file {
            Some(p) => {
                let t = read_secret_file(p, "http.admin_token_file")?
                    .trim()
                    .to_string();
                check_token(&t, &format!("http.admin_token_file {}", p.display()))?;
                Some(Secret::new(t))
            }
            None => None,
        };
        let data = match &cfg.data_tokens_file {
            Some(p) => {
                let what = format!("http.data_tokens_file {}", p.display());
                let text = read_secret_file(p, "http.data_tokens_file")?;
                // The parse error could quote a token: name the file only.
                let parsed: TokensFile = toml::from_str(&text).map_err(|e| {
                    format!(
                        "{what}: not a list of [[token]] tables with name, token and \
                         namespaces (line {})",
                        e.span().map_or(0, |s| text[..s.start].lines().count())
                    )
                })?;
                let mut out: Vec<DataToken> = Vec::new();
                for e in parsed.token {
                    check_token(&e.token, &format!("{what}, token {:?}", e.name))?;
                    if out.iter().any(|t| t.name == e.name) {
                        return Err(format!("{what}: two tokens are named {:?}", e.name));
                    }
                    // One value, one identity: a data token equal to the
                    // admin token (or to another) would be ambiguous.
                    let reused = out.iter().any(|t| t.token.expose() == e.token)
                        || admin.as_ref().is_some_and(|a| a.expose() == e.token);
                    if reused {
                        return Err(format!(
                            "{what}: token {:?} has the same value as another token; each needs its own",
                            e.name
                        ));
                    }
                    for ns in &e.namespaces {
                        if ns != "*" {
                            northwest_store::Namespace::new(ns).map_err(|err| {
                                format!("{what}, token {:?}: namespace {ns:?}: {err}", e.name)
                            })?;
                        }
                    }
                    out.push(DataToken {
                        name: e.name,
                        token: Secret::new(e.token),
                        namespaces: e.namespaces,
                    });
                }
                Some(out)
            }
            None => None,
        };
        Ok(Self {
            admin,
            data,
            check_host: cfg.listen.ip().is_loopback() && cfg.tls_cert_file.is_none(),
            allowed_hosts: cfg
                .allowed_hosts
                .iter()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
        })
    }

    /// Refuses what a web page in a browser on an operator's machine could
    /// send this node uninvited, whatever the tokens: a cross-site request
    /// (a form POST needs no CORS preflight, and a node without tokens
    /// would take it), and, on a loopback listener, a request naming
    /// another host (DNS rebinding). Clients that are not browsers send no
    /// `Origin` and name the address they connect to.
    fn browser_guard(
        &self,
        method: &axum::http::Method,
        headers: &axum::http::HeaderMap,
    ) -> Result<(), Denied> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_ascii_lowercase);
        if let (true, Some(h)) = (self.check_host, &host) {
            let name = host_name(h).trim_end_matches('.');
            if !is_loopback_name(name) && !self.allowed_hosts.iter().any(|a| a == name) {
                return Err(Denied::Forbidden(
                    "this node listens on loopback: address it as 127.0.0.1 or localhost (a \
                     proxy on this host that keeps the client's Host: add it to \
                     http.allowed_hosts)"
                        .into(),
                ));
            }
        }
        // Browsers that send no Origin on a form POST still say where it
        // came from.
        let unsafe_method = !matches!(*method, axum::http::Method::GET | axum::http::Method::HEAD);
        let cross_site = headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
        if unsafe_method && cross_site {
            return Err(Denied::Forbidden(
                "cross-site request refused: a page from another site may not call this node"
                    .into(),
            ));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let same = origin
                .to_str()
                .ok()
                .and_then(|o| o.split_once("://"))
                .is_some_and(|(_, authority)| {
                    host.as_deref() == Some(authority.to_ascii_lowercase().as_str())
                });
            if !same {
                return Err(Denied::Forbidden(
                    "cross-origin request refused: a page from another site may not call this node"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    /// The admin token this node presents to its peers (n2's promote).
    pub fn admin_token(&self) -> Option<&Secret> {
        self.admin.as_ref()
    }

    /// Decides one request: `Ok` or the JSON error response.
    fn check(&self, path: &str, authorization: Option<&[u8]>) -> Result<(), Denied> {
        let plane = plane(path);
        let required = match plane {
            Plane::Open => return Ok(()),
            Plane::Data(_) => self.data.is_some(),
            Plane::Admin => self.admin.is_some(),
        };
        if !required {
            return Ok(());
        }
        let Some(token) = authorization.and_then(bearer::token) else {
            return Err(Denied::Unauthorized(
                "this node requires a bearer token: send `Authorization: Bearer <token>`",
            ));
        };
        if self.admin.as_ref().is_some_and(|a| a.matches(token)) {
            return Ok(());
        }
        let data = self.data.iter().flatten().find(|t| t.token.matches(token));
        match (plane, data) {
            (_, None) => Err(Denied::Unauthorized("unknown token")),
            (Plane::Data(ns), Some(t)) if t.namespaces.iter().any(|n| n == "*" || n == ns) => {
                Ok(())
            }
            (Plane::Data(ns), Some(t)) => Err(Denied::Forbidden(format!(
                "token {:?} is not allowed namespace {ns}",
                t.name
            ))),
            (_, Some(t)) => Err(Denied::Forbidden(format!(
                "token {:?} is a data token; this endpoint needs the admin token",
                t.name
            ))),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Plane<'a> {
    Open,
    Data(&'a str),
    Admin,
}

fn plane(path: &str) -> Plane<'_> {
    if matches!(path, "/" | "/healthz" | "/readyz") {
        return Plane::Open;
    }
    // The digest reads a whole namespace: admin, like the rest of the
    // operator surface.
    match data_namespace(path) {
        Some(ns) if !is_digest(path) => Plane::Data(ns),
        _ => Plane::Admin,
    }
}

/// The name or address of a Host header, without its port.
fn host_name(host: &str) -> &str {
    match host.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or(v6, |(a, _)| a),
        None => host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        }),
    }
}

/// `localhost`, `127.x.y.z` or `::1`.
fn is_loopback_name(name: &str) -> bool {
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_digest(path: &str) -> bool {
    path.strip_prefix("/v1/ns/")
        .and_then(|r| r.split_once('/'))
        .is_some_and(|(_, route)| route == "digest")
}

/// Why a request is refused: 401 (no or unknown token) or 403 (a token
/// without the right to this endpoint or namespace).
#[derive(Debug)]
enum Denied {
    Unauthorized(&'static str),
    Forbidden(String),
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Denied::Unauthorized(m) => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(ErrorBody {
                    code: ErrorCode::Unauthorized,
                    error: m.to_string(),
                }),
            )
                .into_response(),
            Denied::Forbidden(m) => (
                StatusCode::FORBIDDEN,
                axum::Json(ErrorBody {
                    code: ErrorCode::Forbidden,
                    error: m,
                }),
            )
                .into_response(),
        }
    }
}

/// The middleware: runs before the cutover gate, so a proxied namespace's
/// caller is checked here as well as on the new primary.
pub async fn layer(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    let authz = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if let Err(denied) = auth.browser_guard(req.method(), req.headers()) {
        return denied.into_response();
    }
    match auth.check(req.uri().path(), authz) {
        Ok(()) => next.run(req).await,
        Err(denied) => denied.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth {
            admin: Some(Secret::new("admin-token-0123456789")),
            data: Some(vec![DataToken {
                name: "app-client".into(),
                token: Secret::new("data-token-app-0123456789"),
                namespaces: vec!["app".into()],
            }]),
            check_host: true,
            allowed_hosts: vec!["proxy.internal".into()],
        }
    }

    fn guard(a: &Auth, host: Option<&str>, origin: Option<&str>) -> bool {
        let mut h = axum::http::HeaderMap::new();
        if let Some(v) = host {
            h.insert(header::HOST, v.parse().unwrap());
        }
        if let Some(v) = origin {
            h.insert(header::ORIGIN, v.parse().unwrap());
        }
        a.browser_guard(&axum::http::Method::POST, &h).is_ok()
    }

    #[test]
    fn browsers_cannot_reach_a_node_from_another_site() {
        let a = auth();
        for host in [
            "127.0.0.1:8081",
            "localhost:8081",
            "LOCALHOST",
            "[::1]:8081",
            "127.9.9.9",
        ] {
            assert!(guard(&a, Some(host), None), "{host}");
        }
        // DNS rebinding: the page's own name, resolved to 127.0.0.1.
        for host in [
            "evil.example:8081",
            "evil.example",
            "10.0.0.5:8081",
            "[::2]:1",
        ] {
            assert!(!guard(&a, Some(host), None), "{host}");
        }
        assert!(guard(&a, None, None));
        // The dashboard's own calls carry its origin; a foreign page's do not.
        let h = Some("127.0.0.1:8081");
        assert!(guard(&a, h, Some("http://127.0.0.1:8081")));
        assert!(guard(&a, h, Some("https://127.0.0.1:8081")));
        for o in [
            "http://evil.example",
            "http://127.0.0.1:9999",
            "null",
            "http://localhost:8081",
        ] {
            assert!(!guard(&a, h, Some(o)), "{o}");
        }
        // A form POST from another site without an Origin header.
        let mut h = axum::http::HeaderMap::new();
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(a.browser_guard(&axum::http::Method::POST, &h).is_err());
        assert!(a.browser_guard(&axum::http::Method::GET, &h).is_ok());
        h.insert("sec-fetch-site", "same-origin".parse().unwrap());
        assert!(a.browser_guard(&axum::http::Method::POST, &h).is_ok());
        // Off loopback, or with TLS, any host name is served (behind a load
        // balancer, say; with TLS a rebound name fails the certificate).
        let open = Auth {
            check_host: false,
            ..auth()
        };
        assert!(guard(&open, Some("northwest.internal:8081"), None));
        assert!(!guard(
            &open,
            Some("northwest.internal:8081"),
            Some("http://evil.example")
        ));
    }

    fn status(a: &Auth, path: &str, token: Option<&str>) -> u16 {
        let h = token.map(|t| format!("Bearer {t}"));
        match a.check(path, h.as_deref().map(str::as_bytes)) {
            Ok(()) => 200,
            Err(Denied::Unauthorized(_)) => 401,
            Err(Denied::Forbidden(_)) => 403,
        }
    }

    #[test]
    fn planes_and_scopes() {
        let a = auth();
        let (admin, data) = (
            Some("admin-token-0123456789"),
            Some("data-token-app-0123456789"),
        );
        for p in [
            "/v1/admin/status",
            "/metrics",
            "/v1/admin/fence",
            "/v1/ns/app/digest",
        ] {
            assert_eq!(status(&a, p, None), 401, "{p}");
            assert_eq!(status(&a, p, data), 403, "{p}");
            assert_eq!(status(&a, p, admin), 200, "{p}");
            assert_eq!(status(&a, p, Some("admin-token-0123456780")), 401, "{p}");
        }
        assert_eq!(status(&a, "/v1/ns/app/e/Doc:1", None), 401);
        assert_eq!(status(&a, "/v1/ns/app/e/Doc:1", data), 200);
        assert_eq!(status(&a, "/v1/ns/app/txn", admin), 200);
        assert_eq!(status(&a, "/v1/ns/other/e/Doc:1", data), 403);
        assert_eq!(status(&a, "/healthz", None), 200);
        assert_eq!(status(&a, "/readyz", None), 200);
        assert_eq!(status(&a, "/", None), 200);
        // Unknown paths are admin: nothing new is open by default.
        assert_eq!(status(&a, "/v1/whatever", data), 403);
    }

    #[test]
    fn nothing_configured_is_open() {
        let a = Auth::default();
        assert_eq!(status(&a, "/v1/admin/fence", None), 200);
        assert_eq!(status(&a, "/v1/ns/app/e/x", None), 200);
    }

    #[test]
    fn secrets_do_not_print() {
        let a = auth();
        let shown = format!("{a:?}");
        assert!(!shown.contains("0123456789"), "{shown}");
    }
}
