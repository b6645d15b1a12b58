//! A session with one shard: connect with a ticket, receive the welcome, then send inputs at
//! the tick rate (each datagram repeats the last few inputs, so a lost datagram loses no
//! input), acknowledge snapshots, keep the world, and report events.
//!
//! A background task owns the receiving side (snapshot datagrams, pongs, the control stream);
//! the game holds the [`ShardSession`] and calls [`ShardSession::send_input`] once per tick.
//! The shared state is behind a mutex held for the few microseconds of applying one snapshot,
//! never across an await.

use crate::world::{ClientWorld, EntitySample};
use bytes::Bytes;
use meridian_protocol::codec::{self, BoundedVec};
use meridian_protocol::control::{
    ClientControlMsg, KickMsg, ShardControlMsg, ShardHelloMsg, WelcomeMsg,
};
use meridian_protocol::datagram::{
    ClientDatagramMsg, InputFrameMsg, InputMsg, MAX_DATAGRAM_BYTES, PingMsg, ServerDatagramMsg,
};
use meridian_protocol::frame::DEFAULT_MAX_FRAME;
use meridian_protocol::handshake::RejectMsg;
use meridian_protocol::quantize::{PositionQuantizer, angle_to_byte};
use meridian_protocol::quic::{self, CertSha256, QuicConfig};
use meridian_protocol::stream::{self, StreamReadError, StreamWriteError};
use meridian_protocol::ticket::SignedTicket;
use meridian_protocol::{EntityId, InputSeq, PROTOCOL_VERSION, Tick};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::debug;

/// Inputs repeated in each input datagram.
pub const INPUT_REDUNDANCY: usize = 4;

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
    /// The connection closed (the reason as quinn tells it).
    Closed(String),
}

/// Figures of the session so far.
#[derive(Clone, Debug, Default, PartialEq)]
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
    /// Newest snapshot tick applied.
    pub latest_tick: Option<Tick>,
    /// QUIC's smoothed round-trip time.
    pub rtt: Duration,
    /// The newest input the shard says it applied.
    pub input_ack: InputSeq,
}

#[derive(Debug)]
struct Shared {
    world: ClientWorld,
    stats: SessionStats,
    /// Arrival of the newest snapshot, for estimating the server tick between snapshots.
    latest_at: Option<Instant>,
    /// Pending ping nonces and when they were sent.
    pings: VecDeque<(u64, Instant)>,
    /// Round trips measured by pings.
    ping_rtts: Vec<Duration>,
}

/// An open session with a shard.
pub struct ShardSession {
    conn: quinn::Connection,
    welcome: WelcomeMsg,
    shared: Arc<Mutex<Shared>>,
    events: mpsc::Receiver<SessionEvent>,
    control: Option<quinn::SendStream>,
    next_seq: u32,
    recent: VecDeque<InputFrameMsg>,
    encode_buf: Vec<u8>,
    nonce: AtomicU64,
    receiver: tokio::task::JoinHandle<()>,
}

/// How long to wait for the welcome.
pub const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);

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

