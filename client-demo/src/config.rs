//! Configuration of the client roles: [`ClientConfig`] (`meridian client`, the headless demo
//! client) and [`BotsConfig`] (`meridian bots`, load testing), their checks ([`ConfigError`]),
//! the bot [`Scenario`]s and the duration syntax ([`parse_duration`]).
//!
//! `main` builds them (flags > environment > file > defaults) and validates them once; this
//! crate never reads the environment.

use meridian_protocol::ids::NameError;
use meridian_protocol::lobby::{PlayerNameError, validate_player_name};
use meridian_protocol::quic::CertSha256;
use meridian_protocol::ticket::{TicketKeyError, parse_hex_32};
use meridian_protocol::{ShardId, ZoneId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// What a secret is replaced with wherever a config is shown.
const REDACTED: &str = "<redacted>";

/// What the bots do once in the world.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Join and stand still: measures the cost of connected players alone.
    Idle,
    /// Walk at random inside the zone where each bot spawned.
    #[default]
    Wander,
    /// Walk across the nearest zone border and back, forever (about one bot in four also
    /// hovers on the border line for a few seconds after each return): exercises handoff and
    /// its hysteresis. Needs the world layout.
    Cross,
    /// Everybody converges on one point: worst case for interest management.
    Swarm,
    /// Join, play briefly, leave, rejoin: exercises sessions and resume.
    Churn,
    /// Bots spread over regions with simulated latency: exercises nearest-shard routing.
    Geo,
}

impl Scenario {
    /// Every scenario, in documentation order.
    pub const ALL: [Scenario; 6] = [
        Scenario::Idle,
        Scenario::Wander,
        Scenario::Cross,
        Scenario::Swarm,
        Scenario::Churn,
        Scenario::Geo,
    ];

