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
    /// The zone divided by `grid_cell` makes more than [`MAX_GRID_CELLS`] cells.
    #[error("a grid of {cells} cells (zone / grid_cell) is more than the {max} allowed")]
    TooManyCells {
        /// Cells the zone and cell size imply.
        cells: u64,
        /// The limit.
        max: u64,
    },
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
        // In f64 so that a huge zone or a tiny cell cannot overflow the count.
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

    /// Seconds one tick advances the world.
    pub fn dt(&self) -> f32 {
        1.0 / f32::from(self.tick_hz.max(1))
    }
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
}
