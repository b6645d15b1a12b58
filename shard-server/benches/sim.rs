//! Simulation bench: one tick with 10,000 NPCs, 1,000 players (each sending one new input a
//! tick) and 200 pickups, the view and its spatial index included, replication not. Beside it
//! the baseline: a bare bevy_ecs query system integrating position from velocity over the
//! same 11,000 moving entities, in a world built by the same code (same archetypes, same
//! tables). Prints, at the end, per-entity nanoseconds for both, their ratio, what each phase
//! of the tick costs (timed between phases with `Sim::tick_observed`) and, inside the index
//! phase, what the spatial grid costs rebuilt from scratch and refreshed over one tick's moves
//! (what the tick does).
//!
//! `cargo bench -p meridian-shard --bench sim -- --warm-up-time 1 --measurement-time 3`

use bevy_ecs::prelude::*;
use criterion::{Criterion, Throughput};
use meridian_protocol::datagram::InputFrameMsg;
use meridian_protocol::{InputSeq, PlayerId};
use meridian_shard::sim::components::{Position, Velocity};
use meridian_shard::sim::{Sim, SimConfig, SimInputs, SimJoin, TickSystems};
use std::hint::black_box;
use std::time::{Duration, Instant};

const NPCS: u32 = 10_000;
const PLAYERS: u64 = 1_000;
/// Entities that move (NPCs and players): what the baseline iterates.
const MOVERS: f64 = NPCS as f64 + PLAYERS as f64;
/// Seconds per tick at the default 30 Hz.
const DT: f32 = 1.0 / 30.0;

fn config() -> SimConfig {
    SimConfig {
        npcs: NPCS,
        pickups: 200,
        ..SimConfig::default()
    }
}

/// A simulation with its players joined and moving, and what feeds it: every tick each player
/// sends one new input, turning now and then.
struct Driver {
    sim: Sim,
    inputs: SimInputs,
    seq: u32,
}

impl Driver {
    fn new() -> Self {
        let sim = Sim::new(config()).expect("valid config");
        let mut d = Self {
            sim,
            inputs: SimInputs::default(),
            seq: 0,
        };
        d.inputs.joins.extend((0..PLAYERS).map(|p| SimJoin {
            player: PlayerId(p),
            spawn: None,
            score: 0,
            ..SimJoin::default()
        }));
        // Warm up: buffers grow to size, players get up to speed.
        for _ in 0..60 {
            d.step();
        }
        d
    }

    fn fill_inputs(&mut self) {
        self.seq += 1;
        let seq = self.seq;
        // Datagrams arrive interleaved, not sorted by player: visit players in a scrambled
        // order (379 is coprime with 1,000).
        self.inputs.inputs.extend(
            (0..PLAYERS)
                .map(|i| (i * 379 + u64::from(seq)) % PLAYERS)
                .map(|p| {
                    let heading = ((p * 37) as u32).wrapping_add(seq / 45) as u8;
                    (
                        PlayerId(p),
                        InputFrameMsg {
                            seq: InputSeq(seq),
                            heading,
                            throttle: 255,
                            buttons: 0,
                        },
                    )
                }),
        );
    }

    /// One tick, inputs included.
    fn step(&mut self) {
        self.fill_inputs();
        black_box(self.sim.tick(&mut self.inputs));
    }

    /// Runs `iters` ticks and returns the time spent inside `Sim::tick` alone.
    fn timed_ticks(&mut self, iters: u64) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            self.fill_inputs();
            let t = Instant::now();
            black_box(self.sim.tick(&mut self.inputs));
            total += t.elapsed();
        }
        total
    }
}

/// The baseline: the plainest bevy_ecs system over the same entities.
fn integrate_bare(mut movers: Query<(&mut Position, &Velocity)>) {
    for (mut pos, vel) in &mut movers {
        pos.0[0] += vel.0[0] * DT;
        pos.0[1] += vel.0[1] * DT;
    }
}

/// The baseline schedule, run on the world of a warmed-up simulation.
struct Baseline {
    driver: Driver,
    schedule: Schedule,
}

impl Baseline {
    fn new() -> Self {
        let mut schedule = Schedule::default();
        schedule.add_systems(integrate_bare);
        Self {
            driver: Driver::new(),
            schedule,
        }
    }

    fn run(&mut self) {
        self.schedule.run(self.driver.sim.world_mut());
    }

