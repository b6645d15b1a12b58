//! The session follows a handoff by itself, against fake shards made of quinn endpoints on
//! loopback: shard A welcomes a join ticket, tells the client about neighbour B, then hands the
//! player off; B accepts only the handoff ticket. The session must use its early connection,
//! switch welcome, world and inputs to B without losing the inputs sent during the switch,
//! close A's connection, and report the blackout — or, when B refuses or cannot be reached,
//! retry once and end with `HandoffFailed`.

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use meridian_client::session::{SessionEvent, ShardSession, client_endpoint};
use meridian_protocol::codec;
use meridian_protocol::control::{
    HandoffMsg, KickMsg, KickReason, NeighbourMsg, ShardControlMsg, ShardHelloMsg, WelcomeMsg,
    ZoneBoundsMsg,
};
use meridian_protocol::datagram::{
    ClientDatagramMsg, MAX_DATAGRAM_BYTES, PongMsg, ServerDatagramMsg, SnapshotMsg,
};
use meridian_protocol::frame::DEFAULT_MAX_FRAME;
use meridian_protocol::handshake::{RejectMsg, RejectReason};
use meridian_protocol::quic::{self, CertSha256, CertificateMaterial, QuicConfig, close_code};
use meridian_protocol::snapshot::{self, EntityKind, EntityState};
use meridian_protocol::stream;
use meridian_protocol::ticket::{SignedTicket, TicketClaims, TicketKey, TicketKind, random_nonce};
use meridian_protocol::{EntityId, InputSeq, PlayerId, ShardId, Tick, ZoneId};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

/// How long any one step of a test may take before it fails.
const STEP: Duration = Duration::from_secs(10);
const PLAYER: PlayerId = PlayerId(77);

fn loopback() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

/// Short timeouts, so that an unreachable shard is given up on in about a second.
fn quic_cfg() -> QuicConfig {
    QuicConfig {
        keep_alive_ms: 200,
        idle_timeout_ms: 1_000,
        ..QuicConfig::default()
    }
}

fn key() -> TicketKey {
    TicketKey::from_bytes(&[9; 32])
}

fn ticket(kind: TicketKind, shard: &ShardId, zone: &ZoneId) -> SignedTicket {
    key()
        .sign(TicketClaims {
            kind,
            player: PLAYER,
            shard: shard.clone(),
            zone: zone.clone(),
            expires_at_ms: u64::MAX,
            nonce: random_nonce(),
        })
        .expect("sign")
}

/// What a fake shard does with a hello.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Admit {
    /// Welcome a ticket of this kind (refuse others).
    Ticket(TicketKind),
    /// Refuse every hello.
    RefuseAll,
}

/// What a fake shard saw.
#[derive(Debug, Default)]
struct Log {
    /// Connections accepted.
    connections: u32,
    /// Kinds of the tickets presented, in order.
    hellos: Vec<TicketKind>,
    /// Input sequence numbers of each input datagram, in arrival order.
    inputs: Vec<Vec<u32>>,
    /// How each connection ended: (application close code, reason), when the client closed it.
    closed: Vec<(u64, String)>,
}

impl Log {
    fn seqs(&self) -> BTreeSet<u32> {
        self.inputs.iter().flatten().copied().collect()
    }
}

/// A shard that speaks just enough of the protocol: hello → welcome, full snapshots every
/// 20 ms (until it hands the player off), pongs, and control messages the test pushes.
struct FakeShard {
    _endpoint: quinn::Endpoint,
    addr: SocketAddr,
    pin: CertSha256,
    shard: ShardId,
    zone: ZoneId,
    log: Arc<Mutex<Log>>,
    control: mpsc::UnboundedSender<ShardControlMsg>,
    /// While set, the welcome waits for [`FakeShard::release`].
    hold: Arc<Mutex<bool>>,
    released: Arc<Notify>,
    /// Closes the admitted connection from the shard's side.
    close: Arc<Notify>,
}

struct Setup {
    shard: ShardId,
    zone: ZoneId,
    bounds: ZoneBoundsMsg,
    entity: EntityId,
    admit: Admit,
    hold_welcome: bool,
}

