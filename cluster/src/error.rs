//! [`StoreError`]: why a store operation failed, and [`StoreConfigError`]: why a
//! [`StoreConfig`](crate::store::StoreConfig) was refused.
//!
//! Every operation error names the key it was working on, so a log line points at the data.

use crate::config::RedisUrlError;

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
            | Self::Corrupt { key, .. } => Some(key),
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
    }
}
