//! The command line: one subcommand per role, every flag also read from a `MERIDIAN_*`
//! environment variable, and `--config FILE` for the role's TOML file.
//!
//! Precedence is flags > environment > file > defaults. Clap resolves the first two (a flag
//! wins over its variable); every argument is an `Option` without a clap default, so "not
//! given" stays `None`. [`Command::into_config`] then loads the file (or the role's
//! `Default`), overlays every `Some`, and validates the result.

use crate::config_file::{self, ConfigFileError};
use crate::dev::DevConfig;
use crate::logging::LogFormat;
use clap::builder::{BoolishValueParser, PossibleValuesParser, TypedValueParser};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use meridian_client::config::{BotsConfig, ClientConfig, Scenario};
use meridian_cluster::config::AuditConfig;
use meridian_lobby::config::LobbyConfig;
use meridian_shard::config::ShardConfig;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Meridian: a multiplayer game server with geo-distributed shards. One binary for every role.
#[derive(Parser)]
#[command(name = "meridian", propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Format of the logs on stderr: text, or json (one object per line); RUST_LOG filters
    /// them (default info) [default: text]
    #[arg(
        long,
        global = true,
        env = "MERIDIAN_LOG_FORMAT",
        value_enum,
        value_name = "FORMAT"
    )]
    pub log_format: Option<LogFormat>,

    /// Validate the flags, variables, config file and every file they name (world map,
    /// certificate and key, latency matrix), print a summary and exit: 0 if the role would
    /// start, 2 with the error if not. Nothing is bound and nothing is dialled (a Redis URL is
    /// checked for its form only)
    #[arg(long, global = true)]
    pub check_config: bool,

    /// The role to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The command-line definition, with the version: `<crate version> (protocol <N>)`.
pub fn command() -> clap::Command {
    Cli::command().version(version())
}

/// Parses the command line; on a clap error (or `--help`, `--version`) prints and exits.
pub fn parse() -> Cli {
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit())
}

/// `<crate version> (protocol <N>)`, built once (clap wants a `'static` string).
fn version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        format!(
            "{} (protocol {})",
            env!("CARGO_PKG_VERSION"),
            meridian_protocol::PROTOCOL_VERSION
        )
    })
}

/// The roles of the binary.
#[derive(Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once at start-up; boxing would only complicate every match"
)]
pub enum Command {
    /// Run a whole local cluster in one process: store, lobby, shards and bots
    Dev(DevArgs),
    /// Run the lobby, which sends each player to the nearest healthy shard
    Lobby(LobbyArgs),
    /// Run a shard server, which simulates one zone of the world
    Shard(ShardArgs),
    /// Run the headless demo client: join, play, print what it sees
    Client(ClientArgs),
    /// Run load-testing bots against a lobby and write a report
    Bots(BotsArgs),
    /// Check the shared state in Redis: every player owned by exactly one shard
    Audit(AuditArgs),
}

/// A role's validated configuration, ready to run.
#[derive(Debug)]
pub enum RoleConfig {
    /// `meridian dev`.
    Dev(DevConfig),
    /// `meridian lobby`.
    Lobby(LobbyConfig),
    /// `meridian shard`.
    Shard(ShardConfig),
    /// `meridian client`.
    Client(ClientConfig),
    /// `meridian bots`.
    Bots(BotsConfig),
    /// `meridian audit`.
    Audit(AuditConfig),
}

impl RoleConfig {
    /// The role's subcommand name.
    pub fn role(&self) -> &'static str {
        match self {
            RoleConfig::Dev(_) => "dev",
            RoleConfig::Lobby(_) => "lobby",
            RoleConfig::Shard(_) => "shard",
            RoleConfig::Client(_) => "client",
            RoleConfig::Bots(_) => "bots",
            RoleConfig::Audit(_) => "audit",
        }
    }
}

/// Why a role's configuration was refused (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read or parsed.
    #[error(transparent)]
    File(#[from] ConfigFileError),
    /// The merged configuration is invalid.
    #[error("invalid {role} configuration: {message}")]
    Invalid {
        /// The role.
        role: &'static str,
        /// What the role's `validate()` said.
        message: String,
    },
}

impl Command {
    /// Loads the role's file, overlays the flags and environment, and validates the result.
    pub fn into_config(self) -> Result<RoleConfig, ConfigError> {
        Ok(match self {
            Command::Dev(args) => {
                let config = merge(args)?;
                config.validate().map_err(|e| invalid("dev", e))?;
                RoleConfig::Dev(config)
            }
            Command::Lobby(args) => {
                let config = merge(args)?;
                config.validate().map_err(|e| invalid("lobby", e))?;
                RoleConfig::Lobby(config)
            }
            Command::Shard(args) => {
                let config = merge(args)?;
                config.validate().map_err(|e| invalid("shard", e))?;
                RoleConfig::Shard(config)
            }
            Command::Client(args) => {
                let config = merge(args)?;
                config.validate().map_err(|e| invalid("client", e))?;
                RoleConfig::Client(config)
            }
            Command::Bots(args) => {
                let config = merge(args)?;
                config.validate().map_err(|e| invalid("bots", e))?;
                RoleConfig::Bots(config)
            }
            Command::Audit(args) => {
                let config = merge(args)?;
                config.validate().map_err(|e| invalid("audit", e))?;
                RoleConfig::Audit(config)
            }
        })
    }
}

