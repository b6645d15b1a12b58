//! The client library comes back by itself after losing its shard, over real QUIC on loopback
//! with a real lobby and real shards in-process: after a crash (a standby takes the zone over
//! once the lease expires), after a shutdown kick (the lobby says "unavailable, retry after"
//! until a shard is back), and it gives up with a clear reason past its time limit.

mod common;

use anyhow::{Context, bail};
use common::*;
use meridian_client::conditioner::{ConditionerConfig, conditioned_endpoint};
use meridian_client::lobby::{self as client_lobby, LobbyJoin};
use meridian_client::session::{Reconnect, ReconnectPolicy, SessionEvent, ShardSession};
use meridian_cluster::store::{Store as _, StoreConfig, StoreHandle};
use meridian_cluster::testing::RedisServer;
use meridian_protocol::quic::QuicConfig;
use meridian_protocol::{ShardId, ZoneId};
use std::sync::atomic::Ordering;
use std::time::Duration;

fn shard_id(s: &str) -> ShardId {
    ShardId::new(s).expect("invariant: a valid shard id literal")
}

/// Quick backoff, bounded by `give_up_after`.
fn policy(give_up_after: Duration) -> ReconnectPolicy {
    ReconnectPolicy {
        base: Duration::from_millis(100),
        cap: Duration::from_secs(1),
        give_up_after,
    }
}

/// Opens a session on the shard `joined` granted that reconnects through the world's lobby.
async fn resilient(
    w: &World,
    name: &str,
    joined: &LobbyJoin,
    give_up_after: Duration,
) -> anyhow::Result<ShardSession> {
    resilient_on(&w.endpoint, w, name, joined, give_up_after).await
}

/// [`resilient`] on another client endpoint.
async fn resilient_on(
    endpoint: &quinn::Endpoint,
    w: &World,
    name: &str,
    joined: &LobbyJoin,
    give_up_after: Duration,
) -> anyhow::Result<ShardSession> {
    let reconnect = Reconnect::after_join(
        w.lobby.local_addr,
        w.lobby.cert_sha256,
        name,
        joined,
        policy(give_up_after),
    );
    ShardSession::connect_resilient(endpoint, joined, reconnect, &QuicConfig::default())
        .await
        .with_context(|| format!("session on granted shard {}", joined.grant.shard.shard))
}

/// Sends an input a little under the tick rate until the session shows its own entity in a few
/// snapshots of its current shard; bounded.
async fn until_playing(session: &mut ShardSession, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let start = session.stats().snapshots;
    loop {
        session
            .send_input(0.0, 0.0, 0)
            .context("sending an input")?;
        let me = session.entity();
        if session.stats().snapshots >= start + 3 && session.with_world(|w| w.entity(me).is_some())
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "no snapshots showing entity {me:?} within {timeout:?}: {:?}",
                session.stats()
            );
        }
        tokio::time::sleep(Duration::from_millis(34)).await;
    }
}

