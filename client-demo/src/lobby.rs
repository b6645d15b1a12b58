//! Joining through the lobby: hello, measure the candidate shards, ask for a shard, receive the
//! grant with a join ticket.

use crate::session::{SessionError, connect_pinned, measure_rtt};
use meridian_protocol::codec::BoundedVec;
use meridian_protocol::handshake::RejectMsg;
use meridian_protocol::lobby::{
    CandidatesMsg, JoinGrantMsg, JoinRequestMsg, LobbyHelloMsg, LobbyMsg, LobbyRequestMsg,
    ShardRttMsg,
};
use meridian_protocol::quic::{CertSha256, QuicConfig};
use meridian_protocol::stream::{self, StreamReadError, StreamWriteError};
use meridian_protocol::ticket::SignedTicket;
use meridian_protocol::{PROTOCOL_VERSION, ShardId};
use std::net::SocketAddr;
use std::time::Duration;

/// Pings per candidate shard; the minimum is reported.
pub const RTT_SAMPLES: u32 = 5;

/// Why a join through the lobby failed.
#[derive(Debug, thiserror::Error)]
pub enum LobbyJoinError {
    /// The lobby could not be reached.
    #[error("lobby: {0}")]
    Connect(SessionError),
    /// The lobby refused (its reason may carry a retry delay).
    #[error("lobby refused: {0}")]
    Rejected(RejectMsg),
    /// The lobby answered out of turn.
    #[error("lobby answered with an unexpected message")]
    Unexpected,
    /// The lobby closed the stream early.
    #[error("lobby closed the stream before answering")]
    Closed,
    /// Reading failed.
    #[error(transparent)]
    Read(#[from] StreamReadError),
    /// Writing failed.
    #[error(transparent)]
    Write(#[from] StreamWriteError),
    /// A candidate's address is not a socket address.
    #[error("lobby offered shard {shard} at `{addr}`, which is not an address")]
    BadAddress {
        /// The shard.
        shard: ShardId,
        /// What was offered.
        addr: String,
    },
}

impl LobbyJoinError {
    /// The delay the lobby asked for before retrying, if it refused as unavailable.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Rejected(RejectMsg {
                reason: meridian_protocol::handshake::RejectReason::Unavailable { retry_after_ms },
                ..
            }) => Some(Duration::from_millis(u64::from(*retry_after_ms))),
            _ => None,
        }
    }
}

/// How a reconnecting client treats a failed join through the lobby.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinRetry {
    /// Try again after the backoff (the lobby or a shard was out of reach, busy or full).
    Backoff,
    /// Try again after at least this delay, as the lobby asked ("unavailable, retry after").
    After(Duration),
    /// The resume ticket was refused (expired, forged, of an unknown player): join by name.
    WithoutResume,
    /// Trying again cannot help (another protocol version, a refused name).
    Never,
}

impl LobbyJoinError {
    /// What a client that wants to get back in should do after this error.
    pub fn retry(&self) -> JoinRetry {
        use meridian_protocol::handshake::RejectReason;
        match self {
            Self::Rejected(r) => match r.reason {
                RejectReason::Unavailable { retry_after_ms } => {
                    JoinRetry::After(Duration::from_millis(u64::from(retry_after_ms)))
                }
                RejectReason::BadTicket => JoinRetry::WithoutResume,
                RejectReason::VersionMismatch { .. } | RejectReason::BadName => JoinRetry::Never,
                RejectReason::Malformed | RejectReason::Full => JoinRetry::Backoff,
            },
            Self::Connect(_)
            | Self::Unexpected
            | Self::Closed
            | Self::Read(_)
            | Self::Write(_)
            | Self::BadAddress { .. } => JoinRetry::Backoff,
        }
    }
}

/// What the lobby answered.
#[derive(Clone, Debug)]
pub struct LobbyJoin {
    /// Who the player is, and the shards offered.
    pub candidates: CandidatesMsg,
    /// The measured round trips, by shard (unreachable shards are left out).
    pub rtts: Vec<(ShardId, Duration)>,
    /// The chosen shard and the ticket for it.
    pub grant: JoinGrantMsg,
    /// The chosen shard's address.
    pub addr: SocketAddr,
}

