//! The components of the simulation's entities.
//!
//! | kind   | components                                                      |
//! |--------|-----------------------------------------------------------------|
//! | player | [`Replicated`], [`Position`], [`Velocity`], [`Heading`], [`Player`] |
//! | NPC    | [`Replicated`], [`Position`], [`Velocity`], [`Heading`], [`Wander`] |
//! | pickup | [`Replicated`], [`Position`], [`Pickup`]                        |
//! | ghost  | [`Replicated`], [`Position`], [`Heading`], [`Ghost`]            |
//!
//! Pickups never move by themselves, so they carry no velocity: motion systems skip their
//! table entirely. Ghosts (a neighbour's entities near the border) carry neither velocity nor
//! player, wander or pickup state, so only the ghost system touches them. A player waiting for
//! its handoff also carries [`Frozen`].

use bevy_ecs::prelude::*;
use meridian_protocol::snapshot::EntityKind;
use meridian_protocol::{EntityId, InputSeq, PlayerId, Tick};

/// Identity on the wire: every entity clients can see has one.
#[derive(Component, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replicated {
    /// Id on this shard, never reused within a run.
    pub id: EntityId,
    /// What clients draw.
    pub kind: EntityKind,
}

/// Position, world units; after a tick always inside the view bounds
/// ([`super::SimConfig::view_bounds`]), and inside the zone for NPCs and pickups.
#[derive(Component, Clone, Copy, Debug, Default, PartialEq)]
pub struct Position(pub [f32; 2]);

/// Velocity, world units per second.
#[derive(Component, Clone, Copy, Debug, Default, PartialEq)]
pub struct Velocity(pub [f32; 2]);

/// Facing, radians.
#[derive(Component, Clone, Copy, Debug, Default, PartialEq)]
pub struct Heading(pub f32);

/// A connected player's control state.
#[derive(Component, Clone, Copy, Debug, PartialEq)]
pub struct Player {
    /// Who controls the entity.
    pub id: PlayerId,
    /// Velocity the newest applied input asks for, units per second (length at most
    /// `max_speed`).
    pub intent: [f32; 2],
    /// Facing the newest applied input asks for, radians.
    pub facing: f32,
    /// Newest input sequence number applied, if any.
    pub last_seq: Option<InputSeq>,
    /// Input tokens left as of `refilled`.
    pub tokens: u32,
    /// Tick of the last token refill; refills are computed lazily, when inputs arrive.
    pub refilled: Tick,
    /// Score, including the score the player joined with.
    pub score: u64,
    /// Position of this player in the id-sorted player list (the order of
    /// [`super::view::WorldView::players`]).
    pub rank: u32,
    /// Borders are walls to this player before this tick (set after a failed transfer).
    pub walled_until: Tick,
}

/// A player frozen at a border while the shell transfers it to a neighbour: its inputs are
/// dropped, it does not move and collects nothing.
#[derive(Component, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frozen {
    /// The neighbour it is being handed to.
    pub neighbour: u16,
}

/// A neighbour's entity shown read-only near the border.
#[derive(Component, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ghost {
    /// The neighbour's number.
    pub source: u16,
    /// The entity's id on the neighbour.
    pub remote: EntityId,
}

/// An NPC's wandering state.
#[derive(Component, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wander {
    /// Tick at which the NPC picks a new direction.
    pub next_turn: Tick,
}

/// Marks a pickup.
#[derive(Component, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pickup;