impl ShardSession {
    /// Connects to a shard with a ticket and waits for the welcome.
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        cert_sha256: CertSha256,
        ticket: SignedTicket,
        quic_cfg: &QuicConfig,
    ) -> Result<Self, SessionError> {
        let conn = connect_pinned(endpoint, addr, cert_sha256, quic_cfg).await?;
        Self::start(conn, addr, ticket).await
    }

    /// Starts a session on an open connection (one opened early, before the ticket arrived).
    pub async fn start(
        conn: quinn::Connection,
        addr: SocketAddr,
        ticket: SignedTicket,
    ) -> Result<Self, SessionError> {
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
        let shared = Arc::new(Mutex::new(Shared {
            world: ClientWorld::new(quantizer),
            stats: SessionStats::default(),
            latest_at: None,
            pings: VecDeque::new(),
            ping_rtts: Vec::new(),
        }));
        let (events_tx, events) = mpsc::channel(1024);
        let receiver = tokio::spawn(receive(conn.clone(), recv, shared.clone(), events_tx));
        Ok(Self {
            conn,
            welcome,
            shared,
            events,
            control: Some(send),
            next_seq: 1,
            recent: VecDeque::with_capacity(INPUT_REDUNDANCY),
            encode_buf: Vec::with_capacity(256),
            nonce: AtomicU64::new(1),
            receiver,
        })
    }

    /// The welcome: player, entity, zone, tick rate.
    pub fn welcome(&self) -> &WelcomeMsg {
        &self.welcome
    }

    /// The player's own entity.
    pub fn entity(&self) -> EntityId {
        self.welcome.entity
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // The receiver never panics while holding the lock; recover the data if it did.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends this tick's input: move toward `heading` (radians) at `throttle` (0 to 1) of full
    /// speed. The datagram repeats the previous inputs and acknowledges the newest snapshot.
    pub fn send_input(
        &mut self,
        heading: f32,
        throttle: f32,
        buttons: u8,
    ) -> Result<InputSeq, SessionError> {
        let seq = InputSeq(self.next_seq);
        self.next_seq = self.next_seq.wrapping_add(1);
        let throttle = (throttle.clamp(0.0, 1.0) * 255.0).round() as u8;
        if self.recent.len() == INPUT_REDUNDANCY {
            self.recent.pop_front();
        }
        self.recent.push_back(InputFrameMsg {
            seq,
            heading: angle_to_byte(heading),
            throttle,
            buttons,
        });
        let ack = self.lock().world.latest_tick();
        let mut inputs = BoundedVec::new();
        for f in &self.recent {
            // At most INPUT_REDUNDANCY (4) ≤ MAX_REDUNDANT_INPUTS (8): always fits.
            let _ = inputs.try_push(*f);
        }
        let msg = ClientDatagramMsg::Input(InputMsg { ack, inputs });
        self.encode_buf.clear();
        codec::encode_into(&msg, &mut self.encode_buf)
            .map_err(|e| SessionError::Datagram(e.to_string()))?;
        let len = self.encode_buf.len() as u64;
        self.conn
            .send_datagram(Bytes::copy_from_slice(&self.encode_buf))
            .map_err(|e| SessionError::Datagram(e.to_string()))?;
        let mut s = self.lock();
        s.stats.inputs_sent += 1;
        s.stats.bytes_up += len;
        Ok(seq)
    }

    /// Sends a ping; its round trip is recorded when the pong arrives ([`Self::ping_rtts`]).
    pub fn ping(&self) -> Result<(), SessionError> {
        let nonce = self.nonce.fetch_add(1, Ordering::Relaxed);
        let bytes = codec::encode(&ClientDatagramMsg::Ping(PingMsg { nonce }))
            .map_err(|e| SessionError::Datagram(e.to_string()))?;
        self.lock().pings.push_back((nonce, Instant::now()));
        self.conn
            .send_datagram(Bytes::from(bytes))
            .map_err(|e| SessionError::Datagram(e.to_string()))
    }

    /// Round trips measured by pings so far.
    pub fn ping_rtts(&self) -> Vec<Duration> {
        self.lock().ping_rtts.clone()
    }

    /// Figures so far.
    pub fn stats(&self) -> SessionStats {
        let mut s = self.lock().stats.clone();
        s.rtt = self.conn.rtt();
        s
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
        Some(tick.0 as f64 + since * f64::from(self.welcome.tick_hz))
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

    /// Sends a chat line to players nearby.
    pub async fn chat(&mut self, text: &str) -> Result<(), SessionError> {
        let mut buf = Vec::new();
        if let Some(send) = self.control.as_mut() {
            stream::write_frame(
                send,
                &ClientControlMsg::Chat {
                    text: text.to_owned(),
                },
                DEFAULT_MAX_FRAME,
                &mut buf,
            )
            .await?;
        }
        Ok(())
    }

    /// True while the connection is open.
    pub fn is_open(&self) -> bool {
        self.conn.close_reason().is_none()
    }

    /// The QUIC connection (for its statistics).
    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Leaves on purpose: tells the shard, then closes.
    pub async fn leave(mut self) {
        let mut buf = Vec::new();
        if let Some(send) = self.control.as_mut() {
            let _ =
                stream::write_frame(send, &ClientControlMsg::Leave, DEFAULT_MAX_FRAME, &mut buf)
                    .await;
            let _ = send.finish();
            let _ = tokio::time::timeout(Duration::from_millis(500), self.conn.closed()).await;
        }
        self.conn.close(quic::close_code::DONE.into(), b"bye");
        self.receiver.abort();
    }
}

impl Drop for ShardSession {
    fn drop(&mut self) {
        self.receiver.abort();
    }
}

/// The receiving side: datagrams and the control stream, until the connection ends.
async fn receive(
    conn: quinn::Connection,
    mut recv: quinn::RecvStream,
    shared: Arc<Mutex<Shared>>,
    events: mpsc::Sender<SessionEvent>,
) {
    let mut buf = Vec::new();
    let mut control_open = true;
    loop {
        tokio::select! {
            dg = conn.read_datagram() => {
                let Ok(bytes) = dg else { break };
                let msg = codec::decode::<ServerDatagramMsg>(&bytes, MAX_DATAGRAM_BYTES);
                let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                s.stats.bytes_down += bytes.len() as u64;
                match msg {
                    Ok(ServerDatagramMsg::Snapshot(snap)) => {
                        s.stats.snapshots += 1;
                        s.stats.input_ack = s.stats.input_ack.max(snap.input_ack);
                        match s.world.apply(&snap) {
                            Ok(()) => {
                                if s.world.latest_tick() == Some(snap.tick) {
                                    s.latest_at = Some(Instant::now());
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
                        if let Some(i) = s.pings.iter().position(|(n, _)| *n == p.nonce) {
                            let (_, sent) = s.pings.remove(i).unwrap_or((0, Instant::now()));
                            let rtt = sent.elapsed();
                            s.ping_rtts.push(rtt);
                        }
                    }
                    Err(e) => debug!(error = %e, "malformed datagram from shard"),
                }
            }
            frame = stream::read_frame::<ShardControlMsg>(&mut recv, DEFAULT_MAX_FRAME, &mut buf), if control_open => {
                let event = match frame {
                    Ok(Some(ShardControlMsg::Score(s))) => SessionEvent::Score { total: s.total, delta: s.delta },
                    Ok(Some(ShardControlMsg::Chat(c))) => SessionEvent::Chat { from: c.from, text: c.text },
                    Ok(Some(ShardControlMsg::Kick(k))) => SessionEvent::Kicked(k),
                    Ok(Some(other)) => { debug!(?other, "unexpected control message"); continue; }
                    Ok(None) | Err(_) => { control_open = false; continue; }
                };
                let _ = events.send(event).await;
            }
        }
    }
    let reason = conn
        .close_reason()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "closed".into());
    let _ = events.send(SessionEvent::Closed(reason)).await;
}
