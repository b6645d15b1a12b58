//! A session with a shard: connect with a ticket, receive the welcome, then send inputs at
//! the tick rate (each datagram repeats the last few inputs, so a lost datagram loses no
//! input), acknowledge snapshots, keep the world, report events — and follow the player from
//! shard to shard across zone borders with no help from the game.
//!
//! A background task, the session's driver, owns the receiving side (snapshot datagrams,
//! pongs, the control stream read by a helper task), the early connections to neighbouring
//! shards and the handoffs; the game holds the [`ShardSession`] and calls
//! [`ShardSession::send_input`] once per tick. The shared state is behind a mutex held for the
//! few microseconds of applying one snapshot or sending one datagram, never across an await.
//!
//! Following a handoff:
//! 1. [`ShardControlMsg::Neighbour`]: the driver opens a QUIC connection to that shard in the
//!    background, keyed by zone (at most [`MAX_WARM_CONNECTIONS`]; one not used within
//!    [`WARM_IDLE`] is closed). A failure is logged and counted, never fatal.
//! 2. [`ShardControlMsg::Handoff`]: on the early connection (or a new one) the driver sends the
//!    hello with the handoff ticket and waits for the welcome, retrying once on a fresh
//!    connection when the ticket was not spent (no connection, or "unavailable, retry").
//!    Meanwhile inputs still go to the old shard, which ignores them.
//! 3. On the welcome, inputs and pings go to the new shard: the first datagrams repeat every
//!    input the old shard had not acknowledged (at least [`INPUT_REDUNDANCY`], at most
//!    [`MAX_REDUNDANT_INPUTS`]), so inputs sent during the switch are not lost; the old
//!    connection is closed with [`quic::close_code::DONE`].
//! 4. The first snapshot from the new shard replaces what the game sees — world (quantized
//!    by the new bounds), welcome, own entity — in one step, and [`SessionEvent::HandedOff`]
//!    reports the blackout. Until then the game keeps seeing the old shard's last world.
//!
//! If the switch fails twice, [`SessionEvent::HandoffFailed`] then [`SessionEvent::Closed`]
//! end the session.
//!
//! Coming back after a lost shard (sessions opened with a [`Reconnect`]):
//! 1. The loss is seen as the connection closing (QUIC's idle timeout: a few missed
//!    keep-alives, 3 s with the default [`QuicConfig`]), a kick that asks the client to go
//!    back to the lobby ([`reconnect_hint`]: the zone was lost, the shard drains or shuts
//!    down), or a failed handoff. [`SessionEvent::Disconnected`] says so.
//! 2. A background task goes back to the lobby with the resume ticket of the last grant, which
//!    sends the player to the shard that holds its zone now, and joins that shard. Before each
//!    attempt it waits a delay drawn uniformly below an exponential ceiling
//!    ([`ReconnectPolicy::delay`], "full jitter"), so the clients of a dead shard do not come
//!    back all at once; "unavailable, retry after" from the lobby adds its delay to that.
//! 3. On the welcome, inputs go to the new shard; at its first snapshot what the game sees
//!    moves there and [`SessionEvent::Reconnected`] reports how long the player was out and
//!    the attempts it took. Past [`ReconnectPolicy::give_up_after`] (or on a refusal that no
//!    retry can change) [`SessionEvent::Closed`] ends the session with the reason.
//!
//! Meanwhile [`ShardSession::send_input`] succeeds (the inputs go nowhere), so a game loop
//! does not need to know.

use crate::lobby::{self, JoinRetry, LobbyJoin};
use crate::world::{ClientWorld, EntitySample};
use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared as SharedFuture};
use meridian_protocol::codec::{self, BoundedVec};
use meridian_protocol::control::{
    ClientControlMsg, HandoffMsg, KickMsg, KickReason, NeighbourMsg, ShardControlMsg,
    ShardHelloMsg, WelcomeMsg,
};
use meridian_protocol::datagram::{
    ClientDatagramMsg, InputFrameMsg, InputMsg, MAX_DATAGRAM_BYTES, MAX_REDUNDANT_INPUTS, PingMsg,
    ServerDatagramMsg,
};
use meridian_protocol::frame::DEFAULT_MAX_FRAME;
use meridian_protocol::handshake::RejectMsg;
use meridian_protocol::quantize::{PositionQuantizer, angle_to_byte};
use meridian_protocol::quic::{self, CertSha256, QuicConfig};
use meridian_protocol::stream::{self, StreamReadError, StreamWriteError};
use meridian_protocol::ticket::{SignedTicket, random_nonce};
use meridian_protocol::{EntityId, InputSeq, PROTOCOL_VERSION, ShardId, Tick, ZoneId};
use rand::{Rng as _, SeedableRng as _};
use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, debug_span, info, warn};

/// Inputs repeated in each input datagram.
pub const INPUT_REDUNDANCY: usize = 4;

/// How long to wait for the welcome.
pub const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);

/// Most early connections to neighbouring shards kept open at once.
pub const MAX_WARM_CONNECTIONS: usize = 4;

/// An early connection not used (no handoff, no renewed neighbour message) for this long is
/// closed.
pub const WARM_IDLE: Duration = Duration::from_secs(30);

/// Blackouts kept in [`SessionStats::blackouts`] (the newest).
pub const MAX_BLACKOUTS_KEPT: usize = 1024;

/// Control messages queued each way between the driver and a link's stream tasks.
const CONTROL_QUEUE: usize = 64;

/// Why a session could not be opened or went on.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The QUIC connection could not be made.
    #[error("cannot connect to {addr}: {detail}")]
    Connect {
        /// The shard.
        addr: SocketAddr,
        /// What failed.
        detail: String,
    },
    /// A shard's address (`host:port`, as a shard sends it) could not be resolved.
    #[error("cannot resolve shard address `{addr}`: {detail}")]
    Address {
        /// The address as given.
        addr: String,
        /// What failed.
        detail: String,
    },
    /// The shard refused the hello.
    #[error("shard refused the session: {0}")]
    Rejected(RejectMsg),
    /// The shard sent something else than a welcome first.
    #[error("shard answered the hello with an unexpected message")]
    UnexpectedReply,
    /// Reading a frame failed.
    #[error(transparent)]
    Read(#[from] StreamReadError),
    /// Writing a frame failed.
    #[error(transparent)]
    Write(#[from] StreamWriteError),
    /// The welcome did not arrive in time.
    #[error("no welcome from {addr} within {timeout:?}")]
    Timeout {
        /// The shard.
        addr: SocketAddr,
        /// How long was waited.
        timeout: Duration,
    },
    /// No ping was answered.
    #[error("no answer from {addr} to {pings} pings")]
    NoPong {
        /// The shard.
        addr: SocketAddr,
        /// Pings sent.
        pings: u64,
    },
    /// The welcome's zone bounds cannot be used.
    #[error("shard sent unusable zone bounds: {0}")]
    Bounds(String),
    /// A datagram could not be sent.
    #[error("cannot send datagram: {0}")]
    Datagram(String),
    /// The session is over: its control stream takes no more messages.
    #[error("the session is closed")]
    Closed,
    /// The reconnection settings were refused.
    #[error("reconnect policy: {0}")]
    Reconnect(String),
}

/// Something that happened in the session, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum SessionEvent {
    /// The committed score changed.
    Score {
        /// New total.
        total: u64,
        /// Change.
        delta: u32,
    },
    /// A nearby player said something.
    Chat {
        /// Who.
        from: meridian_protocol::PlayerId,
        /// What.
        text: String,
    },
    /// The shard kicked the client; the session is over.
    Kicked(KickMsg),
    /// The player crossed into another zone and the session now plays on its shard: the
    /// welcome, world and own entity are the new shard's from this event on.
    HandedOff {
        /// The shard played on before.
        from: ShardId,
        /// The shard played on now.
        to: ShardId,
        /// The zone entered.
        zone: ZoneId,
        /// Arrival of the last snapshot from `from` → arrival of the first from `to`.
        blackout: Duration,
    },
    /// The shard that now owns the player could not be joined (refused, unreachable, no
    /// welcome in time), after one retry where the ticket allowed it; [`SessionEvent::Closed`]
    /// follows.
    HandoffFailed {
        /// The shard named by the handoff.
        shard: ShardId,
        /// What failed.
        detail: String,
    },
    /// The connection closed (the reason as quinn tells it, or why reconnecting gave up); the
    /// session is over.
    Closed(String),
    /// The shard was lost (connection timed out or closed, a kick asking to reconnect, a failed
    /// handoff) and the session, opened with a [`Reconnect`], is coming back through the lobby.
    /// [`SessionEvent::Reconnected`] or [`SessionEvent::Closed`] follows.
    Disconnected {
        /// The shard lost.
        shard: ShardId,
        /// What happened.
        reason: String,
    },
    /// The session plays again, on the shard that holds the player's zone now: the welcome,
    /// world and own entity are that shard's from this event on.
    Reconnected {
        /// The shard played on now.
        shard: ShardId,
        /// Arrival of the last snapshot before the loss → arrival of the first one after.
        out_for: Duration,
        /// Joins through the lobby it took (1 if the first one worked).
        attempts: u32,
    },
}

/// Whether a kick asks the client to come back through the lobby rather than to stop: the
/// shard lost its zone, drains or shuts down, or handed the player to a shard the client did
/// not reach.
pub fn reconnect_hint(reason: KickReason) -> bool {
    match reason {
        KickReason::ZoneLost
        | KickReason::Shutdown
        | KickReason::HandedOff
        | KickReason::Draining => true,
        KickReason::Malformed
        | KickReason::InputFlood
        | KickReason::SpeedLimit
        | KickReason::Idle
        | KickReason::Admin => false,
    }
}

