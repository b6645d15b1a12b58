//! Border tests: crossings with hysteresis, walls, frozen players, failed transfers, arrivals
//! with state, ghosts. Deterministic, no network, no clock.

use super::view::{EntityView, WorldView};
use super::*;
use meridian_protocol::datagram::InputFrameMsg;
use meridian_protocol::{EntityId, InputSeq, PlayerId};

/// The zone [0, 1000]², in a world [0, 2000]² with an east neighbour (0) and a north one (1).
fn bordered() -> SimConfig {
    SimConfig {
        npcs: 20,
        pickups: 0,
        border: Some(BorderConfig {
            world_min: [0.0, 0.0],
            world_max: [2000.0, 2000.0],
            neighbours: vec![
                ([1000.0, 0.0], [2000.0, 1000.0]),
                ([0.0, 1000.0], [1000.0, 2000.0]),
            ],
            ..BorderConfig::default()
        }),
        ..SimConfig::default()
    }
}

fn border(cfg: &SimConfig) -> &BorderConfig {
    cfg.border.as_ref().expect("a bordered config")
}

const EAST: u8 = 0;
const WEST: u8 = 128;
const SOUTH: u8 = 192;

fn frame(seq: u32, heading: u8, throttle: u8) -> InputFrameMsg {
    InputFrameMsg {
        seq: InputSeq(seq),
        heading,
        throttle,
        buttons: 0,
    }
}

fn join(sim: &mut Sim, join: SimJoin) -> EntityId {
    let mut inputs = SimInputs::default();
    inputs.joins.push(join);
    let out = sim.tick(&mut inputs);
    out.joined
        .iter()
        .find(|(p, _)| *p == join.player)
        .expect("the join is reported")
        .1
}

fn join_at(sim: &mut Sim, player: u64, at: [f32; 2]) -> EntityId {
    join(
        sim,
        SimJoin {
            player: PlayerId(player),
            spawn: Some(at),
            ..SimJoin::default()
        },
    )
}

fn set_open(sim: &mut Sim, open: Vec<bool>) -> SimOutputs {
    let mut inputs = SimInputs {
        open_borders: Some(open),
        ..SimInputs::default()
    };
    sim.tick(&mut inputs).clone()
}

fn send(sim: &mut Sim, player: u64, frames: &[InputFrameMsg]) -> SimOutputs {
    let mut inputs = SimInputs::default();
    inputs
        .inputs
        .extend(frames.iter().map(|f| (PlayerId(player), *f)));
    sim.tick(&mut inputs).clone()
}

fn state(sim: &Sim, player: u64) -> PlayerSnapshot {
    sim.player_state(PlayerId(player))
        .expect("player in the zone")
}

fn player_view(view: &WorldView, player: u64) -> EntityView {
    let pv = view.player(PlayerId(player)).expect("player in view");
    view.entities[pv.index as usize]
}

fn ghosts(view: &WorldView) -> Vec<EntityView> {
    let players: Vec<EntityId> = view.players.iter().map(|p| p.entity).collect();
    view.entities
        .iter()
        .filter(|e| e.pos[0] > 1000.0 || e.pos[1] > 1000.0)
        .filter(|e| !players.contains(&e.id))
        .copied()
        .collect()
}

/// Walks `player` east one input a tick from `seq` on, until it crosses or `ticks` pass;
/// returns the crossing, the tick count walked and the next sequence number.
fn walk_until_crossing(
    sim: &mut Sim,
    player: u64,
    mut seq: u32,
    ticks: u32,
) -> (Option<Crossing>, u32, u32) {
    for t in 1..=ticks {
        let out = send(sim, player, &[frame(seq, EAST, 255)]);
        seq += 1;
        if let Some(c) = out.crossings.first() {
            assert_eq!(out.crossings.len(), 1, "one crossing");
            return (Some(*c), t, seq);
        }
    }
    (None, ticks, seq)
}

// --- crossings --------------------------------------------------------------------------------

