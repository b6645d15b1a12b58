//! [`DevConfig`]: the configuration of `meridian dev`, a whole local cluster in one process
//! (store, lobby, shards and bots). It lives in the binary because it composes every role; it
//! moves to a library when the dev role is built.

use meridian_client::config::{DurationError, Scenario, parse_duration};
use meridian_cluster::config::{check_redis_url, redact_redis_url};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The `store` value that keeps the shared state in process.
pub const MEMORY_STORE: &str = "memory";

/// The port of the dev world's lobby unless `lobby_listen` says otherwise.
pub const DEFAULT_LOBBY_PORT: u16 = 7100;

/// Configuration of `meridian dev`. It generates its own ticket key and certificates.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DevConfig {
    /// Bots run against the local cluster (0 for none).
    pub bots: u32,
    /// Stop after this long (`90`, `90s`, `2m`, `1h`); run until interrupted if unset.
    pub duration: Option<String>,
    /// Where to write the bots' JSON report; none if unset.
    pub report: Option<PathBuf>,
    /// Shared state: [`MEMORY_STORE`] or a `redis://` / `rediss://` URL.
    pub store: String,
    /// What the bots do.
    pub scenario: Scenario,
    /// Simulation rate of the shards, ticks per second.
    pub tick_hz: u16,
    /// NPCs per shard.
    pub npcs: u32,
    /// TCP address of the admin HTTP endpoint.
    pub admin_listen: SocketAddr,
    /// UDP address the lobby's QUIC endpoint binds; `meridian bots --lobby` points there.
    pub lobby_listen: SocketAddr,
    /// World map (TOML); one shard is started per zone. The built-in three-zone map
    /// (`deploy/worlds/dev.toml`) if unset.
    pub world: Option<PathBuf>,
}

impl Default for DevConfig {
    fn default() -> Self {
        Self {
            bots: 20,
            duration: None,
            report: None,
            store: MEMORY_STORE.to_owned(),
            scenario: Scenario::Wander,
            tick_hz: 30,
            npcs: 1000,
            admin_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            lobby_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_LOBBY_PORT)),
            world: None,
        }
    }
}

impl fmt::Debug for DevConfig {
    /// Shows every field, with any Redis password redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured so that a new field cannot be forgotten here.
        let Self {
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
        f.debug_struct("DevConfig")
            .field("bots", bots)
            .field("duration", duration)
            .field("report", report)
            .field("store", &redact_redis_url(store))
            .field("scenario", scenario)
            .field("tick_hz", tick_hz)
            .field("npcs", npcs)
            .field("admin_listen", admin_listen)
            .field("lobby_listen", lobby_listen)
            .field("world", world)
            .finish()
    }
}

/// Why a [`DevConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DevConfigError {
    /// `store` is neither `memory` nor a Redis URL.
    #[error("store `{store}` must be \"memory\" or a redis:// or rediss:// URL")]
    BadStore {
        /// The value given, password redacted.
        store: String,
    },
    /// The duration cannot be read.
    #[error(transparent)]
    Duration(#[from] DurationError),
    /// A zero duration would stop at once.
    #[error("duration must be more than zero seconds (leave it unset to run until interrupted)")]
    ZeroDuration,
    /// A shard setting (`tick_hz`, `npcs`) was refused.
    #[error(transparent)]
    Shard(#[from] meridian_shard::config::ConfigError),
}

impl DevConfig {
    /// Checks every field; `main` calls it once before running the role.
    pub fn validate(&self) -> Result<(), DevConfigError> {
        if self.store != MEMORY_STORE {
            let is_redis = ["redis://", "rediss://"]
                .iter()
                .any(|s| self.store.starts_with(s));
            if !is_redis || check_redis_url(&self.store).is_err() {
                return Err(DevConfigError::BadStore {
                    store: redact_redis_url(&self.store),
                });
            }
        }
        if self.run_for()?.is_some_and(|d| d.is_zero()) {
            return Err(DevConfigError::ZeroDuration);
        }
        meridian_shard::config::check_tick_hz(self.tick_hz)?;
        meridian_shard::config::check_npcs(self.npcs)?;
        Ok(())
    }

    /// How long to run, from `duration`; `None` runs until interrupted.
    pub fn run_for(&self) -> Result<Option<Duration>, DurationError> {
        self.duration.as_deref().map(parse_duration).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_cluster::config::REDACTED;

    #[test]
    fn defaults_are_valid_and_documented() {
        let d = DevConfig::default();
        assert_eq!(d.validate(), Ok(()));
        assert_eq!((d.bots, d.tick_hz, d.npcs), (20, 30, 1000));
        assert_eq!(d.store, "memory");
        assert_eq!(d.admin_listen, "127.0.0.1:8080".parse().expect("literal"));
        assert_eq!(d.lobby_listen, "127.0.0.1:7100".parse().expect("literal"));
        assert_eq!(
            (d.duration, d.report, d.scenario),
            (None, None, Scenario::Wander)
        );
    }

    #[test]
    fn store_is_memory_or_redis() {
        for ok in ["memory", "redis://127.0.0.1:6380", "rediss://u:p@db:6380/1"] {
            let cfg = DevConfig {
                store: ok.into(),
                ..DevConfig::default()
            };
            assert_eq!(cfg.validate(), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "Memory",
            "redis",
            "unix:///tmp/r.sock",
            "http://db",
            "redis://",
        ] {
            let cfg = DevConfig {
                store: bad.into(),
                ..DevConfig::default()
            };
            assert!(
                matches!(cfg.validate(), Err(DevConfigError::BadStore { .. })),
                "{bad:?}"
            );
        }
        let cfg = DevConfig {
            store: "rediss://u:s3cret@".into(),
            ..DevConfig::default()
        };
        let err = cfg.validate().expect_err("no host").to_string();
        assert!(err.contains(REDACTED) && !err.contains("s3cret"), "{err}");
    }

    #[test]
    fn duration_and_shard_settings() {
        let cfg = DevConfig {
            duration: Some("2m".into()),
            ..DevConfig::default()
        };
        assert_eq!(cfg.run_for(), Ok(Some(Duration::from_secs(120))));
        let cfg = DevConfig {
            duration: Some("0".into()),
            ..DevConfig::default()
        };
        assert_eq!(cfg.validate(), Err(DevConfigError::ZeroDuration));
        let cfg = DevConfig {
            duration: Some("soon".into()),
            ..DevConfig::default()
        };
        assert!(matches!(cfg.validate(), Err(DevConfigError::Duration(_))));
        let cfg = DevConfig {
            tick_hz: 0,
            ..DevConfig::default()
        };
        assert!(
            cfg.validate()
                .expect_err("tick_hz 0")
                .to_string()
                .contains("tick_hz 0")
        );
        let cfg = DevConfig {
            npcs: 2_000_000,
            ..DevConfig::default()
        };
        assert!(matches!(cfg.validate(), Err(DevConfigError::Shard(_))));
        let cfg = DevConfig {
            bots: 0,
            ..DevConfig::default()
        };
        assert_eq!(cfg.validate(), Ok(()));
    }

    #[test]
    fn debug_redacts_the_store_password() {
        let cfg = DevConfig {
            store: "redis://app:s3cret@db:6380".into(),
            ..DevConfig::default()
        };
        let shown = format!("{cfg:?}");
        assert!(
            shown.contains("<redacted>") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
}
