//! Replication against a simulated client that applies every snapshot it receives with
//! [`snapshot::apply_delta`], over a simulated link with loss, delay and reordering of snapshots
//! and acknowledgements. Worlds are hand-built [`WorldView`]s; runs are seeded, and a failing
//! run names its seed.

use super::*;
use crate::sim::view::{EntityView, WorldView};
use meridian_protocol::datagram::SnapshotMsg;
use meridian_protocol::quantize::{PositionQuantizer, angle_to_byte};
use meridian_protocol::snapshot::{self, EntityKind, EntityState};
use meridian_protocol::{EntityId, InputSeq, Tick};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use std::collections::{BTreeMap, BTreeSet};

const ZONE_MIN: [f32; 2] = [0.0, 0.0];
const ZONE_MAX: [f32; 2] = [1000.0, 1000.0];
const CENTER: [f32; 2] = [500.0, 500.0];
const OWN: EntityId = EntityId(1);

fn quantizer() -> PositionQuantizer {
    PositionQuantizer::new(ZONE_MIN, ZONE_MAX).expect("zone bounds")
}

fn empty_msg() -> SnapshotMsg {
    SnapshotMsg {
        tick: Tick(0),
        baseline: None,
        input_ack: InputSeq(0),
        payload: Vec::new(),
    }
}

fn entity(id: u32, pos: [f32; 2], vel: [f32; 2]) -> EntityView {
    EntityView {
        id: EntityId(id),
        kind: if id == OWN.0 {
            EntityKind::Player
        } else {
            EntityKind::Npc
        },
        pos,
        vel,
        heading: vel[1].atan2(vel[0]),
    }
}

/// A hand-built world: the own entity (id 1) is always at index 0.
struct TestWorld {
    view: WorldView,
}

impl TestWorld {
    fn new() -> Self {
        Self {
            view: WorldView::new(ZONE_MIN, ZONE_MAX, 16.0),
        }
    }

    fn set(&mut self, tick: u64, entities: &[EntityView]) {
        self.view.tick = Tick(tick);
        self.view.entities.clear();
        self.view.entities.extend_from_slice(entities);
        self.view.grid.rebuild(entities.iter().map(|e| e.pos));
    }

    fn quantized(&self, e: &EntityView) -> EntityState {
        EntityState {
            id: e.id,
            kind: e.kind,
            pos: quantizer().quantize(e.pos),
            heading: angle_to_byte(e.heading),
        }
    }
}

/// The client side: every snapshot applied, kept by tick as a possible baseline.
#[derive(Default)]
struct TestClient {
    states: BTreeMap<Tick, Vec<EntityState>>,
}

impl TestClient {
    /// Applies `msg`; panics if it names a baseline this client never had.
    fn receive(&mut self, msg: &SnapshotMsg) -> &[EntityState] {
        let base: &[EntityState] = match msg.baseline {
            None => &[],
            Some(b) => self.states.get(&b).unwrap_or_else(|| {
                panic!(
                    "snapshot {} names baseline {b}, which the client never applied",
                    msg.tick
                )
            }),
        };
        let mut out = Vec::new();
        snapshot::apply_delta(base, &msg.payload, &mut out)
            .unwrap_or_else(|e| panic!("snapshot {}: {e}", msg.tick));
        self.states.entry(msg.tick).or_insert(out)
    }

    fn latest(&self) -> Option<(Tick, &[EntityState])> {
        self.states
            .last_key_value()
            .map(|(t, s)| (*t, s.as_slice()))
    }
}

fn ids(states: &[EntityState]) -> BTreeSet<u32> {
    states.iter().map(|s| s.id.0).collect()
}

