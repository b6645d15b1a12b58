//! Join storm: N clients (default 500) join through the lobby at the same instant, on loopback,
//! in one process: a memory store, one shard (few NPCs, published through a `Registry`) and the
//! lobby, as `meridian dev` wires them. Each client runs the real client path —
//! `lobby::join` (hello → candidates → RTT probes → grant), `ShardSession::connect`, then
//! inputs at 30 Hz until its first snapshot — from one of a few shared client endpoints, as
//! bots do. Measured: joins per second (N ÷ time until the last first snapshot) and join time
//! (lobby connect → first snapshot) p50/p90/p99/max.
//!
//! Baseline, in the same run: a bare quinn server (the same `server_config`, dev certificate
//! and transport settings) and N bare handshakes at once from as many endpoints, each
//! completing when its handshake is done and then one bidirectional stream round trip (4 bytes
//! echoed); both rates are printed. The ratio joins/s ÷ handshakes/s is the figure of merit
//! (goal ≥ 0.5); one join costs `2 + candidates` handshakes (lobby, one RTT probe connection
//! per candidate shard, shard), printed beside it so the ratio can be read fairly.
//!
//! Where the time goes: a second storm (fresh names, after the first one's players left) runs
//! a step-by-step replica of `lobby::join` with a timestamp after every step (lobby handshake,
//! hello → candidates, RTT probe handshake, RTT pings, request → grant, shard handshake,
//! hello → welcome, welcome → first snapshot); the same split is shown for joins made one at a
//! time on the idle world (the floor). Each storm also reports the process's CPU time per
//! join or per bare connection (from `/proc/self/stat`) and how busy the cores were: on a
//! small machine a storm is CPU-bound, and CPU per join ÷ CPU per bare connection is the
//! ratio that does not depend on how the storm's pipeline fills.
//!
//! This is not a criterion suite: a storm is a one-shot event, not a loop to sample.
//!
//! `cargo bench -p meridian-lobby --bench join_storm [-- --clients N --endpoints E]`

use bytes::Bytes;
use meridian_client::lobby::{self as client_lobby, RTT_SAMPLES};
use meridian_client::session::{ShardSession, client_endpoint, connect_pinned};
use meridian_cluster::registry::{Registry, RegistryConfig};
use meridian_cluster::store::{Store as _, StoreConfig, StoreHandle};
use meridian_lobby::service::{self, LobbyHandle, LobbyTuning};
use meridian_protocol::PROTOCOL_VERSION;
use meridian_protocol::codec::{self, BoundedVec};
use meridian_protocol::datagram::{
    ClientDatagramMsg, MAX_DATAGRAM_BYTES, PingMsg, ServerDatagramMsg,
};
use meridian_protocol::frame::DEFAULT_MAX_FRAME;
use meridian_protocol::lobby::{
    JoinRequestMsg, LobbyHelloMsg, LobbyMsg, LobbyRequestMsg, ShardRttMsg,
};
use meridian_protocol::quic::{self, CertSha256, CertificateMaterial, QuicConfig, close_code};
use meridian_protocol::stream;
use meridian_protocol::ticket::{self, SignedTicket, TicketKey};
use meridian_shard::config::ShardConfig;
use meridian_shard::server::{self as shard, ShardHandle, ShardTuning};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const DEFAULT_CLIENTS: usize = 500;
const DEFAULT_ENDPOINTS: usize = 8;
/// The shard: few NPCs, the default tick rate.
const NPCS: u32 = 20;
const TICK_HZ: u16 = 30;
/// Inputs per second while waiting for the first snapshot (the shard rate-limits faster ones).
const INPUT_HZ: u32 = 30;
/// How often a waiting client looks at its newest snapshot tick.
const POLL: Duration = Duration::from_millis(1);
/// Longest one client may take, end to end; a slower one counts as failed.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);
/// Joins made one at a time on the idle world, for the floor of each step.
const ALONE_JOINS: usize = 10;
/// Handshakes before the baseline storm (first-use costs out of the way).
const WARMUP_HANDSHAKES: usize = 16;
/// Goals of the issue.
const GOAL_P99_MS: f64 = 100.0;
const GOAL_RATIO: f64 = 0.5;

