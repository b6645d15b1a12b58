//! Client ↔ lobby messages, on one bidirectional QUIC stream, framed ([`crate::frame`]).
//!
//! 1. client → [`LobbyHelloMsg`] (version, player name, optional resume ticket);
//! 2. lobby → [`LobbyMsg::Candidates`]: the player's id and profile and the shards to measure
//!    (or [`LobbyMsg::Rejected`]);
//! 3. client → [`LobbyRequestMsg::Join`] with the round-trip times it measured;
//! 4. lobby → [`LobbyMsg::Grant`] with the chosen shard, a join ticket and a resume ticket, or
//!    [`LobbyMsg::Rejected`] with a reason and, when it makes sense, a retry delay.
//!
//! A client that lost its shard comes back with the resume ticket of its last grant in the
//! hello: the lobby then knows the player without the name and offers only the shard that
//! holds the zone the player is in now (see `meridian_lobby::routing::resume_shards`).

use crate::codec::BoundedVec;
use crate::handshake::RejectMsg;
use crate::ids::{PlayerId, ShardId, ZoneId};
use crate::ticket::SignedTicket;
use serde::{Deserialize, Serialize};

/// Longest player name, in characters.
pub const MAX_PLAYER_NAME_CHARS: usize = 32;
/// Most shards a lobby offers to measure, and a client reports.
pub const MAX_CANDIDATES: usize = 64;

/// First frame from the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LobbyHelloMsg {
    /// Must be the first field: see [`crate::handshake`].
    pub protocol_version: u32,
    /// Display name; 1 to [`MAX_PLAYER_NAME_CHARS`] printable characters.
    pub name: String,
    /// Present when coming back after a lost connection.
    pub resume: Option<SignedTicket>,
}

/// Requests after the hello.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LobbyRequestMsg {
    /// Asks for a shard, with measured round-trip times.
    Join(JoinRequestMsg),
}

/// The client's measurements of the candidate shards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequestMsg {
    /// Minimum round-trip time per shard over a few pings.
    pub rtts: BoundedVec<ShardRttMsg, MAX_CANDIDATES>,
    /// Optional party to be placed with.
    pub party: Option<String>,
}

/// One shard's measured round-trip time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRttMsg {
    /// The shard measured.
    pub shard: ShardId,
    /// Round-trip time in microseconds.
    pub rtt_us: u32,
}

/// Lobby replies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[expect(
    clippy::large_enum_variant,
    reason = "one or two replies per join, each encoded at once: a box would buy nothing"
)]
pub enum LobbyMsg {
    /// Who the player is and which shards to measure.
    Candidates(CandidatesMsg),
    /// The shard to play on.
    Grant(JoinGrantMsg),
    /// The request was refused.
    Rejected(RejectMsg),
}

/// The answer to a hello.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidatesMsg {
    /// The player's id, created on first visit.
    pub player: PlayerId,
    /// The player's profile.
    pub profile: ProfileMsg,
    /// Live shards to measure.
    pub shards: BoundedVec<ShardCandidateMsg, MAX_CANDIDATES>,
}

/// What the player sees of their profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileMsg {
    /// Display name.
    pub name: String,
    /// Committed score.
    pub score: u64,
}

/// A shard the client may measure and join.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardCandidateMsg {
    /// The shard.
    pub shard: ShardId,
    /// Its zone.
    pub zone: ZoneId,
    /// The region (datacenter) it runs in, as named in the latency matrix.
    pub region: String,
    /// Its public address (`host:port`).
    pub addr: String,
    /// SHA-256 of its certificate, to pin.
    pub cert_sha256: [u8; 32],
}

/// The lobby's decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinGrantMsg {
    /// Where to connect, with the certificate to pin.
    pub shard: ShardCandidateMsg,
    /// Single-use join ticket for that shard.
    pub ticket: SignedTicket,
    /// Resume ticket ([`crate::ticket::TicketKind::Resume`]): long-lived and reusable until it
    /// expires; it proves who the player is when the client comes back after a lost
    /// connection, and admits to no shard by itself.
    pub resume: SignedTicket,
}

/// Why a player name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlayerNameError {
    /// Empty or only white space.
    #[error("player name is empty")]
    Empty,
    /// Too many characters.
    #[error("player name has {chars} characters; at most {MAX_PLAYER_NAME_CHARS} allowed")]
    TooLong {
        /// Characters given.
        chars: usize,
    },
    /// A control or other non-printable character.
    #[error("player name has a non-printable character at position {position}")]
    NotPrintable {
        /// Character position.
        position: usize,
    },
}

/// Checks a player name: 1 to [`MAX_PLAYER_NAME_CHARS`] printable characters, not only blanks.
pub fn validate_player_name(name: &str) -> Result<(), PlayerNameError> {
    if name.trim().is_empty() {
        return Err(PlayerNameError::Empty);
    }
    let chars = name.chars().count();
    if chars > MAX_PLAYER_NAME_CHARS {
        return Err(PlayerNameError::TooLong { chars });
    }
    if let Some(position) = name.chars().position(|c| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{feff}')
    }) {
        return Err(PlayerNameError::NotPrintable { position });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_player_name("Zoë the 2nd").is_ok());
        assert_eq!(validate_player_name("  "), Err(PlayerNameError::Empty));
        assert_eq!(
            validate_player_name(&"a".repeat(33)),
            Err(PlayerNameError::TooLong { chars: 33 })
        );
        assert_eq!(
            validate_player_name("a\u{7}b"),
            Err(PlayerNameError::NotPrintable { position: 1 })
        );
        assert_eq!(
            validate_player_name("a\u{202e}b"),
            Err(PlayerNameError::NotPrintable { position: 1 })
        );
    }
}
