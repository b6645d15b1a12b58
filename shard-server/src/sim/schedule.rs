//! The order of a tick: the [`TickSystems`] phases, chained, and the schedule built from them
//! with ambiguity detection as an error, so that two systems touching the same data always
//! run in a defined order.

use super::border::{cross_borders, refresh_ghosts, release_failed_transfers};
use super::index::rebuild_index;
use super::input::apply_inputs;
use super::membership::{despawn_leaving_players, rank_players, spawn_joining_players};
use super::motion::{integrate_motion, steer_players, wander_npcs};
use super::pickups::collect_pickups;
use super::resources::{CurrentTick, TickIo};
use bevy_ecs::prelude::*;
use bevy_ecs::schedule::{LogLevel, ScheduleBuildSettings, SingleThreadedExecutor};
use meridian_protocol::Tick;

/// The phases of a tick, in the order they run (see the numbered comment in
/// [`super::Sim::tick`]).
#[derive(SystemSet, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TickSystems {
    /// Advance the tick counter, clear the outputs.
    Begin,
    /// Players leave, failed transfers are taken back, players join.
    Membership,
    /// Client inputs become intents.
    Input,
    /// Velocities: players steer toward their intent, NPCs pick directions.
    Steer,
    /// Positions integrate and are kept in bounds.
    Motion,
    /// Players past the zone's edge are walled or frozen and reported as crossings; ghosts
    /// are refreshed and expire.
    Borders,
    /// Players collect pickups.
    Pickups,
    /// The view and its spatial index are rebuilt.
    Index,
}

impl TickSystems {
    /// Every phase, in order.
    pub const ALL: [TickSystems; 8] = [
        TickSystems::Begin,
        TickSystems::Membership,
        TickSystems::Input,
        TickSystems::Steer,
        TickSystems::Motion,
        TickSystems::Borders,
        TickSystems::Pickups,
        TickSystems::Index,
    ];
}

/// Starts a tick: the counter advances and the outputs are emptied.
pub(crate) fn begin_tick(mut tick: ResMut<CurrentTick>, mut io: ResMut<TickIo>) {
    tick.0 = Tick(tick.0.0 + 1);
    io.outputs.clear();
    io.outputs.tick = tick.0;
}

/// A schedule running the systems of `phases` in tick order: all of them for the tick
/// schedule, one for the per-phase schedules of [`super::Sim::tick_observed`].
pub(crate) fn build_schedule(phases: &[TickSystems]) -> Schedule {
    let mut schedule = Schedule::default();
    schedule.set_build_settings(ScheduleBuildSettings {
        ambiguity_detection: LogLevel::Error,
        ..ScheduleBuildSettings::default()
    });
    schedule.set_executor(SingleThreadedExecutor::new());
    schedule.configure_sets(
        (
            TickSystems::Begin,
            TickSystems::Membership,
            TickSystems::Input,
            TickSystems::Steer,
            TickSystems::Motion,
            TickSystems::Borders,
            TickSystems::Pickups,
            TickSystems::Index,
        )
            .chain(),
    );
    for phase in TickSystems::ALL.into_iter().filter(|p| phases.contains(p)) {
        match phase {
            TickSystems::Begin => schedule.add_systems(begin_tick.in_set(phase)),
            TickSystems::Membership => schedule.add_systems(
                (
                    despawn_leaving_players,
                    release_failed_transfers,
                    spawn_joining_players,
                    rank_players,
                )
                    .chain()
                    .in_set(phase),
            ),
            TickSystems::Input => schedule.add_systems(apply_inputs.in_set(phase)),
            TickSystems::Steer => {
                schedule.add_systems((steer_players, wander_npcs).chain().in_set(phase))
            }
            TickSystems::Motion => schedule.add_systems(integrate_motion.in_set(phase)),
            TickSystems::Borders => {
                schedule.add_systems((cross_borders, refresh_ghosts).chain().in_set(phase))
            }
            TickSystems::Pickups => schedule.add_systems(collect_pickups.in_set(phase)),
            TickSystems::Index => schedule.add_systems(rebuild_index.in_set(phase)),
        };
    }
    schedule
}
