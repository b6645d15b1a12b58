//! The simulation core of a zone: a bevy_ecs [`World`] and a [`Schedule`] stepped by
//! [`Sim::tick`], with no I/O, no clock and no threads of its own.
//!
//! The shell hands each tick a [`SimInputs`] (joins, leaves, client inputs) and reads back a
//! [`SimOutputs`] (who joined and left, score changes, refused inputs, input acks) and the
//! [`WorldView`] (every replicable entity and a spatial index over them) for replication.
//! Same [`SimConfig::seed`] and same inputs give the same world, tick for tick.
//!
//! The game: players move server-authoritatively (an input is an intent; acceleration and
//! speed are clamped; inputs are applied in sequence order and rate-limited by a token
//! bucket), NPCs wander, pickups award score and reappear elsewhere.
//!
//! Borders ([`BorderConfig`], optional): a player who walks more than a hysteresis margin past
//! the zone's edge into an open neighbour is frozen and reported as a [`Crossing`]; the shell
//! transfers it and then removes it (`leaves`) or gives it back (`transfer_failed`, after which
//! the borders are walls to it for a while). Closed borders are walls. The neighbours'
//! entities near the border come in as [`GhostUpdate`]s and are shown read-only. The view and
//! its grid cover the zone widened by the border band ([`SimConfig::view_bounds`]).
//!
//! A tick allocates nothing once its buffers have grown (`tests/sim_alloc.rs` checks it), takes
//! no locks and does no I/O; `benches/sim.rs` measures it against a bare bevy_ecs query and
//! prints what each phase costs ([`Sim::tick_observed`] lets the shell time phases too).
//!
//! Files: [`config`] (settings and checks), [`exchange`] (tick inputs and outputs),
//! [`components`], [`schedule`] (the phases of a tick), one file per system group
//! (`membership`, `input`, `motion`, `border`, `pickups`, `index`), [`spatial`] and [`view`]
//! (the published state).

mod border;
pub mod components;
pub mod config;
pub mod exchange;
mod index;
mod input;
mod membership;
mod motion;
mod pickups;
mod resources;
pub mod schedule;
pub mod spatial;
pub mod view;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_border;

pub use config::{BorderConfig, SimConfig, SimConfigError};
pub use exchange::{
    Crossing, GhostUpdate, InputRejection, PlayerSnapshot, RejectedInput, ScoreEvent, SimInputs,
    SimJoin, SimOutputs,
};
pub use schedule::TickSystems;

use bevy_ecs::prelude::*;
use bevy_ecs::system::RunSystemOnce;
use components::{Frozen, Heading, Pickup, Player, Position, Replicated, Velocity, Wander};
use meridian_protocol::quantize::byte_to_angle;
use meridian_protocol::snapshot::EntityKind;
use meridian_protocol::{PlayerId, Tick};
use rand::SeedableRng;
use rand_pcg::Pcg64Mcg;
use resources::{
    Borders, CurrentTick, EntityIds, Ghosts, IndexedPlayer, InputQueue, PickupField, PlayerIndex,
    Rules, SimRng, TickIo, View,
};
use spatial::SpatialGrid;
use view::WorldView;

