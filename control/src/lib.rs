//! The control plane's contracts: what the orchestrator and the nodes say to
//! each other and what they record in ZooKeeper.
//!
//! Owns: the admin API's request and response types and its error codes
//! ([`api`]), the one admin HTTP client with its token, CA and timeouts
//! ([`client`]), the migration phases ([`Phase`]), the migration and routing
//! records ([`record`]), each namespace's timeline of primaries
//! ([`timeline`]) and the ZooKeeper layout of a deployment
//! ([`layout`]).
//! May use: `northwest-store`'s plain data types (no engine). No Kafka and no
//! ZooKeeper client: the node serves these types, the orchestrator calls
//! them, and both read and write the records with their own clients.

pub mod api;
pub mod client;
pub mod layout;
pub mod phase;
pub mod record;
pub mod status;
pub mod timeline;

pub use api::{ErrorBody, ErrorCode};
pub use client::{AdminClient, AdminError};
pub use layout::ZkLayout;
pub use phase::Phase;
pub use record::{MigrationRecord, RoutingRecord};
pub use timeline::{Epoch, Timeline};

/// A command's failure whose `--json` report is on stdout already (the
/// report says what failed): the CLI prints no second JSON object for it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Reported(pub String);