/// The steps of one join, in order, as timed by the replica of `lobby::join`.
const STEPS: [&str; 8] = [
    "lobby handshake",
    "hello -> candidates",
    "RTT probe handshake",
    "RTT pings (5, 5 ms apart)",
    "request -> grant",
    "shard handshake",
    "hello -> welcome",
    "welcome -> 1st snapshot",
];
/// The coarse steps of the real path (`lobby::join`, `ShardSession::connect`, first snapshot).
const COARSE_STEPS: [&str; 3] = ["lobby::join", "ShardSession::connect", "-> 1st snapshot"];

fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

struct Args {
    clients: usize,
    endpoints: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        clients: DEFAULT_CLIENTS,
        endpoints: DEFAULT_ENDPOINTS,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut number = |name: &str| -> Result<usize, String> {
            it.next()
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|v| *v > 0)
                .ok_or_else(|| format!("{name} needs a positive number"))
        };
        match a.as_str() {
            "--clients" => args.clients = number("--clients")?,
            "--endpoints" => args.endpoints = number("--endpoints")?,
            // Passed by `cargo bench`.
            "--bench" => {}
            other => {
                return Err(format!(
                    "unknown argument `{other}` (--clients N, --endpoints E)"
                ));
            }
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("join_storm: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("join_storm: cannot build the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("join_storm: {e}");
            ExitCode::FAILURE
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// CPU time of this process so far (user + system), from `/proc/self/stat` (Linux; its unit,
/// USER_HZ, is 1/100 s). `None` elsewhere.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// What a storm used: wall time from the start to the last outcome, and CPU time meanwhile.
#[derive(Clone, Copy)]
struct Spent {
    wall: Duration,
    cpu: Option<Duration>,
}

impl Spent {
    /// CPU milliseconds per unit of work, and the share of the machine's cores kept busy.
    fn per(&self, units: usize, cpus: usize) -> (f64, f64) {
        let Some(cpu) = self.cpu else {
            return (f64::NAN, f64::NAN);
        };
        (
            ms(cpu) / units.max(1) as f64,
            cpu.as_secs_f64() / (self.wall.as_secs_f64() * cpus.max(1) as f64),
        )
    }
}

fn endpoints(n: usize, cfg: &QuicConfig) -> Result<Vec<quinn::Endpoint>, BoxError> {
    (0..n)
        .map(|_| client_endpoint(loopback(), cfg).map_err(BoxError::from))
        .collect()
}

async fn close_endpoints(eps: &[quinn::Endpoint]) {
    for ep in eps {
        ep.close(close_code::DONE.into(), b"done");
    }
    for ep in eps {
        let _ = tokio::time::timeout(Duration::from_secs(1), ep.wait_idle()).await;
    }
}

/// Starts `n` clients at the same instant, client `i` on endpoint `i % len`; each is bounded by
/// [`CLIENT_TIMEOUT`]. Returns the instant of the start, each client's outcome and what the
/// storm used.
async fn storm<T, F, Fut>(
    n: usize,
    eps: &[quinn::Endpoint],
    client: F,
) -> (Instant, Vec<Result<T, String>>, Spent)
where
    T: Send + 'static,
    F: Fn(usize, quinn::Endpoint) -> Fut,
    Fut: Future<Output = Result<T, String>> + Send + 'static,
{
    let (go, ready) = watch::channel(false);
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let fut = client(i, eps[i % eps.len()].clone());
            let mut ready = ready.clone();
            tokio::spawn(async move {
                let _ = ready.wait_for(|g| *g).await;
                tokio::time::timeout(CLIENT_TIMEOUT, fut)
                    .await
                    .unwrap_or_else(|_| Err(format!("timed out after {CLIENT_TIMEOUT:?}")))
            })
        })
        .collect();
    // Let every task reach its start line.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let cpu0 = cpu_time();
    let start = Instant::now();
    let _ = go.send(true);
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap_or_else(|e| Err(format!("task: {e}"))));
    }
    let spent = Spent {
        wall: start.elapsed(),
        cpu: cpu_time().zip(cpu0).map(|(b, a)| b.saturating_sub(a)),
    };
    (start, out, spent)
}

