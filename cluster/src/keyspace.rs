//! [`Keyspace`]: every Redis key name Meridian uses, in one place.
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `mer:{p:<id>}` | hash | a player: profile `name`, `created_ms`; ownership `owner`, `zone`, `epoch`, `seq`, `from`, `state` (JSON [`PlayerState`](crate::ownership::PlayerState)) |
//! | `mer:{n:<name>}` | string | the player id that owns a name (claimed once, never reused) |
//! | `mer:player_seq` | string | the last player id allocated (`INCR`) |
//! | `mer:leaderboard` | sorted set | scores, member = zero-padded player id ([`Keyspace::leaderboard_member`]) |
//! | `mer:shards` | sorted set | index of registered shards, score = last heartbeat (ms) |
//! | `mer:{s:<shard>}:info` | string, `PX` | a shard's record (JSON); it expires when heartbeats stop |
//! | `mer:session:<token>` | string, `PX` | a resume session (JSON) |
//! | `mer:nonce:<hex>` | string, `PX` | a used ticket nonce |
//! | `mer:{z:<zone>}:lease` | hash, `PX` | a zone's lease: `owner` (shard id), `epoch`; it expires unless renewed |
//! | `mer:{z:<zone>}:epoch` | string | the zone's last lease epoch (`INCR`; never expires) |
//! | `mer:{z:<zone>}:ghosts` | pub/sub channel | border ghost batches for the shard of the zone |
//! | `mer:{s:<shard>}:inbox` | stream | handoff notices for a shard (field `notice`: JSON); consumer group [`INBOX_GROUP`], consumer = the shard id |
//!
//! Keys that a single atomic operation touches together share a hash tag in braces (`{p:42}`:
//! every key of player 42; `{z:west}`: a zone's lease and its epoch counter), so the same
//! scripts run on Redis Cluster.
//!
//! The prefix (`mer:` by default) is configurable so that several deployments share one Redis.

use crate::error::StoreConfigError;
use meridian_protocol::{PlayerId, ShardId, ZoneId};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "mer:";

/// Longest key prefix, bytes.
pub const MAX_PREFIX_LEN: usize = 64;

/// The consumer group of every inbox stream (each shard reads its own stream as consumer
/// `<shard id>`).
pub const INBOX_GROUP: &str = "meridian";

/// Builds every key name under one prefix. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyspace {
    prefix: String,
}

impl Default for Keyspace {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }
}

/// Checks a key prefix: 1 to [`MAX_PREFIX_LEN`] bytes, no whitespace, no braces.
pub fn check_prefix(prefix: &str) -> Result<(), StoreConfigError> {
    let ok = !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX_LEN
        && !prefix
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '{' || c == '}');
    if ok {
        Ok(())
    } else {
        Err(StoreConfigError::BadPrefix {
            prefix: prefix.to_owned(),
            max: MAX_PREFIX_LEN,
        })
    }
}

