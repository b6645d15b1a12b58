//! The simulation's resources: the tick counter, the seeded random number generator, the rules
//! derived from the configuration, the entity id counter, the player index, the tick's inputs
//! and outputs, the view and the pickup index. Every buffer in them is reused from tick to tick.

use super::config::{BorderConfig, SimConfig};
use super::exchange::{SimInputs, SimOutputs};
use super::spatial::SpatialGrid;
use super::view::WorldView;
use bevy_ecs::prelude::*;
use meridian_protocol::quantize::byte_to_angle;
use meridian_protocol::{EntityId, InputSeq, PlayerId, Tick};
use rand::Rng;
use rand_pcg::Pcg64Mcg;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The tick being run (after `begin_tick`), or the last one completed (between ticks).
#[derive(Resource, Clone, Copy, Debug, Default)]
pub(crate) struct CurrentTick(pub Tick);

/// The simulation's only source of randomness, seeded from [`SimConfig::seed`].
#[derive(Resource, Clone, Debug)]
pub(crate) struct SimRng(pub Pcg64Mcg);

impl SimRng {
    /// A uniformly random point of the rectangle `min`..`max`.
    pub fn point(&mut self, min: [f32; 2], max: [f32; 2]) -> [f32; 2] {
        [0, 1].map(|a| {
            let t: f32 = self.0.random();
            // Rounding can land on `max`; still inside.
            (min[a] + t * (max[a] - min[a])).clamp(min[a], max[a])
        })
    }

    /// A uniformly random direction, quantized like client headings (256 steps a turn).
    pub fn heading(&mut self) -> u8 {
        self.0.random()
    }
}

/// The rules of the game, derived once from the [`SimConfig`] in the units systems use.
#[derive(Resource, Clone, Debug)]
pub(crate) struct Rules {
    /// Seconds per tick.
    pub dt: f32,
    /// Lower corner of the zone.
    pub min: [f32; 2],
    /// Upper corner of the zone.
    pub max: [f32; 2],
    /// Lower corner of the view bounds (the zone widened by the border band toward the
    /// neighbours): players and ghosts stay inside them.
    pub view_min: [f32; 2],
    /// Upper corner of the view bounds.
    pub view_max: [f32; 2],
    /// Top player speed, units per second.
    pub max_speed: f32,
    /// Largest change of a player's velocity in one tick, units per second.
    pub max_dv: f32,
    /// NPC speed, units per second.
    pub npc_speed: f32,
    /// Pickup collection radius.
    pub pickup_radius: f32,
    /// Score a pickup awards.
    pub pickup_value: u32,
    /// Input token bucket capacity.
    pub input_burst: u32,
    /// Fewest ticks between two turns of an NPC (1 s).
    pub min_turn_ticks: u64,
    /// Most ticks between two turns of an NPC (4 s).
    pub max_turn_ticks: u64,
    /// Unit vector of each heading byte (`byte_to_angle`): inputs and NPC turns look their
    /// direction up here rather than calling `sin_cos` (about as costly as the rest of a
    /// player's input handling).
    pub directions: [[f32; 2]; 256],
}

impl Rules {
    /// The rules of a validated configuration.
    pub fn new(cfg: &SimConfig) -> Self {
        let hz = u64::from(cfg.tick_hz.max(1));
        let (view_min, view_max) = cfg.view_bounds();
        Self {
            dt: cfg.dt(),
            min: cfg.bounds_min,
            max: cfg.bounds_max,
            view_min,
            view_max,
            max_speed: cfg.max_speed,
            max_dv: cfg.max_accel * cfg.dt(),
            npc_speed: cfg.npc_speed,
            pickup_radius: cfg.pickup_radius,
            pickup_value: cfg.pickup_value,
            input_burst: cfg.input_burst,
            min_turn_ticks: hz,
            max_turn_ticks: 4 * hz,
            directions: std::array::from_fn(|b| {
                let (sin, cos) = byte_to_angle(b as u8).sin_cos();
                [cos, sin]
            }),
        }
    }

    /// Ticks until an NPC's next turn: 1 to 4 seconds.
    pub fn turn_delay(&self, rng: &mut SimRng) -> u64 {
        rng.0
            .random_range(self.min_turn_ticks..=self.max_turn_ticks)
    }
}

/// Hands out entity ids: sequential, never reused within a run.
#[derive(Resource, Clone, Debug)]
pub(crate) struct EntityIds {
    /// The next id to hand out.
    pub next: u32,
}

impl EntityIds {
    /// A fresh id.
    pub fn allocate(&mut self) -> EntityId {
        let id = EntityId(self.next);
        // Ids run out after 2^32 - 1 spawns in one run (over a year at 100 joins a second);
        // from then on the last id repeats rather than wrapping onto the oldest ones.
        self.next = self.next.saturating_add(1);
        id
    }
}

/// A player in the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexedPlayer {
    /// The player.
    pub player: PlayerId,
    /// The player's entity in the world.
    pub entity: Entity,
    /// The same entity's wire id.
    pub id: EntityId,
}

/// The players in the zone, sorted by player id: the order of [`WorldView::players`] and of
/// the players' ranks, with a map from player id to rank for inputs.
#[derive(Resource, Clone, Debug, Default)]
pub(crate) struct PlayerIndex {
    /// Sorted by `player`, no duplicates.
    pub entries: Vec<IndexedPlayer>,
    /// Rank (index in `entries`) of each player. Only looked up, never iterated, so its order
    /// cannot leak into the simulation.
    pub ranks: HashMap<PlayerId, u32, BuildHasherDefault<PlayerIdHasher>>,
    /// Set when `entries` changed: ranks must be renumbered.
    pub reranked: bool,
}

