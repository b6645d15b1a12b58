//! Handoff between two shards over real QUIC on loopback and a real redis-server: a player
//! walks across the border and keeps playing on the neighbour; ownership in Redis follows,
//! fenced by the zone leases. Bad tickets, a client that never arrives, and Redis going away
//! in the middle.

mod common;

use common::world::*;
use common::*;
use meridian_client::session::{SessionError, SessionEvent, ShardSession};
use meridian_cluster::Store;
use meridian_cluster::audit::HeldState;
use meridian_cluster::ownership::{HandoffNotice, PlayerState, TransferOutcome};
use meridian_cluster::store::StoreHandle;
use meridian_cluster::testing::{RedisCluster, RedisServer};
use meridian_protocol::PlayerId;
use meridian_protocol::handshake::RejectReason;
use meridian_protocol::quic::QuicConfig;
use meridian_protocol::ticket::TicketKind;
use meridian_shard::server::ShardHandle;
use std::time::Duration;

struct Pair {
    redis: RedisServer,
    store: StoreHandle,
    a: ShardHandle,
    b: ShardHandle,
}

async fn pair() -> Pair {
    let (redis, c) = Cluster::start().await;
    let a = c.shard("a", handoff_config(), None).await;
    let b = c.shard("b", handoff_config(), None).await;
    Pair {
        redis,
        store: c.store,
        a,
        b,
    }
}

/// Hands `player` from a to b on the store, as shard a would (claim, then transfer with
/// `state`); returns the transfer sequence.
async fn hand_over(p: &Pair, player: PlayerId, state: &PlayerState) -> u64 {
    let lease_a = p.a.lease().expect("a's lease");
    p.store.claim_player(player, &lease_a).await.expect("claim");
    match p
        .store
        .transfer_player(player, &lease_a, &p.b.shard, &p.b.zone, state)
        .await
        .expect("transfer")
    {
        TransferOutcome::Transferred { seq } => seq,
        refused => panic!("transfer refused: {refused:?}"),
    }
}

fn pos(s: &ShardSession) -> Option<[f32; 2]> {
    s.own_entity().map(|e| e.pos)
}

/// Walks `s` toward heading (radians) until `done` or `timeout`; one input per 34 ms.
async fn walk(
    s: &mut ShardSession,
    heading: f32,
    timeout: Duration,
    mut done: impl FnMut(&ShardSession) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if done(s) {
            return true;
        }
        let _ = s.send_input(heading, 1.0, 0);
        tokio::time::sleep(Duration::from_millis(34)).await;
    }
    done(s)
}

async fn held(shard: &ShardHandle, player: u64) -> Option<HeldState> {
    let addr = shard.admin_addr.expect("admin endpoint");
    let body = reqwest::get(format!("http://{addr}/players"))
        .await
        .expect("admin answers")
        .text()
        .await
        .expect("body");
    let players: meridian_cluster::audit::ShardPlayers =
        serde_json::from_str(&body).expect("players JSON");
    players
        .players
        .iter()
        .find(|h| h.player == PlayerId(player))
        .map(|h| h.state)
}

/// The player crosses east into `b` and back west into `a`: the client follows by itself on
/// a connection opened early, ownership in Redis follows with each shard's lease epoch, and
/// exactly one shard holds the player afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn player_walks_across_and_back() {
    let p = pair().await;
    walk_across_and_back(&p.store, &p.a, &p.b).await;
    drop(p.redis);
}

/// The same walk with the shared state on a 3-master Redis Cluster (`--redis` given a list of
/// node URLs): the transfer scripts, the inbox streams and the ghost channels work across its
/// nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn player_walks_across_and_back_on_a_redis_cluster() {
    let redis = RedisCluster::start().await.expect("a Redis Cluster starts");
    let c = Cluster::start_on(&redis.url()).await;
    let a = c.shard("a", handoff_config(), None).await;
    let b = c.shard("b", handoff_config(), None).await;
    walk_across_and_back(&c.store, &a, &b).await;
    drop(redis);
}

