//! Simulation tests: the world is stepped deterministically, no network, no clock.

use super::components::{Pickup, Player, Position};
use super::view::{EntityView, WorldView};
use super::*;
use bevy_ecs::schedule::{LogLevel, ScheduleBuildSettings};
use bevy_ecs::system::System;
use meridian_protocol::datagram::InputFrameMsg;
use meridian_protocol::quantize::angle_to_byte;
use meridian_protocol::{EntityId, InputSeq, PlayerId};
use proptest::prelude::*;
use std::any::TypeId;
use std::f32::consts::{FRAC_PI_2, PI};

/// A small zone: few NPCs and pickups, so that tests read easily and run fast.
fn small() -> SimConfig {
    SimConfig {
        npcs: 50,
        pickups: 10,
        ..SimConfig::default()
    }
}

fn frame(seq: u32, heading: u8, throttle: u8) -> InputFrameMsg {
    InputFrameMsg {
        seq: InputSeq(seq),
        heading,
        throttle,
        buttons: 0,
    }
}

/// Relative slack for float comparisons against limits.
const SLACK: f32 = 1e-5;

fn join_at(sim: &mut Sim, player: u64, spawn: Option<[f32; 2]>) -> EntityId {
    let mut inputs = SimInputs::default();
    inputs.joins.push(SimJoin {
        player: PlayerId(player),
        spawn,
        score: 0,
        ..SimJoin::default()
    });
    let out = sim.tick(&mut inputs);
    let (_, entity) = *out
        .joined
        .iter()
        .find(|(p, _)| *p == PlayerId(player))
        .expect("the join is reported");
    entity
}

fn player_entity(view: &WorldView, player: u64) -> EntityView {
    let pv = view.player(PlayerId(player)).expect("player in view");
    view.entities[pv.index as usize]
}

fn speed(v: [f32; 2]) -> f32 {
    v[0].hypot(v[1])
}

fn send(sim: &mut Sim, player: u64, frames: &[InputFrameMsg]) -> SimOutputs {
    let mut inputs = SimInputs::default();
    inputs
        .inputs
        .extend(frames.iter().map(|f| (PlayerId(player), *f)));
    sim.tick(&mut inputs).clone()
}

fn assert_in_bounds(view: &WorldView, cfg: &SimConfig) {
    for e in &view.entities {
        for a in 0..2 {
            assert!(
                e.pos[a] >= cfg.bounds_min[a] && e.pos[a] <= cfg.bounds_max[a],
                "entity {:?} out of bounds at {:?}",
                e.id,
                e.pos
            );
        }
    }
}

// --- schedule ---------------------------------------------------------------------------------

fn system_type<M>(system: impl IntoSystem<(), (), M>) -> TypeId {
    IntoSystem::into_system(system).system_type()
}

#[test]
fn schedule_runs_the_documented_phases_in_order_without_ambiguity() {
    let mut sim = Sim::new(small()).expect("valid config");
    // `Sim::new` already initialized the schedule with ambiguity detection as an error.
    let got: Vec<TypeId> = sim
        .schedule
        .systems()
        .expect("initialized")
        .map(|(_, s)| s.system_type())
        .filter(|t| *t != TypeId::of::<ApplyDeferred>())
        .collect();
    let want = vec![
        system_type(schedule::begin_tick),
        system_type(membership::despawn_leaving_players),
        system_type(border::release_failed_transfers),
        system_type(membership::spawn_joining_players),
        system_type(membership::rank_players),
        system_type(input::apply_inputs),
        system_type(motion::steer_players),
        system_type(motion::wander_npcs),
        system_type(motion::integrate_motion),
        system_type(border::cross_borders),
        system_type(border::refresh_ghosts),
        system_type(pickups::collect_pickups),
        system_type(index::rebuild_index),
    ];
    assert_eq!(got, want, "keep the numbered comment in Sim::tick true");
    sim.tick(&mut SimInputs::default());
    assert_eq!(sim.tick_number(), Tick(1));
}

