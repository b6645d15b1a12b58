//! Meridian lobby: sends each player to the nearest healthy shard.
//!
//! - [`routing`]: the routing policy, a pure function ([`routing::route`]) of the live shards,
//!   the client's measured round trips and its party.
//! - [`service`]: the QUIC join service ([`service::start`], [`service::LobbyHandle`]).
//! - [`config`]: [`config::LobbyConfig`], the configuration of `meridian lobby`.

pub mod config;
pub mod routing;
pub mod service;
