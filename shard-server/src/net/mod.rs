//! The network shell: one quinn endpoint, a task per connection.
//!
//! A connection task answers pings at once (round-trip probes need no ticket), waits for the
//! hello on the control stream, admits the client with its ticket, then forwards decoded
//! inputs to the tick thread over bounded channels (dropping, and counting, when full) and
//! writes the reliable events the tick thread sends it. It never blocks the tick: the tick
//! thread reads its channels with `try_recv` and sends snapshots with quinn's non-blocking
//! `send_datagram`, whose queue drops the oldest datagram when a client is slow.
//!
//! A connection's error is logged and contained; it never affects another connection.

pub mod admission;

use crate::metrics::ShardMetrics;
use admission::NonceCache;
use bytes::Bytes;
use meridian_cluster::Store;
use meridian_cluster::metrics::StoreOp;
use meridian_cluster::ownership::{AcceptOutcome, ClaimOutcome, Lease, PlayerState};
use meridian_cluster::store::StoreHandle;
use meridian_protocol::codec;
use meridian_protocol::control::{
    ClientControlMsg, KickMsg, KickReason, ShardControlMsg, ShardHelloMsg,
};
use meridian_protocol::datagram::{
    ClientDatagramMsg, InputMsg, MAX_DATAGRAM_BYTES, PongMsg, ServerDatagramMsg,
};
use meridian_protocol::handshake::{self, HandshakeError, RejectMsg, RejectReason};
use meridian_protocol::quic::close_code;
use meridian_protocol::stream::{self, StreamReadError};
use meridian_protocol::ticket::{TicketError, TicketKey, TicketKind};
use meridian_protocol::{PlayerId, ShardId, Tick};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::{Instrument, debug, info, info_span, warn};

/// Identifies a connection on this shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Session changes sent from connection tasks to the tick thread. Never dropped.
#[derive(Debug)]
pub enum SessionEvent {
    /// A client was admitted; the tick thread spawns its entity and sends the welcome on
    /// `control`.
    Joined {
        /// The connection.
        conn: ConnId,
        /// The player its ticket names.
        player: PlayerId,
        /// The connection, for snapshots.
        connection: quinn::Connection,
        /// Reliable events to the client, written in order by the connection task.
        control: mpsc::Sender<ShardControlMsg>,
        /// Set when the client arrives by handoff: the state the previous shard wrote.
        arrival: Option<Arrival>,
    },
    /// A chat line from an admitted client.
    Chat {
        /// The connection.
        conn: ConnId,
        /// The text.
        text: String,
    },
    /// The connection ended.
    Left {
        /// The connection.
        conn: ConnId,
    },
}

/// A player arriving with a saved state, taken over in shared state by the connection task:
/// by handoff (accepted transfer), or resuming in its zone after its shard died or drained
/// (claimed, restored from its checkpoint).
#[derive(Debug, Clone, PartialEq)]
pub struct Arrival {
    /// The transfer sequence accepted or claimed.
    pub seq: u64,
    /// The state the previous owner wrote (at the border, or its last checkpoint).
    pub state: PlayerState,
    /// A resume (join ticket, restored from a checkpoint), not a handoff.
    pub resumed: bool,
}

/// What connection tasks need of shared state: the store and the zone lease their ownership
/// claims are fenced with.
#[derive(Clone, Debug)]
pub struct NetCluster {
    /// Shared state.
    pub store: StoreHandle,
    /// The lease (None while lost: no admission).
    pub lease: watch::Receiver<Option<Lease>>,
}

/// Inputs from a client, decoded, for the tick thread. Dropped (and counted) when the queue is
/// full.
#[derive(Debug)]
pub struct InputEvent {
    /// The connection.
    pub conn: ConnId,
    /// The inputs and acknowledgement.
    pub msg: InputMsg,
}

/// Limits and thresholds of the network shell.
#[derive(Clone, Debug)]
pub struct NetLimits {
    /// Largest control frame accepted, bytes.
    pub max_frame: usize,
    /// Most simultaneous connections; more are refused.
    pub max_connections: usize,
    /// How long a connection may stay without sending its hello (it may ping meanwhile).
    pub hello_timeout: Duration,
    /// Malformed datagrams or frames a client may send before it is kicked.
    pub malformed_limit: u32,
    /// Reliable events queued for one client before it is considered stuck and dropped.
    pub control_queue: usize,
}