fn failures<T>(results: &[Result<T, String>]) -> BTreeMap<String, usize> {
    let mut by_kind = BTreeMap::new();
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        *by_kind.entry(e.clone()).or_insert(0) += 1;
    }
    by_kind
}

// ---------------------------------------------------------------------------------------------
// Baseline: bare quinn handshakes.

struct Bare {
    start: Instant,
    handshake: Instant,
    round_trip: Instant,
    conn: quinn::Connection,
}

async fn bare_client(
    ep: quinn::Endpoint,
    addr: SocketAddr,
    pin: CertSha256,
    cfg: QuicConfig,
) -> Result<Bare, String> {
    let start = Instant::now();
    let conn = connect_pinned(&ep, addr, pin, &cfg)
        .await
        .map_err(|e| e.to_string())?;
    let handshake = Instant::now();
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(b"ping").await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let echo = recv.read_to_end(64).await.map_err(|e| e.to_string())?;
    if echo != b"ping" {
        return Err("echo differs".into());
    }
    Ok(Bare {
        start,
        handshake,
        round_trip: Instant::now(),
        conn,
    })
}

struct BareFigures {
    handshakes_per_s: f64,
    round_trips_per_s: f64,
    last_handshake_ms: f64,
    last_round_trip_ms: f64,
    handshake_ms: Vec<f64>,
    failed: BTreeMap<String, usize>,
    recv_buffer: usize,
    spent: Spent,
}

async fn bare_baseline(n: usize, n_eps: usize, cfg: &QuicConfig) -> Result<BareFigures, BoxError> {
    let cert = CertificateMaterial::generate_dev(&["localhost", "bare-quinn"])?;
    let server_config = quic::server_config(&cert, cfg)?;
    let bound = quic::bind_udp_socket(loopback(), cfg.socket_buffer_bytes)?;
    let recv_buffer = bound.recv_buffer;
    let server = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config),
        bound.socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    let addr = server.local_addr()?;
    let pin = cert.sha256();
    let accept = tokio::spawn({
        let server = server.clone();
        async move {
            while let Some(incoming) = server.accept().await {
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    if let Ok((mut send, mut recv)) = conn.accept_bi().await
                        && let Ok(data) = recv.read_to_end(64).await
                    {
                        let _ = send.write_all(&data).await;
                        let _ = send.finish();
                    }
                    let _ = tokio::time::timeout(Duration::from_secs(30), conn.closed()).await;
                });
            }
        }
    });
    let eps = endpoints(n_eps, cfg)?;
    for i in 0..WARMUP_HANDSHAKES {
        let b = bare_client(eps[i % eps.len()].clone(), addr, pin, cfg.clone()).await?;
        b.conn.close(close_code::DONE.into(), b"warm-up");
    }
    let (start, results, spent) =
        storm(n, &eps, |_, ep| bare_client(ep, addr, pin, cfg.clone())).await;
    let ok: Vec<&Bare> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let last_hs = ok
        .iter()
        .map(|b| b.handshake - start)
        .max()
        .unwrap_or_default();
    let last_rt = ok
        .iter()
        .map(|b| b.round_trip - start)
        .max()
        .unwrap_or_default();
    let figures = BareFigures {
        handshakes_per_s: ok.len() as f64 / last_hs.as_secs_f64(),
        round_trips_per_s: ok.len() as f64 / last_rt.as_secs_f64(),
        last_handshake_ms: ms(last_hs),
        last_round_trip_ms: ms(last_rt),
        handshake_ms: sorted(ok.iter().map(|b| ms(b.handshake - b.start)).collect()),
        failed: failures(&results),
        recv_buffer,
        spent,
    };
    for b in &ok {
        b.conn.close(close_code::DONE.into(), b"done");
    }
    close_endpoints(&eps).await;
    server.close(close_code::SHUTDOWN.into(), b"done");
    let _ = tokio::time::timeout(Duration::from_secs(1), server.wait_idle()).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), accept).await;
    Ok(figures)
}

