//! [`SimConfig`]: the size and rules of one zone's simulation, its defaults and its checks
//! ([`SimConfig::validate`], [`SimConfigError`]).

use std::ops::RangeInclusive;

/// Accepted simulation rates, ticks per second.
pub const TICK_HZ_RANGE: RangeInclusive<u16> = 1..=240;
/// Most NPCs one simulation accepts.
pub const MAX_NPCS: u32 = 1_000_000;
/// Most pickups one simulation accepts.
pub const MAX_PICKUPS: u32 = 1_000_000;
/// Accepted sizes of the per-player input token bucket (new inputs a player may send in one
/// tick after a pause).
pub const INPUT_BURST_RANGE: RangeInclusive<u32> = 1..=64;
/// Most cells the spatial grid may have (its cell table is 4 bytes a cell).
pub const MAX_GRID_CELLS: u64 = 1 << 22;
/// Most neighbouring zones a zone may have ([`BorderConfig::neighbours`]).
pub const MAX_NEIGHBOURS: usize = 64;

/// The size and rules of one zone's simulation. Distances are world units, times seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Lower corner of the zone.
    pub bounds_min: [f32; 2],
    /// Upper corner of the zone; each coordinate above the one of `bounds_min`.
    pub bounds_max: [f32; 2],
    /// Ticks per second ([`TICK_HZ_RANGE`]); a tick advances the world by `1 / tick_hz` s.
    pub tick_hz: u16,
    /// Wandering NPCs spawned at start (at most [`MAX_NPCS`]).
    pub npcs: u32,
    /// Pickups spawned at start (at most [`MAX_PICKUPS`]).
    pub pickups: u32,
    /// Seed of the simulation's random numbers: same seed and same inputs, same world.
    pub seed: u64,
    /// Top speed of a player, units per second.
    pub max_speed: f32,
    /// Top acceleration of a player, units per second squared.
    pub max_accel: f32,
    /// Speed of a wandering NPC, units per second.
    pub npc_speed: f32,
    /// A player this close to a pickup collects it.
    pub pickup_radius: f32,
    /// Score a pickup awards.
    pub pickup_value: u32,
    /// Edge of a spatial-grid cell.
    pub grid_cell: f32,
    /// Capacity of each player's input token bucket, refilled by one a tick
    /// ([`INPUT_BURST_RANGE`]).
    pub input_burst: u32,
    /// The zone's place in the world and its neighbours, for handoffs and ghosts. `None`: the
    /// zone is alone, its edges are walls to players.
    pub border: Option<BorderConfig>,
}

/// Where a zone sits in the world and how its borders behave: players who walk more than
/// `margin` past the zone's edge into an open neighbour are handed off, entities of the
/// neighbours within `band` of the zone are shown as read-only ghosts.
#[derive(Clone, Debug, PartialEq)]
pub struct BorderConfig {
    /// Lower corner of the whole world; the world contains the zone.
    pub world_min: [f32; 2],
    /// Upper corner of the whole world.
    pub world_max: [f32; 2],
    /// The neighbouring zones' rectangles `(min, max)`, inside the world and not overlapping
    /// the zone (sharing an edge with it is the point). The index of a rectangle is the
    /// neighbour's number in crossings, ghost updates and `open_borders`. At most
    /// [`MAX_NEIGHBOURS`].
    pub neighbours: Vec<([f32; 2], [f32; 2])>,
    /// Hysteresis, world units: a player is handed off once this far past the zone's edge (the
    /// largest overshoot on either axis), so that walking along the line hands nobody off.
    pub margin: f32,
    /// Width of the border band, world units: the view reaches this far beyond the zone toward
    /// its neighbours. Must be more than `margin` plus one tick of top speed, so that a player
    /// always crosses before reaching the view's edge.
    pub band: f32,
    /// Ghosts not refreshed for this many ticks disappear (at least 1).
    pub ghost_ttl_ticks: u32,
    /// After a failed transfer, the borders are walls to that player for this many ticks.
    pub retry_ticks: u32,
}