#[test]
fn ambiguity_detection_rejects_unordered_writers() {
    // The setting the tick schedule uses does catch two unordered writers of one resource.
    fn a(mut t: ResMut<resources::CurrentTick>) {
        t.0 = Tick(1);
    }
    fn b(mut t: ResMut<resources::CurrentTick>) {
        t.0 = Tick(2);
    }
    let mut world = World::new();
    world.insert_resource(resources::CurrentTick::default());
    let mut schedule = Schedule::default();
    schedule.set_build_settings(ScheduleBuildSettings {
        ambiguity_detection: LogLevel::Error,
        ..ScheduleBuildSettings::default()
    });
    schedule.add_systems((a, b));
    assert!(schedule.initialize(&mut world).is_err());
}

// --- determinism ------------------------------------------------------------------------------

/// A scripted session: players join over time, steer with varying inputs (with the usual
/// redundancy and some reordering), one leaves and comes back.
fn scripted_inputs(tick: u64) -> SimInputs {
    let mut inputs = SimInputs::default();
    if tick < 20 {
        let spawn = tick
            .is_multiple_of(2)
            .then_some([tick as f32 * 40.0, 500.0]);
        inputs.joins.push(SimJoin {
            player: PlayerId(tick * 7 + 3),
            spawn,
            score: tick,
            ..SimJoin::default()
        });
    }
    if tick == 100 {
        inputs.leaves.push(PlayerId(3));
    }
    if tick == 120 {
        inputs.joins.push(SimJoin {
            player: PlayerId(3),
            spawn: None,
            score: 0,
            ..SimJoin::default()
        });
    }
    for p in 0..20u64 {
        let seq = tick as u32;
        let heading = (tick * 3 + p * 17) as u8;
        // The last three inputs again, newest first (reordered on purpose).
        for back in 0..3u32 {
            if let Some(s) = seq.checked_sub(back) {
                inputs
                    .inputs
                    .push((PlayerId(p * 7 + 3), frame(s, heading, 255)));
            }
        }
    }
    inputs
}

fn run_script(seed: u64, ticks: u64) -> Vec<(SimOutputs, Vec<EntityView>, Vec<view::PlayerView>)> {
    let mut sim = Sim::new(SimConfig { seed, ..small() }).expect("valid config");
    (0..ticks)
        .map(|t| {
            let mut inputs = scripted_inputs(t);
            let out = sim.tick(&mut inputs).clone();
            let view = sim.view();
            (out, view.entities.clone(), view.players.clone())
        })
        .collect()
}

#[test]
fn same_seed_and_inputs_give_the_same_world_every_tick() {
    let a = run_script(7, 400);
    let b = run_script(7, 400);
    for (t, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "runs diverge at tick {}", t + 1);
    }
    // The script did something worth comparing.
    let acks: usize = a.iter().map(|(o, _, _)| o.input_acks.len()).sum();
    assert!(acks > 1000, "inputs were applied ({acks})");
    assert_eq!(a.last().map(|(_, _, p)| p.len()), Some(20));
}

#[test]
fn observed_ticks_match_plain_ticks() {
    let mut plain = Sim::new(small()).expect("valid config");
    let mut observed = Sim::new(small()).expect("valid config");
    for t in 0..150 {
        let want = plain.tick(&mut scripted_inputs(t)).clone();
        let mut seen = Vec::new();
        let got = observed
            .tick_observed(&mut scripted_inputs(t), |phase| seen.push(phase))
            .clone();
        assert_eq!(seen, TickSystems::ALL);
        assert_eq!(got, want, "tick {}", t + 1);
        assert_eq!(observed.view().entities, plain.view().entities);
        assert_eq!(observed.view().players, plain.view().players);
    }
}

#[test]
fn another_seed_gives_another_world() {
    let a = run_script(7, 5);
    let b = run_script(8, 5);
    assert_ne!(a[0].1, b[0].1);
}

// --- movement authority -----------------------------------------------------------------------