#[test]
fn a_player_crosses_once_past_the_margin_and_is_frozen() {
    let cfg = SimConfig {
        // One pickup that every playing player reaches: the score grows each tick it plays.
        pickups: 1,
        pickup_radius: 3000.0,
        ..bordered()
    };
    let margin = border(&cfg).margin;
    let mut sim = Sim::new(cfg.clone()).expect("valid config");
    let entity = join(
        &mut sim,
        SimJoin {
            player: PlayerId(1),
            spawn: Some([990.0, 500.0]),
            score: 42,
            ..SimJoin::default()
        },
    );
    set_open(&mut sim, vec![true, false]);
    let mut crossing = None;
    let mut seq = 1;
    let mut score = 0;
    let mut in_band = 0;
    for _ in 0..200 {
        let before = state(&sim, 1);
        let out = send(&mut sim, 1, &[frame(seq, EAST, 255)]);
        seq += 1;
        if let Some(s) = out.scores.iter().rfind(|s| s.player == PlayerId(1)) {
            score = s.total;
        }
        match out.crossings.as_slice() {
            [] => {
                let x = state(&sim, 1).pos[0];
                assert!(x - 1000.0 <= margin, "no crossing within the margin ({x})");
                in_band += u32::from(x > 1000.0);
            }
            [c] => {
                assert!(before.pos[0] - 1000.0 <= margin);
                crossing = Some(*c);
                break;
            }
            more => panic!("{} crossings in one tick", more.len()),
        }
    }
    let c = crossing.expect("the player crossed");
    assert!(in_band > 0, "the player played in the band before crossing");
    assert_eq!((c.player, c.entity, c.neighbour), (PlayerId(1), entity, 0));
    assert!(c.pos[0] > 1000.0 + margin, "{:?}", c.pos);
    assert!(c.pos[0] <= 1000.0 + margin + cfg.max_speed * cfg.dt() * 1.001);
    assert_eq!(c.pos[1], 500.0);
    assert!(c.vel[0] > 0.0, "the velocity it crossed with: {:?}", c.vel);
    assert!(score > 42, "the pickup scored while walking");
    assert_eq!(c.score, score, "the score as of the crossing");
    assert_eq!(c.last_input, InputSeq(seq - 1), "the newest applied input");

    // Frozen: in the view, not moving, inputs dropped without a word, no pickups.
    let now = state(&sim, 1);
    assert!(now.frozen);
    assert_eq!((now.pos, now.vel), (c.pos, [0.0, 0.0]));
    let floods: Vec<_> = (seq..seq + 20).map(|s| frame(s, WEST, 255)).collect();
    for _ in 0..60 {
        let out = send(&mut sim, 1, &floods);
        assert!(out.crossings.is_empty(), "crossed once");
        assert!(out.rejected.is_empty() && out.input_acks.is_empty());
        assert!(out.scores.is_empty(), "a frozen player collects nothing");
    }
    let later = state(&sim, 1);
    assert_eq!(
        (later.pos, later.vel, later.score),
        (c.pos, [0.0, 0.0], c.score)
    );
    assert_eq!(later.last_input, c.last_input);
    let shown = player_view(sim.view(), 1);
    assert_eq!((shown.pos, shown.vel), (c.pos, [0.0, 0.0]));
}

#[test]
fn a_closed_border_is_a_wall() {
    let mut sim = Sim::new(bordered()).expect("valid config");
    join_at(&mut sim, 1, [995.0, 500.0]);
    // Closed from the start, then opened for the north neighbour only, then closed by a
    // shorter list.
    let mut seq = 1;
    for open in [
        None,
        Some(vec![false, true]),
        Some(vec![true]),
        Some(vec![]),
    ] {
        let opened = open.as_ref().is_some_and(|o| o.first() == Some(&true));
        if let Some(open) = open {
            set_open(&mut sim, open);
        }
        if opened {
            // Opening the east border does let it through: the walls below are not a fluke.
            let (crossing, _, next) = walk_until_crossing(&mut sim, 1, seq, 100);
            let c = crossing.expect("crossed through the open border");
            let mut inputs = SimInputs::default();
            inputs.transfer_failed.push(c.player);
            sim.tick(&mut inputs);
            seq = next;
            continue;
        }
        let (crossing, _, next) = walk_until_crossing(&mut sim, 1, seq, 100);
        seq = next;
        assert_eq!(crossing, None);
        let me = state(&sim, 1);
        assert_eq!(me.pos[0], 1000.0, "stopped on the edge");
        assert_eq!(me.vel[0], 0.0, "no velocity into the wall");
        assert!(!me.frozen);
    }
}

#[test]
fn an_edge_without_a_neighbour_is_a_wall_even_with_borders_open() {
    let mut sim = Sim::new(bordered()).expect("valid config");
    join_at(&mut sim, 1, [500.0, 3.0]);
    set_open(&mut sim, vec![true, true]);
    for seq in 1..100 {
        let out = send(&mut sim, 1, &[frame(seq, SOUTH, 255)]);
        assert!(out.crossings.is_empty());
    }
    let me = state(&sim, 1);
    assert_eq!(me.pos[1], 0.0);
    assert_eq!(me.vel[1], 0.0);
}

