//! [`ShardConfig`]: the configuration of a shard server (`meridian shard`), its defaults and
//! its checks ([`ShardConfig::validate`], [`ConfigError`]).
//!
//! `main` builds it (flags > environment > file > defaults) and validates it once; this crate
//! never reads the environment.

use meridian_cluster::config::{
    REDACTED, RedisUrlError, ServerConfigError, check_redis_url, check_ticket_key, check_tls,
    check_transport, redact_redis_url,
};
use meridian_protocol::ids::NameError;
use meridian_protocol::{ShardId, ZoneId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// Accepted simulation rates and NPC counts: the simulation's own limits.
pub use crate::sim::config::{MAX_NPCS, TICK_HZ_RANGE};

/// Configuration of one shard server: which zone it simulates, where it listens, how it
/// secures and paces its connections.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShardConfig {
    /// Name of this shard in the registry and in logs (`[A-Za-z0-9._-]`, 1 to 64 bytes).
    pub id: String,
    /// The zone this shard simulates.
    pub zone: String,
    /// UDP address the QUIC endpoint binds.
    pub listen: SocketAddr,
    /// Address clients are sent to, when it differs from `listen` (NAT, `0.0.0.0`).
    pub public_addr: Option<SocketAddr>,
    /// World rectangle of the zone, `"x0,y0,x1,y1"` with `x0 < x1` and `y0 < y1`.
    pub zone_bounds: String,
    /// Simulation rate, ticks per second ([`TICK_HZ_RANGE`]).
    pub tick_hz: u16,
    /// NPCs spawned in the zone (at most [`MAX_NPCS`]).
    pub npcs: u32,
    /// Key shared with the lobby and the other shards to sign tickets: 64 hexadecimal
    /// characters (32 bytes). Required. Never logged.
    pub ticket_key: Option<String>,
    /// PEM certificate chain served to clients (with `key`).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// Serve a self-signed certificate generated at start-up (development), instead of
    /// `cert` and `key`.
    pub dev_cert: bool,
    /// Redis URL of the shared state (`redis://host:port`).
    pub redis: Option<String>,
    /// Largest frame accepted on a stream, bytes.
    pub max_frame_bytes: u32,
    /// QUIC keep-alive interval, milliseconds.
    pub keep_alive_ms: u64,
    /// A connection silent for this long is closed, milliseconds (more than `keep_alive_ms`).
    pub idle_timeout_ms: u64,
    /// TCP address of the admin HTTP endpoint (health, metrics); none if unset.
    pub admin_listen: Option<SocketAddr>,
    /// World map (TOML) listing every zone, its neighbours and spawn points; with `redis`, the
    /// shard hands players across borders to its neighbours. Without it the shard's zone is a
    /// world of its own.
    pub world: Option<PathBuf>,
    /// Datacenter region this shard runs in, as named in the world map and latency matrices
    /// (published in the registry for routing).
    pub region: String,
    /// Clients closer than this to a border (world units) are told of the neighbour's shard so
    /// that they connect to it before they cross.
    pub border_notice: u32,
    /// How often the players' states are checkpointed to shared state, milliseconds
    /// ([`CHECKPOINT_MS_RANGE`]): a crash rolls positions back at most this far.
    pub checkpoint_ms: u64,
    /// Zones this shard stands by for, comma-separated: it serves none at start, and takes the
    /// first of them whose lease is free (its shard died, drained or was cut off), restoring
    /// its players from their checkpoints. Needs `redis`; `zone` is then unused.
    pub standby_for: Option<String>,
    /// Longest a drain (SIGTERM, `POST /drain`) may take before the shard exits anyway,
    /// milliseconds ([`DRAIN_DEADLINE_MS_RANGE`]).
    pub drain_deadline_ms: u64,
    /// Bearer token that `POST /drain` on the admin endpoint requires; without it the route
    /// answers 404. Never logged.
    pub admin_token: Option<String>,
}

impl Default for ShardConfig {
    fn default() -> Self {
        Self {
            id: "shard-1".to_owned(),
            zone: "zone-1".to_owned(),
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 7000)),
            public_addr: None,
            zone_bounds: "0,0,1000,1000".to_owned(),
            tick_hz: 30,
            npcs: 1000,
            ticket_key: None,
            cert: None,
            key: None,
            dev_cert: false,
            redis: None,
            max_frame_bytes: 65_536,
            keep_alive_ms: 1_000,
            idle_timeout_ms: 10_000,
            admin_listen: None,
            world: None,
            region: "local".to_owned(),
            border_notice: 120,
            checkpoint_ms: 1_000,
            standby_for: None,
            drain_deadline_ms: 10_000,
            admin_token: None,
        }
    }
}

