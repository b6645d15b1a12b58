//! What goes into one tick of the simulation ([`SimInputs`]) and what comes out of it
//! ([`SimOutputs`]) besides the world itself ([`super::view::WorldView`]).
//!
//! Both are plain buffers reused from tick to tick: [`super::Sim::tick`] drains the caller's
//! inputs (their capacity stays with the caller) and refills the outputs it keeps inside the
//! simulation.

use meridian_protocol::datagram::InputFrameMsg;
use meridian_protocol::snapshot::EntityKind;
use meridian_protocol::{EntityId, InputSeq, PlayerId, Tick};

/// Everything the shell hands the simulation for one tick. Order of effect within a tick:
/// leaves, then failed transfers, then joins, then inputs (so a player who leaves and joins in
/// the same tick gets a fresh entity, and inputs sent with a join apply at once), then
/// `open_borders` (before this tick's border check), then ghosts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimInputs {
    /// Players entering the zone.
    pub joins: Vec<SimJoin>,
    /// Players leaving the zone (disconnected, handed off, kicked). Unknown players are ignored.
    pub leaves: Vec<PlayerId>,
    /// Inputs received since the last tick, in any order and with repeats: each datagram
    /// carries the last few inputs again.
    pub inputs: Vec<(PlayerId, InputFrameMsg)>,
    /// When `Some`, which neighbours can take players from now on (index: the neighbour's
    /// number in [`super::config::BorderConfig::neighbours`]; missing entries are closed,
    /// extra ones ignored). `None` keeps the previous setting; at start every border is closed.
    pub open_borders: Option<Vec<bool>>,
    /// Players whose crossing did not go through: each is unfrozen, put back on the zone's
    /// edge with no velocity, and the borders are walls to it for `retry_ticks`. Players not in
    /// the zone or not frozen are ignored.
    pub transfer_failed: Vec<PlayerId>,
    /// The neighbours' entities near the border, to show as ghosts (see [`GhostUpdate`]).
    pub ghosts: Vec<GhostUpdate>,
}

impl SimInputs {
    /// Empties every list, keeping capacity, and forgets `open_borders`.
    pub fn clear(&mut self) {
        self.joins.clear();
        self.leaves.clear();
        self.inputs.clear();
        self.open_borders = None;
        self.transfer_failed.clear();
        self.ghosts.clear();
    }
}

/// A player entering the zone: a new session, or an arrival by handoff carrying the state the
/// previous zone reported in its [`Crossing`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimJoin {
    /// Who.
    pub player: PlayerId,
    /// Where to place the player's entity (clamped into the view bounds,
    /// [`super::SimConfig::view_bounds`]); `None` (or a non-finite point) for a random point
    /// of the zone.
    pub spawn: Option<[f32; 2]>,
    /// The player's score so far (from the profile); pickups add to it.
    pub score: u64,
    /// Velocity to start with, units per second (its length clamped to `max_speed`; zero if
    /// not finite). The player keeps heading that way until its next input.
    pub velocity: [f32; 2],
    /// Newest input sequence number already applied elsewhere: inputs numbered up to it are
    /// stale. `InputSeq(0)`: none (clients number inputs from 1).
    pub last_input: InputSeq,
}

impl Default for SimJoin {
    /// Player 0 at a random point, no score, standing still, no input applied.
    fn default() -> Self {
        Self {
            player: PlayerId(0),
            spawn: None,
            score: 0,
            velocity: [0.0, 0.0],
            last_input: InputSeq(0),
        }
    }
}

/// A player who walked more than the margin past the zone's edge into an open neighbour: its
/// entity is frozen (no inputs, no motion, no pickups) until the shell removes it (`leaves`,
/// handed off) or gives it back (`transfer_failed`). Carries the state the next zone needs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Crossing {
    /// Who.
    pub player: PlayerId,
    /// The player's entity here.
    pub entity: EntityId,
    /// The neighbour it walked into (its number in `BorderConfig::neighbours`).
    pub neighbour: u16,
    /// Where it stands, world units (outside this zone, inside the neighbour).
    pub pos: [f32; 2],
    /// Its velocity as it crossed, units per second (the frozen entity's is zero).
    pub vel: [f32; 2],
    /// Its score.
    pub score: u64,
    /// Newest input sequence number applied (`InputSeq(0)`: none).
    pub last_input: InputSeq,
}

/// A player's state, for checkpoints and handoffs ([`super::Sim::player_state`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlayerSnapshot {
    /// The player's entity.
    pub entity: EntityId,
    /// Position, world units.
    pub pos: [f32; 2],
    /// Velocity, units per second.
    pub vel: [f32; 2],
    /// Score.
    pub score: u64,
    /// Newest input sequence number applied (`InputSeq(0)`: none).
    pub last_input: InputSeq,
    /// Frozen at a border, waiting for its transfer.
    pub frozen: bool,
}

/// One entity of a neighbour near the border, as that neighbour last published it. Shown as a
/// read-only ghost while its position lies in the view bounds outside the zone; refreshed by
/// each update, gone after `ghost_ttl_ticks` without one, or at once when an update places it
/// outside the band.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GhostUpdate {
    /// The neighbour's number (`BorderConfig::neighbours`); unknown numbers are ignored.
    pub source: u16,
    /// The entity's id on the neighbour.
    pub remote: EntityId,
    /// What it is.
    pub kind: EntityKind,
    /// Where it is, world units; updates with a non-finite position are ignored.
    pub pos: [f32; 2],
    /// Facing, radians (non-finite: 0).
    pub heading: f32,
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
    /// Players frozen this tick at a border, to hand off, in storage order.
    pub crossings: Vec<Crossing>,
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
        self.crossings.clear();
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
