//! What goes into one tick of the simulation ([`SimInputs`]) and what comes out of it
//! ([`SimOutputs`]) besides the world itself ([`super::view::WorldView`]).
//!
//! Both are plain buffers reused from tick to tick: [`super::Sim::tick`] drains the caller's
//! inputs (their capacity stays with the caller) and refills the outputs it keeps inside the
//! simulation.

use meridian_protocol::datagram::InputFrameMsg;
use meridian_protocol::{EntityId, InputSeq, PlayerId, Tick};

/// Everything the shell hands the simulation for one tick. Order of effect within a tick:
/// leaves, then joins, then inputs (so a player who leaves and joins in the same tick gets a
/// fresh entity, and inputs sent with a join apply at once).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimInputs {
    /// Players entering the zone.
    pub joins: Vec<SimJoin>,
    /// Players leaving the zone (disconnected, handed off, kicked). Unknown players are ignored.
    pub leaves: Vec<PlayerId>,
    /// Inputs received since the last tick, in any order and with repeats: each datagram
    /// carries the last few inputs again.
    pub inputs: Vec<(PlayerId, InputFrameMsg)>,
}

impl SimInputs {
    /// Empties every list, keeping capacity.
    pub fn clear(&mut self) {
        self.joins.clear();
        self.leaves.clear();
        self.inputs.clear();
    }
}

/// A player entering the zone.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimJoin {
    /// Who.
    pub player: PlayerId,
    /// Where to place the player's entity (clamped into the zone); `None` (or a non-finite
    /// point) for a random point of the zone.
    pub spawn: Option<[f32; 2]>,
    /// The player's score so far (from the profile); pickups add to it.
    pub score: u64,
}

/// What one tick did, for the shell to tell clients and other services.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimOutputs {
    /// The tick these outputs are of.
    pub tick: Tick,
    /// Players that joined, with their entity. A join of a player already in the zone keeps
    /// the existing entity and reports it again.
    pub joined: Vec<(PlayerId, EntityId)>,
    /// Players that left, with the entity removed.
    pub left: Vec<(PlayerId, EntityId)>,
    /// Score changes, in the order they happened.
    pub scores: Vec<ScoreEvent>,
    /// Inputs refused, one entry per input: unknown players in arrival order, then floods by
    /// player id.
    pub rejected: Vec<RejectedInput>,
    /// Per player that had a new input applied, the newest sequence number applied: the
    /// snapshot's `input_ack`. Sorted by player.
    pub input_acks: Vec<(PlayerId, InputSeq)>,
    /// Inputs dropped because their sequence number was not newer than one already applied:
    /// the normal redundancy of the input datagrams, not an error.
    pub redundant: u32,
}

impl SimOutputs {
    /// Empties every list, keeping capacity.
    pub(crate) fn clear(&mut self) {
        self.joined.clear();
        self.left.clear();
        self.scores.clear();
        self.rejected.clear();
        self.input_acks.clear();
        self.redundant = 0;
    }
}

/// A player's score changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScoreEvent {
    /// Whose.
    pub player: PlayerId,
    /// By how much.
    pub delta: u32,
    /// The new total.
    pub total: u64,
}

/// An input the simulation refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejectedInput {
    /// Who sent it.
    pub player: PlayerId,
    /// Why it was refused.
    pub reason: InputRejection,
}

/// Why an input was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InputRejection {
    /// More new inputs in one tick than the player's token bucket allows (it refills by one a
    /// tick up to `input_burst`): a client sending faster than the tick rate.
    Flood,
    /// The player is not in the zone (never joined, or already left).
    UnknownPlayer,
}
