//! The simulation's tick allocates nothing once warmed up, whatever the number of entities:
//! every buffer lives in a resource and is reused. Counted with a global allocator that counts
//! the allocations of the current thread (so other tests' threads cannot disturb the count).

use meridian_protocol::datagram::InputFrameMsg;
use meridian_protocol::snapshot::EntityKind;
use meridian_protocol::{EntityId, InputSeq, PlayerId};
use meridian_shard::sim::{BorderConfig, GhostUpdate, Sim, SimConfig, SimInputs, SimJoin};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    /// Allocations (including reallocations) made by this thread.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the allocator may run while the thread's locals are being torn down.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Forwards to the system allocator, counting.
struct Counting;

#[expect(
    unsafe_code,
    reason = "GlobalAlloc is an unsafe trait; this one only counts and forwards to System"
)]
// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the contract.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `ticks` ticks after `warm_up` ticks, with `players` players each sending
/// one new input a tick plus two repeats (as datagrams do).
fn allocations_per_run(npcs: u32, players: u64, warm_up: u32, ticks: u32) -> u64 {
    let mut sim = Sim::new(SimConfig {
        npcs,
        pickups: 500,
        ..SimConfig::default()
    })
    .expect("valid config");
    let mut inputs = SimInputs::default();
    inputs.joins.extend((0..players).map(|p| SimJoin {
        player: PlayerId(p),
        spawn: None,
        score: 0,
        ..SimJoin::default()
    }));
    sim.tick(&mut inputs);
    let mut counted = 0;
    for t in 0..warm_up + ticks {
        for p in 0..players {
            for back in 0..3 {
                let seq = InputSeq((t + 10).saturating_sub(back));
                let frame = InputFrameMsg {
                    seq,
                    heading: (t as u8).wrapping_mul(7),
                    throttle: 255,
                    buttons: 0,
                };
                inputs.inputs.push((PlayerId(p), frame));
            }
        }
        let before = allocations();
        let out = sim.tick(&mut inputs);
        let made = allocations() - before;
        assert_eq!(out.input_acks.len() as u64, players);
        if t >= warm_up {
            counted += made;
        }
    }
    counted
}

#[test]
fn a_warm_tick_allocates_nothing_whatever_the_entity_count() {
    // The counter counts.
    let before = allocations();
    let probe = std::hint::black_box(vec![0u8; 64]);
    assert!(allocations() > before);
    drop(probe);
    let small = allocations_per_run(1_000, 50, 60, 200);
    let large = allocations_per_run(20_000, 500, 60, 200);
    assert_eq!(
        (small, large),
        (0, 0),
        "allocations in 200 warm ticks (1,000 NPCs, 20,000 NPCs)"
    );
}

/// Allocations made by `ticks` ticks after `warm_up` ticks at the borders of a zone with an
/// open east neighbour and a closed north one: half the players stand in the east band within
/// the margin (checked every tick, never handed off), half walk north into the closed border
/// (walled every tick), and `ghosts` ghosts of both neighbours move in the band, refreshed
/// every tick.
fn allocations_at_borders(players: u64, ghosts: u32, warm_up: u32, ticks: u32) -> u64 {
    let mut sim = Sim::new(SimConfig {
        npcs: 2_000,
        pickups: 200,
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
    })
    .expect("valid config");
    let standing = |p: u64| p.is_multiple_of(2);
    let mut inputs = SimInputs {
        open_borders: Some(vec![true, false]),
        ..SimInputs::default()
    };
    inputs.joins.extend((0..players).map(|p| SimJoin {
        player: PlayerId(p),
        spawn: Some(if standing(p) {
            [1001.0, p as f32]
        } else {
            [p as f32, 990.0]
        }),
        ..SimJoin::default()
    }));
    sim.tick(&mut inputs);
    let mut counted = 0;
    for t in 0..warm_up + ticks {
        for p in 0..players {
            let frame = InputFrameMsg {
                seq: InputSeq(t + 1),
                heading: 64,
                throttle: if standing(p) { 0 } else { 255 },
                buttons: 0,
            };
            inputs.inputs.push((PlayerId(p), frame));
        }
        let sway = (t % 20) as f32;
        inputs.ghosts.extend((0..ghosts).map(|g| GhostUpdate {
            source: (g % 2) as u16,
            remote: EntityId(g),
            kind: EntityKind::Npc,
            pos: if g % 2 == 0 {
                [1005.0 + sway, g as f32]
            } else {
                [g as f32, 1005.0 + sway]
            },
            heading: sway,
        }));
        let before = allocations();
        let out = sim.tick(&mut inputs);
        let made = allocations() - before;
        assert_eq!(out.input_acks.len() as u64, players);
        assert!(out.crossings.is_empty(), "nobody is past the margin");
        if t >= warm_up {
            counted += made;
        }
    }
    assert_eq!(sim.ghost_count(), ghosts as usize);
    let walled = sim
        .players()
        .filter(|(p, s)| !standing(p.0) && s.pos[1] == 1000.0)
        .count();
    assert_eq!(
        walled as u64,
        players / 2,
        "the walkers are at the north wall"
    );
    counted
}

#[test]
fn a_warm_tick_at_the_borders_allocates_nothing() {
    let made = allocations_at_borders(200, 400, 60, 200);
    assert_eq!(made, 0, "allocations in 200 warm ticks at the borders");
}
