//! [`StoreError`]: why a store operation failed, and [`StoreConfigError`]: why a
//! [`StoreConfig`](crate::store::StoreConfig) was refused.
//!
//! Every operation error names the key it was working on, so a log line points at the data.

use crate::config::RedisUrlError;
use crate::ownership::{HandoffNotice, Lease, PlayerState};
use meridian_protocol::ids::NameError;
use meridian_protocol::{ShardId, ZoneId};

/// Why a store operation failed. Each variant of an operation names the key (with its prefix)
/// it was working on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or refused to serve (connection refused or dropped,
    /// Redis loading, read-only replica, cluster down). Worth retrying later.
    #[error("store unavailable at key `{key}`: {detail}")]
    Unavailable {
        /// The key the operation was working on.
        key: String,
        /// What the backend said.
        detail: String,
    },
    /// The operation did not finish within the configured timeout
    /// ([`StoreConfig::op_timeout_ms`](crate::store::StoreConfig::op_timeout_ms)). It may or may
    /// not have taken effect.
    #[error("store operation on key `{key}` timed out after {after_ms} ms")]
    Timeout {
        /// The key the operation was working on.
        key: String,
        /// How long it was given, milliseconds.
        after_ms: u64,
    },
    /// A conditional write lost: the data changed under the caller (reserved for fenced writes:
    /// zone leases and player transfers).
    #[error("conflict at key `{key}`: {detail}")]
    Conflict {
        /// The key whose condition failed.
        key: String,
        /// Which condition failed.
        detail: String,
    },
    /// The record does not exist (for example a profile loaded by an id never allocated).
    #[error("not found: key `{key}`")]
    NotFound {
        /// The key that is absent.
        key: String,
    },
    /// The stored data is not what this version of Meridian writes (bad JSON, wrong Redis type,
    /// a non-numeric id).
    #[error("corrupt data at key `{key}`: {detail}")]
    Corrupt {
        /// The key holding the bad data.
        key: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The caller passed an argument the operation refuses before touching the store (a lease
    /// with epoch 0, which no acquisition ever issues; a state holding a non-finite number; a
    /// shard or zone name that is not a valid key part; a malformed inbox entry id). Nothing was
    /// written. Not worth retrying as is.
    #[error("invalid input for key `{key}`: {detail}")]
    InvalidInput {
        /// The key the operation would have worked on.
        key: String,
        /// What is wrong with the input.
        detail: String,
    },
    /// The store could not be opened: Redis did not answer a PING within the timeout, refused
    /// the connection or the credentials.
    #[error("cannot connect to Redis at {url}: {detail}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// Why, as the client reported it.
        detail: String,
    },
    /// The store URL or configuration was refused before connecting.
    #[error(transparent)]
    Config(#[from] StoreConfigError),
}

impl StoreError {
    /// The key the failed operation was working on, if it was an operation on a key.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Unavailable { key, .. }
            | Self::Timeout { key, .. }
            | Self::Conflict { key, .. }
            | Self::NotFound { key }
            | Self::Corrupt { key, .. }
            | Self::InvalidInput { key, .. } => Some(key),
            Self::Connect { .. } | Self::Config(_) => None,
        }
    }

    /// Whether the same call may succeed later without any change by the caller (the backend
    /// was unreachable or slow).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. } | Self::Timeout { .. } | Self::Connect { .. }
        )
    }
}

// ---- Input checks shared by both adapters (so that both refuse the same inputs) ----

/// Refuses a shard or zone name that did not come through its checked constructor (names
/// decoded from the wire or from JSON are not checked on the way in).
pub(crate) fn check_name(key: &str, checked: Result<(), NameError>) -> Result<(), StoreError> {
    checked.map_err(|e| StoreError::InvalidInput {
        key: key.to_owned(),
        detail: e.to_string(),
    })
}

/// [`check_name`] for a shard id.
pub(crate) fn check_shard(key: &str, shard: &ShardId) -> Result<(), StoreError> {
    check_name(key, shard.validate())
}

/// [`check_name`] for a zone.
pub(crate) fn check_zone(key: &str, zone: &ZoneId) -> Result<(), StoreError> {
    check_name(key, zone.validate())
}

/// Refuses a lease that no acquisition could have issued: bad names or epoch 0 (epoch 0 marks
/// a player waiting for acceptance, so a write under it would break the fencing).
pub(crate) fn check_lease(key: &str, lease: &Lease) -> Result<(), StoreError> {
    check_zone(key, &lease.zone)?;
    check_shard(key, &lease.owner)?;
    if lease.epoch == 0 {
        return Err(StoreError::InvalidInput {
            key: key.to_owned(),
            detail: format!(
                "lease of zone `{}` held by `{}` has epoch 0, which is never issued",
                lease.zone, lease.owner
            ),
        });
    }
    Ok(())
}

/// Refuses a state holding NaN or an infinity: it could not be read back (JSON has no such
/// numbers), and a shard must never restore a player there.
pub(crate) fn check_state(key: &str, state: &PlayerState) -> Result<(), StoreError> {
    let finite = state.pos.iter().chain(&state.vel).all(|v| v.is_finite());
    if finite {
        Ok(())
    } else {
        Err(StoreError::InvalidInput {
            key: key.to_owned(),
            detail: format!(
                "player state holds a non-finite number: pos {:?}, vel {:?}",
                state.pos, state.vel
            ),
        })
    }
}