#[test]
fn flooding_full_throttle_never_beats_max_speed() {
    let cfg = small();
    let mut sim = Sim::new(cfg.clone()).expect("valid config");
    join_at(&mut sim, 1, Some([500.0, 500.0]));
    let mut last = player_entity(sim.view(), 1).pos;
    let mut seq = 0;
    // Positions near 500 are f32 with a step of about 6e-5: allow a few of those.
    let max_step = cfg.max_speed * cfg.dt() + 2e-4;
    for tick in 0..200u32 {
        // 50 new inputs a tick, all full throttle, turning.
        let frames: Vec<_> = (0..50)
            .map(|_| {
                seq += 1;
                frame(seq, (tick / 20 * 40) as u8, 255)
            })
            .collect();
        let out = send(&mut sim, 1, &frames);
        let flood = out
            .rejected
            .iter()
            .filter(|r| r.reason == InputRejection::Flood)
            .count();
        // The bucket starts full (4), then refills by one a tick.
        assert_eq!(flood, if tick == 0 { 46 } else { 49 }, "tick {tick}");
        let me = player_entity(sim.view(), 1);
        assert!(
            speed(me.vel) <= cfg.max_speed * (1.0 + SLACK),
            "speed {:?}",
            me.vel
        );
        let step = speed([me.pos[0] - last[0], me.pos[1] - last[1]]);
        assert!(
            step <= max_step,
            "moved {step} in one tick, limit {max_step}"
        );
        last = me.pos;
    }
}

#[test]
fn acceleration_is_clamped() {
    let cfg = small();
    let mut sim = Sim::new(cfg.clone()).expect("valid config");
    join_at(&mut sim, 1, Some([100.0, 500.0]));
    let dv = cfg.max_accel * cfg.dt();
    for k in 1..=10u32 {
        send(&mut sim, 1, &[frame(k, 0, 255)]);
        let v = player_entity(sim.view(), 1).vel;
        let want = (dv * k as f32).min(cfg.max_speed);
        assert!(
            (v[0] - want).abs() < 1e-4 && v[1].abs() < 1e-4,
            "tick {k}: {v:?}, want {want}"
        );
    }
    // Turning around is braked by the same limit: the speed change per tick stays ≤ dv.
    let before = player_entity(sim.view(), 1).vel;
    send(&mut sim, 1, &[frame(11, angle_to_byte(PI), 255)]);
    let after = player_entity(sim.view(), 1).vel;
    let change = speed([after[0] - before[0], after[1] - before[1]]);
    assert!(change <= dv * (1.0 + SLACK), "changed {change}, limit {dv}");
}

#[test]
fn stale_and_duplicate_inputs_are_dropped() {
    let mut sim = Sim::new(small()).expect("valid config");
    join_at(&mut sim, 1, Some([500.0, 500.0]));
    let out = send(&mut sim, 1, &[frame(5, 0, 255)]);
    assert_eq!(out.input_acks, vec![(PlayerId(1), InputSeq(5))]);
    // A repeat of 5 (even with other content) and an older 3: both dropped, no ack, intent kept.
    let north = angle_to_byte(FRAC_PI_2);
    let out = send(&mut sim, 1, &[frame(5, north, 255), frame(3, north, 255)]);
    assert_eq!(out.redundant, 2);
    assert!(out.input_acks.is_empty() && out.rejected.is_empty());
    let players = sim
        .world_mut()
        .query::<&Player>()
        .iter(sim.world())
        .copied()
        .collect::<Vec<_>>();
    assert_eq!(players[0].last_seq, Some(InputSeq(5)));
    assert!(
        players[0].intent[1].abs() < 1e-4,
        "intent still east: {:?}",
        players[0].intent
    );
}

#[test]
fn out_of_order_inputs_are_applied_in_sequence_order() {
    let mut sim = Sim::new(SimConfig {
        input_burst: 2,
        ..small()
    })
    .expect("valid config");
    join_at(&mut sim, 1, Some([500.0, 500.0]));
    let (east, north, west) = (0, angle_to_byte(FRAC_PI_2), angle_to_byte(PI));
    // Arrives 3, 1, 2; applied 1, 2 (the bucket holds two), 3 refused as a flood. Applied in
    // arrival order, 3 would have won and 1, 2 been dropped as stale.
    let out = send(
        &mut sim,
        1,
        &[
            frame(3, west, 255),
            frame(1, east, 255),
            frame(2, north, 255),
        ],
    );
    assert_eq!(out.input_acks, vec![(PlayerId(1), InputSeq(2))]);
    assert_eq!(
        out.rejected,
        vec![RejectedInput {
            player: PlayerId(1),
            reason: InputRejection::Flood
        }]
    );
    assert_eq!(out.redundant, 0);
    let me = player_entity(sim.view(), 1);
    assert!(
        (me.heading - FRAC_PI_2).abs() < 1e-3,
        "facing north (seq 2): {}",
        me.heading
    );
    // Sent again next tick, all three are repeats: 3 was refused for good, not postponed (so a
    // held-up stream is refused once, not every tick after).
    let out = send(
        &mut sim,
        1,
        &[
            frame(2, north, 255),
            frame(3, west, 255),
            frame(1, east, 255),
        ],
    );
    assert_eq!(out.input_acks, vec![]);
    assert_eq!(out.redundant, 3);
    assert!(out.rejected.is_empty());
    // The next new input is applied.
    let out = send(&mut sim, 1, &[frame(4, west, 255)]);
    assert_eq!(out.input_acks, vec![(PlayerId(1), InputSeq(4))]);
}

