//! Zone leases and fenced player ownership: the records of the [`Store`](crate::Store)
//! operations that decide which shard simulates what.
//!
//! - A shard serving a zone holds the zone's [`Lease`], whose `epoch` only ever goes up (a
//!   counter that survives the lease's expiry). It renews it; a shard that cannot renew stops
//!   writing for the zone.
//! - Every player has one owner (the [`Ownership`] record in the player's hash): the shard
//!   that simulates it, with the zone and the lease epoch it claimed it under. Writes to the
//!   record are fenced: a write that names an epoch lower than the record's for the same zone
//!   is refused, so a shard whose lease was taken over cannot overwrite the new owner.
//! - A transfer moves ownership from A to B in one atomic step on the player's key (owner A at
//!   its epoch → owner B, state written, transfer sequence bumped), then A notifies B through
//!   B's inbox stream ([`HandoffNotice`]); B accepts the player ([`AcceptOutcome`]) when it
//!   spawns it, on the notice or on the client's arrival, whichever comes first.

use meridian_protocol::{PlayerId, ShardId, ZoneId};
use serde::{Deserialize, Serialize};

/// A shard's lease on a zone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lease {
    /// The zone.
    pub zone: ZoneId,
    /// The shard holding it.
    pub owner: ShardId,
    /// Fencing epoch: higher than every earlier lease of the zone, whoever held it.
    pub epoch: u64,
}

/// The answer of [`Store::acquire_lease`](crate::Store::acquire_lease).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcquireOutcome {
    /// The caller holds the lease now, with a new epoch.
    Acquired(Lease),
    /// Another shard holds it (unexpired).
    Held(Lease),
}

/// What a shard saves of a player: enough to put the player back in the world.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlayerState {
    /// Position, world units.
    pub pos: [f32; 2],
    /// Velocity, units per second.
    pub vel: [f32; 2],
    /// Score.
    pub score: u64,
    /// The newest input sequence number applied (inputs up to it are not applied again).
    pub last_input: u32,
}

/// Who owns a player, as stored in the player's hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ownership {
    /// The player.
    pub player: PlayerId,
    /// The shard that owns it; `None` once released (the player left).
    pub owner: Option<ShardId>,
    /// The zone it is in (kept after a release: where it was last).
    pub zone: Option<ZoneId>,
    /// The lease epoch the owner claimed it under; 0 while a transfer waits for the new owner
    /// to accept it.
    pub epoch: u64,
    /// Transfer sequence: bumped by every claim, transfer and release. Notices carry it, so a
    /// stale or repeated notice is recognized.
    pub seq: u64,
    /// The shard that handed the player over, while the transfer waits for acceptance.
    pub from: Option<ShardId>,
    /// The last saved state, if any.
    pub state: Option<PlayerState>,
}

/// The answer of [`Store::claim_player`](crate::Store::claim_player).
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimOutcome {
    /// The caller owns the player now.
    Claimed {
        /// The new transfer sequence.
        seq: u64,
        /// The state saved before, if any.
        state: Option<PlayerState>,
    },
    /// The record names the same zone under a higher epoch: the caller's lease is stale.
    Stale {
        /// The record's epoch.
        epoch: u64,
    },
}

/// The answer of [`Store::transfer_player`](crate::Store::transfer_player).
#[derive(Debug, Clone, PartialEq)]
pub enum TransferOutcome {
    /// Ownership moved; the notice for the new owner carries `seq`.
    Transferred {
        /// The new transfer sequence.
        seq: u64,
    },
    /// The caller is not the owner at its epoch (nothing was written): the record as found.
    NotOwner(Option<Ownership>),
}

/// The answer of [`Store::accept_player`](crate::Store::accept_player).
#[derive(Debug, Clone, PartialEq)]
pub enum AcceptOutcome {
    /// The caller owns the player, fenced with its epoch now.
    Accepted {
        /// The transfer sequence accepted.
        seq: u64,
        /// The state the previous owner wrote.
        state: Option<PlayerState>,
    },
    /// The record does not (or no longer) hand the player to the caller at that sequence: a
    /// stale or repeated notice, or a forged arrival. Nothing was written.
    NotOffered(Option<Ownership>),
}

/// A handoff notice in the new owner's inbox stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandoffNotice {
    /// The player.
    pub player: PlayerId,
    /// The transfer sequence of the transfer.
    pub seq: u64,
    /// The shard that handed it over.
    pub from: ShardId,
    /// The zone it came from.
    pub from_zone: ZoneId,
    /// The zone it goes to.
    pub to_zone: ZoneId,
    /// Its state at the border.
    pub state: PlayerState,
}

/// A notice as read from an inbox, with the stream id to acknowledge.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxEntry {
    /// The stream entry id (`<ms>-<n>`), for [`Store::ack_inbox`](crate::Store::ack_inbox).
    pub id: String,
    /// The notice.
    pub notice: HandoffNotice,
    /// How many times it was delivered (1 the first time).
    pub deliveries: u32,
}
