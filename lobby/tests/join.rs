//! Joining through the lobby over real QUIC on loopback, with real shards in-process and real
//! stores (memory, and a throwaway redis-server): the client flow `lobby::join` →
//! `ShardSession::connect`, every refusal with its precise reason and message, replayed
//! tickets, and shards leaving the candidates.

mod common;

use common::*;
use meridian_client::session::{SessionError, ShardSession};
use meridian_cluster::registry::DEFAULT_SHARD_TTL_MS;
use meridian_cluster::store::{ShardRecord, Store as _, StoreConfig, StoreHandle};
use meridian_cluster::testing::RedisServer;
use meridian_lobby::service::LobbyMetrics;
use meridian_protocol::codec::BoundedVec;
use meridian_protocol::frame::DEFAULT_MAX_FRAME;
use meridian_protocol::handshake::{RejectMsg, RejectReason};
use meridian_protocol::lobby::{
    JoinRequestMsg, LobbyHelloMsg, LobbyMsg, LobbyRequestMsg, PlayerNameError, ProfileMsg,
    ShardRttMsg,
};
use meridian_protocol::quic::QuicConfig;
use meridian_protocol::stream;
use meridian_protocol::ticket::TicketKind;
use meridian_protocol::{PROTOCOL_VERSION, ShardId};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn count(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// The lobby's refusal counters, in declaration order, for exact assertions.
fn refusals(m: &LobbyMetrics) -> [u64; 6] {
    [
        count(&m.rejected_version),
        count(&m.rejected_malformed),
        count(&m.rejected_name),
        count(&m.rejected_ticket),
        count(&m.rejected_unavailable),
        count(&m.rejected_no_shard),
    ]
}

fn shard_id(s: &str) -> ShardId {
    ShardId::new(s).expect("invariant: a valid shard id literal")
}

/// The full happy path on `world` (one shard, `shard-a`): first visit, admission with
/// snapshots, same name → same id, another name → another id.
async fn first_visit_then_return(w: &mut World) -> anyhow::Result<()> {
    let shard = w.shard("shard-a");
    let (shard_id, shard_addr, shard_pin) =
        (shard.shard.clone(), shard.local_addr, shard.cert_sha256);

    let first = w.join("ann").await?;
    assert_eq!(
        first.candidates.profile,
        ProfileMsg {
            name: "ann".into(),
            score: 0
        },
        "a first visit starts with an empty profile"
    );
    let offered: Vec<_> = first
        .candidates
        .shards
        .iter()
        .map(|c| {
            (
                c.shard.clone(),
                c.region.clone(),
                c.addr.clone(),
                c.cert_sha256,
            )
        })
        .collect();
    assert_eq!(
        offered,
        vec![(
            shard_id.clone(),
            "washington".to_owned(),
            shard_addr.to_string(),
            shard_pin
        )],
        "the live shard is offered as it registered"
    );
    assert_eq!(
        first.rtts.len(),
        1,
        "the client measured the candidate: {:?}",
        first.rtts
    );
    assert_eq!(first.grant.shard.shard, shard_id);
    assert_eq!(first.addr, shard_addr);
    let claims = &first.grant.ticket.claims;
    assert_eq!(
        (claims.kind, claims.player, &claims.shard, &claims.zone),
        (
            TicketKind::Join,
            first.candidates.player,
            &shard_id,
            &shard.zone
        ),
        "the ticket is a join ticket for this player on this shard"
    );

    // The profile the lobby created is in the store.
    let stored = w.store.load_profile(first.candidates.player).await?;
    assert_eq!((stored.name.as_str(), stored.score), ("ann", 0));

    // The ticket admits the player: welcome, then snapshots showing its entity.
    let session = play(&w.endpoint, &first).await?;
    assert_eq!(session.welcome().player, first.candidates.player);
    assert_eq!(session.welcome().shard, shard_id);
    session.leave().await;

    let again = w.join("ann").await?;
    assert_eq!(
        again.candidates.player, first.candidates.player,
        "the same name again gets the same player id"
    );
    assert_ne!(
        again.grant.ticket.claims.nonce, claims.nonce,
        "every grant carries a fresh single-use ticket"
    );
    let bob = w.join("bob").await?;
    assert_ne!(
        bob.candidates.player, first.candidates.player,
        "another name gets another id"
    );
    let m = w.lobby.metrics();
    assert_eq!((count(&m.hellos), count(&m.grants)), (3, 3));
    assert_eq!(refusals(m), [0; 6]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_visit_creates_a_player_and_its_ticket_admits_it_memory_store() -> anyhow::Result<()>
{
    init_logs();
    let world = World::start(memory_store().await?, &[("shard-a", "washington")], true).await?;
    with_world(world, first_visit_then_return).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_visit_creates_a_player_and_its_ticket_admits_it_redis_store() -> anyhow::Result<()> {
    init_logs();
    let redis = RedisServer::start().await?;
    let store = StoreHandle::open(&redis.url(), &StoreConfig::default()).await?;
    assert_eq!(store.backend(), "redis");
    let world = World::start(store, &[("shard-a", "washington")], true).await?;
    let outcome = with_world(world, first_visit_then_return).await;
    drop(redis);
    outcome
}

// ---------------------------------------------------------------------------------------------
// Bad hellos, on raw streams.

/// Sends `bytes` as they are on a fresh lobby stream and returns the lobby's answer.
async fn send_raw(w: &World, bytes: &[u8]) -> anyhow::Result<LobbyMsg> {
    let conn = w.raw_connection().await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(bytes).await?;
    let reply = read_reply(&mut recv).await;
    conn.close(0u32.into(), b"done");
    reply
}

/// A frame header announcing `len` bytes, then `payload`.
fn framed(len: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

async fn one_shard_world() -> anyhow::Result<World> {
    World::start(memory_store().await?, &[("shard-a", "washington")], true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_protocol_version_is_refused_naming_both_versions() -> anyhow::Result<()> {
    init_logs();
    with_world(one_shard_world().await?, async |w| {
        let conn = w.raw_connection().await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        let hello = LobbyHelloMsg {
            protocol_version: PROTOCOL_VERSION + 41,
            name: "ann".into(),
            resume: None,
        };
        let mut buf = Vec::new();
        stream::write_frame(&mut send, &hello, DEFAULT_MAX_FRAME, &mut buf).await?;
        let r = expect_rejected(read_reply(&mut recv).await?);
        conn.close(0u32.into(), b"done");
        assert_eq!(r, RejectMsg::version_mismatch(PROTOCOL_VERSION + 41));
        assert_eq!(
            r.reason,
            RejectReason::VersionMismatch {
                server: PROTOCOL_VERSION,
                client: PROTOCOL_VERSION + 41
            }
        );
        assert_eq!(
            r.detail,
            format!(
                "protocol version mismatch: this server speaks {PROTOCOL_VERSION}, the client speaks {}",
                PROTOCOL_VERSION + 41
            )
        );
        assert_eq!(refusals(w.lobby.metrics()), [1, 0, 0, 0, 0, 0]);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_after_the_version_is_a_malformed_hello() -> anyhow::Result<()> {
    init_logs();
    with_world(one_shard_world().await?, async |w| {
        // The right version, then a name announced as 250 bytes long with 3 bytes behind it.
        let version = u8::try_from(PROTOCOL_VERSION).expect("invariant: a one-byte varint");
        let payload = [version, 250, b'a', b'b', b'c'];
        let r = expect_rejected(send_raw(w, &framed(payload.len() as u32, &payload)).await?);
        assert_eq!(r.reason, RejectReason::Malformed);
        assert!(
            r.detail.starts_with("hello: malformed LobbyHelloMsg"),
            "detail: {}",
            r.detail
        );
        assert_eq!(refusals(w.lobby.metrics()), [0, 1, 0, 0, 0, 0]);
        assert_eq!(count(&w.lobby.metrics().hellos), 0);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_without_a_version_is_a_malformed_hello() -> anyhow::Result<()> {
    init_logs();
    with_world(one_shard_world().await?, async |w| {
        // 0xff opens no varint: there is no version to read.
        let payload = [0xff; 16];
        let r = expect_rejected(send_raw(w, &framed(payload.len() as u32, &payload)).await?);
        assert_eq!(r.reason, RejectReason::Malformed);
        assert!(
            r.detail
                .starts_with("hello does not start with a protocol version"),
            "detail: {}",
            r.detail
        );
        assert_eq!(refusals(w.lobby.metrics()), [0, 1, 0, 0, 0, 0]);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_frame_header_is_refused_before_its_payload() -> anyhow::Result<()> {
    init_logs();
    with_world(one_shard_world().await?, async |w| {
        // Announces 1 MB; only a few bytes follow, and the refusal does not wait for the rest.
        let r = expect_rejected(send_raw(w, &framed(1_000_000, b"tiny")).await?);
        assert_eq!(r.reason, RejectReason::Malformed);
        assert_eq!(
            r.detail,
            format!("hello: frame of 1000000 bytes exceeds the maximum of {DEFAULT_MAX_FRAME}")
        );
        assert_eq!(refusals(w.lobby.metrics()), [0, 1, 0, 0, 0, 0]);
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Bad names, through the real client.

async fn name_is_refused(name: &str, expected: PlayerNameError) -> anyhow::Result<()> {
    with_world(one_shard_world().await?, async |w| {
        let r = expect_join_rejected(w.join(name).await);
        assert_eq!(r.reason, RejectReason::BadName, "name {name:?}");
        assert_eq!(r.detail, expected.to_string(), "name {name:?}");
        assert_eq!(refusals(w.lobby.metrics()), [0, 0, 1, 0, 0, 0]);
        // Nothing was created for it.
        assert_eq!(count(&w.lobby.metrics().hellos), 0);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn empty_name_is_refused() -> anyhow::Result<()> {
    init_logs();
    name_is_refused("", PlayerNameError::Empty).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blank_name_is_refused() -> anyhow::Result<()> {
    init_logs();
    name_is_refused("   ", PlayerNameError::Empty).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn name_of_33_characters_is_refused() -> anyhow::Result<()> {
    init_logs();
    // 33 characters, 66 bytes: the limit counts characters.
    name_is_refused(&"é".repeat(33), PlayerNameError::TooLong { chars: 33 }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn name_of_32_characters_is_accepted() -> anyhow::Result<()> {
    init_logs();
    with_world(one_shard_world().await?, async |w| {
        let name = "é".repeat(32);
        let joined = w.join(&name).await?;
        assert_eq!(joined.candidates.profile.name, name);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn non_printable_name_is_refused() -> anyhow::Result<()> {
    init_logs();
    name_is_refused("a\u{7}b", PlayerNameError::NotPrintable { position: 1 }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn name_with_a_direction_override_is_refused() -> anyhow::Result<()> {
    init_logs();
    name_is_refused("ann\u{202e}", PlayerNameError::NotPrintable { position: 3 }).await
}

// ---------------------------------------------------------------------------------------------
// Bad join requests: a valid hello, then a hand-made request.

/// Says hello as `name`, checks the candidates, sends `rtts` as the join request and returns
/// the lobby's answer.
async fn request_with(w: &World, name: &str, rtts: Vec<ShardRttMsg>) -> anyhow::Result<LobbyMsg> {
    let conn = w.raw_connection().await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let mut buf = Vec::new();
    let hello = LobbyHelloMsg {
        protocol_version: PROTOCOL_VERSION,
        name: name.into(),
        resume: None,
    };
    stream::write_frame(&mut send, &hello, DEFAULT_MAX_FRAME, &mut buf).await?;
    match read_reply(&mut recv).await? {
        LobbyMsg::Candidates(c) => assert_eq!(
            c.shards.iter().map(|s| s.shard.clone()).collect::<Vec<_>>(),
            vec![shard_id("shard-a")]
        ),
        other => panic!("expected candidates, got {other:?}"),
    }
    let request = LobbyRequestMsg::Join(JoinRequestMsg {
        rtts: BoundedVec::try_from_vec(rtts).expect("invariant: a few measurements"),
        party: None,
    });
    stream::write_frame(&mut send, &request, DEFAULT_MAX_FRAME, &mut buf).await?;
    let reply = read_reply(&mut recv).await;
    conn.close(0u32.into(), b"done");
    reply
}

fn rtt(shard: &str, rtt_us: u32) -> ShardRttMsg {
    ShardRttMsg {
        shard: shard_id(shard),
        rtt_us,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn join_request_naming_an_unknown_shard_is_malformed() -> anyhow::Result<()> {
    init_logs();
    with_world(one_shard_world().await?, async |w| {
        let reply =
            request_with(w, "ann", vec![rtt("shard-a", 900), rtt("shard-ghost", 500)]).await?;
        let r = expect_rejected(reply);
        assert_eq!(r.reason, RejectReason::Malformed);
        assert_eq!(
            r.detail,
            "round trip reported for unknown shard shard-ghost"
        );
        assert_eq!(refusals(w.lobby.metrics()), [0, 1, 0, 0, 0, 0]);
        assert_eq!(count(&w.lobby.metrics().grants), 0);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zero_round_trip_is_malformed() -> anyhow::Result<()> {
    init_logs();
    with_world(one_shard_world().await?, async |w| {
        let r = expect_rejected(request_with(w, "ann", vec![rtt("shard-a", 0)]).await?);
        assert_eq!(r.reason, RejectReason::Malformed);
        assert_eq!(
            r.detail,
            "round trip 0 µs reported for shard shard-a is not plausible"
        );
        assert_eq!(refusals(w.lobby.metrics()), [0, 1, 0, 0, 0, 0]);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_second_round_trip_is_malformed() -> anyhow::Result<()> {
    init_logs();
    with_world(one_shard_world().await?, async |w| {
        let r = expect_rejected(request_with(w, "ann", vec![rtt("shard-a", 60_000_000)]).await?);
        assert_eq!(r.reason, RejectReason::Malformed);
        assert_eq!(
            r.detail,
            "round trip 60000000 µs reported for shard shard-a is not plausible"
        );
        assert_eq!(refusals(w.lobby.metrics()), [0, 1, 0, 0, 0, 0]);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shard_reported_twice_is_malformed() -> anyhow::Result<()> {
    init_logs();
    with_world(one_shard_world().await?, async |w| {
        let reply = request_with(w, "ann", vec![rtt("shard-a", 900), rtt("shard-a", 800)]).await?;
        let r = expect_rejected(reply);
        assert_eq!(r.reason, RejectReason::Malformed);
        assert_eq!(r.detail, "shard shard-a reported twice");
        assert_eq!(refusals(w.lobby.metrics()), [0, 1, 0, 0, 0, 0]);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn join_request_measuring_no_shard_is_malformed() -> anyhow::Result<()> {
    init_logs();
    with_world(one_shard_world().await?, async |w| {
        let r = expect_rejected(request_with(w, "ann", vec![]).await?);
        assert_eq!(r.reason, RejectReason::Malformed);
        assert_eq!(r.detail, "none of the live shards was measured");
        assert_eq!(refusals(w.lobby.metrics()).iter().sum::<u64>(), 1);
        assert_eq!(count(&w.lobby.metrics().grants), 0);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn join_ticket_presented_as_a_resume_ticket_is_refused() -> anyhow::Result<()> {
    init_logs();
    with_world(one_shard_world().await?, async |w| {
        let joined = w.join("ann").await?;
        let outcome = tokio::time::timeout(
            STEP_TIMEOUT,
            meridian_client::lobby::join(
                &w.endpoint,
                w.lobby.local_addr,
                w.lobby.cert_sha256,
                "ann",
                Some(joined.grant.ticket.clone()),
                &QuicConfig::default(),
            ),
        )
        .await?;
        let r = expect_join_rejected(outcome);
        assert_eq!(r.reason, RejectReason::BadTicket);
        assert_eq!(
            r.detail,
            "join ticket presented where a resume ticket is required"
        );
        assert_eq!(refusals(w.lobby.metrics()), [0, 0, 0, 1, 0, 0]);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plausible_hand_made_request_is_granted() -> anyhow::Result<()> {
    init_logs();
    // The control for the cases above: the same raw path with a sane measurement is granted.
    with_world(one_shard_world().await?, async |w| {
        match request_with(w, "ann", vec![rtt("shard-a", 1_500)]).await? {
            LobbyMsg::Grant(g) => assert_eq!(g.shard.shard, shard_id("shard-a")),
            other => panic!("expected a grant, got {other:?}"),
        }
        assert_eq!(refusals(w.lobby.metrics()), [0; 6]);
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Unavailable.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_shard_registered_is_unavailable_with_a_retry_delay() -> anyhow::Result<()> {
    init_logs();
    let world = World::start(memory_store().await?, &[], true).await?;
    with_world(world, async |w| {
        let outcome = w.join("ann").await;
        let retry = outcome.as_ref().err().and_then(|e| e.retry_after());
        let r = expect_join_rejected(outcome);
        let RejectReason::Unavailable { retry_after_ms } = r.reason else {
            panic!("expected Unavailable, got {r}");
        };
        assert!(retry_after_ms > 0, "a retry delay is suggested");
        assert_eq!(
            retry,
            Some(Duration::from_millis(u64::from(retry_after_ms)))
        );
        assert_eq!(r.detail, "no shard is available");
        assert_eq!(refusals(w.lobby.metrics()), [0, 0, 0, 0, 0, 1]);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_not_reachable_yet_is_unavailable_until_it_is() -> anyhow::Result<()> {
    init_logs();
    let world = World::start(memory_store().await?, &[("shard-a", "washington")], false).await?;
    with_world(world, async |w| {
        let r = expect_join_rejected(w.join("ann").await);
        let RejectReason::Unavailable { retry_after_ms } = r.reason else {
            panic!("expected Unavailable, got {r}");
        };
        assert!(retry_after_ms > 0, "a retry delay is suggested");
        assert_eq!(r.detail, "shared state is not reachable yet");
        assert!(r.detail.contains("not reachable"));
        assert_eq!(refusals(w.lobby.metrics()), [0, 0, 0, 0, 1, 0]);

        // Once the store is reachable, the same client gets in.
        w.store_tx.send_replace(Some(w.store.clone()));
        let joined = w.join("ann").await?;
        assert_eq!(joined.grant.shard.shard, shard_id("shard-a"));
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Tickets are single-use.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replayed_join_ticket_is_refused_by_the_shard() -> anyhow::Result<()> {
    init_logs();
    with_world(one_shard_world().await?, async |w| {
        let joined = w.join("ann").await?;
        let session = play(&w.endpoint, &joined).await?;
        // The same ticket again, on a new connection, while the first session plays.
        let replay = ShardSession::connect(
            &w.endpoint,
            joined.addr,
            joined.grant.shard.cert_sha256,
            joined.grant.ticket.clone(),
            &QuicConfig::default(),
        )
        .await;
        match replay {
            Err(SessionError::Rejected(r)) => {
                assert_eq!(r.reason, RejectReason::BadTicket);
                assert_eq!(
                    r.detail,
                    format!(
                        "ticket nonce {:#x} was already used",
                        joined.grant.ticket.claims.nonce
                    )
                );
            }
            Err(other) => panic!("expected a BadTicket refusal, got {other}"),
            Ok(_) => panic!("a replayed ticket was admitted"),
        }
        let shard = w.shard("shard-a");
        assert_eq!(count(&shard.metrics().rejected_replay), 1);
        assert_eq!(count(&shard.metrics().admitted), 1);
        assert!(session.is_open(), "the first session is unharmed");
        session.leave().await;

        // Even after the first session ended, the ticket stays spent.
        let again = ShardSession::connect(
            &w.endpoint,
            joined.addr,
            joined.grant.shard.cert_sha256,
            joined.grant.ticket.clone(),
            &QuicConfig::default(),
        )
        .await;
        assert!(
            matches!(&again, Err(SessionError::Rejected(r)) if r.reason == RejectReason::BadTicket),
            "replay after leaving: {:?}",
            again.as_ref().err()
        );
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Shards leaving the candidates.

/// Polls the lobby's candidates until `gone` is no longer offered, for at most `within`;
/// returns how long after `since` it was seen gone.
async fn wait_until_not_offered(
    w: &World,
    gone: &ShardId,
    since: Instant,
    within: Duration,
) -> anyhow::Result<Duration> {
    poll_until(
        &format!("shard {gone} leaves the candidates"),
        within,
        || async move {
            let offered = offered_now(w).await?;
            Ok((!offered.contains(gone)).then(|| since.elapsed()))
        },
    )
    .await
}

/// The shards the lobby offers right now; a refusal fails the test.
async fn offered_now(w: &World) -> anyhow::Result<Vec<ShardId>> {
    w.offered("poller")
        .await?
        .map_err(|r| anyhow::anyhow!("the lobby refused a hello: {r}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shard_that_shuts_down_leaves_the_candidates_within_the_ttl() -> anyhow::Result<()> {
    init_logs();
    let world = World::start(
        memory_store().await?,
        &[("shard-a", "washington"), ("shard-b", "frankfurt")],
        true,
    )
    .await?;
    with_world(world, async |w| {
        let ttl = Duration::from_millis(DEFAULT_SHARD_TTL_MS);
        assert_eq!(w.registry.config().ttl(), ttl);
        let (a, b) = (shard_id("shard-a"), shard_id("shard-b"));
        assert_eq!(offered_now(w).await?, vec![a.clone(), b.clone()]);

        let i = w
            .shards
            .iter()
            .position(|s| s.shard == b)
            .expect("invariant: shard-b was started");
        let asked = Instant::now();
        w.shards.remove(i).shutdown().await;
        let took = wait_until_not_offered(w, &b, asked, ttl).await?;
        println!("shard-b left the candidates {took:?} after it was asked to shut down");
        assert_eq!(offered_now(w).await?, vec![a.clone()]);
        // New players go to the shard that is left.
        assert_eq!(w.join("ann").await?.grant.shard.shard, a);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shard_that_stops_heartbeating_expires_from_the_candidates_within_the_ttl()
-> anyhow::Result<()> {
    init_logs();
    let world = World::start(memory_store().await?, &[("shard-a", "washington")], true).await?;
    // A second shard that keeps running but whose heartbeat dies (cut off from the store, a
    // wedged task): it is never deregistered, only its TTL removes it.
    let mute = start_shard("shard-mute", "tokyo", None).await?;
    let record = ShardRecord {
        id: mute.shard.clone(),
        zone: mute.zone.clone(),
        region: "tokyo".into(),
        addr: mute.local_addr.to_string(),
        cert_sha256: mute.cert_sha256,
        capacity: 100,
        load: 0,
        draining: false,
        admin_addr: None,
    };
    let heartbeat = world
        .registry
        .spawn_heartbeat(move || record.clone(), std::future::pending::<()>());
    let mute_id = mute.shard.clone();
    let outcome = with_world(world, async |w| {
        let ttl = w.registry.config().ttl();
        let interval = w.registry.config().heartbeat_interval();
        let (w, mute_id): (&World, _) = (w, &mute_id);
        poll_until("the mute shard is offered", STEP_TIMEOUT, || async move {
            Ok(offered_now(w).await?.contains(mute_id).then_some(()))
        })
        .await?;
        let joined = w.join("ann").await?;
        assert_eq!(
            joined.candidates.shards.len(),
            2,
            "both shards are candidates"
        );

        heartbeat.abort();
        let stopped = Instant::now();
        // Its last heartbeat was less than an interval ago: still within its TTL.
        let offered = offered_now(w).await?;
        assert!(
            offered.contains(mute_id),
            "gone before its TTL: {offered:?}"
        );
        let took =
            wait_until_not_offered(w, mute_id, stopped, ttl + Duration::from_millis(500)).await?;
        println!("the mute shard expired {took:?} after its heartbeat stopped (TTL {ttl:?})");
        // The last heartbeat was at most one interval before the abort, so the TTL ran out
        // between TTL - interval and TTL after it (the poll's timeout bounds the late side).
        assert!(
            took + Duration::from_millis(200) >= ttl - interval,
            "gone {took:?} after the heartbeat stopped: sooner than its TTL allows"
        );
        assert_eq!(offered_now(w).await?, vec![shard_id("shard-a")]);
        Ok(())
    })
    .await;
    heartbeat.abort();
    mute.shutdown().await;
    outcome
}
