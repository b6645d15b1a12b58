//! Configuration owned by this crate: [`AuditConfig`] (the `meridian audit` role), the checks of
//! a Redis URL ([`check_redis_url`], [`redact_redis_url`]), and the checks shared by the two
//! server roles, lobby and shard ([`ServerConfigError`]: ticket key, TLS certificate, frame size,
//! QUIC timeouts), which both crates build on this one.
//!
//! Nothing here reads the environment or files: `main` builds the structs (flags > environment >
//! file > defaults) and calls `validate()` once.

use meridian_protocol::ticket::{TicketKeyError, parse_hex_32};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// What a secret is replaced with wherever a config is shown (logs, `Debug`).
pub const REDACTED: &str = "<redacted>";

/// URL schemes the Redis adapter accepts.
pub const REDIS_URL_SCHEMES: [&str; 4] = ["redis://", "rediss://", "redis+unix://", "unix://"];

/// Smallest `max_frame_bytes` a server accepts: room for any handshake message.
pub const MIN_FRAME_BYTES: u32 = 1024;
/// Largest `max_frame_bytes` a server accepts: 1 MiB.
pub const MAX_FRAME_BYTES: u32 = 1024 * 1024;
/// Longest QUIC idle timeout, milliseconds (a QUIC variable-length integer holds up to 2^62 - 1).
pub const MAX_IDLE_TIMEOUT_MS: u64 = (1 << 62) - 1;