/// How a session comes back after losing its shard: the backoff between joins through the
/// lobby and how long it keeps trying.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Ceiling of the first delay; each further attempt doubles it, up to `cap`.
    pub base: Duration,
    /// Largest ceiling of a delay.
    pub cap: Duration,
    /// Gives up once this long has passed since the loss.
    pub give_up_after: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
            give_up_after: Duration::from_secs(60),
        }
    }
}

/// Why a [`ReconnectPolicy`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconnectPolicyError {
    /// The base delay is zero: every client would come back at once.
    #[error("reconnect base delay must be above zero")]
    ZeroBase,
    /// The cap is below the base.
    #[error("reconnect delay cap {cap:?} is below the base delay {base:?}")]
    CapBelowBase {
        /// The base given.
        base: Duration,
        /// The cap given.
        cap: Duration,
    },
    /// No time to try even once.
    #[error("reconnect give-up time must be above zero")]
    ZeroGiveUp,
}

impl ReconnectPolicy {
    /// Checks the delays.
    pub fn validate(&self) -> Result<(), ReconnectPolicyError> {
        if self.base.is_zero() {
            return Err(ReconnectPolicyError::ZeroBase);
        }
        if self.cap < self.base {
            return Err(ReconnectPolicyError::CapBelowBase {
                base: self.base,
                cap: self.cap,
            });
        }
        if self.give_up_after.is_zero() {
            return Err(ReconnectPolicyError::ZeroGiveUp);
        }
        Ok(())
    }

    /// The ceiling of the delay before attempt `attempt` (0 for the first): `base · 2^attempt`,
    /// at most `cap`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before attempt `attempt`: `unit` (drawn uniformly in `[0, 1)`) of its
    /// [`Self::ceiling`] ("full jitter": clients that lost the same shard spread out).
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        self.ceiling(attempt).mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// What a session needs to come back through the lobby by itself.
#[derive(Clone, Debug)]
pub struct Reconnect {
    /// The lobby's address.
    pub lobby: SocketAddr,
    /// SHA-256 of the lobby's certificate.
    pub lobby_pin: CertSha256,
    /// The player's name (sent in the hello; the resume ticket names the player).
    pub name: String,
    /// The resume ticket of the last grant (replaced by each new grant).
    pub resume: Option<SignedTicket>,
    /// Backoff and give-up time.
    pub policy: ReconnectPolicy,
}

impl Reconnect {
    /// Comes back through `lobby` (pinned by `lobby_pin`) as `name`, with the resume ticket of
    /// `joined`'s grant.
    pub fn after_join(
        lobby: SocketAddr,
        lobby_pin: CertSha256,
        name: &str,
        joined: &LobbyJoin,
        policy: ReconnectPolicy,
    ) -> Self {
        Self {
            lobby,
            lobby_pin,
            name: name.to_owned(),
            resume: Some(joined.grant.resume.clone()),
            policy,
        }
    }
}

/// Figures of the session so far.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionStats {
    /// Snapshot datagrams received.
    pub snapshots: u64,
    /// Snapshots that could not be applied (missing baseline, malformed).
    pub snapshots_unusable: u64,
    /// Bytes of datagrams received.
    pub bytes_down: u64,
    /// Bytes of datagrams sent.
    pub bytes_up: u64,
    /// Input datagrams sent.
    pub inputs_sent: u64,
    /// Newest snapshot tick applied (of the shard shown now).
    pub latest_tick: Option<Tick>,
    /// QUIC's smoothed round-trip time on the current connection.
    pub rtt: Duration,
    /// The newest input a shard says it applied.
    pub input_ack: InputSeq,
    /// The shard played on now (the one whose world is shown).
    pub shard: ShardId,
    /// Handoffs completed (first snapshot from the new shard received).
    pub handoffs: u64,
    /// Handoffs that failed (the session ended).
    pub handoff_failures: u64,
    /// Blackout of each completed handoff, oldest first (the newest [`MAX_BLACKOUTS_KEPT`]).
    pub blackouts: Vec<Duration>,
    /// Early connections to neighbouring shards opened.
    pub warm_connections: u64,
    /// Early connections that could not be opened (bad address, unreachable, refused).
    pub warm_failures: u64,
    /// Events dropped because the game did not read them and the queue was full (score, chat
    /// and handoff reports; endings and reconnections are never dropped).
    pub events_dropped: u64,
    /// Reconnections completed (first snapshot after the loss received).
    pub reconnects: u64,
    /// Reconnections that gave up (the session ended).
    pub reconnect_failures: u64,
    /// How long the player was out at each completed reconnection, oldest first (the newest
    /// [`MAX_BLACKOUTS_KEPT`]).
    pub outages: Vec<Duration>,
}

impl SessionStats {
    fn new(shard: ShardId) -> Self {
        Self {
            snapshots: 0,
            snapshots_unusable: 0,
            bytes_down: 0,
            bytes_up: 0,
            inputs_sent: 0,
            latest_tick: None,
            rtt: Duration::ZERO,
            input_ack: InputSeq::default(),
            shard,
            handoffs: 0,
            handoff_failures: 0,
            blackouts: Vec::new(),
            warm_connections: 0,
            warm_failures: 0,
            events_dropped: 0,
            reconnects: 0,
            reconnect_failures: 0,
            outages: Vec::new(),
        }
    }
}

/// The inputs sent so far, for redundancy and for the replay to a new shard.
#[derive(Debug)]
struct InputState {
    next_seq: u32,
    /// The newest inputs, oldest first, at most [`MAX_REDUNDANT_INPUTS`].
    recent: VecDeque<InputFrameMsg>,
    /// While a switch is not complete: the newest input the old shard acknowledged; datagrams
    /// repeat every newer input.
    replay_after: Option<InputSeq>,
    buf: Vec<u8>,
}

/// A new shard's admission, waiting for its first snapshot to replace what the game sees.
#[derive(Debug)]
struct Pending {
    world: ClientWorld,
    welcome: WelcomeMsg,
    from: ShardId,
    /// Arrival of the last snapshot from the old shard (or the start of the switch if none).
    since: Instant,
    /// `Some(attempts)` when the new shard was reached by reconnecting through the lobby.
    reconnect: Option<u32>,
}

/// State shared by the game's handle and the driver.
#[derive(Debug)]
struct Shared {
    /// The connection inputs and pings go to.
    conn: quinn::Connection,
    /// Where control messages to the current shard go (its stream's writer task).
    control_tx: mpsc::Sender<ClientControlMsg>,
    world: ClientWorld,
    tick_hz: u16,
    stats: SessionStats,
    /// Arrival of the newest applied snapshot, for estimating the server tick between them.
    latest_at: Option<Instant>,
    /// Arrival of the newest snapshot datagram from the shard shown.
    last_snapshot_at: Option<Instant>,
    pending: Option<Pending>,
    /// A handoff or a reconnection is in flight: the old shard may close its connection
    /// meanwhile, which is no reason to refuse inputs (they are replayed to the new shard).
    switching: bool,
    /// The session reconnects by itself: an input that cannot be sent because the connection
    /// just died is no error (the driver is about to notice and reconnect).
    resilient: bool,
    /// The game left on purpose: the connection closing is no reason to reconnect.
    leaving: bool,
    input: InputState,
    /// Pending ping nonces and when they were sent.
    pings: VecDeque<(u64, Instant)>,
    /// Round trips measured by pings.
    ping_rtts: Vec<Duration>,
}

/// What the game sees of the admission; written by the driver under the [`Shared`] lock (in
/// that order), read without it so that `with_world(|w| w.entity(session.entity()))` works.
#[derive(Debug)]
struct View {
    welcome: Mutex<WelcomeMsg>,
    entity: AtomicU32,
}

impl View {
    fn set(&self, welcome: WelcomeMsg) {
        self.entity.store(welcome.entity.0, Ordering::Release);
        *self.welcome.lock().unwrap_or_else(|p| p.into_inner()) = welcome;
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // Nothing panics while holding the lock; recover the data if something did.
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// An open session with a shard (and, after handoffs, with the shards that followed).
pub struct ShardSession {
    shared: Arc<Mutex<Shared>>,
    view: Arc<View>,
    events: mpsc::Receiver<SessionEvent>,
    nonce: AtomicU64,
    driver: tokio::task::JoinHandle<()>,
}

/// A client endpoint bound to an ephemeral loopback-or-any port with large socket buffers.
pub fn client_endpoint(
    bind: SocketAddr,
    quic_cfg: &QuicConfig,
) -> std::io::Result<quinn::Endpoint> {
    let bound = quic::bind_udp_socket(bind, quic_cfg.socket_buffer_bytes)?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        bound.socket,
        Arc::new(quinn::TokioRuntime),
    )
}

/// Opens a QUIC connection to `addr`, pinning `cert_sha256`.
pub async fn connect_pinned(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    cert_sha256: CertSha256,
    quic_cfg: &QuicConfig,
) -> Result<quinn::Connection, SessionError> {
    let fail = |detail: String| SessionError::Connect { addr, detail };
    let cfg = quic::client_config(cert_sha256, quic_cfg).map_err(|e| fail(e.to_string()))?;
    endpoint
        .connect_with(cfg, addr, quic::SERVER_NAME)
        .map_err(|e| fail(e.to_string()))?
        .await
        .map_err(|e| fail(e.to_string()))
}

/// DEVELOPMENT ONLY (`--insecure-dev`): connects to `addr` accepting any certificate, and
/// returns the SHA-256 of the one it presented, for the caller to pin from then on (trust on
/// first use). The connection is closed at once.
pub async fn probe_cert_sha256(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    quic_cfg: &QuicConfig,
) -> Result<CertSha256, SessionError> {
    let fail = |detail: String| SessionError::Connect { addr, detail };
    let (cfg, seen) = quic::insecure_client_config(quic_cfg).map_err(|e| fail(e.to_string()))?;
    let conn = endpoint
        .connect_with(cfg, addr, quic::SERVER_NAME)
        .map_err(|e| fail(e.to_string()))?
        .await
        .map_err(|e| fail(e.to_string()))?;
    conn.close(quic::close_code::DONE.into(), b"certificate probe");
    let pin = *seen
        .lock()
        .map_err(|_| fail("certificate probe: lock poisoned".into()))?;
    pin.ok_or_else(|| fail("the server presented no certificate".into()))
}

/// Resolves a shard's `host:port` as sent in [`NeighbourMsg`] and [`HandoffMsg`].
pub async fn resolve_shard_addr(addr: &str) -> Result<SocketAddr, SessionError> {
    let fail = |detail: String| SessionError::Address {
        addr: addr.to_owned(),
        detail,
    };
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok(a);
    }
    tokio::net::lookup_host(addr)
        .await
        .map_err(|e| fail(e.to_string()))?
        .next()
        .ok_or_else(|| fail("no address found".into()))
}

