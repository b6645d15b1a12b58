//! Load generator: N headless clients in one process (default 1000), against one shard or
//! against the bare quinn baseline (`benches/bare_quinn.rs`), measured over a steady window.
//!
//! - `--mode shard`: each client mints its own join ticket and plays through the real client
//!   library ([`ShardSession`]): an input every tick (wandering, full throttle), snapshots
//!   counted.
//! - `--mode bare`: plain QUIC connections ([`connect_pinned`]); each sends one datagram of an
//!   input's size every tick and counts the datagrams it receives.
//!
//! Clients connect at a bounded rate, then after a warm-up the window is measured: datagrams
//! received against the window times the tick rate (delivery), their mean size, and, when
//! `--server-pid` is given, the server's CPU time over exactly the window (from `/proc`). One
//! JSON line of results goes to stdout; progress goes to stderr. `scripts/load.sh` runs both
//! modes and prints the comparison.
//!
//! Without `--addr` (as under a plain `cargo bench`) it prints a hint and exits.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use meridian_client::session::{SessionEvent, ShardSession, client_endpoint, connect_pinned};
use meridian_protocol::codec::{self, BoundedVec};
use meridian_protocol::datagram::{ClientDatagramMsg, InputFrameMsg, InputMsg};
use meridian_protocol::quic::{CertSha256, QuicConfig};
use meridian_protocol::ticket::{TicketClaims, TicketKey, TicketKind, parse_hex_32, random_nonce};
use meridian_protocol::{InputSeq, PlayerId, ShardId, Tick, ZoneId};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};