impl fmt::Debug for ShardConfig {
    /// Shows every field, with the ticket key and any Redis password redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured so that a new field cannot be forgotten here.
        let Self {
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
        } = self;
        f.debug_struct("ShardConfig")
            .field("id", id)
            .field("zone", zone)
            .field("listen", listen)
            .field("public_addr", public_addr)
            .field("zone_bounds", zone_bounds)
            .field("tick_hz", tick_hz)
            .field("npcs", npcs)
            .field("ticket_key", &ticket_key.as_ref().map(|_| REDACTED))
            .field("cert", cert)
            .field("key", key)
            .field("dev_cert", dev_cert)
            .field("redis", &redis.as_deref().map(redact_redis_url))
            .field("max_frame_bytes", max_frame_bytes)
            .field("keep_alive_ms", keep_alive_ms)
            .field("idle_timeout_ms", idle_timeout_ms)
            .field("admin_listen", admin_listen)
            .field("world", world)
            .field("region", region)
            .field("border_notice", border_notice)
            .field("checkpoint_ms", checkpoint_ms)
            .field("standby_for", standby_for)
            .field("drain_deadline_ms", drain_deadline_ms)
            .field("admin_token", &admin_token.as_ref().map(|_| REDACTED))
            .finish()
    }
}

/// Largest accepted [`ShardConfig::border_notice`], world units.
pub const MAX_BORDER_NOTICE: u32 = 100_000;

/// Accepted [`ShardConfig::checkpoint_ms`].
pub const CHECKPOINT_MS_RANGE: std::ops::RangeInclusive<u64> = 50..=60_000;

/// Accepted [`ShardConfig::drain_deadline_ms`].
pub const DRAIN_DEADLINE_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=600_000;

/// Shortest accepted [`ShardConfig::admin_token`], bytes.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// The rectangle of world space a zone covers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ZoneBounds {
    /// Lower corner `(x0, y0)`.
    pub min: [f32; 2],
    /// Upper corner `(x1, y1)`.
    pub max: [f32; 2],
}

/// Why a [`ShardConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A world map was given without shared state: handoff needs Redis.
    #[error("--world needs --redis: shards hand players to each other through shared state")]
    WorldWithoutRedis,
    /// The region is empty or holds whitespace or control characters.
    #[error("invalid region `{region}`: 1 to 64 characters, no whitespace")]
    BadRegion {
        /// The region given.
        region: String,
    },
    /// The border notice distance is out of range.
    #[error("border_notice {value} is out of range 0..={max} world units")]
    BorderNotice {
        /// The value given.
        value: u32,
        /// The largest accepted.
        max: u32,
    },
    /// The shard id is not a valid name.
    #[error("invalid shard id: {source}")]
    BadId {
        /// What is wrong with it.
        source: NameError,
    },
    /// The zone is not a valid name.
    #[error("invalid zone: {source}")]
    BadZone {
        /// What is wrong with it.
        source: NameError,
    },
    /// `zone_bounds` is not four finite comma-separated numbers.
    #[error("zone_bounds `{value}` must be four finite numbers \"x0,y0,x1,y1\"")]
    ZoneBoundsSyntax {
        /// The value given.
        value: String,
    },
    /// `zone_bounds` describes an empty or inverted rectangle.
    #[error("zone_bounds `{value}` must have x0 < x1 and y0 < y1")]
    ZoneBoundsEmpty {
        /// The value given.
        value: String,
    },
    /// `tick_hz` is outside [`TICK_HZ_RANGE`].
    #[error("tick_hz {value} is out of range 1..=240")]
    TickHz {
        /// The value given.
        value: u16,
    },
    /// More NPCs than [`MAX_NPCS`].
    #[error("npcs {value} is more than the maximum {max}")]
    TooManyNpcs {
        /// The value given.
        value: u32,
        /// The maximum.
        max: u32,
    },
    /// `public_addr` cannot be reached by clients (unspecified address or port 0).
    #[error("public_addr {addr} is not an address clients can reach (unspecified IP or port 0)")]
    BadPublicAddr {
        /// The value given.
        addr: SocketAddr,
    },
    /// A setting shared with the lobby (ticket key, TLS, transport) was refused.
    #[error(transparent)]
    Server(#[from] ServerConfigError),
    /// The Redis URL is malformed.
    #[error(transparent)]
    Redis(#[from] RedisUrlError),
    /// `checkpoint_ms` is out of range.
    #[error("checkpoint_ms {value} is out of range 50..=60000 milliseconds")]
    CheckpointMs {
        /// The value given.
        value: u64,
    },
    /// `drain_deadline_ms` is out of range.
    #[error("drain_deadline_ms {value} is out of range 100..=600000 milliseconds")]
    DrainDeadlineMs {
        /// The value given.
        value: u64,
    },
    /// A zone of `standby_for` is not a valid zone name.
    #[error("--standby-for: zone #{position} `{value}` is invalid: {source}")]
    BadStandbyZone {
        /// Its position in the list, from 1.
        position: usize,
        /// The name given.
        value: String,
        /// What is wrong with it.
        source: NameError,
    },
    /// A zone is listed twice in `standby_for`.
    #[error("--standby-for lists zone `{zone}` twice")]
    DuplicateStandbyZone {
        /// The zone.
        zone: String,
    },
    /// `standby_for` was given without shared state: a standby learns of free zones there.
    #[error(
        "--standby-for needs --redis: a standby takes zones through their leases in shared state"
    )]
    StandbyWithoutRedis,
    /// The admin token is too short or holds characters other than visible ASCII.
    #[error(
        "admin_token must be at least 16 characters of visible ASCII (no spaces); got {len} bytes"
    )]
    BadAdminToken {
        /// Its length in bytes (the token itself is not shown).
        len: usize,
    },
}