fn invalid(role: &'static str, err: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        role,
        message: err.to_string(),
    }
}

/// The arguments of one role: which file to read, and how to lay themselves over its content.
trait RoleArgs {
    /// The role's config struct.
    type Config: DeserializeOwned + Default;
    /// `--config`, if given.
    fn config_file(&self) -> Option<&Path>;
    /// Replaces every field of `config` whose flag or variable was given.
    fn overlay(self, config: &mut Self::Config);
}

/// File (or defaults), then flags and environment over it.
fn merge<A: RoleArgs>(args: A) -> Result<A::Config, ConfigFileError> {
    let mut config = match args.config_file() {
        Some(path) => config_file::load(path)?,
        None => A::Config::default(),
    };
    args.overlay(&mut config);
    Ok(config)
}

/// `*slot = value` if the value was given.
fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// `*slot = Some(value)` if the value was given (an optional field stays as the file left it
/// otherwise).
fn set_some<T>(slot: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *slot = value;
    }
}

/// Parses a scenario name, listing the names in `--help` and in clap's errors.
fn scenario_parser() -> impl TypedValueParser<Value = Scenario> {
    PossibleValuesParser::new(Scenario::ALL.map(Scenario::as_str))
        .try_map(|name| name.parse::<Scenario>())
}

// Boolean flags are `Option<bool>` so that "not given" stays distinguishable from `false`:
// `--dev-cert` alone means true, `--dev-cert=false` (or `MERIDIAN_DEV_CERT=false`) overrides a
// file's `true`. The attributes are spelled out on each, as clap's derive requires literals.

/// `meridian dev`.
#[derive(Args)]
pub struct DevArgs {
    /// TOML file with this role's settings (keys are the flag names with '_'); flags and
    /// MERIDIAN_* variables override it [default: none]
    #[arg(long, env = "MERIDIAN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Bots run against the local cluster, 0 for none [default: 20]
    #[arg(long, env = "MERIDIAN_BOTS", value_name = "N")]
    pub bots: Option<u32>,
    /// Stop after this long: 90, 90s, 2m or 1h; run until interrupted if unset [default: none]
    #[arg(long, env = "MERIDIAN_DURATION", value_name = "DURATION")]
    pub duration: Option<String>,
    /// Write the bots' JSON report to this file [default: none]
    #[arg(long, env = "MERIDIAN_REPORT", value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Shared state: "memory" (in process) or a redis:// or rediss:// URL [default: memory]
    #[arg(
        long,
        env = "MERIDIAN_STORE",
        hide_env_values = true,
        value_name = "STORE"
    )]
    pub store: Option<String>,
    /// What the bots do [default: wander]
    #[arg(long, env = "MERIDIAN_SCENARIO", value_parser = scenario_parser(), value_name = "SCENARIO")]
    pub scenario: Option<Scenario>,
    /// Simulation rate of the shards, ticks per second, 1 to 240 [default: 30]
    #[arg(long, env = "MERIDIAN_TICK_HZ", value_name = "HZ")]
    pub tick_hz: Option<u16>,
    /// NPCs per shard, at most 1000000 [default: 1000]
    #[arg(long, env = "MERIDIAN_NPCS", value_name = "N")]
    pub npcs: Option<u32>,
    /// TCP address of the admin HTTP endpoint (health, metrics) [default: 127.0.0.1:8080]
    #[arg(long, env = "MERIDIAN_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// UDP address the lobby binds (port 0: any free port); printed at start as
    /// `lobby ADDR cert_sha256 HEX`, for `meridian bots --lobby ADDR --cert-sha256 HEX`
    /// [default: 127.0.0.1:7100]
    #[arg(long, env = "MERIDIAN_LOBBY_LISTEN", value_name = "ADDR")]
    pub lobby_listen: Option<SocketAddr>,
    /// World map (TOML: zones, regions, spawn points); one shard per zone; none: the built-in
    /// three-zone map of deploy/worlds/dev.toml [default: none]
    #[arg(long, env = "MERIDIAN_WORLD", value_name = "FILE")]
    pub world: Option<PathBuf>,
}

impl RoleArgs for DevArgs {
    type Config = DevConfig;

    fn config_file(&self) -> Option<&Path> {
        self.config.as_deref()
    }

    fn overlay(self, c: &mut DevConfig) {
        let Self {
            config: _,
            bots,
            duration,
            report,
            store,
            scenario,
            tick_hz,
            npcs,
            admin_listen,
            lobby_listen,
            world,
        } = self;
        set(&mut c.bots, bots);
        set_some(&mut c.duration, duration);
        set_some(&mut c.report, report);
        set(&mut c.store, store);
        set(&mut c.scenario, scenario);
        set(&mut c.tick_hz, tick_hz);
        set(&mut c.npcs, npcs);
        set(&mut c.admin_listen, admin_listen);
        set(&mut c.lobby_listen, lobby_listen);
        set_some(&mut c.world, world);
    }
}