#[test]
fn floods_are_refused_and_counted_and_the_bucket_refills() {
    let mut sim = Sim::new(small()).expect("valid config");
    join_at(&mut sim, 1, Some([500.0, 500.0]));
    let flood = |out: &SimOutputs| {
        out.rejected
            .iter()
            .filter(|r| r.reason == InputRejection::Flood)
            .count()
    };
    let frames: Vec<_> = (1..=10).map(|s| frame(s, 0, 128)).collect();
    let out = send(&mut sim, 1, &frames);
    assert_eq!(
        (flood(&out), out.input_acks.clone()),
        (6, vec![(PlayerId(1), InputSeq(4))])
    );
    let out = send(
        &mut sim,
        1,
        &[frame(11, 0, 128), frame(12, 0, 128), frame(13, 0, 128)],
    );
    assert_eq!(
        (flood(&out), out.input_acks.clone()),
        (2, vec![(PlayerId(1), InputSeq(11))])
    );
    // Ten idle ticks refill the bucket to its capacity (4), not beyond.
    for _ in 0..10 {
        sim.tick(&mut SimInputs::default());
    }
    let frames: Vec<_> = (14..=23).map(|s| frame(s, 0, 128)).collect();
    let out = send(&mut sim, 1, &frames);
    assert_eq!(
        (flood(&out), out.input_acks.clone()),
        (6, vec![(PlayerId(1), InputSeq(17))])
    );
}

#[test]
fn inputs_of_unknown_players_are_refused() {
    let mut sim = Sim::new(small()).expect("valid config");
    join_at(&mut sim, 2, None);
    let mut inputs = SimInputs::default();
    inputs.inputs.extend([
        (PlayerId(9), frame(1, 0, 255)),
        (PlayerId(2), frame(1, 0, 255)),
        (PlayerId(1), frame(1, 0, 255)),
    ]);
    let out = sim.tick(&mut inputs);
    let unknown = |p| RejectedInput {
        player: PlayerId(p),
        reason: InputRejection::UnknownPlayer,
    };
    assert_eq!(
        out.rejected,
        vec![unknown(9), unknown(1)],
        "in arrival order"
    );
    assert_eq!(out.input_acks, vec![(PlayerId(2), InputSeq(1))]);
    // Drained, capacity kept.
    assert!(inputs.inputs.is_empty() && inputs.inputs.capacity() >= 3);
}

#[test]
fn players_stop_at_the_zone_edge() {
    let cfg = small();
    let mut sim = Sim::new(cfg.clone()).expect("valid config");
    join_at(&mut sim, 1, Some([999.0, 500.0]));
    for k in 1..=30 {
        send(&mut sim, 1, &[frame(k, 0, 255)]);
    }
    let me = player_entity(sim.view(), 1);
    assert_eq!(me.pos[0], cfg.bounds_max[0]);
    assert_eq!(me.vel[0], 0.0, "no velocity into the wall");
}

// --- pickups ----------------------------------------------------------------------------------

fn pickups(view: &WorldView) -> Vec<EntityView> {
    view.entities
        .iter()
        .filter(|e| e.kind == EntityKind::Pickup)
        .copied()
        .collect()
}