impl FakeShard {
    fn start(setup: Setup) -> Result<Self> {
        let cert = CertificateMaterial::generate_dev(&["localhost"])?;
        let cfg = quic_cfg();
        let bound = quic::bind_udp_socket(loopback(), cfg.socket_buffer_bytes)?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(quic::server_config(&cert, &cfg)?),
            bound.socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        let (control, control_rx) = mpsc::unbounded_channel();
        let fake = Self {
            addr: endpoint.local_addr()?,
            pin: cert.sha256(),
            shard: setup.shard.clone(),
            zone: setup.zone.clone(),
            log: Arc::default(),
            control,
            hold: Arc::new(Mutex::new(setup.hold_welcome)),
            released: Arc::new(Notify::new()),
            close: Arc::new(Notify::new()),
            _endpoint: endpoint.clone(),
        };
        let ctx = Arc::new(ConnCtx {
            setup,
            log: fake.log.clone(),
            control_rx: tokio::sync::Mutex::new(control_rx),
            hold: fake.hold.clone(),
            released: fake.released.clone(),
            close: fake.close.clone(),
        });
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    if let Ok(conn) = incoming.await {
                        let _ = serve(conn, ctx).await;
                    }
                });
            }
        });
        Ok(fake)
    }

    fn send(&self, msg: ShardControlMsg) {
        self.control.send(msg).expect("the fake shard runs");
    }

    fn release(&self) {
        *self.hold.lock().expect("hold") = false;
        self.released.notify_waiters();
    }

    /// Closes the client's connection, as a shard does when a handed-off client is slow to go.
    fn close_connection(&self) {
        self.close.notify_one();
    }

    fn log<R>(&self, f: impl FnOnce(&Log) -> R) -> R {
        f(&self.log.lock().expect("log"))
    }

    fn neighbour(&self) -> ShardControlMsg {
        ShardControlMsg::Neighbour(NeighbourMsg {
            zone: self.zone.clone(),
            shard: self.shard.clone(),
            addr: self.addr.to_string(),
            cert_sha256: self.pin,
        })
    }

    fn handoff(&self) -> ShardControlMsg {
        ShardControlMsg::Handoff(HandoffMsg {
            ticket: ticket(TicketKind::Handoff, &self.shard, &self.zone),
            shard: self.shard.clone(),
            zone: self.zone.clone(),
            addr: self.addr.to_string(),
            cert_sha256: self.pin,
        })
    }
}

struct ConnCtx {
    setup: Setup,
    log: Arc<Mutex<Log>>,
    control_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<ShardControlMsg>>,
    hold: Arc<Mutex<bool>>,
    released: Arc<Notify>,
    close: Arc<Notify>,
}

