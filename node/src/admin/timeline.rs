//! `GET /v1/admin/timeline/{ns}`: the namespace's timeline of primaries as
//! the orchestrator recorded it in ZooKeeper, and how far this node applied
//! each epoch (a follower's lag per epoch).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use northwest_consumer::offsets;
use northwest_consumer::PartitionLag;
use northwest_control::api::EpochLag;
use northwest_control::timeline::{behind, Offsets, Timeline, TimelineView};
use northwest_control::ErrorCode;
use northwest_control::ZkLayout;
use northwest_store::{Namespace, ZkCoordinator};

use crate::api::ApiError;
use crate::state::NodeState;

pub(super) async fn timeline(
    State(s): State<Arc<NodeState>>,
    Path(ns): Path<String>,
) -> Result<Json<TimelineView>, ApiError> {
    let ns = Namespace::new(&ns).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let Some(zk) = &s.zk else {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: ErrorCode::NotFound,
            message: "this node coordinates locally (coordination.mode = \"local\"): no \
                      timeline is recorded without ZooKeeper"
                .into(),
        });
    };
    let timeline = read(zk, &s.layout, ns.as_str())
        .await
        .map_err(|e| ApiError::unavailable(ErrorCode::NotReady, e))?;
    let applied: Offsets = offsets::load(&s.store, &s.topic)?.into();
    // The current epoch's lag needs the topic's ends: a target's lag probe
    // has them; elsewhere it stays unknown.
    let ends: Option<Offsets> = match &s.apply {
        Some(_) => s
            .lag()
            .await
            .ok()
            .map(|l| l.iter().map(|p| (p.partition, p.high_watermark)).collect()),
        None => None,
    };
    Ok(Json(TimelineView {
        behind: behind(&timeline, &applied, ends.as_ref()),
        timeline,
        node: s.name.clone(),
        applied,
    }))
}

/// The namespace's timeline as recorded, or an empty one: none recorded
/// means it has had one primary since the journal began (not an error:
/// every page may ask).
pub(crate) async fn read(
    zk: &ZkCoordinator,
    layout: &ZkLayout,
    ns: &str,
) -> Result<Timeline, String> {
    let path = layout.timeline(ns);
    match zk.client().get_data(&path).await {
        Ok((d, _)) => serde_json::from_slice(&d).map_err(|e| {
            format!(
                "{path} is not a timeline this node can read ({e}): a newer orchestrator wrote it?"
            )
        }),
        Err(zookeeper_client::Error::NoNode) => Ok(Timeline {
            namespace: ns.to_string(),
            epochs: Vec::new(),
        }),
        Err(e) => Err(format!("reading {path}: {e}; is ZooKeeper up?")),
    }
}

/// Every recorded timeline (ZooKeeper coordination only), bounded in time
/// so a status answer never waits on a slow ZooKeeper.
pub(crate) async fn read_all(
    zk: &ZkCoordinator,
    layout: &ZkLayout,
) -> Result<Vec<Timeline>, String> {
    let all = async {
        let names = match zk.client().list_children(&layout.timelines()).await {
            Ok(n) => n,
            Err(zookeeper_client::Error::NoNode) => return Ok(Vec::new()),
            Err(e) => {
                return Err(format!(
                    "listing {}: {e}; is ZooKeeper up?",
                    layout.timelines()
                ))
            }
        };
        let mut out = Vec::with_capacity(names.len());
        for ns in names {
            out.push(read(zk, layout, &ns).await?);
        }
        Ok(out)
    };
    tokio::time::timeout(std::time::Duration::from_secs(2), all)
        .await
        .unwrap_or_else(|_| Err("ZooKeeper did not answer within 2 s; is it up?".into()))
}

/// Each recorded epoch's lag for this node: its stored offsets against the
/// epoch's range (the current epoch ends at the topic's high-water marks).
/// Reads every timeline into the node's copy (housekeeping, every tick).
pub(crate) async fn refresh(s: &NodeState) {
    if let Some(zk) = &s.zk {
        let read = read_all(zk, &s.layout).await;
        if let Err(e) = &read {
            tracing::warn!(error = %e, "reading the namespaces' timelines failed; per-epoch lag is not known until it succeeds");
        }
        *s.timelines.lock() = Some(read);
    }
}

/// Each recorded epoch's lag for this node, from the timelines housekeeping
/// last read.
pub(crate) fn epoch_lag(s: &NodeState, lag: &[PartitionLag]) -> Result<Vec<EpochLag>, String> {
    if s.zk.is_none() {
        return Ok(Vec::new());
    }
    let timelines = match &*s.timelines.lock() {
        None => return Err("the timelines were not read yet (every 2 s)".into()),
        Some(r) => r.clone()?,
    };
    let applied: Offsets = lag
        .iter()
        .map(|p| (p.partition, p.stored.unwrap_or(p.low_watermark)))
        .collect();
    let ends: Offsets = lag
        .iter()
        .map(|p| (p.partition, p.high_watermark))
        .collect();
    let mut out = Vec::new();
    for t in &timelines {
        for (e, b) in t.epochs.iter().zip(behind(t, &applied, Some(&ends))) {
            out.push(EpochLag {
                namespace: t.namespace.clone(),
                epoch: e.epoch,
                primary: e.primary.clone(),
                current: e.ends.is_none(),
                lag_records: b.records.unwrap_or(0),
            });
        }
    }
    Ok(out)
}