/// Why a Redis URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisUrlError {
    /// The URL does not start with one of [`REDIS_URL_SCHEMES`] or names no host or socket.
    #[error(
        "invalid Redis URL `{url}`: expected redis://[user:password@]host[:port][/db], rediss://… or unix:///path"
    )]
    BadUrl {
        /// The URL as given, password redacted.
        url: String,
    },
    /// One element of a Redis Cluster URL list (`redis://h1:p1,redis://h2:p2,…`) is refused.
    #[error(
        "invalid Redis Cluster node {position} of {count} `{url}` in the URL list: {reason} \
         (expected redis://[user:password@]host:port,redis://host:port,…)"
    )]
    BadClusterNode {
        /// Which element, counted from 1.
        position: usize,
        /// How many elements the list holds.
        count: usize,
        /// The element as given, password redacted.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Separates the node URLs of a Redis Cluster in a store URL: a list of two or more URLs
/// (`redis://h1:7000,redis://h2:7001`) selects cluster mode; a single URL is one Redis server.
pub const CLUSTER_URL_SEPARATOR: char = ',';

/// The node URLs of a Redis Cluster URL list, or `None` for a single URL (no
/// [`CLUSTER_URL_SEPARATOR`]). Not checked: see [`check_redis_url`].
pub fn cluster_node_urls(url: &str) -> Option<Vec<&str>> {
    url.contains(CLUSTER_URL_SEPARATOR)
        .then(|| url.split(CLUSTER_URL_SEPARATOR).collect())
}

/// Checks that `url` looks like a Redis URL the adapter can open (scheme and a host or path),
/// or a Redis Cluster URL list (see [`cluster_node_urls`]) whose every element is a TCP Redis URL
/// (`redis://` or `rediss://`, with a host); the error names the first bad element. It does not
/// connect.
pub fn check_redis_url(url: &str) -> Result<(), RedisUrlError> {
    let Some(nodes) = cluster_node_urls(url) else {
        return check_single_redis_url(url);
    };
    let count = nodes.len();
    for (index, node) in nodes.iter().enumerate() {
        let bad = |reason| RedisUrlError::BadClusterNode {
            position: index + 1,
            count,
            url: redact_redis_url(node),
            reason,
        };
        if node.trim().is_empty() {
            return Err(bad("empty element (a stray comma?)"));
        }
        if node.starts_with("unix://") || node.starts_with("redis+unix://") {
            return Err(bad("cluster nodes are reached over TCP, not a unix socket"));
        }
        if check_single_redis_url(node).is_err() {
            return Err(bad("not a redis:// or rediss:// URL with a host"));
        }
    }
    Ok(())
}

fn check_single_redis_url(url: &str) -> Result<(), RedisUrlError> {
    let bad = || RedisUrlError::BadUrl {
        url: redact_redis_url(url),
    };
    let scheme = REDIS_URL_SCHEMES
        .iter()
        .find(|s| url.starts_with(**s))
        .ok_or_else(bad)?;
    let rest = &url[scheme.len()..];
    let authority_or_path = rest.rsplit_once('@').map_or(rest, |(_, after)| after);
    if authority_or_path.is_empty() || authority_or_path.starts_with('?') {
        return Err(bad());
    }
    if url.chars().any(char::is_whitespace) {
        return Err(bad());
    }
    Ok(())
}

/// `url` with the password (if any) replaced by [`REDACTED`], for logs and error messages:
/// `redis://app:secret@db:6379/0` becomes `redis://app:<redacted>@db:6379/0`.
/// A Redis Cluster URL list is redacted element by element.
pub fn redact_redis_url(url: &str) -> String {
    if let Some(nodes) = cluster_node_urls(url) {
        let redacted: Vec<String> = nodes.into_iter().map(redact_redis_url).collect();
        return redacted.join(",");
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:{REDACTED}"),
        // `redis://secret@host`: some clients read a lone userinfo as the password.
        None => REDACTED.to_owned(),
    };
    format!("{scheme}://{user}@{host}{path}")
}

/// Why the settings shared by the server roles (lobby and shard) were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerConfigError {
    /// No ticket key: lobby and shards must share one to sign and verify tickets.
    #[error("missing ticket key: set --ticket-key or MERIDIAN_TICKET_KEY (64 hex characters)")]
    MissingTicketKey,
    /// The ticket key is not 64 hexadecimal characters (its value is never shown).
    #[error("invalid ticket key (--ticket-key / MERIDIAN_TICKET_KEY): {source}")]
    BadTicketKey {
        /// What is wrong with it.
        source: TicketKeyError,
    },
    /// Neither a certificate and key nor `dev_cert`.
    #[error(
        "no TLS certificate: set --cert and --key (PEM files), or --dev-cert for a self-signed development certificate"
    )]
    NoCertificate,
    /// Both a certificate file and `dev_cert`: only one can be served.
    #[error(
        "--dev-cert and --cert/--key are mutually exclusive: use files in production, --dev-cert for development"
    )]
    CertAndDevCert,
    /// A certificate without its private key.
    #[error("certificate {cert} given without its private key: set --key as well")]
    CertWithoutKey {
        /// The certificate file.
        cert: PathBuf,
    },
    /// A private key without its certificate.
    #[error("private key {key} given without its certificate: set --cert as well")]
    KeyWithoutCert {
        /// The key file.
        key: PathBuf,
    },
    /// `max_frame_bytes` is outside [`MIN_FRAME_BYTES`]..=[`MAX_FRAME_BYTES`].
    #[error("max_frame_bytes {value} is out of range {min}..={max}")]
    MaxFrameBytes {
        /// The value given.
        value: u32,
        /// Smallest accepted.
        min: u32,
        /// Largest accepted.
        max: u32,
    },
    /// A keep-alive interval of zero would flood the peer.
    #[error("keep_alive_ms must be at least 1")]
    ZeroKeepAlive,
    /// The idle timeout is not longer than the keep-alive interval (connections would drop
    /// between keep-alives) or does not fit QUIC.
    #[error(
        "idle_timeout_ms {idle_timeout_ms} must be greater than keep_alive_ms {keep_alive_ms} and at most {MAX_IDLE_TIMEOUT_MS}"
    )]
    IdleTimeout {
        /// Keep-alive interval given, milliseconds.
        keep_alive_ms: u64,
        /// Idle timeout given, milliseconds.
        idle_timeout_ms: u64,
    },
}

/// Checks that a ticket key is present and is 64 hexadecimal characters.
pub fn check_ticket_key(ticket_key: Option<&str>) -> Result<(), ServerConfigError> {
    let key = ticket_key.ok_or(ServerConfigError::MissingTicketKey)?;
    parse_hex_32(key).map_err(|source| ServerConfigError::BadTicketKey { source })?;
    Ok(())
}