impl Default for NetLimits {
    fn default() -> Self {
        Self {
            max_frame: meridian_protocol::frame::DEFAULT_MAX_FRAME,
            max_connections: 5_000,
            hello_timeout: Duration::from_secs(10),
            malformed_limit: 20,
            control_queue: 256,
        }
    }
}

/// What every connection task shares.
pub struct NetShared {
    /// This shard.
    pub shard: ShardId,
    /// Verifies tickets.
    pub key: TicketKey,
    /// Nonces of tickets used here.
    pub nonces: Mutex<NonceCache>,
    /// Counters.
    pub metrics: Arc<ShardMetrics>,
    /// Session changes to the tick thread.
    pub sessions: mpsc::Sender<SessionEvent>,
    /// Inputs to the tick thread.
    pub inputs: mpsc::Sender<InputEvent>,
    /// The tick thread's current tick, for pongs.
    pub tick: Arc<AtomicU64>,
    /// Limits.
    pub limits: NetLimits,
    /// Shared state, when the shard is part of a multi-zone world: joins claim ownership,
    /// handoff arrivals accept it. Without it the shard admits join tickets alone.
    pub cluster: Option<NetCluster>,
    /// Set when the shard drains: hellos are refused (the client goes back to the lobby).
    pub draining: Arc<std::sync::atomic::AtomicBool>,
}

/// Milliseconds since the Unix epoch (ticket expiry is wall-clock time shared with the lobby).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Completes once `shutdown` turns true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Accepts connections until `shutdown` turns true, spawning a task for each.
pub async fn accept_loop(
    endpoint: quinn::Endpoint,
    shared: Arc<NetShared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(shared.limits.max_connections));
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = stopped(&mut shutdown) => break,
        };
        let Some(incoming) = incoming else { break };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            ShardMetrics::inc(&shared.metrics.connections_refused_full);
            warn!(peer = %incoming.remote_address(), "connection refused: shard at its connection limit");
            incoming.refuse();
            continue;
        };
        let shared = shared.clone();
        let peer = incoming.remote_address();
        let shutdown = shutdown.clone();
        tokio::spawn(
            async move {
                match incoming.await {
                    Ok(conn) => {
                        ShardMetrics::inc(&shared.metrics.connections);
                        serve_connection(conn, &shared, shutdown).await;
                    }
                    Err(e) => debug!(error = %e, "handshake failed"),
                }
                drop(permit);
            }
            .instrument(info_span!("conn", %peer, player = tracing::field::Empty)),
        );
    }
}

/// Answers a ping datagram; counts anything else that is not an input.
fn answer_ping(conn: &quinn::Connection, shared: &NetShared, nonce: u64) {
    let pong = ServerDatagramMsg::Pong(PongMsg {
        nonce,
        server_tick: Tick(shared.tick.load(Ordering::Relaxed)),
    });
    if let Ok(bytes) = codec::encode(&pong)
        && conn.send_datagram(Bytes::from(bytes)).is_ok()
    {
        ShardMetrics::inc(&shared.metrics.pongs);
    }
}

fn decode_datagram(shared: &NetShared, bytes: &[u8]) -> Option<ClientDatagramMsg> {
    ShardMetrics::inc(&shared.metrics.datagrams_in);
    ShardMetrics::add(&shared.metrics.bytes_in, bytes.len() as u64);
    match codec::decode::<ClientDatagramMsg>(bytes, MAX_DATAGRAM_BYTES) {
        Ok(msg) => Some(msg),
        Err(e) => {
            ShardMetrics::inc(&shared.metrics.datagrams_malformed);
            debug!(error = %e, "malformed datagram");
            None
        }
    }
}

/// Sends `reject` on the control stream, then closes the connection.
async fn reject(
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    shared: &NetShared,
    reject: RejectMsg,
) {
    info!(reason = ?reject.reason, detail = %reject.detail, "hello refused");
    let mut buf = Vec::new();
    let msg = ShardControlMsg::Rejected(reject);
    let _ = stream::write_frame(send, &msg, shared.limits.max_frame, &mut buf).await;
    let _ = send.finish();
    // Give the stream a moment to deliver before the close frame overtakes it.
    let _ = tokio::time::timeout(Duration::from_millis(500), send.stopped()).await;
    conn.close(close_code::REJECTED.into(), b"rejected");
}