/// `meridian lobby`.
#[derive(Args)]
pub struct LobbyArgs {
    /// TOML file with this role's settings (keys are the flag names with '_'); flags and
    /// MERIDIAN_* variables override it [default: none]
    #[arg(long, env = "MERIDIAN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// UDP address the QUIC endpoint binds [default: 0.0.0.0:7100]
    #[arg(long, env = "MERIDIAN_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Redis URL of the shared state, where the shard registry lives:
    /// redis://[user:password@]host:port[/db], or a Redis Cluster's node URLs separated by
    /// commas (redis://h1:p1,redis://h2:p2) [default: none]
    #[arg(
        long,
        env = "MERIDIAN_REDIS",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub redis: Option<String>,
    /// Key shared with the shards to sign join tickets: 64 hex characters (32 bytes); never
    /// logged [required]
    #[arg(
        long,
        env = "MERIDIAN_TICKET_KEY",
        hide_env_values = true,
        value_name = "HEX"
    )]
    pub ticket_key: Option<String>,
    /// PEM certificate chain to serve, with --key [default: none]
    #[arg(long, env = "MERIDIAN_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert [default: none]
    #[arg(long, env = "MERIDIAN_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Serve a self-signed certificate made at start-up (development), instead of
    /// --cert/--key [default: false]
    #[arg(
        long, env = "MERIDIAN_DEV_CERT", value_name = "BOOL", num_args = 0..=1,
        require_equals = true, default_missing_value = "true",
        value_parser = BoolishValueParser::new()
    )]
    pub dev_cert: Option<bool>,
    /// Largest frame accepted on a stream, bytes, 1024 to 1048576 [default: 65536]
    #[arg(long, env = "MERIDIAN_MAX_FRAME_BYTES", value_name = "BYTES")]
    pub max_frame_bytes: Option<u32>,
    /// QUIC keep-alive interval, milliseconds [default: 1000]
    #[arg(long, env = "MERIDIAN_KEEP_ALIVE_MS", value_name = "MS")]
    pub keep_alive_ms: Option<u64>,
    /// Close a connection silent for this long, milliseconds; more than --keep-alive-ms
    /// [default: 10000]
    #[arg(long, env = "MERIDIAN_IDLE_TIMEOUT_MS", value_name = "MS")]
    pub idle_timeout_ms: Option<u64>,
    /// TCP address of the admin HTTP endpoint (health, metrics); disabled if unset
    /// [default: none]
    #[arg(long, env = "MERIDIAN_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
}

impl RoleArgs for LobbyArgs {
    type Config = LobbyConfig;

    fn config_file(&self) -> Option<&Path> {
        self.config.as_deref()
    }

    fn overlay(self, c: &mut LobbyConfig) {
        let Self {
            config: _,
            listen,
            redis,
            ticket_key,
            cert,
            key,
            dev_cert,
            max_frame_bytes,
            keep_alive_ms,
            idle_timeout_ms,
            admin_listen,
        } = self;
        set(&mut c.listen, listen);
        set_some(&mut c.redis, redis);
        set_some(&mut c.ticket_key, ticket_key);
        set_some(&mut c.cert, cert);
        set_some(&mut c.key, key);
        set(&mut c.dev_cert, dev_cert);
        set(&mut c.max_frame_bytes, max_frame_bytes);
        set(&mut c.keep_alive_ms, keep_alive_ms);
        set(&mut c.idle_timeout_ms, idle_timeout_ms);
        set_some(&mut c.admin_listen, admin_listen);
    }
}