async fn serve(conn: quinn::Connection, ctx: Arc<ConnCtx>) -> Result<()> {
    ctx.log.lock().expect("log").connections += 1;
    {
        let (conn, log) = (conn.clone(), ctx.log.clone());
        tokio::spawn(async move {
            if let quinn::ConnectionError::ApplicationClosed(c) = conn.closed().await {
                let reason = String::from_utf8_lossy(&c.reason).into_owned();
                log.lock()
                    .expect("log")
                    .closed
                    .push((c.error_code.into_inner(), reason));
            }
        });
    }
    let (mut send, mut recv) = conn.accept_bi().await?;
    let mut buf = Vec::new();
    let hello: ShardHelloMsg = stream::read_frame(&mut recv, DEFAULT_MAX_FRAME, &mut buf)
        .await?
        .context("no hello")?;
    let kind = hello.ticket.claims.kind;
    ctx.log.lock().expect("log").hellos.push(kind);
    if ctx.setup.admit != Admit::Ticket(kind) {
        let reject = ShardControlMsg::Rejected(RejectMsg {
            reason: RejectReason::BadTicket,
            detail: format!("{kind} ticket refused"),
        });
        stream::write_frame(&mut send, &reject, DEFAULT_MAX_FRAME, &mut buf).await?;
        let _ = send.finish();
        // The client closes once it has read the refusal.
        let _ = tokio::time::timeout(STEP, conn.closed()).await;
        return Ok(());
    }
    loop {
        let released = ctx.released.notified();
        if !*ctx.hold.lock().expect("hold") {
            break;
        }
        released.await;
    }
    let s = &ctx.setup;
    let welcome = ShardControlMsg::Welcome(WelcomeMsg {
        player: PLAYER,
        entity: s.entity,
        shard: s.shard.clone(),
        zone: s.zone.clone(),
        bounds: s.bounds,
        tick_hz: 30,
        server_tick: Tick(1000),
    });
    stream::write_frame(&mut send, &welcome, DEFAULT_MAX_FRAME, &mut buf).await?;
    let mut control_rx = ctx.control_rx.lock().await;
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    let mut tick = 1000;
    let mut input_ack = 0;
    let mut frozen = false;
    loop {
        tokio::select! {
            dg = conn.read_datagram() => {
                let Ok(bytes) = dg else { return Ok(()) };
                match codec::decode::<ClientDatagramMsg>(&bytes, MAX_DATAGRAM_BYTES)? {
                    ClientDatagramMsg::Input(i) => {
                        let seqs: Vec<u32> = i.inputs.iter().map(|f| f.seq.0).collect();
                        if !frozen {
                            input_ack = seqs.iter().copied().max().unwrap_or(0).max(input_ack);
                        }
                        ctx.log.lock().expect("log").inputs.push(seqs);
                    }
                    ClientDatagramMsg::Ping(p) => {
                        let pong = ServerDatagramMsg::Pong(PongMsg { nonce: p.nonce, server_tick: Tick(tick) });
                        conn.send_datagram(Bytes::from(codec::encode(&pong)?))?;
                    }
                }
            }
            _ = ticker.tick(), if !frozen => {
                tick += 1;
                let states = [
                    EntityState { id: EntityId(1), kind: EntityKind::Npc, pos: [100, 100], heading: 0 },
                    EntityState { id: s.entity, kind: EntityKind::Player, pos: [30_000, 30_000], heading: 0 },
                ];
                let mut payload = Vec::new();
                snapshot::encode_delta(&[], &states, &mut payload)?;
                let snap = ServerDatagramMsg::Snapshot(SnapshotMsg {
                    tick: Tick(tick),
                    baseline: None,
                    input_ack: InputSeq(input_ack),
                    payload,
                });
                conn.send_datagram(Bytes::from(codec::encode(&snap)?))?;
            }
            _ = ctx.close.notified() => {
                conn.close(close_code::KICKED.into(), b"handed off; grace over");
                return Ok(());
            }
            Some(msg) = control_rx.recv() => {
                // A shard stops replicating (and applying inputs of) a player it handed off.
                if matches!(msg, ShardControlMsg::Handoff(_)) {
                    frozen = true;
                }
                stream::write_frame(&mut send, &msg, DEFAULT_MAX_FRAME, &mut buf).await?;
            }
        }
    }
}

fn bounds(min_x: f32, max_x: f32) -> ZoneBoundsMsg {
    ZoneBoundsMsg {
        min_x,
        min_y: 0.0,
        max_x,
        max_y: 100.0,
    }
}

fn shard_a() -> Result<FakeShard> {
    FakeShard::start(Setup {
        shard: ShardId::new("shard-a")?,
        zone: ZoneId::new("west")?,
        bounds: bounds(0.0, 110.0),
        entity: EntityId(7),
        admit: Admit::Ticket(TicketKind::Join),
        hold_welcome: false,
    })
}

fn shard_b(admit: Admit, hold_welcome: bool) -> Result<FakeShard> {
    FakeShard::start(Setup {
        shard: ShardId::new("shard-b")?,
        zone: ZoneId::new("east")?,
        bounds: bounds(90.0, 200.0),
        entity: EntityId(42),
        admit,
        hold_welcome,
    })
}