    /// The name used in flags and config files.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Idle => "idle",
            Scenario::Wander => "wander",
            Scenario::Cross => "cross",
            Scenario::Swarm => "swarm",
            Scenario::Churn => "churn",
            Scenario::Geo => "geo",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of [`Scenario::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scenario `{name}`: expected idle, wander, cross, swarm, churn or geo")]
pub struct UnknownScenario {
    /// The name given.
    pub name: String,
}

impl FromStr for Scenario {
    type Err = UnknownScenario;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|scenario| scenario.as_str() == s)
            .ok_or_else(|| UnknownScenario { name: s.to_owned() })
    }
}

/// A duration that [`parse_duration`] cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not a whole number followed by an optional unit `s`, `m` or `h`.
    #[error(
        "invalid duration `{value}`: expected a whole number of seconds, minutes or hours (90, 90s, 2m, 1h)"
    )]
    Syntax {
        /// The text given.
        value: String,
    },
    /// Too long to represent in seconds.
    #[error("duration `{value}` is too long")]
    TooLong {
        /// The text given.
        value: String,
    },
}

/// Reads a duration: a whole number with an optional unit, `s` (the default), `m` or `h`:
/// `"90"`, `"90s"`, `"2m"`, `"1h"`. Zero is accepted here; roles that need a positive duration
/// check it themselves.
pub fn parse_duration(value: &str) -> Result<Duration, DurationError> {
    let text = value.trim();
    let (digits, seconds_per_unit) = match text.as_bytes().last() {
        Some(b's') => (&text[..text.len() - 1], 1),
        Some(b'm') => (&text[..text.len() - 1], 60),
        Some(b'h') => (&text[..text.len() - 1], 3600),
        _ => (text, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DurationError::Syntax {
            value: value.to_owned(),
        });
    }
    let too_long = || DurationError::TooLong {
        value: value.to_owned(),
    };
    let count: u64 = digits.parse().map_err(|_| too_long())?;
    let seconds = count.checked_mul(seconds_per_unit).ok_or_else(too_long)?;
    Ok(Duration::from_secs(seconds))
}

/// Configuration of the headless demo client: joins through the lobby (or, for development,
/// straight to a shard with a join ticket it mints itself with the shard's ticket key), plays,
/// prints what it sees.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// Lobby to join through.
    pub lobby: Option<SocketAddr>,
    /// Shard to connect to directly, with `ticket_key` (instead of `lobby`).
    pub shard: Option<SocketAddr>,
    /// SHA-256 of the certificate of the server dialled first (64 hexadecimal characters,
    /// `:` separators allowed): the client pins it.
    pub cert_sha256: Option<String>,
    /// Accept any server certificate (development only), instead of `cert_sha256`.
    pub insecure_dev: bool,
    /// Player name (1 to 32 printable characters).
    pub name: String,
    /// Key shared with the `shard` (64 hexadecimal characters, 32 bytes): the client mints its
    /// own join ticket with it. Development only, until the lobby exists. Never logged.
    pub ticket_key: Option<String>,
    /// Name of the `shard` (its `--id`): the minted ticket admits to this shard only.
    pub shard_id: String,
    /// Zone of the `shard` (its `--zone`), written in the minted ticket.
    pub zone: String,
    /// Leave after this many seconds; play until interrupted if unset.
    pub duration_s: Option<u64>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            lobby: None,
            shard: None,
            cert_sha256: None,
            insecure_dev: false,
            name: "player".to_owned(),
            ticket_key: None,
            shard_id: "shard-1".to_owned(),
            zone: "zone-1".to_owned(),
            duration_s: None,
        }
    }
}

impl fmt::Debug for ClientConfig {
    /// Shows every field, with the ticket key redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured so that a new field cannot be forgotten here.
        let Self {
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
        f.debug_struct("ClientConfig")
            .field("lobby", lobby)
            .field("shard", shard)
            .field("cert_sha256", cert_sha256)
            .field("insecure_dev", insecure_dev)
            .field("name", name)
            .field("ticket_key", &ticket_key.as_ref().map(|_| REDACTED))
            .field("shard_id", shard_id)
            .field("zone", zone)
            .field("duration_s", duration_s)
            .finish()
    }
}

/// Configuration of a load test: how many bots join through the lobby, how fast, doing what,
/// for how long, and where the report goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BotsConfig {
    /// Lobby the bots join through. Required.
    pub lobby: Option<SocketAddr>,
    /// SHA-256 of the lobby's certificate (64 hexadecimal characters): the bots pin it.
    pub cert_sha256: Option<String>,
    /// Accept any server certificate (development only), instead of `cert_sha256`.
    pub insecure_dev: bool,
    /// Bots to run (at least 1).
    pub count: u32,
    /// Bots started per second until `count` are in (at least 1).
    pub ramp: u32,
    /// How long the test runs once started (`90`, `90s`, `2m`, `1h`).
    pub duration: String,
    /// What the bots do.
    pub scenario: Scenario,
    /// CSV of round-trip times between regions for the link conditioner (the format of
    /// `deploy/latency/rtt-10-regions.csv`). The `geo` scenario uses that built-in matrix when
    /// unset; with another scenario a matrix conditions the bots' links all the same.
    pub latency_matrix: Option<PathBuf>,
    /// Home regions the bots are spread over, in turn: comma-separated names of the latency
    /// matrix, each with an optional whole weight (`dallas:3,frankfurt,tokyo`: three bots from
    /// Dallas for each one from Frankfurt and from Tokyo). Every region of the matrix, once, if
    /// unset. Needs a matrix.
    pub regions: Option<String>,
    /// World map (TOML, the format of `deploy/worlds/dev.toml`) the shards run: the `cross`
    /// scenario walks over the borders of its zones. Required by `cross`.
    pub world: Option<PathBuf>,
    /// Seed of the bots' random choices (headings, churn periods); random if unset, and
    /// logged, so that a run can be repeated.
    pub seed: Option<u64>,
    /// Where to write the JSON report (and, next to it, the HTML page: `r.json` → `r.html`);
    /// none if unset.
    pub report: Option<PathBuf>,
    /// Shards' admin endpoints (`host:port`, comma-separated) whose tick status the bots read
    /// once a second for the report's tick-time chart; none if unset.
    pub shard_metrics: Option<String>,
}

impl Default for BotsConfig {
    fn default() -> Self {
        Self {
            lobby: None,
            cert_sha256: None,
            insecure_dev: false,
            count: 100,
            ramp: 50,
            duration: "60s".to_owned(),
            scenario: Scenario::Wander,
            latency_matrix: None,
            regions: None,
            world: None,
            seed: None,
            report: None,
            shard_metrics: None,
        }
    }
}

/// Why a [`ClientConfig`] or a [`BotsConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// An entry of `--shard-metrics` is not `host:port`.
    #[error("--shard-metrics: {entry:?} is not an admin endpoint host:port")]
    BadShardMetrics {
        /// The entry.
        entry: String,
    },
    /// The client has nowhere to go.
    #[error("no server: set --lobby (join through the lobby) or --shard with --ticket-key")]
    NoServer,
    /// Both a lobby and a shard: the client dials one or the other.
    #[error("--lobby {lobby} and --shard {shard} are mutually exclusive")]
    LobbyAndShard {
        /// The lobby given.
        lobby: SocketAddr,
        /// The shard given.
        shard: SocketAddr,
    },
    /// A direct shard connection needs the shard's ticket key, to mint a join ticket.
    #[error(
        "--shard {shard} needs --ticket-key, the key shared with the shard (shards admit only players with a signed ticket)"
    )]
    ShardWithoutTicketKey {
        /// The shard given.
        shard: SocketAddr,
    },
    /// A ticket key is only used with a direct shard connection; the lobby issues tickets.
    #[error("--ticket-key is only used with --shard; the lobby issues tickets itself")]
    TicketKeyWithoutShard,
    /// The ticket key is not 64 hexadecimal characters (its value is never shown).
    #[error("invalid ticket key (--ticket-key / MERIDIAN_TICKET_KEY): {source}")]
    BadTicketKey {
        /// What is wrong with it.
        source: TicketKeyError,
    },
    /// The shard id is not a valid name.
    #[error("invalid --shard-id: {source}")]
    BadShardId {
        /// What is wrong with it.
        source: NameError,
    },
    /// The zone is not a valid name.
    #[error("invalid --zone: {source}")]
    BadZone {
        /// What is wrong with it.
        source: NameError,
    },
    /// The bots have no lobby.
    #[error("missing lobby address: set --lobby or MERIDIAN_LOBBY")]
    MissingLobby,
    /// Neither a certificate pin nor `insecure_dev`.
    #[error(
        "no certificate pin: set --cert-sha256 (the server's certificate SHA-256, 64 hex characters) or --insecure-dev"
    )]
    MissingPin,
    /// Both a pin and `insecure_dev`.
    #[error("--cert-sha256 and --insecure-dev are mutually exclusive")]
    PinAndInsecure,
    /// The pin is not a SHA-256 in hexadecimal.
    #[error("cert_sha256 `{value}` is not a SHA-256 fingerprint (64 hexadecimal characters)")]
    BadCertSha256 {
        /// The value given.
        value: String,
    },
    /// The player name was refused.
    #[error("invalid name: {source}")]
    BadName {
        /// What is wrong with it.
        source: PlayerNameError,
    },
    /// A zero duration would leave at once.
    #[error("{field} must be more than zero seconds")]
    ZeroDuration {
        /// The field (`duration_s` or `duration`).
        field: &'static str,
    },
    /// No bots.
    #[error("count must be at least 1")]
    ZeroCount,
    /// More bots than one process runs.
    #[error("count {count} is more than {max} bots in one process; run several `meridian bots`")]
    TooManyBots {
        /// The count given.
        count: u32,
        /// [`MAX_BOTS`].
        max: u32,
    },
    /// A duration longer than a run may last.
    #[error("{field} `{value}` is longer than {max_days} days")]
    DurationTooLong {
        /// The field.
        field: &'static str,
        /// The value given.
        value: String,
        /// The limit, days.
        max_days: u64,
    },
    /// A ramp of zero would never start a bot.
    #[error("ramp must be at least 1 bot per second")]
    ZeroRamp,
    /// The duration cannot be read.
    #[error(transparent)]
    Duration(#[from] DurationError),
    /// A region name is empty or has characters other than `[A-Za-z0-9._-]`, or its weight
    /// is not a whole number from 1 to [`MAX_REGION_WEIGHT`].
    #[error(
        "regions `{value}` must be comma-separated names of letters, digits, '-', '_' or '.', \
         each with an optional weight `:N` (1 to {MAX_REGION_WEIGHT}), like `dallas:3,tokyo`"
    )]
    BadRegions {
        /// The value given.
        value: String,
    },
    /// Home regions without a latency matrix to place them in.
    #[error("--regions needs a latency matrix: set --latency-matrix FILE or --scenario geo")]
    RegionsWithoutMatrix,
    /// The `cross` scenario without the world map.
    #[error(
        "scenario `cross` needs --world FILE, the world map the shards run, to find the zone borders"
    )]
    CrossWithoutWorld,
}