/// `meridian shard`.
#[derive(Args)]
pub struct ShardArgs {
    /// TOML file with this role's settings (keys are the flag names with '_'); flags and
    /// MERIDIAN_* variables override it [default: none]
    #[arg(long, env = "MERIDIAN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Name of this shard in the registry and in logs: 1 to 64 of [A-Za-z0-9._-]
    /// [default: shard-1]
    #[arg(long, env = "MERIDIAN_ID", value_name = "NAME")]
    pub id: Option<String>,
    /// Zone of the world this shard simulates [default: zone-1]
    #[arg(long, env = "MERIDIAN_ZONE", value_name = "NAME")]
    pub zone: Option<String>,
    /// UDP address the QUIC endpoint binds [default: 0.0.0.0:7000]
    #[arg(long, env = "MERIDIAN_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Address clients are sent to, when not --listen (behind NAT, or listening on 0.0.0.0)
    /// [default: none]
    #[arg(long, env = "MERIDIAN_PUBLIC_ADDR", value_name = "ADDR")]
    pub public_addr: Option<SocketAddr>,
    /// World rectangle of the zone, "x0,y0,x1,y1" with x0 < x1 and y0 < y1
    /// [default: 0,0,1000,1000]
    #[arg(
        long,
        env = "MERIDIAN_ZONE_BOUNDS",
        value_name = "X0,Y0,X1,Y1",
        allow_hyphen_values = true
    )]
    pub zone_bounds: Option<String>,
    /// Simulation rate, ticks per second, 1 to 240 [default: 30]
    #[arg(long, env = "MERIDIAN_TICK_HZ", value_name = "HZ")]
    pub tick_hz: Option<u16>,
    /// NPCs spawned in the zone, at most 1000000 [default: 1000]
    #[arg(long, env = "MERIDIAN_NPCS", value_name = "N")]
    pub npcs: Option<u32>,
    /// Key shared with the lobby and the other shards to sign tickets: 64 hex characters
    /// (32 bytes); never logged [required]
    #[arg(
        long,
        env = "MERIDIAN_TICKET_KEY",
        hide_env_values = true,
        value_name = "HEX"
    )]
    pub ticket_key: Option<String>,
    /// PEM certificate chain to serve, with --key [default: none]
    #[arg(long, env = "MERIDIAN_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert [default: none]
    #[arg(long, env = "MERIDIAN_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Serve a self-signed certificate made at start-up (development), instead of
    /// --cert/--key [default: false]
    #[arg(
        long, env = "MERIDIAN_DEV_CERT", value_name = "BOOL", num_args = 0..=1,
        require_equals = true, default_missing_value = "true",
        value_parser = BoolishValueParser::new()
    )]
    pub dev_cert: Option<bool>,
    /// Redis URL of the shared state: redis://[user:password@]host:port[/db], or a Redis
    /// Cluster's node URLs separated by commas (redis://h1:p1,redis://h2:p2) [default: none]
    #[arg(
        long,
        env = "MERIDIAN_REDIS",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub redis: Option<String>,
    /// Largest frame accepted on a stream, bytes, 1024 to 1048576 [default: 65536]
    #[arg(long, env = "MERIDIAN_MAX_FRAME_BYTES", value_name = "BYTES")]
    pub max_frame_bytes: Option<u32>,
    /// QUIC keep-alive interval, milliseconds [default: 1000]
    #[arg(long, env = "MERIDIAN_KEEP_ALIVE_MS", value_name = "MS")]
    pub keep_alive_ms: Option<u64>,
    /// Close a connection silent for this long, milliseconds; more than --keep-alive-ms
    /// [default: 10000]
    #[arg(long, env = "MERIDIAN_IDLE_TIMEOUT_MS", value_name = "MS")]
    pub idle_timeout_ms: Option<u64>,
    /// TCP address of the admin HTTP endpoint (health, metrics); disabled if unset
    /// [default: none]
    #[arg(long, env = "MERIDIAN_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// World map (TOML: zones, regions, spawn points); with --redis the shard hands players
    /// to its neighbours across borders; none: the zone is a world of its own [default: none]
    #[arg(long, env = "MERIDIAN_WORLD", value_name = "FILE")]
    pub world: Option<PathBuf>,
    /// Datacenter region this shard runs in, as named in the world map and latency matrices
    /// [default: local]
    #[arg(long, env = "MERIDIAN_REGION", value_name = "NAME")]
    pub region: Option<String>,
    /// Clients closer than this to a border (world units) are told of the neighbour's shard so
    /// that they connect to it before they cross [default: 120]
    #[arg(long, env = "MERIDIAN_BORDER_NOTICE", value_name = "UNITS")]
    pub border_notice: Option<u32>,
    /// How often the players' states are checkpointed to shared state, milliseconds, 50 to
    /// 60000; a crash rolls positions back at most this far [default: 1000]
    #[arg(long, env = "MERIDIAN_CHECKPOINT_MS", value_name = "MS")]
    pub checkpoint_ms: Option<u64>,
    /// Stand by for these zones (comma-separated): serve none at start, take the first whose
    /// lease is free (its shard died, drained or was cut off) and restore its players; needs
    /// --redis; --zone is then unused [default: none]
    #[arg(long, env = "MERIDIAN_STANDBY_FOR", value_name = "ZONE,...")]
    pub standby_for: Option<String>,
    /// Longest a drain (SIGTERM, or `meridian shard drain`) takes before the shard exits
    /// anyway, milliseconds, 100 to 600000 [default: 10000]
    #[arg(long, env = "MERIDIAN_DRAIN_DEADLINE_MS", value_name = "MS")]
    pub drain_deadline_ms: Option<u64>,
    /// Bearer token that `POST /drain` on the admin endpoint requires (16+ visible ASCII
    /// characters); without it the route answers 404; never logged [default: none]
    #[arg(
        long,
        env = "MERIDIAN_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub admin_token: Option<String>,
    /// An operator action on a running shard, instead of running one.
    #[command(subcommand)]
    pub action: Option<ShardAction>,
}

/// Operator actions of `meridian shard`.
#[derive(Subcommand)]
pub enum ShardAction {
    /// Ask a running shard to drain (POST /drain on its admin endpoint): it stops admitting,
    /// checkpoints its players, sends its clients back to the lobby, releases its zone and exits
    Drain(DrainArgs),
}

/// `meridian shard drain`.
#[derive(Args, Debug)]
pub struct DrainArgs {
    /// The shard's admin endpoint, host:port (its --admin-listen)
    #[arg(long, value_name = "ADDR")]
    pub admin: String,
    /// The shard's --admin-token
    #[arg(
        long,
        env = "MERIDIAN_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: String,
}

impl RoleArgs for ShardArgs {
    type Config = ShardConfig;

    fn config_file(&self) -> Option<&Path> {
        self.config.as_deref()
    }

