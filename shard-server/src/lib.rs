//! Meridian shard server: simulates one zone of the world at a fixed rate and keeps its players
//! in sync over QUIC.
//!
//! - [`sim`]: the simulation core, a bevy_ecs world stepped by [`sim::Sim::tick`]; no I/O.
//! - [`replication`]: per client, interest management and delta snapshots within a byte
//!   budget ([`replication::ClientReplication`]); no I/O.
//! - [`tick`]: the tick thread ([`tick::TickLoop`]) that runs both at a fixed rate.
//! - [`net`]: the QUIC shell: admission by ticket, a task per connection.
//! - [`server`]: a running shard ([`server::start`], [`server::run`], [`server::ShardHandle`]).
//! - [`metrics`]: counters and the published tick status.
//! - [`admin`]: the admin HTTP endpoint (players held, for `meridian audit`; tick status).
//! - [`config`]: [`config::ShardConfig`], the configuration of `meridian shard`.

pub mod admin;
pub mod config;
pub mod handoff;
pub mod metrics;
pub mod net;
pub mod replication;
pub mod server;
pub mod sim;
pub mod tick;
