//! The Northwest entity store.
//!
//! Owns the data model (namespaces, key paths, entity groups, versions and
//! delete markers), the storage-engine contract with its RocksDB and in-memory
//! engines, coordination (entity-group locks, transaction ids, the blacklist)
//! locally or through ZooKeeper, ACID single-group transactions that write the
//! journal outbox atomically with the data, and the version-fenced apply path
//! used by the journal consumer and the snapshot loader.
//!
//! May use: `northwest-schemas` only. No Kafka, no HTTP: the pipeline crates
//! build on this one.

pub mod apply;
pub mod cache;
pub mod coord;
pub mod digest;
pub mod engine;
pub mod error;
pub mod failpoint;
mod fencing;
pub mod key;
pub mod outbox;
#[cfg(feature = "postgres")]
pub mod pg;
pub mod record;
pub mod replicated;
pub mod retry;
#[cfg(feature = "rocksdb")]
pub mod rocks;
pub mod store;
pub mod txn;
pub mod types;
pub mod wire;
pub mod zk;

pub use cache::{CacheStats, ReadCache};
pub use coord::{Coordinator, LocalCoordinator};
pub use engine::{Cf, Engine, EngineMemory, MemEngine};
pub use error::{CoordError, EngineError, KeyError, StoreError};
pub use key::{EntityGroup, KeyPath, KeyRange, Namespace};
pub use outbox::Outbox;
#[cfg(feature = "postgres")]
pub use pg::{PgConfig, PgEngine};
pub use record::EntityRecord;
pub use replicated::{ApplyStats, MarkerGcRule, MarkerGcStats, ReplicatedWrite};
pub use retry::RetryPolicy;
#[cfg(feature = "rocksdb")]
pub use rocks::{RocksEngine, DEFAULT_ROCKSDB_MEMORY_MB};
pub use store::{Entity, Op, OutboxFullPolicy, Store, StoreConfig};
pub use txn::Transaction;
pub use types::{TxnId, Version};
pub use zk::{ZkConfig, ZkCoordinator, ZkDigest};
