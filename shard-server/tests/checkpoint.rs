//! Checkpoints, with a real redis-server and real QUIC on loopback: the players' states are
//! written every interval and fenced by the lease epoch; a score is written before its client
//! hears of it; while Redis is down the shard keeps ticking and its checkpoint queue grows,
//! bounded, then flushes when Redis is back.

mod common;

use common::world::*;
use common::*;
use meridian_client::session::SessionEvent;
use meridian_cluster::Store;
use meridian_cluster::ownership::{Lease, PlayerState};
use meridian_protocol::PlayerId;
use meridian_shard::config::ShardConfig;
use meridian_shard::handoff::{ClusterLink, HandoffConfig};
use meridian_shard::metrics::ShardMetrics;
use meridian_shard::server::{self, ShardHandle, ShardTuning};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Shard `a` of the test world, checkpointing every `checkpoint_ms`; `pickups` pickups of
/// radius 10 (so that a walking player scores often); at most `queue` states queued.
async fn start(c: &Cluster, checkpoint_ms: u64, pickups: u32, queue: usize) -> ShardHandle {
    let cfg = ShardConfig {
        id: "shard-a".into(),
        zone: "a".into(),
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        zone_bounds: c.world.zone(&zone_id("a")).expect("zone a").bounds_string(),
        ticket_key: Some(KEY_HEX.into()),
        dev_cert: true,
        region: "here".into(),
        checkpoint_ms,
        ..ShardConfig::default()
    };
    let mut tuning = ShardTuning::from_config(&cfg).expect("tuning");
    tuning.sim.npcs = 0;
    tuning.sim.pickups = pickups;
    tuning.sim.pickup_radius = 10.0;
    let link = ClusterLink {
        registry: c.registry.clone(),
        world: c.world.clone(),
        handoff: HandoffConfig {
            lease_ttl: Duration::from_secs(2),
            checkpoint_queue: queue,
            ..handoff_config()
        },
    };
    server::start_in_world(&cfg, tuning, link)
        .await
        .expect("shard starts")
}