// ---------------------------------------------------------------------------------------------
// The world: memory store, one shard published in the registry, the lobby.

struct World {
    lobby: LobbyHandle,
    shard: ShardHandle,
    _store: watch::Sender<Option<StoreHandle>>,
}

async fn start_world(clients: usize) -> Result<World, BoxError> {
    let store = StoreHandle::open("memory", &StoreConfig::default()).await?;
    let key_bytes: [u8; 32] = ticket::random_bytes();
    let registry = Registry::new(store.clone(), RegistryConfig::default())?;
    let scfg = ShardConfig {
        id: "shard-storm".to_owned(),
        zone: "storm".to_owned(),
        listen: loopback(),
        tick_hz: TICK_HZ,
        npcs: NPCS,
        ticket_key: Some(ticket::to_hex(&key_bytes)),
        dev_cert: true,
        ..ShardConfig::default()
    };
    let mut tuning = ShardTuning::from_config(&scfg)?;
    // Room for every client of a storm (its probe and session connections at once) and more.
    let room = 4 * clients + 1_000;
    tuning.capacity = u32::try_from(room).unwrap_or(u32::MAX);
    tuning.limits.max_connections = tuning.limits.max_connections.max(room);
    let shard = shard::start(&scfg, tuning, Some(registry.clone())).await?;
    let cert = CertificateMaterial::generate_dev(&["localhost", "lobby"])?;
    let (store_tx, store_rx) = watch::channel(Some(store.clone()));
    let lobby_tuning = LobbyTuning::default();
    let lobby_tuning = LobbyTuning {
        max_connections: lobby_tuning.max_connections.max(room),
        ..lobby_tuning
    };
    let lobby = service::start(
        loopback(),
        &cert,
        TicketKey::from_bytes(&key_bytes),
        store_rx,
        lobby_tuning,
    )?;
    // The shard appears with its first heartbeat.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if store.live_shards().await.is_ok_and(|l| !l.is_empty()) {
            break;
        }
        if Instant::now() >= deadline {
            return Err("the shard did not appear in the registry within 5 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(World {
        lobby,
        shard,
        _store: store_tx,
    })
}

/// One client's join: the instants after each step (the first is the start) and the
/// handshakes it cost.
struct Timed {
    marks: Vec<Instant>,
    handshakes: usize,
}

/// A joined client: its timing and its session (held until the storm is over).
struct Join {
    timed: Timed,
    session: ShardSession,
}

/// The timings, and the sessions to leave.
fn split(results: Vec<Result<Join, String>>) -> (Vec<Result<Timed, String>>, Vec<ShardSession>) {
    let mut sessions = Vec::new();
    let timed = results
        .into_iter()
        .map(|r| {
            r.map(|j| {
                sessions.push(j.session);
                j.timed
            })
        })
        .collect();
    (timed, sessions)
}

