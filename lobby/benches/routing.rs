//! Routing policy bench: decisions per second for 100 live shards and a client that measured
//! all of them, beside a baseline: one pass finding the minimum round trip over the same
//! measurements (the least any policy must do). Prints decisions per second and the ratio.
//!
//! `cargo bench -p meridian-lobby --bench routing`

use criterion::Criterion;
use meridian_lobby::routing::{Measured, RoutingConfig, ShardView, route};
use meridian_protocol::{ShardId, ZoneId};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn world() -> (Vec<ShardView>, Vec<Measured>) {
    let shards: Vec<ShardView> = (0..100)
        .map(|i| ShardView {
            id: ShardId::new(format!("shard-{i:03}")).expect("name"),
            zone: ZoneId::new(format!("zone-{}", i % 10)).expect("name"),
            load: (i * 37 % 1000) as u32,
            capacity: 1000,
            draining: i % 17 == 0,
            healthy: i % 23 != 0,
        })
        .collect();
    // Round trips spread like the 10-region matrix: clusters of near-equal values.
    let rtts = shards
        .iter()
        .enumerate()
        .map(|(i, s)| Measured {
            shard: s.id.clone(),
            rtt: Duration::from_micros(
                2_000 + (i as u64 % 10) * 25_000 + (i as u64 * 7919) % 3_000,
            ),
        })
        .collect();
    (shards, rtts)
}

fn baseline(rtts: &[Measured]) -> Option<Duration> {
    rtts.iter().map(|m| m.rtt).min()
}

fn main() {
    let (shards, rtts) = world();
    let cfg = RoutingConfig::default();
    let mut c = Criterion::default().configure_from_args();
    c.bench_function("route_100_shards", |b| {
        b.iter(|| route(black_box(&shards), black_box(&rtts), None, &cfg))
    });
    c.bench_function("baseline_min_rtt_100", |b| {
        b.iter(|| baseline(black_box(&rtts)))
    });
    c.final_summary();

    let time = |f: &mut dyn FnMut()| {
        let n = 20_000u32;
        (0..5)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..n {
                    f();
                }
                t.elapsed().as_secs_f64() / f64::from(n)
            })
            .fold(f64::INFINITY, f64::min)
    };
    let policy = time(&mut || {
        black_box(route(black_box(&shards), black_box(&rtts), None, &cfg).ok());
    });
    let base = time(&mut || {
        black_box(baseline(black_box(&rtts)));
    });
    println!("\nrouting, 100 shards, measured side by side in this run:");
    println!(
        "  policy: {:.0} decisions/s ({:.2} µs each)",
        1.0 / policy,
        policy * 1e6
    );
    println!(
        "  baseline (min over the round trips): {:.2} µs; ratio {:.1}x",
        base * 1e6,
        policy / base
    );
}