impl PlayerIndex {
    /// Where `player` is in `entries`, or where it would be inserted.
    pub fn find(&self, player: PlayerId) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&player, |e| e.player)
    }
}

/// Hashes a [`PlayerId`] (a `u64`) with one multiply and a fold: a few nanoseconds where
/// SipHash takes tens, on the input path of every tick. Player ids are assigned by the lobby,
/// not chosen by clients, so flooding the map with colliding ids is not a concern.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PlayerIdHasher(u64);

impl Hasher for PlayerIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing; the fold brings the well-mixed high bits down to the low bits
        // the table indexes by.
        let h = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 32);
    }
}

/// Scratch space of `apply_inputs`, kept from tick to tick so that it does not allocate.
#[derive(Resource, Clone, Debug, Default)]
pub(crate) struct InputQueue {
    /// Per known input, in arrival order: the sender's rank and the input's index.
    pub ranked: Vec<(u32, u32)>,
    /// Start of each rank's run in `order`; one more entry than players.
    pub runs: Vec<u32>,
    /// Input indices grouped by rank, each group in sequence order.
    pub order: Vec<u32>,
    /// Per rank, what its inputs did this tick.
    pub outcomes: Vec<InputOutcome>,
}

/// What one player's inputs did in one tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct InputOutcome {
    /// Newest sequence number applied.
    pub applied: Option<InputSeq>,
    /// New inputs refused for lack of tokens.
    pub flooded: u32,
}

/// The inputs of the tick being run (swapped in from the caller's buffers) and its outputs.
#[derive(Resource, Debug, Default)]
pub(crate) struct TickIo {
    /// Drained by the systems that consume them.
    pub inputs: SimInputs,
    /// Cleared at the start of a tick, filled by its systems.
    pub outputs: SimOutputs,
}

/// The simulation's published state.
#[derive(Resource, Debug)]
pub(crate) struct View(pub WorldView);

/// The pickups in a spatial grid of their own. Pickups move only when collected, so this grid
/// is rebuilt only on those ticks, and a player's lookup sees pickups alone rather than every
/// NPC of the cell.
#[derive(Resource, Debug)]
pub(crate) struct PickupField {
    /// Item `i` is pickup `i`.
    pub grid: SpatialGrid,
    /// Entity of pickup `i`.
    pub entities: Vec<Entity>,
    /// Position of pickup `i`.
    pub positions: Vec<[f32; 2]>,
    /// Pickup `i` was collected this tick (cleared before the tick ends).
    pub taken: Vec<bool>,
    /// Pickups collected this tick, in order.
    pub collected: Vec<u32>,
}

/// The zone's borders: the neighbours' rectangles, which of them take players now, and the
/// rules of crossing. Inactive (no neighbours, nothing crosses) without a border configuration.
#[derive(Resource, Clone, Debug, Default)]
pub(crate) struct Borders {
    /// A border configuration was given: players outside the zone are checked.
    pub active: bool,
    /// Rectangle `(min, max)` of each neighbour, by number.
    pub neighbours: Vec<([f32; 2], [f32; 2])>,
    /// Whether each neighbour takes players now (same length as `neighbours`).
    pub open: Vec<bool>,
    /// Hysteresis margin, world units.
    pub margin: f32,
    /// Ticks a ghost lives without an update.
    pub ghost_ttl: u64,
    /// Ticks the borders stay walls to a player after a failed transfer.
    pub retry_ticks: u64,
}

impl Borders {
    /// The borders of `border`, all closed.
    pub fn new(border: Option<&BorderConfig>) -> Self {
        let Some(b) = border else {
            return Self::default();
        };
        Self {
            active: true,
            neighbours: b.neighbours.clone(),
            open: vec![false; b.neighbours.len()],
            margin: b.margin,
            ghost_ttl: u64::from(b.ghost_ttl_ticks),
            retry_ticks: u64::from(b.retry_ticks),
        }
    }

    /// Sets which neighbours are open: entry `i` of `open` for neighbour `i`, missing ones
    /// closed, extra ones ignored.
    pub fn set_open(&mut self, open: &[bool]) {
        for (i, slot) in self.open.iter_mut().enumerate() {
            *slot = open.get(i).copied().unwrap_or(false);
        }
    }

    /// The first neighbour whose rectangle contains `p` (edges included).
    pub fn neighbour_at(&self, p: [f32; 2]) -> Option<usize> {
        self.neighbours
            .iter()
            .position(|&(min, max)| (0..2).all(|a| min[a] <= p[a] && p[a] <= max[a]))
    }
}

/// A ghost shown in the world.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GhostEntry {
    /// The neighbour it comes from.
    pub source: u16,
    /// Its id there.
    pub remote: EntityId,
    /// Its entity here.
    pub entity: Entity,
    /// It is despawned at this tick unless refreshed before.
    pub expires: Tick,
}

/// The ghosts, sorted by `(source, remote)`: looked up by binary search, walked in order (so
/// that expiry is deterministic), no allocation once grown.
#[derive(Resource, Clone, Debug, Default)]
pub(crate) struct Ghosts {
    /// Sorted by `(source, remote)`, no duplicates.
    pub entries: Vec<GhostEntry>,
}

impl Ghosts {
    /// Where the ghost of `(source, remote)` is in `entries` (sorted as [`Ghosts::entries`]),
    /// or where it would be inserted.
    pub fn find(entries: &[GhostEntry], source: u16, remote: EntityId) -> Result<usize, usize> {
        entries.binary_search_by_key(&(source, remote), |g| (g.source, g.remote))
    }
}