/// The life of one connection: pings and hello, admission, then the session.
async fn serve_connection(
    conn: quinn::Connection,
    shared: &NetShared,
    mut shutdown: watch::Receiver<bool>,
) {
    let deadline = tokio::time::sleep(shared.limits.hello_timeout);
    tokio::pin!(deadline);
    let mut malformed = 0u32;
    // Before the hello: answer pings, wait for the control stream.
    let (mut send, mut recv) = loop {
        tokio::select! {
            bi = conn.accept_bi() => match bi {
                Ok(pair) => break pair,
                Err(e) => { debug!(error = %e, "closed before hello"); return; }
            },
            dg = conn.read_datagram() => match dg {
                Ok(bytes) => match decode_datagram(shared, &bytes) {
                    Some(ClientDatagramMsg::Ping(p)) => answer_ping(&conn, shared, p.nonce),
                    Some(ClientDatagramMsg::Input(_)) => {} // not admitted yet: ignored
                    None => {
                        malformed += 1;
                        if malformed > shared.limits.malformed_limit {
                            conn.close(close_code::PROTOCOL_ERROR.into(), b"malformed datagrams");
                            return;
                        }
                    }
                },
                Err(e) => { debug!(error = %e, "closed before hello"); return; }
            },
            _ = &mut deadline => {
                ShardMetrics::inc(&shared.metrics.hello_timeouts);
                info!("no hello within {:?}; closing", shared.limits.hello_timeout);
                conn.close(close_code::PROTOCOL_ERROR.into(), b"no hello");
                return;
            }
            _ = stopped(&mut shutdown) => {
                conn.close(close_code::SHUTDOWN.into(), b"shutting down");
                return;
            }
        }
    };

    let mut buf = Vec::new();
    let hello = tokio::select! {
        r = read_hello(&mut recv, shared, &mut buf) => r,
        _ = &mut deadline => Err(RejectMsg { reason: RejectReason::Malformed, detail: "hello not complete in time".into() }),
    };
    let (player, arrival) = match hello {
        Ok(admitted) => admitted,
        Err(msg) => {
            reject(&conn, &mut send, shared, msg).await;
            return;
        }
    };
    tracing::Span::current().record("player", tracing::field::display(player));
    ShardMetrics::inc(&shared.metrics.admitted);

    let conn_id = ConnId(conn.stable_id() as u64);
    let (control_tx, control_rx) = mpsc::channel(shared.limits.control_queue);
    let joined = SessionEvent::Joined {
        conn: conn_id,
        player,
        connection: conn.clone(),
        control: control_tx.clone(),
        arrival,
    };
    if shared.sessions.send(joined).await.is_err() {
        conn.close(close_code::SHUTDOWN.into(), b"shutting down");
        return;
    }
    info!("admitted");
    let writer = tokio::spawn(
        write_control(conn.clone(), send, control_rx, shared.limits.max_frame).in_current_span(),
    );
    read_session(
        &conn,
        conn_id,
        recv,
        control_tx,
        shared,
        &mut shutdown,
        malformed,
    )
    .await;
    let _ = shared
        .sessions
        .send(SessionEvent::Left { conn: conn_id })
        .await;
    // The writer ends when the tick thread drops its sender and the queue is written.
    let _ = writer.await;
    info!(reason = ?conn.close_reason(), "session ended");
}