    fn timed_runs(&mut self, iters: u64) -> Duration {
        let t = Instant::now();
        for _ in 0..iters {
            self.run();
        }
        t.elapsed()
    }
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("sim_10k_npcs_1k_players");
    g.throughput(Throughput::Elements(MOVERS as u64));
    let mut driver = Driver::new();
    g.bench_function("tick", |b| b.iter_custom(|iters| driver.timed_ticks(iters)));
    let mut baseline = Baseline::new();
    g.bench_function("baseline_bare_query_integrate", |b| {
        b.iter_custom(|iters| baseline.timed_runs(iters))
    });
    g.finish();
}

/// Nanoseconds per call: the best mean over `rounds` rounds of `iters` calls. Short rounds and
/// the best of many keep out the noise of other processes on a shared machine.
fn best_of(rounds: u32, iters: u64, mut f: impl FnMut(u64) -> Duration) -> f64 {
    (0..rounds)
        .map(|_| f(iters).as_secs_f64() * 1e9 / iters as f64)
        .fold(f64::INFINITY, f64::min)
}

fn print_ratios() {
    let mut driver = Driver::new();
    let mut baseline = Baseline::new();
    // Interleaved rounds so that both see the same machine state.
    let (mut tick, mut bare) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..100 {
        tick = tick.min(best_of(1, 20, |n| driver.timed_ticks(n)));
        bare = bare.min(best_of(1, 200, |n| baseline.timed_runs(n)));
    }
    println!(
        "\nratio, measured side by side in this run (10,000 NPCs + 1,000 players, 200 pickups):"
    );
    println!(
        "  sim tick {:.1} us = {:.2} ns/entity vs bare query integrate {:.1} us = {:.2} ns/entity: {:.2}x",
        tick / 1e3,
        tick / MOVERS,
        bare / 1e3,
        bare / MOVERS,
        tick / bare
    );
    // For scripts/bench.sh.
    println!("RESULT sim_tick_us={:.3}", tick / 1e3);
    println!("RESULT sim_bare_query_us={:.3}", bare / 1e3);

    println!(
        "\nper phase (Sim::tick_observed, each phase its own schedule; best round of 20 ticks):"
    );
    let mut best = [f64::INFINITY; TickSystems::ALL.len()];
    for _ in 0..100 {
        let mut spent = [0.0f64; TickSystems::ALL.len()];
        for _ in 0..20 {
            driver.fill_inputs();
            let mut last = Instant::now();
            driver.sim.tick_observed(&mut driver.inputs, |phase| {
                let now = Instant::now();
                spent[phase as usize] += (now - last).as_secs_f64() * 1e9 / 20.0;
                last = now;
            });
        }
        for (b, s) in best.iter_mut().zip(spent) {
            *b = b.min(s);
        }
    }
    for (phase, ns) in TickSystems::ALL.iter().zip(best) {
        println!(
            "  {:<12} {:>8.1} us {:>6.2} ns/entity",
            format!("{phase:?}"),
            ns / 1e3,
            ns / MOVERS
        );
    }
    println!("  {:<12} {:>8.1} us", "sum", best.iter().sum::<f64>() / 1e3);

    // Inside the Index phase: the spatial grid alone, over the same positions.
    let view = driver.sim.view();
    let positions: Vec<[f32; 2]> = view.entities.iter().map(|e| e.pos).collect();
    let mut grid = view.grid.clone();
    let t = best_of(100, 20, |n| {
        let t = Instant::now();
        for _ in 0..n {
            grid.rebuild(black_box(&positions).iter().copied());
        }
        t.elapsed()
    });
    println!(
        "  of which SpatialGrid::rebuild {:.1} us {:.2} ns/entity ({} entities)",
        t / 1e3,
        t / positions.len() as f64,
        positions.len()
    );
    // What the tick does instead: a refresh, between the positions of two consecutive ticks
    // (of `Sim::tick`: the per-phase schedules of `tick_observed` list tables in another
    // order, so their view is another permutation).
    driver.step();
    let before: Vec<[f32; 2]> = driver.sim.view().entities.iter().map(|e| e.pos).collect();
    driver.step();
    let after: Vec<[f32; 2]> = driver.sim.view().entities.iter().map(|e| e.pos).collect();
    let t = best_of(100, 20, |n| {
        let t = Instant::now();
        for k in 0..n {
            let next = if k % 2 == 0 { &after } else { &before };
            grid.refresh(black_box(next).iter().copied());
        }
        t.elapsed()
    });
    println!(
        "  of which SpatialGrid::refresh {:.1} us {:.2} ns/entity (one tick's moves)",
        t / 1e3,
        t / positions.len() as f64,
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
    // Under `--profile-time` (for a profiler) only the criterion routines run.
    if !std::env::args().any(|a| a == "--profile-time") {
        print_ratios();
    }
}
