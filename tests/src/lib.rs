//! End-to-end test support: connection to the real dev stack (ZooKeeper and
//! Apache Kafka started by `deploy/stack.sh up`), unique names per
//! test, and process helpers. A test that needs a service and cannot reach it
//! fails with instructions; it never skips.

pub mod browser;
pub mod chaos;
pub mod fault_proxy;
pub mod history;
mod load;
mod node_proc;
pub mod pki;
mod stack;

pub use load::*;
pub use node_proc::*;
pub use stack::*;

/// An admin client for the tests' deployments (no token, no CA).
pub fn admin_client() -> northwest_control::AdminClient {
    northwest_control::AdminClient::new(None, Vec::new(), northwest_migrate::ADMIN_TIMEOUT)
}
