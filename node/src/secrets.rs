//! Secrets and the files they come from: a bearer token that never prints,
//! and the one warning about a secrets file (tokens, credentials, TLS keys)
//! that other users on the machine may read.

use std::path::Path;

/// A bearer token; its Debug output never shows it.
#[derive(Clone)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Secret {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time in the token's content (the length may show).
    pub(crate) fn matches(&self, presented: &[u8]) -> bool {
        let mine = self.0.as_bytes();
        mine.len() == presented.len()
            && mine
                .iter()
                .zip(presented)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// Reads a secret file, warning when other users may read it.
pub(crate) fn read_secret_file(path: &Path, what: &str) -> Result<String, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    warn_if_world_readable(path, what);
    Ok(text)
}

/// Secrets (tokens, credentials, TLS keys) should be readable by their
/// owner only.
pub(crate) fn warn_if_world_readable(path: &Path, what: &str) {
    if northwest_control::client::world_readable(path) {
        tracing::warn!(path = %path.display(), "{what} is readable by every user on this machine; chmod o-r it");
    }
}