#[test]
fn the_north_neighbour_takes_players_walking_north() {
    let mut sim = Sim::new(bordered()).expect("valid config");
    join_at(&mut sim, 1, [300.0, 999.0]);
    set_open(&mut sim, vec![false, true]);
    let mut crossing = None;
    for seq in 1..100 {
        let out = send(&mut sim, 1, &[frame(seq, 64, 255)]);
        if let Some(c) = out.crossings.first() {
            crossing = Some(*c);
            break;
        }
    }
    let c = crossing.expect("crossed north");
    assert_eq!(c.neighbour, 1);
    assert!(c.pos[1] > 1002.0);
}

#[test]
fn a_failed_transfer_puts_the_player_back_and_walls_it_for_a_while() {
    let cfg = bordered();
    let retry = u64::from(border(&cfg).retry_ticks);
    let mut sim = Sim::new(cfg).expect("valid config");
    join_at(&mut sim, 1, [998.0, 500.0]);
    set_open(&mut sim, vec![true]);
    let (first, _, mut seq) = walk_until_crossing(&mut sim, 1, 1, 100);
    assert!(first.is_some());

    // Failed: back on the edge, standing, playing. Unknown and unfrozen players are ignored.
    join_at(&mut sim, 2, [500.0, 500.0]);
    let before2 = state(&sim, 2);
    let mut inputs = SimInputs::default();
    inputs
        .transfer_failed
        .extend([PlayerId(1), PlayerId(2), PlayerId(77)]);
    let out = sim.tick(&mut inputs).clone();
    let failed_at = out.tick.0;
    assert!(out.crossings.is_empty());
    let me = state(&sim, 1);
    assert!(!me.frozen);
    assert_eq!((me.pos, me.vel), ([1000.0, 500.0], [0.0, 0.0]));
    let other = state(&sim, 2);
    assert!(!other.frozen);
    assert_eq!(other.pos, before2.pos, "a player not frozen is left alone");

    // Walled during the cooldown, even though the border is open and it keeps walking east.
    while sim.tick_number().0 < failed_at + retry - 1 {
        let out = send(&mut sim, 1, &[frame(seq, EAST, 255)]);
        seq += 1;
        assert!(out.crossings.is_empty(), "tick {}", out.tick.0);
        assert!(!out.input_acks.is_empty(), "inputs apply again");
        assert!(state(&sim, 1).pos[0] <= 1000.0);
    }
    // Then it crosses again.
    let (again, ticks, _) = walk_until_crossing(&mut sim, 1, seq, 100);
    let again = again.expect("crossed again after the cooldown");
    assert!(sim.tick_number().0 >= failed_at + retry);
    assert!(ticks > 1, "it walked the margin again");
    assert_eq!(again.neighbour, 0);
}

#[test]
fn dithering_on_the_line_hands_nobody_off() {
    let cfg = bordered();
    let margin = border(&cfg).margin;
    let mut sim = Sim::new(cfg).expect("valid config");
    join_at(&mut sim, 1, [1000.0, 500.0]);
    set_open(&mut sim, vec![true, true]);
    let (mut lo, mut hi) = (f32::MAX, f32::MIN);
    let mut heading = EAST;
    for seq in 1..=300 {
        // Turn around a quarter margin past the line on either side, slowly.
        let x = state(&sim, 1).pos[0];
        if x > 1000.0 + margin / 4.0 {
            heading = WEST;
        } else if x < 1000.0 - margin / 4.0 {
            heading = EAST;
        }
        let out = send(&mut sim, 1, &[frame(seq, heading, 48)]);
        assert!(out.crossings.is_empty(), "tick {}", out.tick.0);
        let x = state(&sim, 1).pos[0];
        lo = lo.min(x);
        hi = hi.max(x);
    }
    assert!(!state(&sim, 1).frozen);
    assert!(
        hi > 1000.0 && lo < 1000.0,
        "it did cross the line: {lo}..{hi}"
    );
    assert!(hi - 1000.0 <= margin / 2.0 && 1000.0 - lo <= margin / 2.0);
}