/// The most bots one `meridian bots` process runs.
pub const MAX_BOTS: u32 = 100_000;

/// The longest a bots run may last.
pub const MAX_BOTS_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The largest weight of a region in [`BotsConfig::regions`].
pub const MAX_REGION_WEIGHT: u32 = 1000;

/// Reads home regions written `name[:weight],…` (see [`BotsConfig::regions`]): each name with
/// its weight (1 if not given), in the order given. Names are not checked against a matrix.
pub fn parse_regions(value: &str) -> Result<Vec<(String, u32)>, ConfigError> {
    let bad = || ConfigError::BadRegions {
        value: value.to_owned(),
    };
    let name_ok = |name: &str| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    let mut out = Vec::new();
    for item in value.split(',') {
        let (name, weight) = match item.split_once(':') {
            Some((name, weight)) => {
                let weight = weight.trim();
                if weight.is_empty() || !weight.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let weight: u32 = weight.parse().map_err(|_| bad())?;
                (name.trim(), weight)
            }
            None => (item.trim(), 1),
        };
        if !name_ok(name) || !(1..=MAX_REGION_WEIGHT).contains(&weight) {
            return Err(bad());
        }
        out.push((name.to_owned(), weight));
    }
    Ok(out)
}

/// Reads a certificate fingerprint: 64 hexadecimal characters, optionally `:`-separated pairs
/// (as `openssl x509 -fingerprint -sha256` prints them).
pub fn parse_cert_sha256(value: &str) -> Result<CertSha256, ConfigError> {
    let hex: String = value.trim().chars().filter(|c| *c != ':').collect();
    parse_hex_32(&hex).map_err(|_| ConfigError::BadCertSha256 {
        value: value.to_owned(),
    })
}