/// What the clients connect to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// A Meridian shard, through the client library.
    Shard,
    /// The bare quinn server of `benches/bare_quinn.rs`.
    Bare,
}

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "load_clients",
    about = "N headless clients against one shard or the bare quinn baseline"
)]
struct Args {
    /// Shard (or bare quinn) address; without it the program only prints a hint.
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// What the clients connect to.
    #[arg(long, value_enum, default_value = "shard")]
    mode: Mode,
    /// SHA-256 of the server certificate, 64 hex characters.
    #[arg(long)]
    cert_sha256: Option<String>,
    /// Ticket key shared with the shard (shard mode), 64 hex characters.
    #[arg(long, env = "MERIDIAN_TICKET_KEY", hide_env_values = true)]
    ticket_key: Option<String>,
    /// The shard's id (tickets name it).
    #[arg(long, default_value = "shard-1")]
    shard_id: String,
    /// The shard's zone (tickets name it).
    #[arg(long, default_value = "zone-1")]
    zone: String,
    /// Clients.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// New connections per second while ramping up.
    #[arg(long, default_value_t = 200.0)]
    connect_rate: f64,
    /// Seconds after the last connection before the window starts.
    #[arg(long, default_value_t = 5.0)]
    warmup_s: f64,
    /// Length of the measured window, seconds.
    #[arg(long, default_value_t = 20.0)]
    window_s: f64,
    /// Rate of inputs (and of expected snapshots), per second.
    #[arg(long, default_value_t = 30)]
    tick_hz: u32,
    /// Client UDP endpoints the connections are spread over.
    #[arg(long, default_value_t = 16)]
    endpoints: usize,
    /// Groups of clients, each sending on its own phase of the tick (spreads inputs in time).
    #[arg(long, default_value_t = 32)]
    groups: usize,
    /// Longest wait for one connection and its welcome, seconds.
    #[arg(long, default_value_t = 20.0)]
    connect_timeout_s: f64,
    /// Server process whose CPU time is measured over the window (from /proc).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Worker threads of the runtime; 1 runs a current-thread runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Bare mode: size of the datagram each client sends per tick (the mean input datagram the
    /// shard run measured); by default the size of a typical encoded input.
    #[arg(long)]
    input_bytes: Option<usize>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Clock ticks per second of the utime/stime fields in /proc (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;

fn main() -> Result<()> {
    let args = Args::parse();
    let Some(addr) = args.addr else {
        eprintln!(
            "load_clients: nothing to do without --addr (run by scripts/load.sh; see --help). \
             Example: cargo bench --bench load_clients -- --mode shard --addr 127.0.0.1:7000 \
             --cert-sha256 HEX --ticket-key HEX"
        );
        return Ok(());
    };
    if args.clients == 0 || args.tick_hz == 0 || args.connect_rate <= 0.0 || args.window_s <= 0.0 {
        bail!("--clients, --tick-hz, --connect-rate and --window-s must be positive");
    }
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .context("building the tokio runtime")?;
    let report = runtime.block_on(run(&args, addr))?;
    println!("{report}");
    // Connections were closed in `run`; whatever is left is dropped with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

/// Where a client goes: what each connection needs to start.
struct Target {
    mode: Mode,
    addr: SocketAddr,
    pin: CertSha256,
    quic: QuicConfig,
    key: Option<TicketKey>,
    shard: ShardId,
    zone: ZoneId,
}

/// Counters of a bare connection, written by its reader task.
#[derive(Default)]
struct BareCounters {
    datagrams: AtomicU64,
    bytes: AtomicU64,
}

enum Link {
    Shard(Box<ShardSession>),
    Bare {
        conn: quinn::Connection,
        counters: Arc<BareCounters>,
        reader: tokio::task::JoinHandle<()>,
    },
}

/// A heading that changes every few seconds (a small xorshift generator per client).
struct Wander {
    rng: u64,
    heading: f32,
    next_change: Instant,
}

impl Wander {
    fn new(now: Instant) -> Self {
        let mut w = Self {
            rng: random_nonce() | 1,
            heading: 0.0,
            next_change: now,
        };
        w.turn(now);
        w
    }

    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn turn(&mut self, now: Instant) {
        self.heading = (self.next() % 3600) as f32 / 3600.0 * std::f32::consts::TAU;
        self.next_change = now + Duration::from_millis(2_000 + self.next() % 3_000);
    }

    fn heading(&mut self, now: Instant) -> f32 {
        if now >= self.next_change {
            self.turn(now);
        }
        self.heading
    }
}

/// What one client counted so far.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    datagrams: u64,
    bytes_down: u64,
    inputs_sent: u64,
    bytes_up: u64,
    unusable: u64,
    latest_tick: Option<u64>,
    open: bool,
    /// QUIC DATAGRAM frames received, by quinn (before the application reads them).
    quic_datagrams_rx: u64,
    /// UDP datagrams received, by quinn.
    udp_rx: u64,
    /// Packets this client sent that quinn declared lost.
    lost_packets: u64,
}

struct Client {
    index: usize,
    link: Link,
    wander: Wander,
    open: bool,
    end: Option<String>,
    inputs_sent: u64,
    bytes_up: u64,
    send_errors: u64,
}

impl Client {
    fn close(&mut self, why: String) {
        if self.open {
            self.open = false;
            self.end = Some(why);
        }
    }

    /// This tick's input.
    fn tick(&mut self, now: Instant, bare_input: &Bytes) {
        if !self.open {
            return;
        }
        match &mut self.link {
            Link::Shard(session) => {
                let mut ended = None;
                while let Some(ev) = session.try_event() {
                    match ev {
                        // The first reason is the one that counts (a kick is followed by a close).
                        SessionEvent::Kicked(k) => {
                            ended.get_or_insert_with(|| {
                                format!("kicked: {:?} {}", k.reason, k.detail)
                            });
                        }
                        SessionEvent::Closed(r) => {
                            ended.get_or_insert_with(|| format!("closed: {r}"));
                        }
                        SessionEvent::HandoffFailed { shard, detail } => {
                            ended.get_or_insert_with(|| {
                                format!("handoff to {shard} failed: {detail}")
                            });
                        }
                        // Sessions opened here do not reconnect by themselves.
                        SessionEvent::Score { .. }
                        | SessionEvent::Chat { .. }
                        | SessionEvent::HandedOff { .. }
                        | SessionEvent::Disconnected { .. }
                        | SessionEvent::Reconnected { .. } => {}
                    }
                }
                if ended.is_none() {
                    let heading = self.wander.heading(now);
                    if session.send_input(heading, 1.0, 0).is_err() {
                        self.send_errors += 1;
                        if !session.is_open() {
                            ended = Some("connection lost".into());
                        }
                    }
                }
                if let Some(why) = ended {
                    self.close(why);
                }
            }
            Link::Bare { conn, .. } => {
                if let Some(reason) = conn.close_reason() {
                    self.close(format!("closed: {reason}"));
                    return;
                }
                match conn.send_datagram(bare_input.clone()) {
                    Ok(()) => {
                        self.inputs_sent += 1;
                        self.bytes_up += bare_input.len() as u64;
                    }
                    Err(_) => self.send_errors += 1,
                }
            }
        }
    }

    fn connection(&self) -> quinn::Connection {
        match &self.link {
            Link::Shard(session) => session.connection(),
            Link::Bare { conn, .. } => conn.clone(),
        }
    }

    fn counts(&self) -> Counts {
        let q = self.connection().stats();
        let quic = |c: Counts| Counts {
            quic_datagrams_rx: q.frame_rx.datagram,
            udp_rx: q.udp_rx.datagrams,
            lost_packets: q.path.lost_packets,
            ..c
        };
        quic(match &self.link {
            Link::Shard(session) => {
                let s = session.stats();
                Counts {
                    datagrams: s.snapshots,
                    bytes_down: s.bytes_down,
                    inputs_sent: s.inputs_sent,
                    bytes_up: s.bytes_up,
                    unusable: s.snapshots_unusable,
                    latest_tick: s.latest_tick.map(|Tick(t)| t),
                    open: self.open,
                    ..Counts::default()
                }
            }
            Link::Bare { counters, .. } => Counts {
                datagrams: counters.datagrams.load(Ordering::Relaxed),
                bytes_down: counters.bytes.load(Ordering::Relaxed),
                inputs_sent: self.inputs_sent,
                bytes_up: self.bytes_up,
                unusable: 0,
                latest_tick: None,
                open: self.open,
                ..Counts::default()
            },
        })
    }

    fn shutdown(&mut self) {
        match &mut self.link {
            Link::Shard(session) => session.connection().close(0u32.into(), b"load test over"),
            Link::Bare { conn, reader, .. } => {
                conn.close(0u32.into(), b"load test over");
                reader.abort();
            }
        }
    }
}

type Group = Arc<Mutex<Vec<Client>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The input datagram the bare clients send: what a shard client sends each tick (an ack and
/// the last four inputs), encoded the same way.
fn representative_input() -> Result<Bytes> {
    let mut inputs = BoundedVec::new();
    for seq in 1_000..1_004u32 {
        let _ = inputs.try_push(InputFrameMsg {
            seq: InputSeq(seq),
            heading: 77,
            throttle: 255,
            buttons: 0,
        });
    }
    let msg = ClientDatagramMsg::Input(InputMsg {
        ack: Some(Tick(1_000)),
        inputs,
    });
    Ok(Bytes::from(
        codec::encode(&msg).context("encoding the representative input datagram")?,
    ))
}

async fn connect_one(target: &Target, endpoint: &quinn::Endpoint) -> Result<Link> {
    match target.mode {
        Mode::Shard => {
            let key = target
                .key
                .as_ref()
                .context("shard mode needs --ticket-key")?;
            let ticket = key
                .sign(TicketClaims {
                    kind: TicketKind::Join,
                    player: PlayerId(random_nonce()),
                    shard: target.shard.clone(),
                    zone: target.zone.clone(),
                    expires_at_ms: now_ms() + 60_000,
                    nonce: random_nonce(),
                })
                .context("signing a join ticket")?;
            let session =
                ShardSession::connect(endpoint, target.addr, target.pin, ticket, &target.quic)
                    .await?;
            Ok(Link::Shard(Box::new(session)))
        }
        Mode::Bare => {
            let conn = connect_pinned(endpoint, target.addr, target.pin, &target.quic).await?;
            let counters = Arc::new(BareCounters::default());
            let reader = tokio::spawn({
                let conn = conn.clone();
                let counters = counters.clone();
                async move {
                    while let Ok(d) = conn.read_datagram().await {
                        counters.datagrams.fetch_add(1, Ordering::Relaxed);
                        counters.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
                    }
                }
            });
            Ok(Link::Bare {
                conn,
                counters,
                reader,
            })
        }
    }
}

/// Lateness of each group's ticks (µs), recorded while `measuring` is set: shows whether the
/// client process itself kept up.
#[derive(Default)]
struct Lateness {
    measuring: AtomicBool,
    samples: Mutex<Vec<u32>>,
}

async fn drive_group(
    group: Group,
    dt: Duration,
    phase: Duration,
    bare_input: Bytes,
    lateness: Arc<Lateness>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + phase, dt);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let scheduled = tokio::select! {
            t = ticker.tick() => t,
            _ = stop.changed() => return,
        };
        let late = scheduled.elapsed();
        let now = Instant::now();
        for c in lock(&group).iter_mut() {
            c.tick(now, &bare_input);
        }
        if lateness.measuring.load(Ordering::Relaxed) {
            lock(&lateness.samples).push(late.as_micros().min(u128::from(u32::MAX)) as u32);
        }
    }
}

/// CPU time of a process over an interval, from /proc.
#[derive(Clone, Debug, Default)]
struct CpuSample {
    /// utime + stime of the whole process (exited threads included), clock ticks.
    ticks: u64,
    /// Per thread: (name, time on CPU in ns from schedstat).
    threads: HashMap<u32, (String, u64)>,
}

fn read_cpu(pid: &str) -> Result<CpuSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields after the command: state is field 3, utime 14, stime 15 (1-based).
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .context("short /proc stat")?
            .parse()
            .context("bad /proc stat field")
    };
    let ticks = field(14)? + field(15)?;
    let mut threads = HashMap::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for entry in dir.flatten() {
            let path = entry.path();
            let Some(tid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let name = std::fs::read_to_string(path.join("comm"))
                .map(|s| s.trim().to_owned())
                .unwrap_or_default();
            let ns = std::fs::read_to_string(path.join("schedstat"))
                .ok()
                .and_then(|s| {
                    s.split_whitespace()
                        .next()
                        .and_then(|v| v.parse::<u64>().ok())
                })
                .unwrap_or(0);
            threads.insert(tid, (name, ns));
        }
    }
    Ok(CpuSample { ticks, threads })
}