#[test]
fn leaving_despawns_a_frozen_player() {
    let mut sim = Sim::new(bordered()).expect("valid config");
    join_at(&mut sim, 1, [999.0, 500.0]);
    set_open(&mut sim, vec![true]);
    let (c, _, _) = walk_until_crossing(&mut sim, 1, 1, 100);
    let c = c.expect("crossed");
    let mut inputs = SimInputs::default();
    inputs.leaves.push(PlayerId(1));
    // A failure for a player leaving in the same tick changes nothing: it is gone.
    inputs.transfer_failed.push(PlayerId(1));
    let out = sim.tick(&mut inputs).clone();
    assert_eq!(out.left, vec![(PlayerId(1), c.entity)]);
    assert_eq!(sim.player_state(PlayerId(1)), None);
    assert!(sim.view().player(PlayerId(1)).is_none());
    assert!(sim.view().entities.iter().all(|e| e.id != c.entity));
    assert_eq!(sim.players().count(), 0);
}

// --- arrivals ---------------------------------------------------------------------------------

#[test]
fn an_arrival_keeps_its_state_and_stale_inputs_are_dropped() {
    let cfg = bordered();
    let mut sim = Sim::new(cfg.clone()).expect("valid config");
    let entity = join(
        &mut sim,
        SimJoin {
            player: PlayerId(9),
            spawn: Some([990.0, 500.0]),
            score: 77,
            velocity: [-5.0, 0.0],
            last_input: InputSeq(20),
        },
    );
    let me = state(&sim, 9);
    assert_eq!(me.entity, entity);
    assert_eq!(me.score, 77);
    assert_eq!(me.vel, [-5.0, 0.0], "it keeps its velocity");
    assert!(
        (me.pos[0] - (990.0 - 5.0 * cfg.dt())).abs() < 1e-3,
        "{:?}",
        me.pos
    );
    assert_eq!(me.last_input, InputSeq(20));
    let out = send(
        &mut sim,
        9,
        &[
            frame(18, EAST, 255),
            frame(19, EAST, 255),
            frame(20, EAST, 255),
        ],
    );
    assert_eq!(out.redundant, 3, "inputs up to last_input are stale");
    assert!(out.input_acks.is_empty());
    assert_eq!(
        state(&sim, 9).vel,
        [-5.0, 0.0],
        "not steered by stale inputs"
    );
    let out = send(&mut sim, 9, &[frame(21, EAST, 255)]);
    assert_eq!(out.input_acks, vec![(PlayerId(9), InputSeq(21))]);
}

#[test]
fn arrival_spawns_and_velocities_are_clamped() {
    let cfg = bordered();
    let mut sim = Sim::new(cfg.clone()).expect("valid config");
    set_open(&mut sim, vec![true]);
    // West has no neighbour: the view stops at the zone; east it reaches the band, where an
    // open border takes the player at once.
    join_at(&mut sim, 1, [-50.0, 500.0]);
    assert_eq!(state(&sim, 1).pos, [0.0, 500.0]);
    let mut inputs = SimInputs::default();
    inputs.joins.push(SimJoin {
        player: PlayerId(2),
        spawn: Some([5000.0, 500.0]),
        ..SimJoin::default()
    });
    let out = sim.tick(&mut inputs).clone();
    let (view_min, view_max) = cfg.view_bounds();
    assert_eq!((view_min, view_max), ([0.0, 0.0], [1040.0, 1040.0]));
    assert_eq!(out.crossings.len(), 1);
    assert_eq!(out.crossings[0].pos, [1040.0, 500.0]);
    // Within the margin: stays in the band.
    join_at(&mut sim, 3, [1001.0, 500.0]);
    assert_eq!(state(&sim, 3).pos, [1001.0, 500.0]);
    // Bad velocities: not finite → standing, too fast → max_speed.
    for (player, velocity, want) in [
        (4, [f32::NAN, 1.0], 0.0),
        (5, [f32::INFINITY, 0.0], 0.0),
        (6, [f32::MAX, f32::MAX], cfg.max_speed),
        (7, [300.0, -400.0], cfg.max_speed),
    ] {
        join(
            &mut sim,
            SimJoin {
                player: PlayerId(player),
                spawn: Some([500.0, 500.0]),
                velocity,
                ..SimJoin::default()
            },
        );
        let v = state(&sim, player).vel;
        assert!(
            (v[0].hypot(v[1]) - want).abs() < 1e-3,
            "{velocity:?} became {v:?}"
        );
    }
    // Non-finite spawn: a random point of the zone.
    join_at(&mut sim, 8, [f32::NAN, 2.0]);
    let p = state(&sim, 8).pos;
    assert!((0..2).all(|a| (0.0..=1000.0).contains(&p[a])), "{p:?}");
}

// --- ghosts -----------------------------------------------------------------------------------