fn check_pin(cert_sha256: Option<&str>, insecure_dev: bool) -> Result<(), ConfigError> {
    match (cert_sha256, insecure_dev) {
        (None, false) => Err(ConfigError::MissingPin),
        (Some(_), true) => Err(ConfigError::PinAndInsecure),
        (Some(pin), false) => parse_cert_sha256(pin).map(|_| ()),
        (None, true) => Ok(()),
    }
}

impl ClientConfig {
    /// Checks every field; `main` calls it once before running the role.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (self.lobby, self.shard, &self.ticket_key) {
            (None, None, _) => return Err(ConfigError::NoServer),
            (Some(lobby), Some(shard), _) => {
                return Err(ConfigError::LobbyAndShard { lobby, shard });
            }
            (None, Some(shard), None) => {
                return Err(ConfigError::ShardWithoutTicketKey { shard });
            }
            (Some(_), None, Some(_)) => return Err(ConfigError::TicketKeyWithoutShard),
            (None, Some(_), Some(key)) => {
                parse_hex_32(key).map_err(|source| ConfigError::BadTicketKey { source })?;
            }
            (Some(_), None, None) => {}
        }
        self.shard_id()?;
        self.zone_id()?;
        check_pin(self.cert_sha256.as_deref(), self.insecure_dev)?;
        validate_player_name(&self.name).map_err(|source| ConfigError::BadName { source })?;
        if self.duration_s == Some(0) {
            return Err(ConfigError::ZeroDuration {
                field: "duration_s",
            });
        }
        Ok(())
    }

    /// `shard_id` as a [`ShardId`].
    pub fn shard_id(&self) -> Result<ShardId, ConfigError> {
        ShardId::new(self.shard_id.as_str()).map_err(|source| ConfigError::BadShardId { source })
    }

    /// `zone` as a [`ZoneId`].
    pub fn zone_id(&self) -> Result<ZoneId, ConfigError> {
        ZoneId::new(self.zone.as_str()).map_err(|source| ConfigError::BadZone { source })
    }
}