impl Default for BorderConfig {
    /// The default zone's rectangle as the whole world, no neighbours: the shell sets the
    /// world and the neighbours.
    fn default() -> Self {
        Self {
            world_min: [0.0, 0.0],
            world_max: [1000.0, 1000.0],
            neighbours: Vec::new(),
            margin: 2.0,
            band: 40.0,
            ghost_ttl_ticks: 15,
            retry_ticks: 30,
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            bounds_min: [0.0, 0.0],
            bounds_max: [1000.0, 1000.0],
            tick_hz: 30,
            npcs: 1000,
            pickups: 200,
            seed: 1,
            max_speed: 8.0,
            max_accel: 40.0,
            npc_speed: 3.0,
            pickup_radius: 1.5,
            pickup_value: 10,
            grid_cell: 25.0,
            input_burst: 4,
            border: None,
        }
    }
}

/// Why a [`SimConfig`] was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SimConfigError {
    /// A corner of the zone is NaN or infinite.
    #[error("zone bounds must be finite: min {min:?}, max {max:?}")]
    NonFiniteBounds {
        /// The lower corner given.
        min: [f32; 2],
        /// The upper corner given.
        max: [f32; 2],
    },
    /// On one axis the lower bound is not below the upper bound.
    #[error("zone bounds are empty on the {axis} axis: min {min} is not below max {max}")]
    EmptyBounds {
        /// `'x'` or `'y'`.
        axis: char,
        /// The lower bound on that axis.
        min: f32,
        /// The upper bound on that axis.
        max: f32,
    },
    /// The tick rate is outside [`TICK_HZ_RANGE`].
    #[error("tick_hz {tick_hz} is outside {}..={}", TICK_HZ_RANGE.start(), TICK_HZ_RANGE.end())]
    TickHz {
        /// The rate given.
        tick_hz: u16,
    },
    /// More NPCs than [`MAX_NPCS`].
    #[error("{npcs} NPCs is more than the {max} a simulation accepts")]
    TooManyNpcs {
        /// The count given.
        npcs: u32,
        /// The limit.
        max: u32,
    },
    /// More pickups than [`MAX_PICKUPS`].
    #[error("{pickups} pickups is more than the {max} a simulation accepts")]
    TooManyPickups {
        /// The count given.
        pickups: u32,
        /// The limit.
        max: u32,
    },
    /// A speed, acceleration, radius or cell size is zero, negative, NaN or infinite.
    #[error("{field} must be positive and finite, got {value}")]
    NotPositive {
        /// Name of the [`SimConfig`] field.
        field: &'static str,
        /// The value given.
        value: f32,
    },
    /// The input token bucket size is outside [`INPUT_BURST_RANGE`].
    #[error(
        "input_burst {input_burst} is outside {}..={}",
        INPUT_BURST_RANGE.start(),
        INPUT_BURST_RANGE.end()
    )]
    InputBurst {
        /// The size given.
        input_burst: u32,
    },
    /// The view bounds divided by `grid_cell` make more than [`MAX_GRID_CELLS`] cells.
    #[error("a grid of {cells} cells (view bounds / grid_cell) is more than the {max} allowed")]
    TooManyCells {
        /// Cells the view bounds and cell size imply.
        cells: u64,
        /// The limit.
        max: u64,
    },
    /// The world rectangle does not contain the zone (or a corner of it is not finite).
    #[error(
        "the world {world_min:?}..{world_max:?} does not contain the zone {zone_min:?}..{zone_max:?}"
    )]
    WorldExcludesZone {
        /// Lower corner of the world given.
        world_min: [f32; 2],
        /// Upper corner of the world given.
        world_max: [f32; 2],
        /// Lower corner of the zone.
        zone_min: [f32; 2],
        /// Upper corner of the zone.
        zone_max: [f32; 2],
    },
    /// More neighbours than [`MAX_NEIGHBOURS`].
    #[error("{count} neighbours is more than the {max} a zone accepts")]
    TooManyNeighbours {
        /// The count given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A neighbour's rectangle is empty or not finite on some axis.
    #[error("neighbour {index} is empty: {min:?}..{max:?}")]
    EmptyNeighbour {
        /// The neighbour's number.
        index: usize,
        /// Its lower corner.
        min: [f32; 2],
        /// Its upper corner.
        max: [f32; 2],
    },
    /// A neighbour's rectangle reaches outside the world.
    #[error("neighbour {index} ({min:?}..{max:?}) reaches outside the world")]
    NeighbourOutsideWorld {
        /// The neighbour's number.
        index: usize,
        /// Its lower corner.
        min: [f32; 2],
        /// Its upper corner.
        max: [f32; 2],
    },
    /// A neighbour's rectangle overlaps the zone (touching its edge is fine).
    #[error("neighbour {index} ({min:?}..{max:?}) overlaps the zone")]
    NeighbourOverlapsZone {
        /// The neighbour's number.
        index: usize,
        /// Its lower corner.
        min: [f32; 2],
        /// Its upper corner.
        max: [f32; 2],
    },
    /// The border band is not wider than the hysteresis margin plus one tick of top speed, so
    /// a player could reach the view's edge without crossing.
    #[error("border band {band} must be more than {least} (margin + max_speed / tick_hz)")]
    BandTooNarrow {
        /// The band given.
        band: f32,
        /// What it must exceed.
        least: f32,
    },
    /// `ghost_ttl_ticks` is zero: ghosts would vanish on the tick they appear.
    #[error("border ghost_ttl_ticks must be at least 1")]
    ZeroGhostTtl,
}