fn ghost(source: u16, remote: u32, kind: EntityKind, pos: [f32; 2]) -> GhostUpdate {
    GhostUpdate {
        source,
        remote: EntityId(remote),
        kind,
        pos,
        heading: 1.0,
    }
}

fn tick_ghosts(sim: &mut Sim, updates: &[GhostUpdate]) -> SimOutputs {
    let mut inputs = SimInputs::default();
    inputs.ghosts.extend_from_slice(updates);
    sim.tick(&mut inputs).clone()
}

#[test]
fn ghosts_spawn_move_and_expire() {
    let cfg = bordered();
    let ttl = u64::from(border(&cfg).ghost_ttl_ticks);
    let entities = sim_entities(&cfg);
    let mut sim = Sim::new(cfg).expect("valid config");
    tick_ghosts(
        &mut sim,
        &[
            ghost(0, 5, EntityKind::Player, [1010.0, 500.0]),
            ghost(1, 5, EntityKind::Npc, [300.0, 1020.0]),
            // Ignored: inside the zone, beyond the band, unknown neighbour, not finite.
            ghost(0, 6, EntityKind::Npc, [990.0, 500.0]),
            ghost(0, 7, EntityKind::Npc, [1100.0, 500.0]),
            ghost(2, 8, EntityKind::Npc, [1010.0, 500.0]),
            ghost(0, 9, EntityKind::Npc, [f32::NAN, 500.0]),
        ],
    );
    let spawned_at = sim.tick_number().0;
    assert_eq!(sim.ghost_count(), 2);
    let view = sim.view();
    assert_eq!(view.entities.len(), entities + 2);
    assert!(
        view.players.is_empty(),
        "a player ghost is not a player here"
    );
    let shown = ghosts(view);
    assert_eq!(shown.len(), 2);
    let east = *shown
        .iter()
        .find(|e| e.kind == EntityKind::Player)
        .expect("the player ghost");
    assert_eq!(
        (east.pos, east.vel, east.heading),
        ([1010.0, 500.0], [0.0, 0.0], 1.0)
    );
    assert!(
        east.id.0 > entities as u32,
        "a fresh local id: {:?}",
        east.id
    );
    // In the grid, at its index.
    let at = view
        .entities
        .iter()
        .position(|e| e.id == east.id)
        .expect("listed") as u32;
    let mut near = Vec::new();
    view.grid.query_within([1012.0, 500.0], 3.0, &mut near);
    assert_eq!(near, vec![at]);

    // Moved (twice in one batch: the last wins), same local id; the other is not refreshed.
    tick_ghosts(
        &mut sim,
        &[
            ghost(0, 5, EntityKind::Player, [1015.0, 505.0]),
            ghost(0, 5, EntityKind::Player, [1020.0, 510.0]),
        ],
    );
    let moved = ghosts(sim.view());
    let east2 = moved.iter().find(|e| e.id == east.id).expect("same id");
    assert_eq!(east2.pos, [1020.0, 510.0]);
    let refreshed_at = sim.tick_number().0;

    // Nothing moves a ghost between updates; the stale one goes first, then the other.
    while sim.tick_number().0 < spawned_at + ttl - 1 {
        sim.tick(&mut SimInputs::default());
    }
    assert_eq!(sim.ghost_count(), 2);
    sim.tick(&mut SimInputs::default());
    assert_eq!(
        sim.ghost_count(),
        1,
        "not refreshed for ghost_ttl_ticks: gone"
    );
    assert_eq!(ghosts(sim.view())[0].pos, [1020.0, 510.0]);
    while sim.tick_number().0 < refreshed_at + ttl {
        sim.tick(&mut SimInputs::default());
    }
    assert_eq!(sim.ghost_count(), 0);
    assert_eq!(sim.view().entities.len(), entities);
}

/// Entities a config spawns at start.
fn sim_entities(cfg: &SimConfig) -> usize {
    (cfg.npcs + cfg.pickups) as usize
}