/// Parses `standby_for`: comma-separated zone names (spaces around them allowed), at least one,
/// no duplicates.
pub fn parse_standby_zones(value: &str) -> Result<Vec<ZoneId>, ConfigError> {
    let mut zones: Vec<ZoneId> = Vec::new();
    for (i, part) in value.split(',').enumerate() {
        let name = part.trim();
        let zone = ZoneId::new(name).map_err(|source| ConfigError::BadStandbyZone {
            position: i + 1,
            value: name.to_owned(),
            source,
        })?;
        if zones.contains(&zone) {
            return Err(ConfigError::DuplicateStandbyZone {
                zone: name.to_owned(),
            });
        }
        zones.push(zone);
    }
    Ok(zones)
}

/// Parses `"x0,y0,x1,y1"` (spaces allowed around the numbers).
pub fn parse_zone_bounds(value: &str) -> Result<ZoneBounds, ConfigError> {
    let syntax = || ConfigError::ZoneBoundsSyntax {
        value: value.to_owned(),
    };
    let numbers = value
        .split(',')
        .map(|part| part.trim().parse::<f32>().ok().filter(|n| n.is_finite()))
        .collect::<Option<Vec<f32>>>()
        .ok_or_else(syntax)?;
    let [x0, y0, x1, y1] = numbers[..] else {
        return Err(syntax());
    };
    if x0 >= x1 || y0 >= y1 {
        return Err(ConfigError::ZoneBoundsEmpty {
            value: value.to_owned(),
        });
    }
    Ok(ZoneBounds {
        min: [x0, y0],
        max: [x1, y1],
    })
}

/// Checks a simulation rate (shared with `meridian dev`).
pub fn check_tick_hz(tick_hz: u16) -> Result<(), ConfigError> {
    if TICK_HZ_RANGE.contains(&tick_hz) {
        Ok(())
    } else {
        Err(ConfigError::TickHz { value: tick_hz })
    }
}

/// Checks an NPC count (shared with `meridian dev`).
pub fn check_npcs(npcs: u32) -> Result<(), ConfigError> {
    if npcs <= MAX_NPCS {
        Ok(())
    } else {
        Err(ConfigError::TooManyNpcs {
            value: npcs,
            max: MAX_NPCS,
        })
    }
}

