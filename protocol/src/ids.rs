//! Identities and units that cross module and process boundaries.
//!
//! Each is a newtype so that a player id can never be passed where a tick is expected.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A player, stable across sessions and shards (assigned by the lobby on first visit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PlayerId(pub u64);

/// An entity inside one shard's simulation (players, NPCs, pickups). Only meaningful on the
/// shard that assigned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntityId(pub u32);

/// A simulation step number of one shard.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Tick(pub u64);

/// A fencing epoch: only goes up; a write carrying an older epoch is rejected.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Epoch(pub u64);

/// Sequence number of a client input; wraps are not expected within a session (2^32 inputs at
/// 60 Hz is over two years).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct InputSeq(pub u32);

/// Longest shard or zone name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Why a shard or zone name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("{what} is empty")]
    Empty {
        /// What was being named ("shard id", "zone").
        what: &'static str,
    },
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("{what} `{name}` is {len} bytes long; the limit is {MAX_NAME_LEN}")]
    TooLong {
        /// What was being named.
        what: &'static str,
        /// The name as given.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The name holds a character other than ASCII letters, digits, `-`, `_` and `.`.
    #[error("{what} `{name}` may only hold ASCII letters, digits, '-', '_' and '.'")]
    BadChar {
        /// What was being named.
        what: &'static str,
        /// The name as given.
        name: String,
    },
}

fn check_name(what: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { what });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            what,
            name: name.to_owned(),
            len: name.len(),
        });
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(NameError::BadChar {
            what,
            name: name.to_owned(),
        });
    }
    Ok(())
}

macro_rules! name_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(String);

        impl $name {
            /// Checks the name (1 to [`MAX_NAME_LEN`] bytes of `[A-Za-z0-9._-]`) and wraps it.
            pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                check_name($what, &name)?;
                Ok(Self(name))
            }

            /// Checks a name that arrived on the wire (decoding does not validate).
            pub fn validate(&self) -> Result<(), NameError> {
                check_name($what, &self.0)
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }
    };
}

name_id!(
    /// A shard server, named by its operator (`eu-west-1a`).
    ShardId,
    "shard id"
);
name_id!(
    /// A zone of the world map (`west`, `center`).
    ZoneId,
    "zone"
);

impl fmt::Display for PlayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

impl fmt::Display for Tick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(ShardId::new("eu-west-1a").is_ok());
        assert_eq!(ShardId::new(""), Err(NameError::Empty { what: "shard id" }));
        assert!(matches!(ZoneId::new("a b"), Err(NameError::BadChar { .. })));
        assert!(matches!(
            ZoneId::new("x".repeat(65)),
            Err(NameError::TooLong { len: 65, .. })
        ));
        assert_eq!(
            "west".parse::<ZoneId>().map(|z| z.to_string()),
            Ok("west".to_owned())
        );
    }
}