async fn walk_across_and_back(store: &StoreHandle, a: &ShardHandle, b: &ShardHandle) {
    let ep = endpoint();
    let player = 4242;
    let mut s = join(&ep, a, player).await;
    assert_eq!(s.welcome().shard, a.shard);
    let owner = store.get_ownership(PlayerId(player)).await.expect("read");
    let owner = owner.expect("claimed at join");
    assert_eq!(owner.owner, Some(a.shard.clone()));
    assert_eq!(owner.epoch, a.lease().expect("lease").epoch);

    let east = walk(&mut s, 0.0, Duration::from_secs(30), |s| {
        s.welcome().shard == b.shard
    })
    .await;
    assert!(east, "the session moved to shard b (at {:?})", pos(&s));
    let stats = s.stats();
    assert_eq!(stats.handoffs, 1);
    assert!(
        stats.warm_connections >= 1,
        "b was connected to before the handoff"
    );
    // Snapshots from b show the player just past the border.
    let arrived = walk(&mut s, 0.0, Duration::from_secs(5), |s| {
        pos(s).is_some_and(|p| p[0] > 200.0)
    })
    .await;
    assert!(arrived, "b's snapshots show the player in b: {:?}", pos(&s));
    let rec = store
        .get_ownership(PlayerId(player))
        .await
        .expect("read")
        .expect("record");
    assert_eq!(rec.owner, Some(b.shard.clone()));
    assert_eq!(rec.zone, Some(b.zone.clone()));
    assert_eq!(
        rec.epoch,
        b.lease().expect("lease").epoch,
        "b accepted the transfer"
    );
    assert_eq!(held(b, player).await, Some(HeldState::Active));
    assert_eq!(held(a, player).await, None, "a let the player go");

    let mut handed = false;
    while let Some(ev) = s.try_event() {
        if let SessionEvent::HandedOff {
            from, to, blackout, ..
        } = ev
        {
            assert_eq!((from, to), (a.shard.clone(), b.shard.clone()));
            assert!(blackout < Duration::from_secs(2), "blackout {blackout:?}");
            handed = true;
        }
    }
    assert!(handed, "the game was told of the handoff");

    let west = walk(&mut s, std::f32::consts::PI, Duration::from_secs(30), |s| {
        s.welcome().shard == a.shard
    })
    .await;
    assert!(west, "back on a (at {:?})", pos(&s));
    let rec = store
        .get_ownership(PlayerId(player))
        .await
        .expect("read")
        .expect("record");
    assert_eq!(rec.owner, Some(a.shard.clone()));
    assert!(
        rec.seq >= 3,
        "join, transfer, transfer back: seq {}",
        rec.seq
    );
    s.leave().await;
    // Leaving releases ownership (state kept).
    let released = wait_until(Duration::from_secs(5), || true).await;
    assert!(released);
    let mut owner = Some(a.shard.clone());
    for _ in 0..50 {
        owner = store
            .get_ownership(PlayerId(player))
            .await
            .expect("read")
            .and_then(|r| r.owner);
        if owner.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(owner, None, "released when the player left");
}

/// A forged handoff ticket, a genuine one for a player nobody hands over, and a replayed one
/// are refused with reasons; a genuine transfer admits the player once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoff_tickets_are_checked() {
    let p = pair().await;
    let ep = endpoint();
    let quic = QuicConfig::default();
    let connect =
        |ticket| ShardSession::connect(&ep, p.b.local_addr, p.b.cert_sha256, ticket, &quic);
    // Forged: signed with another key.
    let forged = ticket(
        &meridian_protocol::ticket::TicketKey::generate(),
        TicketKind::Handoff,
        &p.b.shard,
        &p.b.zone,
        7,
        now_ms() + 10_000,
    );
    match connect(forged).await {
        Err(SessionError::Rejected(r)) => assert_eq!(r.reason, RejectReason::BadTicket),
        other => panic!("forged ticket admitted: {:?}", other.map(|s| s.welcome())),
    }
    // Genuine signature, but nobody handed player 8 to b.
    let unoffered = ticket(
        &key(),
        TicketKind::Handoff,
        &p.b.shard,
        &p.b.zone,
        8,
        now_ms() + 10_000,
    );
    match connect(unoffered).await {
        Err(SessionError::Rejected(r)) => {
            assert_eq!(r.reason, RejectReason::BadTicket);
            assert!(r.detail.contains("not being handed"), "{}", r.detail);
        }
        other => panic!(
            "unoffered handoff admitted: {:?}",
            other.map(|s| s.welcome())
        ),
    }
    // A real transfer of player 9 from a to b, done on the store as a would.
    let state = PlayerState {
        pos: [203.0, 50.0],
        vel: [8.0, 0.0],
        score: 30,
        last_input: 12,
    };
    hand_over(&p, PlayerId(9), &state).await;
    let real = ticket(
        &key(),
        TicketKind::Handoff,
        &p.b.shard,
        &p.b.zone,
        9,
        now_ms() + 10_000,
    );
    let s = connect(real.clone())
        .await
        .expect("the handed player is admitted");
    assert_eq!(s.welcome().shard, p.b.shard);
    // The same ticket again: replay.
    match connect(real).await {
        Err(SessionError::Rejected(r)) => {
            assert_eq!(r.reason, RejectReason::BadTicket);
            assert!(
                r.detail.contains("replay") || r.detail.contains("used"),
                "{}",
                r.detail
            );
        }
        other => panic!("replayed ticket admitted: {:?}", other.map(|s| s.welcome())),
    }
    // The arrival spawned where a left it, with its score.
    let at = walk_still(&s).await;
    assert!((at[0] - 203.0).abs() < 3.0, "spawned at the border: {at:?}");
    drop(p.redis);
}

