//! Failover and drain, with a real redis-server and real QUIC on loopback: a standby takes the
//! zone of a shard that died (its lease expired) and restores its players from their
//! checkpoints; a client comes back with a fresh join ticket and resumes where it was; a zombie
//! owner (stalled while its lease expired) can write nothing and stops serving; a drain hands
//! the zone to the standby at once; `POST /drain` wants the admin token.

mod common;

use common::world::*;
use common::*;
use meridian_client::session::ShardSession;
use meridian_cluster::Store;
use meridian_cluster::audit::HeldState;
use meridian_cluster::ownership::PlayerState;
use meridian_protocol::PlayerId;
use meridian_protocol::control::KickReason;
use meridian_protocol::handshake::RejectReason;
use meridian_protocol::quic::QuicConfig;
use meridian_shard::config::ShardConfig;
use meridian_shard::handoff::HandoffConfig;
use meridian_shard::metrics::ShardMetrics;
use meridian_shard::server::{self, ShardHandle, ShardTuning};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Lease TTL of these tests: a dead shard's zone is free within a second.
const LEASE_TTL: Duration = Duration::from_millis(900);

fn handoff() -> HandoffConfig {
    HandoffConfig {
        lease_ttl: LEASE_TTL,
        ..handoff_config()
    }
}

/// The configuration of shard `id` on zone `a` of the test world (or standing by for it).
fn config(c: &Cluster, id: &str, standby: bool) -> ShardConfig {
    ShardConfig {
        id: id.into(),
        zone: "a".into(),
        standby_for: standby.then(|| "a".to_owned()),
        redis: Some("redis://127.0.0.1:1".into()),
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        zone_bounds: c.world.zone(&zone_id("a")).expect("zone a").bounds_string(),
        ticket_key: Some(KEY_HEX.into()),
        dev_cert: true,
        admin_listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
        region: "here".into(),
        checkpoint_ms: 100,
        drain_deadline_ms: 5_000,
        ..ShardConfig::default()
    }
}

async fn start(c: &Cluster, cfg: ShardConfig) -> ShardHandle {
    let mut tuning = ShardTuning::from_config(&cfg).expect("tuning");
    tuning.sim.npcs = 0;
    tuning.sim.pickups = 0;
    let link = meridian_shard::handoff::ClusterLink {
        registry: c.registry.clone(),
        world: c.world.clone(),
        handoff: handoff(),
    };
    server::start_in_world(&cfg, tuning, link)
        .await
        .expect("shard starts in the world")
}

/// Starts a standby for zone `a`; the task completes once it has taken the zone.
fn standby(c: &Cluster, id: &str) -> tokio::task::JoinHandle<ShardHandle> {
    let c = c.clone();
    let cfg = config(&c, id, true);
    tokio::spawn(async move { start(&c, cfg).await })
}

/// Walks the player east for `walk`, then stops it and waits until it stands still; returns
/// where it stands.
async fn walk_then_stop(s: &mut ShardSession, walk: Duration) -> [f32; 2] {
    let deadline = tokio::time::Instant::now() + walk;
    while tokio::time::Instant::now() < deadline {
        let _ = s.send_input(0.0, 1.0, 0);
        tokio::time::sleep(Duration::from_millis(34)).await;
    }
    for _ in 0..10 {
        let _ = s.send_input(0.0, 0.0, 0);
        tokio::time::sleep(Duration::from_millis(34)).await;
    }
    let mut last = s.own_entity().expect("own entity").pos;
    assert!(
        wait_until(Duration::from_secs(3), || {
            let now = s.own_entity().map(|e| e.pos);
            let still = now == Some(last);
            if let Some(p) = now {
                last = p;
            }
            still
        })
        .await,
        "the player stops"
    );
    last
}

async fn saved(c: &Cluster, player: u64) -> Option<PlayerState> {
    c.store
        .get_ownership(PlayerId(player))
        .await
        .expect("record")
        .and_then(|r| r.state)
}

