//! [`LobbyConfig`]: the configuration of the lobby (`meridian lobby`), its defaults and its
//! checks ([`LobbyConfig::validate`], [`ConfigError`]).
//!
//! `main` builds it (flags > environment > file > defaults) and validates it once; this crate
//! never reads the environment.

use meridian_cluster::config::{
    REDACTED, RedisUrlError, ServerConfigError, check_redis_url, check_ticket_key, check_tls,
    check_transport, redact_redis_url,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// Configuration of the lobby: where it listens, where it reads the shard registry, and how it
/// secures its connections and signs join tickets.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LobbyConfig {
    /// UDP address the QUIC endpoint binds.
    pub listen: SocketAddr,
    /// Redis URL of the shared state, where the shard registry lives (`redis://host:port`).
    pub redis: Option<String>,
    /// Key shared with the shards to sign join tickets: 64 hexadecimal characters (32 bytes).
    /// Required. Never logged.
    pub ticket_key: Option<String>,
    /// PEM certificate chain served to clients (with `key`).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// Serve a self-signed certificate generated at start-up (development), instead of
    /// `cert` and `key`.
    pub dev_cert: bool,
    /// Largest frame accepted on a stream, bytes.
    pub max_frame_bytes: u32,
    /// QUIC keep-alive interval, milliseconds.
    pub keep_alive_ms: u64,
    /// A connection silent for this long is closed, milliseconds (more than `keep_alive_ms`).
    pub idle_timeout_ms: u64,
    /// TCP address of the admin HTTP endpoint (health, metrics); none if unset.
    pub admin_listen: Option<SocketAddr>,
}

impl Default for LobbyConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 7100)),
            redis: None,
            ticket_key: None,
            cert: None,
            key: None,
            dev_cert: false,
            max_frame_bytes: 65_536,
            keep_alive_ms: 1_000,
            idle_timeout_ms: 10_000,
            admin_listen: None,
        }
    }
}

impl fmt::Debug for LobbyConfig {
    /// Shows every field, with the ticket key and any Redis password redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured so that a new field cannot be forgotten here.
        let Self {
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
        f.debug_struct("LobbyConfig")
            .field("listen", listen)
            .field("redis", &redis.as_deref().map(redact_redis_url))
            .field("ticket_key", &ticket_key.as_ref().map(|_| REDACTED))
            .field("cert", cert)
            .field("key", key)
            .field("dev_cert", dev_cert)
            .field("max_frame_bytes", max_frame_bytes)
            .field("keep_alive_ms", keep_alive_ms)
            .field("idle_timeout_ms", idle_timeout_ms)
            .field("admin_listen", admin_listen)
            .finish()
    }
}

/// Why a [`LobbyConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A setting shared with the shards (ticket key, TLS, transport) was refused.
    #[error(transparent)]
    Server(#[from] ServerConfigError),
    /// The Redis URL is malformed.
    #[error(transparent)]
    Redis(#[from] RedisUrlError),
}

impl LobbyConfig {
    /// Checks every field; `main` calls it once before running the role.
    pub fn validate(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    fn valid() -> LobbyConfig {
        LobbyConfig {
            ticket_key: Some(KEY.to_owned()),
            dev_cert: true,
            ..LobbyConfig::default()
        }
    }

    #[test]
    fn defaults_plus_key_and_certificate_are_valid() {
        assert_eq!(valid().validate(), Ok(()));
        let d = LobbyConfig::default();
        assert_eq!(d.listen, "0.0.0.0:7100".parse().expect("literal"));
        assert_eq!(
            (d.max_frame_bytes, d.keep_alive_ms, d.idle_timeout_ms),
            (65_536, 1_000, 10_000)
        );
    }

    #[test]
    fn ticket_key_is_required() {
        let err = LobbyConfig {
            ticket_key: None,
            ..valid()
        }
        .validate()
        .expect_err("no key");
        assert_eq!(
            err,
            ConfigError::Server(ServerConfigError::MissingTicketKey)
        );
        assert!(err.to_string().contains("ticket key"));
    }

    #[test]
    fn every_shared_rule_applies() {
        let key_only = LobbyConfig {
            key: Some("k.pem".into()),
            dev_cert: false,
            ..valid()
        };
        assert_eq!(
            key_only.validate(),
            Err(ServerConfigError::KeyWithoutCert {
                key: "k.pem".into()
            }
            .into())
        );
        let cfg = LobbyConfig {
            keep_alive_ms: 0,
            ..valid()
        };
        assert_eq!(cfg.validate(), Err(ServerConfigError::ZeroKeepAlive.into()));
        let cfg = LobbyConfig {
            max_frame_bytes: 2 * 1024 * 1024,
            ..valid()
        };
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::Server(ServerConfigError::MaxFrameBytes { .. }))
        ));
        let cfg = LobbyConfig {
            redis: Some("tcp://db".into()),
            ..valid()
        };
        assert!(matches!(cfg.validate(), Err(ConfigError::Redis(_))));
    }

    #[test]
    fn debug_redacts_secrets() {
        let shown = format!("{:?}", valid());
        assert!(
            shown.contains("<redacted>") && !shown.contains(KEY),
            "{shown}"
        );
    }
}