/// Reads and checks the hello: version, ticket, replay; then, in a multi-zone world, claims
/// the player's ownership (join ticket) or accepts its transfer (handoff ticket). The error is
/// the refusal to send.
async fn read_hello(
    recv: &mut quinn::RecvStream,
    shared: &NetShared,
    buf: &mut Vec<u8>,
) -> Result<(PlayerId, Option<Arrival>), RejectMsg> {
    let malformed = |detail: String| {
        ShardMetrics::inc(&shared.metrics.rejected_malformed_frame);
        RejectMsg {
            reason: RejectReason::Malformed,
            detail,
        }
    };
    match stream::read_frame_payload(recv, shared.limits.max_frame, buf).await {
        Ok(true) => {}
        Ok(false) => return Err(malformed("control stream finished before the hello".into())),
        Err(e) => return Err(malformed(format!("hello: {e}"))),
    }
    match handshake::check_version(buf) {
        Ok(()) => {}
        Err(HandshakeError::VersionMismatch { theirs, .. }) => {
            ShardMetrics::inc(&shared.metrics.rejected_version);
            return Err(RejectMsg::version_mismatch(theirs));
        }
        Err(e @ HandshakeError::NoVersion(_)) => return Err(malformed(e.to_string())),
    }
    let hello: ShardHelloMsg =
        meridian_protocol::frame::decode_payload(buf, shared.limits.max_frame)
            .map_err(|e| malformed(format!("hello: {e}")))?;
    let now = now_ms();
    let bad_ticket = |e: TicketError| {
        let counter = match e {
            TicketError::Replayed { .. } => &shared.metrics.rejected_replay,
            _ => &shared.metrics.rejected_ticket,
        };
        ShardMetrics::inc(counter);
        RejectMsg {
            reason: RejectReason::BadTicket,
            detail: e.to_string(),
        }
    };
    // A join or a handoff ticket; the kind is covered by the signature.
    let kind = match hello.ticket.claims.kind {
        TicketKind::Handoff => TicketKind::Handoff,
        _ => TicketKind::Join,
    };
    let claims = shared
        .key
        .verify(&hello.ticket, kind, Some(&shared.shard), now)
        .map_err(bad_ticket)?;
    shared
        .nonces
        .lock()
        .map_err(|_| malformed("internal: nonce cache poisoned".into()))?
        .use_once(claims.nonce, claims.expires_at_ms, now)
        .map_err(bad_ticket)?;
    let player = claims.player;
    let nonce = claims.nonce;
    let admitted = if shared.draining.load(Ordering::Relaxed) {
        Err(RejectMsg {
            reason: RejectReason::Unavailable {
                retry_after_ms: 1_000,
            },
            detail: format!(
                "shard {} is draining: ask the lobby for another",
                shared.shard
            ),
        })
    } else {
        admit_in_world(shared, player, kind).await
    };
    if let Err(RejectMsg {
        reason: RejectReason::Unavailable { .. },
        ..
    }) = &admitted
    {
        // Refused for a passing reason: the same ticket may come back.
        if let Ok(mut nonces) = shared.nonces.lock() {
            nonces.forget(nonce);
        }
    }
    admitted
}

/// In a multi-zone world, claims the player's ownership (join) or accepts its transfer
/// (handoff); alone, admits join tickets as they are.
async fn admit_in_world(
    shared: &NetShared,
    player: PlayerId,
    kind: TicketKind,
) -> Result<(PlayerId, Option<Arrival>), RejectMsg> {
    let Some(cluster) = &shared.cluster else {
        if kind == TicketKind::Handoff {
            ShardMetrics::inc(&shared.metrics.rejected_ticket);
            return Err(RejectMsg {
                reason: RejectReason::BadTicket,
                detail: "this shard serves its zone alone: it takes no handoffs".into(),
            });
        }
        return Ok((player, None));
    };
    let unavailable = |detail: String| {
        ShardMetrics::inc(&shared.metrics.ownership_errors);
        RejectMsg {
            reason: RejectReason::Unavailable {
                retry_after_ms: 1_000,
            },
            detail,
        }
    };
    let Some(lease) = cluster.lease.borrow().clone() else {
        return Err(unavailable(format!(
            "shard {} does not hold its zone's lease now",
            shared.shard
        )));
    };
    if kind == TicketKind::Handoff {
        return match shared
            .metrics
            .store_ops
            .time(
                StoreOp::AcceptPlayer,
                cluster.store.accept_player(player, &lease, None),
            )
            .await
        {
            Ok(AcceptOutcome::Accepted {
                seq,
                state: Some(state),
            }) => Ok((
                player,
                Some(Arrival {
                    seq,
                    state,
                    resumed: false,
                }),
            )),
            Ok(AcceptOutcome::Accepted { state: None, .. }) => Err(unavailable(format!(
                "player {player}: the transfer wrote no state"
            ))),
            Ok(AcceptOutcome::NotOffered(_)) => {
                ShardMetrics::inc(&shared.metrics.rejected_ticket);
                Err(RejectMsg {
                    reason: RejectReason::BadTicket,
                    detail: format!(
                        "player {player} is not being handed to shard {}",
                        shared.shard
                    ),
                })
            }
            Err(e) => Err(unavailable(format!("shared state: {e}"))),
        };
    }
    // A player whose record still has an owner in this zone (its shard died or drained, or
    // this shard holds it already) resumes at its last checkpoint; anyone else spawns anew.
    let resume = match shared
        .metrics
        .store_ops
        .time(StoreOp::GetOwnership, cluster.store.get_ownership(player))
        .await
    {
        Ok(Some(rec)) => rec.owner.is_some() && rec.zone.as_ref() == Some(&lease.zone),
        Ok(None) => false,
        Err(e) => return Err(unavailable(format!("shared state: {e}"))),
    };
    match shared
        .metrics
        .store_ops
        .time(
            StoreOp::ClaimPlayer,
            cluster.store.claim_player(player, &lease),
        )
        .await
    {
        Ok(ClaimOutcome::Claimed {
            seq,
            state: Some(state),
        }) if resume => Ok((
            player,
            Some(Arrival {
                seq,
                state,
                resumed: true,
            }),
        )),
        Ok(ClaimOutcome::Claimed { .. }) => Ok((player, None)),
        Ok(ClaimOutcome::Stale { epoch }) => Err(unavailable(format!(
            "zone lease epoch {} is older than the player's record ({epoch})",
            lease.epoch
        ))),
        Err(e) => Err(unavailable(format!("shared state: {e}"))),
    }
}