    fn overlay(self, c: &mut ShardConfig) {
        let Self {
            config: _,
            id,
            zone,
            listen,
            public_addr,
            zone_bounds,
            tick_hz,
            npcs,
            ticket_key,
            cert,
            key,
            dev_cert,
            redis,
            max_frame_bytes,
            keep_alive_ms,
            idle_timeout_ms,
            admin_listen,
            world,
            region,
            border_notice,
            checkpoint_ms,
            standby_for,
            drain_deadline_ms,
            admin_token,
            action: _,
        } = self;
        set(&mut c.id, id);
        set(&mut c.zone, zone);
        set(&mut c.listen, listen);
        set_some(&mut c.public_addr, public_addr);
        set(&mut c.zone_bounds, zone_bounds);
        set(&mut c.tick_hz, tick_hz);
        set(&mut c.npcs, npcs);
        set_some(&mut c.ticket_key, ticket_key);
        set_some(&mut c.cert, cert);
        set_some(&mut c.key, key);
        set(&mut c.dev_cert, dev_cert);
        set_some(&mut c.redis, redis);
        set(&mut c.max_frame_bytes, max_frame_bytes);
        set(&mut c.keep_alive_ms, keep_alive_ms);
        set(&mut c.idle_timeout_ms, idle_timeout_ms);
        set_some(&mut c.admin_listen, admin_listen);
        set_some(&mut c.world, world);
        set(&mut c.region, region);
        set(&mut c.border_notice, border_notice);
        set(&mut c.checkpoint_ms, checkpoint_ms);
        set_some(&mut c.standby_for, standby_for);
        set(&mut c.drain_deadline_ms, drain_deadline_ms);
        set_some(&mut c.admin_token, admin_token);
    }
}

/// `meridian client`.
#[derive(Args)]
pub struct ClientArgs {
    /// TOML file with this role's settings (keys are the flag names with '_'); flags and
    /// MERIDIAN_* variables override it [default: none]
    #[arg(long, env = "MERIDIAN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Lobby to join through [default: none]
    #[arg(long, env = "MERIDIAN_LOBBY", value_name = "ADDR")]
    pub lobby: Option<SocketAddr>,
    /// Shard to connect to directly with --ticket-key, instead of --lobby (development, until
    /// the lobby exists) [default: none]
    #[arg(long, env = "MERIDIAN_SHARD", value_name = "ADDR")]
    pub shard: Option<SocketAddr>,
    /// SHA-256 of the certificate of the server dialled first, 64 hex characters (':'
    /// separators allowed); the client pins it [default: none]
    #[arg(long, env = "MERIDIAN_CERT_SHA256", value_name = "HEX")]
    pub cert_sha256: Option<String>,
    /// Accept any server certificate (development only), instead of --cert-sha256
    /// [default: false]
    #[arg(
        long, env = "MERIDIAN_INSECURE_DEV", value_name = "BOOL", num_args = 0..=1,
        require_equals = true, default_missing_value = "true",
        value_parser = BoolishValueParser::new()
    )]
    pub insecure_dev: Option<bool>,
    /// Player name, 1 to 32 printable characters [default: player]
    #[arg(long, env = "MERIDIAN_NAME", value_name = "NAME")]
    pub name: Option<String>,
    /// Ticket key of --shard (its --ticket-key): 64 hex characters; the client mints its own
    /// join ticket with it (development only); never logged [default: none]
    #[arg(
        long,
        env = "MERIDIAN_TICKET_KEY",
        hide_env_values = true,
        value_name = "HEX"
    )]
    pub ticket_key: Option<String>,
    /// Name of --shard, its --id: the minted ticket admits to that shard only
    /// [default: shard-1]
    #[arg(long, env = "MERIDIAN_SHARD_ID", value_name = "NAME")]
    pub shard_id: Option<String>,
    /// Zone of --shard, its --zone, written in the minted ticket [default: zone-1]
    #[arg(long, env = "MERIDIAN_ZONE", value_name = "NAME")]
    pub zone: Option<String>,
    /// Leave after this many seconds; play until interrupted if unset [default: none]
    #[arg(long, env = "MERIDIAN_DURATION_S", value_name = "SECONDS")]
    pub duration_s: Option<u64>,
}

impl RoleArgs for ClientArgs {
    type Config = ClientConfig;

    fn config_file(&self) -> Option<&Path> {
        self.config.as_deref()
    }

    fn overlay(self, c: &mut ClientConfig) {
        let Self {
            config: _,
            lobby,
            shard,
            cert_sha256,
            insecure_dev,
            name,
            ticket_key,
            shard_id,
            zone,
            duration_s,
        } = self;
        set_some(&mut c.lobby, lobby);
        set_some(&mut c.shard, shard);
        set_some(&mut c.cert_sha256, cert_sha256);
        set(&mut c.insecure_dev, insecure_dev);
        set(&mut c.name, name);
        set_some(&mut c.ticket_key, ticket_key);
        set(&mut c.shard_id, shard_id);
        set(&mut c.zone, zone);
        set_some(&mut c.duration_s, duration_s);
    }
}

