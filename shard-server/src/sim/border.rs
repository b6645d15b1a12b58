//! The zone's borders: `release_failed_transfers` (frozen players whose transfer failed play
//! on, walled for a while), `cross_borders` (players past the zone's edge are walled, or frozen
//! and reported as a [`Crossing`] once past the hysteresis margin into an open neighbour) and
//! `refresh_ghosts` (the neighbours' entities near the border, shown read-only).

use super::components::{Frozen, Ghost, Heading, Player, Position, Replicated, Velocity};
use super::exchange::{Crossing, GhostUpdate};
use super::motion::stop;
use super::resources::{
    Borders, CurrentTick, EntityIds, GhostEntry, Ghosts, PlayerIndex, Rules, TickIo,
};
use bevy_ecs::prelude::*;
use meridian_protocol::{InputSeq, Tick};
use std::f32::consts::TAU;

/// Whether `p` lies in `min..=max`.
#[inline]
fn inside(p: [f32; 2], min: [f32; 2], max: [f32; 2]) -> bool {
    (p[0] >= min[0]) & (p[0] <= max[0]) & (p[1] >= min[1]) & (p[1] <= max[1])
}

/// How far `p` lies outside `min..=max`: the larger of its per-axis distances (0 inside).
#[inline]
fn overshoot(p: [f32; 2], min: [f32; 2], max: [f32; 2]) -> f32 {
    let axis = |a: usize| (min[a] - p[a]).max(p[a] - max[a]).max(0.0);
    axis(0).max(axis(1))
}

/// The newest applied input of a player, as reported across zones (`InputSeq(0)`: none).
pub(crate) fn last_input(player: &Player) -> InputSeq {
    player.last_seq.unwrap_or(InputSeq(0))
}

/// Unfreezes each frozen player of `transfer_failed`: back on the zone's edge, no velocity,
/// and the borders are walls to it for `retry_ticks`. Players not in the zone (or removed by
/// this tick's `leaves`) or not frozen are ignored.
pub(crate) fn release_failed_transfers(
    mut commands: Commands,
    mut io: ResMut<TickIo>,
    index: Res<PlayerIndex>,
    rules: Res<Rules>,
    borders: Res<Borders>,
    tick: Res<CurrentTick>,
    mut players: Query<(&mut Player, &mut Position, &mut Velocity), With<Frozen>>,
) {
    let until = Tick(tick.0.0.saturating_add(borders.retry_ticks));
    for player in io.inputs.transfer_failed.drain(..) {
        let Ok(at) = index.find(player) else { continue };
        let entity = index.entries[at].entity;
        let Ok((mut state, mut pos, mut vel)) = players.get_mut(entity) else {
            continue;
        };
        pos.0 = [0, 1].map(|a| pos.0[a].clamp(rules.min[a], rules.max[a]));
        vel.0 = [0.0, 0.0];
        state.walled_until = until;
        commands.entity(entity).remove::<Frozen>();
    }
}