#[test]
fn a_ghost_leaving_the_band_is_removed_at_once() {
    let mut sim = Sim::new(bordered()).expect("valid config");
    tick_ghosts(
        &mut sim,
        &[ghost(0, 5, EntityKind::Player, [1010.0, 500.0])],
    );
    assert_eq!(sim.ghost_count(), 1);
    // Walked into our zone (it is arriving here) or away from the border.
    tick_ghosts(&mut sim, &[ghost(0, 5, EntityKind::Player, [995.0, 500.0])]);
    assert_eq!(sim.ghost_count(), 0);
    assert!(ghosts(sim.view()).is_empty());
    // Spawn and removal in one batch leave nothing behind.
    tick_ghosts(
        &mut sim,
        &[
            ghost(0, 6, EntityKind::Npc, [1010.0, 500.0]),
            ghost(0, 6, EntityKind::Npc, [1500.0, 500.0]),
        ],
    );
    assert_eq!(sim.ghost_count(), 0);
    assert_eq!(sim.view().entities.len(), sim_entities(sim.config()));
}

#[test]
fn ghosts_cannot_be_collected_or_moved() {
    let cfg = SimConfig {
        npcs: 0,
        pickups: 0,
        ..bordered()
    };
    let mut sim = Sim::new(cfg).expect("valid config");
    set_open(&mut sim, vec![true]);
    // A player in the band, right on a ghost pickup and a ghost NPC.
    join_at(&mut sim, 1, [1001.0, 500.0]);
    let updates = [
        ghost(0, 1, EntityKind::Pickup, [1001.0, 500.0]),
        GhostUpdate {
            heading: f32::NAN,
            ..ghost(0, 2, EntityKind::Npc, [1001.5, 500.0])
        },
    ];
    for _ in 0..10 {
        let out = tick_ghosts(&mut sim, &updates);
        assert!(out.scores.is_empty(), "a ghost pickup awards nothing");
        assert_eq!(state(&sim, 1).score, 0);
        let shown = ghosts(sim.view());
        let mut positions: Vec<_> = shown.iter().map(|e| (e.pos, e.heading)).collect();
        positions.sort_by(|a, b| a.0[0].total_cmp(&b.0[0]));
        assert_eq!(
            positions,
            vec![([1001.0, 500.0], 1.0), ([1001.5, 500.0], 0.0)]
        );
    }
    assert_eq!(sim.ghost_count(), 2);
    assert_eq!(sim.view().players.len(), 1);
}

// --- no border --------------------------------------------------------------------------------

#[test]
fn without_a_border_the_border_inputs_are_ignored() {
    let cfg = SimConfig {
        npcs: 20,
        pickups: 0,
        ..SimConfig::default()
    };
    assert_eq!(cfg.view_bounds(), (cfg.bounds_min, cfg.bounds_max));
    let mut sim = Sim::new(cfg).expect("valid config");
    join_at(&mut sim, 1, [999.0, 500.0]);
    let mut inputs = SimInputs {
        open_borders: Some(vec![true; 4]),
        transfer_failed: vec![PlayerId(1)],
        ghosts: vec![ghost(0, 1, EntityKind::Npc, [1010.0, 500.0])],
        ..SimInputs::default()
    };
    sim.tick(&mut inputs);
    assert_eq!(inputs, SimInputs::default(), "the inputs come back empty");
    for seq in 1..60 {
        let out = send(&mut sim, 1, &[frame(seq, EAST, 255)]);
        assert!(out.crossings.is_empty());
    }
    assert_eq!(sim.ghost_count(), 0);
    assert_eq!(state(&sim, 1).pos[0], 1000.0);
}

// --- snapshots and determinism ----------------------------------------------------------------

#[test]
fn players_lists_every_player_by_id() {
    let mut sim = Sim::new(bordered()).expect("valid config");
    for p in [30, 10, 20] {
        join(
            &mut sim,
            SimJoin {
                player: PlayerId(p),
                spawn: Some([100.0 + p as f32, 100.0]),
                score: p,
                ..SimJoin::default()
            },
        );
    }
    let listed: Vec<(u64, u64, [f32; 2])> =
        sim.players().map(|(p, s)| (p.0, s.score, s.pos)).collect();
    assert_eq!(
        listed,
        vec![
            (10, 10, [110.0, 100.0]),
            (20, 20, [120.0, 100.0]),
            (30, 30, [130.0, 100.0])
        ]
    );
    assert_eq!(sim.player_state(PlayerId(11)), None);
}