#[test]
fn config_defaults_validate_and_bad_values_are_refused() {
    let ok = ReplicationConfig::default();
    assert_eq!(ok.validate(), Ok(()));
    let cases = [
        ReplicationConfig {
            interest_radius: 0.0,
            ..ok.clone()
        },
        ReplicationConfig {
            interest_radius: f32::NAN,
            ..ok.clone()
        },
        ReplicationConfig {
            hysteresis: -0.1,
            ..ok.clone()
        },
        ReplicationConfig {
            budget_bytes: 10,
            ..ok.clone()
        },
        ReplicationConfig {
            history: 0,
            ..ok.clone()
        },
    ];
    for bad in cases {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}

#[test]
fn snapshots_are_full_until_an_ack_then_deltas() {
    let cfg = ReplicationConfig::default();
    let mut world = TestWorld::new();
    let mut repl = ClientReplication::new(&cfg, quantizer(), OWN);
    let mut client = TestClient::default();
    let mut msg = empty_msg();
    let mut sizes = Vec::new();
    for tick in 1..=6u64 {
        let dx = tick as f32 * 0.2;
        let mut es = vec![entity(1, CENTER, [6.0, 0.0])];
        es.extend((0..50).map(|i| {
            let a = i as f32 * 0.7;
            entity(
                10 + i * 3,
                [CENTER[0] + a.cos() * 40.0 + dx, CENTER[1] + a.sin() * 40.0],
                [6.0, 0.0],
            )
        }));
        world.set(tick, &es);
        let stats = repl.build(&world.view, 0, cfg.budget_bytes, &mut msg);
        let got = client.receive(&msg).to_vec();
        assert_eq!(got, repl.truth(), "tick {tick}: the client sees the truth");
        assert_eq!(got.len(), 51);
        sizes.push(stats.bytes);
        if tick <= 3 {
            assert!(
                stats.full && msg.baseline.is_none(),
                "tick {tick}: no ack yet"
            );
        } else {
            assert_eq!(msg.baseline, Some(Tick(tick - 3)), "tick {tick}");
            assert!(!stats.full);
        }
        if tick >= 3 {
            // Acks arrive three ticks late.
            repl.on_ack(Tick(tick - 2));
        }
    }
    assert!(sizes[4] * 2 < sizes[0], "deltas are far smaller: {sizes:?}");
}

#[test]
fn interest_enters_within_radius_and_leaves_beyond_hysteresis() {
    let cfg = ReplicationConfig::default(); // radius 60, leaves beyond 69
    let mut world = TestWorld::new();
    let mut repl = ClientReplication::new(&cfg, quantizer(), OWN);
    let mut client = TestClient::default();
    let mut msg = empty_msg();
    // Distance of entity 7 from the own entity, tick by tick, and whether it must be in view.
    let script: &[(f32, bool)] = &[
        (65.0, false), // in the band but never entered: out
        (61.0, false),
        (59.0, true), // enters
        (64.0, true), // back into the band: stays
        (59.5, true),
        (68.0, true),
        (62.0, true),
        (68.9, true),
        (69.5, false), // beyond the leaving radius: removed
        (64.0, false), // back in the band: stays out
        (60.0, true),  // enters again (inclusive)
    ];
    for (i, &(dist, want)) in script.iter().enumerate() {
        let tick = i as u64 + 1;
        world.set(
            tick,
            &[
                entity(1, CENTER, [0.0, 0.0]),
                entity(7, [CENTER[0] + dist, CENTER[1]], [0.0, 0.0]),
                entity(8, [CENTER[0] + 200.0, CENTER[1]], [0.0, 0.0]),
            ],
        );
        repl.build(&world.view, 0, cfg.budget_bytes, &mut msg);
        let seen = ids(client.receive(&msg));
        assert_eq!(
            seen.contains(&7),
            want,
            "tick {tick}, distance {dist}: {seen:?}"
        );
        assert!(seen.contains(&1), "the own entity is always in view");
        assert!(!seen.contains(&8));
        repl.on_ack(Tick(tick));
    }
}

/// A world of wandering entities around a moving own entity, run for `ticks` over a lossy link
/// that delays and reorders; the world stops moving for the last `frozen` ticks. At every
/// delivery the client's state must be the shard's record of that tick, and every payload must
/// respect the budget.
struct LinkRun {
    seed: u64,
    entities: u32,
    ticks: u64,
    frozen: u64,
    budget: usize,
    snapshot_loss: f64,
    ack_loss: f64,
    max_delay: u64,
}

struct RunResult {
    /// First tick from which every snapshot delivered at once showed the truth, after the
    /// world froze.
    converged_at: Option<u64>,
    /// Longest number of consecutive delivered snapshots in which an entity in view showed a
    /// state other than the truth of that tick, over all entities.
    longest_stale: u64,
    max_bytes: usize,
    deliveries: u64,
}

impl LinkRun {
    fn run(&self) -> RunResult {
        let seed = self.seed;
        let mut rng = Pcg64Mcg::seed_from_u64(seed);
        let cfg = ReplicationConfig::default();
        let mut world = TestWorld::new();
        let mut repl = ClientReplication::new(&cfg, quantizer(), OWN);
        let mut client = TestClient::default();
        let mut msg = empty_msg();
        // Positions and velocities; index 0 is the own entity.
        let mut es: Vec<EntityView> = vec![entity(1, CENTER, [5.0, 0.0])];
        es.extend((0..self.entities).map(|i| {
            let p = [
                CENTER[0] + rng.random_range(-90.0..90.0),
                CENTER[1] + rng.random_range(-90.0..90.0),
            ];
            entity(2 + i * 5, p, [0.0, 0.0])
        }));
        let mut downlink: Vec<(u64, SnapshotMsg)> = Vec::new();
        let mut uplink: Vec<(u64, Tick)> = Vec::new();
        let mut stale: BTreeMap<u32, u64> = BTreeMap::new();
        let mut result = RunResult {
            converged_at: None,
            longest_stale: 0,
            max_bytes: 0,
            deliveries: 0,
        };
        for tick in 1..=self.ticks {
            let moving = tick <= self.ticks - self.frozen;
            for (i, e) in es.iter_mut().enumerate() {
                if !moving {
                    e.vel = [0.0, 0.0];
                    continue;
                }
                if i == 0 {
                    let a = tick as f32 * 0.02;
                    e.vel = [a.cos() * 6.0, a.sin() * 6.0];
                } else if rng.random_bool(0.1) {
                    let a: f32 = rng.random_range(0.0..std::f32::consts::TAU);
                    let s: f32 = rng.random_range(0.0..9.0);
                    e.vel = [a.cos() * s, a.sin() * s];
                }
                e.heading = e.vel[1].atan2(e.vel[0]);
                e.pos[0] += e.vel[0] / 30.0;
                e.pos[1] += e.vel[1] / 30.0;
                // Keep the crowd around the own entity (which circles the center), crossing
                // the interest edge often.
                for (p, c) in e.pos.iter_mut().zip(CENTER) {
                    *p = p.clamp(c - 95.0, c + 95.0);
                }
            }
            world.set(tick, &es);
            // Acks that arrive now.
            uplink.retain(|&(at, ack)| {
                if at <= tick {
                    repl.on_ack(ack);
                    false
                } else {
                    true
                }
            });
            let stats = repl.build(&world.view, 0, self.budget, &mut msg);
            assert!(
                msg.payload.len() <= self.budget,
                "seed {seed} tick {tick}: {} bytes over a budget of {}",
                msg.payload.len(),
                self.budget
            );
            assert_eq!(stats.bytes as usize, msg.payload.len());
            result.max_bytes = result.max_bytes.max(msg.payload.len());
            let truth = repl.truth().to_vec();
            if !rng.random_bool(self.snapshot_loss) {
                let delay = rng.random_range(0..=self.max_delay);
                downlink.push((tick + delay, msg.clone()));
            }
            // Deliveries, possibly out of order.
            let mut arrived: Vec<SnapshotMsg> = Vec::new();
            downlink.retain(|(at, m)| {
                if *at <= tick {
                    arrived.push(m.clone());
                    false
                } else {
                    true
                }
            });
            for m in arrived {
                let got = client.receive(&m).to_vec();
                result.deliveries += 1;
                let record = repl.sent(m.tick).unwrap_or_else(|| {
                    panic!("seed {seed}: record of {} evicted before delivery", m.tick)
                });
                assert_eq!(
                    got, record,
                    "seed {seed} tick {tick}: the client's state of {} differs from the record",
                    m.tick
                );
                if m.tick == Tick(tick) {
                    for t in &truth {
                        let run = stale.entry(t.id.0).or_insert(0);
                        match got.binary_search_by_key(&t.id, |s| s.id) {
                            Ok(i) if got[i] == *t => *run = 0,
                            _ => {
                                *run += 1;
                                result.longest_stale = result.longest_stale.max(*run);
                            }
                        }
                    }
                    let converged = got == truth;
                    match (converged, result.converged_at) {
                        (true, None) if !moving => result.converged_at = Some(tick),
                        (false, _) => result.converged_at = None,
                        _ => {}
                    }
                }
                // The client acknowledges the newest snapshot it applied.
                if !rng.random_bool(self.ack_loss)
                    && let Some((latest, _)) = client.latest()
                {
                    let delay = rng.random_range(1..=self.max_delay.max(1));
                    uplink.push((tick + delay, latest));
                }
            }
        }
        result
    }
}

#[test]
fn client_matches_records_under_loss_and_converges_to_truth() {
    for seed in 0..12 {
        let run = LinkRun {
            seed,
            entities: 80,
            ticks: 240,
            frozen: 40,
            budget: 1100,
            snapshot_loss: 0.25,
            ack_loss: 0.3,
            max_delay: 4,
        }
        .run();
        eprintln!(
            "seed {seed}: {} deliveries, longest stale {}, converged at {:?}, max {} bytes",
            run.deliveries, run.longest_stale, run.converged_at, run.max_bytes
        );
        assert!(
            run.deliveries > 120,
            "seed {seed}: {} deliveries",
            run.deliveries
        );
        // With room for everything, every snapshot delivered at once shows the truth of its
        // tick, whatever was lost before it.
        assert_eq!(run.longest_stale, 0, "seed {seed}");
        assert!(
            run.converged_at.is_some_and(|t| t <= 240 - 10),
            "seed {seed}: converged at {:?} after the world froze at 200",
            run.converged_at
        );
        assert!(run.max_bytes <= 1100);
    }
}

#[test]
fn tight_budget_is_respected_and_starved_entities_rise() {
    for seed in 100..106 {
        let run = LinkRun {
            seed,
            entities: 150,
            ticks: 300,
            frozen: 80,
            budget: 120,
            snapshot_loss: 0.1,
            ack_loss: 0.1,
            max_delay: 3,
        }
        .run();
        eprintln!(
            "seed {seed}: {} deliveries, longest stale {}, converged at {:?}, max {} bytes",
            run.deliveries, run.longest_stale, run.converged_at, run.max_bytes
        );
        assert!(run.max_bytes <= 120, "seed {seed}: {} bytes", run.max_bytes);
        // About 60 moving entities fit a snapshot, some 100 are in view: every one is brought
        // up to date within a few snapshots, none starves.
        assert!(
            run.longest_stale <= 12,
            "seed {seed}: an entity stayed stale for {} snapshots",
            run.longest_stale
        );
        assert!(
            run.converged_at.is_some_and(|t| t <= 300 - 20),
            "seed {seed}: converged at {:?}",
            run.converged_at
        );
    }
}

#[test]
fn own_entity_is_written_first_under_any_pressure() {
    let cfg = ReplicationConfig::default();
    let mut world = TestWorld::new();
    let mut repl = ClientReplication::new(&cfg, quantizer(), OWN);
    let mut client = TestClient::default();
    let mut msg = empty_msg();
    let mut es: Vec<EntityView> = (0..300u32)
        .map(|i| {
            let a = i as f32 * 0.37;
            let r = (i % 55) as f32;
            entity(
                100 + i,
                [CENTER[0] + a.cos() * r, CENTER[1] + a.sin() * r],
                [3.0, 1.0],
            )
        })
        .collect();
    // The own entity at index 17 this time, its index hint wrong half the time.
    es.insert(17, entity(1, CENTER, [8.0, 0.0]));
    for tick in 1..=60u64 {
        for e in &mut es {
            e.pos[0] += e.vel[0] / 30.0;
            e.pos[1] += e.vel[1] / 30.0;
        }
        world.set(tick, &es);
        let hint = if tick % 2 == 0 { 17 } else { 3 };
        let stats = repl.build(&world.view, hint, 64, &mut msg);
        assert!(msg.payload.len() <= 64);
        assert!(stats.deferred > 0, "tick {tick}: the budget is tight");
        let got = client.receive(&msg).to_vec();
        let own = world.quantized(&es[17]);
        assert!(got.contains(&own), "tick {tick}: own entity up to date");
        repl.on_ack(Tick(tick));
    }
}

#[test]
fn removals_are_eventually_written_under_pressure() {
    let cfg = ReplicationConfig::default();
    let mut world = TestWorld::new();
    let mut repl = ClientReplication::new(&cfg, quantizer(), OWN);
    let mut client = TestClient::default();
    let mut msg = empty_msg();
    // 100 entities that leave at tick 20, 200 that keep moving in view the whole time.
    let leaving: Vec<EntityView> = (0..100u32)
        .map(|i| {
            let a = i as f32 * 0.1;
            entity(
                1000 + i,
                [CENTER[0] + a.cos() * 30.0, CENTER[1] + a.sin() * 30.0],
                [0.0, 0.0],
            )
        })
        .collect();
    let mut staying: Vec<EntityView> = (0..200u32)
        .map(|i| {
            let a = i as f32 * 0.21;
            entity(
                2000 + i,
                [CENTER[0] + a.cos() * 45.0, CENTER[1] + a.sin() * 45.0],
                [2.0, -1.0],
            )
        })
        .collect();
    let mut gone_at = None;
    for tick in 1..=200u64 {
        for (k, e) in staying.iter_mut().enumerate() {
            let s = if (tick + k as u64).is_multiple_of(2) {
                1.0
            } else {
                -1.0
            };
            e.pos[0] += s * e.vel[0] / 30.0;
            e.pos[1] += s * e.vel[1] / 30.0;
        }
        let mut es = vec![entity(1, CENTER, [0.0, 0.0])];
        if tick < 20 {
            es.extend_from_slice(&leaving);
        }
        es.extend_from_slice(&staying);
        world.set(tick, &es);
        repl.build(&world.view, 0, 200, &mut msg);
        assert!(msg.payload.len() <= 200);
        let seen = ids(client.receive(&msg));
        let left = seen
            .iter()
            .filter(|&&id| (1000..1100).contains(&id))
            .count();
        if tick >= 20 && left == 0 && gone_at.is_none() {
            gone_at = Some(tick);
        }
        if tick > 2 {
            repl.on_ack(Tick(tick - 2));
        }
    }
    let gone_at = gone_at.expect("the departed entities were never removed");
    assert!(gone_at <= 60, "removed only at tick {gone_at}");
}

#[test]
fn acks_of_unknown_or_evicted_ticks_fall_back() {
    let cfg = ReplicationConfig {
        history: 4,
        ..ReplicationConfig::default()
    };
    let mut world = TestWorld::new();
    let mut repl = ClientReplication::new(&cfg, quantizer(), OWN);
    let mut client = TestClient::default();
    let mut msg = empty_msg();
    let mut step = |repl: &mut ClientReplication, tick: u64| {
        world.set(
            tick,
            &[
                entity(1, [CENTER[0] + tick as f32, CENTER[1]], [30.0, 0.0]),
                entity(5, [CENTER[0], CENTER[1] + 10.0], [0.0, 0.0]),
            ],
        );
        let stats = repl.build(&world.view, 0, cfg.budget_bytes, &mut msg);
        assert_eq!(client.receive(&msg), repl.truth());
        (stats.full, msg.baseline)
    };
    assert_eq!(step(&mut repl, 1), (true, None));
    repl.on_ack(Tick(99)); // never sent
    assert_eq!(step(&mut repl, 2), (true, None));
    repl.on_ack(Tick(2));
    repl.on_ack(Tick(1)); // older than the newest ack: ignored
    assert_eq!(step(&mut repl, 3), (false, Some(Tick(2))));
    for tick in 4..=6 {
        step(&mut repl, tick);
    }
    // Tick 2 was evicted by ticks 3..=6 (history of 4): full state.
    assert_eq!(step(&mut repl, 7), (true, None));
    repl.on_ack(Tick(2));
    assert_eq!(
        step(&mut repl, 8),
        (true, None),
        "an evicted ack is not a baseline"
    );
    repl.on_ack(Tick(7));
    assert_eq!(step(&mut repl, 9), (false, Some(Tick(7))));
}

#[test]
fn a_tick_that_goes_back_restarts_from_full_state() {
    let cfg = ReplicationConfig::default();
    let mut world = TestWorld::new();
    let mut repl = ClientReplication::new(&cfg, quantizer(), OWN);
    let mut msg = empty_msg();
    for tick in [1, 2, 3] {
        world.set(tick, &[entity(1, CENTER, [0.0, 0.0])]);
        repl.build(&world.view, 0, 1100, &mut msg);
        repl.on_ack(Tick(tick));
    }
    world.set(2, &[entity(1, CENTER, [0.0, 0.0])]);
    assert!(repl.build(&world.view, 0, 1100, &mut msg).full);
    repl.on_ack(Tick(2)); // ambiguous: the old or the new snapshot 2
    world.set(4, &[entity(1, CENTER, [0.0, 0.0])]);
    assert!(repl.build(&world.view, 0, 1100, &mut msg).full);
    repl.on_ack(Tick(4));
    world.set(5, &[entity(1, CENTER, [0.0, 0.0])]);
    assert!(
        !repl.build(&world.view, 0, 1100, &mut msg).full,
        "acks after the reset are used again"
    );
}

#[test]
fn buffers_are_reused_in_steady_state() {
    let cfg = ReplicationConfig::default();
    let mut world = TestWorld::new();
    let mut repl = ClientReplication::new(&cfg, quantizer(), OWN);
    let mut msg = empty_msg();
    let mut es: Vec<EntityView> = vec![entity(1, CENTER, [0.0, 0.0])];
    es.extend((0..100u32).map(|i| {
        let a = i as f32 * 0.3;
        entity(
            10 + i,
            [CENTER[0] + a.cos() * 40.0, CENTER[1] + a.sin() * 40.0],
            [a.sin(), a.cos()],
        )
    }));
    let mut addresses = None;
    for tick in 1..=200u64 {
        for e in &mut es {
            e.pos[0] += e.vel[0] / 30.0;
            e.pos[1] += e.vel[1] / 30.0;
        }
        world.set(tick, &es);
        repl.build(&world.view, 0, 1100, &mut msg);
        if tick > 3 {
            repl.on_ack(Tick(tick - 3));
        }
        let now = (repl.buffer_addresses(), msg.payload.as_ptr() as usize);
        if tick == 100 {
            addresses = Some(now);
        } else if tick > 100 {
            assert_eq!(
                Some(now),
                addresses,
                "tick {tick}: a buffer was reallocated"
            );
        }
    }
}
