//! The headless demo client (`meridian client`): joins, walks a scripted path (a square, one
//! side every three seconds, at full speed), and prints once a second what it sees, and a line
//! at each handoff to another shard (the session follows it by itself).

use crate::lobby::LobbyJoin;
use crate::session::{Reconnect, SessionError, SessionEvent, ShardSession, client_endpoint};
use meridian_protocol::quic::{CertSha256, QuicConfig};
use meridian_protocol::snapshot::EntityKind;
use meridian_protocol::ticket::SignedTicket;
use meridian_protocol::{ShardId, ZoneId};
use std::f32::consts::FRAC_PI_2;
use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Where and how the demo client plays.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// The shard's address.
    pub shard: SocketAddr,
    /// The shard's certificate fingerprint.
    pub cert_sha256: CertSha256,
    /// The join ticket.
    pub ticket: SignedTicket,
    /// Stop after this long; until the shutdown future completes if unset.
    pub duration: Option<Duration>,
    /// Transport settings.
    pub quic: QuicConfig,
    /// Set when the ticket came from a lobby: the grant and how to come back through the lobby
    /// after losing the shard (the session then reconnects by itself); `None`: a direct ticket,
    /// a lost shard ends the demo.
    pub via_lobby: Option<Box<(LobbyJoin, Reconnect)>>,
}

/// One line of the demo's output, once a second.
#[derive(Clone, Debug, PartialEq)]
pub struct DemoLine {
    /// Seconds since the session started.
    pub t_s: u64,
    /// Own position.
    pub pos: Option<[f32; 2]>,
    /// Entities in view: players, NPCs, pickups.
    pub in_view: [usize; 3],
    /// QUIC round-trip time, milliseconds.
    pub rtt_ms: f64,
    /// Snapshots received in the last second.
    pub snapshots_per_s: u64,
    /// Bytes received in the last second.
    pub down_bytes_per_s: u64,
    /// Bytes sent in the last second.
    pub up_bytes_per_s: u64,
    /// Committed score.
    pub score: u64,
}

impl std::fmt::Display for DemoLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pos = self
            .pos
            .map_or("-".to_owned(), |p| format!("({:.1}, {:.1})", p[0], p[1]));
        write!(
            f,
            "t={}s pos={} in_view={} (players {}, npcs {}, pickups {}) rtt={:.1}ms snapshots/s={} down={:.1}kB/s up={:.1}kB/s score={}",
            self.t_s,
            pos,
            self.in_view.iter().sum::<usize>(),
            self.in_view[0],
            self.in_view[1],
            self.in_view[2],
            self.rtt_ms,
            self.snapshots_per_s,
            self.down_bytes_per_s as f64 / 1000.0,
            self.up_bytes_per_s as f64 / 1000.0,
            self.score,
        )
    }
}

/// The session moved to another shard.
#[derive(Clone, Debug, PartialEq)]
pub struct HandoffLine {
    /// Seconds since the session started.
    pub t_s: u64,
    /// The shard left.
    pub from: ShardId,
    /// The shard played on now.
    pub to: ShardId,
    /// The zone entered.
    pub zone: ZoneId,
    /// Last snapshot from the old shard → first from the new, milliseconds.
    pub blackout_ms: f64,
}

impl std::fmt::Display for HandoffLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "t={}s handed off to zone {} (shard {} -> {}) blackout={:.1}ms",
            self.t_s, self.zone, self.from, self.to, self.blackout_ms
        )
    }
}

/// One line of the demo's output.
#[derive(Clone, Debug, PartialEq)]
pub enum DemoOutput {
    /// The once-a-second status.
    Status(DemoLine),
    /// A handoff, when it happens.
    HandedOff(HandoffLine),
}

impl std::fmt::Display for DemoOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status(l) => l.fmt(f),
            Self::HandedOff(l) => l.fmt(f),
        }
    }
}

