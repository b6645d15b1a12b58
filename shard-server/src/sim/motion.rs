//! Movement: `steer_players` (velocity toward the intent, acceleration and speed clamped),
//! `wander_npcs` (a new random direction every 1 to 4 seconds) and `integrate_motion`
//! (position from velocity; players stop at the edge of the view bounds, NPCs bounce off the
//! zone's edge). Where a player outside the zone may be is `border`'s business.
//!
//! The NPC systems walk whole table columns (`contiguous_iter_mut`): tight loops over slices
//! that the compiler can vectorize, with change ticks written per row only where a row
//! changes, or for the whole column where all do.

use super::components::{Frozen, Heading, Player, Position, Velocity, Wander};
use super::resources::{CurrentTick, Rules, SimRng};
use bevy_ecs::change_detection::{ContiguousComponentTicksMut, ContiguousMut};
use bevy_ecs::prelude::*;
use meridian_protocol::Tick;
use meridian_protocol::quantize::byte_to_angle;
use std::f32::consts::TAU;

/// One table's column of a component, for systems that write a few of its rows: each write
/// marks its row changed, the others stay untouched.
struct Rows<'w, T> {
    values: &'w mut [T],
    ticks: ContiguousComponentTicksMut<'w>,
}

impl<'w, T> Rows<'w, T> {
    fn new(column: ContiguousMut<'w, T>) -> Self {
        let (values, ticks) = ContiguousMut::bypass_change_detection_split(column);
        Self { values, ticks }
    }

    fn set(&mut self, row: usize, value: T) {
        self.values[row] = value;
        let now = self.ticks.this_run();
        self.ticks.changed_mut()[row] = now;
    }
}

/// Moves each player's velocity toward the velocity its intent asks for, by at most
/// `max_accel · dt`, and keeps its speed at most `max_speed`. Frozen players keep standing.
pub(crate) fn steer_players(
    rules: Res<Rules>,
    mut players: Query<(&Player, &mut Velocity, &mut Heading), Without<Frozen>>,
) {
    let (max_dv, max_speed) = (rules.max_dv, rules.max_speed);
    for (player, mut vel, mut heading) in &mut players {
        let v = vel.0;
        let mut dv = [player.intent[0] - v[0], player.intent[1] - v[1]];
        let dv2 = dv[0] * dv[0] + dv[1] * dv[1];
        if dv2 > max_dv * max_dv {
            let scale = max_dv / dv2.sqrt();
            dv = [dv[0] * scale, dv[1] * scale];
        }
        let mut next = [v[0] + dv[0], v[1] + dv[1]];
        // The intent is never faster than max_speed, so this only catches rounding.
        let speed2 = next[0] * next[0] + next[1] * next[1];
        if speed2 > max_speed * max_speed {
            let scale = max_speed / speed2.sqrt();
            next = [next[0] * scale, next[1] * scale];
        }
        // Written only when changed, so that idle players are not marked changed.
        if next != v {
            vel.0 = next;
        }
        if heading.0 != player.facing {
            heading.0 = player.facing;
        }
    }
}

/// Gives each NPC whose turn is due a new random direction at `npc_speed`, and schedules its
/// next turn 1 to 4 seconds later.
pub(crate) fn wander_npcs(
    rules: Res<Rules>,
    tick: Res<CurrentTick>,
    mut rng: ResMut<SimRng>,
    mut npcs: Query<(&mut Wander, &mut Velocity, &mut Heading)>,
) {
    let now = tick.0;
    let rng = &mut *rng;
    let tables = npcs
        .contiguous_iter_mut()
        .expect("invariant: wander components are table-stored, so the query is dense");
    for (wander, vel, heading) in tables {
        let (mut wander, mut vel, mut heading) =
            (Rows::new(wander), Rows::new(vel), Rows::new(heading));
        for row in 0..wander.values.len() {
            if wander.values[row].next_turn > now {
                continue;
            }
            let h = rng.heading();
            let [cos, sin] = rules.directions[usize::from(h)];
            vel.set(
                row,
                Velocity([cos * rules.npc_speed, sin * rules.npc_speed]),
            );
            heading.set(row, Heading(byte_to_angle(h)));
            wander.set(
                row,
                Wander {
                    next_turn: Tick(now.0 + rules.turn_delay(rng)),
                },
            );
        }
    }
}