#[test]
fn a_pickup_awards_score_once_and_moves() {
    let cfg = SimConfig {
        npcs: 0,
        pickups: 5,
        ..SimConfig::default()
    };
    let mut sim = Sim::new(cfg.clone()).expect("valid config");
    let target = pickups(sim.view())[0];
    // Two players on the same pickup: exactly one of them gets it.
    let mut inputs = SimInputs::default();
    inputs.joins.push(SimJoin {
        player: PlayerId(1),
        spawn: Some(target.pos),
        score: 100,
        ..SimJoin::default()
    });
    inputs.joins.push(SimJoin {
        player: PlayerId(2),
        spawn: Some(target.pos),
        score: 0,
        ..SimJoin::default()
    });
    let out = sim.tick(&mut inputs).clone();
    assert_eq!(out.scores.len(), 1, "{:?}", out.scores);
    let ev = out.scores[0];
    assert_eq!(ev.delta, cfg.pickup_value);
    assert_eq!(ev.total, if ev.player == PlayerId(1) { 110 } else { 10 });
    let moved = pickups(sim.view())
        .into_iter()
        .find(|p| p.id == target.id)
        .expect("same entity id");
    assert_ne!(moved.pos, target.pos);
    assert_eq!(pickups(sim.view()).len(), 5);
    // Standing still on the old spot scores nothing more.
    for _ in 0..30 {
        assert!(sim.tick(&mut SimInputs::default()).scores.is_empty());
    }
    // Walking onto the pickup's new spot scores again, from the new total.
    let mut inputs = SimInputs::default();
    inputs.leaves.push(ev.player);
    inputs.joins.push(SimJoin {
        player: ev.player,
        spawn: Some(moved.pos),
        score: ev.total,
        ..SimJoin::default()
    });
    let out = sim.tick(&mut inputs).clone();
    assert_eq!(
        out.scores,
        vec![ScoreEvent {
            player: ev.player,
            delta: 10,
            total: ev.total + 10
        }]
    );
}

#[test]
fn the_pickup_component_moves_with_the_view() {
    let mut sim = Sim::new(SimConfig {
        npcs: 0,
        pickups: 3,
        ..small()
    })
    .expect("valid config");
    let target = pickups(sim.view())[1];
    join_at(&mut sim, 1, Some(target.pos));
    let world = sim.world_mut();
    let mut q = world.query_filtered::<&Position, With<Pickup>>();
    let in_world: Vec<[f32; 2]> = q.iter(world).map(|p| p.0).collect();
    let in_view: Vec<[f32; 2]> = pickups(sim.view()).iter().map(|p| p.pos).collect();
    assert_eq!(in_world, in_view);
    assert!(!in_world.contains(&target.pos));
}

// --- NPCs -------------------------------------------------------------------------------------

#[test]
fn npcs_wander_and_stay_in_bounds() {
    // A cramped zone and fast NPCs: many bounces.
    let cfg = SimConfig {
        bounds_min: [-20.0, 10.0],
        bounds_max: [30.0, 40.0],
        npcs: 500,
        pickups: 0,
        npc_speed: 40.0,
        ..SimConfig::default()
    };
    let mut sim = Sim::new(cfg.clone()).expect("valid config");
    let start: Vec<f32> = sim.view().entities.iter().map(|e| e.heading).collect();
    for _ in 0..300 {
        sim.tick(&mut SimInputs::default());
        assert_in_bounds(sim.view(), &cfg);
        for e in &sim.view().entities {
            assert!(
                (speed(e.vel) - cfg.npc_speed).abs() < 1e-3,
                "NPC speed {:?}",
                e.vel
            );
            assert!(
                (e.heading.cos() * cfg.npc_speed - e.vel[0]).abs() < 1e-2,
                "heading matches velocity"
            );
        }
    }
    let turned = sim
        .view()
        .entities
        .iter()
        .zip(&start)
        .filter(|(e, h)| e.heading != **h)
        .count();
    assert!(turned > 450, "NPCs changed direction ({turned}/500)");
}

// --- join and leave ---------------------------------------------------------------------------