impl BotsConfig {
    /// Checks every field; `main` calls it once before running the role.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.lobby.is_none() {
            return Err(ConfigError::MissingLobby);
        }
        check_pin(self.cert_sha256.as_deref(), self.insecure_dev)?;
        if self.count == 0 {
            return Err(ConfigError::ZeroCount);
        }
        if self.count > MAX_BOTS {
            return Err(ConfigError::TooManyBots {
                count: self.count,
                max: MAX_BOTS,
            });
        }
        if self.ramp == 0 {
            return Err(ConfigError::ZeroRamp);
        }
        let duration = self.run_for()?;
        if duration.is_zero() {
            return Err(ConfigError::ZeroDuration { field: "duration" });
        }
        if duration > MAX_BOTS_DURATION {
            return Err(ConfigError::DurationTooLong {
                field: "duration",
                value: self.duration.clone(),
                max_days: MAX_BOTS_DURATION.as_secs() / 86_400,
            });
        }
        if let Some(regions) = &self.regions {
            parse_regions(regions)?;
            if !self.conditions_links() {
                return Err(ConfigError::RegionsWithoutMatrix);
            }
        }
        if self.scenario == Scenario::Cross && self.world.is_none() {
            return Err(ConfigError::CrossWithoutWorld);
        }
        self.shard_metrics_addrs()?;
        Ok(())
    }

    /// The admin endpoints of `shard_metrics`, each `host:port` with a port number; none if
    /// unset.
    pub fn shard_metrics_addrs(&self) -> Result<Vec<String>, ConfigError> {
        let Some(list) = &self.shard_metrics else {
            return Ok(Vec::new());
        };
        list.split(',')
            .map(|entry| {
                let entry = entry.trim();
                let ok = entry
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
                if ok {
                    Ok(entry.to_owned())
                } else {
                    Err(ConfigError::BadShardMetrics {
                        entry: entry.to_owned(),
                    })
                }
            })
            .collect()
    }

    /// Whether the bots' links go through the link conditioner: with a latency matrix, or in
    /// the `geo` scenario (which uses the built-in matrix without one).
    pub fn conditions_links(&self) -> bool {
        self.latency_matrix.is_some() || self.scenario == Scenario::Geo
    }

    /// How long the test runs, from `duration`.
    pub fn run_for(&self) -> Result<Duration, DurationError> {
        parse_duration(&self.duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const KEY: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("literal")
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration(" 0 "), Ok(Duration::ZERO));
        for bad in [
            "", "s", "-5", "1.5m", "10d", "5 m", "m5", "1h30m", "ten", "+3",
        ] {
            assert_eq!(
                parse_duration(bad),
                Err(DurationError::Syntax {
                    value: bad.to_owned()
                }),
                "{bad:?}"
            );
        }
        let huge = format!("{}h", u64::MAX);
        assert_eq!(
            parse_duration(&huge),
            Err(DurationError::TooLong {
                value: huge.clone()
            })
        );
        assert!(matches!(
            parse_duration("99999999999999999999999"),
            Err(DurationError::TooLong { .. })
        ));
        let msg = parse_duration("5x").expect_err("bad unit").to_string();
        assert!(msg.contains("`5x`"), "{msg}");
    }

    #[test]
    fn scenarios_round_trip() {
        for scenario in Scenario::ALL {
            assert_eq!(scenario.as_str().parse::<Scenario>(), Ok(scenario));
        }
        assert_eq!(Scenario::default(), Scenario::Wander);
        assert!("Wander".parse::<Scenario>().is_err());
    }

    #[test]
    fn cert_pins() {
        assert!(parse_cert_sha256(PIN).is_ok());
        let colons = PIN
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).to_uppercase())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(parse_cert_sha256(&colons), parse_cert_sha256(PIN));
        assert_eq!(
            parse_cert_sha256("abc"),
            Err(ConfigError::BadCertSha256 {
                value: "abc".into()
            })
        );
    }

    fn client() -> ClientConfig {
        ClientConfig {
            lobby: Some(addr("127.0.0.1:7100")),
            insecure_dev: true,
            ..ClientConfig::default()
        }
    }

    /// A valid direct-to-shard client.
    fn direct() -> ClientConfig {
        ClientConfig {
            lobby: None,
            shard: Some(addr("127.0.0.1:7000")),
            ticket_key: Some(KEY.into()),
            ..client()
        }
    }

    #[test]
    fn client_rules() {
        assert_eq!(client().validate(), Ok(()));
        assert_eq!(
            ClientConfig::default().validate(),
            Err(ConfigError::NoServer)
        );
        let shard = addr("127.0.0.1:7000");
        let direct = direct();
        assert_eq!(direct.validate(), Ok(()));
        let missing_key = ClientConfig {
            ticket_key: None,
            ..direct.clone()
        }
        .validate()
        .expect_err("no key");
        assert_eq!(missing_key, ConfigError::ShardWithoutTicketKey { shard });
        let msg = missing_key.to_string();
        assert!(
            msg.contains("--shard 127.0.0.1:7000") && msg.contains("--ticket-key"),
            "{msg}"
        );
        assert!(matches!(
            ClientConfig {
                lobby: Some(addr("127.0.0.1:7100")),
                ..direct.clone()
            }
            .validate(),
            Err(ConfigError::LobbyAndShard { .. })
        ));
        let key_alone = ClientConfig {
            ticket_key: Some(KEY.into()),
            ..client()
        }
        .validate()
        .expect_err("key without shard");
        assert_eq!(key_alone, ConfigError::TicketKeyWithoutShard);
        let msg = key_alone.to_string();
        assert!(
            msg.contains("--ticket-key") && msg.contains("--shard"),
            "{msg}"
        );
        assert_eq!(
            ClientConfig {
                insecure_dev: false,
                ..client()
            }
            .validate(),
            Err(ConfigError::MissingPin)
        );
        assert_eq!(
            ClientConfig {
                cert_sha256: Some(PIN.into()),
                ..client()
            }
            .validate(),
            Err(ConfigError::PinAndInsecure)
        );
        assert_eq!(
            ClientConfig {
                cert_sha256: Some(PIN.into()),
                insecure_dev: false,
                ..client()
            }
            .validate(),
            Ok(())
        );
        assert_eq!(
            ClientConfig {
                duration_s: Some(0),
                ..client()
            }
            .validate(),
            Err(ConfigError::ZeroDuration {
                field: "duration_s"
            })
        );
    }

    #[test]
    fn client_ticket_key_and_shard_names() {
        let bad_key = format!("{}zz", &KEY[..62]);
        let err = ClientConfig {
            ticket_key: Some(bad_key),
            ..direct()
        }
        .validate()
        .expect_err("not hex");
        assert!(matches!(err, ConfigError::BadTicketKey { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("--ticket-key") && !msg.contains(&KEY[..62]),
            "{msg}"
        );
        let cfg = direct();
        assert_eq!(cfg.shard_id(), Ok(ShardId::new("shard-1").expect("valid")));
        assert_eq!(cfg.zone_id(), Ok(ZoneId::new("zone-1").expect("valid")));
        let err = ClientConfig {
            shard_id: "a b".into(),
            ..direct()
        }
        .validate()
        .expect_err("bad shard id");
        assert!(matches!(err, ConfigError::BadShardId { .. }), "{err:?}");
        assert!(err.to_string().contains("--shard-id"), "{err}");
        let err = ClientConfig {
            zone: String::new(),
            ..direct()
        }
        .validate()
        .expect_err("bad zone");
        assert!(matches!(err, ConfigError::BadZone { .. }), "{err:?}");
        assert!(err.to_string().contains("--zone"), "{err}");
    }

    #[test]
    fn client_names() {
        assert_eq!(
            ClientConfig {
                name: "x".repeat(32),
                ..client()
            }
            .validate(),
            Ok(())
        );
        for bad in [
            String::new(),
            "   ".into(),
            "x".repeat(33),
            "bad\nname".into(),
        ] {
            assert!(
                matches!(
                    ClientConfig {
                        name: bad.clone(),
                        ..client()
                    }
                    .validate(),
                    Err(ConfigError::BadName { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn client_debug_redacts_the_ticket_key() {
        let cfg = ClientConfig {
            shard_id: "eu-1".into(),
            ..direct()
        };
        let shown = format!("{cfg:?}");
        assert!(
            shown.contains(&format!("ticket_key: Some(\"{REDACTED}\")")) && !shown.contains(KEY),
            "{shown}"
        );
        assert!(
            shown.contains("eu-1") && shown.contains("zone-1"),
            "{shown}"
        );
    }

    fn bots() -> BotsConfig {
        BotsConfig {
            lobby: Some(addr("127.0.0.1:7100")),
            insecure_dev: true,
            ..BotsConfig::default()
        }
    }

    #[test]
    fn shard_metrics_are_host_port_lists() {
        assert_eq!(bots().shard_metrics_addrs(), Ok(Vec::new()));
        let listed = BotsConfig {
            shard_metrics: Some("127.0.0.1:7201, shard-b:7202,[::1]:7203".to_owned()),
            ..bots()
        };
        assert_eq!(listed.validate(), Ok(()));
        assert_eq!(
            listed.shard_metrics_addrs(),
            Ok(vec![
                "127.0.0.1:7201".to_owned(),
                "shard-b:7202".to_owned(),
                "[::1]:7203".to_owned()
            ])
        );
        for bad in [
            "",
            "host",
            "host:",
            ":7201",
            "host:port",
            "a:1,,b:2",
            "h:70000",
        ] {
            let cfg = BotsConfig {
                shard_metrics: Some(bad.to_owned()),
                ..bots()
            };
            assert!(
                matches!(cfg.validate(), Err(ConfigError::BadShardMetrics { .. })),
                "{bad:?}: {:?}",
                cfg.validate()
            );
        }
    }

    #[test]
    fn bots_rules() {
        assert_eq!(bots().validate(), Ok(()));
        let d = BotsConfig::default();
        assert_eq!(
            (d.count, d.ramp, d.duration.as_str(), d.scenario),
            (100, 50, "60s", Scenario::Wander)
        );
        assert_eq!(d.validate(), Err(ConfigError::MissingLobby));
        let zero = BotsConfig { count: 0, ..bots() }
            .validate()
            .expect_err("zero bots");
        assert_eq!(zero, ConfigError::ZeroCount);
        assert_eq!(zero.to_string(), "count must be at least 1");
        assert_eq!(
            BotsConfig { ramp: 0, ..bots() }.validate(),
            Err(ConfigError::ZeroRamp)
        );
        assert_eq!(
            BotsConfig {
                duration: "0s".into(),
                ..bots()
            }
            .validate(),
            Err(ConfigError::ZeroDuration { field: "duration" })
        );
        let bad = BotsConfig {
            duration: "3 weeks".into(),
            ..bots()
        }
        .validate()
        .expect_err("bad");
        assert!(bad.to_string().contains("`3 weeks`"), "{bad}");
        assert_eq!(bots().run_for(), Ok(Duration::from_secs(60)));
        assert_eq!(
            BotsConfig {
                count: MAX_BOTS,
                duration: "8760h".into(),
                ..bots()
            }
            .validate(),
            Ok(())
        );
        let many = BotsConfig {
            count: MAX_BOTS + 1,
            ..bots()
        }
        .validate()
        .expect_err("too many");
        assert_eq!(
            many,
            ConfigError::TooManyBots {
                count: MAX_BOTS + 1,
                max: MAX_BOTS
            }
        );
        assert!(many.to_string().contains("100001"), "{many}");
        let long = BotsConfig {
            duration: "8761h".into(),
            ..bots()
        }
        .validate()
        .expect_err("too long");
        assert!(
            long.to_string().contains("`8761h`") && long.to_string().contains("365 days"),
            "{long}"
        );
        assert!(matches!(
            BotsConfig {
                duration: format!("{}h", u64::MAX / 3600),
                ..bots()
            }
            .validate(),
            Err(ConfigError::DurationTooLong { .. })
        ));
    }

    #[test]
    fn bots_regions() {
        let geo = || BotsConfig {
            scenario: Scenario::Geo,
            ..bots()
        };
        assert_eq!(
            BotsConfig {
                regions: Some("eu, us-east,ap.1".into()),
                ..geo()
            }
            .validate(),
            Ok(())
        );
        for bad in [
            "", "eu,,us", "eu;us", "eu,", "eu:0", "eu:", "eu:x", "eu:-1", "eu:1001", ":3", "eu:1:2",
        ] {
            assert_eq!(
                BotsConfig {
                    regions: Some(bad.into()),
                    ..geo()
                }
                .validate(),
                Err(ConfigError::BadRegions { value: bad.into() }),
                "{bad:?}"
            );
        }
        let msg = parse_regions("eu:0").expect_err("zero weight").to_string();
        assert!(msg.contains("`eu:0`") && msg.contains("weight"), "{msg}");
        assert_eq!(
            parse_regions("dallas:3, tokyo ,eu : 2"),
            Ok(vec![
                ("dallas".to_owned(), 3),
                ("tokyo".to_owned(), 1),
                ("eu".to_owned(), 2)
            ])
        );
        assert_eq!(
            parse_regions(&format!("a:{MAX_REGION_WEIGHT}")),
            Ok(vec![("a".to_owned(), MAX_REGION_WEIGHT)])
        );
    }

    #[test]
    fn bots_regions_need_a_matrix_and_cross_needs_the_world() {
        let with_regions = BotsConfig {
            regions: Some("tokyo".into()),
            ..bots()
        };
        assert_eq!(
            with_regions.validate(),
            Err(ConfigError::RegionsWithoutMatrix)
        );
        assert!(!with_regions.conditions_links());
        let with_matrix = BotsConfig {
            latency_matrix: Some("m.csv".into()),
            ..with_regions.clone()
        };
        assert_eq!(with_matrix.validate(), Ok(()));
        assert!(with_matrix.conditions_links());
        let cross = BotsConfig {
            scenario: Scenario::Cross,
            ..bots()
        };
        let err = cross.validate().expect_err("no world");
        assert_eq!(err, ConfigError::CrossWithoutWorld);
        assert!(err.to_string().contains("--world"), "{err}");
        assert_eq!(
            BotsConfig {
                world: Some("w.toml".into()),
                ..cross
            }
            .validate(),
            Ok(())
        );
    }
}