/// Sends inputs at [`INPUT_HZ`] and looks at the newest snapshot tick every [`POLL`] until
/// there is one; returns when it was seen.
async fn first_snapshot(session: &mut ShardSession) -> Result<Instant, String> {
    let hz = INPUT_HZ.min(u32::from(session.welcome().tick_hz.max(1)));
    let every = Duration::from_secs(1) / hz;
    let mut next_input = Instant::now();
    loop {
        if session.stats().latest_tick.is_some() {
            return Ok(Instant::now());
        }
        let now = Instant::now();
        if now >= next_input {
            session
                .send_input(0.0, 0.0, 0)
                .map_err(|e| format!("input: {e}"))?;
            next_input += every;
        }
        if !session.is_open() {
            return Err("session closed before the first snapshot".into());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The real client path: `lobby::join`, `ShardSession::connect`, first snapshot.
async fn real_join(
    ep: quinn::Endpoint,
    lobby: SocketAddr,
    pin: CertSha256,
    name: String,
    cfg: QuicConfig,
) -> Result<Join, String> {
    let start = Instant::now();
    let joined = client_lobby::join(&ep, lobby, pin, &name, None, &cfg)
        .await
        .map_err(|e| format!("lobby: {e}"))?;
    let granted = Instant::now();
    let handshakes = 2 + joined.candidates.shards.len();
    let mut session = ShardSession::connect(
        &ep,
        joined.addr,
        joined.grant.shard.cert_sha256,
        joined.grant.ticket,
        &cfg,
    )
    .await
    .map_err(|e| format!("shard: {e}"))?;
    let welcomed = Instant::now();
    let snapshot = first_snapshot(&mut session).await?;
    Ok(Join {
        timed: Timed {
            marks: vec![start, granted, welcomed, snapshot],
            handshakes,
        },
        session,
    })
}

/// `measure_rtt`, step for step, telling when its connection was up.
async fn timed_probe(
    ep: quinn::Endpoint,
    addr: SocketAddr,
    pin: CertSha256,
    cfg: QuicConfig,
) -> Result<(Instant, Duration), String> {
    let conn = connect_pinned(&ep, addr, pin, &cfg)
        .await
        .map_err(|e| e.to_string())?;
    let connected = Instant::now();
    let mut best: Option<Duration> = None;
    for nonce in 0..u64::from(RTT_SAMPLES.max(1)) {
        let bytes = codec::encode(&ClientDatagramMsg::Ping(PingMsg { nonce }))
            .map_err(|e| e.to_string())?;
        let sent = Instant::now();
        conn.send_datagram(Bytes::from(bytes))
            .map_err(|e| e.to_string())?;
        let wait = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                let Ok(dg) = conn.read_datagram().await else {
                    return None;
                };
                if let Ok(ServerDatagramMsg::Pong(p)) = codec::decode(&dg, MAX_DATAGRAM_BYTES)
                    && p.nonce == nonce
                {
                    return Some(sent.elapsed());
                }
            }
        })
        .await;
        if let Ok(Some(rtt)) = wait {
            best = Some(best.map_or(rtt, |b| b.min(rtt)));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    conn.close(close_code::DONE.into(), b"measured");
    best.map(|b| (connected, b))
        .ok_or_else(|| "no pong".to_owned())
}

struct Granted {
    addr: SocketAddr,
    pin: CertSha256,
    ticket: SignedTicket,
    handshakes: usize,
}

/// `lobby::join`'s exchange on the lobby connection, step for step, with marks.
async fn timed_exchange(
    conn: &quinn::Connection,
    ep: &quinn::Endpoint,
    name: &str,
    cfg: &QuicConfig,
    marks: &mut Vec<Instant>,
) -> Result<Granted, String> {
    let max = DEFAULT_MAX_FRAME;
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| s(&e))?;
    let mut buf = Vec::new();
    let hello = LobbyHelloMsg {
        protocol_version: PROTOCOL_VERSION,
        name: name.to_owned(),
        resume: None,
    };
    stream::write_frame(&mut send, &hello, max, &mut buf)
        .await
        .map_err(|e| s(&e))?;
    let candidates = match stream::read_frame::<LobbyMsg>(&mut recv, max, &mut buf)
        .await
        .map_err(|e| s(&e))?
    {
        Some(LobbyMsg::Candidates(c)) => c,
        Some(LobbyMsg::Rejected(r)) => return Err(format!("lobby refused: {r}")),
        _ => return Err("lobby answered the hello out of turn".into()),
    };
    marks.push(Instant::now());
    let mut probes = Vec::new();
    for c in candidates.shards.iter() {
        let addr: SocketAddr = c
            .addr
            .parse()
            .map_err(|_| format!("bad address {}", c.addr))?;
        let (shard, fut) = (
            c.shard.clone(),
            timed_probe(ep.clone(), addr, c.cert_sha256, cfg.clone()),
        );
        probes.push(async move { (shard, fut.await) });
    }
    let measured = futures::future::join_all(probes).await;
    let probed = Instant::now();
    let connected = measured
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok().map(|(at, _)| *at))
        .max()
        .unwrap_or(probed);
    marks.push(connected);
    marks.push(probed);
    let mut report = BoundedVec::new();
    for (shard, r) in measured {
        if let Ok((_, rtt)) = r {
            let rtt_us = u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX).max(1);
            let _ = report.try_push(ShardRttMsg { shard, rtt_us });
        }
    }
    let request = LobbyRequestMsg::Join(JoinRequestMsg {
        rtts: report,
        party: None,
    });
    stream::write_frame(&mut send, &request, max, &mut buf)
        .await
        .map_err(|e| s(&e))?;
    let grant = match stream::read_frame::<LobbyMsg>(&mut recv, max, &mut buf)
        .await
        .map_err(|e| s(&e))?
    {
        Some(LobbyMsg::Grant(g)) => g,
        Some(LobbyMsg::Rejected(r)) => return Err(format!("lobby refused: {r}")),
        _ => return Err("lobby answered the request out of turn".into()),
    };
    marks.push(Instant::now());
    let addr = grant
        .shard
        .addr
        .parse()
        .map_err(|_| format!("bad address {}", grant.shard.addr))?;
    Ok(Granted {
        addr,
        pin: grant.shard.cert_sha256,
        ticket: grant.ticket,
        handshakes: 2 + candidates.shards.len(),
    })
}