/// How far apart the pings of one measurement leave: spread enough that one stall (a busy
/// client, a burst on the path) does not inflate every sample.
pub const PING_SPACING: Duration = Duration::from_millis(20);
/// How long a measurement waits for the last pong after the last ping.
pub const PONG_TIMEOUT: Duration = Duration::from_secs(2);

/// Most pings one measurement sends, per sample asked for: pings lost on the way (or dropped
/// while the connection settles) are replaced, up to this many.
pub const MAX_PINGS_PER_SAMPLE: u64 = 4;

/// Measures the round trip to a shard on a fresh connection: pings leave [`PING_SPACING`] apart
/// without waiting for each answer (a measurement costs about one round trip, not `samples` of
/// them) until `samples` have been answered or [`MAX_PINGS_PER_SAMPLE`] times as many were
/// sent — except that until the first pong it keeps pinging for up to 5 s, since the shard
/// drops datagrams that arrive before its side of the handshake completes. The minimum is
/// returned, since queueing only ever adds delay.
pub async fn measure_rtt(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    cert_sha256: CertSha256,
    quic_cfg: &QuicConfig,
    samples: u32,
) -> Result<Duration, SessionError> {
    let conn = connect_pinned(endpoint, addr, cert_sha256, quic_cfg).await?;
    let samples = u64::from(samples.max(1));
    let max_pings = samples * MAX_PINGS_PER_SAMPLE;
    // Indexed by nonce (0, 1, 2… in sending order); grows past `max_pings` while unanswered.
    let mut sent_at: Vec<Option<Instant>> = Vec::with_capacity(max_pings as usize);
    let mut best: Option<Duration> = None;
    let mut answered = 0;
    let mut next_nonce = 0u64;
    let mut next_send = tokio::time::Instant::now();
    let mut deadline = tokio::time::Instant::now() + PONG_TIMEOUT;
    // The shard drops every datagram that arrives before its side of the handshake completes
    // (quinn discards 1-RTT packets during the handshake), and a lost client Finished is resent
    // only after a probe timeout of a few round trips, twice that if lost again: until the
    // first pong, keep pinging past the cap for this long, or a far shard goes unmeasured.
    const FIRST_PONG_WINDOW: Duration = Duration::from_secs(5);
    let first_pong_by = tokio::time::Instant::now() + FIRST_PONG_WINDOW;
    while answered < samples {
        let sending = next_nonce < max_pings
            || (answered == 0 && tokio::time::Instant::now() < first_pong_by);
        tokio::select! {
            _ = tokio::time::sleep_until(next_send), if sending => {
                let bytes = codec::encode(&ClientDatagramMsg::Ping(PingMsg { nonce: next_nonce }))
                    .map_err(|e| SessionError::Datagram(e.to_string()))?;
                sent_at.push(Some(Instant::now()));
                conn.send_datagram(Bytes::from(bytes))
                    .map_err(|e| SessionError::Datagram(e.to_string()))?;
                next_nonce += 1;
                next_send += PING_SPACING;
                deadline = tokio::time::Instant::now() + PONG_TIMEOUT;
            }
            dg = conn.read_datagram() => {
                let Ok(dg) = dg else { break };
                if let Ok(ServerDatagramMsg::Pong(p)) = codec::decode(&dg, MAX_DATAGRAM_BYTES)
                    && let Some(Some(sent)) = sent_at.get_mut(p.nonce as usize).map(Option::take)
                {
                    let rtt = sent.elapsed();
                    best = Some(best.map_or(rtt, |b| b.min(rtt)));
                    answered += 1;
                }
            }
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    conn.close(quic::close_code::DONE.into(), b"measured");
    best.ok_or(SessionError::NoPong {
        addr,
        pings: next_nonce,
    })
}

/// A shard's answer to a hello: the control stream and the welcome, checked.
struct Admission {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    welcome: WelcomeMsg,
    quantizer: PositionQuantizer,
}

/// Sends the hello with `ticket` on a new control stream of `conn` and waits (at most
/// [`WELCOME_TIMEOUT`]) for the welcome.
async fn admit(
    conn: &quinn::Connection,
    addr: SocketAddr,
    ticket: SignedTicket,
) -> Result<Admission, SessionError> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| SessionError::Connect {
        addr,
        detail: e.to_string(),
    })?;
    let mut buf = Vec::new();
    let hello = ShardHelloMsg {
        protocol_version: PROTOCOL_VERSION,
        ticket,
    };
    stream::write_frame(&mut send, &hello, DEFAULT_MAX_FRAME, &mut buf).await?;
    let reply = tokio::time::timeout(
        WELCOME_TIMEOUT,
        stream::read_frame::<ShardControlMsg>(&mut recv, DEFAULT_MAX_FRAME, &mut buf),
    )
    .await
    .map_err(|_| SessionError::Timeout {
        addr,
        timeout: WELCOME_TIMEOUT,
    })??;
    let welcome = match reply {
        Some(ShardControlMsg::Welcome(w)) => w,
        Some(ShardControlMsg::Rejected(r)) => return Err(SessionError::Rejected(r)),
        _ => return Err(SessionError::UnexpectedReply),
    };
    let b = welcome.bounds;
    let quantizer = PositionQuantizer::new([b.min_x, b.min_y], [b.max_x, b.max_y])
        .map_err(|e| SessionError::Bounds(e.to_string()))?;
    Ok(Admission {
        send,
        recv,
        welcome,
        quantizer,
    })
}

