//! Client ↔ shard control stream: one bidirectional QUIC stream per connection, framed
//! ([`crate::frame`]), for what must arrive and arrive in order.
//!
//! 1. client → [`ShardHelloMsg`] with its ticket; nothing else is accepted first;
//! 2. shard → [`ShardControlMsg::Welcome`] or [`ShardControlMsg::Rejected`] (then closes);
//! 3. then, either way, events: score, chat, kick with a reason; client → [`ClientControlMsg`].
//!
//! Handoff: a shard tells a client near a border about the neighbour shard
//! ([`ShardControlMsg::Neighbour`]) so that the client opens a connection to it early; when the
//! player crosses, the shard sends [`ShardControlMsg::Handoff`] with a signed handoff ticket,
//! which the client presents as the hello of a new session on the neighbour.

use crate::handshake::RejectMsg;
use crate::ids::{EntityId, PlayerId, ShardId, Tick, ZoneId};
use crate::ticket::SignedTicket;
use serde::{Deserialize, Serialize};

/// Longest chat line, in characters.
pub const MAX_CHAT_CHARS: usize = 256;

/// First frame from the client on the control stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardHelloMsg {
    /// Must be the first field: see [`crate::handshake`].
    pub protocol_version: u32,
    /// A join, handoff or resume ticket for this shard.
    pub ticket: SignedTicket,
}

/// Client → shard after the hello.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientControlMsg {
    /// The player leaves on purpose; the shard saves and lets go.
    Leave,
    /// A chat line to players nearby.
    Chat {
        /// The text; at most [`MAX_CHAT_CHARS`] characters.
        text: String,
    },
}

/// Shard → client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ShardControlMsg {
    /// Admission: who you are in this shard and how it ticks.
    Welcome(WelcomeMsg),
    /// The hello was refused; the shard closes after sending it.
    Rejected(RejectMsg),
    /// The shard disconnects the client; the shard closes after sending it.
    Kick(KickMsg),
    /// The player's committed score changed.
    Score(ScoreMsg),
    /// A chat line from a nearby player.
    Chat(ChatMsg),
    /// A neighbouring zone's shard, sent when the player comes near the border with it (and
    /// again if the neighbour's shard changes): open a connection to it now, so that a handoff
    /// costs no handshake.
    Neighbour(NeighbourMsg),
    /// The player crossed into the neighbour's zone and is now owned by its shard: present the
    /// ticket there (on the early connection if one is open). This shard stops replicating the
    /// player and closes the connection once the client has moved (or after a grace period).
    Handoff(HandoffMsg),
}

/// A neighbouring zone and the shard that serves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighbourMsg {
    /// The neighbouring zone.
    pub zone: ZoneId,
    /// The shard that owns it now.
    pub shard: ShardId,
    /// Its QUIC address, `host:port`.
    pub addr: String,
    /// SHA-256 of its certificate, to pin.
    pub cert_sha256: [u8; 32],
}

/// Move to another shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffMsg {
    /// A handoff ticket for `shard` (single use, short-lived).
    pub ticket: SignedTicket,
    /// The shard that owns the player now.
    pub shard: ShardId,
    /// Its zone.
    pub zone: ZoneId,
    /// Its QUIC address, `host:port`.
    pub addr: String,
    /// SHA-256 of its certificate, to pin.
    pub cert_sha256: [u8; 32],
}

/// Admission details.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WelcomeMsg {
    /// The player admitted.
    pub player: PlayerId,
    /// The player's entity in this shard's snapshots.
    pub entity: EntityId,
    /// This shard.
    pub shard: ShardId,
    /// Its zone.
    pub zone: ZoneId,
    /// The rectangle positions in snapshots are quantized within, world units: the zone plus
    /// the border band on sides that have a neighbour (players walking past the border and the
    /// neighbour's ghosts lie there).
    pub bounds: ZoneBoundsMsg,
    /// Simulation steps per second.
    pub tick_hz: u16,
    /// The shard's tick when it admitted the client.
    pub server_tick: Tick,
}

/// An axis-aligned rectangle in world units.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ZoneBoundsMsg {
    /// Smallest x.
    pub min_x: f32,
    /// Smallest y.
    pub min_y: f32,
    /// Largest x.
    pub max_x: f32,
    /// Largest y.
    pub max_y: f32,
}

/// Why a client was disconnected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KickMsg {
    /// The reason, for programs.
    pub reason: KickReason,
    /// The reason, for people.
    pub detail: String,
}

/// Machine-readable reasons for a kick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KickReason {
    /// Too many messages that failed to decode or broke the protocol.
    Malformed,
    /// Inputs arrived faster than the tick rate allows, past the tolerance.
    InputFlood,
    /// Movement beyond the speed limit, past the tolerance.
    SpeedLimit,
    /// Nothing heard for longer than the idle timeout.
    Idle,
    /// The shard is shutting down or draining.
    Shutdown,
    /// An operator removed the player.
    Admin,
    /// The shard lost its lease on the zone (another shard owns it now, or shared state was
    /// out of reach for longer than the lease): go back to the lobby.
    ZoneLost,
    /// The player was handed to another shard and did not move there in time.
    HandedOff,
    /// The shard is draining (being stopped for maintenance): the player's state is saved;
    /// reconnect through the lobby, which sends the player to the shard that serves the zone
    /// next (it resumes at the saved state).
    Draining,
}

/// A committed score change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoreMsg {
    /// The new total.
    pub total: u64,
    /// The change that led to it.
    pub delta: u32,
}

/// A chat line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMsg {
    /// Who said it.
    pub from: PlayerId,
    /// What was said.
    pub text: String,
}