async fn walk_still(s: &ShardSession) -> [f32; 2] {
    for _ in 0..100 {
        if let Some(p) = pos(s) {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    panic!("no snapshot showing the player");
}

/// A notice arrives but the client never does: the new owner spawns the player, keeps it for
/// the grace period, then saves it and lets go; a repeated notice spawns nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn player_whose_client_never_arrives_is_saved_and_released() {
    let p = pair().await;
    let player = PlayerId(77);
    let state = PlayerState {
        pos: [205.0, 80.0],
        vel: [0.0, 0.0],
        score: 5,
        last_input: 3,
    };
    let seq = hand_over(&p, player, &state).await;
    let notice = HandoffNotice {
        player,
        seq,
        from: p.a.shard.clone(),
        from_zone: p.a.zone.clone(),
        to_zone: p.b.zone.clone(),
        state,
    };
    p.store
        .send_handoff(&p.b.shard, &notice)
        .await
        .expect("notice");
    p.store
        .send_handoff(&p.b.shard, &notice)
        .await
        .expect("duplicate notice");
    let mut seen = None;
    for _ in 0..50 {
        seen = held(&p.b, 77).await;
        if seen.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, Some(HeldState::Incoming), "spawned from the notice");
    // Grace is 1 s; the check runs once a second.
    let mut owner = Some(p.b.shard.clone());
    for _ in 0..60 {
        let rec = p
            .store
            .get_ownership(player)
            .await
            .expect("read")
            .expect("record");
        owner = rec.owner.clone();
        if owner.is_none() {
            let saved = rec.state.expect("state saved");
            assert!((saved.pos[0] - 205.0).abs() < 1.0, "{saved:?}");
            assert_eq!(saved.score, 5);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(owner, None, "released after the grace period");
    assert_eq!(held(&p.b, 77).await, None);
    let spawned =
        p.b.metrics()
            .handoffs_in
            .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(spawned, 1, "one arrival despite two notices");
    drop(p.redis);
}

/// Redis goes away while a player walks into the border: the border holds (no handoff, no
/// partial state), the player keeps playing on a; once Redis is back (empty: it persisted
/// nothing) the shards take their leases again, claim their players again, and the crossing
/// goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn border_holds_while_redis_is_away_and_opens_when_it_returns() {
    let mut p = pair().await;
    let ep = endpoint();
    let player = 31;
    let mut s = join(&ep, &p.a, player).await;
    // Up to 20 units from the border.
    let near = walk(&mut s, 0.0, Duration::from_secs(20), |s| {
        pos(s).is_some_and(|p| p[0] > 180.0)
    })
    .await;
    assert!(near, "walked near the border: {:?}", pos(&s));
    p.redis.stop();
    // Borders close once the neighbour lookups fail.
    tokio::time::sleep(Duration::from_secs(2)).await;
    walk(&mut s, 0.0, Duration::from_secs(3), |_| false).await;
    assert_eq!(
        s.welcome().shard,
        p.a.shard,
        "no handoff without shared state"
    );
    let x = pos(&s).expect("position")[0];
    assert!(x <= 200.0 + 2.5, "the border held: x {x}");
    assert!(s.is_open(), "still playing on a");
    p.redis.restart().await.expect("redis restarts");
    let crossed = walk(&mut s, 0.0, Duration::from_secs(30), |s| {
        s.welcome().shard == p.b.shard
    })
    .await;
    assert!(crossed, "handed off once Redis is back: at {:?}", pos(&s));
    let rec = p
        .store
        .get_ownership(PlayerId(player))
        .await
        .expect("read")
        .expect("record");
    assert_eq!(rec.owner, Some(shard_id("shard-b")));
}

/// A handoff refused for a passing reason (Redis did not answer in time) leaves the ticket
/// usable: the same ticket is admitted once Redis answers again, instead of being refused as
/// a replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_refused_as_unavailable_can_be_presented_again() {
    let p = pair().await;
    let state = PlayerState {
        pos: [204.0, 60.0],
        vel: [0.0, 0.0],
        score: 0,
        last_input: 0,
    };
    hand_over(&p, PlayerId(12), &state).await;
    let t = ticket(
        &key(),
        TicketKind::Handoff,
        &p.b.shard,
        &p.b.zone,
        12,
        now_ms() + 20_000,
    );
    // Redis stops answering for 2 s: b's acceptance times out (500 ms).
    let paused = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &p.redis.port().to_string(),
            "CLIENT",
            "PAUSE",
            "2000",
            "ALL",
        ])
        .output()
        .expect("redis-cli runs (scripts/test.sh installs redis-tools)");
    assert!(paused.status.success(), "{paused:?}");
    let ep = endpoint();
    let quic = QuicConfig::default();
    match ShardSession::connect(&ep, p.b.local_addr, p.b.cert_sha256, t.clone(), &quic).await {
        Err(SessionError::Rejected(r)) => assert!(
            matches!(r.reason, RejectReason::Unavailable { .. }),
            "{r:?}"
        ),
        other => panic!(
            "admitted while Redis was paused: {:?}",
            other.map(|s| s.welcome())
        ),
    }
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let s = ShardSession::connect(&ep, p.b.local_addr, p.b.cert_sha256, t, &quic)
        .await
        .expect("the same ticket is admitted once Redis answers");
    assert_eq!(s.welcome().shard, p.b.shard);
}