impl ShardSession {
    /// Connects to a shard with a ticket and waits for the welcome. The session keeps a handle
    /// on `endpoint` and a copy of `quic_cfg` to follow handoffs.
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        cert_sha256: CertSha256,
        ticket: SignedTicket,
        quic_cfg: &QuicConfig,
    ) -> Result<Self, SessionError> {
        let conn = connect_pinned(endpoint, addr, cert_sha256, quic_cfg).await?;
        Self::start(endpoint, quic_cfg, conn, addr, ticket).await
    }

    /// Connects to the shard `joined` granted, with its ticket, and waits for the welcome; the
    /// session then comes back by itself through the lobby after losing its shard, under
    /// `reconnect` (see the [module documentation](self)).
    pub async fn connect_resilient(
        endpoint: &quinn::Endpoint,
        joined: &LobbyJoin,
        reconnect: Reconnect,
        quic_cfg: &QuicConfig,
    ) -> Result<Self, SessionError> {
        reconnect
            .policy
            .validate()
            .map_err(|e| SessionError::Reconnect(e.to_string()))?;
        let conn = connect_pinned(
            endpoint,
            joined.addr,
            joined.grant.shard.cert_sha256,
            quic_cfg,
        )
        .await?;
        let admission = admit(&conn, joined.addr, joined.grant.ticket.clone()).await?;
        Ok(Self::begin(
            endpoint,
            quic_cfg,
            conn,
            admission,
            Some(reconnect),
        ))
    }

    /// Starts a session on an open connection (one opened early, before the ticket arrived)
    /// made on `endpoint`; the session opens the connections of later handoffs there, with
    /// `quic_cfg`.
    pub async fn start(
        endpoint: &quinn::Endpoint,
        quic_cfg: &QuicConfig,
        conn: quinn::Connection,
        addr: SocketAddr,
        ticket: SignedTicket,
    ) -> Result<Self, SessionError> {
        let admission = admit(&conn, addr, ticket).await?;
        Ok(Self::begin(endpoint, quic_cfg, conn, admission, None))
    }

    /// The session on an admitted connection: shared state, view, driver.
    fn begin(
        endpoint: &quinn::Endpoint,
        quic_cfg: &QuicConfig,
        conn: quinn::Connection,
        admission: Admission,
        reconnect: Option<Reconnect>,
    ) -> Self {
        let Admission {
            send,
            recv,
            welcome,
            quantizer,
        } = admission;
        let mut bg = JoinSet::new();
        let (control_tx, control_rx) = spawn_link(&mut bg, send, recv);
        let shared = Arc::new(Mutex::new(Shared {
            conn: conn.clone(),
            control_tx,
            world: ClientWorld::new(quantizer),
            tick_hz: welcome.tick_hz,
            stats: SessionStats::new(welcome.shard.clone()),
            latest_at: None,
            last_snapshot_at: None,
            pending: None,
            switching: false,
            resilient: reconnect.is_some(),
            leaving: false,
            input: InputState {
                next_seq: 1,
                recent: VecDeque::with_capacity(MAX_REDUNDANT_INPUTS),
                replay_after: None,
                buf: Vec::with_capacity(256),
            },
            pings: VecDeque::new(),
            ping_rtts: Vec::new(),
        }));
        let view = Arc::new(View {
            entity: AtomicU32::new(welcome.entity.0),
            welcome: Mutex::new(welcome.clone()),
        });
        let (events_tx, events) = mpsc::channel(1024);
        let driver = Driver {
            endpoint: endpoint.clone(),
            quic: quic_cfg.clone(),
            shared: shared.clone(),
            view: view.clone(),
            events: events_tx,
            player: welcome.player,
            conn,
            shard: welcome.shard,
            control_rx,
            conn_open: true,
            control_open: true,
            warm: WarmPool::default(),
            orphans: HashSet::new(),
            bg,
            switching: None,
            reconnect,
            reconnecting: None,
        };
        Self {
            shared,
            view,
            events,
            nonce: AtomicU64::new(1),
            driver: tokio::spawn(driver.run()),
        }
    }

    /// The welcome of the shard played on now: player, entity, zone, tick rate. It changes at
    /// a handoff ([`SessionEvent::HandedOff`]).
    pub fn welcome(&self) -> WelcomeMsg {
        self.view
            .welcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The player's own entity on the shard played on now (it changes at a handoff). Takes no
    /// lock: callable inside [`Self::with_world`].
    pub fn entity(&self) -> EntityId {
        EntityId(self.view.entity.load(Ordering::Acquire))
    }

    /// The player's own entity as the newest snapshot shows it.
    pub fn own_entity(&self) -> Option<EntitySample> {
        let s = self.lock();
        s.world.entity(self.entity())
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }

    /// Sends this tick's input: move toward `heading` (radians) at `throttle` (0 to 1) of full
    /// speed. The datagram repeats the previous inputs and acknowledges the newest snapshot.
    /// During a handoff it goes to the old shard until the new one has welcomed the client;
    /// the first datagrams to the new shard repeat what the old one did not acknowledge.
    pub fn send_input(
        &mut self,
        heading: f32,
        throttle: f32,
        buttons: u8,
    ) -> Result<InputSeq, SessionError> {
        let mut s = self.lock();
        let seq = InputSeq(s.input.next_seq);
        s.input.next_seq = s.input.next_seq.wrapping_add(1);
        if s.input.recent.len() == MAX_REDUNDANT_INPUTS {
            s.input.recent.pop_front();
        }
        s.input.recent.push_back(InputFrameMsg {
            seq,
            heading: angle_to_byte(heading),
            throttle: (throttle.clamp(0.0, 1.0) * 255.0).round() as u8,
            buttons,
        });
        send_inputs(&mut s)?;
        Ok(seq)
    }

    /// Sends a ping; its round trip is recorded when the pong arrives ([`Self::ping_rtts`]).
    pub fn ping(&self) -> Result<(), SessionError> {
        let nonce = self.nonce.fetch_add(1, Ordering::Relaxed);
        let bytes = codec::encode(&ClientDatagramMsg::Ping(PingMsg { nonce }))
            .map_err(|e| SessionError::Datagram(e.to_string()))?;
        let mut s = self.lock();
        s.pings.push_back((nonce, Instant::now()));
        s.conn
            .send_datagram(Bytes::from(bytes))
            .map_err(|e| SessionError::Datagram(e.to_string()))
    }

    /// Round trips measured by pings so far.
    pub fn ping_rtts(&self) -> Vec<Duration> {
        self.lock().ping_rtts.clone()
    }

    /// Figures so far.
    pub fn stats(&self) -> SessionStats {
        let s = self.lock();
        let mut stats = s.stats.clone();
        stats.rtt = s.conn.rtt();
        stats
    }

    /// Runs `f` on the world copy (keep it short: the receiver waits meanwhile).
    pub fn with_world<R>(&self, f: impl FnOnce(&ClientWorld) -> R) -> R {
        f(&self.lock().world)
    }

    /// The entities of the newest snapshot.
    pub fn entities(&self) -> Vec<EntitySample> {
        self.lock().world.latest()
    }

    /// The server tick now, estimated from the newest snapshot and the time since it came.
    pub fn estimated_server_tick(&self) -> Option<f64> {
        let s = self.lock();
        let tick = s.world.latest_tick()?;
        let since = s.latest_at?.elapsed().as_secs_f64();
        Some(tick.0 as f64 + since * f64::from(s.tick_hz))
    }

    /// Entities interpolated `delay_ticks` behind the estimated server tick: smooth motion
    /// between snapshots at the cost of that delay.
    pub fn interpolated(&self, delay_ticks: f64) -> Vec<EntitySample> {
        let Some(now) = self.estimated_server_tick() else {
            return Vec::new();
        };
        self.lock().world.interpolated(now - delay_ticks)
    }

    /// The next event, if one is waiting.
    pub fn try_event(&mut self) -> Option<SessionEvent> {
        self.events.try_recv().ok()
    }

    /// Waits for the next event; `None` once the session is over and all events were read.
    pub async fn next_event(&mut self) -> Option<SessionEvent> {
        self.events.recv().await
    }

    /// Sends a chat line to players nearby (queued on the current shard's control stream).
    pub async fn chat(&mut self, text: &str) -> Result<(), SessionError> {
        let tx = self.lock().control_tx.clone();
        tx.send(ClientControlMsg::Chat {
            text: text.to_owned(),
        })
        .await
        .map_err(|_| SessionError::Closed)
    }

    /// True while the current connection is open.
    pub fn is_open(&self) -> bool {
        self.lock().conn.close_reason().is_none()
    }

    /// The current QUIC connection (for its statistics); another one after a handoff.
    pub fn connection(&self) -> quinn::Connection {
        self.lock().conn.clone()
    }

    /// Leaves on purpose: tells the shard, then closes.
    pub async fn leave(self) {
        let (tx, conn) = {
            let mut s = self.lock();
            s.leaving = true;
            s.resilient = false;
            (s.control_tx.clone(), s.conn.clone())
        };
        if tx.send(ClientControlMsg::Leave).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_millis(500), conn.closed()).await;
        }
        conn.close(quic::close_code::DONE.into(), b"bye");
        self.driver.abort();
    }
}

