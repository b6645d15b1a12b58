//! What the simulation shows the rest of the shard after each tick: every replicable entity's
//! state and a spatial index over them. Replication and the network shell read it; nothing
//! writes it but the simulation. Its buffers are reused from tick to tick.

use super::spatial::SpatialGrid;
use meridian_protocol::snapshot::EntityKind;
use meridian_protocol::{EntityId, PlayerId, Tick};

/// One entity's replicable state at the end of a tick.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EntityView {
    /// Its id on this shard.
    pub id: EntityId,
    /// What it is.
    pub kind: EntityKind,
    /// Position, world units.
    pub pos: [f32; 2],
    /// Velocity, world units per second.
    pub vel: [f32; 2],
    /// Facing, radians.
    pub heading: f32,
}

/// A connected player's entity, by index into [`WorldView::entities`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlayerView {
    /// The player.
    pub player: PlayerId,
    /// The player's entity.
    pub entity: EntityId,
    /// Index of that entity in [`WorldView::entities`] and in the grid.
    pub index: u32,
}

/// The world at the end of a tick.
#[derive(Clone, Debug)]
pub struct WorldView {
    /// The tick just completed.
    pub tick: Tick,
    /// Every replicable entity, in storage order (not sorted: sorting 10,000 entities a tick
    /// costs more than the rest of the tick; replication sorts the few each client sees).
    pub entities: Vec<EntityView>,
    /// Spatial index whose item `i` is `entities[i]`.
    pub grid: SpatialGrid,
    /// Connected players, sorted by player id.
    pub players: Vec<PlayerView>,
}

impl WorldView {
    /// An empty view over the rectangle `min`..`max` with grid cells of `cell_size`.
    pub fn new(min: [f32; 2], max: [f32; 2], cell_size: f32) -> Self {
        Self {
            tick: Tick(0),
            entities: Vec::new(),
            grid: SpatialGrid::new(min, max, cell_size),
            players: Vec::new(),
        }
    }

    /// The entity of `player`, if connected.
    pub fn player(&self, player: PlayerId) -> Option<&PlayerView> {
        self.players
            .binary_search_by_key(&player, |p| p.player)
            .ok()
            .map(|i| &self.players[i])
    }
}