/// Joins shard A and plays until its snapshots show the player.
async fn join_a(a: &FakeShard) -> Result<(quinn::Endpoint, ShardSession, Vec<SessionEvent>)> {
    let ep = client_endpoint(loopback(), &quic_cfg())?;
    let mut s = ShardSession::connect(
        &ep,
        a.addr,
        a.pin,
        ticket(TicketKind::Join, &a.shard, &a.zone),
        &quic_cfg(),
    )
    .await?;
    assert_eq!(s.welcome().shard, a.shard);
    assert_eq!(s.stats().shard, a.shard);
    let mut events = Vec::new();
    play(&mut s, &mut events, "snapshots from A", |s, _| {
        s.stats().snapshots >= 3 && s.own_entity().is_some()
    })
    .await?;
    Ok((ep, s, events))
}

/// Sends an input every 20 ms and collects events until `done` holds; an error after
/// [`STEP`]. Returns the sequence numbers sent.
async fn play(
    s: &mut ShardSession,
    events: &mut Vec<SessionEvent>,
    what: &str,
    mut done: impl FnMut(&ShardSession, &[SessionEvent]) -> bool,
) -> Result<Vec<u32>> {
    let deadline = Instant::now() + STEP;
    let mut sent = Vec::new();
    loop {
        while let Some(e) = s.try_event() {
            events.push(e);
        }
        if done(s, events) {
            return Ok(sent);
        }
        if Instant::now() >= deadline {
            bail!(
                "{what}: not within {STEP:?}; events {events:?}; stats {:?}",
                s.stats()
            );
        }
        // A closed session refuses inputs; keep waiting for its events regardless.
        if let Ok(seq) = s.send_input(0.5, 1.0, 0) {
            sent.push(seq.0);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for `f` to hold, polling; an error after [`STEP`].
async fn eventually(what: &str, mut f: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + STEP;
    while !f() {
        ensure!(Instant::now() < deadline, "{what}: not within {STEP:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn handed_off(events: &[SessionEvent]) -> Option<(ShardId, ShardId, ZoneId, Duration)> {
    events.iter().find_map(|e| match e {
        SessionEvent::HandedOff {
            from,
            to,
            zone,
            blackout,
        } => Some((from.clone(), to.clone(), zone.clone(), *blackout)),
        _ => None,
    })
}

fn failed(events: &[SessionEvent]) -> Option<(ShardId, String)> {
    events.iter().find_map(|e| match e {
        SessionEvent::HandoffFailed { shard, detail } => Some((shard.clone(), detail.clone())),
        _ => None,
    })
}

fn closed(events: &[SessionEvent]) -> bool {
    events.iter().any(|e| matches!(e, SessionEvent::Closed(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_follows_a_handoff_on_its_early_connection_without_losing_inputs() -> Result<()>
{
    let a = shard_a()?;
    let b = shard_b(Admit::Ticket(TicketKind::Handoff), true)?;
    let (_ep, mut s, mut events) = join_a(&a).await?;

    // A neighbour with an address that cannot be used: counted, not fatal.
    a.send(ShardControlMsg::Neighbour(NeighbourMsg {
        zone: ZoneId::new("north")?,
        shard: ShardId::new("shard-x")?,
        addr: "not an address".into(),
        cert_sha256: [0; 32],
    }));
    // The real neighbour: the session opens its connection early.
    a.send(b.neighbour());
    play(&mut s, &mut events, "early connection to B", |s, _| {
        let st = s.stats();
        st.warm_connections == 1 && st.warm_failures == 1
    })
    .await?;
    ensure!(b.log(|l| l.connections) == 1, "B sees the early connection");
    ensure!(
        b.log(|l| l.hellos.is_empty()),
        "no hello before the handoff"
    );

    // The handoff, twice: the second arrives while the first is in flight and is ignored.
    a.send(b.handoff());
    a.send(b.handoff());
    // A kick from the old shard during the switch does not end the session.
    a.send(ShardControlMsg::Kick(KickMsg {
        reason: KickReason::HandedOff,
        detail: "moved".into(),
    }));
    play(&mut s, &mut events, "hello at B", |_, _| {
        b.log(|l| l.hellos.len()) == 1
    })
    .await?;
    // B holds its welcome: these inputs go to A, which no longer applies them. More of them
    // than the usual redundancy: the first datagram to B repeats every one A did not
    // acknowledge.
    let mut during = Vec::new();
    for _ in 0..6 {
        during.push(s.send_input(1.0, 1.0, 0)?.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually("A receives the inputs sent during the switch", || {
        during.iter().all(|q| a.log(|l| l.seqs().contains(q)))
    })
    .await?;
    ensure!(s.welcome().shard == a.shard, "still A until B welcomes");
    b.release();
    play(&mut s, &mut events, "HandedOff", |_, ev| {
        handed_off(ev).is_some()
    })
    .await?;

    let (from, to, zone, blackout) = handed_off(&events).context("handed off")?;
    assert_eq!((&from, &to, &zone), (&a.shard, &b.shard, &b.zone));
    assert!(blackout > Duration::ZERO, "{blackout:?}");
    let welcome = s.welcome();
    assert_eq!(
        (&welcome.shard, &welcome.zone, welcome.entity),
        (&b.shard, &b.zone, EntityId(42))
    );
    assert_eq!(s.entity(), EntityId(42));
    let stats = s.stats();
    assert_eq!(stats.shard, b.shard);
    assert_eq!((stats.handoffs, stats.handoff_failures), (1, 0));
    assert_eq!(stats.blackouts, vec![blackout]);
    assert!(
        !events.iter().any(|e| matches!(
            e,
            SessionEvent::Kicked(_) | SessionEvent::Closed(_) | SessionEvent::HandoffFailed { .. }
        )),
        "{events:?}"
    );

    // B: one connection (the early one), one hello (the handoff ticket).
    assert_eq!(b.log(|l| l.connections), 1, "the early connection was used");
    assert_eq!(b.log(|l| l.hellos.clone()), vec![TicketKind::Handoff]);
    // A's connection is closed by the client, as a normal end.
    eventually("A's connection closed", || {
        a.log(|l| l.closed.iter().any(|c| c.0 == u64::from(close_code::DONE)))
    })
    .await?;
    assert_eq!(
        a.log(|l| l.closed.clone()),
        vec![(u64::from(close_code::DONE), "handed off".to_owned())]
    );

    // Inputs: B's first datagram picks up where A stopped, and repeats the ones sent during
    // the switch; the numbers keep running.
    play(&mut s, &mut events, "more inputs at B", |_, _| {
        b.log(|l| l.inputs.len()) >= 3
    })
    .await?;
    let a_last = a
        .log(|l| l.seqs().last().copied())
        .context("A got inputs")?;
    let b_first = b.log(|l| l.inputs[0].clone());
    let b_seqs = b.log(Log::seqs);
    let b_min = *b_seqs.first().context("B got inputs")?;
    assert!(
        b_min <= a_last + 1,
        "gap: A's last {a_last}, B's first {b_first:?}"
    );
    for q in &during {
        assert!(
            b_first.contains(q),
            "input {q} sent during the switch: B's first {b_first:?}"
        );
    }
    let b_max = *b_seqs.last().context("B got inputs")?;
    assert!(b_max > a_last, "the numbers run on at B");
    assert_eq!(
        b_seqs.len() as u32,
        b_max - b_min + 1,
        "no input missing at B: {b_seqs:?}"
    );

    // The world is B's: its snapshots show the player's new entity.
    play(&mut s, &mut events, "own entity on B", |s, _| {
        s.own_entity().is_some_and(|e| e.id == EntityId(42))
    })
    .await?;
    assert!(s.is_open());
    s.leave().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_without_an_early_connection_connects_then() -> Result<()> {
    let a = shard_a()?;
    let b = shard_b(Admit::Ticket(TicketKind::Handoff), false)?;
    let (_ep, mut s, mut events) = join_a(&a).await?;
    a.send(b.handoff());
    play(&mut s, &mut events, "HandedOff", |_, ev| {
        handed_off(ev).is_some()
    })
    .await?;
    assert_eq!(s.welcome().shard, b.shard);
    assert_eq!(s.stats().warm_connections, 0);
    assert_eq!(b.log(|l| l.connections), 1);
    s.leave().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_handoff_is_not_replayed_and_fails_the_session() -> Result<()> {
    let a = shard_a()?;
    let b = shard_b(Admit::RefuseAll, false)?;
    let (_ep, mut s, mut events) = join_a(&a).await?;
    a.send(b.neighbour());
    play(&mut s, &mut events, "early connection to B", |s, _| {
        s.stats().warm_connections == 1
    })
    .await?;
    a.send(b.handoff());
    play(&mut s, &mut events, "session closed", |_, ev| closed(ev)).await?;

    let (shard, detail) = failed(&events).context("HandoffFailed before Closed")?;
    assert_eq!(shard, b.shard);
    assert!(detail.contains("BadTicket"), "{detail}");
    let failed_at = events
        .iter()
        .position(|e| matches!(e, SessionEvent::HandoffFailed { .. }));
    let closed_at = events
        .iter()
        .position(|e| matches!(e, SessionEvent::Closed(_)));
    assert!(failed_at < closed_at, "{events:?}");
    assert!(handed_off(&events).is_none());
    // The early connection only: the ticket was spent, a retry could only be a replay.
    assert_eq!(b.log(|l| l.hellos.clone()), vec![TicketKind::Handoff]);
    assert_eq!(b.log(|l| l.connections), 1);
    let stats = s.stats();
    assert_eq!((stats.handoffs, stats.handoff_failures), (0, 1));
    assert!(!s.is_open());
    // The session is over: the event stream ends.
    let end = tokio::time::timeout(STEP, async { while s.next_event().await.is_some() {} }).await;
    assert!(end.is_ok(), "the event stream ends");
    eventually("A's connection closed", || a.log(|l| !l.closed.is_empty())).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_to_an_unreachable_shard_fails_the_session_without_panicking() -> Result<()> {
    let a = shard_a()?;
    // A port nobody listens on.
    let nobody = std::net::UdpSocket::bind(loopback())?.local_addr()?;
    for addr in [nobody.to_string(), "not an address".to_owned()] {
        let (_ep, mut s, mut events) = join_a(&a).await?;
        a.send(ShardControlMsg::Handoff(HandoffMsg {
            ticket: ticket(TicketKind::Handoff, &ShardId::new("gone")?, &a.zone),
            shard: ShardId::new("gone")?,
            zone: ZoneId::new("east")?,
            addr: addr.clone(),
            cert_sha256: [1; 32],
        }));
        play(&mut s, &mut events, "session closed", |_, ev| closed(ev)).await?;
        let (shard, detail) = failed(&events).with_context(|| format!("{addr}: {events:?}"))?;
        assert_eq!(shard.as_str(), "gone");
        assert!(!detail.is_empty());
        assert_eq!(s.stats().handoff_failures, 1, "{addr}");
        assert!(
            s.send_input(0.0, 0.0, 0).is_err(),
            "{addr}: the session is closed"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_during_a_switch_survive_the_old_shard_closing_first() -> Result<()> {
    let a = shard_a()?;
    let b = shard_b(Admit::Ticket(TicketKind::Handoff), true)?;
    let (_ep, mut s, mut events) = join_a(&a).await?;
    a.send(b.handoff());
    play(&mut s, &mut events, "hello at B", |_, _| {
        b.log(|l| l.hellos.len()) == 1
    })
    .await?;
    // The old shard gives up on the client before the new one has welcomed it.
    a.close_connection();
    eventually("A's connection closes", || !s.is_open()).await?;
    let mut late = Vec::new();
    for _ in 0..3 {
        late.push(
            s.send_input(2.0, 1.0, 0)
                .context("inputs are taken during a switch")?
                .0,
        );
    }
    b.release();
    play(&mut s, &mut events, "HandedOff", |_, ev| {
        handed_off(ev).is_some()
    })
    .await?;
    assert!(!closed(&events), "{events:?}");
    assert!(s.is_open());
    assert_eq!(s.welcome().shard, b.shard);
    eventually("B receives the inputs sent while A was gone", || {
        late.iter().all(|q| b.log(|l| l.seqs().contains(q)))
    })
    .await?;
    s.leave().await;
    Ok(())
}
