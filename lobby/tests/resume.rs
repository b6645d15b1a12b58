//! Resume tickets over real QUIC on loopback with real shards in-process: every grant carries
//! one; a hello with it names the player without the name; a player still owned in a zone is
//! sent to that zone's lease holder only, or told to retry while no live shard holds it; bad
//! resume tickets are refused with their reason; with Redis stopped the lobby answers
//! "unavailable, retry after" instead of hanging.

mod common;

use anyhow::{Context, bail};
use common::*;
use meridian_client::lobby::{self as client_lobby, LobbyJoin, LobbyJoinError};
use meridian_cluster::ownership::{ClaimOutcome, Lease};
use meridian_cluster::store::{Store as _, StoreConfig, StoreHandle};
use meridian_cluster::testing::RedisServer;
use meridian_lobby::service::DEFAULT_RESUME_TICKET_TTL;
use meridian_protocol::codec::BoundedVec;
use meridian_protocol::frame::DEFAULT_MAX_FRAME;
use meridian_protocol::handshake::{RejectMsg, RejectReason};
use meridian_protocol::lobby::{
    JoinRequestMsg, LobbyHelloMsg, LobbyMsg, LobbyRequestMsg, ShardRttMsg,
};
use meridian_protocol::quic::{QuicConfig, close_code};
use meridian_protocol::stream;
use meridian_protocol::ticket::{SignedTicket, TicketClaims, TicketKind, random_nonce};
use meridian_protocol::{PROTOCOL_VERSION, PlayerId, ShardId, ZoneId};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn shard_id(s: &str) -> ShardId {
    ShardId::new(s).expect("invariant: a valid shard id literal")
}

fn zone_id(s: &str) -> ZoneId {
    ZoneId::new(s).expect("invariant: a valid zone id literal")
}