/// Plays (inputs keep going, as a game loop would) and collects events until one matches
/// `done`; bounded. Returns every event seen, the matching one last.
async fn events_until(
    session: &mut ShardSession,
    timeout: Duration,
    done: impl Fn(&SessionEvent) -> bool,
) -> anyhow::Result<Vec<SessionEvent>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        while let Some(ev) = session.try_event() {
            let last = done(&ev);
            seen.push(ev);
            if last {
                return Ok(seen);
            }
        }
        // During the outage inputs are accepted and go nowhere: the game need not know. Only
        // a session that ended refuses them, and says so in an event.
        if let Err(e) = session.send_input(0.5, 1.0, 0) {
            let ended = session.next_event().await;
            bail!("an input was refused ({e}); next event {ended:?}; events before: {seen:?}");
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("not within {timeout:?}; events: {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(34)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_crash_the_client_resumes_on_the_standby_that_takes_the_zone() -> anyhow::Result<()>
{
    init_logs();
    let redis = RedisServer::start().await?;
    let url = redis.url();
    let store = StoreHandle::open(&url, &StoreConfig::default()).await?;
    let world = World::start_zones(store, &[("shard-a", "a")]).await?;
    let outcome = with_world(world, async |w| {
        let registry = w.registry.clone();
        let standby =
            tokio::spawn(async move { start_zone_shard("shard-s", "a", &registry, Some(&url)).await });
        let joined = w.join("gil").await?;
        assert_eq!(joined.grant.shard.shard, shard_id("shard-a"));
        let mut session = resilient(w, "gil", &joined, Duration::from_secs(40)).await?;
        until_playing(&mut session, STEP_TIMEOUT).await?;
        let player = joined.candidates.player;

        let a = w.shards.remove(0);
        a.crash().await;
        let events = events_until(&mut session, Duration::from_secs(40), |e| {
            matches!(e, SessionEvent::Reconnected { .. } | SessionEvent::Closed(_))
        })
        .await?;
        // The standby took the zone once the lease expired; keep it for the world's stop.
        let s = tokio::time::timeout(STEP_TIMEOUT, standby)
            .await
            .context("the standby took the zone")??
            .context("the standby started")?;
        w.shards.push(s);

        let disconnected = events
            .iter()
            .position(|e| matches!(e, SessionEvent::Disconnected { shard, .. } if *shard == shard_id("shard-a")))
            .with_context(|| format!("a Disconnected event for shard-a: {events:?}"))?;
        let Some(SessionEvent::Reconnected {
            shard,
            out_for,
            attempts,
        }) = events.last()
        else {
            bail!("expected to reconnect, got {events:?}");
        };
        assert!(disconnected < events.len() - 1);
        assert_eq!(*shard, shard_id("shard-s"), "the zone's new holder");
        assert!(*attempts >= 1);
        // Out from the last snapshot of shard-a to the first of shard-s: at least until the
        // lease expired (it was renewed at most a second before the crash).
        assert!(
            *out_for >= Duration::from_secs(1),
            "out for {out_for:?} though the zone had no holder for a while"
        );
        let stats = session.stats();
        assert_eq!(stats.reconnects, 1);
        assert_eq!(stats.outages, vec![*out_for]);
        assert_eq!(stats.shard, shard_id("shard-s"));
        assert_eq!(session.welcome().zone, ZoneId::new("a")?);
        until_playing(&mut session, STEP_TIMEOUT).await?;
        let owned = w
            .store
            .get_ownership(player)
            .await?
            .context("the player has an ownership record")?;
        assert_eq!(owned.owner, Some(shard_id("shard-s")));
        session.leave().await;
        Ok(())
    })
    .await;
    drop(redis);
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_shutdown_kick_the_client_retries_until_a_shard_is_back() -> anyhow::Result<()> {
    init_logs();
    let world = World::start(memory_store().await?, &[("shard-a", "eu")], true).await?;
    with_world(world, async |w| {
        let joined = w.join("hal").await?;
        let mut session = resilient(w, "hal", &joined, Duration::from_secs(40)).await?;
        until_playing(&mut session, STEP_TIMEOUT).await?;

        let a = w.shards.remove(0);
        a.shutdown().await;
        let first = events_until(&mut session, STEP_TIMEOUT, |e| {
            matches!(e, SessionEvent::Disconnected { .. })
        })
        .await?;
        let Some(SessionEvent::Disconnected { shard, reason }) = first.last() else {
            bail!("expected a disconnection, got {first:?}");
        };
        assert_eq!(*shard, shard_id("shard-a"));
        assert!(reason.contains("Shutdown"), "the kick's reason: {reason}");
        // No shard at all for a while: the lobby says "unavailable, retry after" meanwhile.
        let refused = poll_until("the lobby refused a join", STEP_TIMEOUT, || async {
            let m = w.lobby.metrics();
            Ok((m.rejected_no_shard.load(Ordering::Relaxed) > 0).then_some(()))
        })
        .await;
        refused?;
        let back = start_shard("shard-a", "eu", Some(w.registry.clone())).await?;
        w.shards.push(back);
        let events = events_until(&mut session, Duration::from_secs(30), |e| {
            matches!(
                e,
                SessionEvent::Reconnected { .. } | SessionEvent::Closed(_)
            )
        })
        .await?;
        let Some(SessionEvent::Reconnected {
            shard, attempts, ..
        }) = events.last()
        else {
            bail!("expected to reconnect, got {events:?}");
        };
        assert_eq!(*shard, shard_id("shard-a"));
        assert!(
            *attempts >= 2,
            "the first attempts were refused as unavailable: {attempts}"
        );
        until_playing(&mut session, STEP_TIMEOUT).await?;
        assert_eq!(session.stats().reconnects, 1);
        session.leave().await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconnecting_gives_up_past_its_time_limit_with_the_reason() -> anyhow::Result<()> {
    init_logs();
    let world = World::start(memory_store().await?, &[("shard-a", "eu")], true).await?;
    with_world(world, async |w| {
        let joined = w.join("ivy").await?;
        let mut session = resilient(w, "ivy", &joined, Duration::from_secs(2)).await?;
        until_playing(&mut session, STEP_TIMEOUT).await?;
        let a = w.shards.remove(0);
        a.shutdown().await;
        let events = events_until(&mut session, Duration::from_secs(20), |e| {
            matches!(
                e,
                SessionEvent::Closed(_) | SessionEvent::Reconnected { .. }
            )
        })
        .await?;
        assert!(
            events
                .iter()
                .any(|e| matches!(e, SessionEvent::Disconnected { .. })),
            "{events:?}"
        );
        let Some(SessionEvent::Closed(reason)) = events.last() else {
            bail!("expected the session to end, got {events:?}");
        };
        assert!(
            reason.starts_with("reconnecting gave up after ")
                && reason.contains("no shard within 2s")
                && reason.contains("no shard is available"),
            "the reason says why: {reason}"
        );
        let stats = session.stats();
        assert_eq!((stats.reconnects, stats.reconnect_failures), (0, 1));
        // Once given up, inputs fail again: the game learns the session is over.
        assert!(session.send_input(0.0, 0.0, 0).is_err());
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shard_gone_silent_is_noticed_by_the_idle_timeout_and_the_lobby_sends_the_client_on()
-> anyhow::Result<()> {
    init_logs();
    let world = World::start(
        memory_store().await?,
        &[("shard-a", "eu"), ("shard-b", "eu")],
        true,
    )
    .await?;
    with_world(world, async |w| {
        // A client whose link to one shard can be cut without a word (no close, no kick).
        let (endpoint, link) = conditioned_endpoint(
            loopback(),
            &QuicConfig::default(),
            ConditionerConfig::default(),
        )
        .context("conditioned client endpoint")?;
        let joined = tokio::time::timeout(
            STEP_TIMEOUT,
            client_lobby::join(
                &endpoint,
                w.lobby.local_addr,
                w.lobby.cert_sha256,
                "joy",
                None,
                &QuicConfig::default(),
            ),
        )
        .await
        .context("joining in time")??;
        let first = joined.grant.shard.shard.clone();
        let other = if first == shard_id("shard-a") {
            shard_id("shard-b")
        } else {
            shard_id("shard-a")
        };
        let mut session =
            resilient_on(&endpoint, w, "joy", &joined, Duration::from_secs(40)).await?;
        until_playing(&mut session, STEP_TIMEOUT).await?;

        link.partition(joined.addr, true);
        let events = events_until(&mut session, Duration::from_secs(40), |e| {
            matches!(
                e,
                SessionEvent::Reconnected { .. } | SessionEvent::Closed(_)
            )
        })
        .await?;
        let Some(SessionEvent::Disconnected { shard, reason }) = events
            .iter()
            .find(|e| matches!(e, SessionEvent::Disconnected { .. }))
        else {
            bail!("expected a disconnection: {events:?}");
        };
        assert_eq!(*shard, first);
        assert!(
            reason.contains("timed out"),
            "noticed by the idle timeout: {reason}"
        );
        let Some(SessionEvent::Reconnected { shard, out_for, .. }) = events.last() else {
            bail!("expected to reconnect, got {events:?}");
        };
        // The cut shard cannot be measured, so the lobby grants the other one.
        assert_eq!(*shard, other);
        // Nothing was heard for the idle timeout (3 s) before the loss was noticed.
        assert!(*out_for >= Duration::from_secs(2), "out for {out_for:?}");
        until_playing(&mut session, STEP_TIMEOUT).await?;
        session.leave().await;
        endpoint.close(0u32.into(), b"test over");
        Ok(())
    })
    .await
}