impl Drop for ShardSession {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// How many of the `recent` inputs (oldest first) the next datagram carries, from the newest
/// back: [`INPUT_REDUNDANCY`]; while a switch is not complete, every input newer than
/// `replay_after` (what the old shard acknowledged), between that and [`MAX_REDUNDANT_INPUTS`].
fn frames_to_send(recent: &VecDeque<InputFrameMsg>, replay_after: Option<InputSeq>) -> usize {
    let normal = recent.len().min(INPUT_REDUNDANCY);
    match replay_after {
        None => normal,
        Some(acked) => {
            let unacked = recent.iter().rev().take_while(|f| f.seq > acked).count();
            unacked.clamp(normal, recent.len().min(MAX_REDUNDANT_INPUTS))
        }
    }
}

/// Sends an input datagram with the inputs [`frames_to_send`] picks, on the current connection.
fn send_inputs(s: &mut Shared) -> Result<(), SessionError> {
    // A new shard's deltas must be against its own ticks: acknowledge nothing until its first
    // snapshot is in.
    let ack = if s.pending.is_some() {
        None
    } else {
        s.world.latest_tick()
    };
    let n = frames_to_send(&s.input.recent, s.input.replay_after);
    let mut inputs = BoundedVec::new();
    for f in s.input.recent.iter().skip(s.input.recent.len() - n) {
        // At most MAX_REDUNDANT_INPUTS: always fits.
        let _ = inputs.try_push(*f);
    }
    let msg = ClientDatagramMsg::Input(InputMsg { ack, inputs });
    s.input.buf.clear();
    codec::encode_into(&msg, &mut s.input.buf)
        .map_err(|e| SessionError::Datagram(e.to_string()))?;
    let len = s.input.buf.len() as u64;
    if let Err(e) = s.conn.send_datagram(Bytes::copy_from_slice(&s.input.buf)) {
        if s.switching || s.resilient {
            debug!(error = %e, "input not sent to the old shard during a handoff; it will be replayed");
            return Ok(());
        }
        return Err(SessionError::Datagram(e.to_string()));
    }
    s.stats.inputs_sent += 1;
    s.stats.bytes_up += len;
    Ok(())
}

/// A connection being opened early to a neighbouring shard; shared by the task that watches it
/// and the handoff that may use it.
type WarmConnect = SharedFuture<BoxFuture<'static, Result<quinn::Connection, String>>>;

/// What the driver's background tasks report.
enum Bg {
    /// An early connection finished opening (or failed).
    Warm {
        id: u64,
        result: Result<quinn::Connection, String>,
    },
    /// The switch to a new shard finished (or failed twice).
    Switch(Box<Result<Switched, String>>),
    /// The reconnection through the lobby finished (or gave up).
    Reconnect(Box<Result<Resumed, GaveUp>>),
    /// A stream task ended.
    Done,
}

/// A new shard's connection with its admission.
struct Switched {
    conn: quinn::Connection,
    admission: Admission,
}

/// A reconnection in flight.
struct Reconnecting {
    /// The shard lost.
    from: ShardId,
    task: tokio::task::Id,
}

/// A shard reached again through the lobby.
struct Resumed {
    conn: quinn::Connection,
    admission: Admission,
    /// The resume ticket of the new grant.
    resume: SignedTicket,
    attempts: u32,
}

/// Reconnecting stopped for good.
struct GaveUp {
    attempts: u32,
    detail: String,
}

/// A handoff in flight.
struct Switching {
    shard: ShardId,
    started: Instant,
    task: tokio::task::Id,
}

/// Whether the driver goes on.
enum Flow {
    Continue,
    End,
}

/// The session's background side: receives on the current connection, follows neighbours and
/// handoffs. One task per session; helper tasks (stream reader and writer per connection,
/// early connections, the switch) live in its `bg` set and die with it.
struct Driver {
    endpoint: quinn::Endpoint,
    quic: QuicConfig,
    shared: Arc<Mutex<Shared>>,
    view: Arc<View>,
    events: mpsc::Sender<SessionEvent>,
    player: meridian_protocol::PlayerId,
    /// The current connection (a clone of `Shared::conn`).
    conn: quinn::Connection,
    /// The current connection's shard.
    shard: ShardId,
    control_rx: mpsc::Receiver<ShardControlMsg>,
    conn_open: bool,
    control_open: bool,
    warm: WarmPool<WarmConnect>,
    /// Early connections dropped from the pool before they finished opening: closed when they
    /// do.
    orphans: HashSet<u64>,
    bg: JoinSet<Bg>,
    switching: Option<Switching>,
    /// How to come back after losing the shard; `None`: the session ends instead.
    reconnect: Option<Reconnect>,
    /// A reconnection in flight.
    reconnecting: Option<Reconnecting>,
}

/// Starts the reader and writer tasks of a connection's control stream.
fn spawn_link(
    bg: &mut JoinSet<Bg>,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) -> (
    mpsc::Sender<ClientControlMsg>,
    mpsc::Receiver<ShardControlMsg>,
) {
    let (in_tx, in_rx) = mpsc::channel(CONTROL_QUEUE);
    let (out_tx, out_rx) = mpsc::channel(CONTROL_QUEUE);
    bg.spawn(read_control(recv, in_tx));
    bg.spawn(write_control(send, out_rx));
    (out_tx, in_rx)
}

/// Reads control frames until the stream or the connection ends (a frame read is not
/// cancel-safe, so it has a task of its own rather than a branch of the driver's select).
async fn read_control(mut recv: quinn::RecvStream, tx: mpsc::Sender<ShardControlMsg>) -> Bg {
    let mut buf = Vec::new();
    loop {
        match stream::read_frame::<ShardControlMsg>(&mut recv, DEFAULT_MAX_FRAME, &mut buf).await {
            Ok(Some(msg)) => {
                if tx.send(msg).await.is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                debug!(error = %e, "control stream ended");
                break;
            }
        }
    }
    Bg::Done
}

/// Writes control frames until every sender is gone; finishes the stream after a leave.
async fn write_control(
    mut send: quinn::SendStream,
    mut rx: mpsc::Receiver<ClientControlMsg>,
) -> Bg {
    let mut buf = Vec::new();
    while let Some(msg) = rx.recv().await {
        let leaving = msg == ClientControlMsg::Leave;
        if let Err(e) = stream::write_frame(&mut send, &msg, DEFAULT_MAX_FRAME, &mut buf).await {
            debug!(error = %e, "control stream write failed");
            break;
        }
        if leaving {
            let _ = send.finish();
            break;
        }
    }
    Bg::Done
}

/// True while an early connection is opening or open.
fn warm_alive(c: &WarmConnect) -> bool {
    match c.peek() {
        None => true,
        Some(Ok(conn)) => conn.close_reason().is_none(),
        Some(Err(_)) => false,
    }
}

/// One attempt at joining the new shard: on `conn` if given, else on a new connection.
async fn attempt_switch(
    endpoint: &quinn::Endpoint,
    quic_cfg: &QuicConfig,
    target: &HandoffMsg,
    conn: Option<quinn::Connection>,
) -> Result<Switched, SessionError> {
    let conn = match conn {
        Some(c) => c,
        None => {
            let addr = resolve_shard_addr(&target.addr).await?;
            tokio::time::timeout(
                WELCOME_TIMEOUT,
                connect_pinned(endpoint, addr, target.cert_sha256, quic_cfg),
            )
            .await
            .map_err(|_| SessionError::Timeout {
                addr,
                timeout: WELCOME_TIMEOUT,
            })??
        }
    };
    match admit(&conn, conn.remote_address(), target.ticket.clone()).await {
        Ok(admission) => Ok(Switched { conn, admission }),
        Err(e) => {
            conn.close(quic::close_code::DONE.into(), b"handoff refused");
            Err(e)
        }
    }
}

/// Joins the new shard: on the early connection if it opened, then once more on a fresh one.
async fn switch_shard(
    endpoint: quinn::Endpoint,
    quic_cfg: QuicConfig,
    target: HandoffMsg,
    warm: Option<WarmConnect>,
) -> Result<Switched, String> {
    let early = match warm {
        Some(w) => match w.await {
            Ok(c) if c.close_reason().is_none() => Some(c),
            Ok(_) => {
                debug!("early connection closed before the handoff; connecting now");
                None
            }
            Err(detail) => {
                debug!(%detail, "early connection failed; connecting now");
                None
            }
        },
        None => None,
    };
    let used_early = early.is_some();
    let first = match attempt_switch(&endpoint, &quic_cfg, &target, early).await {
        Ok(s) => return Ok(s),
        Err(e) => e,
    };
    if !worth_retrying(&first) {
        // The ticket is single-use: once the shard read the hello, the same ticket again can
        // only be refused as a replay.
        return Err(first.to_string());
    }
    debug!(error = %first, used_early, "handoff attempt failed; retrying on a fresh connection");
    attempt_switch(&endpoint, &quic_cfg, &target, None)
        .await
        .map_err(|second| format!("{second} (first attempt: {first})"))
}

/// Longest one reconnection attempt (join through the lobby, measurements, admission by the
/// shard) may take.
pub const RECONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

/// Why one reconnection attempt failed, and what to do next.
enum AttemptError {
    /// Try again after the backoff, and at least `after` if given.
    Retry {
        after: Option<Duration>,
        detail: String,
    },
    /// The resume ticket was refused: go on joining by name.
    DropResume(String),
    /// No retry can help.
    Fatal(String),
}

/// One attempt: join through the lobby with the resume ticket, then the shard granted.
async fn attempt_resume(
    endpoint: &quinn::Endpoint,
    quic_cfg: &QuicConfig,
    r: &Reconnect,
) -> Result<Resumed, AttemptError> {
    let joined = lobby::join(
        endpoint,
        r.lobby,
        r.lobby_pin,
        &r.name,
        r.resume.clone(),
        quic_cfg,
    )
    .await
    .map_err(|e| {
        let detail = e.to_string();
        match e.retry() {
            JoinRetry::Backoff => AttemptError::Retry {
                after: None,
                detail,
            },
            JoinRetry::After(after) => AttemptError::Retry {
                after: Some(after),
                detail,
            },
            JoinRetry::WithoutResume => AttemptError::DropResume(detail),
            JoinRetry::Never => AttemptError::Fatal(detail),
        }
    })?;
    let retry = |e: SessionError| {
        let after = match &e {
            SessionError::Rejected(RejectMsg {
                reason: meridian_protocol::handshake::RejectReason::Unavailable { retry_after_ms },
                ..
            }) => Some(Duration::from_millis(u64::from(*retry_after_ms))),
            _ => None,
        };
        AttemptError::Retry {
            after,
            detail: format!("shard {}: {e}", joined.grant.shard.shard),
        }
    };
    let conn = connect_pinned(
        endpoint,
        joined.addr,
        joined.grant.shard.cert_sha256,
        quic_cfg,
    )
    .await
    .map_err(retry)?;
    match admit(&conn, joined.addr, joined.grant.ticket.clone()).await {
        Ok(admission) => Ok(Resumed {
            conn,
            admission,
            resume: joined.grant.resume,
            attempts: 0,
        }),
        Err(e) => {
            conn.close(quic::close_code::DONE.into(), b"admission refused");
            Err(retry(e))
        }
    }
}

/// Comes back through the lobby: attempts until one works, a refusal no retry can change, or
/// [`ReconnectPolicy::give_up_after`]. Each attempt waits its [`ReconnectPolicy::delay`]
/// first (drawn from an RNG seeded with `seed`), plus what the lobby asked for.
async fn reconnect_through_lobby(
    endpoint: quinn::Endpoint,
    quic_cfg: QuicConfig,
    mut r: Reconnect,
    seed: u64,
) -> Result<Resumed, GaveUp> {
    let give_up_at = tokio::time::Instant::now() + r.policy.give_up_after;
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(seed);
    let mut attempts = 0u32;
    let mut at_least = Duration::ZERO;
    let mut last = String::from("no attempt was made");
    loop {
        let pause = at_least + r.policy.delay(attempts, rng.random::<f64>());
        let start_at = tokio::time::Instant::now() + pause;
        if start_at >= give_up_at {
            return Err(GaveUp {
                attempts,
                detail: format!(
                    "no shard within {:?} ({attempts} attempts); last error: {last}",
                    r.policy.give_up_after
                ),
            });
        }
        tokio::time::sleep_until(start_at).await;
        attempts += 1;
        let budget = give_up_at
            .saturating_duration_since(tokio::time::Instant::now())
            .min(RECONNECT_ATTEMPT_TIMEOUT);
        at_least = Duration::ZERO;
        match tokio::time::timeout(budget, attempt_resume(&endpoint, &quic_cfg, &r)).await {
            Ok(Ok(mut resumed)) => {
                resumed.attempts = attempts;
                return Ok(resumed);
            }
            Ok(Err(AttemptError::Retry { after, detail })) => {
                at_least = after.unwrap_or_default();
                last = detail;
            }
            Ok(Err(AttemptError::DropResume(detail))) => {
                // Expired or unknown: the name still says who the player is.
                r.resume = None;
                last = detail;
            }
            Ok(Err(AttemptError::Fatal(detail))) => {
                return Err(GaveUp {
                    attempts,
                    detail: format!("refused for good: {detail}"),
                });
            }
            Err(_) => last = format!("attempt {attempts} took longer than {budget:?}"),
        }
        debug!(attempt = attempts, error = %last, "reconnect attempt failed");
    }
}

/// A failed handoff attempt is retried when the ticket was not spent: the connection could not
/// be made, or the shard said "unavailable, retry" (it forgets the nonce then).
fn worth_retrying(error: &SessionError) -> bool {
    match error {
        SessionError::Connect { .. } | SessionError::Address { .. } => true,
        SessionError::Rejected(r) => matches!(
            r.reason,
            meridian_protocol::handshake::RejectReason::Unavailable { .. }
        ),
        _ => false,
    }
}

impl Driver {
    async fn run(mut self) {
        loop {
            if !self.conn_open
                && !self.control_open
                && self.switching.is_none()
                && self.reconnecting.is_none()
            {
                let reason = self
                    .conn
                    .close_reason()
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "closed".into());
                if self.reconnect.is_some() && !lock(&self.shared).leaving {
                    self.start_reconnect(format!("connection lost: {reason}"))
                        .await;
                    continue;
                }
                self.emit(SessionEvent::Closed(reason)).await;
                return;
            }
            let expiry = self.warm.next_expiry().map(tokio::time::Instant::from_std);
            let flow = tokio::select! {
                dg = self.conn.read_datagram(), if self.conn_open => {
                    match dg {
                        Ok(bytes) => self.on_datagram(bytes).await,
                        Err(e) => {
                            debug!(error = %e, shard = %self.shard, "connection ended");
                            self.conn_open = false;
                        }
                    }
                    Flow::Continue
                }
                msg = self.control_rx.recv(), if self.control_open => {
                    match msg {
                        Some(msg) => self.on_control(msg).await,
                        None => self.control_open = false,
                    }
                    Flow::Continue
                }
                Some(done) = self.bg.join_next_with_id(), if !self.bg.is_empty() => {
                    self.on_background(done).await
                }
                _ = tokio::time::sleep_until(expiry.unwrap_or_else(tokio::time::Instant::now)),
                    if expiry.is_some() => {
                    self.expire_warm();
                    Flow::Continue
                }
                // Cannot happen (a switch in flight is a background task), but never spin.
                else => {
                    self.emit(SessionEvent::Closed("session ended".into())).await;
                    Flow::End
                }
            };
            if let Flow::End = flow {
                return;
            }
        }
    }