/// Refuses a notice with names that are not valid key parts or a non-finite state (the same
/// checks decide, on reading, that an entry is malformed).
pub(crate) fn check_notice(key: &str, notice: &HandoffNotice) -> Result<(), StoreError> {
    check_shard(key, &notice.from)?;
    check_zone(key, &notice.from_zone)?;
    check_zone(key, &notice.to_zone)?;
    check_state(key, &notice.state)
}

/// Checks an inbox entry id (`<ms>-<n>`, two decimal integers) and returns its parts.
pub(crate) fn parse_entry_id(key: &str, id: &str) -> Result<(u64, u64), StoreError> {
    let parsed = id.split_once('-').and_then(|(ms, n)| {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !(digits(ms) && digits(n)) {
            return None;
        }
        Some((ms.parse().ok()?, n.parse().ok()?))
    });
    parsed.ok_or_else(|| StoreError::InvalidInput {
        key: key.to_owned(),
        detail: format!("`{id}` is not an inbox entry id (`<ms>-<n>`)"),
    })
}

/// Why a [`StoreConfig`](crate::store::StoreConfig) or a store URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreConfigError {
    /// The key prefix is empty, too long, or holds whitespace or a brace (a brace would break
    /// the hash tags that keep one player's keys on one Redis Cluster slot).
    #[error(
        "invalid key prefix `{prefix}`: use 1 to {max} bytes without whitespace, `{{` or `}}` (e.g. `mer:`)"
    )]
    BadPrefix {
        /// The prefix given.
        prefix: String,
        /// Longest accepted, bytes.
        max: usize,
    },
    /// The per-operation timeout is zero or longer than a minute.
    #[error("op_timeout_ms {value} is out of range 1..={max}")]
    BadTimeout {
        /// The value given, milliseconds.
        value: u64,
        /// Largest accepted, milliseconds.
        max: u64,
    },
    /// The store URL is neither `memory` nor a Redis URL.
    #[error("{0} (or `memory` for the in-process store)")]
    BadUrl(#[from] RedisUrlError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_error_names_its_key() {
        let errors = [
            StoreError::Unavailable {
                key: "mer:k".into(),
                detail: "refused".into(),
            },
            StoreError::Timeout {
                key: "mer:k".into(),
                after_ms: 500,
            },
            StoreError::Conflict {
                key: "mer:k".into(),
                detail: "epoch".into(),
            },
            StoreError::NotFound {
                key: "mer:k".into(),
            },
            StoreError::Corrupt {
                key: "mer:k".into(),
                detail: "json".into(),
            },
            StoreError::InvalidInput {
                key: "mer:k".into(),
                detail: "epoch 0".into(),
            },
        ];
        for err in errors {
            assert_eq!(err.key(), Some("mer:k"));
            assert!(err.to_string().contains("`mer:k`"), "{err}");
        }
        let connect = StoreError::Connect {
            url: "redis://127.0.0.1:1".into(),
            detail: "refused".into(),
        };
        assert_eq!(connect.key(), None);
        assert!(connect.is_transient());
        let invalid = StoreError::InvalidInput {
            key: "mer:k".into(),
            detail: "x".into(),
        };
        assert!(!invalid.is_transient());
    }

    fn state(x: f32) -> PlayerState {
        PlayerState {
            pos: [x, 0.0],
            vel: [0.0, 0.0],
            score: 0,
            last_input: 0,
        }
    }

    #[test]
    fn inputs_no_acquisition_issues_are_refused_naming_the_key() {
        let lease = Lease {
            zone: ZoneId::new("west").expect("valid"),
            owner: ShardId::new("a-1").expect("valid"),
            epoch: 1,
        };
        assert_eq!(check_lease("k", &lease), Ok(()));
        let zero = Lease {
            epoch: 0,
            ..lease.clone()
        };
        assert!(matches!(
            check_lease("k", &zero),
            Err(StoreError::InvalidInput { key, .. }) if key == "k"
        ));
        // Names decoded without their checks.
        let bad: Lease = serde_json::from_str(r#"{"zone":"w}x","owner":"a-1","epoch":3}"#)
            .expect("decodes unchecked");
        assert!(matches!(
            check_lease("k", &bad),
            Err(StoreError::InvalidInput { .. })
        ));
        let bad_shard: ShardId = serde_json::from_str(r#""""#).expect("decodes unchecked");
        assert!(check_shard("k", &bad_shard).is_err());

        assert_eq!(check_state("k", &state(1.5)), Ok(()));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            assert!(
                matches!(
                    check_state("k", &state(bad)),
                    Err(StoreError::InvalidInput { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn inbox_entry_ids_are_checked() {
        assert_eq!(
            parse_entry_id("k", "1700000000000-3"),
            Ok((1_700_000_000_000, 3))
        );
        assert_eq!(parse_entry_id("k", "0-0"), Ok((0, 0)));
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "1",
            "a-1",
            "1-b",
            "+1-2",
            "1-2-3",
            "99999999999999999999-0",
        ] {
            assert!(
                matches!(
                    parse_entry_id("k", bad),
                    Err(StoreError::InvalidInput { key, .. }) if key == "k"
                ),
                "{bad:?}"
            );
        }
    }
}