async fn saved(c: &Cluster, player: u64) -> Option<PlayerState> {
    c.store
        .get_ownership(PlayerId(player))
        .await
        .ok()
        .flatten()
        .and_then(|r| r.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn players_are_checkpointed_every_interval_and_a_stale_epoch_cannot_write() {
    let (_redis, c) = Cluster::start().await;
    // An earlier holder of the zone, gone: the shard's epoch is the second.
    let earlier = match c
        .store
        .acquire_lease(&zone_id("a"), &shard_id("shard-a"), Duration::from_secs(5))
        .await
        .expect("lease")
    {
        meridian_cluster::ownership::AcquireOutcome::Acquired(l) => l,
        held => panic!("{held:?}"),
    };
    assert!(c.store.release_lease(&earlier).await.expect("release"));
    let shard = start(&c, 200, 0, 1_000).await;
    let mut s = join_as(&shard, 1).await;
    assert!(wait_until(Duration::from_secs(3), || s.own_entity().is_some()).await);
    // Walk, then stand: the next checkpoint (within one interval plus a write) holds the spot.
    for _ in 0..15 {
        let _ = s.send_input(1.5, 1.0, 0);
        tokio::time::sleep(Duration::from_millis(34)).await;
    }
    for _ in 0..10 {
        let _ = s.send_input(0.0, 0.0, 0);
        tokio::time::sleep(Duration::from_millis(34)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let here = s.own_entity().expect("own entity").pos;
    let stood_at = tokio::time::Instant::now();
    let mut state = None;
    while stood_at.elapsed() < Duration::from_secs(2) {
        state = saved(&c, 1).await;
        if state.is_some_and(|st| dist(st.pos, here) < 0.5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let state = state.expect("a checkpoint");
    assert!(
        dist(state.pos, here) < 0.5,
        "checkpoint at {:?}, player at {here:?}",
        state.pos
    );
    assert!(
        stood_at.elapsed() < Duration::from_millis(600),
        "checkpoint took {:?} with a 200 ms interval",
        stood_at.elapsed()
    );
    let m = shard.metrics();
    assert!(ShardMetrics::get(&m.checkpoints_written) >= 1);
    assert_eq!(ShardMetrics::get(&m.checkpoints_refused), 0);
    assert_eq!(ShardMetrics::get(&m.lease_held), 1);

    // The fence: an older epoch of the same shard (a zombie's view) writes nothing.
    let lease = shard.lease().expect("lease");
    assert_eq!(lease.epoch, earlier.epoch + 1);
    let stale = Lease {
        epoch: earlier.epoch,
        ..lease.clone()
    };
    let forged = PlayerState {
        pos: [1.0, 1.0],
        ..state
    };
    let written = c
        .store
        .checkpoint_players(&stale, &[(PlayerId(1), forged)])
        .await
        .expect("checkpoint call");
    assert_eq!(written, vec![false], "a stale epoch cannot write");
    assert!(
        saved(&c, 1)
            .await
            .is_some_and(|st| dist(st.pos, [1.0, 1.0]) > 1.0),
        "the forged state was not written"
    );
    shard.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_score_is_written_before_the_client_hears_of_it() {
    let (mut redis, c) = Cluster::start().await;
    let shard = start(&c, 60_000, 4_000, 1_000).await;
    let mut s = join_as(&shard, 1).await;
    assert!(wait_until(Duration::from_secs(3), || s.own_entity().is_some()).await);
    // Walks back and forth across the pickups; every score event is checked against the
    // store at once (the periodic checkpoint is a minute away: only the commit writes).
    let mut checked = 0;
    let mut heading = 0.0f32;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while checked < 3 && tokio::time::Instant::now() < deadline {
        let _ = s.send_input(heading, 1.0, 0);
        heading += 0.05;
        if let Ok(Some(SessionEvent::Score { total, .. })) =
            tokio::time::timeout(Duration::from_millis(34), s.next_event()).await
        {
            let stored = saved(&c, 1).await.expect("a committed state").score;
            assert!(
                stored >= total,
                "the client heard of score {total} before the store held it ({stored})"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 3, "three score events within 10 s");

    // Redis goes away: the player keeps scoring in the simulation, but no score event reaches
    // the client until it is written.
    redis.stop();
    let before = ShardMetrics::get(&shard.metrics().checkpoint_failures);
    let outage = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < outage {
        let _ = s.send_input(heading, 1.0, 0);
        heading += 0.05;
        if let Ok(Some(SessionEvent::Score { total, .. })) =
            tokio::time::timeout(Duration::from_millis(34), s.next_event()).await
        {
            // Only writes that completed before the stop may still be on their way.
            assert!(
                tokio::time::Instant::now() + Duration::from_millis(1_700) < outage,
                "score {total} told while Redis was down"
            );
        }
    }
    assert!(ShardMetrics::get(&shard.metrics().checkpoint_failures) > before);
    assert!(ShardMetrics::get(&shard.metrics().checkpoint_queue_depth) > 0);
    shard.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn during_a_redis_outage_the_shard_ticks_queues_bounded_and_flushes_after() {
    let (mut redis, c) = Cluster::start().await;
    let shard = start(&c, 100, 0, 6).await;
    let mut sessions = Vec::new();
    for player in 1..=3 {
        let s = join_as(&shard, player).await;
        assert!(wait_until(Duration::from_secs(3), || s.own_entity().is_some()).await);
        sessions.push(s);
    }
    assert!(
        wait_until(Duration::from_secs(2), || {
            ShardMetrics::get(&shard.metrics().checkpoints_written) >= 3
        })
        .await
    );

    redis.stop();
    let ticks = ShardMetrics::get(&shard.metrics().ticks);
    let m = shard.metrics();
    assert!(
        wait_until(Duration::from_secs(3), || {
            ShardMetrics::get(&m.checkpoints_dropped) > 0
        })
        .await,
        "batches are dropped once the queue is full"
    );
    // Bounded: at most 6 states (two batches of three) wait.
    for _ in 0..10 {
        let depth = ShardMetrics::get(&m.checkpoint_queue_depth);
        assert!((1..=6).contains(&depth), "queue depth {depth}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ShardMetrics::get(&m.checkpoint_failures) > 0);
    assert!(
        wait_until(Duration::from_secs(5), || {
            ShardMetrics::get(&m.ticks) > ticks + 30
        })
        .await,
        "the shard keeps ticking"
    );
    let depth = ShardMetrics::get(&m.checkpoint_queue_depth);
    assert!((1..=6).contains(&depth), "queue depth {depth}");
    for s in &sessions {
        assert!(s.own_entity().is_some(), "clients stay connected");
    }

    // Redis comes back (empty): the lease is taken again, the players claimed again, and the
    // queue flushes by itself.
    redis.restart().await.expect("redis restarts");
    assert!(
        wait_until(Duration::from_secs(8), || {
            ShardMetrics::get(&m.checkpoint_queue_depth) == 0
        })
        .await,
        "the queue flushes"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    for player in 1..=3 {
        loop {
            let rec = c.store.get_ownership(PlayerId(player)).await.ok().flatten();
            if rec
                .as_ref()
                .is_some_and(|r| r.state.is_some() && r.owner.as_ref() == Some(&shard.shard))
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "player {player} checkpointed after the outage: {rec:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for s in &sessions {
        assert!(s.own_entity().is_some(), "clients are still served");
    }
    shard.shutdown().await;
}