    /// Queues an event for the game. Endings wait for room; others are dropped (and counted)
    /// if the game lets the queue fill, so that the driver never stalls on a game that does not
    /// read events.
    async fn emit(&self, event: SessionEvent) {
        let ending = matches!(
            event,
            SessionEvent::Kicked(_)
                | SessionEvent::Closed(_)
                | SessionEvent::HandoffFailed { .. }
                | SessionEvent::Disconnected { .. }
                | SessionEvent::Reconnected { .. }
        );
        if ending {
            let _ = self.events.send(event).await;
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(event)) = self.events.try_send(event) {
            debug!(?event, "event queue full; event dropped");
            lock(&self.shared).stats.events_dropped += 1;
        }
    }

    async fn on_datagram(&mut self, bytes: Bytes) {
        let msg = codec::decode::<ServerDatagramMsg>(&bytes, MAX_DATAGRAM_BYTES);
        let now = Instant::now();
        let event = {
            let mut guard = lock(&self.shared);
            let s = &mut *guard;
            s.stats.bytes_down += bytes.len() as u64;
            let mut event = None;
            match msg {
                Ok(ServerDatagramMsg::Snapshot(snap)) => {
                    if let Some(p) = s.pending.take() {
                        event = Some(promote(&self.view, s, p, now));
                    }
                    s.last_snapshot_at = Some(now);
                    s.stats.snapshots += 1;
                    s.stats.input_ack = s.stats.input_ack.max(snap.input_ack);
                    match s.world.apply(&snap) {
                        Ok(()) => {
                            if s.world.latest_tick() == Some(snap.tick) {
                                s.latest_at = Some(now);
                                s.stats.latest_tick = Some(snap.tick);
                            }
                        }
                        Err(e) => {
                            s.stats.snapshots_unusable += 1;
                            debug!(error = %e, "snapshot not applied");
                        }
                    }
                }
                Ok(ServerDatagramMsg::Pong(p)) => {
                    if let Some(i) = s.pings.iter().position(|(n, _)| *n == p.nonce)
                        && let Some((_, sent)) = s.pings.remove(i)
                    {
                        s.ping_rtts.push(sent.elapsed());
                    }
                }
                Err(e) => debug!(error = %e, "malformed datagram from shard"),
            }
            event
        };
        if let Some(event) = event {
            if let SessionEvent::Reconnected {
                shard,
                out_for,
                attempts,
            } = &event
            {
                info!(player = %self.player, %shard, out_ms = out_for.as_millis() as u64, attempts, "playing again after a reconnection");
            }
            self.emit(event).await;
        }
    }

    async fn on_control(&mut self, msg: ShardControlMsg) {
        match msg {
            ShardControlMsg::Score(s) => {
                self.emit(SessionEvent::Score {
                    total: s.total,
                    delta: s.delta,
                })
                .await;
            }
            ShardControlMsg::Chat(c) => {
                self.emit(SessionEvent::Chat {
                    from: c.from,
                    text: c.text,
                })
                .await;
            }
            ShardControlMsg::Kick(k) => match &self.switching {
                // The old shard let go of the player; the new one decides now.
                Some(sw) => {
                    debug!(reason = ?k.reason, to = %sw.shard, "kick from the old shard ignored during a handoff")
                }
                None if self.reconnect.is_some() && reconnect_hint(k.reason) => {
                    self.start_reconnect(format!("kicked ({:?}): {}", k.reason, k.detail))
                        .await;
                }
                None => {
                    // Kicked for good: no coming back.
                    self.reconnect = None;
                    lock(&self.shared).resilient = false;
                    self.emit(SessionEvent::Kicked(k)).await;
                }
            },
            ShardControlMsg::Neighbour(n) => self.on_neighbour(n),
            ShardControlMsg::Handoff(h) => self.on_handoff(h),
            other @ (ShardControlMsg::Welcome(_) | ShardControlMsg::Rejected(_)) => {
                debug!(?other, "unexpected control message");
            }
        }
    }

    fn on_neighbour(&mut self, n: NeighbourMsg) {
        let target = WarmTarget {
            zone: n.zone,
            shard: n.shard,
            addr: n.addr,
            cert: n.cert_sha256,
        };
        let (bg, endpoint, quic_cfg) = (&mut self.bg, &self.endpoint, &self.quic);
        let closed = self.warm.neighbour(Instant::now(), target, warm_alive, |id, t| {
            let (endpoint, quic_cfg, addr, cert) =
                (endpoint.clone(), quic_cfg.clone(), t.addr.clone(), t.cert);
            debug!(zone = %t.zone, shard = %t.shard, addr = %t.addr, "opening an early connection");
            let connect: WarmConnect = async move {
                let sa = resolve_shard_addr(&addr).await.map_err(|e| e.to_string())?;
                connect_pinned(&endpoint, sa, cert, &quic_cfg)
                    .await
                    .map_err(|e| e.to_string())
            }
            .boxed()
            .shared();
            let watch = connect.clone();
            bg.spawn(async move {
                Bg::Warm {
                    id,
                    result: watch.await,
                }
            });
            connect
        });
        for (id, c) in closed {
            self.close_warm(id, &c);
        }
    }

    /// Closes an early connection leaving the pool (or marks it, to close once it opens).
    fn close_warm(&mut self, id: u64, c: &WarmConnect) {
        match c.peek() {
            Some(Ok(conn)) => conn.close(quic::close_code::DONE.into(), b"unused"),
            Some(Err(_)) => {}
            None => {
                self.orphans.insert(id);
            }
        }
    }

    fn expire_warm(&mut self) {
        for (id, c) in self.warm.expire(Instant::now()) {
            debug!(id, "early connection unused; closing it");
            self.close_warm(id, &c);
        }
    }

    fn on_handoff(&mut self, h: HandoffMsg) {
        if let Some(sw) = &self.switching {
            debug!(to = %h.shard, in_flight = %sw.shard, "handoff ignored: one is in flight");
            return;
        }
        let warm = self
            .warm
            .take(&h.shard, &h.zone, h.cert_sha256)
            .map(|(_, c)| c);
        let span = debug_span!("handoff", player = %self.player, from = %self.shard, to = %h.shard, zone = %h.zone, early = warm.is_some());
        span.in_scope(|| debug!(addr = %h.addr, "switching shard"));
        let shard = h.shard.clone();
        let task = self
            .bg
            .spawn(
                switch_shard(self.endpoint.clone(), self.quic.clone(), h, warm)
                    .map(|r| Bg::Switch(Box::new(r)))
                    .instrument(span),
            )
            .id();
        self.switching = Some(Switching {
            shard,
            started: Instant::now(),
            task,
        });
        lock(&self.shared).switching = true;
    }

    async fn on_background(
        &mut self,
        done: Result<(tokio::task::Id, Bg), tokio::task::JoinError>,
    ) -> Flow {
        match done {
            Ok((_, Bg::Done)) => Flow::Continue,
            Ok((
                _,
                Bg::Warm {
                    id: warm_id,
                    result,
                },
            )) => {
                match result {
                    Ok(conn) => {
                        lock(&self.shared).stats.warm_connections += 1;
                        if self.orphans.remove(&warm_id) {
                            conn.close(quic::close_code::DONE.into(), b"unused");
                        }
                    }
                    Err(detail) => {
                        debug!(%detail, "early connection failed");
                        self.orphans.remove(&warm_id);
                        self.warm.remove(warm_id);
                        lock(&self.shared).stats.warm_failures += 1;
                    }
                }
                Flow::Continue
            }
            Ok((_, Bg::Switch(result))) => match *result {
                Ok(switched) => {
                    self.on_switched(switched);
                    Flow::Continue
                }
                Err(detail) => self.on_switch_failed(detail).await,
            },
            Ok((_, Bg::Reconnect(result))) => match *result {
                Ok(resumed) => {
                    self.on_resumed(resumed);
                    Flow::Continue
                }
                Err(gave_up) => self.on_reconnect_failed(gave_up).await,
            },
            Err(e) => {
                if self.switching.as_ref().is_some_and(|sw| sw.task == e.id()) {
                    self.on_switch_failed(format!("handoff task ended: {e}"))
                        .await
                } else if self.reconnecting.as_ref().is_some_and(|r| r.task == e.id()) {
                    self.on_reconnect_failed(GaveUp {
                        attempts: 0,
                        detail: format!("reconnect task ended: {e}"),
                    })
                    .await
                } else {
                    debug!(error = %e, "background task ended");
                    Flow::Continue
                }
            }
        }
    }

