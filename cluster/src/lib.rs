//! Meridian shared state: everything lobby and shards keep outside their own process.
//!
//! What this crate owns:
//! - the [`Store`] port ([`store`]): every operation on shared state — the shard registry,
//!   player profiles ([`Profile`]), scores and the leaderboard, resume sessions ([`Session`]),
//!   single-use ticket nonces — with its records ([`ShardRecord`], [`LiveShard`]) and its
//!   [`StoreConfig`];
//! - its two adapters: [`RedisStore`] ([`redis_store`]: production, a reconnecting connection
//!   manager, Lua scripts for atomic steps, a timeout on every call) and [`MemoryStore`]
//!   ([`memory`]: one process, `meridian dev` and unit tests, TTLs on an injected [`Clock`]);
//! - [`StoreHandle`], the cheaply cloneable handle callers hold, opened from a URL (`memory` or
//!   `redis://…`) by [`StoreHandle::open`];
//! - the [`keyspace`]: every Redis key name, in one place ([`Keyspace`]);
//! - [`StoreError`]: typed failures naming the key;
//! - the shard [`Registry`] ([`registry`]): heartbeat task and live shards;
//! - configuration shared by the roles ([`config`]: [`config::AuditConfig`], Redis URL and
//!   server checks);
//! - test support behind the `testing` feature (`testing::RedisServer`: a throwaway
//!   `redis-server` per test).
//!
//! - zone leases, fenced player ownership and handoff notices ([`ownership`]);
//! - the world map ([`world`]): the zones of a deployment read from a TOML file and validated
//!   ([`world::WorldMap`], [`world::ZoneSpec`]; the built-in dev map, [`world::WorldMap::dev`]);
//! - the ownership audit ([`audit`]): every player simulated by exactly one shard, its owner
//!   (a pure core, [`audit::audit`], and its two-pass shell, [`audit::run_audit`]);

pub mod audit;
pub mod clock;
pub mod config;
pub mod error;
pub mod keyspace;
pub mod memory;
pub mod metrics;
pub mod ownership;
pub mod redis_store;
pub mod registry;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod world;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{StoreConfigError, StoreError};
pub use keyspace::Keyspace;
pub use memory::MemoryStore;
pub use redis_store::RedisStore;
pub use registry::{Registry, RegistryConfig, RegistryConfigError};
pub use store::{
    LeaderboardEntry, LiveShard, LoadedProfile, Profile, Session, SessionToken, ShardRecord, Store,
    StoreConfig, StoreHandle,
};