/// Advances every moving entity by its velocity over one tick and keeps it in bounds: a
/// player stops at the edge of the view bounds (the zone without borders; the velocity
/// component into the edge is dropped), an NPC is reflected off the zone's edge (its velocity
/// component and heading mirrored).
pub(crate) fn integrate_motion(
    rules: Res<Rules>,
    mut movers: Query<(&mut Position, &mut Velocity, &mut Heading, Has<Wander>)>,
) {
    let dt = rules.dt;
    let tables = movers
        .contiguous_iter_mut()
        .expect("invariant: motion components are table-stored, so the query is dense");
    for (pos, vel, heading, is_npc) in tables {
        let (min, max) = if is_npc {
            (rules.min, rules.max)
        } else {
            (rules.view_min, rules.view_max)
        };
        let inside =
            |p: [f32; 2]| (p[0] >= min[0]) & (p[0] <= max[0]) & (p[1] >= min[1]) & (p[1] <= max[1]);
        // Every mover's position is written: mark the whole column changed at once.
        let (pos, _) = ContiguousMut::split(pos);
        let (mut vel, mut heading) = (Rows::new(vel), Rows::new(heading));
        // Chunks: a branch-free loop integrates a chunk and notes whether anyone in it left
        // the zone; only such chunks (a few a tick) are walked again to bring them back.
        for start in (0..pos.len()).step_by(MOTION_CHUNK) {
            let end = (start + MOTION_CHUNK).min(pos.len());
            let mut escaped = false;
            for (p, v) in pos[start..end].iter_mut().zip(&vel.values[start..end]) {
                let next = [p.0[0] + v.0[0] * dt, p.0[1] + v.0[1] * dt];
                escaped |= !inside(next);
                p.0 = next;
            }
            if !escaped {
                continue;
            }
            for (row, p) in pos.iter_mut().enumerate().take(end).skip(start) {
                if inside(p.0) {
                    continue;
                }
                let v = vel.values[row].0;
                let (back, v2) = if is_npc {
                    reflect(p.0, v, min, max)
                } else {
                    stop(p.0, v, min, max)
                };
                p.0 = back;
                if v2 != v {
                    vel.set(row, Velocity(v2));
                    if is_npc {
                        heading.set(row, Heading(v2[1].atan2(v2[0]).rem_euclid(TAU)));
                    }
                }
            }
        }
    }
}

/// Rows `integrate_motion` integrates between two checks for entities leaving the zone.
const MOTION_CHUNK: usize = 64;

/// Mirrors a point that left the zone back into it, and points the velocity back inward on
/// each axis it crossed.
fn reflect(p: [f32; 2], v: [f32; 2], min: [f32; 2], max: [f32; 2]) -> ([f32; 2], [f32; 2]) {
    let axis = |a: usize| {
        let (mut p, mut v) = (p[a], v[a]);
        if p < min[a] {
            p = 2.0 * min[a] - p;
            v = v.abs();
        } else if p > max[a] {
            p = 2.0 * max[a] - p;
            v = -v.abs();
        }
        // A step longer than the zone is wide would reflect past the other edge.
        (p.clamp(min[a], max[a]), v)
    };
    let ((px, vx), (py, vy)) = (axis(0), axis(1));
    ([px, py], [vx, vy])
}

/// Clamps a point into the rectangle `min..=max` and drops the velocity components pointing
/// out of it.
pub(crate) fn stop(p: [f32; 2], v: [f32; 2], min: [f32; 2], max: [f32; 2]) -> ([f32; 2], [f32; 2]) {
    let axis = |a: usize| {
        if p[a] < min[a] {
            (min[a], v[a].max(0.0))
        } else if p[a] > max[a] {
            (max[a], v[a].min(0.0))
        } else {
            (p[a], v[a])
        }
    };
    let ((px, vx), (py, vy)) = (axis(0), axis(1));
    ([px, py], [vx, vy])
}
