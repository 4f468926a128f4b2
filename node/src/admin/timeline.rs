//! `GET /v1/admin/timeline/{ns}`: the namespace's timeline of primaries as
//! the orchestrator recorded it in ZooKeeper, and how far this node applied
//! each epoch (a follower's lag per epoch).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use northwest_consumer::offsets;
use northwest_control::timeline::{behind, Timeline, TimelineView};
use northwest_control::ErrorCode;
use northwest_store::Namespace;

use crate::api::ApiError;
use crate::state::NodeState;

pub(super) async fn timeline(
    State(s): State<Arc<NodeState>>,
    Path(ns): Path<String>,
) -> Result<Json<TimelineView>, ApiError> {
    let ns = Namespace::new(&ns).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let not_found = |why: String| ApiError {
        status: StatusCode::NOT_FOUND,
        code: ErrorCode::NotFound,
        message: why,
    };
    let Some(zk) = &s.zk else {
        return Err(not_found(
            "this node coordinates locally (coordination.mode = \"local\"): no timeline is \
             recorded without ZooKeeper"
                .into(),
        ));
    };
    let path = s.layout.timeline(ns.as_str());
    // None recorded: the namespace has had one primary since the journal
    // began (an empty timeline, not an error: every page may ask).
    let timeline = match zk.client().get_data(&path).await {
        Ok((d, _)) => serde_json::from_slice(&d).map_err(|e| {
            ApiError::unavailable(
                ErrorCode::NotReady,
                format!("{path} is not a timeline this node can read ({e}): a newer orchestrator wrote it?"),
            )
        })?,
        Err(zookeeper_client::Error::NoNode) => Timeline {
            namespace: ns.to_string(),
            epochs: Vec::new(),
        },
        Err(e) => {
            return Err(ApiError::unavailable(
                ErrorCode::NotReady,
                format!("reading {path}: {e}; is ZooKeeper up?"),
            ))
        }
    };
    let applied: northwest_control::timeline::Offsets = offsets::load(&s.store, &s.topic)?.into();
    Ok(Json(TimelineView {
        behind: behind(&timeline, &applied),
        timeline,
        node: s.name.clone(),
        applied,
    }))
}
