//! `collect_pickups`: a player within `pickup_radius` of a pickup scores its value, and the
//! pickup moves to a random point (it keeps its entity id).

use super::components::{Frozen, Pickup, Player, Position};
use super::exchange::ScoreEvent;
use super::resources::{PickupField, Rules, SimRng, TickIo};
use bevy_ecs::prelude::*;

/// Awards every pickup within reach of a player to that player, once: players are visited in
/// storage order and a pickup taken this tick is invisible to the players after. Taken
/// pickups then move to random points, and the pickup grid is rebuilt if any moved. Frozen
/// players collect nothing; ghosts are not pickups here, whatever their kind.
pub(crate) fn collect_pickups(
    rules: Res<Rules>,
    mut rng: ResMut<SimRng>,
    mut field: ResMut<PickupField>,
    mut io: ResMut<TickIo>,
    mut players: Query<(&mut Player, &Position), Without<Frozen>>,
    mut pickups: Query<&mut Position, (With<Pickup>, Without<Player>)>,
) {
    let field = &mut *field;
    let scores = &mut io.outputs.scores;
    let (radius, value) = (rules.pickup_radius, rules.pickup_value);
    for (mut player, pos) in &mut players {
        let first = field.collected.len();
        let (taken, collected) = (&mut field.taken, &mut field.collected);
        field.grid.for_each_within(pos.0, radius, |i, _| {
            let t = &mut taken[i as usize];
            if !*t {
                *t = true;
                collected.push(i);
            }
        });
        // Only players who scored are written, so the others are not marked changed.
        for _ in first..field.collected.len() {
            player.score = player.score.saturating_add(u64::from(value));
            scores.push(ScoreEvent {
                player: player.id,
                delta: value,
                total: player.score,
            });
        }
    }
    if field.collected.is_empty() {
        return;
    }
    for &i in &field.collected {
        let i = i as usize;
        let to = rng.point(rules.min, rules.max);
        field.positions[i] = to;
        field.taken[i] = false;
        if let Ok(mut pos) = pickups.get_mut(field.entities[i]) {
            pos.0 = to;
        }
    }
    field.collected.clear();
    field.grid.rebuild(field.positions.iter().copied());
}