/// Writes reliable events in order until the tick thread lets go; after a kick, closes.
async fn write_control(
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut rx: mpsc::Receiver<ShardControlMsg>,
    max_frame: usize,
) {
    let mut buf = Vec::new();
    while let Some(msg) = rx.recv().await {
        let kick = matches!(msg, ShardControlMsg::Kick(_));
        if let Err(e) = stream::write_frame(&mut send, &msg, max_frame, &mut buf).await {
            debug!(error = %e, "control stream write failed");
            return;
        }
        if kick {
            let _ = send.finish();
            let _ = tokio::time::timeout(Duration::from_millis(500), send.stopped()).await;
            conn.close(close_code::KICKED.into(), b"kicked");
            return;
        }
    }
    let _ = send.finish();
}

/// Kicks from the connection task (malformed traffic): the reason goes out on the control
/// stream, then the connection closes.
async fn kick(
    control: &mpsc::Sender<ShardControlMsg>,
    conn: &quinn::Connection,
    shared: &NetShared,
    reason: KickReason,
    detail: String,
) {
    ShardMetrics::inc(&shared.metrics.kicks);
    warn!(?reason, %detail, "kicking client");
    let msg = ShardControlMsg::Kick(KickMsg { reason, detail });
    if tokio::time::timeout(Duration::from_millis(200), control.send(msg))
        .await
        .is_err()
    {
        conn.close(close_code::KICKED.into(), b"kicked");
    }
}

/// The admitted session: datagrams and control frames from the client.
async fn read_session(
    conn: &quinn::Connection,
    conn_id: ConnId,
    mut recv: quinn::RecvStream,
    control: mpsc::Sender<ShardControlMsg>,
    shared: &NetShared,
    shutdown: &mut watch::Receiver<bool>,
    mut malformed: u32,
) {
    let mut buf = Vec::new();
    let mut control_open = true;
    loop {
        tokio::select! {
            dg = conn.read_datagram() => {
                let Ok(bytes) = dg else { return };
                match decode_datagram(shared, &bytes) {
                    Some(ClientDatagramMsg::Input(msg)) => {
                        if shared.inputs.try_send(InputEvent { conn: conn_id, msg }).is_err() {
                            ShardMetrics::inc(&shared.metrics.inputs_dropped_queue_full);
                        }
                    }
                    Some(ClientDatagramMsg::Ping(p)) => answer_ping(conn, shared, p.nonce),
                    None => {
                        malformed += 1;
                        if malformed == shared.limits.malformed_limit + 1 {
                            kick(&control, conn, shared, KickReason::Malformed, format!("{malformed} malformed datagrams")).await;
                        }
                    }
                }
            }
            frame = stream::read_frame::<ClientControlMsg>(&mut recv, shared.limits.max_frame, &mut buf), if control_open => {
                match frame {
                    Ok(Some(ClientControlMsg::Leave)) => {
                        info!("client left");
                        conn.close(close_code::DONE.into(), b"bye");
                        return;
                    }
                    Ok(Some(ClientControlMsg::Chat { text })) => {
                        if text.chars().count() > meridian_protocol::control::MAX_CHAT_CHARS || text.chars().any(char::is_control) {
                            malformed += 1;
                            ShardMetrics::inc(&shared.metrics.rejected_malformed_frame);
                            continue;
                        }
                        let _ = shared.sessions.send(SessionEvent::Chat { conn: conn_id, text }).await;
                    }
                    Ok(None) => control_open = false,
                    Err(StreamReadError::Read(e)) => {
                        debug!(error = %e, "control stream closed");
                        control_open = false;
                    }
                    Err(StreamReadError::Frame(e)) => {
                        // A broken frame leaves the stream unusable: the client is kicked at once.
                        ShardMetrics::inc(&shared.metrics.rejected_malformed_frame);
                        kick(&control, conn, shared, KickReason::Malformed, format!("control frame: {e}")).await;
                        control_open = false;
                    }
                }
            }
            _ = conn.closed() => return,
            _ = stopped(shutdown) => return,
        }
    }
}