/// Joins through the lobby at `lobby` (certificate pinned by `lobby_pin`) as `name`.
/// `endpoint` is used for the lobby and for measuring the shards (pass a conditioned endpoint
/// to measure through simulated latency).
pub async fn join(
    endpoint: &quinn::Endpoint,
    lobby: SocketAddr,
    lobby_pin: CertSha256,
    name: &str,
    resume: Option<SignedTicket>,
    quic_cfg: &QuicConfig,
) -> Result<LobbyJoin, LobbyJoinError> {
    let conn = connect_pinned(endpoint, lobby, lobby_pin, quic_cfg)
        .await
        .map_err(LobbyJoinError::Connect)?;
    let result = join_on(&conn, endpoint, name, resume, quic_cfg).await;
    conn.close(meridian_protocol::quic::close_code::DONE.into(), b"joined");
    result
}

async fn join_on(
    conn: &quinn::Connection,
    endpoint: &quinn::Endpoint,
    name: &str,
    resume: Option<SignedTicket>,
    quic_cfg: &QuicConfig,
) -> Result<LobbyJoin, LobbyJoinError> {
    let max = meridian_protocol::frame::DEFAULT_MAX_FRAME;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| {
        LobbyJoinError::Connect(SessionError::Connect {
            addr: conn.remote_address(),
            detail: e.to_string(),
        })
    })?;
    let mut buf = Vec::new();
    let hello = LobbyHelloMsg {
        protocol_version: PROTOCOL_VERSION,
        name: name.to_owned(),
        resume,
    };
    stream::write_frame(&mut send, &hello, max, &mut buf).await?;
    let candidates = match stream::read_frame::<LobbyMsg>(&mut recv, max, &mut buf).await? {
        Some(LobbyMsg::Candidates(c)) => c,
        Some(LobbyMsg::Rejected(r)) => return Err(LobbyJoinError::Rejected(r)),
        Some(LobbyMsg::Grant(_)) => return Err(LobbyJoinError::Unexpected),
        None => return Err(LobbyJoinError::Closed),
    };
    let mut addrs = Vec::with_capacity(candidates.shards.len());
    for c in candidates.shards.iter() {
        let addr: SocketAddr = c.addr.parse().map_err(|_| LobbyJoinError::BadAddress {
            shard: c.shard.clone(),
            addr: c.addr.clone(),
        })?;
        addrs.push(addr);
    }
    // Measure every candidate at once.
    let probes = candidates.shards.iter().zip(&addrs).map(|(c, addr)| {
        let (endpoint, quic_cfg) = (endpoint.clone(), quic_cfg.clone());
        let (shard, pin, addr) = (c.shard.clone(), c.cert_sha256, *addr);
        async move {
            (
                shard,
                measure_rtt(&endpoint, addr, pin, &quic_cfg, RTT_SAMPLES).await,
            )
        }
    });
    let measured = futures::future::join_all(probes).await;
    let mut rtts = Vec::new();
    let mut report = BoundedVec::new();
    for (shard, rtt) in measured {
        match rtt {
            Ok(rtt) => {
                let rtt_us = u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX).max(1);
                let _ = report.try_push(ShardRttMsg {
                    shard: shard.clone(),
                    rtt_us,
                });
                rtts.push((shard, rtt));
            }
            Err(e) => tracing::debug!(%shard, error = %e, "shard not reachable for measurement"),
        }
    }
    let request = LobbyRequestMsg::Join(JoinRequestMsg {
        rtts: report,
        party: None,
    });
    stream::write_frame(&mut send, &request, max, &mut buf).await?;
    let grant = match stream::read_frame::<LobbyMsg>(&mut recv, max, &mut buf).await? {
        Some(LobbyMsg::Grant(g)) => g,
        Some(LobbyMsg::Rejected(r)) => return Err(LobbyJoinError::Rejected(r)),
        Some(LobbyMsg::Candidates(_)) => return Err(LobbyJoinError::Unexpected),
        None => return Err(LobbyJoinError::Closed),
    };
    let addr = grant
        .shard
        .addr
        .parse()
        .map_err(|_| LobbyJoinError::BadAddress {
            shard: grant.shard.shard.clone(),
            addr: grant.shard.addr.clone(),
        })?;
    Ok(LobbyJoin {
        candidates,
        rtts,
        grant,
        addr,
    })
}