/// One zone's simulation. Build it with [`Sim::new`], step it with [`Sim::tick`], read the
/// result with [`Sim::view`].
pub struct Sim {
    world: World,
    /// Every phase of a tick.
    schedule: Schedule,
    /// One schedule per phase, for [`Sim::tick_observed`]; built on its first call.
    phases: Vec<(TickSystems, Schedule)>,
    config: SimConfig,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("tick", &self.tick_number())
            .field("entities", &self.view().entities.len())
            .field("players", &self.view().players.len())
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// A zone with its NPCs and pickups spawned at random points, no players, at tick 0.
    pub fn new(config: SimConfig) -> Result<Sim, SimConfigError> {
        config.validate()?;
        let rules = Rules::new(&config);
        let mut rng = SimRng(Pcg64Mcg::seed_from_u64(config.seed));
        let mut ids = EntityIds { next: 1 };
        let mut world = World::new();

        let npcs = (0..config.npcs)
            .map(|_| {
                let pos = rng.point(rules.min, rules.max);
                let heading = rng.heading();
                let [cos, sin] = rules.directions[usize::from(heading)];
                // Staggered first turns, so that NPCs do not all turn on the same tick.
                let next_turn = Tick(rules.turn_delay(&mut rng));
                (
                    Replicated {
                        id: ids.allocate(),
                        kind: EntityKind::Npc,
                    },
                    Position(pos),
                    Velocity([cos * rules.npc_speed, sin * rules.npc_speed]),
                    Heading(byte_to_angle(heading)),
                    Wander { next_turn },
                )
            })
            .collect::<Vec<_>>();
        world.spawn_batch(npcs);

        let positions: Vec<[f32; 2]> = (0..config.pickups)
            .map(|_| rng.point(rules.min, rules.max))
            .collect();
        let entities: Vec<Entity> = world
            .spawn_batch(
                positions
                    .iter()
                    .map(|&p| {
                        (
                            Replicated {
                                id: ids.allocate(),
                                kind: EntityKind::Pickup,
                            },
                            Position(p),
                            Pickup,
                        )
                    })
                    .collect::<Vec<_>>(),
            )
            .collect();
        let mut grid = SpatialGrid::new(rules.min, rules.max, config.grid_cell);
        grid.rebuild(positions.iter().copied());
        let field = PickupField {
            grid,
            taken: vec![false; positions.len()],
            collected: Vec::with_capacity(positions.len()),
            entities,
            positions,
        };

        let mut io = TickIo::default();
        // At most one score event per pickup per tick.
        io.outputs.scores.reserve(config.pickups as usize);
        let mut view = WorldView::new(rules.view_min, rules.view_max, config.grid_cell);
        view.entities
            .reserve(config.npcs as usize + config.pickups as usize);

        world.insert_resource(CurrentTick::default());
        world.insert_resource(rng);
        world.insert_resource(rules);
        world.insert_resource(ids);
        world.insert_resource(PlayerIndex::default());
        world.insert_resource(InputQueue::default());
        world.insert_resource(io);
        world.insert_resource(View(view));
        world.insert_resource(field);
        world.insert_resource(Borders::new(config.border.as_ref()));
        world.insert_resource(Ghosts::default());

        let mut schedule = schedule::build_schedule(&TickSystems::ALL);
        schedule
            .initialize(&mut world)
            .expect("invariant: the tick phases are chained, so no two systems are ambiguous");
        world
            .run_system_once(index::rebuild_index)
            .expect("invariant: every resource of rebuild_index is inserted above");
        Ok(Sim {
            world,
            schedule,
            phases: Vec::new(),
            config,
        })
    }

    /// Runs one tick: drains `inputs` (its lists are left empty, their capacity kept) and
    /// returns what the tick did. The new state is in [`Sim::view`].
    pub fn tick(&mut self, inputs: &mut SimInputs) -> &SimOutputs {
        // The phases of a tick (`TickSystems`, chained in `schedule::build_schedule`):
        // 1. Begin: `begin_tick` advances the tick counter and clears the outputs.
        // 2. Membership: `despawn_leaving_players`, then `release_failed_transfers` (frozen
        //    players back on the zone's edge, walled for `retry_ticks`), then
        //    `spawn_joining_players`, then `rank_players` (leaves before joins: a player who
        //    does both gets a new entity).
        // 3. Input: `apply_inputs`, per player in sequence order, repeats dropped, token
        //    bucket enforced; the newest applied input is the player's intent. Frozen players'
        //    inputs are dropped.
        // 4. Steer: `steer_players` (velocity toward the intent, accel and speed clamped;
        //    frozen players skipped), then `wander_npcs` (NPCs whose turn is due pick a random
        //    direction).
        // 5. Motion: `integrate_motion` (position += velocity · dt; players stop at the view
        //    bounds' edge, NPCs bounce off the zone's).
        // 6. Borders: `cross_borders` (applies `open_borders`; players outside the zone are
        //    walled, or frozen and reported as crossings once past the margin into an open
        //    neighbour), then `refresh_ghosts` (ghost updates applied, stale ghosts despawned).
        // 7. Pickups: `collect_pickups` (score, then the pickup moves to a random point;
        //    frozen players skipped).
        // 8. Index: `rebuild_index` (the WorldView: entities, ghosts included, spatial grid,
        //    sorted players).
        self.swap_inputs(inputs);
        self.age_change_ticks();
        self.schedule.run(&mut self.world);
        self.swap_inputs(inputs);
        self.outputs()
    }

