//! Replication bench: one client seeing 100 entities (among 1,000 in the zone), in a steady
//! state where the client acknowledges every snapshot and the acknowledgements arrive three
//! ticks later (a 100 ms round trip at 30 Hz). Two scenes:
//! - `all_moving`: every entity in view moves (3 to 8 units per second) and turns every tick;
//! - `tenth_moving`: one in ten moves, the rest are at rest.
//!
//! Measured: encode time per snapshot ([`ClientReplication::build`]: interest, delta, budget,
//! encoding), beside its baseline, the naive full-state snapshot (bincode, through
//! `meridian_protocol::codec`, of id, kind, position, velocity and heading as they are in the
//! simulation). Printed at the end: bytes per snapshot and per entity, the naive size, and the
//! ratios against the goals (all moving: at most 6 bytes per entity; one in ten moving: at most
//! 5% of the naive size).
//!
//! `cargo bench -p meridian-shard --bench replication -- --warm-up-time 1 --measurement-time 3`

use criterion::Criterion;
use meridian_protocol::codec;
use meridian_protocol::datagram::SnapshotMsg;
use meridian_protocol::quantize::PositionQuantizer;
use meridian_protocol::snapshot::EntityKind;
use meridian_protocol::{EntityId, InputSeq, Tick};
use meridian_shard::replication::{BuildStats, ClientReplication, ReplicationConfig};
use meridian_shard::sim::view::{EntityView, WorldView};
use serde::Serialize;
use std::f32::consts::TAU;
use std::hint::black_box;
use std::time::{Duration, Instant};

const ZONE_MIN: [f32; 2] = [0.0, 0.0];
const ZONE_MAX: [f32; 2] = [1000.0, 1000.0];
const CENTER: [f32; 2] = [500.0, 500.0];
const TICK_HZ: f32 = 30.0;
/// Entities in the client's view, its own included.
const IN_VIEW: u32 = 100;
/// Entities in the zone.
const IN_ZONE: u32 = 1000;
/// Acknowledgements arrive this many ticks after their snapshot.
const ACK_LAG: u64 = 3;
/// Ticks run before measuring, so that every buffer and the history are warm.
const WARM_UP_TICKS: u64 = 64;

/// The naive snapshot entry: the simulation's state as it is, bincode-encoded.
#[derive(Serialize)]
struct NaiveEntity {
    id: u32,
    kind: u8,
    pos: [f32; 2],
    vel: [f32; 2],
    heading: f32,
}