/// Players near the border see each other across it: each shard shows the other's border
/// entities as ghosts, where they are, and drops them once they walk away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_see_each_other_across_the_border() {
    let p = pair().await;
    let ep = endpoint();
    let mut west = join(&ep, &p.a, 501).await;
    let mut east = join(&ep, &p.b, 502).await;
    let near_a = walk(&mut west, 0.0, Duration::from_secs(20), |s| {
        pos(s).is_some_and(|p| p[0] > 185.0)
    })
    .await;
    let near_b = walk(
        &mut east,
        std::f32::consts::PI,
        Duration::from_secs(20),
        |s| pos(s).is_some_and(|p| p[0] < 215.0),
    )
    .await;
    assert!(
        near_a && near_b,
        "both near the border: {:?} {:?}",
        pos(&west),
        pos(&east)
    );
    // Standing still (inputs keep the snapshots acknowledged), each sees one other player.
    let other = |s: &ShardSession| {
        let me = s.entity();
        s.entities()
            .into_iter()
            .filter(|e| e.kind == meridian_protocol::snapshot::EntityKind::Player && e.id != me)
            .map(|e| e.pos)
            .collect::<Vec<_>>()
    };
    let mut seen = (Vec::new(), Vec::new());
    for _ in 0..100 {
        let _ = west.send_input(0.0, 0.0, 0);
        let _ = east.send_input(0.0, 0.0, 0);
        seen = (other(&west), other(&east));
        if seen.0.len() == 1 && seen.1.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(34)).await;
    }
    let (from_west, from_east) = seen;
    assert_eq!(
        from_west.len(),
        1,
        "the west player sees the east one as a ghost"
    );
    assert_eq!(
        from_east.len(),
        1,
        "the east player sees the west one as a ghost"
    );
    let (w, e) = (pos(&west).expect("west pos"), pos(&east).expect("east pos"));
    assert!(
        (from_east[0][0] - w[0]).abs() < 3.0,
        "ghost of west at {:?}, west at {w:?}",
        from_east[0]
    );
    assert!(
        (from_west[0][0] - e[0]).abs() < 3.0,
        "ghost of east at {:?}, east at {e:?}",
        from_west[0]
    );
    // The east player walks away east, out of the band: its ghost disappears on a.
    let gone = walk(&mut east, 0.0, Duration::from_secs(20), |_| {
        other(&west).is_empty()
    })
    .await;
    assert!(gone, "the ghost went away: {:?}", other(&west));
    assert_eq!(east.welcome().shard, p.b.shard);
}