/// Busy and total jiffies of each CPU (`/proc/stat`): shows what else ran on the server's core.
fn read_cpus() -> Vec<(u64, u64)> {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let total: u64 = v.iter().take(8).sum();
            // idle (4th) and iowait (5th) are not busy.
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            (total.saturating_sub(idle), total)
        })
        .collect()
}

/// The kernel's softirq threads (`ksoftirqd/N`), by CPU: when softirq work piles up, loopback
/// traffic is processed there rather than in the sender's context (and charged to no process
/// of ours), so the report shows them.
fn find_ksoftirqd() -> BTreeMap<usize, String> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_owned)
        else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if let Some(cpu) = comm
            .trim()
            .strip_prefix("ksoftirqd/")
            .and_then(|c| c.parse::<usize>().ok())
        {
            out.insert(cpu, pid);
        }
    }
    out
}

/// utime + stime of each ksoftirqd thread, clock ticks, by CPU.
fn read_ksoftirqd(threads: &BTreeMap<usize, String>) -> BTreeMap<usize, u64> {
    threads
        .iter()
        .filter_map(|(cpu, pid)| Some((*cpu, read_cpu(pid).ok()?.ticks)))
        .collect()
}

/// The kernel's UDP counters (`/proc/net/snmp`), by name: where datagrams are dropped on
/// loopback (a full socket buffer counts `RcvbufErrors`).
fn read_udp_snmp() -> BTreeMap<String, u64> {
    let Ok(snmp) = std::fs::read_to_string("/proc/net/snmp") else {
        return BTreeMap::new();
    };
    let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
    let (Some(names), Some(values)) = (udp.first(), udp.get(1)) else {
        return BTreeMap::new();
    };
    names
        .split_whitespace()
        .skip(1)
        .zip(values.split_whitespace().skip(1))
        .filter_map(|(n, v)| Some((n.to_owned(), v.parse().ok()?)))
        .collect()
}