/// Checks every playing player outside the zone (players move within the view bounds, which
/// reach past the zone toward its neighbours):
///
/// - not over a neighbour, over a closed one, or walled after a failed transfer: the edge is a
///   wall; the player is put back on it and loses its velocity into it;
/// - over an open neighbour and more than `margin` past the edge (the larger per-axis
///   overshoot): the player is frozen, loses its velocity, and is reported as a [`Crossing`];
/// - over an open neighbour within the margin: it plays on (hysteresis: walking along the line
///   hands nobody off).
///
/// First applies this tick's `open_borders`, if any.
pub(crate) fn cross_borders(
    mut commands: Commands,
    mut io: ResMut<TickIo>,
    mut borders: ResMut<Borders>,
    rules: Res<Rules>,
    tick: Res<CurrentTick>,
    mut players: Query<
        (Entity, &Replicated, &Player, &mut Position, &mut Velocity),
        Without<Frozen>,
    >,
) {
    let TickIo { inputs, outputs } = &mut *io;
    if let Some(open) = inputs.open_borders.take() {
        borders.set_open(&open);
    }
    if !borders.active {
        return;
    }
    let (min, max, now) = (rules.min, rules.max, tick.0);
    for (entity, rep, player, mut pos, mut vel) in &mut players {
        let p = pos.0;
        if inside(p, min, max) {
            continue;
        }
        let open = borders
            .neighbour_at(p)
            .filter(|&n| borders.open[n] && now >= player.walled_until);
        match open {
            Some(n) => {
                if overshoot(p, min, max) <= borders.margin {
                    continue;
                }
                let neighbour =
                    u16::try_from(n).expect("invariant: validation allows at most 64 neighbours");
                commands.entity(entity).insert(Frozen { neighbour });
                outputs.crossings.push(Crossing {
                    player: player.id,
                    entity: rep.id,
                    neighbour,
                    pos: p,
                    vel: vel.0,
                    score: player.score,
                    last_input: last_input(player),
                });
                vel.0 = [0.0, 0.0];
            }
            None => {
                let (back, v) = stop(p, vel.0, min, max);
                pos.0 = back;
                if v != vel.0 {
                    vel.0 = v;
                }
            }
        }
    }
}

/// Applies the tick's ghost updates, then despawns the ghosts whose time is up.
///
/// An update from a known neighbour whose position lies in the view bounds but outside the
/// zone spawns its ghost (with a fresh local id) or moves it, and keeps it for
/// `ghost_ttl_ticks` more; one placing a known ghost elsewhere removes it (it left the band).
/// Updates from unknown neighbours or with a non-finite position are ignored.
#[expect(
    clippy::too_many_arguments,
    reason = "a system's parameters are its data access; grouping them would hide it"
)]
pub(crate) fn refresh_ghosts(
    mut commands: Commands,
    mut io: ResMut<TickIo>,
    mut ghosts: ResMut<Ghosts>,
    mut ids: ResMut<EntityIds>,
    borders: Res<Borders>,
    rules: Res<Rules>,
    tick: Res<CurrentTick>,
    mut shown: Query<(&mut Position, &mut Heading), With<Ghost>>,
) {
    let now = tick.0;
    let expires = Tick(now.0.saturating_add(borders.ghost_ttl));
    let known = if borders.active {
        borders.neighbours.len()
    } else {
        0
    };
    for update in io.inputs.ghosts.drain(..) {
        let GhostUpdate {
            source,
            remote,
            kind,
            pos,
            heading,
        } = update;
        if usize::from(source) >= known || !pos.iter().all(|v| v.is_finite()) {
            continue;
        }
        let heading = if heading.is_finite() {
            heading.rem_euclid(TAU)
        } else {
            0.0
        };
        let in_band =
            inside(pos, rules.view_min, rules.view_max) && !inside(pos, rules.min, rules.max);
        let entries = &mut ghosts.entries;
        match (Ghosts::find(entries, source, remote), in_band) {
            (Ok(at), true) => {
                let ghost = &mut entries[at];
                ghost.expires = expires;
                match shown.get_mut(ghost.entity) {
                    Ok((mut p, mut h)) => {
                        p.0 = pos;
                        h.0 = heading;
                    }
                    // Spawned earlier in this batch: not in the world until the commands apply.
                    Err(_) => {
                        commands
                            .entity(ghost.entity)
                            .insert((Position(pos), Heading(heading)));
                    }
                }
            }
            (Ok(at), false) => {
                let gone = entries.remove(at);
                commands.entity(gone.entity).despawn();
            }
            (Err(at), true) => {
                let entity = commands
                    .spawn((
                        Replicated {
                            id: ids.allocate(),
                            kind,
                        },
                        Position(pos),
                        Heading(heading),
                        Ghost { source, remote },
                    ))
                    .id();
                entries.insert(
                    at,
                    GhostEntry {
                        source,
                        remote,
                        entity,
                        expires,
                    },
                );
            }
            (Err(_), false) => {}
        }
    }
    ghosts.entries.retain(|g| {
        let alive = now < g.expires;
        if !alive {
            commands.entity(g.entity).despawn();
        }
        alive
    });
}