#[test]
fn joins_and_leaves_update_the_view_and_ids_are_never_reused() {
    let cfg = small();
    let first_free = cfg.npcs + cfg.pickups + 1;
    let mut sim = Sim::new(cfg.clone()).expect("valid config");
    let mut inputs = SimInputs::default();
    for p in [30, 10, 20] {
        inputs.joins.push(SimJoin {
            player: PlayerId(p),
            spawn: Some([1.0e9, -5.0]),
            score: 0,
            ..SimJoin::default()
        });
    }
    let out = sim.tick(&mut inputs).clone();
    let ids: Vec<u32> = out.joined.iter().map(|(_, e)| e.0).collect();
    assert_eq!(ids, vec![first_free, first_free + 1, first_free + 2]);
    let view = sim.view();
    let order: Vec<u64> = view.players.iter().map(|p| p.player.0).collect();
    assert_eq!(order, vec![10, 20, 30], "sorted by player id");
    for pv in &view.players {
        let e = view.entities[pv.index as usize];
        assert_eq!((e.id, e.kind), (pv.entity, EntityKind::Player));
        assert_eq!(e.pos, [1000.0, 0.0], "spawn clamped into the zone");
    }
    // Leave one, leave an unknown one, join one again, join one already here.
    let mut inputs = SimInputs::default();
    inputs.leaves.extend([PlayerId(20), PlayerId(99)]);
    inputs.joins.push(SimJoin {
        player: PlayerId(30),
        spawn: None,
        score: 0,
        ..SimJoin::default()
    });
    let out = sim.tick(&mut inputs).clone();
    assert_eq!(out.left, vec![(PlayerId(20), EntityId(first_free + 2))]);
    assert_eq!(
        out.joined,
        vec![(PlayerId(30), EntityId(first_free))],
        "existing entity kept"
    );
    assert!(sim.view().player(PlayerId(20)).is_none());
    assert_eq!(sim.view().players.len(), 2);
    assert_eq!(sim.view().entities.len() as u32, cfg.npcs + cfg.pickups + 2);
    let mut inputs = SimInputs::default();
    inputs.joins.push(SimJoin {
        player: PlayerId(20),
        spawn: None,
        score: 0,
        ..SimJoin::default()
    });
    let out = sim.tick(&mut inputs).clone();
    assert_eq!(
        out.joined,
        vec![(PlayerId(20), EntityId(first_free + 3))],
        "a fresh id"
    );
    let pv = *sim.view().player(PlayerId(20)).expect("back");
    assert_eq!(sim.view().entities[pv.index as usize].id, pv.entity);
}

#[test]
fn leave_and_join_in_one_tick_respawns() {
    let mut sim = Sim::new(small()).expect("valid config");
    let first = join_at(&mut sim, 5, None);
    let mut inputs = SimInputs::default();
    inputs.leaves.push(PlayerId(5));
    inputs.joins.push(SimJoin {
        player: PlayerId(5),
        spawn: None,
        score: 0,
        ..SimJoin::default()
    });
    let out = sim.tick(&mut inputs).clone();
    assert_eq!(out.left, vec![(PlayerId(5), first)]);
    assert_eq!(out.joined.len(), 1);
    assert_ne!(out.joined[0].1, first);
}

#[test]
fn view_items_match_grid_items() {
    let mut sim = Sim::new(small()).expect("valid config");
    for t in 0..20 {
        let mut inputs = scripted_inputs(t);
        sim.tick(&mut inputs);
    }
    let view = sim.view();
    assert_eq!(view.tick, sim.tick_number());
    assert_eq!(view.grid.len(), view.entities.len());
    for (i, e) in view.entities.iter().enumerate() {
        assert_eq!(view.grid.position(i as u32), e.pos);
    }
    let mut near = Vec::new();
    let center = view.entities[0].pos;
    view.grid.query_within(center, 100.0, &mut near);
    assert!(near.contains(&0));
}

#[test]
fn the_view_before_the_first_tick_shows_the_spawned_world() {
    let cfg = small();
    let sim = Sim::new(cfg.clone()).expect("valid config");
    assert_eq!(sim.tick_number(), Tick(0));
    assert_eq!(sim.view().entities.len() as u32, cfg.npcs + cfg.pickups);
    assert_in_bounds(sim.view(), &cfg);
    assert!(Sim::new(SimConfig { tick_hz: 0, ..cfg }).is_err());
}

// --- random sequences -------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Join {
        player: u8,
        spawn: Option<(f32, f32)>,
        score: u64,
    },
    Leave {
        player: u8,
    },
    Input {
        player: u8,
        seq: u32,
        heading: u8,
        throttle: u8,
    },
    Tick,
}