/// A replica of the real path with a mark after every step of [`STEPS`].
async fn timed_join(
    ep: quinn::Endpoint,
    lobby: SocketAddr,
    pin: CertSha256,
    name: String,
    cfg: QuicConfig,
) -> Result<Join, String> {
    let mut marks = Vec::with_capacity(STEPS.len() + 1);
    marks.push(Instant::now());
    let conn = connect_pinned(&ep, lobby, pin, &cfg)
        .await
        .map_err(|e| format!("lobby: {e}"))?;
    marks.push(Instant::now());
    let granted = timed_exchange(&conn, &ep, &name, &cfg, &mut marks).await;
    conn.close(close_code::DONE.into(), b"joined");
    let g = granted.map_err(|e| format!("lobby: {e}"))?;
    let conn = connect_pinned(&ep, g.addr, g.pin, &cfg)
        .await
        .map_err(|e| format!("shard: {e}"))?;
    marks.push(Instant::now());
    let mut session = ShardSession::start(&ep, &cfg, conn, g.addr, g.ticket)
        .await
        .map_err(|e| format!("shard: {e}"))?;
    marks.push(Instant::now());
    marks.push(first_snapshot(&mut session).await?);
    Ok(Join {
        timed: Timed {
            marks,
            handshakes: g.handshakes,
        },
        session,
    })
}