/// `meridian bots`.
#[derive(Args)]
pub struct BotsArgs {
    /// TOML file with this role's settings (keys are the flag names with '_'); flags and
    /// MERIDIAN_* variables override it [default: none]
    #[arg(long, env = "MERIDIAN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Lobby the bots join through [required]
    #[arg(long, env = "MERIDIAN_LOBBY", value_name = "ADDR")]
    pub lobby: Option<SocketAddr>,
    /// SHA-256 of the lobby's certificate, 64 hex characters (':' separators allowed); the
    /// bots pin it [default: none]
    #[arg(long, env = "MERIDIAN_CERT_SHA256", value_name = "HEX")]
    pub cert_sha256: Option<String>,
    /// Accept any server certificate (development only), instead of --cert-sha256
    /// [default: false]
    #[arg(
        long, env = "MERIDIAN_INSECURE_DEV", value_name = "BOOL", num_args = 0..=1,
        require_equals = true, default_missing_value = "true",
        value_parser = BoolishValueParser::new()
    )]
    pub insecure_dev: Option<bool>,
    /// Bots to run, at least 1 [default: 100]
    #[arg(long, env = "MERIDIAN_COUNT", value_name = "N")]
    pub count: Option<u32>,
    /// Bots started per second until --count are in, at least 1 [default: 50]
    #[arg(long, env = "MERIDIAN_RAMP", value_name = "PER_SECOND")]
    pub ramp: Option<u32>,
    /// How long the test runs once started: 90, 90s, 2m or 1h [default: 60s]
    #[arg(long, env = "MERIDIAN_DURATION", value_name = "DURATION")]
    pub duration: Option<String>,
    /// What the bots do [default: wander]
    #[arg(long, env = "MERIDIAN_SCENARIO", value_parser = scenario_parser(), value_name = "SCENARIO")]
    pub scenario: Option<Scenario>,
    /// CSV of round-trip times between regions (like deploy/latency/rtt-10-regions.csv): each
    /// bot's link to each shard gets the delay between the bot's home region and the shard's
    /// region (as the lobby reports it); the geo scenario uses that built-in matrix if unset
    /// [default: none]
    #[arg(long, env = "MERIDIAN_LATENCY_MATRIX", value_name = "FILE")]
    pub latency_matrix: Option<PathBuf>,
    /// Home regions the bots are spread over in turn: names of the latency matrix, each with
    /// an optional weight, like dallas:3,frankfurt,tokyo; every region of the matrix once if
    /// unset [default: none]
    #[arg(long, env = "MERIDIAN_REGIONS", value_name = "LIST")]
    pub regions: Option<String>,
    /// World map the shards run (TOML, like deploy/worlds/dev.toml): the cross scenario walks
    /// over the borders of its zones; required by cross [default: none]
    #[arg(long, env = "MERIDIAN_WORLD", value_name = "FILE")]
    pub world: Option<PathBuf>,
    /// Seed of the bots' random choices, to repeat a run; random if unset, and logged
    /// [default: none]
    #[arg(long, env = "MERIDIAN_SEED", value_name = "N")]
    pub seed: Option<u64>,
    /// Write the JSON report to this file, also when the run fails or is interrupted
    /// [default: none]
    #[arg(long, env = "MERIDIAN_REPORT", value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Shards' admin endpoints, host:port,host:port…: the bots read their tick status once a
    /// second for the report's tick-time chart [default: none]
    #[arg(long, env = "MERIDIAN_SHARD_METRICS", value_name = "ADDRS")]
    pub shard_metrics: Option<String>,
}

impl RoleArgs for BotsArgs {
    type Config = BotsConfig;

    fn config_file(&self) -> Option<&Path> {
        self.config.as_deref()
    }

    fn overlay(self, c: &mut BotsConfig) {
        let Self {
            config: _,
            lobby,
            cert_sha256,
            insecure_dev,
            count,
            ramp,
            duration,
            scenario,
            latency_matrix,
            regions,
            world,
            seed,
            report,
            shard_metrics,
        } = self;
        set_some(&mut c.lobby, lobby);
        set_some(&mut c.cert_sha256, cert_sha256);
        set(&mut c.insecure_dev, insecure_dev);
        set(&mut c.count, count);
        set(&mut c.ramp, ramp);
        set(&mut c.duration, duration);
        set(&mut c.scenario, scenario);
        set_some(&mut c.latency_matrix, latency_matrix);
        set_some(&mut c.regions, regions);
        set_some(&mut c.world, world);
        set_some(&mut c.seed, seed);
        set_some(&mut c.report, report);
        set_some(&mut c.shard_metrics, shard_metrics);
    }
}

