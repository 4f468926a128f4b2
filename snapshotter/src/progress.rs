//! Where a snapshot run keeps its plan (key ranges) and per-range cursors.

use std::collections::BTreeMap;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use zookeeper_client as zk;

use crate::SnapshotError;

/// The split of the keyspace into ranges streamed in parallel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Hex-encoded `[start, end)` bounds; `None` end = up to the namespace end.
    pub ranges: Vec<(String, Option<String>)>,
    /// Rows (entities + delete markers) in the view.
    pub total_rows: u64,
}

/// How far one range has been streamed: every row below `next` was delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeCursor {
    pub next: String,
    pub rows: u64,
    pub done: bool,
}

#[async_trait]
pub trait ProgressStore: Send + Sync {
    async fn load_plan(&self) -> Result<Option<Plan>, SnapshotError>;
    async fn save_plan(&self, plan: &Plan) -> Result<(), SnapshotError>;
    async fn load_cursor(&self, range: usize) -> Result<Option<RangeCursor>, SnapshotError>;
    async fn save_cursor(&self, range: usize, cursor: &RangeCursor) -> Result<(), SnapshotError>;
}

/// In-memory progress (tests).
#[derive(Default)]
pub struct MemProgress {
    plan: Mutex<Option<Plan>>,
    cursors: Mutex<BTreeMap<usize, RangeCursor>>,
}

#[async_trait]
impl ProgressStore for MemProgress {
    async fn load_plan(&self) -> Result<Option<Plan>, SnapshotError> {
        Ok(self.plan.lock().clone())
    }
    async fn save_plan(&self, plan: &Plan) -> Result<(), SnapshotError> {
        *self.plan.lock() = Some(plan.clone());
        Ok(())
    }
    async fn load_cursor(&self, range: usize) -> Result<Option<RangeCursor>, SnapshotError> {
        Ok(self.cursors.lock().get(&range).cloned())
    }
    async fn save_cursor(&self, range: usize, cursor: &RangeCursor) -> Result<(), SnapshotError> {
        self.cursors.lock().insert(range, cursor.clone());
        Ok(())
    }
}

/// Progress under a znode (`<path>/plan`, `<path>/range-<i>`), shared by
/// every process that may resume the snapshot.
pub struct ZkProgress {
    client: zk::Client,
    path: String,
    acls: zk::Acls<'static>,
}

fn zerr(e: zk::Error) -> SnapshotError {
    SnapshotError::Progress(e.to_string())
}

impl ZkProgress {
    /// `path` lies under the deployment's `root`; znodes are created with
    /// `acls` (see `northwest_store::ZkDigest`).
    pub async fn new(
        client: zk::Client,
        root: &str,
        path: &str,
        acls: zk::Acls<'static>,
    ) -> Result<Self, SnapshotError> {
        northwest_store::zk::ensure_path(&client, path, root, &acls)
            .await
            .map_err(zerr)?;
        Ok(Self {
            client,
            path: path.to_string(),
            acls,
        })
    }

    async fn get<T: for<'de> Deserialize<'de>>(
        &self,
        name: &str,
    ) -> Result<Option<T>, SnapshotError> {
        match self.client.get_data(&format!("{}/{name}", self.path)).await {
            Ok((data, _)) => serde_json::from_slice(&data)
                .map(Some)
                .map_err(|e| SnapshotError::Progress(e.to_string())),
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(zerr(e)),
        }
    }

    async fn put<T: Serialize>(&self, name: &str, v: &T) -> Result<(), SnapshotError> {
        let data = serde_json::to_vec(v).map_err(|e| SnapshotError::Progress(e.to_string()))?;
        let path = format!("{}/{name}", self.path);
        match self.client.set_data(&path, &data, None).await {
            Ok(_) => Ok(()),
            Err(zk::Error::NoNode) => {
                let opts = zk::CreateMode::Persistent.with_acls(self.acls);
                self.client
                    .create(&path, &data, &opts)
                    .await
                    .map(|_| ())
                    .map_err(zerr)
            }
            Err(e) => Err(zerr(e)),
        }
    }
}

#[async_trait]
impl ProgressStore for ZkProgress {
    async fn load_plan(&self) -> Result<Option<Plan>, SnapshotError> {
        self.get("plan").await
    }
    async fn save_plan(&self, plan: &Plan) -> Result<(), SnapshotError> {
        self.put("plan", plan).await
    }
    async fn load_cursor(&self, range: usize) -> Result<Option<RangeCursor>, SnapshotError> {
        self.get(&format!("range-{range}")).await
    }
    async fn save_cursor(&self, range: usize, cursor: &RangeCursor) -> Result<(), SnapshotError> {
        self.put(&format!("range-{range}"), cursor).await
    }
}

pub fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn from_hex(s: &str) -> Result<Vec<u8>, SnapshotError> {
    if !s.len().is_multiple_of(2) {
        return Err(SnapshotError::Progress(format!("bad hex {s:?}")));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&s[i..i + 2], 16)
                .map_err(|_| SnapshotError::Progress(format!("bad hex {s:?}")))
        })
        .collect()
}