    /// Like [`Sim::tick`], calling `after(phase)` as each phase ends, so that the caller can
    /// time the phases with its own clock (the simulation has none). Runs each phase as a
    /// schedule of its own: a little slower than [`Sim::tick`] (well under a microsecond a
    /// phase), and allocates once, on its first call, to build them.
    pub fn tick_observed(
        &mut self,
        inputs: &mut SimInputs,
        mut after: impl FnMut(TickSystems),
    ) -> &SimOutputs {
        if self.phases.is_empty() {
            for phase in TickSystems::ALL {
                let mut schedule = schedule::build_schedule(&[phase]);
                schedule
                    .initialize(&mut self.world)
                    .expect("invariant: the systems of a phase are chained");
                self.phases.push((phase, schedule));
            }
        }
        self.swap_inputs(inputs);
        self.age_change_ticks();
        for (phase, schedule) in &mut self.phases {
            schedule.run(&mut self.world);
            after(*phase);
        }
        self.swap_inputs(inputs);
        self.outputs()
    }

    /// Swaps the caller's input buffers with the tick's: before a tick they go in, after it
    /// the caller gets its own back, emptied (systems drain what they consume; anything left
    /// is cleared), capacity kept.
    fn swap_inputs(&mut self, inputs: &mut SimInputs) {
        let mut io = self.world.resource_mut::<TickIo>();
        io.inputs.clear();
        std::mem::swap(&mut io.inputs, inputs);
    }

    /// The schedules are ours, not in the world's `Schedules`: age their systems' change ticks
    /// along with the world's.
    fn age_change_ticks(&mut self) {
        if let Some(check) = self.world.check_change_ticks() {
            self.schedule.check_change_ticks(check);
            for (_, schedule) in &mut self.phases {
                schedule.check_change_ticks(check);
            }
        }
    }

    /// What the last tick did (the same as [`Sim::tick`] returned), for callers that need to
    /// read the outputs and the view at the same time.
    pub fn outputs(&self) -> &SimOutputs {
        &self.world.resource::<TickIo>().outputs
    }

    /// The world after the last tick (at tick 0: the NPCs and pickups as spawned).
    pub fn view(&self) -> &WorldView {
        &self.world.resource::<View>().0
    }

    /// The last completed tick (0 before the first).
    pub fn tick_number(&self) -> Tick {
        self.world.resource::<CurrentTick>().0
    }

    /// The state of `player`, if in the zone (frozen or not).
    pub fn player_state(&self, player: PlayerId) -> Option<PlayerSnapshot> {
        let index = self.world.resource::<PlayerIndex>();
        let at = index.find(player).ok()?;
        self.snapshot(&index.entries[at])
    }

    /// Every player in the zone with its state, by player id: for checkpoints and draining.
    pub fn players(&self) -> impl Iterator<Item = (PlayerId, PlayerSnapshot)> + '_ {
        let index = self.world.resource::<PlayerIndex>();
        index
            .entries
            .iter()
            .filter_map(|entry| Some((entry.player, self.snapshot(entry)?)))
    }

    /// The state of an indexed player's entity.
    fn snapshot(&self, entry: &IndexedPlayer) -> Option<PlayerSnapshot> {
        let e = self.world.get_entity(entry.entity).ok()?;
        let player = e.get::<Player>()?;
        Some(PlayerSnapshot {
            entity: entry.id,
            pos: e.get::<Position>()?.0,
            vel: e.get::<Velocity>()?.0,
            score: player.score,
            last_input: border::last_input(player),
            frozen: e.contains::<Frozen>(),
        })
    }

    /// Ghosts shown now (the neighbours' entities near the border).
    pub fn ghost_count(&self) -> usize {
        self.world.resource::<Ghosts>().entries.len()
    }

    /// The configuration the simulation was built with.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The ECS world, for tests and tools that inspect components directly.
    pub fn world(&self) -> &World {
        &self.world
    }

    /// The ECS world, mutably: for benchmarks and tests that run their own queries over the
    /// simulation's storage. Changes made through it bypass the simulation's rules.
    pub fn world_mut(&mut self) -> &mut World {
        &mut self.world
    }
}