    /// The new shard welcomed the client: inputs go there now; what the game sees follows at
    /// its first snapshot.
    fn on_switched(&mut self, switched: Switched) {
        let started = self
            .switching
            .take()
            .map_or_else(Instant::now, |sw| sw.started);
        let Switched { conn, admission } = switched;
        let Admission {
            send,
            recv,
            welcome,
            quantizer,
        } = admission;
        let (control_tx, control_rx) = spawn_link(&mut self.bg, send, recv);
        let old_conn = std::mem::replace(&mut self.conn, conn.clone());
        let old_shard = std::mem::replace(&mut self.shard, welcome.shard.clone());
        let to = welcome.shard.clone();
        {
            let mut guard = lock(&self.shared);
            let s = &mut *guard;
            // If the previous switch never got its first snapshot, the game still sees the
            // shard before it: the blackout runs from there.
            let (from, since) = match s.pending.take() {
                Some(p) => (p.from, p.since),
                None => (old_shard, s.last_snapshot_at.unwrap_or(started)),
            };
            s.pending = Some(Pending {
                world: ClientWorld::new(quantizer),
                welcome,
                from,
                since,
                reconnect: None,
            });
            s.conn = conn;
            s.control_tx = control_tx;
            s.switching = false;
            let acked = s.stats.input_ack;
            s.input.replay_after = Some(s.input.replay_after.map_or(acked, |r| r.min(acked)));
            if !s.input.recent.is_empty()
                && let Err(e) = send_inputs(s)
            {
                debug!(error = %e, "input replay to the new shard not sent");
            }
        }
        old_conn.close(quic::close_code::DONE.into(), b"handed off");
        self.control_rx = control_rx;
        self.conn_open = true;
        self.control_open = true;
        info!(player = %self.player, to = %to, "switched shard; waiting for its first snapshot");
    }

    /// The shard is lost: closes what is left of its connection and starts coming back
    /// through the lobby (the caller checked that the session may).
    async fn start_reconnect(&mut self, reason: String) {
        let Some(r) = self.reconnect.clone() else {
            return;
        };
        warn!(player = %self.player, shard = %self.shard, %reason, "shard lost; reconnecting through the lobby");
        self.conn
            .close(quic::close_code::DONE.into(), b"reconnecting");
        self.conn_open = false;
        self.control_open = false;
        lock(&self.shared).switching = true;
        let span = debug_span!("reconnect", player = %self.player, from = %self.shard);
        let task = self
            .bg
            .spawn(
                reconnect_through_lobby(
                    self.endpoint.clone(),
                    self.quic.clone(),
                    r,
                    random_nonce(),
                )
                .map(|r| Bg::Reconnect(Box::new(r)))
                .instrument(span),
            )
            .id();
        self.reconnecting = Some(Reconnecting {
            from: self.shard.clone(),
            task,
        });
        self.emit(SessionEvent::Disconnected {
            shard: self.shard.clone(),
            reason,
        })
        .await;
    }

    /// A shard admitted the player again: inputs go there now; what the game sees follows at
    /// its first snapshot, which reports [`SessionEvent::Reconnected`].
    fn on_resumed(&mut self, resumed: Resumed) {
        let lost = self
            .reconnecting
            .take()
            .map_or_else(|| self.shard.clone(), |r| r.from);
        let Resumed {
            conn,
            admission,
            resume,
            attempts,
        } = resumed;
        if let Some(r) = &mut self.reconnect {
            r.resume = Some(resume);
        }
        let Admission {
            send,
            recv,
            welcome,
            quantizer,
        } = admission;
        let (control_tx, control_rx) = spawn_link(&mut self.bg, send, recv);
        self.conn = conn.clone();
        self.shard = welcome.shard.clone();
        let to = welcome.shard.clone();
        {
            let mut guard = lock(&self.shared);
            let s = &mut *guard;
            let now = Instant::now();
            let (from, since) = match s.pending.take() {
                Some(p) => (p.from, p.since),
                None => (lost, s.last_snapshot_at.unwrap_or(now)),
            };
            s.pending = Some(Pending {
                world: ClientWorld::new(quantizer),
                welcome,
                from,
                since,
                reconnect: Some(attempts),
            });
            s.conn = conn;
            s.control_tx = control_tx;
            s.switching = false;
            s.input.replay_after = None;
        }
        self.control_rx = control_rx;
        self.conn_open = true;
        self.control_open = true;
        info!(player = %self.player, to = %to, attempts, "reconnected; waiting for the first snapshot");
    }

    /// Reconnecting gave up: the session ends.
    async fn on_reconnect_failed(&mut self, gave_up: GaveUp) -> Flow {
        self.reconnecting = None;
        self.reconnect = None;
        {
            let mut s = lock(&self.shared);
            s.stats.reconnect_failures += 1;
            s.switching = false;
            s.resilient = false;
        }
        warn!(player = %self.player, attempts = gave_up.attempts, detail = %gave_up.detail, "reconnecting gave up; the session ends");
        self.emit(SessionEvent::Closed(format!(
            "reconnecting gave up after {} attempts: {}",
            gave_up.attempts, gave_up.detail
        )))
        .await;
        Flow::End
    }

    async fn on_switch_failed(&mut self, detail: String) -> Flow {
        let shard = self
            .switching
            .take()
            .map_or_else(|| self.shard.clone(), |sw| sw.shard);
        if self.reconnect.is_some() {
            {
                let mut s = lock(&self.shared);
                s.stats.handoff_failures += 1;
                s.switching = false;
            }
            self.start_reconnect(format!("handoff to {shard} failed: {detail}"))
                .await;
            return Flow::Continue;
        }
        warn!(player = %self.player, from = %self.shard, to = %shard, %detail, "handoff failed; the session ends");
        {
            let mut s = lock(&self.shared);
            s.stats.handoff_failures += 1;
            s.switching = false;
        }
        self.conn
            .close(quic::close_code::DONE.into(), b"handoff failed");
        self.emit(SessionEvent::HandoffFailed {
            shard: shard.clone(),
            detail,
        })
        .await;
        self.emit(SessionEvent::Closed(format!("handoff to {shard} failed")))
            .await;
        Flow::End
    }
}

/// The new shard's first snapshot arrived: what the game sees moves to it.
fn promote(view: &View, s: &mut Shared, p: Pending, now: Instant) -> SessionEvent {
    let blackout = now.saturating_duration_since(p.since);
    let event = match p.reconnect {
        Some(attempts) => SessionEvent::Reconnected {
            shard: p.welcome.shard.clone(),
            out_for: blackout,
            attempts,
        },
        None => SessionEvent::HandedOff {
            from: p.from,
            to: p.welcome.shard.clone(),
            zone: p.welcome.zone.clone(),
            blackout,
        },
    };
    s.world = p.world;
    s.tick_hz = p.welcome.tick_hz;
    s.latest_at = None;
    s.stats.latest_tick = None;
    s.stats.shard = p.welcome.shard.clone();
    let kept = if p.reconnect.is_some() {
        s.stats.reconnects += 1;
        &mut s.stats.outages
    } else {
        s.stats.handoffs += 1;
        &mut s.stats.blackouts
    };
    if kept.len() == MAX_BLACKOUTS_KEPT {
        kept.remove(0);
    }
    kept.push(blackout);
    s.input.replay_after = None;
    view.set(p.welcome);
    event
}

/// A neighbouring shard to keep an early connection to.
#[derive(Clone, Debug, PartialEq)]
struct WarmTarget {
    zone: ZoneId,
    shard: ShardId,
    addr: String,
    cert: CertSha256,
}

#[derive(Debug)]
struct WarmEntry<H> {
    id: u64,
    target: WarmTarget,
    conn: H,
    last_used: Instant,
}

/// The early connections, keyed by zone: which to open, replace, hand to a handoff, close.
/// Pure bookkeeping over connection handles `H` (time comes in as `now`).
#[derive(Debug)]
struct WarmPool<H> {
    entries: Vec<WarmEntry<H>>,
    next_id: u64,
}

impl<H> Default for WarmPool<H> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            next_id: 1,
        }
    }
}