/// Plays until the duration passes, `shutdown` completes or the shard ends the session;
/// `on_line` receives each second's status line and a line at each handoff. Returns the lines.
pub async fn run(
    opts: DemoOptions,
    shutdown: impl Future<Output = ()>,
    mut on_line: impl FnMut(&DemoOutput),
) -> Result<Vec<DemoOutput>, SessionError> {
    let bind: SocketAddr = if opts.shard.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let endpoint = client_endpoint(bind, &opts.quic).map_err(|e| SessionError::Connect {
        addr: opts.shard,
        detail: e.to_string(),
    })?;
    let mut session = match opts.via_lobby {
        Some(via) => {
            let (joined, reconnect) = *via;
            ShardSession::connect_resilient(&endpoint, &joined, reconnect, &opts.quic).await?
        }
        None => {
            ShardSession::connect(
                &endpoint,
                opts.shard,
                opts.cert_sha256,
                opts.ticket,
                &opts.quic,
            )
            .await?
        }
    };
    let hz = u32::from(session.welcome().tick_hz.max(1));
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / hz);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tokio::pin!(shutdown);
    let started = Instant::now();
    let mut last = (Instant::now(), session.stats());
    let mut lines = Vec::new();
    let mut score = 0;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut shutdown => break,
        }
        let elapsed = started.elapsed();
        if opts.duration.is_some_and(|d| elapsed >= d) {
            break;
        }
        while let Some(ev) = session.try_event() {
            match ev {
                SessionEvent::Score { total, .. } => score = total,
                SessionEvent::Kicked(k) => {
                    tracing::warn!(reason = ?k.reason, detail = %k.detail, "kicked by the shard");
                    return Ok(lines);
                }
                SessionEvent::Closed(reason) => {
                    tracing::warn!(%reason, "connection closed");
                    return Ok(lines);
                }
                SessionEvent::HandedOff {
                    from,
                    to,
                    zone,
                    blackout,
                } => {
                    let line = DemoOutput::HandedOff(HandoffLine {
                        t_s: elapsed.as_secs(),
                        from,
                        to,
                        zone,
                        blackout_ms: blackout.as_secs_f64() * 1000.0,
                    });
                    on_line(&line);
                    lines.push(line);
                }
                SessionEvent::HandoffFailed { shard, detail } => {
                    tracing::warn!(%shard, %detail, "handoff failed");
                }
                SessionEvent::Disconnected { shard, reason } => {
                    tracing::warn!(%shard, %reason, "shard lost; reconnecting");
                }
                SessionEvent::Reconnected {
                    shard,
                    out_for,
                    attempts,
                } => {
                    tracing::info!(%shard, ?out_for, attempts, "reconnected");
                }
                SessionEvent::Chat { .. } => {}
            }
        }
        // The scripted path: a square, one side every three seconds.
        let side = (elapsed.as_secs() / 3) % 4;
        session.send_input(side as f32 * FRAC_PI_2, 1.0, 0)?;
        if last.0.elapsed() >= Duration::from_secs(1) {
            let stats = session.stats();
            let mut in_view = [0usize; 3];
            for e in session.entities() {
                in_view[e.kind as usize] += 1;
            }
            let line = DemoLine {
                t_s: elapsed.as_secs(),
                pos: session.with_world(|w| w.entity(session.entity()).map(|e| e.pos)),
                in_view,
                rtt_ms: stats.rtt.as_secs_f64() * 1000.0,
                snapshots_per_s: stats.snapshots - last.1.snapshots,
                down_bytes_per_s: stats.bytes_down - last.1.bytes_down,
                up_bytes_per_s: stats.bytes_up - last.1.bytes_up,
                score,
            };
            let line = DemoOutput::Status(line);
            on_line(&line);
            lines.push(line);
            last = (Instant::now(), stats);
        }
    }
    session.leave().await;
    Ok(lines)
}

// EntityKind's discriminants index `in_view`.
const _: () = assert!(
    EntityKind::Player as usize == 0
        && EntityKind::Npc as usize == 1
        && EntityKind::Pickup as usize == 2
);