/// A deterministic pseudo-random number in `0..1` from two integers.
fn hash01(a: u32, b: u32) -> f32 {
    let mut x = (u64::from(a) << 32 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 32;
    (x >> 40) as f32 / (1u64 << 24) as f32
}

/// One entity's motion: an orbit around the zone's center (so that it stays in view) at its
/// own speed, or rest.
#[derive(Clone, Copy)]
struct Motion {
    radius: f32,
    phase: f32,
    /// Radians per tick; 0 at rest.
    omega: f32,
}

/// The zone: the client's entity (index 0, id 1) near the center, `IN_VIEW - 1` entities around
/// it within the interest radius, the others spread over the zone away from it.
struct Scene {
    view: WorldView,
    motions: Vec<Motion>,
    tick: u64,
}

impl Scene {
    fn new(moving_every: u32) -> Self {
        let mut motions = Vec::with_capacity(IN_ZONE as usize);
        let mut view = WorldView::new(ZONE_MIN, ZONE_MAX, 16.0);
        for i in 0..IN_ZONE {
            let (radius, in_view) = if i == 0 {
                (3.0, true)
            } else if i < IN_VIEW {
                (2.0 + 50.0 * hash01(i, 1).sqrt(), true)
            } else {
                (120.0 + 350.0 * hash01(i, 1), false)
            };
            let moving = !in_view || i % moving_every == 0;
            // 3 to 8 units per second, either way round.
            let speed = 3.0 + 5.0 * hash01(i, 2);
            let sign = if hash01(i, 3) < 0.5 { -1.0 } else { 1.0 };
            let omega = if moving {
                sign * speed / radius / TICK_HZ
            } else {
                0.0
            };
            motions.push(Motion {
                radius,
                phase: TAU * hash01(i, 4),
                omega,
            });
            view.entities.push(EntityView {
                // Sparse ids, as on a shard where entities come and go.
                id: EntityId(1 + i * 7),
                kind: if i == 0 {
                    EntityKind::Player
                } else if i % 5 == 0 {
                    EntityKind::Pickup
                } else {
                    EntityKind::Npc
                },
                pos: CENTER,
                vel: [0.0, 0.0],
                heading: 0.0,
            });
        }
        let mut scene = Self {
            view,
            motions,
            tick: 0,
        };
        scene.step();
        scene
    }

    /// Advances the world one tick and rebuilds the spatial index, as the simulation does.
    fn step(&mut self) {
        self.tick += 1;
        let t = self.tick as f32;
        for (e, m) in self.view.entities.iter_mut().zip(&self.motions) {
            let a = m.phase + m.omega * t;
            let (sin, cos) = a.sin_cos();
            e.pos = [CENTER[0] + m.radius * cos, CENTER[1] + m.radius * sin];
            let v = m.omega * m.radius * TICK_HZ;
            e.vel = [-v * sin, v * cos];
            e.heading = if m.omega == 0.0 {
                e.heading
            } else {
                e.vel[1].atan2(e.vel[0])
            };
        }
        self.view.tick = Tick(self.tick);
        self.view
            .grid
            .rebuild(self.view.entities.iter().map(|e| e.pos));
    }

    /// The naive full-state snapshot of the entities the client sees.
    fn naive(&self) -> Vec<NaiveEntity> {
        self.view.entities[..IN_VIEW as usize]
            .iter()
            .map(|e| NaiveEntity {
                id: e.id.0,
                kind: e.kind as u8,
                pos: e.pos,
                vel: e.vel,
                heading: e.heading,
            })
            .collect()
    }
}

/// A client in steady state over a scene.
struct Client {
    scene: Scene,
    repl: ClientReplication,
    msg: SnapshotMsg,
    budget: usize,
}

impl Client {
    fn new(moving_every: u32) -> Self {
        let cfg = ReplicationConfig::default();
        let quantizer = PositionQuantizer::new(ZONE_MIN, ZONE_MAX).expect("zone bounds");
        let mut client = Self {
            scene: Scene::new(moving_every),
            repl: ClientReplication::new(&cfg, quantizer, EntityId(1)),
            msg: SnapshotMsg {
                tick: Tick(0),
                baseline: None,
                input_ack: InputSeq(0),
                payload: Vec::with_capacity(1500),
            },
            budget: cfg.budget_bytes,
        };
        for _ in 0..WARM_UP_TICKS {
            client.step();
            client.build();
        }
        client
    }

    fn step(&mut self) {
        self.scene.step();
    }

    /// The acknowledgement that arrives this tick, then the snapshot.
    fn build(&mut self) -> BuildStats {
        if let Some(acked) = self.scene.tick.checked_sub(ACK_LAG).filter(|&t| t > 0) {
            self.repl.on_ack(Tick(acked));
        }
        self.repl
            .build(&self.scene.view, 0, self.budget, &mut self.msg)
    }
}

/// Runs `ticks` more ticks and sums what the snapshots held.
fn sizes(client: &mut Client, ticks: u32) -> Sizes {
    let mut s = Sizes::default();
    for _ in 0..ticks {
        client.step();
        let stats = client.build();
        s.snapshots += 1;
        s.bytes += u64::from(stats.bytes);
        s.max_bytes = s.max_bytes.max(stats.bytes);
        s.in_view += u64::from(stats.in_view);
        s.written += u64::from(stats.written);
        s.deferred += u64::from(stats.deferred);
        s.full += u64::from(stats.full);
    }
    s
}

#[derive(Default)]
struct Sizes {
    snapshots: u64,
    bytes: u64,
    max_bytes: u32,
    in_view: u64,
    written: u64,
    deferred: u64,
    full: u64,
}

impl Sizes {
    fn per_snapshot(&self) -> f64 {
        self.bytes as f64 / self.snapshots as f64
    }

    fn per_entity(&self) -> f64 {
        self.bytes as f64 / self.in_view as f64
    }
}

/// Time of the snapshot builds alone over `iters` ticks (the world's step is not counted).
fn time_builds(client: &mut Client, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        client.step();
        let t = Instant::now();
        black_box(client.build());
        total += t.elapsed();
    }
    total
}