fn coordinate() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -50.0f32..150.0,
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => any::<f32>(),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u8..8, proptest::option::of((coordinate(), coordinate())), any::<u64>())
            .prop_map(|(player, spawn, score)| Op::Join { player, spawn, score }),
        1 => (0u8..8).prop_map(|player| Op::Leave { player }),
        8 => (0u8..10, 0u32..40, any::<u8>(), any::<u8>())
            .prop_map(|(player, seq, heading, throttle)| Op::Input { player, seq, heading, throttle }),
        3 => Just(Op::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_sessions_never_panic_and_stay_in_bounds(ops in proptest::collection::vec(op(), 1..300)) {
        let cfg = SimConfig {
            bounds_min: [0.0, 0.0],
            bounds_max: [100.0, 100.0],
            npcs: 30,
            pickups: 10,
            pickup_radius: 5.0,
            max_speed: 60.0,
            max_accel: 600.0,
            npc_speed: 50.0,
            grid_cell: 10.0,
            input_burst: 3,
            ..SimConfig::default()
        };
        let mut sim = Sim::new(cfg.clone()).expect("valid config");
        let mut inputs = SimInputs::default();
        let mut present = std::collections::BTreeSet::new();
        for op in ops.into_iter().chain([Op::Tick]) {
            match op {
                Op::Join { player, spawn, score } => inputs.joins.push(SimJoin {
                    player: PlayerId(u64::from(player)),
                    spawn: spawn.map(|(x, y)| [x, y]),
                    score,
                    ..SimJoin::default()
                }),
                Op::Leave { player } => inputs.leaves.push(PlayerId(u64::from(player))),
                Op::Input { player, seq, heading, throttle } => inputs.inputs.push((
                    PlayerId(u64::from(player)),
                    InputFrameMsg { seq: InputSeq(seq), heading, throttle, buttons: 0 },
                )),
                Op::Tick => {
                    for p in &inputs.leaves {
                        present.remove(p);
                    }
                    present.extend(inputs.joins.iter().map(|j| j.player));
                    let out = sim.tick(&mut inputs).clone();
                    prop_assert!(inputs.joins.is_empty() && inputs.leaves.is_empty() && inputs.inputs.is_empty());
                    let view = sim.view();
                    assert_in_bounds(view, &cfg);
                    let listed: Vec<PlayerId> = view.players.iter().map(|p| p.player).collect();
                    prop_assert_eq!(listed, present.iter().copied().collect::<Vec<_>>());
                    for pv in &view.players {
                        let e = view.entities[pv.index as usize];
                        prop_assert_eq!(e.id, pv.entity);
                        prop_assert!(speed(e.vel) <= cfg.max_speed * (1.0 + SLACK));
                    }
                    for r in &out.rejected {
                        if r.reason == InputRejection::UnknownPlayer {
                            prop_assert!(!present.contains(&r.player));
                        }
                    }
                    prop_assert_eq!(view.grid.len(), view.entities.len());
                }
            }
        }
    }
}

/// A client at the tick rate whose datagrams are held up for a while and then arrive together
/// (each repeating its last four inputs) loses a few inputs once, and is not refused again:
/// the repeats of a refused input are redundant, not new floods.
#[test]
fn a_held_up_input_stream_is_refused_once_not_forever() {
    let mut sim = Sim::new(small()).expect("valid config");
    join_at(&mut sim, 1, Some([500.0, 500.0]));
    let datagram = |last: u32| -> Vec<_> {
        (last.saturating_sub(3).max(1)..=last)
            .map(|s| frame(s, 0, 128))
            .collect()
    };
    let flood = |out: &SimOutputs| {
        out.rejected
            .iter()
            .filter(|r| r.reason == InputRejection::Flood)
            .count()
    };
    let mut seq = 0;
    let mut total = 0;
    for _ in 0..10 {
        seq += 1;
        total += flood(&send(&mut sim, 1, &datagram(seq)));
    }
    assert_eq!(total, 0, "one input per tick is never a flood");
    // Eight ticks with nothing, then the eight held datagrams at once.
    for _ in 0..8 {
        sim.tick(&mut SimInputs::default());
    }
    let mut held = Vec::new();
    for _ in 0..8 {
        seq += 1;
        held.extend(datagram(seq));
    }
    let burst = flood(&send(&mut sim, 1, &held));
    assert!(burst <= 8, "{burst} refused in the burst");
    let mut after = 0;
    for _ in 0..60 {
        seq += 1;
        after += flood(&send(&mut sim, 1, &datagram(seq)));
    }
    assert_eq!(after, 0, "after the burst the stream is accepted again");
}