/// Every session leaves (each bounded by `leave`'s own wait), then the shard is given a moment
/// to see them go.
async fn leave_all(sessions: Vec<ShardSession>, shard: &ShardHandle) {
    let tasks: Vec<_> = sessions
        .into_iter()
        .map(|s| tokio::spawn(s.leave()))
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    // The published status lags by up to a second.
    let deadline = Instant::now() + Duration::from_secs(3);
    while shard.status().players > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct StormFigures {
    joined: usize,
    failed: BTreeMap<String, usize>,
    joins_per_s: f64,
    last_ms: f64,
    join_ms: Vec<f64>,
    /// Per step: durations (ms, sorted) and when the last client finished it (ms from start).
    steps: Vec<(Vec<f64>, f64)>,
    handshakes: usize,
}

fn storm_figures(
    start: Instant,
    results: &[Result<Timed, String>],
    n_steps: usize,
) -> StormFigures {
    let ok: Vec<&Timed> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let end = |j: &Timed| j.marks.last().copied().unwrap_or(start);
    let last = ok.iter().map(|j| end(j) - start).max().unwrap_or_default();
    let steps = (0..n_steps)
        .map(|k| {
            let d = sorted(ok.iter().map(|j| ms(j.marks[k + 1] - j.marks[k])).collect());
            let last = ok
                .iter()
                .map(|j| ms(j.marks[k + 1] - start))
                .fold(0.0, f64::max);
            (d, last)
        })
        .collect();
    StormFigures {
        joined: ok.len(),
        failed: failures(results),
        joins_per_s: ok.len() as f64 / last.as_secs_f64(),
        last_ms: ms(last),
        join_ms: sorted(ok.iter().map(|j| ms(end(j) - j.marks[0])).collect()),
        steps,
        handshakes: ok.first().map_or(0, |j| j.handshakes),
    }
}

fn print_failures(what: &str, f: &BTreeMap<String, usize>) {
    for (kind, count) in f {
        println!("  {what} failures: {count} × {kind}");
    }
}

/// A table cell: one decimal, or `-` for no value.
fn cell(v: f64) -> String {
    if v.is_nan() {
        "-".to_owned()
    } else {
        format!("{v:.1}")
    }
}

fn print_steps(names: &[&str], storm: &StormFigures, alone: Option<&StormFigures>) {
    let total = mean(&storm.join_ms);
    println!(
        "  {:<26} {:>9} {:>9} {:>9} {:>9} {:>6} {:>10}",
        "step (ms)", "alone p50", "p50", "p99", "mean", "share", "last done"
    );
    let row = |name: &str, alone_p50: f64, d: &[f64], mean_ms: f64, last: f64| {
        println!(
            "  {:<26} {:>9} {:>9} {:>9} {:>9} {:>5.0}% {:>10.0}",
            name,
            cell(alone_p50),
            cell(pct(d, 0.5)),
            cell(pct(d, 0.99)),
            cell(mean_ms),
            100.0 * mean_ms / total,
            last
        );
    };
    for (k, name) in names.iter().enumerate() {
        let (d, last) = &storm.steps[k];
        let alone_p50 = alone.map_or(f64::NAN, |a| pct(&a.steps[k].0, 0.5));
        row(name, alone_p50, d, mean(d), *last);
    }
    let alone_total = alone.map_or(f64::NAN, |a| pct(&a.join_ms, 0.5));
    row("total", alone_total, &storm.join_ms, total, storm.last_ms);
}

fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "MISSED" }
}

