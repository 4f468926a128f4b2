//! The `northwest` binary's library: node daemon (HTTP API), configuration,
//! load generator and benchmarks. Owns anyhow and config loading; the binary
//! (`main.rs`) owns the tracing subscriber and signal handling.

pub mod admin;
pub mod api;
pub mod bench;
pub mod bench_migrate;
pub mod config;
pub mod cutover;
pub mod loadgen;
pub mod migrate;
pub mod migration_api;
pub mod node;
pub mod ops;
pub mod telemetry;
