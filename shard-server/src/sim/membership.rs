//! Players entering and leaving the zone: `despawn_leaving_players`, `spawn_joining_players`
//! and `rank_players`, which renumbers the players' places in the id-sorted list after either.
//! (`border::release_failed_transfers` runs between the leaves and the joins.)

use super::components::{Heading, Player, Position, Replicated, Velocity};
use super::resources::{CurrentTick, EntityIds, IndexedPlayer, PlayerIndex, Rules, SimRng, TickIo};
use bevy_ecs::prelude::*;
use meridian_protocol::snapshot::EntityKind;
use meridian_protocol::{InputSeq, Tick};
use std::f32::consts::TAU;

/// Removes the entities of the players in `leaves` (frozen at a border or not) and reports them
/// in `left`.
pub(crate) fn despawn_leaving_players(
    mut commands: Commands,
    mut io: ResMut<TickIo>,
    mut index: ResMut<PlayerIndex>,
) {
    let TickIo { inputs, outputs } = &mut *io;
    for player in inputs.leaves.drain(..) {
        let Ok(at) = index.find(player) else { continue };
        let gone = index.entries.remove(at);
        commands.entity(gone.entity).despawn();
        outputs.left.push((player, gone.id));
        index.reranked = true;
    }
}

/// Spawns an entity for each player in `joins` and reports it in `joined`: at the requested
/// point (clamped into the view bounds) or a random point of the zone, with the join's score,
/// velocity (clamped to `max_speed`, which it keeps as its intent until an input arrives) and
/// newest applied input.
pub(crate) fn spawn_joining_players(
    mut commands: Commands,
    mut io: ResMut<TickIo>,
    mut index: ResMut<PlayerIndex>,
    mut ids: ResMut<EntityIds>,
    mut rng: ResMut<SimRng>,
    rules: Res<Rules>,
    tick: Res<CurrentTick>,
) {
    let TickIo { inputs, outputs } = &mut *io;
    for join in inputs.joins.drain(..) {
        let at = match index.find(join.player) {
            Ok(at) => {
                // Already here: keep the entity (and its score), report it again.
                outputs.joined.push((join.player, index.entries[at].id));
                continue;
            }
            Err(at) => at,
        };
        let pos = match join.spawn {
            Some(p) if p.iter().all(|v| v.is_finite()) => {
                [0, 1].map(|a| p[a].clamp(rules.view_min[a], rules.view_max[a]))
            }
            _ => rng.point(rules.min, rules.max),
        };
        let velocity = clamp_speed(join.velocity, rules.max_speed);
        let facing = if velocity == [0.0, 0.0] {
            0.0
        } else {
            velocity[1].atan2(velocity[0]).rem_euclid(TAU)
        };
        let id = ids.allocate();
        let entity = commands
            .spawn((
                Replicated {
                    id,
                    kind: EntityKind::Player,
                },
                Position(pos),
                Velocity(velocity),
                Heading(facing),
                Player {
                    id: join.player,
                    intent: velocity,
                    facing,
                    last_seq: (join.last_input != InputSeq(0)).then_some(join.last_input),
                    tokens: rules.input_burst,
                    refilled: tick.0,
                    score: join.score,
                    rank: 0,
                    walled_until: Tick(0),
                },
            ))
            .id();
        index.entries.insert(
            at,
            IndexedPlayer {
                player: join.player,
                entity,
                id,
            },
        );
        index.reranked = true;
        outputs.joined.push((join.player, id));
    }
}

/// After joins or leaves, stores in each player its place in the id-sorted player list, and
/// renumbers the index's id → rank map.
pub(crate) fn rank_players(mut index: ResMut<PlayerIndex>, mut players: Query<&mut Player>) {
    if !index.reranked {
        return;
    }
    let index = &mut *index;
    index.reranked = false;
    index.ranks.clear();
    for (rank, entry) in index.entries.iter().enumerate() {
        index.ranks.insert(entry.player, rank as u32);
        if let Ok(mut player) = players.get_mut(entry.entity) {
            player.rank = rank as u32;
        }
    }
}

/// `v` with its length at most `max_speed`; zero if not finite.
fn clamp_speed(v: [f32; 2], max_speed: f32) -> [f32; 2] {
    if !v.iter().all(|c| c.is_finite()) {
        return [0.0, 0.0];
    }
    // In f64: the length of two huge finite components overflows f32.
    let speed = f64::from(v[0]).hypot(f64::from(v[1]));
    if speed > f64::from(max_speed) {
        let scale = f64::from(max_speed) / speed;
        v.map(|c| (f64::from(c) * scale) as f32)
    } else {
        v
    }
}