impl Keyspace {
    /// A keyspace under `prefix` (checked by [`check_prefix`]).
    pub fn new(prefix: &str) -> Result<Self, StoreConfigError> {
        check_prefix(prefix)?;
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    /// The prefix every key starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `mer:{p:<id>}`: the hash of one player.
    pub fn player(&self, player: PlayerId) -> String {
        format!("{}{{p:{}}}", self.prefix, player.0)
    }

    /// `mer:{n:<name>}`: which player id owns a name. The mapping from name to key is
    /// one-to-one whatever the name holds (the braces only choose a Cluster slot).
    pub fn player_name(&self, name: &str) -> String {
        format!("{}{{n:{name}}}", self.prefix)
    }

    /// `mer:player_seq`: the counter that allocates player ids.
    pub fn player_seq(&self) -> String {
        format!("{}player_seq", self.prefix)
    }

    /// `mer:leaderboard`: the sorted set of scores.
    pub fn leaderboard(&self) -> String {
        format!("{}leaderboard", self.prefix)
    }

    /// `mer:shards`: the index of registered shards (sorted set by last heartbeat).
    pub fn shards(&self) -> String {
        format!("{}shards", self.prefix)
    }

    /// `mer:{s:<shard>}:info`: a shard's record, expiring when its heartbeats stop.
    pub fn shard(&self, shard: &ShardId) -> String {
        format!("{}{{s:{shard}}}:info", self.prefix)
    }

    /// `mer:session:<token>`: a resume session.
    pub fn session(&self, token: &str) -> String {
        format!("{}session:{token}", self.prefix)
    }

    /// `mer:nonce:<16 hex digits>`: a ticket nonce already used.
    pub fn nonce(&self, nonce: u64) -> String {
        format!("{}nonce:{nonce:016x}", self.prefix)
    }

    /// `mer:{z:<zone>}:lease`: the zone's lease (hash `owner`, `epoch`, with a TTL).
    pub fn lease(&self, zone: &ZoneId) -> String {
        format!("{}{{z:{zone}}}:lease", self.prefix)
    }

    /// `mer:{z:<zone>}:epoch`: the counter the zone's lease epochs come from (never expires).
    pub fn lease_epoch(&self, zone: &ZoneId) -> String {
        format!("{}{{z:{zone}}}:epoch", self.prefix)
    }

    /// `mer:{z:<zone>}:ghosts`: the pub/sub channel of the zone's border ghosts.
    pub fn ghosts(&self, zone: &ZoneId) -> String {
        format!("{}{{z:{zone}}}:ghosts", self.prefix)
    }

    /// `mer:{s:<shard>}:inbox`: the stream of handoff notices for a shard.
    pub fn inbox(&self, shard: &ShardId) -> String {
        format!("{}{{s:{shard}}}:inbox", self.prefix)
    }

    /// A `SCAN MATCH` pattern for every player hash: `mer:{p:*}`, the prefix escaped so that
    /// glob characters in it (`*`, `?`, `[`, `]`, `\`) match only themselves.
    pub fn player_pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.prefix.len() + 5);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str("{p:*}");
        pattern
    }

    /// The player of a player hash key (the inverse of [`Keyspace::player`]); `None` for any
    /// other key.
    pub fn parse_player_key(&self, key: &str) -> Option<PlayerId> {
        let id = key
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix("{p:")?
            .strip_suffix('}')?;
        // `u64::from_str` accepts a leading `+`; a key we wrote never has one.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        id.parse().ok().map(PlayerId)
    }

    /// The member of a player in the leaderboard: the id zero-padded to 20 digits, so that the
    /// lexicographic order Redis uses for ties is the numeric order of ids.
    pub fn leaderboard_member(player: PlayerId) -> String {
        format!("{:020}", player.0)
    }

    /// The player of a leaderboard member (the inverse of [`Keyspace::leaderboard_member`]).
    pub fn parse_leaderboard_member(member: &str) -> Option<PlayerId> {
        member.parse().ok().map(PlayerId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_documented_scheme() {
        let keys = Keyspace::default();
        let shard = ShardId::new("eu-1").expect("valid");
        assert_eq!(keys.player(PlayerId(42)), "mer:{p:42}");
        assert_eq!(keys.player_name("ada"), "mer:{n:ada}");
        assert_eq!(keys.player_seq(), "mer:player_seq");
        assert_eq!(keys.leaderboard(), "mer:leaderboard");
        assert_eq!(keys.shards(), "mer:shards");
        assert_eq!(keys.shard(&shard), "mer:{s:eu-1}:info");
        assert_eq!(keys.session("tok"), "mer:session:tok");
        assert_eq!(keys.nonce(0xab), "mer:nonce:00000000000000ab");
        let zone = ZoneId::new("west").expect("valid");
        assert_eq!(keys.lease(&zone), "mer:{z:west}:lease");
        assert_eq!(keys.lease_epoch(&zone), "mer:{z:west}:epoch");
        assert_eq!(keys.ghosts(&zone), "mer:{z:west}:ghosts");
        assert_eq!(keys.inbox(&shard), "mer:{s:eu-1}:inbox");
        assert_eq!(keys.player_pattern(), "mer:{p:*}");
        let other = Keyspace::new("staging:").expect("valid");
        assert_eq!(other.player(PlayerId(1)), "staging:{p:1}");
    }

    #[test]
    fn leaderboard_members_sort_like_ids_and_round_trip() {
        let a = Keyspace::leaderboard_member(PlayerId(9));
        let b = Keyspace::leaderboard_member(PlayerId(10));
        assert!(a < b);
        assert_eq!(Keyspace::parse_leaderboard_member(&b), Some(PlayerId(10)));
        let max = Keyspace::leaderboard_member(PlayerId(u64::MAX));
        assert_eq!(max.len(), 20);
        assert_eq!(Keyspace::parse_leaderboard_member("x"), None);
    }

    #[test]
    fn player_keys_parse_back_and_patterns_escape_the_prefix() {
        let keys = Keyspace::default();
        assert_eq!(
            keys.parse_player_key(&keys.player(PlayerId(42))),
            Some(PlayerId(42))
        );
        assert_eq!(
            keys.parse_player_key(&keys.player(PlayerId(u64::MAX))),
            Some(PlayerId(u64::MAX))
        );
        for other in [
            "mer:{p:}",
            "mer:{p:+1}",
            "mer:{p:1}:x",
            "mer:{p:x}",
            "mer:{p:99999999999999999999}",
            "other:{p:1}",
            "mer:{n:1}",
            "mer:player_seq",
        ] {
            assert_eq!(keys.parse_player_key(other), None, "{other}");
        }
        let globby = Keyspace::new("a*b?[c]\\:").expect("valid");
        assert_eq!(globby.player_pattern(), "a\\*b\\?\\[c\\]\\\\:{p:*}");
        assert_eq!(
            globby.parse_player_key("a*b?[c]\\:{p:7}"),
            Some(PlayerId(7))
        );
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(Keyspace::new("mer:").is_ok());
        assert!(Keyspace::new("a").is_ok());
        for bad in ["", "a b", "{x}", "x}", "\n", &"x".repeat(65)] {
            assert!(
                matches!(Keyspace::new(bad), Err(StoreConfigError::BadPrefix { .. })),
                "{bad:?}"
            );
        }
    }
}
