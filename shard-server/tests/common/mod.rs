//! Helpers shared by the shard's network tests: an in-process shard on loopback with a dev
//! certificate, ticket minting, clients.

#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(missing_docs, reason = "test helpers")]

pub mod world;

use meridian_client::session::{ShardSession, client_endpoint};
use meridian_protocol::quic::QuicConfig;
use meridian_protocol::ticket::{SignedTicket, TicketClaims, TicketKey, TicketKind, random_nonce};
use meridian_protocol::{PlayerId, ShardId, ZoneId};
use meridian_shard::config::ShardConfig;
use meridian_shard::server::{self, ShardHandle, ShardTuning};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The ticket key every test shard and client shares.
pub const KEY_HEX: &str = "4d6572696469616e2d746573742d6b65792d30303030303030303030303030aa";

/// [`KEY_HEX`] as a key.
pub fn key() -> TicketKey {
    TicketKey::from_hex(KEY_HEX).expect("test key")
}

/// Wall-clock milliseconds, as tickets count them.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// A shard on a free loopback port with a development certificate.
pub fn shard_config(bounds: &str) -> ShardConfig {
    ShardConfig {
        id: "test-shard".into(),
        zone: "test-zone".into(),
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        zone_bounds: bounds.into(),
        ticket_key: Some(KEY_HEX.into()),
        dev_cert: true,
        ..ShardConfig::default()
    }
}

/// Starts a shard; `adjust` changes its tuning (NPC count, radius…).
pub async fn start_shard(bounds: &str, adjust: impl FnOnce(&mut ShardTuning)) -> ShardHandle {
    let cfg = shard_config(bounds);
    let mut tuning = ShardTuning::from_config(&cfg).expect("tuning");
    adjust(&mut tuning);
    server::start(&cfg, tuning, None)
        .await
        .expect("shard starts")
}

/// A valid join ticket for `shard`.
pub fn ticket_for(shard: &ShardHandle, player: u64) -> SignedTicket {
    ticket(
        &key(),
        TicketKind::Join,
        &shard.shard,
        &shard.zone,
        player,
        now_ms() + 30_000,
    )
}

/// A ticket with every field chosen by the test.
pub fn ticket(
    key: &TicketKey,
    kind: TicketKind,
    shard: &ShardId,
    zone: &ZoneId,
    player: u64,
    expires_at_ms: u64,
) -> SignedTicket {
    key.sign(TicketClaims {
        kind,
        player: PlayerId(player),
        shard: shard.clone(),
        zone: zone.clone(),
        expires_at_ms,
        nonce: random_nonce(),
    })
    .expect("sign")
}

/// A client endpoint on loopback.
pub fn endpoint() -> quinn::Endpoint {
    client_endpoint(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        &QuicConfig::default(),
    )
    .expect("client endpoint")
}

/// Joins `shard` as `player`.
pub async fn join(ep: &quinn::Endpoint, shard: &ShardHandle, player: u64) -> ShardSession {
    ShardSession::connect(
        ep,
        shard.local_addr,
        shard.cert_sha256,
        ticket_for(shard, player),
        &QuicConfig::default(),
    )
    .await
    .expect("session")
}

/// Joins `shard` as `player` with a fresh join ticket, on an endpoint of its own.
pub async fn join_as(shard: &ShardHandle, player: u64) -> ShardSession {
    join(&endpoint(), shard, player).await
}

/// Distance between two points.
pub fn dist(a: [f32; 2], b: [f32; 2]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

/// Polls `f` every 34 ms (a little under the 30 Hz tick rate, so a test that sends one input
/// per poll is not an input flood) until it returns true or `timeout` passes.
pub async fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(34)).await;
    }
    f()
}

/// The next kick, skipping score and chat events; `None` if the session closes without one or
/// nothing comes within `timeout`.
pub async fn next_kick(
    s: &mut meridian_client::session::ShardSession,
    timeout: Duration,
) -> Option<meridian_protocol::control::KickMsg> {
    use meridian_client::session::SessionEvent;
    tokio::time::timeout(timeout, async {
        loop {
            match s.next_event().await {
                Some(SessionEvent::Kicked(k)) => return Some(k),
                Some(
                    SessionEvent::Score { .. }
                    | SessionEvent::Chat { .. }
                    | SessionEvent::HandedOff { .. }
                    | SessionEvent::Disconnected { .. }
                    | SessionEvent::Reconnected { .. },
                ) => continue,
                Some(SessionEvent::Closed(_) | SessionEvent::HandoffFailed { .. }) | None => {
                    return None;
                }
            }
        }
    })
    .await
    .ok()
    .flatten()
}
