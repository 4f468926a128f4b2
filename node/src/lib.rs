//! The daemon of one deployment (`northwest node`): the data HTTP API, the
//! admin API (status, replay, checkpoint, fence, proxy), the cutover gate,
//! the journal relay (source) or apply loop (target) per its config,
//! Prometheus telemetry and the dashboard. Entry point: [`run`].
//!
//! Owns: node configuration and its validation, the HTTP API's routes and
//! handlers, the cutover gate (fence, proxy, routing record), telemetry.
//! The admin API's request and response types, its error codes, the records
//! and the ZooKeeper layout are `northwest-control`'s contracts, served here.
//! May use: `northwest-control`, `northwest-kafka`, `northwest-producer`,
//! `northwest-consumer`, `northwest-schemas` (the Confluent framing's ids) and
//! `northwest-store`; never the orchestrator, the
//! benchmarks or the binary.

pub mod admin;
pub mod api;
pub mod auth;
pub mod claim;
pub mod config;
pub mod cutover;
mod digest_jobs;
pub mod history;
mod housekeeping;
mod marker_gc;
pub mod migration_api;
mod records;
mod run;
pub mod schema_registry;
pub mod secrets;
mod snapshot_gc;
pub mod state;
pub mod telemetry;
pub mod tls;

pub use run::{journal_topic, kafka_settings, open_engine, run, store_config};
