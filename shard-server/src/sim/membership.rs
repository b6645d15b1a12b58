//! Players entering and leaving the zone: `despawn_leaving_players`, `spawn_joining_players`
//! and `rank_players`, which renumbers the players' places in the id-sorted list after either.

use super::components::{Heading, Player, Position, Replicated, Velocity};
use super::resources::{CurrentTick, EntityIds, IndexedPlayer, PlayerIndex, Rules, SimRng, TickIo};
use bevy_ecs::prelude::*;
use meridian_protocol::snapshot::EntityKind;

/// Removes the entities of the players in `leaves` and reports them in `left`.
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

/// Spawns an entity for each player in `joins` (at the requested point or a random one) and
/// reports it in `joined`.
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
                [0, 1].map(|a| p[a].clamp(rules.min[a], rules.max[a]))
            }
            _ => rng.point(rules.min, rules.max),
        };
        let id = ids.allocate();
        let entity = commands
            .spawn((
                Replicated {
                    id,
                    kind: EntityKind::Player,
                },
                Position(pos),
                Velocity::default(),
                Heading::default(),
                Player {
                    id: join.player,
                    intent: [0.0, 0.0],
                    facing: 0.0,
                    last_seq: None,
                    tokens: rules.input_burst,
                    refilled: tick.0,
                    score: join.score,
                    rank: 0,
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