impl SimConfig {
    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), SimConfigError> {
        let (min, max) = (self.bounds_min, self.bounds_max);
        if !min.iter().chain(&max).all(|v| v.is_finite()) {
            return Err(SimConfigError::NonFiniteBounds { min, max });
        }
        for (axis, name) in [(0, 'x'), (1, 'y')] {
            if min[axis] >= max[axis] {
                return Err(SimConfigError::EmptyBounds {
                    axis: name,
                    min: min[axis],
                    max: max[axis],
                });
            }
        }
        if !TICK_HZ_RANGE.contains(&self.tick_hz) {
            return Err(SimConfigError::TickHz {
                tick_hz: self.tick_hz,
            });
        }
        if self.npcs > MAX_NPCS {
            return Err(SimConfigError::TooManyNpcs {
                npcs: self.npcs,
                max: MAX_NPCS,
            });
        }
        if self.pickups > MAX_PICKUPS {
            return Err(SimConfigError::TooManyPickups {
                pickups: self.pickups,
                max: MAX_PICKUPS,
            });
        }
        for (field, value) in [
            ("max_speed", self.max_speed),
            ("max_accel", self.max_accel),
            ("npc_speed", self.npc_speed),
            ("pickup_radius", self.pickup_radius),
            ("grid_cell", self.grid_cell),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(SimConfigError::NotPositive { field, value });
            }
        }
        if !INPUT_BURST_RANGE.contains(&self.input_burst) {
            return Err(SimConfigError::InputBurst {
                input_burst: self.input_burst,
            });
        }
        if let Some(border) = &self.border {
            self.validate_border(border)?;
        }
        // In f64 so that a huge zone or a tiny cell cannot overflow the count.
        let (min, max) = self.view_bounds();
        let span = |a: usize| (f64::from(max[a]) - f64::from(min[a])) / f64::from(self.grid_cell);
        let cells = span(0).ceil().max(1.0) * span(1).ceil().max(1.0);
        if cells > MAX_GRID_CELLS as f64 {
            // Saturating float-to-int conversion: enough to report.
            return Err(SimConfigError::TooManyCells {
                cells: cells as u64,
                max: MAX_GRID_CELLS,
            });
        }
        Ok(())
    }

    /// Checks the border settings of a configuration whose zone and speeds are valid.
    fn validate_border(&self, border: &BorderConfig) -> Result<(), SimConfigError> {
        let (zone_min, zone_max) = (self.bounds_min, self.bounds_max);
        let (world_min, world_max) = (border.world_min, border.world_max);
        let finite = world_min.iter().chain(&world_max).all(|v| v.is_finite());
        if !(finite && contains(world_min, world_max, zone_min, zone_max)) {
            return Err(SimConfigError::WorldExcludesZone {
                world_min,
                world_max,
                zone_min,
                zone_max,
            });
        }
        if border.neighbours.len() > MAX_NEIGHBOURS {
            return Err(SimConfigError::TooManyNeighbours {
                count: border.neighbours.len(),
                max: MAX_NEIGHBOURS,
            });
        }
        for (index, &(min, max)) in border.neighbours.iter().enumerate() {
            // Written so that NaN fails.
            if !(0..2).all(|a| min[a] < max[a]) {
                return Err(SimConfigError::EmptyNeighbour { index, min, max });
            }
            if !contains(world_min, world_max, min, max) {
                return Err(SimConfigError::NeighbourOutsideWorld { index, min, max });
            }
            if (0..2).all(|a| min[a] < zone_max[a] && max[a] > zone_min[a]) {
                return Err(SimConfigError::NeighbourOverlapsZone { index, min, max });
            }
        }
        if !(border.margin.is_finite() && border.margin > 0.0) {
            return Err(SimConfigError::NotPositive {
                field: "border.margin",
                value: border.margin,
            });
        }
        let least = border.margin + self.max_speed * self.dt();
        if border.band.is_nan() || border.band <= least {
            return Err(SimConfigError::BandTooNarrow {
                band: border.band,
                least,
            });
        }
        if border.ghost_ttl_ticks == 0 {
            return Err(SimConfigError::ZeroGhostTtl);
        }
        Ok(())
    }

    /// The rectangle the simulation shows (its [`super::view::WorldView`] and spatial grid):
    /// the zone, widened by the border band on each side that has a neighbour beyond it,
    /// clipped to the world. The zone itself when there is no border.
    pub fn view_bounds(&self) -> ([f32; 2], [f32; 2]) {
        let (mut min, mut max) = (self.bounds_min, self.bounds_max);
        let Some(border) = &self.border else {
            return (min, max);
        };
        for &(n_min, n_max) in &border.neighbours {
            for a in 0..2 {
                if n_min[a] < self.bounds_min[a] {
                    min[a] = (self.bounds_min[a] - border.band).max(border.world_min[a]);
                }
                if n_max[a] > self.bounds_max[a] {
                    max[a] = (self.bounds_max[a] + border.band).min(border.world_max[a]);
                }
            }
        }
        (min, max)
    }

    /// Seconds one tick advances the world.
    pub fn dt(&self) -> f32 {
        1.0 / f32::from(self.tick_hz.max(1))
    }
}