/// Waits until the player's checkpoint holds `pos` (within a unit).
async fn checkpointed_at(c: &Cluster, player: u64, pos: [f32; 2]) -> PlayerState {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(s) = saved(c, player).await
            && dist(s.pos, pos) < 1.0
        {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "checkpoint at {pos:?} within 3 s; saved {:?}",
            saved(c, player).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn held(shard: &ShardHandle, player: u64) -> Option<HeldState> {
    let addr = shard.admin_addr.expect("admin endpoint");
    let players: meridian_cluster::audit::ShardPlayers =
        reqwest::get(format!("http://{addr}/players"))
            .await
            .expect("admin answers")
            .json()
            .await
            .expect("players JSON");
    players
        .players
        .iter()
        .find(|h| h.player == PlayerId(player))
        .map(|h| h.state)
}

async fn record_of(c: &Cluster, id: &str) -> Option<meridian_cluster::store::ShardRecord> {
    c.store
        .live_shards()
        .await
        .expect("registry")
        .into_iter()
        .find(|s| s.record.id.as_str() == id)
        .map(|s| s.record)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_takes_over_a_dead_shard_and_its_players_resume_where_they_were() {
    let (_redis, c) = Cluster::start().await;
    let owner = start(&c, config(&c, "owner", false)).await;
    let owner_epoch = owner.lease().expect("owner's lease").epoch;
    let standby = standby(&c, "standby");
    // While it stands by, it is listed as draining: no lobby routes players to it.
    let mut listed = None;
    for _ in 0..40 {
        listed = record_of(&c, "standby").await;
        if listed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed = listed.expect("the standby is in the registry");
    assert!(
        listed.draining,
        "a standby is listed as draining: {listed:?}"
    );
    // Its admin endpoint serves while it waits: alive, not ready, holding nobody (the audit
    // reads that), and the same address serves the full endpoint once it takes a zone.
    let admin = listed
        .admin_addr
        .clone()
        .expect("a standby lists its admin address");
    let get = |path: &str| reqwest::get(format!("http://{admin}{path}"));
    let health = get("/healthz").await.expect("healthz answers");
    assert_eq!(health.status(), 200);
    let ready = get("/readyz").await.expect("readyz answers");
    assert_eq!(ready.status(), 503);
    let why: serde_json::Value = ready.json().await.expect("readyz JSON");
    assert!(
        why["error"]
            .as_str()
            .is_some_and(|e| e.contains("standing by for zones a")),
        "{why}"
    );
    let holds: meridian_cluster::audit::ShardPlayers = get("/players")
        .await
        .expect("players answers")
        .json()
        .await
        .expect("players JSON");
    assert!(holds.players.is_empty(), "{holds:?}");
    assert_eq!(holds.shard.as_str(), "standby");

    let mut s = join_as(&owner, 1).await;
    assert!(wait_until(Duration::from_secs(3), || s.own_entity().is_some()).await);
    let stood = walk_then_stop(&mut s, Duration::from_millis(600)).await;
    let state = checkpointed_at(&c, 1, stood).await;

    // The owner dies: nothing released, its lease expires.
    owner.crash().await;
    let crashed_at = tokio::time::Instant::now();
    let standby = tokio::time::timeout(Duration::from_secs(10), standby)
        .await
        .expect("the standby takes the zone within 10 s")
        .expect("standby task");
    eprintln!(
        "takeover {:?} after the crash (lease TTL {LEASE_TTL:?})",
        crashed_at.elapsed()
    );
    assert_eq!(
        standby.admin_addr.map(|a| a.to_string()),
        Some(admin.clone()),
        "the full endpoint takes the standby's admin socket over"
    );
    let status: serde_json::Value = reqwest::get(format!("http://{admin}/status"))
        .await
        .expect("status answers")
        .json()
        .await
        .expect("status JSON");
    assert_eq!(status["zone"], "a", "{status}");
    let lease = standby.lease().expect("the standby's lease");
    assert!(
        lease.epoch > owner_epoch,
        "{lease:?} after epoch {owner_epoch}"
    );
    let rec = c
        .store
        .get_ownership(PlayerId(1))
        .await
        .expect("record")
        .expect("exists");
    assert_eq!(rec.owner.as_ref(), Some(&standby.shard), "{rec:?}");
    assert_eq!(rec.epoch, lease.epoch, "{rec:?}");
    assert_eq!(held(&standby, 1).await, Some(HeldState::Incoming));
    // Serving now: listed normally for zone a.
    assert!(
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if record_of(&c, "standby")
                    .await
                    .is_some_and(|r| !r.draining && r.zone.as_str() == "a")
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .is_ok(),
        "the standby is listed as serving zone a"
    );

    // The client comes back with a fresh join ticket for the standby and resumes.
    let back = join_as(&standby, 1).await;
    assert!(wait_until(Duration::from_secs(3), || back.own_entity().is_some()).await);
    let pos = back.own_entity().expect("own entity").pos;
    assert!(
        dist(pos, state.pos) < 1.0,
        "resumed at {pos:?}, checkpointed at {:?}",
        state.pos
    );
    assert_eq!(held(&standby, 1).await, Some(HeldState::Active));
    standby.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_zombie_owner_cannot_write_and_stops_serving() {
    let (_redis, c) = Cluster::start().await;
    let owner = start(&c, config(&c, "owner", false)).await;
    let standby = standby(&c, "standby");
    let mut s = join_as(&owner, 1).await;
    assert!(wait_until(Duration::from_secs(3), || s.own_entity().is_some()).await);
    let stood = walk_then_stop(&mut s, Duration::from_millis(300)).await;
    checkpointed_at(&c, 1, stood).await;

    // The owner stalls: it keeps simulating and checkpointing, but renews nothing.
    owner.set_lease_keeping_paused(true);
    let standby = tokio::time::timeout(Duration::from_secs(10), standby)
        .await
        .expect("the standby takes the zone")
        .expect("standby task");
    let new_epoch = standby.lease().expect("lease").epoch;
    // The zombie still believes it holds the zone; the player walks, the zombie checkpoints,
    // and every write is refused by the fence.
    let refused_before = ShardMetrics::get(&owner.metrics().checkpoints_refused);
    let _ = walk_then_stop(&mut s, Duration::from_millis(300)).await;
    assert!(
        wait_until(Duration::from_secs(3), || {
            ShardMetrics::get(&owner.metrics().checkpoints_refused) > refused_before
        })
        .await,
        "the zombie's checkpoints are refused"
    );
    let rec = c
        .store
        .get_ownership(PlayerId(1))
        .await
        .expect("record")
        .expect("exists");
    assert_eq!(rec.owner.as_ref(), Some(&standby.shard));
    assert_eq!(rec.epoch, new_epoch);
    let restored = rec.state.expect("restored state");
    assert!(
        dist(restored.pos, stood) < 1.0,
        "the record keeps the state the standby restored ({:?}), not the zombie's later ones",
        restored.pos
    );

    // It wakes up: it learns it lost the zone and sends its client back to the lobby.
    owner.set_lease_keeping_paused(false);
    let kick = next_kick(&mut s, Duration::from_secs(5))
        .await
        .expect("the zombie kicks its client");
    assert_eq!(kick.reason, KickReason::ZoneLost, "{kick:?}");
    assert!(owner.lease().is_none());
    // And admits nobody any more.
    let again = ShardSession::connect(
        &endpoint(),
        owner.local_addr,
        owner.cert_sha256,
        ticket_for(&owner, 2),
        &QuicConfig::default(),
    )
    .await;
    match again {
        Err(meridian_client::session::SessionError::Rejected(r)) => {
            assert!(
                matches!(r.reason, RejectReason::Unavailable { .. }),
                "{r:?}"
            );
        }
        Err(other) => panic!("expected a refusal, got {other:?}"),
        Ok(_) => panic!("a zombie admitted a player"),
    }
    owner.shutdown().await;
    standby.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drain_checkpoints_hints_releases_and_the_standby_takes_over_at_once() {
    let (_redis, c) = Cluster::start().await;
    let owner = start(&c, config(&c, "owner", false)).await;
    let owner_epoch = owner.lease().expect("lease").epoch;
    let standby = standby(&c, "standby");
    let mut s = join_as(&owner, 1).await;
    assert!(wait_until(Duration::from_secs(3), || s.own_entity().is_some()).await);
    // The drain's own checkpoint saves the latest position, whatever the interval.
    let stood = walk_then_stop(&mut s, Duration::from_millis(400)).await;

    let report = owner.drain().await;
    eprintln!("drain took {:?}: {report:?}", report.took);
    assert!(report.within_deadline, "{report:?}");
    assert!(report.flushed && report.lease_released, "{report:?}");
    // Released, not left to expire: free, or already the standby's.
    let lease_now = c.store.get_lease(&zone_id("a")).await.expect("lease read");
    assert!(
        lease_now
            .as_ref()
            .is_none_or(|l| l.owner.as_str() == "standby"),
        "{lease_now:?}"
    );
    assert_eq!(report.players, 1, "{report:?}");
    let kick = next_kick(&mut s, Duration::from_secs(2))
        .await
        .expect("the client is told");
    assert_eq!(kick.reason, KickReason::Draining, "{kick:?}");
    let rec = c
        .store
        .get_ownership(PlayerId(1))
        .await
        .expect("record")
        .expect("exists");
    let state = rec.state.expect("checkpointed");
    assert!(dist(state.pos, stood) < 1.0, "{state:?} vs {stood:?}");

    // The lease is free at once: the standby takes it on its next try (a third of the TTL).
    let standby = tokio::time::timeout(Duration::from_secs(5), standby)
        .await
        .expect("the standby takes the zone")
        .expect("standby task");
    assert!(standby.lease().expect("lease").epoch > owner_epoch);
    let back = join_as(&standby, 1).await;
    assert!(wait_until(Duration::from_secs(3), || back.own_entity().is_some()).await);
    let pos = back.own_entity().expect("own entity").pos;
    assert!(
        dist(pos, stood) < 1.0,
        "resumed at {pos:?}, left at {stood:?}"
    );
    standby.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn post_drain_wants_the_admin_token_and_then_drains() {
    let (_redis, c) = Cluster::start().await;
    let token = "drain-token-0123456789abcdef";
    let cfg = ShardConfig {
        admin_token: Some(token.into()),
        ..config(&c, "owner", false)
    };
    let owner = start(&c, cfg).await;
    let url = format!("http://{}/drain", owner.admin_addr.expect("admin"));
    let http = reqwest::Client::new();
    let none = http.post(&url).send().await.expect("answer");
    assert_eq!(none.status(), 401);
    let body: serde_json::Value = none.json().await.expect("JSON error");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("Authorization")),
        "{body}"
    );
    let wrong = http
        .post(&url)
        .bearer_auth("drain-token-0123456789abcdeX")
        .send()
        .await
        .expect("answer");
    assert_eq!(wrong.status(), 401);
    let body: serde_json::Value = wrong.json().await.expect("JSON error");
    assert_eq!(body["error"], "wrong admin token");
    // Not asked yet.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), owner.drain_requested())
            .await
            .is_err()
    );
    let right = http
        .post(&url)
        .bearer_auth(token)
        .send()
        .await
        .expect("answer");
    assert_eq!(right.status(), 202);
    let body: serde_json::Value = right.json().await.expect("JSON");
    assert_eq!(body["draining"], true);
    tokio::time::timeout(Duration::from_secs(1), owner.drain_requested())
        .await
        .expect("the drain switch is on");
    let report = owner.drain().await;
    assert!(
        report.lease_released && report.within_deadline,
        "{report:?}"
    );
    assert_eq!(
        c.store.get_lease(&zone_id("a")).await.expect("lease read"),
        None
    );

    // Without a token the route is off.
    let plain = start(&c, config(&c, "plain", false)).await;
    let off = http
        .post(format!("http://{}/drain", plain.admin_addr.expect("admin")))
        .bearer_auth(token)
        .send()
        .await
        .expect("answer");
    assert_eq!(off.status(), 404);
    let body: serde_json::Value = off.json().await.expect("JSON error");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("--admin-token")),
        "{body}"
    );
    plain.shutdown().await;
}
