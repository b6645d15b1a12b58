//! Randomized, concurrent runs of the lease and ownership operations — claims, transfers,
//! accepts, checkpoints, releases, lease losses (expiry, takeover by another shard) and
//! restarts (a shard re-acquiring its zone with a new epoch) — from several tasks at once,
//! against a real `redis-server`, a real 3-master Redis Cluster (player hashes and zone leases
//! spread over its nodes), and the in-memory store, which must agree.
//!
//! Each task plays a shard that keeps every lease it ever got and sometimes writes under an
//! old one (a partitioned shard that has not noticed its loss). Every call's answer is logged.
//! Afterwards the logs are checked against the final records:
//! - every player has at most one owner, and the record agrees with what was logged;
//! - no write under a lease epoch lower than the record's for that zone ever succeeded (the
//!   history of each player is rebuilt from the transfer sequence numbers the calls returned);
//! - each player's sequence strictly increases across successful writes: the sequence numbers
//!   are distinct, gap-free once releases are counted, and ordered like the calls in real time;
//! - lease epochs of a zone are distinct and increase in real time.
//!
//! Seeded: the seed of each round is printed, and `MERIDIAN_SEED=<n>` replays one.

use meridian_cluster::clock::SystemClock;
use meridian_cluster::ownership::{
    AcceptOutcome, AcquireOutcome, ClaimOutcome, Lease, Ownership, PlayerState, TransferOutcome,
};
use meridian_cluster::testing::{RedisCluster, RedisServer};
use meridian_cluster::{MemoryStore, Store, StoreConfig, StoreHandle};
use meridian_protocol::{PlayerId, ShardId, ZoneId};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

const ZONES: [&str; 2] = ["west", "east"];
const SHARDS: [&str; 3] = ["s-0", "s-1", "s-2"];
const PLAYERS: u64 = 6;
const OPS_PER_SHARD: usize = 400;
/// Short, so that leases expire and change hands during a round.
const LEASE_TTL: Duration = Duration::from_millis(40);
const ROUNDS: usize = 5;

/// SplitMix64: small, seedable, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).expect("below n")
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn zone(i: usize) -> ZoneId {
    ZoneId::new(ZONES[i]).expect("valid zone")
}

fn shard(i: usize) -> ShardId {
    ShardId::new(SHARDS[i]).expect("valid shard id")
}

fn state(rng: &mut Rng) -> PlayerState {
    let x = (rng.next() % 1000) as f32;
    PlayerState {
        pos: [x, -x],
        vel: [1.0, 0.0],
        score: rng.next() % 100,
        last_input: 0,
    }
}

/// A successful call, as answered.
#[derive(Debug, Clone)]
enum Op {
    Acquired(Lease),
    Claimed {
        player: u64,
        lease: Lease,
        seq: u64,
    },
    Transferred {
        player: u64,
        from: Lease,
        to: ShardId,
        to_zone: ZoneId,
        seq: u64,
    },
    /// `seq`: the record's sequence the accept applied to.
    Accepted {
        player: u64,
        lease: Lease,
        seq: u64,
    },
    Checkpointed {
        player: u64,
        lease: Lease,
    },
    Released {
        player: u64,
        lease: Lease,
    },
}

/// A logged call with when it started and ended.
#[derive(Debug, Clone)]
struct Event {
    op: Op,
    started: Instant,
    ended: Instant,
}