/// Whether the rectangle `outer_min..outer_max` contains `inner_min..inner_max` (false when a
/// coordinate is NaN).
fn contains(
    outer_min: [f32; 2],
    outer_max: [f32; 2],
    inner_min: [f32; 2],
    inner_max: [f32; 2],
) -> bool {
    (0..2).all(|a| outer_min[a] <= inner_min[a] && inner_max[a] <= outer_max[a])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(SimConfig::default().validate(), Ok(()));
    }

    #[test]
    fn each_bad_field_is_named() {
        let ok = SimConfig::default();
        let cases: Vec<(SimConfig, SimConfigError)> = vec![
            (
                SimConfig {
                    bounds_min: [f32::NAN, 0.0],
                    ..ok.clone()
                },
                SimConfigError::NonFiniteBounds {
                    min: [f32::NAN, 0.0],
                    max: ok.bounds_max,
                },
            ),
            (
                SimConfig {
                    bounds_max: [1000.0, 0.0],
                    ..ok.clone()
                },
                SimConfigError::EmptyBounds {
                    axis: 'y',
                    min: 0.0,
                    max: 0.0,
                },
            ),
            (
                SimConfig {
                    tick_hz: 0,
                    ..ok.clone()
                },
                SimConfigError::TickHz { tick_hz: 0 },
            ),
            (
                SimConfig {
                    tick_hz: 241,
                    ..ok.clone()
                },
                SimConfigError::TickHz { tick_hz: 241 },
            ),
            (
                SimConfig {
                    npcs: MAX_NPCS + 1,
                    ..ok.clone()
                },
                SimConfigError::TooManyNpcs {
                    npcs: MAX_NPCS + 1,
                    max: MAX_NPCS,
                },
            ),
            (
                SimConfig {
                    pickups: MAX_PICKUPS + 1,
                    ..ok.clone()
                },
                SimConfigError::TooManyPickups {
                    pickups: MAX_PICKUPS + 1,
                    max: MAX_PICKUPS,
                },
            ),
            (
                SimConfig {
                    max_speed: 0.0,
                    ..ok.clone()
                },
                SimConfigError::NotPositive {
                    field: "max_speed",
                    value: 0.0,
                },
            ),
            (
                SimConfig {
                    npc_speed: -1.0,
                    ..ok.clone()
                },
                SimConfigError::NotPositive {
                    field: "npc_speed",
                    value: -1.0,
                },
            ),
            (
                SimConfig {
                    grid_cell: f32::INFINITY,
                    ..ok.clone()
                },
                SimConfigError::NotPositive {
                    field: "grid_cell",
                    value: f32::INFINITY,
                },
            ),
            (
                SimConfig {
                    input_burst: 0,
                    ..ok.clone()
                },
                SimConfigError::InputBurst { input_burst: 0 },
            ),
            (
                SimConfig {
                    grid_cell: 0.25,
                    ..ok.clone()
                },
                SimConfigError::TooManyCells {
                    cells: 16_000_000,
                    max: MAX_GRID_CELLS,
                },
            ),
        ];
        for (cfg, want) in cases {
            let got = cfg.validate().expect_err("config should be refused");
            // NaN != NaN: compare the rendered message, which names the field.
            assert_eq!(got.to_string(), want.to_string(), "{cfg:?}");
        }
    }

    const EAST: ([f32; 2], [f32; 2]) = ([1000.0, 0.0], [2000.0, 1000.0]);

    /// The default zone in a world [0, 2000] × [0, 1000] with its east neighbour.
    fn bordered(border: BorderConfig) -> SimConfig {
        SimConfig {
            border: Some(border),
            ..SimConfig::default()
        }
    }

    fn east_world() -> BorderConfig {
        BorderConfig {
            world_max: [2000.0, 1000.0],
            neighbours: vec![EAST],
            ..BorderConfig::default()
        }
    }

    #[test]
    fn border_defaults_are_valid() {
        assert_eq!(bordered(BorderConfig::default()).validate(), Ok(()));
        assert_eq!(bordered(east_world()).validate(), Ok(()));
    }

    #[test]
    fn view_bounds_reach_toward_neighbours_within_the_world() {
        assert_eq!(
            SimConfig::default().view_bounds(),
            ([0.0, 0.0], [1000.0, 1000.0])
        );
        assert_eq!(
            bordered(BorderConfig::default()).view_bounds(),
            ([0.0, 0.0], [1000.0, 1000.0]),
            "no neighbour, no band"
        );
        assert_eq!(
            bordered(east_world()).view_bounds(),
            ([0.0, 0.0], [1040.0, 1000.0])
        );
        // A zone in the middle of a 3 × 3 world with a diagonal neighbour and a west one; the
        // world ends 10 units west of the zone.
        let middle = SimConfig {
            bounds_min: [1000.0, 1000.0],
            bounds_max: [2000.0, 2000.0],
            border: Some(BorderConfig {
                world_min: [990.0, 0.0],
                world_max: [3000.0, 3000.0],
                neighbours: vec![
                    ([2000.0, 2000.0], [3000.0, 3000.0]),
                    ([990.0, 1000.0], [1000.0, 2000.0]),
                ],
                ..BorderConfig::default()
            }),
            ..SimConfig::default()
        };
        assert_eq!(middle.validate(), Ok(()));
        assert_eq!(middle.view_bounds(), ([990.0, 1000.0], [2040.0, 2040.0]));
    }

    #[test]
    fn each_bad_border_field_is_named() {
        let ok = east_world();
        let zone = (
            SimConfig::default().bounds_min,
            SimConfig::default().bounds_max,
        );
        let neighbour = |rect: ([f32; 2], [f32; 2])| BorderConfig {
            neighbours: vec![EAST, rect],
            ..ok.clone()
        };
        let cases: Vec<(BorderConfig, SimConfigError)> = vec![
            (
                BorderConfig {
                    world_max: [999.0, 1000.0],
                    ..ok.clone()
                },
                SimConfigError::WorldExcludesZone {
                    world_min: [0.0, 0.0],
                    world_max: [999.0, 1000.0],
                    zone_min: zone.0,
                    zone_max: zone.1,
                },
            ),
            (
                BorderConfig {
                    world_min: [f32::NAN, 0.0],
                    ..ok.clone()
                },
                SimConfigError::WorldExcludesZone {
                    world_min: [f32::NAN, 0.0],
                    world_max: ok.world_max,
                    zone_min: zone.0,
                    zone_max: zone.1,
                },
            ),
            (
                BorderConfig {
                    world_max: [f32::INFINITY, 1000.0],
                    ..ok.clone()
                },
                SimConfigError::WorldExcludesZone {
                    world_min: [0.0, 0.0],
                    world_max: [f32::INFINITY, 1000.0],
                    zone_min: zone.0,
                    zone_max: zone.1,
                },
            ),
            (
                BorderConfig {
                    neighbours: vec![EAST; MAX_NEIGHBOURS + 1],
                    ..ok.clone()
                },
                SimConfigError::TooManyNeighbours {
                    count: MAX_NEIGHBOURS + 1,
                    max: MAX_NEIGHBOURS,
                },
            ),
            (
                neighbour(([1500.0, 0.0], [1500.0, 10.0])),
                SimConfigError::EmptyNeighbour {
                    index: 1,
                    min: [1500.0, 0.0],
                    max: [1500.0, 10.0],
                },
            ),
            (
                neighbour(([1500.0, f32::NAN], [1600.0, 10.0])),
                SimConfigError::EmptyNeighbour {
                    index: 1,
                    min: [1500.0, f32::NAN],
                    max: [1600.0, 10.0],
                },
            ),
            (
                neighbour(([1500.0, 900.0], [1600.0, 1100.0])),
                SimConfigError::NeighbourOutsideWorld {
                    index: 1,
                    min: [1500.0, 900.0],
                    max: [1600.0, 1100.0],
                },
            ),
            (
                neighbour(([999.0, 0.0], [1600.0, 10.0])),
                SimConfigError::NeighbourOverlapsZone {
                    index: 1,
                    min: [999.0, 0.0],
                    max: [1600.0, 10.0],
                },
            ),
            (
                BorderConfig {
                    margin: 0.0,
                    ..ok.clone()
                },
                SimConfigError::NotPositive {
                    field: "border.margin",
                    value: 0.0,
                },
            ),
            (
                BorderConfig {
                    margin: f32::NAN,
                    ..ok.clone()
                },
                SimConfigError::NotPositive {
                    field: "border.margin",
                    value: f32::NAN,
                },
            ),
            (
                // One tick at the default top speed is 8 / 30 units.
                BorderConfig {
                    band: 2.25,
                    ..ok.clone()
                },
                SimConfigError::BandTooNarrow {
                    band: 2.25,
                    least: 2.0 + 8.0 / 30.0,
                },
            ),
            (
                BorderConfig {
                    band: f32::NAN,
                    ..ok.clone()
                },
                SimConfigError::BandTooNarrow {
                    band: f32::NAN,
                    least: 2.0 + 8.0 / 30.0,
                },
            ),
            (
                BorderConfig {
                    ghost_ttl_ticks: 0,
                    ..ok.clone()
                },
                SimConfigError::ZeroGhostTtl,
            ),
            (
                // The band widens the grid: 2,000 × 1,000 units of 0.5-unit cells.
                BorderConfig {
                    band: 1.0e9,
                    ..ok.clone()
                },
                SimConfigError::TooManyCells {
                    cells: 8_000_000,
                    max: MAX_GRID_CELLS,
                },
            ),
        ];
        for (border, want) in cases {
            let grid_cell = if matches!(want, SimConfigError::TooManyCells { .. }) {
                0.5
            } else {
                SimConfig::default().grid_cell
            };
            let cfg = SimConfig {
                grid_cell,
                ..bordered(border)
            };
            let got = cfg.validate().expect_err("config should be refused");
            assert_eq!(got.to_string(), want.to_string(), "{cfg:?}");
        }
        // The same zone without the band fits the grid.
        let cfg = SimConfig {
            grid_cell: 0.5,
            ..SimConfig::default()
        };
        assert_eq!(cfg.validate(), Ok(()));
    }
}