fn encode_naive(naive: &Vec<NaiveEntity>, buf: &mut Vec<u8>) {
    buf.clear();
    codec::encode_into(black_box(naive), buf).expect("naive snapshot encodes");
}

const SCENES: [(&str, u32); 2] = [("all_moving", 1), ("tenth_moving", 10)];

fn benches(c: &mut Criterion) {
    for (name, moving_every) in SCENES {
        let mut g = c.benchmark_group(format!("replication_{name}"));
        let mut client = Client::new(moving_every);
        g.bench_function("build_snapshot", |b| {
            b.iter_custom(|iters| time_builds(&mut client, iters))
        });
        let naive = client.scene.naive();
        let mut buf = Vec::with_capacity(4096);
        g.bench_function("baseline_naive_full_bincode", |b| {
            b.iter(|| encode_naive(&naive, &mut buf))
        });
        g.finish();
    }
}

/// Best mean time per call over a few rounds, nanoseconds.
fn best_of(rounds: u32, mut f: impl FnMut() -> Duration, iters: u64) -> f64 {
    (0..rounds)
        .map(|_| f().as_secs_f64() * 1e9 / iters as f64)
        .fold(f64::INFINITY, f64::min)
}

fn print_report() {
    println!("\nreplication, one client seeing {IN_VIEW} entities, acks {ACK_LAG} ticks late:");
    let mut verdicts = Vec::new();
    for (name, moving_every) in SCENES {
        let mut client = Client::new(moving_every);
        let s = sizes(&mut client, 3000);
        let naive = client.scene.naive();
        let naive_len = codec::encode(&naive).expect("naive snapshot encodes").len();
        let iters = 20_000;
        let build_ns = best_of(5, || time_builds(&mut client, iters), iters);
        let mut buf = Vec::with_capacity(4096);
        let naive_ns = best_of(
            5,
            || {
                let t = Instant::now();
                for _ in 0..iters {
                    encode_naive(&naive, &mut buf);
                }
                t.elapsed()
            },
            iters,
        );
        let ratio = s.per_snapshot() / naive_len as f64;
        println!(
            "  {name:<13} {:>7.1} B/snapshot (max {}), {:.2} B/entity, {:.1} written + {:.1} \
             deferred of {:.0} in view, {} full; build {:.2} µs/snapshot | naive full bincode \
             {naive_len} B ({:.1} B/entity), encode {:.2} µs | ratio {:.2}%",
            s.per_snapshot(),
            s.max_bytes,
            s.per_entity(),
            s.written as f64 / s.snapshots as f64,
            s.deferred as f64 / s.snapshots as f64,
            s.in_view as f64 / s.snapshots as f64,
            s.full,
            build_ns / 1000.0,
            naive_len as f64 / f64::from(IN_VIEW),
            naive_ns / 1000.0,
            ratio * 100.0,
        );
        // For scripts/bench.sh.
        println!(
            "RESULT replication_{name}_bytes_per_entity={:.4}",
            s.per_entity()
        );
        println!("RESULT replication_{name}_bytes={:.2}", s.per_snapshot());
        println!("RESULT replication_{name}_naive_bytes={naive_len}");
        verdicts.push((name, s.per_entity(), ratio, build_ns));
    }
    println!("\nratios, measured side by side in this run:");
    for (name, per_entity, ratio, build_ns) in verdicts {
        match name {
            "all_moving" => println!(
                "  all moving:   {per_entity:.2} B/entity/snapshot (goal <= 6; naia publishes \
                 25.7): {}",
                if per_entity <= 6.0 { "met" } else { "MISSED" }
            ),
            _ => println!(
                "  tenth moving: {:.2}% of the naive full-state snapshot (goal <= 5%): {}",
                ratio * 100.0,
                if ratio <= 0.05 { "met" } else { "MISSED" }
            ),
        }
        println!(
            "    1,000 such clients: {:.2} ms of replication per tick ({:.1}% of a 30 Hz tick, \
             one thread)",
            build_ns * 1000.0 / 1e6,
            build_ns * 1000.0 / 1e6 / (1000.0 / 30.0) * 100.0
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
    print_report();
}