/// Checks the certificate rule of a server: exactly one of `dev_cert` or `cert` with `key`.
pub fn check_tls(
    cert: Option<&Path>,
    key: Option<&Path>,
    dev_cert: bool,
) -> Result<(), ServerConfigError> {
    match (cert, key, dev_cert) {
        (None, None, true) | (Some(_), Some(_), false) => Ok(()),
        (None, None, false) => Err(ServerConfigError::NoCertificate),
        (Some(_), _, true) | (_, Some(_), true) => Err(ServerConfigError::CertAndDevCert),
        (Some(cert), None, false) => Err(ServerConfigError::CertWithoutKey {
            cert: cert.to_owned(),
        }),
        (None, Some(key), false) => Err(ServerConfigError::KeyWithoutCert {
            key: key.to_owned(),
        }),
    }
}

/// Checks the frame limit and the QUIC timeouts of a server.
pub fn check_transport(
    max_frame_bytes: u32,
    keep_alive_ms: u64,
    idle_timeout_ms: u64,
) -> Result<(), ServerConfigError> {
    if !(MIN_FRAME_BYTES..=MAX_FRAME_BYTES).contains(&max_frame_bytes) {
        return Err(ServerConfigError::MaxFrameBytes {
            value: max_frame_bytes,
            min: MIN_FRAME_BYTES,
            max: MAX_FRAME_BYTES,
        });
    }
    if keep_alive_ms == 0 {
        return Err(ServerConfigError::ZeroKeepAlive);
    }
    if idle_timeout_ms <= keep_alive_ms || idle_timeout_ms > MAX_IDLE_TIMEOUT_MS {
        return Err(ServerConfigError::IdleTimeout {
            keep_alive_ms,
            idle_timeout_ms,
        });
    }
    Ok(())
}

/// Default [`AuditConfig::settle_ms`].
pub const DEFAULT_SETTLE_MS: u64 = 1000;

/// Largest accepted [`AuditConfig::settle_ms`]: one minute.
pub const MAX_SETTLE_MS: u64 = 60_000;

/// Configuration of `meridian audit`: checks the shared state (every player owned exactly once).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Redis URL of the cluster to audit. Required: the default (empty) is refused.
    pub redis: String,
    /// Key prefix of the deployment to audit (default `mer:`).
    pub prefix: String,
    /// Time between the audit's two passes, milliseconds, `0..=`[`MAX_SETTLE_MS`] (default
    /// [`DEFAULT_SETTLE_MS`]): a player counts as a violation only if it is one in both, so
    /// handoffs and joins in flight settle.
    pub settle_ms: u64,
    /// Print the report as JSON rather than a table (default false).
    pub json: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            redis: String::new(),
            prefix: crate::keyspace::DEFAULT_PREFIX.to_owned(),
            settle_ms: DEFAULT_SETTLE_MS,
            json: false,
        }
    }
}

impl fmt::Debug for AuditConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            redis,
            prefix,
            settle_ms,
            json,
        } = self;
        f.debug_struct("AuditConfig")
            .field("redis", &redact_redis_url(redis))
            .field("prefix", prefix)
            .field("settle_ms", settle_ms)
            .field("json", json)
            .finish()
    }
}

/// Why an [`AuditConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No Redis URL: there is nothing to audit.
    #[error("missing Redis URL: set --redis or MERIDIAN_REDIS (e.g. redis://127.0.0.1:6380)")]
    MissingRedis,
    /// The Redis URL is malformed.
    #[error(transparent)]
    Redis(#[from] RedisUrlError),
    /// The key prefix is not one a store accepts.
    #[error("--prefix: {source}")]
    Prefix {
        /// What is wrong with it.
        source: crate::error::StoreConfigError,
    },
    /// The time between the two passes is longer than [`MAX_SETTLE_MS`].
    #[error("settle_ms {value} is out of range 0..={max} (--settle-ms, milliseconds)")]
    SettleMs {
        /// The value given.
        value: u64,
        /// Largest accepted.
        max: u64,
    },
}