/// CPU seconds between two samples: the whole process, and per thread name (threads with the
/// same name summed; threads born in the interval counted whole).
fn cpu_delta(a: &CpuSample, b: &CpuSample) -> (f64, BTreeMap<String, f64>) {
    let total = b.ticks.saturating_sub(a.ticks) as f64 / USER_HZ;
    let mut by_name: BTreeMap<String, f64> = BTreeMap::new();
    for (tid, (name, ns)) in &b.threads {
        let before = a.threads.get(tid).map_or(0, |(_, n)| *n);
        *by_name.entry(name.clone()).or_default() += ns.saturating_sub(before) as f64 / 1e9;
    }
    by_name.retain(|_, s| *s >= 0.0005);
    (total, by_name)
}

fn round(x: f64, places: i32) -> f64 {
    let m = 10f64.powi(places);
    (x * m).round() / m
}

fn snapshot_counts(groups: &[Group]) -> HashMap<usize, Counts> {
    let mut out = HashMap::new();
    for g in groups {
        for c in lock(g).iter() {
            out.insert(c.index, c.counts());
        }
    }
    out
}

async fn run(args: &Args, addr: SocketAddr) -> Result<serde_json::Value> {
    let pin = parse_hex_32(
        args.cert_sha256
            .as_deref()
            .context("--cert-sha256 is required")?,
    )
    .context("--cert-sha256")?;
    let key = match (args.mode, args.ticket_key.as_deref()) {
        (Mode::Shard, None) => bail!("--mode shard needs --ticket-key (or MERIDIAN_TICKET_KEY)"),
        (_, Some(hex)) => Some(TicketKey::from_hex(hex).context("--ticket-key")?),
        (Mode::Bare, None) => None,
    };
    let quic = QuicConfig::default();
    let target = Arc::new(Target {
        mode: args.mode,
        addr,
        pin,
        quic: quic.clone(),
        key,
        shard: ShardId::new(args.shard_id.clone()).context("--shard-id")?,
        zone: ZoneId::new(args.zone.clone()).context("--zone")?,
    });
    let server_pid = args.server_pid.map(|p| p.to_string());
    let bind: SocketAddr = if addr.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    }
    .parse()
    .context("bind address")?;
    let endpoints = (0..args.endpoints.clamp(1, 1024))
        .map(|_| client_endpoint(bind, &quic).context("binding a client endpoint"))
        .collect::<Result<Vec<_>>>()?;
    let bare_input = match args.input_bytes {
        Some(n) if n > 0 => Bytes::from(vec![0x5a_u8; n]),
        _ => representative_input()?,
    };
    let dt = Duration::from_secs(1) / args.tick_hz;
    let n_groups = args.groups.clamp(1, args.clients);
    let groups: Vec<Group> = (0..n_groups)
        .map(|_| Arc::new(Mutex::new(Vec::new())))
        .collect();
    let lateness = Arc::new(Lateness::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut drivers = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        let phase = dt * g as u32 / n_groups as u32;
        drivers.push(tokio::spawn(drive_group(
            group.clone(),
            dt,
            phase,
            bare_input.clone(),
            lateness.clone(),
            stop_rx.clone(),
        )));
    }

    // Ramp up: connections started at `connect_rate`, each bounded by `connect_timeout_s`.
    let ramp_start = Instant::now();
    let (done_tx, mut done_rx) = mpsc::channel::<(usize, Result<Link>)>(args.clients);
    let connect_timeout = Duration::from_secs_f64(args.connect_timeout_s);
    let spawner = tokio::spawn({
        let (n, rate, target, endpoints) = (
            args.clients,
            args.connect_rate,
            target.clone(),
            endpoints.clone(),
        );
        async move {
            let start = tokio::time::Instant::now();
            for i in 0..n {
                tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
                let (target, endpoint, tx) = (
                    target.clone(),
                    endpoints[i % endpoints.len()].clone(),
                    done_tx.clone(),
                );
                tokio::spawn(async move {
                    let r = match tokio::time::timeout(
                        connect_timeout,
                        connect_one(&target, &endpoint),
                    )
                    .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(anyhow::anyhow!("no session within {connect_timeout:?}")),
                    };
                    let _ = tx.send((i, r)).await;
                });
            }
        }
    });
    let ramp_deadline = Instant::now()
        + Duration::from_secs_f64(args.clients as f64 / args.connect_rate)
        + connect_timeout
        + Duration::from_secs(5);
    let (mut connected, mut failed) = (0usize, 0usize);
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut last_progress = Instant::now();
    while connected + failed < args.clients {
        let left = ramp_deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left.min(Duration::from_secs(1)), done_rx.recv()).await {
            Ok(Some((i, Ok(link)))) => {
                connected += 1;
                let client = Client {
                    index: i,
                    link,
                    wander: Wander::new(Instant::now()),
                    open: true,
                    end: None,
                    inputs_sent: 0,
                    bytes_up: 0,
                    send_errors: 0,
                };
                lock(&groups[i % n_groups]).push(client);
            }
            Ok(Some((_, Err(e)))) => {
                failed += 1;
                *errors.entry(format!("{e:#}")).or_default() += 1;
            }
            Ok(None) => break,
            Err(_) if Instant::now() >= ramp_deadline => break,
            Err(_) => {}
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprintln!(
                "load_clients: {connected} connected, {failed} failed of {}",
                args.clients
            );
        }
    }
    spawner.abort();
    let ramp_s = ramp_start.elapsed().as_secs_f64();
    eprintln!("load_clients: ramp done in {ramp_s:.1} s: {connected} connected, {failed} failed");
    if connected == 0 {
        bail!("no client connected to {addr}; errors: {errors:?}");
    }

    tokio::time::sleep(Duration::from_secs_f64(args.warmup_s)).await;

    // The window.
    let cpu_a = server_pid.as_deref().map(read_cpu).transpose()?;
    let self_a = read_cpu("self")?;
    let cpus_a = read_cpus();
    let udp_a = read_udp_snmp();
    let softirqd = find_ksoftirqd();
    let softirqd_a = read_ksoftirqd(&softirqd);
    let t0 = Instant::now();
    let before = snapshot_counts(&groups);
    lateness.measuring.store(true, Ordering::Relaxed);
    eprintln!(
        "load_clients: window start ({} open clients, {:.0} s)",
        before.values().filter(|c| c.open).count(),
        args.window_s
    );
    tokio::time::sleep(Duration::from_secs_f64(args.window_s)).await;
    let after = snapshot_counts(&groups);
    let window = t0.elapsed().as_secs_f64();
    let cpu_b = server_pid.as_deref().map(read_cpu).transpose()?;
    let self_b = read_cpu("self")?;
    let cpus_b = read_cpus();
    let udp_b = read_udp_snmp();
    let softirqd_b = read_ksoftirqd(&softirqd);
    lateness.measuring.store(false, Ordering::Relaxed);
    eprintln!("load_clients: window end ({window:.2} s)");

    // Figures over the clients open at the window's start.
    let expected_each = window * f64::from(args.tick_hz);
    let (mut received, mut bytes_down, mut inputs, mut bytes_up, mut unusable, mut ticks_advanced) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut measured, mut closed_in_window) = (0usize, 0usize);
    let (mut quic_rx, mut udp_rx, mut lost) = (0u64, 0u64, 0u64);
    // The same, over the clients still open at the window's end.
    let (mut open_received, mut open_ticks, mut open_clients) = (0u64, 0u64, 0usize);
    let mut per_client_pct: Vec<f64> = Vec::new();
    for (i, b) in &before {
        if !b.open {
            continue;
        }
        let Some(a) = after.get(i) else { continue };
        measured += 1;
        if !a.open {
            closed_in_window += 1;
        }
        let got = a.datagrams.saturating_sub(b.datagrams);
        received += got;
        bytes_down += a.bytes_down.saturating_sub(b.bytes_down);
        inputs += a.inputs_sent.saturating_sub(b.inputs_sent);
        bytes_up += a.bytes_up.saturating_sub(b.bytes_up);
        unusable += a.unusable.saturating_sub(b.unusable);
        quic_rx += a.quic_datagrams_rx.saturating_sub(b.quic_datagrams_rx);
        udp_rx += a.udp_rx.saturating_sub(b.udp_rx);
        lost += a.lost_packets.saturating_sub(b.lost_packets);
        let ticks = match (b.latest_tick, a.latest_tick) {
            (Some(x), Some(y)) => y.saturating_sub(x),
            _ => 0,
        };
        ticks_advanced += ticks;
        if a.open {
            open_clients += 1;
            open_received += got;
            open_ticks += ticks;
        }
        per_client_pct.push(100.0 * got as f64 / expected_each);
    }
    per_client_pct.sort_by(f64::total_cmp);
    let pct_at = |q: f64| {
        per_client_pct
            .get(((per_client_pct.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let expected_total = expected_each * measured as f64;
    let mut late = std::mem::take(&mut *lock(&lateness.samples));
    late.sort_unstable();
    let late_at = |q: f64| {
        late.get(((late.len() as f64 - 1.0) * q).round() as usize)
            .map_or(0.0, |us| f64::from(*us) / 1000.0)
    };
    let (self_cpu, _) = cpu_delta(&self_a, &self_b);
    let client_ticks = measured as f64 * expected_each;

    let mut report = json!({
        "mode": match args.mode { Mode::Shard => "shard", Mode::Bare => "bare" },
        "clients": args.clients,
        "connected": connected,
        "connect_failed": failed,
        "connect_errors": errors.iter().take(5).map(|(e, n)| json!({"error": e, "count": n})).collect::<Vec<_>>(),
        "ramp_s": round(ramp_s, 2),
        "measured_clients": measured,
        "closed_in_window": closed_in_window,
        "window_s": round(window, 3),
        "tick_hz": args.tick_hz,
        "expected_per_client": round(expected_each, 1),
        "received": received,
        "delivered_pct": round(100.0 * received as f64 / expected_total.max(1.0), 3),
        "per_client_delivered_pct": {"min": round(pct_at(0.0), 2), "p1": round(pct_at(0.01), 2), "p50": round(pct_at(0.5), 2)},
        "received_per_s": round(received as f64 / window, 1),
        "mean_datagram_bytes": round(bytes_down as f64 / (received.max(1)) as f64, 1),
        "inputs_per_s": round(inputs as f64 / window, 1),
        "mean_input_bytes": round(bytes_up as f64 / (inputs.max(1)) as f64, 1),
        "client_cpu_s": round(self_cpu, 3),
        "client_cpu_pct": round(100.0 * self_cpu / window, 1),
        "client_tick_late_ms": {"p50": round(late_at(0.5), 3), "p99": round(late_at(0.99), 3), "max": round(late_at(1.0), 3)},
    });
    // Busy % of each CPU over the window, whoever ran there (the machine may be shared).
    report["cpu_busy_pct"] = json!(
        cpus_a
            .iter()
            .zip(&cpus_b)
            .map(|((ba, ta), (bb, tb))| round(
                100.0 * bb.saturating_sub(*ba) as f64 / (tb.saturating_sub(*ta)).max(1) as f64,
                1
            ))
            .collect::<Vec<_>>()
    );
    // Where datagrams went missing: quinn received DATAGRAM frames (before the application),
    // the kernel's UDP counters (system-wide, both directions on loopback).
    report["quic_datagram_frames_rx"] = json!(quic_rx);
    report["quic_udp_rx"] = json!(udp_rx);
    report["client_lost_packets"] = json!(lost);
    report["kernel_udp"] = json!(
        udp_b
            .iter()
            .map(|(k, v)| (
                k.clone(),
                v.saturating_sub(udp_a.get(k).copied().unwrap_or(0))
            ))
            .collect::<BTreeMap<_, _>>()
    );
    // CPU % of each ksoftirqd thread over the window, by CPU.
    report["ksoftirqd_pct"] = json!(
        softirqd_b
            .iter()
            .map(|(cpu, t)| round(
                100.0 * t.saturating_sub(softirqd_a.get(cpu).copied().unwrap_or(0)) as f64
                    / USER_HZ
                    / window,
                1
            ))
            .collect::<Vec<_>>()
    );
    report["open_at_end"] = json!(open_clients);
    report["delivered_pct_open_at_end"] = json!(round(
        100.0 * open_received as f64 / (expected_each * open_clients as f64).max(1.0),
        3
    ));
    if args.mode == Mode::Shard {
        report["snapshots_unusable"] = json!(unusable);
        // Snapshots received against the server ticks the clients saw pass: delivery of what
        // was sent, whatever the shard's actual tick rate.
        report["delivered_of_ticks_pct"] = json!(round(
            100.0 * received as f64 / (ticks_advanced.max(1)) as f64,
            3
        ));
        report["server_ticks_per_s"] = json!(round(
            open_ticks as f64 / open_clients.max(1) as f64 / window,
            2
        ));
    }
    if let (Some(a), Some(b), Some(pid)) = (&cpu_a, &cpu_b, &server_pid) {
        let (cpu, threads) = cpu_delta(a, b);
        report["server_pid"] = json!(pid);
        report["server_cpu_s"] = json!(round(cpu, 3));
        report["server_cpu_pct"] = json!(round(100.0 * cpu / window, 1));
        report["server_cpu_us_per_client_tick"] =
            json!(round(cpu * 1e6 / client_ticks.max(1.0), 3));
        report["server_threads_cpu_s"] = json!(
            threads
                .iter()
                .map(|(k, v)| (k.clone(), round(*v, 3)))
                .collect::<BTreeMap<_, _>>()
        );
    }

    // Ends: stop sending, close every connection, give the close frames a moment.
    let _ = stop_tx.send(true);
    for d in drivers {
        let _ = tokio::time::timeout(Duration::from_secs(1), d).await;
    }
    let mut ends: BTreeMap<String, usize> = BTreeMap::new();
    for g in &groups {
        for c in lock(g).iter_mut() {
            if let Some(e) = &c.end {
                *ends.entry(e.clone()).or_default() += 1;
            }
            if c.send_errors > 0 {
                *ends.entry("had send errors".into()).or_default() += 1;
            }
            c.shutdown();
        }
    }
    report["client_ends"] = json!(ends);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        for ep in &endpoints {
            ep.wait_idle().await;
        }
    })
    .await;
    for g in &groups {
        lock(g).clear();
    }
    Ok(report)
}
