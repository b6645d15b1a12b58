//! `rebuild_index`: publishes the tick's world as the [`WorldView`]: every replicable entity,
//! the spatial grid over them, and the players sorted by id.

use super::components::{Heading, Player, Position, Replicated, Velocity};
use super::resources::{CurrentTick, PlayerIndex, View};
use super::view::{EntityView, PlayerView, WorldView};
use bevy_ecs::prelude::*;
use meridian_protocol::{EntityId, PlayerId};

/// What the view reads of each entity; pickups have no velocity or heading, ghosts no
/// velocity, NPCs no player.
type ViewRow = (
    &'static Replicated,
    &'static Position,
    Option<&'static Velocity>,
    Option<&'static Heading>,
    Option<&'static Player>,
);

/// Refills the view in storage order (entity `i` is grid item `i`) and refreshes its grid.
/// Walks whole table columns, so that each table is one tight copy loop.
pub(crate) fn rebuild_index(
    tick: Res<CurrentTick>,
    index: Res<PlayerIndex>,
    mut view: ResMut<View>,
    entities: Query<ViewRow>,
) {
    let WorldView {
        tick: view_tick,
        entities: out,
        grid,
        players,
    } = &mut view.0;
    *view_tick = tick.0;
    out.clear();
    // The grid's positions are copied column by column below, beside the view.
    let grid_positions = grid.begin_refresh();
    players.clear();
    let blank = PlayerView {
        player: PlayerId(0),
        entity: EntityId(0),
        index: 0,
    };
    players.resize(index.entries.len(), blank);
    let tables = entities
        .contiguous_iter()
        .expect("invariant: view components are table-stored, so the query is dense");
    for (reps, positions, vels, headings, table_players) in tables {
        let first = out.len();
        grid_positions.extend(positions.iter().map(|p| p.0));
        match (vels, headings) {
            (Some(vels), Some(headings)) => {
                let rows = reps.iter().zip(positions).zip(vels).zip(headings);
                out.extend(rows.map(|(((rep, pos), vel), heading)| EntityView {
                    id: rep.id,
                    kind: rep.kind,
                    pos: pos.0,
                    vel: vel.0,
                    heading: heading.0,
                }));
            }
            (None, Some(headings)) => {
                let rows = reps.iter().zip(positions).zip(headings);
                out.extend(rows.map(|((rep, pos), heading)| EntityView {
                    id: rep.id,
                    kind: rep.kind,
                    pos: pos.0,
                    vel: [0.0, 0.0],
                    heading: heading.0,
                }));
            }
            _ => out.extend(reps.iter().zip(positions).map(|(rep, pos)| EntityView {
                id: rep.id,
                kind: rep.kind,
                pos: pos.0,
                vel: [0.0, 0.0],
                heading: 0.0,
            })),
        }
        for (row, player) in table_players.into_iter().flatten().enumerate() {
            if let Some(slot) = players.get_mut(player.rank as usize) {
                let index = (first + row) as u32;
                *slot = PlayerView {
                    player: player.id,
                    entity: reps[row].id,
                    index,
                };
            }
        }
    }
    grid.finish_refresh();
}