/// `meridian audit`.
#[derive(Args)]
pub struct AuditArgs {
    /// TOML file with this role's settings (keys are the flag names with '_'); flags and
    /// MERIDIAN_* variables override it [default: none]
    #[arg(long, env = "MERIDIAN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Redis URL of the cluster to audit: redis://[user:password@]host:port[/db], or a Redis
    /// Cluster's node URLs separated by commas (redis://h1:p1,redis://h2:p2) [required]
    #[arg(
        long,
        env = "MERIDIAN_REDIS",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub redis: Option<String>,
    /// Key prefix of the deployment to audit (the shards' and lobby's) [default: mer:]
    #[arg(long, env = "MERIDIAN_PREFIX", value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// Time between the audit's two passes, milliseconds, at most 60000: only what is wrong in
    /// both counts, so handoffs and joins in flight settle [default: 1000]
    #[arg(long, env = "MERIDIAN_SETTLE_MS", value_name = "MS")]
    pub settle_ms: Option<u64>,
    /// Print the report as JSON instead of a table [default: false]
    #[arg(
        long, env = "MERIDIAN_JSON", value_name = "BOOL", num_args = 0..=1,
        require_equals = true, default_missing_value = "true",
        value_parser = BoolishValueParser::new()
    )]
    pub json: Option<bool>,
}

impl RoleArgs for AuditArgs {
    type Config = AuditConfig;

    fn config_file(&self) -> Option<&Path> {
        self.config.as_deref()
    }