/// The real client flow with a resume ticket, bounded.
async fn join_resuming(
    w: &World,
    name: &str,
    resume: &SignedTicket,
) -> Result<LobbyJoin, LobbyJoinError> {
    tokio::time::timeout(
        STEP_TIMEOUT,
        client_lobby::join(
            &w.endpoint,
            w.lobby.local_addr,
            w.lobby.cert_sha256,
            name,
            Some(resume.clone()),
            &QuicConfig::default(),
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("join as {name:?} took longer than {STEP_TIMEOUT:?}"))
}

/// A hand-made hello (with `resume`): the offered shards, then, if any are offered, a join
/// request reporting `rtts` (ms) for the named shards and the lobby's last answer.
async fn hello_then_request(
    w: &World,
    resume: Option<SignedTicket>,
    rtts: &[(&str, u32)],
) -> anyhow::Result<(Result<Vec<ShardId>, RejectMsg>, Option<LobbyMsg>)> {
    let conn = w.raw_connection().await?;
    let (mut send, mut recv) = conn.open_bi().await.context("opening a lobby stream")?;
    let mut buf = Vec::new();
    let hello = LobbyHelloMsg {
        protocol_version: PROTOCOL_VERSION,
        name: "hand-made".into(),
        resume,
    };
    stream::write_frame(&mut send, &hello, DEFAULT_MAX_FRAME, &mut buf)
        .await
        .context("sending the hello")?;
    let offered = match read_reply(&mut recv).await? {
        LobbyMsg::Candidates(c) => c.shards.iter().map(|s| s.shard.clone()).collect(),
        LobbyMsg::Rejected(r) => {
            conn.close(close_code::DONE.into(), b"refused");
            return Ok((Err(r), None));
        }
        LobbyMsg::Grant(g) => bail!("a grant in answer to a hello: {g:?}"),
    };
    let mut report = BoundedVec::new();
    for (shard, ms) in rtts {
        report
            .try_push(ShardRttMsg {
                shard: shard_id(shard),
                rtt_us: ms * 1000,
            })
            .map_err(|_| anyhow::anyhow!("too many round trips"))?;
    }
    let request = LobbyRequestMsg::Join(JoinRequestMsg {
        rtts: report,
        party: None,
    });
    stream::write_frame(&mut send, &request, DEFAULT_MAX_FRAME, &mut buf)
        .await
        .context("sending the join request")?;
    let answer = read_reply(&mut recv).await?;
    let _ = send.finish();
    conn.close(close_code::DONE.into(), b"done");
    Ok((Ok(offered), Some(answer)))
}

fn granted(answer: Option<LobbyMsg>) -> ShardId {
    match answer {
        Some(LobbyMsg::Grant(g)) => g.shard.shard,
        other => panic!("expected a grant, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_grant_carries_a_reusable_resume_ticket_that_brings_the_player_back()
-> anyhow::Result<()> {
    init_logs();
    let world = World::start(memory_store().await?, &[("shard-a", "eu")], true).await?;
    with_world(world, async |w| {
        let first = w.join("ann").await?;
        let ann = first.candidates.player;
        let resume = first.grant.resume.clone();
        let claims = key()
            .verify(&resume, TicketKind::Resume, None, now_ms())
            .context("the resume ticket verifies with the shared key")?;
        assert_eq!(claims.player, ann);
        assert_eq!(claims.shard, first.grant.shard.shard);
        assert_ne!(
            claims.nonce, first.grant.ticket.claims.nonce,
            "the resume ticket is not the join ticket"
        );
        let ttl_ms = DEFAULT_RESUME_TICKET_TTL.as_millis() as u64;
        assert!(
            claims.expires_at_ms > now_ms() + ttl_ms - 60_000
                && claims.expires_at_ms <= now_ms() + ttl_ms,
            "a resume ticket lives about {DEFAULT_RESUME_TICKET_TTL:?}: expires at {}",
            claims.expires_at_ms
        );
        // The ticket names the player, whatever name the hello carries; and it can be used
        // again (it proves who the player is, it admits nowhere by itself).
        for name in ["another-name", "ann"] {
            let back = join_resuming(w, name, &resume).await?;
            assert_eq!(back.candidates.player, ann, "hello as {name:?}");
            assert_eq!(back.candidates.profile.name, "ann");
            assert_eq!(back.grant.resume.claims.player, ann);
            assert_eq!(back.grant.resume.claims.kind, TicketKind::Resume);
        }
        let m = w.lobby.metrics();
        assert_eq!(m.grants.load(Ordering::Relaxed), 3);
        assert_eq!(m.rejected_ticket.load(Ordering::Relaxed), 0);
        // Never admitted anywhere, so owned nowhere: routed like any join.
        assert_eq!(m.resumed_to_zone.load(Ordering::Relaxed), 0);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_expired_or_unknown_resume_tickets_are_refused_with_their_reason()
-> anyhow::Result<()> {
    init_logs();
    let world = World::start(memory_store().await?, &[("shard-a", "eu")], true).await?;
    with_world(world, async |w| {
        let joined = w.join("bea").await?;
        let mut forged = joined.grant.resume.clone();
        forged.claims.player = PlayerId(forged.claims.player.0 + 1);
        let sign = |player: PlayerId, expires_at_ms: u64| {
            key().sign(TicketClaims {
                kind: TicketKind::Resume,
                player,
                shard: shard_id("shard-a"),
                zone: zone_id("zone-shard-a"),
                expires_at_ms,
                nonce: random_nonce(),
            })
        };
        let expired = sign(joined.candidates.player, now_ms() - 1_000)?;
        let unknown = sign(PlayerId(987_654_321), now_ms() + 60_000)?;
        let cases = [
            (forged, "ticket signature is invalid (forged or altered)"),
            (expired, "ticket expired at"),
            (
                unknown,
                "resume ticket names player 987654321, who has no profile",
            ),
            (
                joined.grant.ticket.clone(),
                "join ticket presented where a resume ticket is required",
            ),
        ];
        for (ticket, want) in cases {
            let r = expect_join_rejected(join_resuming(w, "bea", &ticket).await);
            assert_eq!(r.reason, RejectReason::BadTicket, "{want}");
            assert!(
                r.detail.contains(want),
                "detail {:?} should say {want:?}",
                r.detail
            );
        }
        assert_eq!(w.lobby.metrics().rejected_ticket.load(Ordering::Relaxed), 4);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resume_goes_to_the_lease_holder_of_the_players_zone_even_if_another_is_nearer()
-> anyhow::Result<()> {
    init_logs();
    let world =
        World::start_zones(memory_store().await?, &[("shard-a", "a"), ("shard-b", "b")]).await?;
    with_world(world, async |w| {
        let joined = w.join("cat").await?;
        let player = joined.candidates.player;
        let resume = joined.grant.resume.clone();
        // The player is owned in zone b, by the holder of its lease.
        let lease_b = w
            .store
            .get_lease(&zone_id("b"))
            .await?
            .context("shard-b holds zone b")?;
        assert_eq!(lease_b.owner, shard_id("shard-b"));
        let claimed = w.store.claim_player(player, &lease_b).await?;
        assert!(
            matches!(claimed, ClaimOutcome::Claimed { .. }),
            "{claimed:?}"
        );

        // A plain hello: both shards offered, the nearer one granted.
        let (offered, answer) =
            hello_then_request(w, None, &[("shard-a", 5), ("shard-b", 80)]).await?;
        assert_eq!(
            offered.map_err(|r| anyhow::anyhow!("refused: {r}"))?,
            vec![shard_id("shard-a"), shard_id("shard-b")]
        );
        assert_eq!(granted(answer), shard_id("shard-a"));

        // Resuming: only zone b's holder is offered and granted, though it is farther.
        let (offered, answer) =
            hello_then_request(w, Some(resume.clone()), &[("shard-b", 80)]).await?;
        assert_eq!(
            offered.map_err(|r| anyhow::anyhow!("refused: {r}"))?,
            vec![shard_id("shard-b")]
        );
        assert_eq!(granted(answer), shard_id("shard-b"));
        // Reporting the nearer shard that was not offered is refused.
        let (_, answer) = hello_then_request(w, Some(resume), &[("shard-a", 5)]).await?;
        let r = expect_rejected(answer.context("an answer to the request")?);
        assert_eq!(r.reason, RejectReason::Malformed);
        assert_eq!(r.detail, "round trip reported for unknown shard shard-a");

        assert_eq!(w.lobby.metrics().resumed_to_zone.load(Ordering::Relaxed), 2);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resume_into_a_zone_without_a_live_holder_is_unavailable_with_a_retry_delay()
-> anyhow::Result<()> {
    init_logs();
    let world = World::start_zones(memory_store().await?, &[("shard-a", "a")]).await?;
    with_world(world, async |w| {
        let joined = w.join("dot").await?;
        let player = joined.candidates.player;
        let resume = joined.grant.resume.clone();
        // Owned in zone c, whose shard died: nobody holds the lease.
        let dead = Lease {
            zone: zone_id("c"),
            owner: shard_id("shard-c"),
            epoch: 1,
        };
        let claimed = w.store.claim_player(player, &dead).await?;
        assert!(matches!(claimed, ClaimOutcome::Claimed { .. }), "{claimed:?}");
        let (offered, _) = hello_then_request(w, Some(resume.clone()), &[]).await?;
        let r = offered.expect_err("no shard may be offered");
        assert_eq!(
            r.reason,
            RejectReason::Unavailable {
                retry_after_ms: 1_000
            }
        );
        assert_eq!(
            r.detail,
            format!(
                "player {player} cannot resume yet: zone c has no lease holder now (failover in progress)"
            )
        );
        // A holder that is not (yet) in the registry: the same answer, naming it.
        let _held = w
            .store
            .acquire_lease(&zone_id("c"), &shard_id("shard-c2"), Duration::from_secs(30))
            .await?;
        let (offered, _) = hello_then_request(w, Some(resume), &[]).await?;
        let r = offered.expect_err("no shard may be offered");
        assert!(matches!(r.reason, RejectReason::Unavailable { .. }), "{r}");
        assert_eq!(
            r.detail,
            format!(
                "player {player} cannot resume yet: shard shard-c2, holder of zone c, is not live in the registry"
            )
        );
        // A plain join still works meanwhile.
        let (offered, _) = hello_then_request(w, None, &[("shard-a", 5)]).await?;
        assert_eq!(
            offered.map_err(|r| anyhow::anyhow!("refused: {r}"))?,
            vec![shard_id("shard-a")]
        );
        let m = w.lobby.metrics();
        assert_eq!(m.resume_no_holder.load(Ordering::Relaxed), 2);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_redis_stopped_the_lobby_answers_unavailable_instead_of_hanging() -> anyhow::Result<()>
{
    init_logs();
    let mut redis = RedisServer::start().await?;
    let store = StoreHandle::open(&redis.url(), &StoreConfig::default()).await?;
    let world = World::start(store, &[("shard-a", "eu")], true).await?;
    let outcome = with_world(world, async |w| {
        let joined = w.join("eve").await?;
        let resume = joined.grant.resume.clone();
        redis.stop();
        // Every answer comes within the helpers' bound (STEP_TIMEOUT), and says to retry.
        for (what, outcome) in [
            ("a new join", w.join("fay").await),
            ("a returning player", join_resuming(w, "eve", &resume).await),
        ] {
            let r = expect_join_rejected(outcome);
            let RejectReason::Unavailable { retry_after_ms } = r.reason else {
                panic!("{what}: expected unavailable, got {r}");
            };
            assert!(retry_after_ms > 0, "{what}: a retry delay is given");
            assert!(
                r.detail.contains("unavailable"),
                "{what}: the detail names what failed: {:?}",
                r.detail
            );
        }
        assert!(
            w.lobby
                .metrics()
                .rejected_unavailable
                .load(Ordering::Relaxed)
                >= 2
        );
        Ok(())
    })
    .await;
    drop(redis);
    outcome
}
