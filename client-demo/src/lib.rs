//! Meridian client library: what a game, the headless demo client, the load-testing bots and
//! the tests all use to play — one client code path.
//!
//! - [`session`]: a session with a shard ([`session::ShardSession`]): connect with a ticket,
//!   send inputs at the tick rate with redundancy, acknowledge snapshots, receive reliable
//!   events, and follow the player across zone borders by itself (early connections to
//!   neighbouring shards, the switch on a handoff ticket, inputs replayed to the new shard,
//!   [`session::SessionEvent::HandedOff`] with the blackout); round-trip probes
//!   ([`session::measure_rtt`]).
//! - [`world`]: the client's copy of the world ([`world::ClientWorld`]): snapshots applied as
//!   deltas against their baselines, interpolation between snapshots.
//! - [`lobby`]: joining through the lobby ([`lobby::join`]): hello, round trips to the
//!   candidate shards, grant.
//! - [`bots`]: many bots in one process ([`bots::run`]) and their [`report::Report`];
//!   scenarios include `cross`, which walks over zone borders ([`bots::CrossWalker`] on the
//!   borders of a [`bots::WorldLayout`]).
//! - [`report`]: the run report (JSON; its field names are a contract).
//! - [`report_html`]: the run report as an HTML page with charts, next to the JSON.
//! - [`demo`]: the headless demo client of `meridian client`.
//! - [`config`]: the configurations of `meridian client` and `meridian bots`.
//! - [`conditioner`]: the link conditioner ([`conditioner::ConditionedSocket`]): per-destination
//!   delay, jitter, loss and partitions on the client's UDP socket, for tests and bots.
//! - [`latency`]: round-trip times between regions ([`latency::LatencyMatrix`]), from a matrix
//!   file, to configure the conditioner.

pub mod bots;
pub mod conditioner;
pub mod config;
pub mod demo;
pub mod latency;
pub mod lobby;
pub mod report;
pub mod report_html;
pub mod session;
pub mod world;
