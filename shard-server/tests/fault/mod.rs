//! Helpers of the fault-tolerance tests (`checkpoint.rs`, `failover.rs`): the two-zone world
//! of the handoff tests, tickets, clients, polling.

#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(missing_docs, reason = "test helpers")]

#[path = "../common/world.rs"]
pub mod world;

use meridian_client::session::{SessionEvent, ShardSession, client_endpoint};
use meridian_protocol::PlayerId;
use meridian_protocol::control::KickMsg;
use meridian_protocol::quic::QuicConfig;
use meridian_protocol::ticket::{SignedTicket, TicketClaims, TicketKey, TicketKind, random_nonce};
use meridian_shard::server::ShardHandle;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The ticket key every test shard and client shares.
pub const KEY_HEX: &str = "4d6572696469616e2d746573742d6b65792d30303030303030303030303030aa";

/// A join ticket for `shard`, as the lobby issues it.
pub fn ticket_for(shard: &ShardHandle, player: u64) -> SignedTicket {
    TicketKey::from_hex(KEY_HEX)
        .expect("test key")
        .sign(TicketClaims {
            kind: TicketKind::Join,
            player: PlayerId(player),
            shard: shard.shard.clone(),
            zone: shard.zone.clone(),
            expires_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_millis() as u64
                + 30_000,
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

/// Joins `shard` as `player` with a fresh join ticket.
pub async fn join_as(shard: &ShardHandle, player: u64) -> ShardSession {
    ShardSession::connect(
        &endpoint(),
        shard.local_addr,
        shard.cert_sha256,
        ticket_for(shard, player),
        &QuicConfig::default(),
    )
    .await
    .expect("session")
}

/// Polls `f` every 34 ms until it returns true or `timeout` passes.
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

/// The next kick, skipping other events; `None` if the session ends without one or nothing
/// comes within `timeout`.
pub async fn next_kick(s: &mut ShardSession, timeout: Duration) -> Option<KickMsg> {
    tokio::time::timeout(timeout, async {
        loop {
            match s.next_event().await {
                Some(SessionEvent::Kicked(k)) => return Some(k),
                Some(SessionEvent::Closed(_)) | None => return None,
                Some(_) => continue,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// Distance between two points.
pub fn dist(a: [f32; 2], b: [f32; 2]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}