/// A scripted session at the border: players walking east and back, borders opening and
/// closing, failed transfers, ghosts coming and going.
fn border_script(seed: u64) -> Vec<(SimOutputs, Vec<EntityView>)> {
    let mut sim = Sim::new(SimConfig { seed, ..bordered() }).expect("valid config");
    let mut frozen_since = std::collections::BTreeMap::new();
    (0..400u32)
        .map(|t| {
            let mut inputs = SimInputs::default();
            if t < 10 {
                inputs.joins.push(SimJoin {
                    player: PlayerId(u64::from(t)),
                    spawn: Some([990.0 - t as f32, 100.0 * t as f32]),
                    ..SimJoin::default()
                });
            }
            if t % 50 == 0 {
                inputs.open_borders = Some(vec![t % 100 == 0, true]);
            }
            for p in 0..10u32 {
                let heading = if (t / 40 + p) % 3 == 0 { WEST } else { EAST };
                inputs
                    .inputs
                    .push((PlayerId(u64::from(p)), frame(t + 1, heading, 255)));
            }
            for (&p, &since) in &frozen_since {
                if t == since + 5 {
                    if p % 2 == 0 {
                        inputs.transfer_failed.push(PlayerId(p));
                    } else {
                        inputs.leaves.push(PlayerId(p));
                    }
                }
            }
            inputs
                .ghosts
                .extend((0..20u32).filter(|g| (t + g) % 7 != 0).map(|g| {
                    ghost(
                        0,
                        g,
                        EntityKind::Npc,
                        [1001.0 + (t % 30) as f32, 40.0 * g as f32],
                    )
                }));
            let out = sim.tick(&mut inputs).clone();
            for c in &out.crossings {
                frozen_since.insert(c.player.0, t);
            }
            (out, sim.view().entities.clone())
        })
        .collect()
}

#[test]
fn same_seed_and_inputs_give_the_same_world_with_borders() {
    let a = border_script(3);
    let b = border_script(3);
    for (t, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "runs diverge at tick {}", t + 1);
    }
    let crossings: usize = a.iter().map(|(o, _)| o.crossings.len()).sum();
    assert!(crossings >= 5, "the script crossed borders ({crossings})");
}

// --- random sequences -------------------------------------------------------------------------