async fn run(args: &Args) -> Result<(), BoxError> {
    let n = args.clients;
    let cfg = QuicConfig::default();
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!(
        "join_storm: {n} clients at once from {} client endpoints, loopback, {cpus} CPUs, tokio multi-thread runtime",
        args.endpoints
    );

    // 1. Baseline.
    let bare = bare_baseline(n, args.endpoints, &cfg).await?;
    let (bare_cpu_ms, bare_busy) = bare
        .spent
        .per(n - bare.failed.values().sum::<usize>(), cpus);
    println!(
        "bare quinn: {n} handshakes at once: {:.0} handshakes/s (last at {:.0} ms; handshake ms p50 {:.1} p99 {:.1}); \
         with one bidirectional stream round trip: {:.0}/s (last at {:.0} ms); \
         CPU {} ms per connection, cores {:.0}% busy; server UDP receive buffer {} KiB",
        bare.handshakes_per_s,
        bare.last_handshake_ms,
        pct(&bare.handshake_ms, 0.5),
        pct(&bare.handshake_ms, 0.99),
        bare.round_trips_per_s,
        bare.last_round_trip_ms,
        cell(bare_cpu_ms),
        100.0 * bare_busy,
        bare.recv_buffer / 1024,
    );
    print_failures("bare", &bare.failed);

    // 2. The world.
    let world = start_world(n).await?;
    let (lobby, pin) = (world.lobby.local_addr, world.lobby.cert_sha256);
    println!(
        "world: memory store, 1 shard ({NPCS} NPCs, {TICK_HZ} Hz) published through the registry, lobby at {lobby}"
    );

    // 3. Joins one at a time on the idle world: the floor of each step.
    let eps = endpoints(args.endpoints, &cfg)?;
    let mut alone = Vec::with_capacity(ALONE_JOINS);
    let alone_start = Instant::now();
    for i in 0..ALONE_JOINS {
        let ep = eps[i % eps.len()].clone();
        let join = timed_join(ep, lobby, pin, format!("alone-{i}"), cfg.clone());
        match tokio::time::timeout(CLIENT_TIMEOUT, join).await {
            Ok(Ok(j)) => {
                j.session.leave().await;
                alone.push(Ok(j.timed));
            }
            Ok(Err(e)) => alone.push(Err(e)),
            Err(_) => alone.push(Err("timed out".into())),
        }
    }
    let alone = storm_figures(alone_start, &alone, STEPS.len());
    print_failures("alone", &alone.failed);

    // 4. The storm, on the real client path.
    let (start, results, real_spent) = storm(n, &eps, |i, ep| {
        real_join(ep, lobby, pin, format!("storm-{i}"), cfg.clone())
    })
    .await;
    let (results, sessions) = split(results);
    let real = storm_figures(start, &results, COARSE_STEPS.len());
    leave_all(sessions, &world.shard).await;

    // 5. The storm again, on the step-by-step replica, for the split.
    let (start, results, timed_spent) = storm(n, &eps, |i, ep| {
        timed_join(ep, lobby, pin, format!("timed-{i}"), cfg.clone())
    })
    .await;
    let (results, sessions) = split(results);
    let timed = storm_figures(start, &results, STEPS.len());
    leave_all(sessions, &world.shard).await;

    // 6. Report.
    let hs = real.handshakes.max(timed.handshakes);
    let (join_cpu_ms, join_busy) = real_spent.per(real.joined, cpus);
    println!(
        "join storm (lobby::join + ShardSession::connect + 1st snapshot): joined {}/{n}, last at {:.0} ms: {:.0} joins/s; \
         CPU {} ms per join, cores {:.0}% busy",
        real.joined,
        real.last_ms,
        real.joins_per_s,
        cell(join_cpu_ms),
        100.0 * join_busy
    );
    print_failures("join", &real.failed);
    let p99 = pct(&real.join_ms, 0.99);
    println!(
        "join ms (lobby connect -> 1st snapshot): p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}",
        pct(&real.join_ms, 0.5),
        pct(&real.join_ms, 0.9),
        p99,
        pct(&real.join_ms, 1.0)
    );
    println!(
        "handshakes per join: {hs} (lobby 1 + RTT probe {} (a fresh connection per candidate shard) + shard 1)",
        hs.saturating_sub(2)
    );
    let ratio = real.joins_per_s / bare.handshakes_per_s;
    println!(
        "ratio joins/s / bare handshakes/s: {ratio:.3} (goal >= {GOAL_RATIO}: {}); \
         x {hs} handshakes per join: {:.2}; joins/s / (handshake + round trip)/s: {:.3}; \
         one join costs the CPU of {:.2} bare connections",
        verdict(ratio >= GOAL_RATIO),
        ratio * hs as f64,
        real.joins_per_s / bare.round_trips_per_s,
        join_cpu_ms / bare_cpu_ms,
    );
    println!(
        "p99 <= {GOAL_P99_MS} ms: {} (p99 {p99:.1} ms)",
        verdict(p99 <= GOAL_P99_MS)
    );
    // For scripts/bench.sh.
    println!("RESULT join_per_s={:.2}", real.joins_per_s);
    println!(
        "RESULT join_bare_handshakes_per_s={:.2}",
        bare.handshakes_per_s
    );
    println!("RESULT join_joined={} join_clients={n}", real.joined);
    println!("split of the real path:");
    print_steps(&COARSE_STEPS, &real, None);
    let (timed_cpu_ms, _) = timed_spent.per(timed.joined, cpus);
    println!(
        "split, step-by-step replica of the same path (second storm, fresh names): joined {}/{n}, last at {:.0} ms: \
         {:.0} joins/s, CPU {} ms per join; alone = {} joins one at a time on the idle world:",
        timed.joined,
        timed.last_ms,
        timed.joins_per_s,
        cell(timed_cpu_ms),
        alone.joined
    );
    print_failures("replica", &timed.failed);
    print_steps(&STEPS, &timed, Some(&alone));
    let st = world.shard.status();
    println!(
        "shard tick over the run: p99 {:.2} ms, max {:.2} ms, overruns {} (budget {:.1} ms)",
        st.total.p99_ms,
        st.total.max_ms,
        st.overruns,
        1000.0 / f64::from(TICK_HZ)
    );

    close_endpoints(&eps).await;
    world.lobby.shutdown().await;
    world.shard.shutdown().await;
    Ok(())
}
