//! Meridian lobby: sends each player to the nearest healthy shard.
//!
//! - [`routing`]: the routing policy, a pure function ([`routing::route`]) of the live shards,
//!   the client's measured round trips and its party.
//! - [`service`]: the QUIC join service ([`service::start`], [`service::LobbyHandle`]).
//! - [`config`]: [`config::LobbyConfig`], the configuration of `meridian lobby`.
//! - [`admin`]: the admin HTTP endpoint (`/healthz`, `/readyz`, `/status`, `/metrics`, plus
//!   extra routers such as the map's: [`admin::serve`]).
//! - [`map`]: the live map page (`/map`) of the admin server ([`map::router`], [`map::MapSource`]).

pub mod admin;
pub mod config;
pub mod map;
pub mod routing;
pub mod service;