impl AuditConfig {
    /// Checks every field; `main` calls it once before running the role.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.redis.trim().is_empty() {
            return Err(ConfigError::MissingRedis);
        }
        check_redis_url(&self.redis)?;
        crate::keyspace::check_prefix(&self.prefix)
            .map_err(|source| ConfigError::Prefix { source })?;
        if self.settle_ms > MAX_SETTLE_MS {
            return Err(ConfigError::SettleMs {
                value: self.settle_ms,
                max: MAX_SETTLE_MS,
            });
        }
        Ok(())
    }

    /// [`AuditConfig::settle_ms`] as a duration.
    pub fn settle(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.settle_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn redis_urls_are_checked() {
        for ok in [
            "redis://127.0.0.1:6380",
            "redis://127.0.0.1",
            "rediss://user:pw@db.example:6380/2",
            "redis+unix:///tmp/redis.sock",
            "unix:///tmp/redis.sock",
        ] {
            assert_eq!(check_redis_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "127.0.0.1:6379",
            "http://x",
            "redis://",
            "redis://a:b@",
            "redis://a b",
        ] {
            assert!(check_redis_url(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn redis_cluster_url_lists_are_checked_naming_the_bad_element() {
        assert_eq!(
            check_redis_url("redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://h:7002"),
            Ok(())
        );
        assert_eq!(
            cluster_node_urls("redis://a:1,rediss://b:2"),
            Some(vec!["redis://a:1", "rediss://b:2"])
        );
        assert_eq!(cluster_node_urls("redis://a:1"), None);
        let cases = [
            ("redis://a:1,", 2, 2, "empty element"),
            ("redis://a:1,,redis://b:2", 2, 3, "empty element"),
            ("redis://a:1,unix:///tmp/r.sock", 2, 2, "unix socket"),
            ("redis://a:1,127.0.0.1:7001", 2, 2, "not a redis://"),
            ("http://a:1,redis://b:2", 1, 2, "not a redis://"),
            ("redis://a:1,redis://x:s3cret@", 2, 2, "not a redis://"),
        ];
        for (list, position, count, reason) in cases {
            let err = check_redis_url(list).expect_err(list);
            let RedisUrlError::BadClusterNode {
                position: p,
                count: c,
                ..
            } = &err
            else {
                panic!("{list}: expected BadClusterNode, got {err:?}");
            };
            assert_eq!((*p, *c), (position, count), "{list}");
            let shown = err.to_string();
            assert!(shown.contains(reason), "{list}: {shown}");
            assert!(
                shown.contains(&format!("node {position} of {count}")),
                "{shown}"
            );
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        assert_eq!(
            redact_redis_url("redis://u:pw1@a:1,redis://u:pw2@b:2"),
            "redis://u:<redacted>@a:1,redis://u:<redacted>@b:2"
        );
    }

    #[test]
    fn redis_passwords_are_redacted() {
        assert_eq!(
            redact_redis_url("redis://app:s3cret@db:6379/0"),
            "redis://app:<redacted>@db:6379/0"
        );
        assert_eq!(
            redact_redis_url("rediss://s3cret@db"),
            "rediss://<redacted>@db"
        );
        assert_eq!(redact_redis_url("redis://db:6379"), "redis://db:6379");
        let err = check_redis_url("redis://app:s3cret@").expect_err("no host");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn ticket_key_is_required_and_hex() {
        assert_eq!(check_ticket_key(Some(KEY)), Ok(()));
        let missing = check_ticket_key(None).expect_err("missing");
        assert_eq!(missing, ServerConfigError::MissingTicketKey);
        assert!(missing.to_string().starts_with("missing ticket key"));
        assert!(matches!(
            check_ticket_key(Some("abcd")),
            Err(ServerConfigError::BadTicketKey {
                source: TicketKeyError::BadLength { got: 4, .. }
            })
        ));
        let not_hex = format!("{}zz", &KEY[..62]);
        let err = check_ticket_key(Some(&not_hex)).expect_err("not hex");
        assert!(matches!(
            err,
            ServerConfigError::BadTicketKey {
                source: TicketKeyError::NotHex { position: 62 }
            }
        ));
        assert!(
            !err.to_string().contains(&KEY[..62]),
            "the key must not be echoed: {err}"
        );
    }

    #[test]
    fn tls_needs_exactly_dev_cert_or_cert_and_key() {
        let cert = Path::new("/etc/meridian/cert.pem");
        let key = Path::new("/etc/meridian/key.pem");
        assert_eq!(check_tls(None, None, true), Ok(()));
        assert_eq!(check_tls(Some(cert), Some(key), false), Ok(()));
        assert_eq!(
            check_tls(None, None, false),
            Err(ServerConfigError::NoCertificate)
        );
        assert_eq!(
            check_tls(Some(cert), Some(key), true),
            Err(ServerConfigError::CertAndDevCert)
        );
        assert_eq!(
            check_tls(None, Some(key), true),
            Err(ServerConfigError::CertAndDevCert)
        );
        assert_eq!(
            check_tls(Some(cert), None, false),
            Err(ServerConfigError::CertWithoutKey {
                cert: cert.to_owned()
            })
        );
        assert_eq!(
            check_tls(None, Some(key), false),
            Err(ServerConfigError::KeyWithoutCert {
                key: key.to_owned()
            })
        );
    }

    #[test]
    fn transport_limits() {
        assert_eq!(check_transport(65_536, 1_000, 10_000), Ok(()));
        assert_eq!(check_transport(MIN_FRAME_BYTES, 1, 2), Ok(()));
        assert_eq!(
            check_transport(MAX_FRAME_BYTES, 1, MAX_IDLE_TIMEOUT_MS),
            Ok(())
        );
        assert_eq!(
            check_transport(1023, 1_000, 10_000),
            Err(ServerConfigError::MaxFrameBytes {
                value: 1023,
                min: 1024,
                max: 1_048_576
            })
        );
        assert!(matches!(
            check_transport(MAX_FRAME_BYTES + 1, 1_000, 10_000),
            Err(ServerConfigError::MaxFrameBytes { .. })
        ));
        assert_eq!(
            check_transport(65_536, 0, 10_000),
            Err(ServerConfigError::ZeroKeepAlive)
        );
        assert_eq!(
            check_transport(65_536, 1_000, 1_000),
            Err(ServerConfigError::IdleTimeout {
                keep_alive_ms: 1_000,
                idle_timeout_ms: 1_000
            })
        );
        assert!(check_transport(65_536, 1_000, MAX_IDLE_TIMEOUT_MS + 1).is_err());
    }

    #[test]
    fn audit_needs_a_redis_url() {
        assert_eq!(
            AuditConfig::default().validate(),
            Err(ConfigError::MissingRedis)
        );
        let cfg = AuditConfig {
            redis: "redis://127.0.0.1:6380".into(),
            ..AuditConfig::default()
        };
        assert_eq!(cfg.validate(), Ok(()));
        let cfg = AuditConfig {
            redis: "localhost".into(),
            ..AuditConfig::default()
        };
        assert!(matches!(cfg.validate(), Err(ConfigError::Redis(_))));
    }

    #[test]
    fn audit_defaults_and_bad_prefix_or_settle_time() {
        let ok = AuditConfig {
            redis: "redis://127.0.0.1:6380".into(),
            ..AuditConfig::default()
        };
        assert_eq!(
            (ok.prefix.as_str(), ok.settle_ms, ok.json),
            ("mer:", DEFAULT_SETTLE_MS, false)
        );
        assert_eq!(ok.settle(), std::time::Duration::from_secs(1));
        let zero = AuditConfig {
            settle_ms: 0,
            ..ok.clone()
        };
        assert_eq!(zero.validate(), Ok(()));
        let long = AuditConfig {
            settle_ms: MAX_SETTLE_MS + 1,
            ..ok.clone()
        };
        let err = long.validate().expect_err("too long");
        assert_eq!(
            err,
            ConfigError::SettleMs {
                value: 60_001,
                max: 60_000
            }
        );
        assert!(err.to_string().contains("--settle-ms"), "{err}");
        let braces = AuditConfig {
            prefix: "{x}".into(),
            ..ok
        };
        let err = braces.validate().expect_err("braces");
        assert!(matches!(err, ConfigError::Prefix { .. }), "{err:?}");
        assert!(err.to_string().contains("--prefix"), "{err}");
        let file: AuditConfig =
            serde_json::from_str(r#"{"redis":"redis://h","json":true}"#).expect("parses");
        assert_eq!(
            (file.prefix.as_str(), file.settle_ms, file.json),
            ("mer:", DEFAULT_SETTLE_MS, true)
        );
    }

    #[test]
    fn audit_debug_redacts_the_password() {
        let cfg = AuditConfig {
            redis: "redis://app:s3cret@db:6380".into(),
            ..AuditConfig::default()
        };
        let shown = format!("{cfg:?}");
        assert!(
            shown.contains(REDACTED) && !shown.contains("s3cret"),
            "{shown}"
        );
    }
}
