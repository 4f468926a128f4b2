//! The JSON body of a multi-op transaction (`POST /v1/ns/{ns}/txn`) as store
//! operations. It lives here rather than in the node so that its fuzz target
//! builds without Kafka or HTTP (see `fuzz/`).

use base64::Engine as _;
use serde::Deserialize;
use thiserror::Error;

use crate::key::{shown, KeyPath};
use crate::store::Op;
use crate::types::Version;
use crate::StoreError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TxnRequest {
    ops: Vec<TxnOp>,
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum TxnOp {
    Put {
        key: String,
        value_b64: String,
        if_version: Option<u64>,
    },
    Delete {
        key: String,
        if_version: Option<u64>,
    },
}

#[derive(Debug, Error)]
pub enum WireError {
    #[error("malformed transaction JSON: {0}")]
    Json(String),
    #[error("a transaction needs at least one op")]
    Empty,
    #[error("value_b64 of {key}: {error}")]
    Base64 { key: String, error: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Parses a transaction body; every malformed input is an error, never a
/// panic. A value over `max_value_bytes` is [`StoreError::TooLarge`].
pub fn parse_txn(body: &[u8], max_value_bytes: usize) -> Result<Vec<Op>, WireError> {
    let req: TxnRequest =
        serde_json::from_slice(body).map_err(|e| WireError::Json(e.to_string()))?;
    if req.ops.is_empty() {
        return Err(WireError::Empty);
    }
    req.ops
        .into_iter()
        .map(|op| match op {
            TxnOp::Put {
                key,
                value_b64,
                if_version,
            } => {
                let value = base64::engine::general_purpose::STANDARD
                    .decode(value_b64.as_bytes())
                    .map_err(|e| WireError::Base64 {
                        key: shown(&key),
                        error: e.to_string(),
                    })?;
                if value.len() > max_value_bytes {
                    return Err(StoreError::TooLarge {
                        size: value.len(),
                        limit: max_value_bytes,
                    }
                    .into());
                }
                Ok(Op::Put {
                    key: KeyPath::parse(&key).map_err(StoreError::Key)?,
                    value,
                    if_version: if_version.map(Version),
                })
            }
            TxnOp::Delete { key, if_version } => Ok(Op::Delete {
                key: KeyPath::parse(&key).map_err(StoreError::Key)?,
                if_version: if_version.map(Version),
            }),
        })
        .collect()
}