impl ShardConfig {
    /// Checks every field; `main` calls it once before running the role.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ShardId::new(self.id.as_str()).map_err(|source| ConfigError::BadId { source })?;
        ZoneId::new(self.zone.as_str()).map_err(|source| ConfigError::BadZone { source })?;
        parse_zone_bounds(&self.zone_bounds)?;
        check_tick_hz(self.tick_hz)?;
        check_npcs(self.npcs)?;
        if self.world.is_some() && self.redis.is_none() {
            return Err(ConfigError::WorldWithoutRedis);
        }
        if self.region.is_empty()
            || self.region.len() > 64
            || self
                .region
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ConfigError::BadRegion {
                region: self.region.clone(),
            });
        }
        if self.border_notice > MAX_BORDER_NOTICE {
            return Err(ConfigError::BorderNotice {
                value: self.border_notice,
                max: MAX_BORDER_NOTICE,
            });
        }
        if let Some(addr) = self.public_addr
            && (addr.ip().is_unspecified() || addr.port() == 0)
        {
            return Err(ConfigError::BadPublicAddr { addr });
        }
        check_ticket_key(self.ticket_key.as_deref())?;
        check_tls(self.cert.as_deref(), self.key.as_deref(), self.dev_cert)?;
        if let Some(url) = &self.redis {
            check_redis_url(url)?;
        }
        check_transport(
            self.max_frame_bytes,
            self.keep_alive_ms,
            self.idle_timeout_ms,
        )?;
        if !CHECKPOINT_MS_RANGE.contains(&self.checkpoint_ms) {
            return Err(ConfigError::CheckpointMs {
                value: self.checkpoint_ms,
            });
        }
        if !DRAIN_DEADLINE_MS_RANGE.contains(&self.drain_deadline_ms) {
            return Err(ConfigError::DrainDeadlineMs {
                value: self.drain_deadline_ms,
            });
        }
        if let Some(zones) = &self.standby_for {
            parse_standby_zones(zones)?;
            if self.redis.is_none() {
                return Err(ConfigError::StandbyWithoutRedis);
            }
        }
        if let Some(token) = &self.admin_token
            && (token.len() < MIN_ADMIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(ConfigError::BadAdminToken { len: token.len() });
        }
        Ok(())
    }

    /// The zones of `standby_for` (empty when not a standby); call after
    /// [`ShardConfig::validate`].
    pub fn standby_zones(&self) -> Result<Vec<ZoneId>, ConfigError> {
        self.standby_for
            .as_deref()
            .map_or(Ok(Vec::new()), parse_standby_zones)
    }

    /// [`ShardConfig::checkpoint_ms`] as a duration.
    pub fn checkpoint_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.checkpoint_ms)
    }

    /// [`ShardConfig::drain_deadline_ms`] as a duration.
    pub fn drain_deadline(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.drain_deadline_ms)
    }

    /// The zone rectangle; call after [`ShardConfig::validate`].
    pub fn bounds(&self) -> Result<ZoneBounds, ConfigError> {
        parse_zone_bounds(&self.zone_bounds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn valid() -> ShardConfig {
        ShardConfig {
            ticket_key: Some(KEY.to_owned()),
            dev_cert: true,
            ..ShardConfig::default()
        }
    }

    #[test]
    fn defaults_plus_key_and_certificate_are_valid() {
        assert_eq!(valid().validate(), Ok(()));
        let with_files = ShardConfig {
            dev_cert: false,
            cert: Some("cert.pem".into()),
            key: Some("key.pem".into()),
            redis: Some("redis://127.0.0.1:6380".into()),
            public_addr: Some("203.0.113.7:7000".parse().expect("literal")),
            ..valid()
        };
        assert_eq!(with_files.validate(), Ok(()));
    }

    #[test]
    fn defaults_match_the_documentation() {
        let d = ShardConfig::default();
        assert_eq!((d.id.as_str(), d.zone.as_str()), ("shard-1", "zone-1"));
        assert_eq!(d.listen, "0.0.0.0:7000".parse().expect("literal"));
        assert_eq!(d.zone_bounds, "0,0,1000,1000");
        assert_eq!((d.tick_hz, d.npcs, d.max_frame_bytes), (30, 1000, 65_536));
        assert_eq!((d.keep_alive_ms, d.idle_timeout_ms), (1_000, 10_000));
        assert!(d.ticket_key.is_none() && !d.dev_cert && d.redis.is_none());
    }

    #[test]
    fn ticket_key_is_required() {
        let cfg = ShardConfig {
            ticket_key: None,
            ..valid()
        };
        let err = cfg.validate().expect_err("no key");
        assert_eq!(
            err,
            ConfigError::Server(ServerConfigError::MissingTicketKey)
        );
        assert_eq!(
            err.to_string(),
            "missing ticket key: set --ticket-key or MERIDIAN_TICKET_KEY (64 hex characters)"
        );
        let cfg = ShardConfig {
            ticket_key: Some("xyz".into()),
            ..valid()
        };
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::Server(ServerConfigError::BadTicketKey { .. }))
        ));
    }

    #[test]
    fn world_region_and_border_notice_are_checked() {
        let world_alone = ShardConfig {
            world: Some("world.toml".into()),
            ..valid()
        };
        assert_eq!(world_alone.validate(), Err(ConfigError::WorldWithoutRedis));
        let with_redis = ShardConfig {
            redis: Some("redis://127.0.0.1:6380".into()),
            ..world_alone
        };
        assert_eq!(with_redis.validate(), Ok(()));
        for bad in ["", "two words", "tab\there"] {
            let cfg = ShardConfig {
                region: bad.into(),
                ..valid()
            };
            assert_eq!(
                cfg.validate(),
                Err(ConfigError::BadRegion { region: bad.into() })
            );
        }
        let far = ShardConfig {
            border_notice: MAX_BORDER_NOTICE + 1,
            ..valid()
        };
        assert_eq!(
            far.validate(),
            Err(ConfigError::BorderNotice {
                value: MAX_BORDER_NOTICE + 1,
                max: MAX_BORDER_NOTICE
            })
        );
    }

    #[test]
    fn tick_hz_range() {
        for ok in [1, 30, 240] {
            assert_eq!(
                ShardConfig {
                    tick_hz: ok,
                    ..valid()
                }
                .validate(),
                Ok(())
            );
        }
        for bad in [0, 241, u16::MAX] {
            assert_eq!(
                ShardConfig {
                    tick_hz: bad,
                    ..valid()
                }
                .validate(),
                Err(ConfigError::TickHz { value: bad })
            );
        }
    }

    #[test]
    fn npcs_limit() {
        assert_eq!(
            ShardConfig {
                npcs: MAX_NPCS,
                ..valid()
            }
            .validate(),
            Ok(())
        );
        assert_eq!(ShardConfig { npcs: 0, ..valid() }.validate(), Ok(()));
        assert_eq!(
            ShardConfig {
                npcs: MAX_NPCS + 1,
                ..valid()
            }
            .validate(),
            Err(ConfigError::TooManyNpcs {
                value: MAX_NPCS + 1,
                max: MAX_NPCS
            })
        );
    }

    #[test]
    fn zone_bounds_parse() {
        assert_eq!(
            parse_zone_bounds(" -500, 0 ,500.5,1e3"),
            Ok(ZoneBounds {
                min: [-500.0, 0.0],
                max: [500.5, 1000.0]
            })
        );
        for syntax in [
            "",
            "0,0,1000",
            "0,0,1000,1000,5",
            "0,0,a,1",
            "0,0,inf,1",
            "0,NaN,1,1",
            "0;0;1;1",
        ] {
            assert_eq!(
                parse_zone_bounds(syntax),
                Err(ConfigError::ZoneBoundsSyntax {
                    value: syntax.into()
                }),
                "{syntax:?}"
            );
        }
        for empty in ["0,0,0,1000", "10,0,5,1000", "0,1000,1000,1000"] {
            assert_eq!(
                parse_zone_bounds(empty),
                Err(ConfigError::ZoneBoundsEmpty {
                    value: empty.into()
                })
            );
        }
        let cfg = ShardConfig {
            zone_bounds: "1,2,3".into(),
            ..valid()
        };
        assert!(
            cfg.validate()
                .expect_err("3 numbers")
                .to_string()
                .contains("`1,2,3`")
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(matches!(
            ShardConfig {
                id: String::new(),
                ..valid()
            }
            .validate(),
            Err(ConfigError::BadId { .. })
        ));
        assert!(matches!(
            ShardConfig {
                zone: "west zone".into(),
                ..valid()
            }
            .validate(),
            Err(ConfigError::BadZone { .. })
        ));
    }

    #[test]
    fn certificate_rule() {
        let none = ShardConfig {
            dev_cert: false,
            ..valid()
        };
        assert_eq!(
            none.validate(),
            Err(ServerConfigError::NoCertificate.into())
        );
        let cert_only = ShardConfig {
            cert: Some("c.pem".into()),
            dev_cert: false,
            ..valid()
        };
        assert_eq!(
            cert_only.validate(),
            Err(ServerConfigError::CertWithoutKey {
                cert: "c.pem".into()
            }
            .into())
        );
        let both = ShardConfig {
            cert: Some("c.pem".into()),
            key: Some("k.pem".into()),
            ..valid()
        };
        assert_eq!(
            both.validate(),
            Err(ServerConfigError::CertAndDevCert.into())
        );
    }

    #[test]
    fn transport_and_addresses() {
        let cfg = ShardConfig {
            keep_alive_ms: 10_000,
            idle_timeout_ms: 10_000,
            ..valid()
        };
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::Server(ServerConfigError::IdleTimeout { .. }))
        ));
        let cfg = ShardConfig {
            max_frame_bytes: 512,
            ..valid()
        };
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::Server(ServerConfigError::MaxFrameBytes {
                value: 512,
                ..
            }))
        ));
        let addr: SocketAddr = "0.0.0.0:7000".parse().expect("literal");
        let cfg = ShardConfig {
            public_addr: Some(addr),
            ..valid()
        };
        assert_eq!(cfg.validate(), Err(ConfigError::BadPublicAddr { addr }));
        let cfg = ShardConfig {
            redis: Some("localhost:6379".into()),
            ..valid()
        };
        assert!(matches!(cfg.validate(), Err(ConfigError::Redis(_))));
    }

    #[test]
    fn debug_redacts_secrets() {
        let cfg = ShardConfig {
            redis: Some("redis://app:s3cret@db:6380".into()),
            ..valid()
        };
        let shown = format!("{cfg:?}");
        assert!(
            shown.contains("ticket_key: Some(\"<redacted>\")"),
            "{shown}"
        );
        assert!(!shown.contains(KEY) && !shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("tick_hz: 30"), "{shown}");
        let with_token = ShardConfig {
            admin_token: Some("operator-token-0123456789".into()),
            ..valid()
        };
        let shown = format!("{with_token:?}");
        assert!(!shown.contains("operator-token"), "{shown}");
    }

    #[test]
    fn fault_tolerance_settings_are_checked() {
        let d = ShardConfig::default();
        assert_eq!((d.checkpoint_ms, d.drain_deadline_ms), (1_000, 10_000));
        assert!(d.standby_for.is_none() && d.admin_token.is_none());
        for value in [0, 49, 60_001] {
            let cfg = ShardConfig {
                checkpoint_ms: value,
                ..valid()
            };
            assert_eq!(cfg.validate(), Err(ConfigError::CheckpointMs { value }));
        }
        let cfg = ShardConfig {
            drain_deadline_ms: 5,
            ..valid()
        };
        assert_eq!(
            cfg.validate(),
            Err(ConfigError::DrainDeadlineMs { value: 5 })
        );
        let standby = |zones: &str| ShardConfig {
            standby_for: Some(zones.into()),
            redis: Some("redis://127.0.0.1:6380".into()),
            ..valid()
        };
        assert_eq!(standby("a, b").validate(), Ok(()));
        assert_eq!(
            standby("a, b").standby_zones().expect("valid"),
            vec![
                ZoneId::new("a").expect("zone"),
                ZoneId::new("b").expect("zone")
            ]
        );
        let err = standby("a,bad zone")
            .validate()
            .expect_err("space in a name");
        assert!(
            matches!(&err, ConfigError::BadStandbyZone { position: 2, value, .. } if value == "bad zone"),
            "{err:?}"
        );
        assert!(err.to_string().contains("`bad zone`"), "{err}");
        assert!(matches!(
            standby("a,,b").validate(),
            Err(ConfigError::BadStandbyZone { position: 2, .. })
        ));
        assert_eq!(
            standby("a,b,a").validate(),
            Err(ConfigError::DuplicateStandbyZone { zone: "a".into() })
        );
        let alone = ShardConfig {
            redis: None,
            ..standby("a")
        };
        assert_eq!(alone.validate(), Err(ConfigError::StandbyWithoutRedis));
        for bad in ["short", "has a space in the token!!"] {
            let cfg = ShardConfig {
                admin_token: Some(bad.into()),
                ..valid()
            };
            assert_eq!(
                cfg.validate(),
                Err(ConfigError::BadAdminToken { len: bad.len() })
            );
        }
    }
}