mod random {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Clone, Debug)]
    enum Op {
        Join {
            player: u8,
            spawn: Option<(f32, f32)>,
            velocity: (f32, f32),
            last_input: u32,
        },
        Leave {
            player: u8,
        },
        Fail {
            player: u8,
        },
        Input {
            player: u8,
            seq: u32,
            heading: u8,
            throttle: u8,
        },
        Open(Vec<bool>),
        Ghost {
            source: u16,
            remote: u32,
            pos: (f32, f32),
            heading: f32,
        },
        Tick,
    }

    fn coordinate() -> impl Strategy<Value = f32> {
        prop_oneof![
            6 => -20.0f32..220.0,
            2 => 95.0f32..115.0,
            1 => Just(f32::NAN),
            1 => Just(f32::INFINITY),
            1 => any::<f32>(),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            2 => (0u8..8, proptest::option::of((coordinate(), coordinate())),
                  (coordinate(), coordinate()), 0u32..50)
                .prop_map(|(player, spawn, velocity, last_input)| {
                    Op::Join { player, spawn, velocity, last_input }
                }),
            1 => (0u8..8).prop_map(|player| Op::Leave { player }),
            2 => (0u8..10).prop_map(|player| Op::Fail { player }),
            10 => (0u8..10, 0u32..60, any::<u8>(), any::<u8>())
                .prop_map(|(player, seq, heading, throttle)| {
                    Op::Input { player, seq, heading, throttle }
                }),
            1 => proptest::collection::vec(any::<bool>(), 0..5).prop_map(Op::Open),
            4 => (0u16..5, 0u32..12, (coordinate(), coordinate()), coordinate())
                .prop_map(|(source, remote, pos, heading)| Op::Ghost { source, remote, pos, heading }),
            4 => Just(Op::Tick),
        ]
    }

    fn inside(p: [f32; 2], min: [f32; 2], max: [f32; 2]) -> bool {
        (0..2).all(|a| min[a] <= p[a] && p[a] <= max[a])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn random_border_sessions_keep_the_rules(ops in proptest::collection::vec(op(), 1..400)) {
            let cfg = SimConfig {
                bounds_min: [0.0, 0.0],
                bounds_max: [100.0, 100.0],
                npcs: 20,
                pickups: 5,
                pickup_radius: 5.0,
                max_speed: 60.0,
                max_accel: 600.0,
                npc_speed: 50.0,
                grid_cell: 10.0,
                border: Some(BorderConfig {
                    world_min: [0.0, 0.0],
                    world_max: [200.0, 200.0],
                    neighbours: vec![
                        ([100.0, 0.0], [200.0, 100.0]),
                        ([0.0, 100.0], [100.0, 200.0]),
                        ([100.0, 100.0], [200.0, 200.0]),
                    ],
                    margin: 2.0,
                    band: 10.0,
                    ghost_ttl_ticks: 5,
                    retry_ticks: 7,
                }),
                ..SimConfig::default()
            };
            let b = border(&cfg).clone();
            let (zone_min, zone_max) = (cfg.bounds_min, cfg.bounds_max);
            let (view_min, view_max) = cfg.view_bounds();
            let mut sim = Sim::new(cfg.clone()).expect("valid config");
            let mut inputs = SimInputs::default();
            let mut open = vec![false; b.neighbours.len()];
            let mut frozen: BTreeMap<PlayerId, [f32; 2]> = BTreeMap::new();
            for op in ops.into_iter().chain([Op::Tick]) {
                match op {
                    Op::Join { player, spawn, velocity, last_input } => inputs.joins.push(SimJoin {
                        player: PlayerId(u64::from(player)),
                        spawn: spawn.map(|(x, y)| [x, y]),
                        score: 0,
                        velocity: [velocity.0, velocity.1],
                        last_input: InputSeq(last_input),
                    }),
                    Op::Leave { player } => inputs.leaves.push(PlayerId(u64::from(player))),
                    Op::Fail { player } => inputs.transfer_failed.push(PlayerId(u64::from(player))),
                    Op::Input { player, seq, heading, throttle } => inputs.inputs.push((
                        PlayerId(u64::from(player)),
                        frame(seq, heading, throttle),
                    )),
                    Op::Open(o) => {
                        open = (0..b.neighbours.len()).map(|i| o.get(i) == Some(&true)).collect();
                        inputs.open_borders = Some(o);
                    }
                    Op::Ghost { source, remote, pos, heading } => inputs.ghosts.push(GhostUpdate {
                        source,
                        remote: EntityId(remote),
                        kind: EntityKind::Npc,
                        pos: [pos.0, pos.1],
                        heading,
                    }),
                    Op::Tick => {
                        let leaving = inputs.leaves.clone();
                        let out = sim.tick(&mut inputs).clone();
                        prop_assert_eq!(&inputs, &SimInputs::default());
                        for p in &leaving {
                            frozen.remove(p);
                        }
                        // Frozen players stand where they crossed until they leave or fail.
                        for (p, s) in sim.players() {
                            match (frozen.get(&p), s.frozen) {
                                (Some(at), true) => prop_assert_eq!(*at, s.pos),
                                (Some(_), false) => {
                                    prop_assert!(inside(s.pos, zone_min, zone_max));
                                    frozen.remove(&p);
                                }
                                (None, true) => {
                                    let c = out.crossings.iter().find(|c| c.player == p);
                                    let c = c.expect("a newly frozen player crossed this tick");
                                    prop_assert_eq!(c.pos, s.pos);
                                    frozen.insert(p, s.pos);
                                }
                                (None, false) => {}
                            }
                            prop_assert!(inside(s.pos, view_min, view_max), "{:?}", s.pos);
                            prop_assert!(s.vel[0].hypot(s.vel[1]) <= cfg.max_speed * 1.0001);
                            if !s.frozen && !inside(s.pos, zone_min, zone_max) {
                                // In the band only within the margin, over an open neighbour.
                                let over = (0..2)
                                    .map(|a| (zone_min[a] - s.pos[a]).max(s.pos[a] - zone_max[a]))
                                    .fold(0.0f32, f32::max);
                                prop_assert!(over <= b.margin, "{:?}", s.pos);
                                let n = b.neighbours.iter().position(|&(lo, hi)| inside(s.pos, lo, hi));
                                prop_assert!(n.is_some_and(|n| open[n]), "{:?}", s.pos);
                            }
                        }
                        for c in &out.crossings {
                            let (lo, hi) = b.neighbours[usize::from(c.neighbour)];
                            prop_assert!(inside(c.pos, lo, hi) && open[usize::from(c.neighbour)]);
                        }
                        let view = sim.view();
                        let ghosts = view.entities.len() - view.players.len()
                            - (cfg.npcs + cfg.pickups) as usize;
                        prop_assert_eq!(ghosts, sim.ghost_count());
                        let players: Vec<EntityId> = view.players.iter().map(|p| p.entity).collect();
                        for e in view.entities.iter().filter(|e| !players.contains(&e.id)) {
                            prop_assert!(inside(e.pos, view_min, view_max));
                            prop_assert!(e.heading.is_finite());
                        }
                        prop_assert_eq!(view.grid.len(), view.entities.len());
                    }
                }
            }
        }
    }
}