impl<H> WarmPool<H> {
    /// A neighbour was announced. The same neighbour with a live connection only counts as a
    /// use; otherwise `open(id, target)` makes a connection, after removing the zone's previous
    /// one (its shard, address or certificate changed, or it died) and, past
    /// [`MAX_WARM_CONNECTIONS`], the least recently used. Returns the removed ones, to close.
    fn neighbour(
        &mut self,
        now: Instant,
        target: WarmTarget,
        alive: impl Fn(&H) -> bool,
        open: impl FnOnce(u64, &WarmTarget) -> H,
    ) -> Vec<(u64, H)> {
        let mut removed = Vec::new();
        if let Some(i) = self
            .entries
            .iter()
            .position(|e| e.target.zone == target.zone)
        {
            let e = &mut self.entries[i];
            if e.target == target && alive(&e.conn) {
                e.last_used = now;
                return removed;
            }
            let old = self.entries.swap_remove(i);
            removed.push((old.id, old.conn));
        }
        while self.entries.len() >= MAX_WARM_CONNECTIONS {
            let Some(i) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i)
            else {
                break;
            };
            let old = self.entries.swap_remove(i);
            removed.push((old.id, old.conn));
        }
        let id = self.next_id;
        self.next_id += 1;
        let conn = open(id, &target);
        self.entries.push(WarmEntry {
            id,
            target,
            conn,
            last_used: now,
        });
        removed
    }

    /// Takes the connection for a handoff to `shard`: the one of `zone` if it is that shard's,
    /// else any to that shard, with the same certificate.
    fn take(&mut self, shard: &ShardId, zone: &ZoneId, cert: CertSha256) -> Option<(u64, H)> {
        let fits = |e: &WarmEntry<H>| &e.target.shard == shard && e.target.cert == cert;
        let i = self
            .entries
            .iter()
            .position(|e| fits(e) && &e.target.zone == zone)
            .or_else(|| self.entries.iter().position(fits))?;
        let e = self.entries.swap_remove(i);
        Some((e.id, e.conn))
    }

    /// Removes the connections unused for [`WARM_IDLE`]; returns them, to close.
    fn expire(&mut self, now: Instant) -> Vec<(u64, H)> {
        let mut removed = Vec::new();
        let mut i = 0;
        while i < self.entries.len() {
            if now.saturating_duration_since(self.entries[i].last_used) >= WARM_IDLE {
                let e = self.entries.swap_remove(i);
                removed.push((e.id, e.conn));
            } else {
                i += 1;
            }
        }
        removed
    }

    /// When the next connection becomes unused for [`WARM_IDLE`].
    fn next_expiry(&self) -> Option<Instant> {
        self.entries.iter().map(|e| e.last_used + WARM_IDLE).min()
    }

    /// Removes one connection (it failed to open).
    fn remove(&mut self, id: u64) -> Option<H> {
        let i = self.entries.iter().position(|e| e.id == id)?;
        Some(self.entries.swap_remove(i).conn)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(zone: &str, shard: &str) -> WarmTarget {
        WarmTarget {
            zone: ZoneId::new(zone).expect("zone"),
            shard: ShardId::new(shard).expect("shard"),
            addr: format!("{shard}:4433"),
            cert: [7; 32],
        }
    }

    /// Opens "connections" named by their id, recording each.
    fn open_into(opened: &mut Vec<u64>) -> impl FnOnce(u64, &WarmTarget) -> u64 + '_ {
        |id, _| {
            opened.push(id);
            id
        }
    }

    #[test]
    fn a_repeated_neighbour_reuses_its_connection_and_a_new_shard_replaces_it() {
        let mut pool = WarmPool::default();
        let mut opened = Vec::new();
        let t0 = Instant::now();
        let closed = pool.neighbour(t0, target("east", "s1"), |_| true, open_into(&mut opened));
        assert!(closed.is_empty());
        let closed = pool.neighbour(t0, target("east", "s1"), |_| true, open_into(&mut opened));
        assert!(closed.is_empty());
        assert_eq!(
            opened,
            vec![1],
            "the same neighbour opens no second connection"
        );
        // The zone's shard changed: the old connection goes, a new one opens.
        let closed = pool.neighbour(t0, target("east", "s2"), |_| true, open_into(&mut opened));
        assert_eq!(closed, vec![(1, 1)]);
        assert_eq!(opened, vec![1, 2]);
        // A dead connection to the same neighbour is replaced too.
        let closed = pool.neighbour(t0, target("east", "s2"), |_| false, open_into(&mut opened));
        assert_eq!(closed, vec![(2, 2)]);
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn at_most_four_connections_the_least_recently_used_goes() {
        let mut pool = WarmPool::default();
        let mut opened = Vec::new();
        let t0 = Instant::now();
        for (i, zone) in ["a", "b", "c", "d"].into_iter().enumerate() {
            let at = t0 + Duration::from_secs(i as u64);
            let closed = pool.neighbour(at, target(zone, zone), |_| true, open_into(&mut opened));
            assert!(closed.is_empty());
        }
        // "a" is used again, so "b" is now the least recently used.
        pool.neighbour(
            t0 + Duration::from_secs(5),
            target("a", "a"),
            |_| true,
            open_into(&mut opened),
        );
        let closed = pool.neighbour(
            t0 + Duration::from_secs(6),
            target("e", "e"),
            |_| true,
            open_into(&mut opened),
        );
        assert_eq!(closed, vec![(2, 2)]);
        assert_eq!(pool.len(), MAX_WARM_CONNECTIONS);
    }

    #[test]
    fn unused_connections_expire_after_the_idle_time() {
        let mut pool = WarmPool::default();
        let mut opened = Vec::new();
        let t0 = Instant::now();
        pool.neighbour(t0, target("a", "a"), |_| true, open_into(&mut opened));
        pool.neighbour(
            t0 + Duration::from_secs(10),
            target("b", "b"),
            |_| true,
            open_into(&mut opened),
        );
        assert_eq!(pool.next_expiry(), Some(t0 + WARM_IDLE));
        assert!(
            pool.expire(t0 + WARM_IDLE - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(pool.expire(t0 + WARM_IDLE), vec![(1, 1)]);
        assert_eq!(
            pool.next_expiry(),
            Some(t0 + Duration::from_secs(10) + WARM_IDLE)
        );
        assert_eq!(pool.expire(t0 + Duration::from_secs(60)), vec![(2, 2)]);
        assert_eq!(pool.next_expiry(), None);
    }

    #[test]
    fn a_handoff_takes_the_connection_of_its_shard_and_certificate() {
        let mut pool = WarmPool::default();
        let mut opened = Vec::new();
        let t0 = Instant::now();
        pool.neighbour(t0, target("east", "s1"), |_| true, open_into(&mut opened));
        pool.neighbour(t0, target("north", "s2"), |_| true, open_into(&mut opened));
        let east = ZoneId::new("east").expect("zone");
        let s2 = ShardId::new("s2").expect("shard");
        assert_eq!(pool.take(&s2, &east, [8; 32]), None, "another certificate");
        // No connection for (s2, east), but one to s2 for another zone serves.
        assert_eq!(pool.take(&s2, &east, [7; 32]), Some((2, 2)));
        assert_eq!(pool.take(&s2, &east, [7; 32]), None, "taken once");
        assert_eq!(pool.remove(1), Some(1));
        assert_eq!(pool.len(), 0);
    }

    fn frame(seq: u32) -> InputFrameMsg {
        InputFrameMsg {
            seq: InputSeq(seq),
            heading: 0,
            throttle: 0,
            buttons: 0,
        }
    }

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap_with_full_jitter() {
        let p = ReconnectPolicy::default();
        assert_eq!(p.validate(), Ok(()));
        let ms = Duration::from_millis;
        let ceilings: Vec<Duration> = (0..7).map(|a| p.ceiling(a)).collect();
        assert_eq!(
            ceilings,
            vec![
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(2000),
                ms(2000)
            ]
        );
        // Far attempts neither overflow nor pass the cap.
        assert_eq!(p.ceiling(u32::MAX), ms(2000));
        // Full jitter: anywhere from nothing to the ceiling.
        assert_eq!(p.delay(3, 0.0), Duration::ZERO);
        assert_eq!(p.delay(3, 0.5), ms(400));
        assert!(p.delay(3, 0.999_999) < ms(800));
        assert_eq!(p.delay(3, 7.0), ms(800), "the draw is clamped to [0, 1]");
        assert_eq!(p.delay(3, -1.0), Duration::ZERO);
    }

    #[test]
    fn seeded_delays_spread_the_clients_of_one_shard() {
        // A hundred clients that lost the same shard, each with its own seed: their first
        // delays are spread over the whole first ceiling, not bunched at one instant.
        let p = ReconnectPolicy::default();
        let delays: Vec<Duration> = (0..100u64)
            .map(|seed| {
                let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(seed);
                p.delay(0, rng.random::<f64>())
            })
            .collect();
        let early = delays
            .iter()
            .filter(|d| **d < Duration::from_millis(50))
            .count();
        assert!(
            (20..=80).contains(&early),
            "{early} of 100 in the first half"
        );
        assert!(delays.iter().all(|d| *d < Duration::from_millis(100)));
    }

    #[test]
    fn bad_policies_are_refused_by_name() {
        let ok = ReconnectPolicy::default();
        assert_eq!(
            ReconnectPolicy {
                base: Duration::ZERO,
                ..ok.clone()
            }
            .validate(),
            Err(ReconnectPolicyError::ZeroBase)
        );
        assert_eq!(
            ReconnectPolicy {
                cap: Duration::from_millis(50),
                ..ok.clone()
            }
            .validate(),
            Err(ReconnectPolicyError::CapBelowBase {
                base: Duration::from_millis(100),
                cap: Duration::from_millis(50)
            })
        );
        assert_eq!(
            ReconnectPolicy {
                give_up_after: Duration::ZERO,
                ..ok
            }
            .validate(),
            Err(ReconnectPolicyError::ZeroGiveUp)
        );
    }

    #[test]
    fn only_kicks_that_ask_for_it_lead_back_to_the_lobby() {
        for reason in [
            KickReason::ZoneLost,
            KickReason::Draining,
            KickReason::Shutdown,
            KickReason::HandedOff,
        ] {
            assert!(reconnect_hint(reason), "{reason:?}");
        }
        for reason in [
            KickReason::Malformed,
            KickReason::InputFlood,
            KickReason::SpeedLimit,
            KickReason::Idle,
            KickReason::Admin,
        ] {
            assert!(!reconnect_hint(reason), "{reason:?}");
        }
    }

    #[test]
    fn datagrams_repeat_the_unacknowledged_inputs_during_a_switch() {
        let recent: VecDeque<InputFrameMsg> = (3..=10).map(frame).collect();
        assert_eq!(frames_to_send(&recent, None), INPUT_REDUNDANCY);
        // The old shard applied up to 4: 5..=10 are replayed.
        assert_eq!(frames_to_send(&recent, Some(InputSeq(4))), 6);
        // Everything acknowledged: the usual redundancy still.
        assert_eq!(
            frames_to_send(&recent, Some(InputSeq(10))),
            INPUT_REDUNDANCY
        );
        // Nothing acknowledged: all that is kept, at most MAX_REDUNDANT_INPUTS.
        assert_eq!(
            frames_to_send(&recent, Some(InputSeq(0))),
            MAX_REDUNDANT_INPUTS
        );
        let few: VecDeque<InputFrameMsg> = (1..=2).map(frame).collect();
        assert_eq!(frames_to_send(&few, None), 2);
        assert_eq!(frames_to_send(&few, Some(InputSeq(0))), 2);
        assert_eq!(frames_to_send(&VecDeque::new(), Some(InputSeq(0))), 0);
    }
}