/// One shard's run: random operations, with its current and stale leases.
async fn play(store: StoreHandle, me: usize, seed: u64) -> Vec<Event> {
    let mut rng = Rng(seed ^ (me as u64 + 1).wrapping_mul(0x5851_f42d_4c95_7f2d));
    let mut leases: Vec<Lease> = Vec::new();
    let mut log = Vec::new();
    for _ in 0..OPS_PER_SHARD {
        let player = 1 + rng.next() % PLAYERS;
        // Mostly the newest lease of a zone; sometimes an older one (a partitioned shard).
        let pick = |rng: &mut Rng, leases: &[Lease]| -> Option<Lease> {
            if leases.is_empty() {
                return None;
            }
            if rng.chance(70) {
                leases.last().cloned()
            } else {
                Some(leases[rng.below(leases.len())].clone())
            }
        };
        let started = Instant::now();
        let roll = rng.below(100);
        let op = if roll < 15 || leases.is_empty() {
            // Acquire (or, for a zone it holds, restart with a new epoch).
            let z = zone(rng.below(ZONES.len()));
            match store
                .acquire_lease(&z, &shard(me), LEASE_TTL)
                .await
                .expect("acquire_lease")
            {
                AcquireOutcome::Acquired(lease) => {
                    leases.push(lease.clone());
                    Some(Op::Acquired(lease))
                }
                AcquireOutcome::Held(held) => {
                    assert_ne!(held.owner, shard(me), "held by itself, seed {seed}");
                    None
                }
            }
        } else if roll < 20 {
            let lease = pick(&mut rng, &leases).expect("some lease");
            let _released = store.release_lease(&lease).await.expect("release_lease");
            None
        } else if roll < 45 {
            let lease = pick(&mut rng, &leases).expect("some lease");
            match store
                .claim_player(PlayerId(player), &lease)
                .await
                .expect("claim_player")
            {
                ClaimOutcome::Claimed { seq, .. } => Some(Op::Claimed { player, lease, seq }),
                ClaimOutcome::Stale { epoch } => {
                    assert!(
                        epoch > lease.epoch,
                        "stale at {epoch} for {lease:?}, seed {seed}"
                    );
                    None
                }
            }
        } else if roll < 65 {
            let from = pick(&mut rng, &leases).expect("some lease");
            let to = shard(rng.below(SHARDS.len()));
            let to_zone = zone(rng.below(ZONES.len()));
            match store
                .transfer_player(PlayerId(player), &from, &to, &to_zone, &state(&mut rng))
                .await
                .expect("transfer_player")
            {
                TransferOutcome::Transferred { seq } => Some(Op::Transferred {
                    player,
                    from,
                    to,
                    to_zone,
                    seq,
                }),
                TransferOutcome::NotOwner(_) => None,
            }
        } else if roll < 80 {
            let lease = pick(&mut rng, &leases).expect("some lease");
            let at = if rng.chance(50) {
                None
            } else {
                Some(rng.next() % 40)
            };
            match store
                .accept_player(PlayerId(player), &lease, at)
                .await
                .expect("accept_player")
            {
                AcceptOutcome::Accepted { seq, .. } => {
                    if let Some(at) = at {
                        assert_eq!(seq, at, "accepted another sequence, seed {seed}");
                    }
                    Some(Op::Accepted { player, lease, seq })
                }
                AcceptOutcome::NotOffered(_) => None,
            }
        } else if roll < 90 {
            let lease = pick(&mut rng, &leases).expect("some lease");
            let players: Vec<u64> = (0..1 + rng.below(3))
                .map(|_| 1 + rng.next() % PLAYERS)
                .collect();
            let batch: Vec<_> = players
                .iter()
                .map(|&p| (PlayerId(p), state(&mut rng)))
                .collect();
            let written = store
                .checkpoint_players(&lease, &batch)
                .await
                .expect("checkpoint_players");
            assert_eq!(written.len(), batch.len());
            let ended = Instant::now();
            for (&p, ok) in players.iter().zip(written) {
                if ok {
                    log.push(Event {
                        op: Op::Checkpointed {
                            player: p,
                            lease: lease.clone(),
                        },
                        started,
                        ended,
                    });
                }
            }
            None
        } else {
            let lease = pick(&mut rng, &leases).expect("some lease");
            let saved = rng.chance(50).then(|| state(&mut rng));
            store
                .release_player(PlayerId(player), &lease, saved.as_ref())
                .await
                .expect("release_player")
                .then_some(Op::Released { player, lease })
        };
        if let Some(op) = op {
            log.push(Event {
                op,
                started,
                ended: Instant::now(),
            });
        }
        if rng.chance(25) {
            tokio::time::sleep(Duration::from_millis(rng.next() % 6)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
    log
}

/// The ownership fields the history determines.
#[derive(Debug, Clone, PartialEq, Default)]
struct Model {
    owner: Option<ShardId>,
    zone: Option<ZoneId>,
    epoch: u64,
    from: Option<ShardId>,
}

/// One segment of a player's history: the record between two sequence bumps.
#[derive(Debug, Clone)]
struct Segment {
    /// As the bump left it.
    start: Model,
    /// After the accepts of the segment.
    end: Model,
    /// The lowest epoch above 0 the record had during the segment (`u64::MAX` if none).
    min_positive_epoch: u64,
}

/// Fails the check with a message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Closes segment `seq` (which began as `start`): applies its accepts, each of which must have
/// found the record offered to it.
fn close_segment(
    start: Model,
    seq: u64,
    accepts: &HashMap<u64, Vec<&Lease>>,
) -> Result<Segment, String> {
    let mut end = start.clone();
    let mut min_positive_epoch = if start.epoch > 0 {
        start.epoch
    } else {
        u64::MAX
    };
    for lease in accepts.get(&seq).into_iter().flatten() {
        let offered =
            end.owner.as_ref() == Some(&lease.owner) && end.zone.as_ref() == Some(&lease.zone);
        ensure!(offered, "accept at seq {seq} under {lease:?} of {start:?}");
        end.epoch = end.epoch.max(lease.epoch);
        end.from = None;
        // The first accept of a pending record sets its epoch to the accepting lease's.
        min_positive_epoch = min_positive_epoch.min(lease.epoch.max(start.epoch));
    }
    Ok(Segment {
        start,
        end,
        min_positive_epoch,
    })
}

/// Checks one player's history (its successful calls) against its final record.
fn check_player(events: &[&Event], record: Option<&Ownership>) -> Result<(), String> {
    let final_seq = record.map_or(0, |r| r.seq);
    let mut bumps: BTreeMap<u64, &Event> = BTreeMap::new();
    let mut accepts: HashMap<u64, Vec<&Lease>> = HashMap::new();
    let mut releases: Vec<&Lease> = Vec::new();
    let mut checkpoints: Vec<&Lease> = Vec::new();
    for event in events {
        match &event.op {
            Op::Claimed { seq, .. } | Op::Transferred { seq, .. } => {
                ensure!(
                    bumps.insert(*seq, event).is_none(),
                    "seq {seq} answered twice"
                );
                ensure!(
                    (1..=final_seq).contains(seq),
                    "seq {seq} beyond the final {final_seq}"
                );
            }
            Op::Accepted { seq, lease, .. } => accepts.entry(*seq).or_default().push(lease),
            Op::Released { lease, .. } => releases.push(lease),
            Op::Checkpointed { lease, .. } => checkpoints.push(lease),
            Op::Acquired(_) => {}
        }
    }
    // Sequence numbers follow real time.
    for (sa, a) in &bumps {
        for (sb, b) in &bumps {
            if a.ended < b.started {
                ensure!(sa < sb, "seq {sa} ended before seq {sb} began");
            }
        }
    }

    // Rebuild the history segment by segment, checking each write's fence against the record
    // it applied to.
    let mut segments: Vec<Segment> = Vec::new();
    let mut model = Model::default();
    let mut holes: Vec<(ShardId, ZoneId, u64)> = Vec::new();
    for seq in 1..=final_seq {
        let before = close_segment(model, seq - 1, &accepts)?;
        let pre = before.end.clone();
        segments.push(before);
        model = match bumps.get(&seq).map(|e| &e.op) {
            Some(Op::Claimed { lease, .. }) => {
                let stale = pre.zone.as_ref() == Some(&lease.zone) && pre.epoch > lease.epoch;
                ensure!(!stale, "claim at seq {seq} under {lease:?} over {pre:?}");
                Model {
                    owner: Some(lease.owner.clone()),
                    zone: Some(lease.zone.clone()),
                    epoch: lease.epoch,
                    from: None,
                }
            }
            Some(Op::Transferred {
                from, to, to_zone, ..
            }) => {
                let fenced = pre.owner.as_ref() == Some(&from.owner)
                    && pre.zone.as_ref() == Some(&from.zone)
                    && pre.epoch != 0
                    && pre.epoch <= from.epoch;
                ensure!(fenced, "transfer at seq {seq} under {from:?} of {pre:?}");
                Model {
                    owner: Some(to.clone()),
                    zone: Some(to_zone.clone()),
                    epoch: 0,
                    from: Some(from.owner.clone()),
                }
            }
            Some(other) => return Err(format!("not a sequence bump: {other:?}")),
            None => {
                // A release: only the owner of an accepted record can have made it.
                let (Some(owner), Some(z)) = (pre.owner.clone(), pre.zone.clone()) else {
                    return Err(format!("seq {seq} bumped with no owner: {pre:?}"));
                };
                ensure!(
                    pre.epoch > 0,
                    "seq {seq}: release of a pending record {pre:?}"
                );
                holes.push((owner, z, pre.epoch));
                Model {
                    owner: None,
                    from: None,
                    ..pre
                }
            }
        };
    }
    let last = close_segment(model, final_seq, &accepts)?;
    let end = last.end.clone();
    segments.push(last);
    if let Some(seq) = accepts.keys().find(|seq| **seq > final_seq) {
        return Err(format!("accept at seq {seq} beyond the final {final_seq}"));
    }

    // The final record is what the history says.
    match record {
        None => ensure!(events.is_empty(), "writes succeeded but there is no record"),
        Some(record) => {
            let stored = Model {
                owner: record.owner.clone(),
                zone: record.zone.clone(),
                epoch: record.epoch,
                from: record.from.clone(),
            };
            ensure!(
                stored == end,
                "final record {stored:?}, history says {end:?}"
            );
        }
    }

    // Each bump no claim or transfer answered is one successful release, by the owner, under
    // a lease at or above the record's epoch.
    ensure!(
        holes.len() == releases.len(),
        "{} successful releases for {} unexplained sequence bumps",
        releases.len(),
        holes.len()
    );
    holes.sort_by_key(|h| h.2);
    let mut unmatched = releases;
    unmatched.sort_by_key(|l| l.epoch);
    for (owner, z, epoch) in &holes {
        let found = unmatched
            .iter()
            .position(|l| &l.owner == owner && &l.zone == z && l.epoch >= *epoch);
        let Some(i) = found else {
            return Err(format!(
                "no release by {owner} in {z} at an epoch >= {epoch}: {unmatched:?}"
            ));
        };
        unmatched.remove(i);
    }

    // A checkpoint wrote while its lease fenced the record.
    for lease in checkpoints {
        let possible = segments.iter().any(|s| {
            s.start.owner.as_ref() == Some(&lease.owner)
                && s.start.zone.as_ref() == Some(&lease.zone)
                && s.min_positive_epoch <= lease.epoch
        });
        ensure!(
            possible,
            "checkpoint under {lease:?} while no record was fenced by it"
        );
    }
    Ok(())
}

/// Checks a round's logs against the store's final state.
async fn check_round(store: &StoreHandle, seed: u64, events: &[Event]) {
    // Leases: per zone, distinct epochs, increasing in real time.
    let mut by_zone: HashMap<&ZoneId, Vec<(&Lease, &Event)>> = HashMap::new();
    for event in events {
        if let Op::Acquired(lease) = &event.op {
            by_zone.entry(&lease.zone).or_default().push((lease, event));
        }
    }
    for (z, acquired) in &by_zone {
        for (la, a) in acquired {
            for (lb, b) in acquired {
                if a.ended < b.started {
                    assert!(
                        la.epoch < lb.epoch,
                        "zone {z}: {la:?} then {lb:?}, seed {seed}"
                    );
                }
                if !std::ptr::eq(*la, *lb) {
                    assert_ne!(
                        la.epoch, lb.epoch,
                        "zone {z}: epoch issued twice, seed {seed}"
                    );
                }
            }
        }
    }

    // At most one owner per player, and the audit scan agrees with the records.
    let owned = store.owned_players().await.expect("owned_players");
    assert!(
        owned.windows(2).all(|w| w[0].player < w[1].player),
        "each player listed once, seed {seed}: {owned:?}"
    );
    for player in 1..=PLAYERS {
        let record = store
            .get_ownership(PlayerId(player))
            .await
            .expect("get_ownership");
        let listed = owned.iter().find(|r| r.player == PlayerId(player));
        match (&record, listed) {
            (Some(r), Some(l)) => assert_eq!(r, l, "seed {seed}"),
            (Some(r), None) => assert!(r.owner.is_none(), "owned but not listed, seed {seed}"),
            (None, Some(l)) => panic!("listed without a record: {l:?}, seed {seed}"),
            (None, None) => {}
        }
        let mine: Vec<&Event> = events
            .iter()
            .filter(|e| match &e.op {
                Op::Claimed { player: p, .. }
                | Op::Transferred { player: p, .. }
                | Op::Accepted { player: p, .. }
                | Op::Checkpointed { player: p, .. }
                | Op::Released { player: p, .. } => *p == player,
                Op::Acquired(_) => false,
            })
            .collect();
        if let Err(why) = check_player(&mine, record.as_ref()) {
            panic!("player {player}, seed {seed}: {why}");
        }
    }
}

async fn run_round(store: StoreHandle, seed: u64) -> usize {
    eprintln!("ownership_races: seed {seed} (MERIDIAN_SEED={seed} replays it)");
    let tasks: Vec<_> = (0..SHARDS.len())
        .map(|me| tokio::spawn(play(store.clone(), me, seed)))
        .collect();
    let mut events = Vec::new();
    for task in tasks {
        events.extend(task.await.expect("shard task"));
    }
    check_round(&store, seed, &events).await;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for event in &events {
        let kind = match event.op {
            Op::Acquired(_) => "acquired",
            Op::Claimed { .. } => "claimed",
            Op::Transferred { .. } => "transferred",
            Op::Accepted { .. } => "accepted",
            Op::Checkpointed { .. } => "checkpointed",
            Op::Released { .. } => "released",
        };
        *counts.entry(kind).or_default() += 1;
    }
    eprintln!("ownership_races: seed {seed}: successful calls {counts:?}");
    events.len()
}

fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var("MERIDIAN_SEED") {
        return vec![seed.parse().expect("MERIDIAN_SEED is a u64")];
    }
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut rng = Rng(base);
    (0..ROUNDS).map(|_| rng.next()).collect()
}

/// A long timeout: under load a slow call must not turn into an unknown outcome.
fn config(prefix: &str) -> StoreConfig {
    StoreConfig {
        prefix: prefix.to_owned(),
        op_timeout_ms: 10_000,
    }
}

/// Every round against the store at `url` (a server or a cluster URL list).
async fn rounds_on(url: &str) {
    let mut writes = 0;
    for (round, seed) in seeds().into_iter().enumerate() {
        // A fresh prefix per round: a fresh keyspace on the same server.
        let store = StoreHandle::open(url, &config(&format!("r{round}:")))
            .await
            .expect("connect");
        writes += run_round(store, seed).await;
    }
    assert!(writes > 0, "the rounds did something");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_interleavings_keep_ownership_fenced_on_redis() {
    let server = RedisServer::start().await.expect("start redis-server");
    rounds_on(&server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_interleavings_keep_ownership_fenced_on_a_redis_cluster() {
    let cluster = RedisCluster::start().await.expect("start a Redis Cluster");
    rounds_on(&cluster.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_interleavings_keep_ownership_fenced_in_memory() {
    let mut writes = 0;
    for seed in seeds() {
        let store: StoreHandle = MemoryStore::with_config(SystemClock, &config("mer:"))
            .expect("valid config")
            .into();
        writes += run_round(store, seed).await;
    }
    assert!(writes > 0, "the rounds did something");
}

/// The checker itself: a history with a write that broke the fence is caught.
#[test]
fn the_checker_catches_writes_that_broke_the_fence() {
    let now = Instant::now();
    let event = |op: Op| Event {
        op,
        started: now,
        ended: now,
    };
    let lease = |owner: usize, epoch: u64| Lease {
        zone: zone(0),
        owner: shard(owner),
        epoch,
    };
    let claim = |owner: usize, epoch: u64, seq: u64| {
        event(Op::Claimed {
            player: 1,
            lease: lease(owner, epoch),
            seq,
        })
    };
    let record = |owner: usize, epoch: u64, seq: u64| Ownership {
        player: PlayerId(1),
        owner: Some(shard(owner)),
        zone: Some(zone(0)),
        epoch,
        seq,
        from: None,
        state: None,
    };
    // Claims in the allowed order pass.
    let (first, second) = (claim(0, 3, 1), claim(1, 5, 2));
    assert_eq!(
        check_player(&[&first, &second], Some(&record(1, 5, 2))),
        Ok(())
    );
    // A claim under epoch 3 after one under epoch 5 in the same zone is caught.
    let (newer, stale) = (claim(1, 5, 1), claim(0, 3, 2));
    let caught = check_player(&[&newer, &stale], Some(&record(0, 3, 2)));
    assert!(caught.is_err_and(|why| why.contains("claim at seq 2")));
    // A checkpoint under a lease older than the record's epoch is caught.
    let checkpoint = event(Op::Checkpointed {
        player: 1,
        lease: lease(1, 4),
    });
    let caught = check_player(&[&newer, &checkpoint], Some(&record(1, 5, 1)));
    assert!(caught.is_err_and(|why| why.contains("checkpoint")));
    // A sequence bump nobody answered for is caught.
    let caught = check_player(&[&newer], Some(&record(1, 5, 2)));
    assert!(caught.is_err());
    // Sequence numbers against real time: the later call cannot have the lower number.
    let early = Event {
        started: now,
        ended: now,
        ..claim(1, 5, 2)
    };
    let late = Event {
        started: now + Duration::from_millis(1),
        ended: now + Duration::from_millis(2),
        ..claim(1, 6, 1)
    };
    let caught = check_player(&[&early, &late], Some(&record(1, 5, 2)));
    assert!(caught.is_err_and(|why| why.contains("ended before")));
}
