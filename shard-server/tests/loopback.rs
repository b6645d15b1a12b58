//! A shard and its clients over real QUIC on loopback.

mod common;

use common::*;
use meridian_client::session::SessionError;
use meridian_protocol::control::KickReason;
use meridian_protocol::handshake::RejectReason;
use meridian_protocol::quic::QuicConfig;
use meridian_protocol::snapshot::EntityKind;
use meridian_protocol::ticket::{TicketKey, TicketKind};
use meridian_protocol::{EntityId, ShardId};
use std::collections::BTreeSet;
use std::time::Duration;

/// 20 clients standing still in a 200×200 zone: each sees exactly the players within its
/// interest radius (those between the radius and the hysteresis edge may or may not be seen,
/// since they never came closer), and none beyond.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_clients_see_exactly_their_neighbours() {
    let shard = start_shard("0,0,200,200", |t| {
        t.sim.npcs = 0;
        t.sim.pickups = 0;
    })
    .await;
    let radius = meridian_shard::replication::ReplicationConfig::default().interest_radius;
    let outer =
        radius * (1.0 + meridian_shard::replication::ReplicationConfig::default().hysteresis);
    let ep = endpoint();
    let mut sessions = Vec::new();
    for p in 0..20 {
        sessions.push(join(&ep, &shard, 1000 + p).await);
    }
    // Stand still; inputs also carry acks so deltas flow.
    let ok = wait_until(Duration::from_secs(10), || {
        for s in sessions.iter_mut() {
            s.send_input(0.0, 0.0, 0).expect("input");
        }
        sessions
            .iter()
            .all(|s| s.with_world(|w| w.entity(s.entity()).is_some()))
            && sessions.iter().all(|s| s.stats().snapshots > 10)
    })
    .await;
    assert!(ok, "every client receives snapshots showing itself");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let own: Vec<(EntityId, [f32; 2])> = sessions
        .iter()
        .map(|s| {
            (
                s.entity(),
                s.with_world(|w| w.entity(s.entity()).expect("own entity").pos),
            )
        })
        .collect();
    let mut checked_pairs = 0;
    for (i, s) in sessions.iter().enumerate() {
        let seen: BTreeSet<EntityId> = s
            .entities()
            .iter()
            .filter(|e| e.kind == EntityKind::Player)
            .map(|e| e.id)
            .collect();
        for (j, (other, pos)) in own.iter().enumerate() {
            if i == j {
                assert!(seen.contains(other), "client {i} sees itself");
                continue;
            }
            let me = own[i].1;
            let d = ((pos[0] - me[0]).powi(2) + (pos[1] - me[1]).powi(2)).sqrt();
            if d <= radius - 0.5 {
                assert!(
                    seen.contains(other),
                    "client {i} must see {j} at distance {d}"
                );
                checked_pairs += 1;
            } else if d > outer + 0.5 {
                assert!(
                    !seen.contains(other),
                    "client {i} must not see {j} at distance {d}"
                );
                checked_pairs += 1;
            }
        }
    }
    assert!(
        checked_pairs > 100,
        "the layout tested both cases ({checked_pairs} pairs)"
    );
    for s in sessions {
        s.leave().await;
    }
    let m = shard.metrics();
    assert_eq!(meridian_shard::metrics::ShardMetrics::get(&m.admitted), 20);
    shard.shutdown().await;
}

async fn expect_rejected(
    result: Result<meridian_client::session::ShardSession, SessionError>,
    want: RejectReason,
    detail_has: &str,
) {
    match result {
        Err(SessionError::Rejected(r)) => {
            assert_eq!(r.reason, want, "{r}");
            assert!(
                r.detail.contains(detail_has),
                "detail `{}` should mention `{detail_has}`",
                r.detail
            );
        }
        Err(e) => panic!("expected a rejection, got {e}"),
        Ok(_) => panic!("expected a rejection, got a session"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tickets_are_refused_with_their_reason() {
    let shard = start_shard("0,0,100,100", |t| t.sim.npcs = 10).await;
    let ep = endpoint();
    let q = QuicConfig::default();
    let connect = |ticket| {
        let ep = ep.clone();
        let (addr, pin) = (shard.local_addr, shard.cert_sha256);
        let q = q.clone();
        async move { meridian_client::session::ShardSession::connect(&ep, addr, pin, ticket, &q).await }
    };
    // Forged: signed with another key.
    let forged = ticket(
        &TicketKey::from_bytes(&[9; 32]),
        TicketKind::Join,
        &shard.shard,
        &shard.zone,
        1,
        now_ms() + 30_000,
    );
    expect_rejected(connect(forged).await, RejectReason::BadTicket, "signature").await;
    // Expired.
    let expired = ticket(
        &key(),
        TicketKind::Join,
        &shard.shard,
        &shard.zone,
        2,
        now_ms() - 1,
    );
    expect_rejected(connect(expired).await, RejectReason::BadTicket, "expired").await;
    // Another shard's ticket.
    let other = ShardId::new("other-shard").expect("name");
    let wrong = ticket(
        &key(),
        TicketKind::Join,
        &other,
        &shard.zone,
        3,
        now_ms() + 30_000,
    );
    expect_rejected(connect(wrong).await, RejectReason::BadTicket, "other-shard").await;
    // Wrong kind.
    let resume = ticket(
        &key(),
        TicketKind::Resume,
        &shard.shard,
        &shard.zone,
        4,
        now_ms() + 30_000,
    );
    expect_rejected(
        connect(resume).await,
        RejectReason::BadTicket,
        "resume ticket",
    )
    .await;
    // Replayed: the first use works, the second is refused.
    let t = ticket_for(&shard, 5);
    let first = connect(t.clone()).await.expect("first use admitted");
    expect_rejected(connect(t).await, RejectReason::BadTicket, "already used").await;
    first.leave().await;
    let m = shard.metrics();
    use meridian_shard::metrics::ShardMetrics as M;
    assert_eq!(M::get(&m.rejected_ticket), 4);
    assert_eq!(M::get(&m.rejected_replay), 1);
    // The shard is unharmed: a good client still plays.
    let mut s = join(&ep, &shard, 6).await;
    assert!(
        wait_until(Duration::from_secs(5), || {
            let _ = s.send_input(0.0, 0.0, 0);
            s.stats().snapshots > 3
        })
        .await
    );
    shard.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kicked_with_reason_on_shutdown() {
    let shard = start_shard("0,0,100,100", |t| t.sim.npcs = 0).await;
    let ep = endpoint();
    let mut s = join(&ep, &shard, 7).await;
    shard.shutdown().await;
    // Score events may come first (the player may have spawned on a pickup).
    let kick = next_kick(&mut s, Duration::from_secs(5)).await;
    assert_eq!(kick.map(|k| k.reason), Some(KickReason::Shutdown));
}