    fn overlay(self, c: &mut AuditConfig) {
        let Self {
            config: _,
            redis,
            prefix,
            settle_ms,
            json,
        } = self;
        set(&mut c.redis, redis);
        set(&mut c.prefix, prefix);
        set(&mut c.settle_ms, settle_ms);
        set(&mut c.json, json);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use serde::de::{Deserializer, Error as _, Visitor};

    #[test]
    fn clap_definition_is_consistent() {
        command().debug_assert();
        let version = command().render_version();
        assert_eq!(
            version.trim(),
            format!("meridian {} (protocol 1)", env!("CARGO_PKG_VERSION"))
        );
    }

    /// The field names of a `#[derive(Deserialize)]` struct, read from what the derive passes
    /// to `deserialize_struct`.
    fn field_names<T: DeserializeOwned>() -> Vec<&'static str> {
        struct Fields<'a>(&'a mut Vec<&'static str>);
        impl<'de> Deserializer<'de> for Fields<'_> {
            type Error = serde::de::value::Error;
            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
                Err(Self::Error::custom("not a struct"))
            }
            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _name: &'static str,
                fields: &'static [&'static str],
                _visitor: V,
            ) -> Result<V::Value, Self::Error> {
                self.0.extend_from_slice(fields);
                Err(Self::Error::custom("fields read"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
                byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
                identifier ignored_any
            }
        }
        let mut fields = Vec::new();
        let _ = T::deserialize(Fields(&mut fields));
        fields
    }

    /// Every field of the role's config has a flag `--kebab-case`, a variable
    /// `MERIDIAN_UPPER_CASE` and a help text that states the default `Default` really has;
    /// every flag but `--config` is a field.
    fn check_role<C: DeserializeOwned + Serialize + Default>(role: &str) {
        let cli = command();
        let sub = cli.find_subcommand(role).expect("invariant: role exists");
        let defaults = toml::Table::try_from(C::default()).expect("defaults serialize");
        let fields = field_names::<C>();
        assert!(!fields.is_empty(), "{role}: no fields read");
        for field in &fields {
            let arg = sub
                .get_arguments()
                .find(|a| a.get_id().as_str() == *field)
                .unwrap_or_else(|| panic!("{role}: field `{field}` has no flag"));
            assert_eq!(
                arg.get_long(),
                Some(field.replace('_', "-").as_str()),
                "{role} {field}"
            );
            let env = format!("MERIDIAN_{}", field.to_uppercase());
            assert_eq!(
                arg.get_env(),
                Some(std::ffi::OsStr::new(&env)),
                "{role} {field}"
            );
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            match defaults.get(*field) {
                Some(toml::Value::String(s)) if s.is_empty() => {
                    assert!(help.contains("[required]"), "{role} --{field}: {help}");
                }
                Some(value) => {
                    let shown = match value {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    let stated = format!("[default: {shown}]");
                    assert!(
                        help.contains(&stated),
                        "{role} --{field}: help lacks {stated}: {help}"
                    );
                }
                None => assert!(
                    help.contains("[default: none]") || help.contains("[required]"),
                    "{role} --{field}: help states no default: {help}"
                ),
            }
        }
        for arg in sub.get_arguments() {
            let id = arg.get_id().as_str();
            if ["config", "log_format", "check_config", "help", "version"].contains(&id) {
                continue;
            }
            assert!(
                fields.contains(&id),
                "{role}: flag `{id}` sets no config field"
            );
        }
        let config = sub
            .get_arguments()
            .find(|a| a.get_id() == "config")
            .expect("--config");
        assert_eq!(
            config.get_env(),
            Some(std::ffi::OsStr::new("MERIDIAN_CONFIG"))
        );
    }

    #[test]
    fn every_field_has_a_flag_a_variable_and_its_default_in_help() {
        check_role::<DevConfig>("dev");
        check_role::<LobbyConfig>("lobby");
        check_role::<ShardConfig>("shard");
        check_role::<ClientConfig>("client");
        check_role::<BotsConfig>("bots");
        check_role::<AuditConfig>("audit");
    }

    fn try_parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::from_arg_matches(&command().try_get_matches_from(args)?)
    }

    fn parse(args: &[&str]) -> Cli {
        try_parse(args).expect("valid command line")
    }

    #[test]
    fn flags_overlay_the_file_and_absent_flags_do_not() {
        let Command::Shard(args) = parse(&["meridian", "shard", "--tick-hz", "60"]).command else {
            panic!("shard");
        };
        let mut config = ShardConfig {
            npcs: 5,
            dev_cert: true,
            ..ShardConfig::default()
        };
        args.overlay(&mut config);
        assert_eq!(
            (config.tick_hz, config.npcs, config.dev_cert),
            (60, 5, true)
        );
    }

    #[test]
    fn boolean_flags_can_say_false() {
        let Command::Shard(args) = parse(&["meridian", "shard", "--dev-cert=false"]).command else {
            panic!("shard");
        };
        let mut config = ShardConfig {
            dev_cert: true,
            ..ShardConfig::default()
        };
        args.overlay(&mut config);
        assert!(!config.dev_cert);
        let Command::Bots(args) = parse(&["meridian", "bots", "--insecure-dev"]).command else {
            panic!("bots");
        };
        let mut config = BotsConfig::default();
        args.overlay(&mut config);
        assert!(config.insecure_dev);
    }

    #[test]
    fn client_direct_flags_overlay() {
        let Command::Client(args) = parse(&[
            "meridian",
            "client",
            "--ticket-key",
            "ab",
            "--shard-id",
            "s1",
            "--zone",
            "z1",
        ])
        .command
        else {
            panic!("client");
        };
        let mut config = ClientConfig::default();
        args.overlay(&mut config);
        assert_eq!(
            (
                config.ticket_key.as_deref(),
                config.shard_id.as_str(),
                config.zone.as_str()
            ),
            (Some("ab"), "s1", "z1")
        );
        let Command::Client(args) = parse(&["meridian", "client"]).command else {
            panic!("client");
        };
        let mut config = ClientConfig::default();
        args.overlay(&mut config);
        assert_eq!(config, ClientConfig::default());
    }

    #[test]
    fn bots_and_dev_lobby_flags_overlay() {
        let Command::Bots(args) = parse(&[
            "meridian",
            "bots",
            "--world",
            "w.toml",
            "--seed",
            "42",
            "--regions",
            "tokyo:2,dallas",
            "--latency-matrix",
            "m.csv",
        ])
        .command
        else {
            panic!("bots");
        };
        let mut config = BotsConfig {
            count: 7,
            ..BotsConfig::default()
        };
        args.overlay(&mut config);
        assert_eq!(
            (
                config.world.as_deref(),
                config.seed,
                config.regions.as_deref(),
                config.latency_matrix.as_deref(),
                config.count
            ),
            (
                Some(Path::new("w.toml")),
                Some(42),
                Some("tokyo:2,dallas"),
                Some(Path::new("m.csv")),
                7
            )
        );
        assert!(try_parse(&["meridian", "bots", "--seed", "-1"]).is_err());
        let Command::Bots(args) = parse(&[
            "meridian",
            "bots",
            "--shard-metrics",
            "127.0.0.1:7201,127.0.0.1:7202",
        ])
        .command
        else {
            panic!("bots");
        };
        let mut config = BotsConfig::default();
        args.overlay(&mut config);
        assert_eq!(
            config.shard_metrics.as_deref(),
            Some("127.0.0.1:7201,127.0.0.1:7202")
        );
        let Command::Dev(args) =
            parse(&["meridian", "dev", "--lobby-listen", "127.0.0.1:0"]).command
        else {
            panic!("dev");
        };
        let mut config = DevConfig::default();
        args.overlay(&mut config);
        assert_eq!(config.lobby_listen, "127.0.0.1:0".parse().expect("literal"));
    }

    #[test]
    fn scenarios_and_log_formats_parse() {
        let cli = parse(&[
            "meridian",
            "bots",
            "--scenario",
            "geo",
            "--log-format",
            "json",
        ]);
        assert_eq!(cli.log_format, Some(LogFormat::Json));
        let Command::Bots(args) = cli.command else {
            panic!("bots")
        };
        assert_eq!(args.scenario, Some(Scenario::Geo));
        assert!(try_parse(&["meridian", "bots", "--scenario", "dance"]).is_err());
    }

    #[test]
    fn audit_flags_overlay_the_file_and_absent_flags_do_not() {
        let args = [
            "meridian",
            "audit",
            "--redis",
            "redis://h",
            "--settle-ms",
            "0",
            "--json",
        ];
        let Command::Audit(args) = parse(&args).command else {
            panic!("audit");
        };
        let mut config = AuditConfig {
            prefix: "file:".into(),
            ..AuditConfig::default()
        };
        args.overlay(&mut config);
        assert_eq!(
            (
                config.redis.as_str(),
                config.prefix.as_str(),
                config.settle_ms,
                config.json
            ),
            ("redis://h", "file:", 0, true)
        );
    }

    #[test]
    fn negative_zone_bounds_are_a_value_not_a_flag() {
        let Command::Shard(args) =
            parse(&["meridian", "shard", "--zone-bounds", "-500,0,500,1000"]).command
        else {
            panic!("shard");
        };
        assert_eq!(args.zone_bounds.as_deref(), Some("-500,0,500,1000"));
    }
}
