//! Handoff benchmark: two shards side by side in one world (a real `redis-server`, real QUIC on
//! loopback, the production handoff settings), with bots that walk back and forth across the
//! border; one run measures three things, each beside its baseline:
//!
//! 1. the blackout a client sees at a handoff (arrival of the last snapshot from the old shard
//!    → arrival of the first from the new one, as [`SessionEvent::HandedOff`] reports it),
//!    p50/p99/max over at least `--blackout-handoffs` handoffs of a few bots (a) on loopback and
//!    (b) through the link conditioner at `--rtt-ms` (half each way, no jitter, no loss). The
//!    baseline is the goal "two ticks plus one client round trip" (2 / tick rate + the round
//!    trip the bots' pings measured in the same phase), printed with the ratio p99 / goal;
//! 2. the sustained rate: `--bots` bots oscillating between x = 197 and x = 203 (just past the
//!    2-unit hysteresis margin each way) for `--duration` seconds, everything (shards' network
//!    tasks, bots, the audit) on one tokio runtime of two workers: handoffs per second
//!    (completed, as clients count them), failures (clients' `HandoffFailed` and the shards'
//!    `handoffs_failed`), bots lost, the blackout under that load, and the ownership audit after
//!    the run (every player owned once). Beside the rate: the ceiling the walk itself allows,
//!    the shards' tick p99 and the CPU of the process, of `redis-server` and of the machine, so
//!    that a missed goal says why.
//!
//! Each phase starts a fresh world (its own `redis-server` on a free port, never 6379). No NPCs
//! and no pickups: the figures are the handoff machinery's. One plain-text table goes to stdout
//! at the end; progress goes to stderr. `scripts/handoff.sh` runs it in release.

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use meridian_client::conditioner::{
    ConditionerConfig, ConditionerHandle, Jitter, LinkProfile, conditioned_endpoint,
};
use meridian_client::session::{SessionEvent, ShardSession, client_endpoint};
use meridian_cluster::LiveShard;
use meridian_cluster::audit::{AuditReport, ShardPlayers, ShardSource, run_audit};
use meridian_cluster::registry::{Registry, RegistryConfig};
use meridian_cluster::store::{StoreConfig, StoreHandle};
use meridian_cluster::testing::RedisServer;
use meridian_cluster::world::WorldMap;
use meridian_protocol::quic::QuicConfig;
use meridian_protocol::ticket::{
    TicketClaims, TicketKey, TicketKind, random_bytes, random_nonce, to_hex,
};
use meridian_protocol::{PlayerId, ZoneId};
use meridian_shard::config::ShardConfig;
use meridian_shard::handoff::{ClusterLink, HandoffConfig};
use meridian_shard::metrics::ShardMetrics;
use meridian_shard::server::{self, ShardHandle, ShardTuning};
use meridian_shard::sim::SimConfig;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "handoff",
    about = "Handoff blackout (loopback and a conditioned RTT) and sustained handoff rate between two shards"
)]
struct Args {
    /// A short run: 10 s of sustained load (blackouts are still measured over
    /// `--blackout-handoffs`).
    #[arg(long)]
    quick: bool,
    /// Bots of the sustained-rate phase.
    #[arg(long, default_value_t = 300)]
    bots: usize,
    /// Seconds of the sustained-rate window (default 60, 10 with --quick).
    #[arg(long)]
    duration: Option<f64>,
    /// Handoffs each blackout phase measures (at least).
    #[arg(long, default_value_t = 200)]
    blackout_handoffs: u64,
    /// Bots of each blackout phase (light load: the blackout, not the machine, is measured).
    #[arg(long, default_value_t = 20)]
    blackout_bots: usize,
    /// Round trip of the conditioned blackout phase, milliseconds (half each way).
    #[arg(long, default_value_t = 40)]
    rtt_ms: u64,
    /// Joins per second while the bots of a phase connect.
    #[arg(long, default_value_t = 100.0)]
    connect_rate: f64,
    /// Simulation rate of both shards.
    #[arg(long, default_value_t = 30)]
    tick_hz: u16,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Westmost x of the bots' walk: 3 units inside zone `a`, past the 2-unit margin of `b`.
const WALK_LO: f32 = 197.0;
/// Eastmost x of the bots' walk: 3 units inside zone `b`, past the 2-unit margin of `a`.
const WALK_HI: f32 = 203.0;
/// Height of both zones: tall, so that bots spread along the border see a few neighbours each
/// (as players along a real border do), not the whole crowd.
const ZONE_HEIGHT: u32 = 2_000;
/// Spawn points every this many units along the border, on each side.
const SPAWN_SPACING: u32 = 40;
/// Seconds after the last join before the sustained window opens.
const WARMUP: Duration = Duration::from_secs(3);
/// Longest wait for one join.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between the two passes of the audit.
const AUDIT_SETTLE: Duration = Duration::from_secs(1);
/// Longest wait for a shard's admin endpoint.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Ticks of standing-still inputs a bot sends when told to stop (inputs repeat, so one lost
/// datagram loses nothing; a few cover a burst).
const STOP_TICKS: u32 = 5;
/// Client UDP endpoints the bots of a phase are spread over.
const ENDPOINTS: usize = 8;
/// Lifetime of a bot's join ticket, milliseconds (signed just before joining).
const TICKET_LIFETIME_MS: u64 = 60_000;
/// Clock ticks per second of /proc's CPU times (USER_HZ).
const USER_HZ: f64 = 100.0;

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.bots > 0, "--bots must be positive");
    ensure!(args.blackout_bots > 0, "--blackout-bots must be positive");
    ensure!(
        args.blackout_handoffs > 0,
        "--blackout-handoffs must be positive"
    );
    ensure!(
        args.connect_rate.is_finite() && args.connect_rate > 0.0,
        "--connect-rate must be positive"
    );
    ensure!(args.tick_hz > 0, "--tick-hz must be positive");
    let duration = args
        .duration
        .unwrap_or(if args.quick { 10.0 } else { 60.0 });
    ensure!(
        duration.is_finite() && duration > 0.0 && duration <= 3_600.0,
        "--duration must be in (0, 3600] seconds"
    );
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // Two workers: the machine's two cores, shared with the two shards' tick threads and
    // redis-server, as a deployment on this machine would share them.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-worker")
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let table = runtime.block_on(run(&args, Duration::from_secs_f64(duration)))?;
    print!("{table}");
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

async fn run(args: &Args, duration: Duration) -> Result<String> {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let rtt = Duration::from_millis(args.rtt_ms);
    progress(&format!(
        "1a. blackout on loopback: {} bots until {} handoffs",
        args.blackout_bots, args.blackout_handoffs
    ));
    let loopback = blackout_phase(args, None).await?;
    progress(&format!(
        "1b. blackout at {} ms RTT: {} bots until {} handoffs",
        args.rtt_ms, args.blackout_bots, args.blackout_handoffs
    ));
    let delayed = blackout_phase(args, Some(rtt)).await?;
    progress(&format!(
        "2. sustained: {} bots for {:.0} s",
        args.bots,
        duration.as_secs_f64()
    ));
    let sustained = sustained_phase(args, duration).await?;

    let mut t = Table::default();
    t.heading(&format!(
        "Meridian handoff benchmark: 2 shards at {} Hz, one world, redis-server on loopback; {cores} CPUs ({cpu})",
        args.tick_hz
    ));
    let tick_s = 1.0 / f64::from(args.tick_hz);
    loopback.rows(&mut t, "loopback", tick_s, args.blackout_handoffs);
    delayed.rows(
        &mut t,
        &format!("{} ms RTT", args.rtt_ms),
        tick_s,
        args.blackout_handoffs,
    );
    sustained.rows(&mut t);
    Ok(t.render())
}

fn progress(what: &str) {
    eprintln!("handoff: {what}");
}

// --- the world -------------------------------------------------------------------------------

/// Two zones side by side, `a` = x 0..200 and `b` = x 200..400, [`ZONE_HEIGHT`] tall, with
/// spawn points 5 units from the border on each side, every [`SPAWN_SPACING`] along it.
fn world_map() -> String {
    let spawns = |x: u32| {
        (0..ZONE_HEIGHT / SPAWN_SPACING)
            .map(|i| format!("[{x}, {}]", SPAWN_SPACING / 2 + i * SPAWN_SPACING))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "name = \"bench-pair\"\nregions = [\"here\"]\n\n\
         [[zone]]\nname = \"a\"\nbounds = [0, 0, 200, {h}]\nregion = \"here\"\nspawn = [{sa}]\n\n\
         [[zone]]\nname = \"b\"\nbounds = [200, 0, 400, {h}]\nregion = \"here\"\nspawn = [{sb}]\n",
        h = ZONE_HEIGHT,
        sa = spawns(195),
        sb = spawns(205),
    )
}

/// A `redis-server`, the store on it and the two shards.
struct World {
    redis: RedisServer,
    store: StoreHandle,
    a: ShardHandle,
    b: ShardHandle,
    key: TicketKey,
}

impl World {
    async fn start(tick_hz: u16) -> Result<Self> {
        let redis = RedisServer::start()
            .await
            .context("starting redis-server (scripts/handoff.sh installs it)")?;
        let store = StoreHandle::open(&redis.url(), &StoreConfig::default())
            .await
            .with_context(|| format!("opening the store at {}", redis.url()))?;
        let registry = Registry::new(store.clone(), RegistryConfig::default())
            .context("registry configuration")?;
        let world =
            Arc::new(WorldMap::parse(&world_map(), "bench-pair.toml").context("world map")?);
        let key_bytes: [u8; 32] = random_bytes();
        let key_hex = to_hex(&key_bytes);
        let key = TicketKey::from_bytes(&key_bytes);
        let a = start_shard(&registry, &world, "a", &key_hex, tick_hz).await?;
        let b = start_shard(&registry, &world, "b", &key_hex, tick_hz).await?;
        // Each shard learns its neighbour's owner from the shared state (every 500 ms); until
        // then the border is a wall. Wait until both know, so no bot meets a closed border.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let live = meridian_cluster::Store::live_shards(&store)
                .await
                .context("reading the registry")?;
            if live.len() >= 2 && a.lease().is_some() && b.lease().is_some() {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "the shards did not both hold their zone and register within 10 s ({} live)",
                    live.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(HandoffConfig::default().neighbour_refresh * 2).await;
        Ok(Self {
            redis,
            store,
            a,
            b,
            key,
        })
    }

    fn shards(&self) -> [&ShardHandle; 2] {
        [&self.a, &self.b]
    }

    /// Sum of one counter over both shards.
    fn metric(&self, counter: fn(&ShardMetrics) -> &AtomicU64) -> u64 {
        self.shards()
            .iter()
            .map(|s| ShardMetrics::get(counter(s.metrics())))
            .sum()
    }

    /// Stops both shards, then redis-server.
    async fn stop(self) {
        self.a.shutdown().await;
        self.b.shutdown().await;
        drop(self.store);
        drop(self.redis);
    }
}

async fn start_shard(
    registry: &Registry,
    world: &Arc<WorldMap>,
    zone: &str,
    key_hex: &str,
    tick_hz: u16,
) -> Result<ShardHandle> {
    let zone_id = ZoneId::new(zone).with_context(|| format!("zone name {zone}"))?;
    let spec = world
        .zone(&zone_id)
        .with_context(|| format!("zone {zone} in the map"))?;
    let cfg = ShardConfig {
        id: format!("shard-{zone}"),
        zone: zone.into(),
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        zone_bounds: spec.bounds_string(),
        tick_hz,
        ticket_key: Some(key_hex.into()),
        dev_cert: true,
        admin_listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
        region: "here".into(),
        ..ShardConfig::default()
    };
    let mut tuning = ShardTuning::from_config(&cfg).context("shard tuning")?;
    tuning.sim.npcs = 0;
    tuning.sim.pickups = 0;
    let link = ClusterLink {
        registry: registry.clone(),
        world: world.clone(),
        handoff: HandoffConfig::default(),
    };
    server::start_in_world(&cfg, tuning, link)
        .await
        .with_context(|| format!("starting shard-{zone}"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

// --- bots ------------------------------------------------------------------------------------

/// What a bot's task publishes while it runs.
#[derive(Default)]
struct BotCounters {
    joined: AtomicBool,
    /// Join failed or session ended.
    ended: AtomicBool,
    handoffs: AtomicU64,
    failures: AtomicU64,
}

/// What a bot's task hands back when it stops.
struct BotEnd {
    /// The session, if still open (kept for the audit, then left).
    session: Option<ShardSession>,
    blackouts: Vec<Duration>,
    /// How long the player stood still around each handoff (see [`Record::position`]).
    stalls: Vec<Duration>,
    rtts: Vec<Duration>,
    /// Why the bot ended before it was told to stop (join failure included).
    ended: Option<String>,
    /// Handoffs as the session's own statistics count them.
    stats_handoffs: u64,
}

/// A bot's walk: east until x ≥ [`WALK_HI`], west until x ≤ [`WALK_LO`].
struct Walk {
    east: bool,
}

impl Walk {
    fn heading(&mut self, x: Option<f32>) -> f32 {
        match x {
            Some(x) if x <= WALK_LO => self.east = true,
            Some(x) if x >= WALK_HI => self.east = false,
            _ => {}
        }
        if self.east { 0.0 } else { std::f32::consts::PI }
    }
}

/// The bots of one phase.
struct Fleet {
    counters: Vec<Arc<BotCounters>>,
    tasks: Vec<tokio::task::JoinHandle<BotEnd>>,
    stop: watch::Sender<bool>,
    settled: Arc<AtomicUsize>,
    /// Kept alive for the phase (the conditioners' sockets live in the endpoints).
    _conditioners: Vec<ConditionerHandle>,
}

/// Where the bots' endpoints send: straight on loopback, or through a conditioner at `rtt`.
fn endpoints(rtt: Option<Duration>) -> Result<(Vec<quinn::Endpoint>, Vec<ConditionerHandle>)> {
    let bind = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let quic = QuicConfig::default();
    let mut eps = Vec::new();
    let mut handles = Vec::new();
    for i in 0..ENDPOINTS {
        match rtt {
            None => eps.push(client_endpoint(bind, &quic).context("binding a client endpoint")?),
            Some(rtt) => {
                let (ep, handle) = conditioned_endpoint(
                    bind,
                    &quic,
                    ConditionerConfig {
                        default_profile: LinkProfile::from_rtt(rtt, Jitter::None, 0.0),
                        seed: i as u64,
                        ..ConditionerConfig::default()
                    },
                )
                .context("binding a conditioned client endpoint")?;
                eps.push(ep);
                handles.push(handle);
            }
        }
    }
    Ok((eps, handles))
}

impl Fleet {
    /// Starts `n` bots, joining at `rate` per second, alternately in zone `a` and zone `b`.
    fn launch(
        world: &World,
        n: usize,
        rate: f64,
        rtt: Option<Duration>,
        dt: Duration,
    ) -> Result<Self> {
        let (eps, conditioners) = endpoints(rtt)?;
        let (stop, stop_rx) = watch::channel(false);
        let settled = Arc::new(AtomicUsize::new(0));
        let mut counters = Vec::with_capacity(n);
        let mut tasks = Vec::with_capacity(n);
        let base = random_nonce() >> 16;
        let start = tokio::time::Instant::now();
        for i in 0..n {
            let shard = if i % 2 == 0 { &world.a } else { &world.b };
            let c = Arc::new(BotCounters::default());
            counters.push(c.clone());
            let claims = TicketClaims {
                kind: TicketKind::Join,
                player: PlayerId(base + i as u64),
                shard: shard.shard.clone(),
                zone: shard.zone.clone(),
                expires_at_ms: 0,
                nonce: random_nonce(),
            };
            let key = world.key.clone();
            let ep = eps[i % eps.len()].clone();
            let (addr, pin) = (shard.local_addr, shard.cert_sha256);
            let at = start + Duration::from_secs_f64(i as f64 / rate);
            let (stop_rx, settled) = (stop_rx.clone(), settled.clone());
            let east = i % 2 == 0;
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                // Signed when used, so that a long ramp does not outlive its tickets.
                let ticket = match key.sign(TicketClaims {
                    expires_at_ms: now_ms() + TICKET_LIFETIME_MS,
                    ..claims
                }) {
                    Ok(t) => t,
                    Err(e) => {
                        settled.fetch_add(1, Ordering::Relaxed);
                        return join_failed(&c, format!("cannot sign a join ticket: {e}"));
                    }
                };
                let joined = tokio::time::timeout(
                    JOIN_TIMEOUT,
                    ShardSession::connect(&ep, addr, pin, ticket, &QuicConfig::default()),
                )
                .await;
                settled.fetch_add(1, Ordering::Relaxed);
                match joined {
                    Ok(Ok(session)) => {
                        c.joined.store(true, Ordering::Relaxed);
                        bot(session, Walk { east }, dt, c, stop_rx).await
                    }
                    Ok(Err(e)) => join_failed(&c, format!("join failed: {e}")),
                    Err(_) => join_failed(&c, format!("no welcome within {JOIN_TIMEOUT:?}")),
                }
            }));
        }
        Ok(Self {
            counters,
            tasks,
            stop,
            settled,
            _conditioners: conditioners,
        })
    }

    fn settled(&self) -> usize {
        self.settled.load(Ordering::Relaxed)
    }

    fn handoffs(&self) -> u64 {
        self.counters
            .iter()
            .map(|c| c.handoffs.load(Ordering::Relaxed))
            .sum()
    }

    /// Clients' `HandoffFailed` events so far.
    fn failures(&self) -> u64 {
        self.counters
            .iter()
            .map(|c| c.failures.load(Ordering::Relaxed))
            .sum()
    }

    fn ended(&self) -> usize {
        self.counters
            .iter()
            .filter(|c| c.ended.load(Ordering::Relaxed))
            .count()
    }

    /// Waits until every bot joined or failed to (bounded).
    async fn wait_joined(&self, n: usize, rate: f64) {
        let deadline = Instant::now()
            + Duration::from_secs_f64(n as f64 / rate)
            + JOIN_TIMEOUT
            + Duration::from_secs(5);
        while self.settled() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Tells every bot to stand still and hand back its session.
    async fn stop(self) -> Vec<BotEnd> {
        let _ = self.stop.send(true);
        let mut out = Vec::with_capacity(self.tasks.len());
        for t in self.tasks {
            match t.await {
                Ok(end) => out.push(end),
                Err(e) => out.push(BotEnd {
                    session: None,
                    blackouts: Vec::new(),
                    stalls: Vec::new(),
                    rtts: Vec::new(),
                    ended: Some(format!("bot task failed: {e}")),
                    stats_handoffs: 0,
                }),
            }
        }
        out
    }
}

fn join_failed(c: &BotCounters, why: String) -> BotEnd {
    c.ended.store(true, Ordering::Relaxed);
    BotEnd {
        session: None,
        blackouts: Vec::new(),
        stalls: Vec::new(),
        rtts: Vec::new(),
        ended: Some(why),
        stats_handoffs: 0,
    }
}

/// What a bot records as it plays.
struct Record {
    counters: Arc<BotCounters>,
    blackouts: Vec<Duration>,
    stalls: Vec<Duration>,
    ended: Option<String>,
    /// The player's x at the previous tick and when it was read.
    last: Option<(f32, Instant)>,
    /// When the player was last seen at the position it has not left since.
    still_since: Option<Instant>,
    /// A handoff completed while the player stood still.
    handed_while_still: bool,
}

/// Movement per tick below which the player counts as standing still, world units (a moving
/// player covers 8 / 30 ≈ 0.27 a tick).
const STILL_EPSILON: f32 = 0.02;

impl Record {
    fn new(counters: Arc<BotCounters>) -> Self {
        Self {
            counters,
            blackouts: Vec::new(),
            stalls: Vec::new(),
            ended: None,
            last: None,
            still_since: None,
            handed_while_still: false,
        }
    }

    /// Reads the session's events.
    fn events(&mut self, session: &mut ShardSession) {
        while let Some(ev) = session.try_event() {
            match ev {
                SessionEvent::HandedOff { blackout, .. } => {
                    self.blackouts.push(blackout);
                    self.handed_while_still = true;
                    self.counters.handoffs.fetch_add(1, Ordering::Relaxed);
                }
                SessionEvent::HandoffFailed { shard, detail } => {
                    self.counters.failures.fetch_add(1, Ordering::Relaxed);
                    self.ended
                        .get_or_insert_with(|| format!("handoff to {shard} failed: {detail}"));
                }
                SessionEvent::Kicked(k) => {
                    self.ended
                        .get_or_insert_with(|| format!("kicked: {:?} {}", k.reason, k.detail));
                }
                SessionEvent::Closed(r) => {
                    self.ended.get_or_insert_with(|| format!("closed: {r}"));
                }
                // Sessions opened here do not reconnect by themselves.
                SessionEvent::Score { .. }
                | SessionEvent::Chat { .. }
                | SessionEvent::Disconnected { .. }
                | SessionEvent::Reconnected { .. } => {}
            }
        }
    }

    /// Follows the player's x from tick to tick: a stretch of standing still during which a
    /// handoff completed is that handoff's stall (frozen at the border on the old shard, then
    /// the switch, until the new shard's snapshots show it moving), to within a tick.
    fn position(&mut self, x: Option<f32>, now: Instant) {
        let Some(x) = x else { return };
        if let Some((last_x, last_at)) = self.last {
            if (x - last_x).abs() < STILL_EPSILON {
                self.still_since.get_or_insert(last_at);
            } else {
                if let Some(since) = self.still_since.take()
                    && self.handed_while_still
                {
                    self.stalls.push(now.saturating_duration_since(since));
                }
                self.handed_while_still = false;
            }
        }
        self.last = Some((x, now));
    }
}

/// One bot: an input every tick toward the current end of its walk, a ping a second, events
/// read every tick. On `stop`, stands still for a few ticks and hands its session back.
async fn bot(
    mut session: ShardSession,
    mut walk: Walk,
    dt: Duration,
    c: Arc<BotCounters>,
    mut stop: watch::Receiver<bool>,
) -> BotEnd {
    let mut ticker = tokio::time::interval(dt);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut rec = Record::new(c.clone());
    let mut last_ping = Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => break,
        }
        rec.events(&mut session);
        if rec.ended.is_some() {
            break;
        }
        let x = session.own_entity().map(|e| e.pos[0]);
        rec.position(x, Instant::now());
        let heading = walk.heading(x);
        if session.send_input(heading, 1.0, 0).is_err() && !session.is_open() {
            rec.ended = Some("connection lost".into());
            break;
        }
        if last_ping.elapsed() >= Duration::from_secs(1) {
            last_ping = Instant::now();
            let _ = session.ping();
        }
    }
    if rec.ended.is_none() {
        // Stand still (the last intent would otherwise keep the player walking); a handoff
        // under way completes meanwhile.
        for _ in 0..STOP_TICKS {
            ticker.tick().await;
            let _ = session.send_input(0.0, 0.0, 0);
        }
    }
    let stats = session.stats();
    rec.events(&mut session);
    let rtts = session.ping_rtts();
    if rec.ended.is_some() {
        c.ended.store(true, Ordering::Relaxed);
    }
    BotEnd {
        session: rec.ended.is_none().then_some(session),
        blackouts: rec.blackouts,
        stalls: rec.stalls,
        rtts,
        ended: rec.ended,
        stats_handoffs: stats.handoffs,
    }
}

/// Each bot with a session leaves (concurrently).
async fn leave_all(ends: &mut [BotEnd]) {
    let mut set = tokio::task::JoinSet::new();
    for e in ends.iter_mut() {
        if let Some(s) = e.session.take() {
            set.spawn(s.leave());
        }
    }
    while set.join_next().await.is_some() {}
}

// --- phase 1: blackout -----------------------------------------------------------------------

/// Figures of one blackout phase.
struct Blackout {
    blackouts: Vec<Duration>,
    stalls: Vec<Duration>,
    rtts: Vec<Duration>,
    failures: u64,
    lost: usize,
    elapsed: Duration,
    /// Stopped by the time limit before reaching the target.
    timed_out: bool,
}

async fn blackout_phase(args: &Args, rtt: Option<Duration>) -> Result<Blackout> {
    let world = World::start(args.tick_hz).await?;
    let dt = Duration::from_secs(1) / u32::from(args.tick_hz);
    let n = args.blackout_bots;
    let fleet = Fleet::launch(&world, n, args.connect_rate, rtt, dt)?;
    fleet.wait_joined(n, args.connect_rate).await;
    // A bot completes about one handoff a second; allow five times as long, at least a minute.
    let limit = Duration::from_secs_f64((args.blackout_handoffs as f64 / n as f64 * 5.0).max(60.0));
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut timed_out = false;
    while fleet.handoffs() < args.blackout_handoffs {
        if started.elapsed() >= limit || fleet.ended() >= n {
            timed_out = true;
            break;
        }
        if last_progress.elapsed() >= Duration::from_secs(2) {
            last_progress = Instant::now();
            progress(&format!(
                "   {} handoffs, {} bots ended",
                fleet.handoffs(),
                fleet.ended()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    let fleet_failures = fleet.failures();
    let mut ends = fleet.stop().await;
    let failures = world.metric(|m| &m.handoffs_failed) + fleet_failures;
    let lost = ends.iter().filter(|e| e.ended.is_some()).count();
    report_endings(&ends);
    let blackouts = gather(&ends, |e| &e.blackouts);
    let stalls = gather(&ends, |e| &e.stalls);
    let rtts = gather(&ends, |e| &e.rtts);
    leave_all(&mut ends).await;
    world.stop().await;
    progress(&format!(
        "   {} handoffs in {:.1} s",
        blackouts.len(),
        elapsed.as_secs_f64()
    ));
    Ok(Blackout {
        blackouts,
        stalls,
        rtts,
        failures,
        lost,
        elapsed,
        timed_out,
    })
}

impl Blackout {
    fn rows(&self, t: &mut Table, link: &str, tick_s: f64, target: u64) {
        let rtt = quantile(&self.rtts, 0.5);
        let goal_ms = 2.0 * tick_s * 1e3 + rtt.map_or(0.0, ms);
        let p99 = quantile(&self.blackouts, 0.99);
        t.row(
            &format!("blackout, {link}: handoffs measured"),
            format!(
                "{} in {:.1} s{}",
                self.blackouts.len(),
                self.elapsed.as_secs_f64(),
                if self.timed_out {
                    " (time limit hit)"
                } else {
                    ""
                }
            ),
            format!(">= {target}"),
        );
        t.row(
            &format!("blackout, {link}: p50 / p99 / max, ms"),
            format!(
                "{} / {} / {}",
                fmt_ms(quantile(&self.blackouts, 0.5)),
                fmt_ms(p99),
                fmt_ms(self.blackouts.last().copied())
            ),
            "-".into(),
        );
        t.row(
            "  player standing still per handoff p50 / p99, ms",
            format!(
                "{} / {}",
                fmt_ms(quantile(&self.stalls, 0.5)),
                fmt_ms(quantile(&self.stalls, 0.99))
            ),
            "-".into(),
        );
        t.row(
            "  client RTT measured (ping median), ms",
            fmt_ms(rtt),
            "-".into(),
        );
        t.row(
            "  baseline: 2 ticks + RTT, ms",
            format!("{goal_ms:.1}"),
            "-".into(),
        );
        t.row(
            "  ratio p99 / baseline",
            p99.map_or_else(|| "-".into(), |p| format!("{:.2}", ms(p) / goal_ms)),
            "<= 1".into(),
        );
        t.row(
            "  failed / bots lost",
            format!("{} / {}", self.failures, self.lost),
            "0 / 0".into(),
        );
        // For scripts/bench.sh.
        let tag = if link == "loopback" {
            "loopback"
        } else {
            "rtt"
        };
        t.note(&format!(
            "RESULT handoff_{tag}_p99_ms={:.3}\nRESULT handoff_{tag}_baseline_ms={goal_ms:.3}\nRESULT handoff_{tag}_count={}",
            p99.map_or(f64::NAN, ms),
            self.blackouts.len()
        ));
    }
}

// --- phase 2: sustained rate -----------------------------------------------------------------

/// Figures of the sustained phase.
struct Sustained {
    bots: usize,
    joined: usize,
    window: Duration,
    handoffs: u64,
    /// Handoffs out of both shards over the window (the shards' count, a cross-check).
    shard_handoffs: u64,
    /// QUIC connections both shards accepted over the window.
    connections: u64,
    client_failures: u64,
    shard_failures: u64,
    abandoned: u64,
    /// Connections both shards closed for sending no hello in time (whole run).
    hello_timeouts: u64,
    /// Hellos both shards refused for a replayed ticket (whole run).
    replays: u64,
    lost: usize,
    endings: BTreeMap<String, usize>,
    blackouts: Vec<Duration>,
    stalls: Vec<Duration>,
    audit: Result<AuditReport, String>,
    /// Whole-run tick p99 of each shard at the window's end, and the worst one-second p99 seen
    /// during the window.
    tick_p99: [(f64, f64); 2],
    overruns: [u64; 2],
    cpu: CpuFigures,
}

async fn sustained_phase(args: &Args, window: Duration) -> Result<Sustained> {
    let world = World::start(args.tick_hz).await?;
    let dt = Duration::from_secs(1) / u32::from(args.tick_hz);
    let n = args.bots;
    let fleet = Fleet::launch(&world, n, args.connect_rate, None, dt)?;
    fleet.wait_joined(n, args.connect_rate).await;
    let joined = fleet
        .counters
        .iter()
        .filter(|c| c.joined.load(Ordering::Relaxed))
        .count();
    progress(&format!("   {joined} of {n} joined; warming up"));
    if joined == 0 {
        bail!("no bot joined");
    }
    tokio::time::sleep(WARMUP).await;

    let redis_pid = find_child("redis-server");
    let cpu_a = CpuSample::take(redis_pid);
    let h0 = fleet.handoffs();
    let out0 = world.metric(|m| &m.handoffs_out);
    let conns0 = world.metric(|m| &m.connections);
    let started = Instant::now();
    let mut worst_recent = [0.0f64; 2];
    let mut last_progress = Instant::now();
    while started.elapsed() < window {
        tokio::time::sleep(
            Duration::from_millis(500).min(window.saturating_sub(started.elapsed())),
        )
        .await;
        for (w, s) in worst_recent.iter_mut().zip(world.shards()) {
            *w = w.max(s.status().recent.p99_ms);
        }
        if last_progress.elapsed() >= Duration::from_secs(5) {
            last_progress = Instant::now();
            let e = started.elapsed().as_secs_f64();
            progress(&format!(
                "   {:.0} s: {:.0} handoffs/s, {} bots ended",
                e,
                (fleet.handoffs() - h0) as f64 / e,
                fleet.ended()
            ));
        }
    }
    let elapsed = started.elapsed();
    let handoffs = fleet.handoffs() - h0;
    let shard_handoffs = world.metric(|m| &m.handoffs_out) - out0;
    let connections = world.metric(|m| &m.connections) - conns0;
    let cpu_b = CpuSample::take(redis_pid);
    let statuses = world.shards().map(ShardHandle::status);

    let client_failures = fleet.failures();
    let mut ends = fleet.stop().await;
    // Handoffs under way when the bots stopped finish by themselves.
    tokio::time::sleep(Duration::from_secs(1)).await;
    progress("   auditing ownership (bots connected, standing still)");
    let audit = run_audit(&world.store, &AdminSource::new()?, AUDIT_SETTLE)
        .await
        .map_err(|e| format!("the audit could not read the store: {e}"));
    let shard_failures = world.metric(|m| &m.handoffs_failed);
    let abandoned = world.metric(|m| &m.handoffs_abandoned);
    let hello_timeouts = world.metric(|m| &m.hello_timeouts);
    let replays = world.metric(|m| &m.rejected_replay);
    let lost = ends.iter().filter(|e| e.ended.is_some()).count();
    let mut endings = BTreeMap::new();
    for e in &ends {
        if let Some(why) = &e.ended {
            *endings.entry(why.clone()).or_default() += 1;
        }
    }
    report_endings(&ends);
    let counted: u64 = ends.iter().map(|e| e.stats_handoffs).sum();
    let seen: u64 = ends.iter().map(|e| e.blackouts.len() as u64).sum();
    if counted != seen {
        progress(&format!(
            "   note: sessions counted {counted} handoffs, their events {seen}"
        ));
    }
    let blackouts = gather(&ends, |e| &e.blackouts);
    let stalls = gather(&ends, |e| &e.stalls);
    leave_all(&mut ends).await;
    world.stop().await;
    Ok(Sustained {
        bots: n,
        joined,
        window: elapsed,
        handoffs,
        shard_handoffs,
        connections,
        client_failures,
        shard_failures,
        abandoned,
        hello_timeouts,
        replays,
        lost,
        endings,
        blackouts,
        stalls,
        audit,
        tick_p99: [
            (statuses[0].total.p99_ms, worst_recent[0]),
            (statuses[1].total.p99_ms, worst_recent[1]),
        ],
        overruns: [statuses[0].overruns, statuses[1].overruns],
        cpu: CpuFigures::between(&cpu_a, &cpu_b, elapsed),
    })
}

impl Sustained {
    fn rows(&self, t: &mut Table) {
        let secs = self.window.as_secs_f64();
        let rate = self.handoffs as f64 / secs;
        let per_handoff = walk_seconds_per_handoff();
        // The most the walk allows, were a handoff instantaneous.
        let ceiling = self.joined as f64 / per_handoff;
        t.row(
            "sustained: bots joined / window",
            format!("{} of {} / {secs:.1} s", self.joined, self.bots),
            "-".into(),
        );
        t.row(
            "sustained: handoffs/s (completed, clients' count)",
            format!("{rate:.1} ({} handoffs)", self.handoffs),
            ">= 200".into(),
        );
        t.row(
            "  shards' handoffs out /s (cross-check)",
            format!("{:.1}", self.shard_handoffs as f64 / secs),
            "-".into(),
        );
        t.row(
            "  QUIC connections accepted by the shards per handoff",
            if self.handoffs == 0 {
                "-".into()
            } else {
                format!("{:.2}", self.connections as f64 / self.handoffs as f64)
            },
            "-".into(),
        );
        t.row(
            "  ceiling of the walk (handoffs taking no time), /s",
            format!("{ceiling:.0}"),
            "-".into(),
        );
        t.row(
            &format!("  time between a bot's handoffs, s (the walk alone: {per_handoff:.2})"),
            if self.handoffs == 0 {
                "-".into()
            } else {
                format!("{:.2}", self.joined as f64 * secs / self.handoffs as f64)
            },
            "-".into(),
        );
        t.row(
            "  failed: clients' HandoffFailed / shards' handoffs_failed",
            format!("{} / {}", self.client_failures, self.shard_failures),
            "0 / 0".into(),
        );
        t.row(
            "  shards' handoffs_abandoned / hello_timeouts / rejected_replay",
            format!(
                "{} / {} / {}",
                self.abandoned, self.hello_timeouts, self.replays
            ),
            "0 / 0 / 0".into(),
        );
        t.row(
            "  bots lost",
            if self.endings.is_empty() {
                self.lost.to_string()
            } else {
                format!(
                    "{} ({})",
                    self.lost,
                    self.endings
                        .iter()
                        .map(|(why, n)| format!("{n}× {why}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            },
            "0".into(),
        );
        t.row(
            "  blackout under this load p50 / p99 / max, ms",
            format!(
                "{} / {} / {}",
                fmt_ms(quantile(&self.blackouts, 0.5)),
                fmt_ms(quantile(&self.blackouts, 0.99)),
                fmt_ms(self.blackouts.last().copied())
            ),
            "-".into(),
        );
        t.row(
            "  player standing still per handoff p50 / p99, ms",
            format!(
                "{} / {}",
                fmt_ms(quantile(&self.stalls, 0.5)),
                fmt_ms(quantile(&self.stalls, 0.99))
            ),
            "-".into(),
        );
        match &self.audit {
            Ok(r) => {
                t.row(
                    "  audit: players / owned_once / orphaned / duplicated / stale_epoch",
                    format!(
                        "{} / {} / {} / {} / {}",
                        r.players, r.owned_once, r.orphaned, r.duplicated, r.stale_epoch
                    ),
                    format!("{} / {} / 0 / 0 / 0", self.joined, self.joined),
                );
                t.row(
                    "  audit: settling / not_judged / unreachable shards",
                    format!(
                        "{} / {} / {}",
                        r.settling,
                        r.not_judged,
                        r.unreachable.len()
                    ),
                    "0 / 0 / 0".into(),
                );
            }
            Err(e) => t.row("  audit", e.clone(), "clean".into()),
        }
        let [(ta, wa), (tb, wb)] = self.tick_p99;
        t.row(
            "  shard tick p99 a / b, ms (whole run; worst second)",
            format!("{ta:.2} / {tb:.2} ({wa:.2} / {wb:.2})"),
            "-".into(),
        );
        t.row(
            "  shard tick overruns a / b (whole run)",
            format!("{} / {}", self.overruns[0], self.overruns[1]),
            "-".into(),
        );
        self.cpu.rows(t);
        if rate < 200.0 {
            let c = &self.cpu;
            let why = if ceiling < 200.0 {
                "the walk of this many bots allows fewer: add bots (--bots)"
            } else if c.machine_busy_pct >= 90.0 * c.cores as f64 {
                "the machine's CPUs were saturated (see the CPU rows)"
            } else {
                "the CPUs were not saturated: the bots waited (see the standing-still and blackout rows)"
            };
            t.note(&format!(
                "The goal of 200 handoffs/s was not reached: {rate:.1}/s. {why}."
            ));
        }
    }
}

/// Seconds between two handoffs of a bot if handoffs took no time: at each end of its walk
/// the player turns (from top speed one way to top speed the other at the simulation's top
/// acceleration: `2 v / a`, no net distance), then walks `WALK_HI - WALK_LO` at top speed,
/// crossing the border once.
fn walk_seconds_per_handoff() -> f64 {
    let sim = SimConfig::default();
    let (v, a) = (f64::from(sim.max_speed), f64::from(sim.max_accel));
    2.0 * v / a + f64::from(WALK_HI - WALK_LO) / v
}

// --- the audit's view of the shards -----------------------------------------------------------

/// Asks each shard's admin endpoint what it holds (`GET /players`), as `meridian audit` does.
struct AdminSource {
    client: reqwest::Client,
}

impl AdminSource {
    fn new() -> Result<Self> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(ADMIN_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        Ok(Self { client })
    }
}

impl ShardSource for AdminSource {
    async fn players(&self, shard: &LiveShard) -> Result<ShardPlayers, String> {
        let addr = shard
            .record
            .admin_addr
            .as_deref()
            .ok_or_else(|| "no admin endpoint".to_owned())?;
        let url = format!("http://{addr}/players");
        let response = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not a players list: {e}"))
    }
}

// --- CPU -------------------------------------------------------------------------------------

/// CPU times at one instant: this process (whole, and per thread name), `redis-server`, and
/// each CPU of the machine.
struct CpuSample {
    process_ticks: u64,
    threads: BTreeMap<String, u64>,
    redis_ticks: Option<u64>,
    /// (busy, total) jiffies over all CPUs.
    machine: (u64, u64),
}

impl CpuSample {
    fn take(redis_pid: Option<u32>) -> Self {
        let mut threads = BTreeMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
            for entry in dir.flatten() {
                let path = entry.path();
                let name = std::fs::read_to_string(path.join("comm"))
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_default();
                let ns = std::fs::read_to_string(path.join("schedstat"))
                    .ok()
                    .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                    .unwrap_or(0);
                *threads.entry(name).or_default() += ns;
            }
        }
        Self {
            process_ticks: proc_ticks("self").unwrap_or(0),
            threads,
            redis_ticks: redis_pid.and_then(|p| proc_ticks(&p.to_string())),
            machine: machine_jiffies(),
        }
    }
}

/// utime + stime of a process, clock ticks.
fn proc_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3; utime 14 and stime 15 (1-based).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Busy and total jiffies of all CPUs together (`/proc/stat`, line `cpu`).
fn machine_jiffies() -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// The pid of this process's child named `name` (`redis-server`).
fn find_child(name: &str) -> Option<u32> {
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some((head, rest))) = (stat.find('('), stat.rsplit_once(')')) else {
            continue;
        };
        let comm = head.get(open + 1..).unwrap_or("");
        // After the command: state, then the parent's pid.
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if comm == name && ppid == Some(me) {
            return Some(pid);
        }
    }
    None
}

/// CPU use over the window, in % of one core.
struct CpuFigures {
    cores: usize,
    process_pct: f64,
    threads_pct: BTreeMap<String, f64>,
    redis_pct: Option<f64>,
    /// All CPUs together, % of one core (200 = two cores busy).
    machine_busy_pct: f64,
}

impl CpuFigures {
    fn between(a: &CpuSample, b: &CpuSample, window: Duration) -> Self {
        let secs = window.as_secs_f64().max(1e-3);
        let pct_ticks = |x: u64, y: u64| y.saturating_sub(x) as f64 / USER_HZ / secs * 100.0;
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let (busy, total) = (
            b.machine.0.saturating_sub(a.machine.0),
            b.machine.1.saturating_sub(a.machine.1),
        );
        let machine_busy_pct = if total == 0 {
            0.0
        } else {
            busy as f64 / total as f64 * 100.0 * cores as f64
        };
        let threads_pct = b
            .threads
            .iter()
            .map(|(name, ns)| {
                let before = a.threads.get(name).copied().unwrap_or(0);
                (
                    name.clone(),
                    ns.saturating_sub(before) as f64 / 1e9 / secs * 100.0,
                )
            })
            .filter(|(_, p)| *p >= 0.5)
            .collect();
        Self {
            cores,
            process_pct: pct_ticks(a.process_ticks, b.process_ticks),
            threads_pct,
            redis_pct: match (a.redis_ticks, b.redis_ticks) {
                (Some(x), Some(y)) => Some(pct_ticks(x, y)),
                _ => None,
            },
            machine_busy_pct,
        }
    }

    fn rows(&self, t: &mut Table) {
        let threads = self
            .threads_pct
            .iter()
            .map(|(n, p)| format!("{n} {p:.0}"))
            .collect::<Vec<_>>()
            .join(", ");
        t.row(
            "  CPU of this process (shards, bots), % of one core",
            format!("{:.0} ({threads})", self.process_pct),
            "-".into(),
        );
        t.row(
            "  CPU of redis-server, % of one core",
            self.redis_pct
                .map_or_else(|| "-".into(), |p| format!("{p:.0}")),
            "-".into(),
        );
        let other = self.machine_busy_pct - self.process_pct - self.redis_pct.unwrap_or(0.0);
        t.row(
            &format!("  machine busy, % of one core ({} cores)", self.cores),
            format!(
                "{:.0} (other processes {:.0})",
                self.machine_busy_pct,
                other.max(0.0)
            ),
            "-".into(),
        );
    }
}

// --- reporting -------------------------------------------------------------------------------

/// Why bots ended early, on stderr.
fn report_endings(ends: &[BotEnd]) {
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for e in ends {
        if let Some(why) = e.ended.as_deref() {
            *by.entry(why).or_default() += 1;
        }
    }
    for (why, n) in by {
        progress(&format!("   {n} bot(s) ended: {why}"));
    }
}

/// One kind of sample of every bot, sorted.
fn gather(ends: &[BotEnd], field: fn(&BotEnd) -> &Vec<Duration>) -> Vec<Duration> {
    let mut all: Vec<Duration> = ends.iter().flat_map(|e| field(e).iter().copied()).collect();
    all.sort();
    all
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn fmt_ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".into(), |d| format!("{:.1}", ms(d)))
}

/// The `q` quantile (nearest rank) of sorted samples.
fn quantile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// A plain-text table: figure, value, goal.
#[derive(Default)]
struct Table {
    heading: String,
    rows: Vec<(String, String, String)>,
    notes: Vec<String>,
}

impl Table {
    fn heading(&mut self, text: &str) {
        self.heading = text.to_owned();
    }

    fn row(&mut self, figure: &str, value: String, goal: String) {
        self.rows.push((figure.to_owned(), value, goal));
    }

    fn note(&mut self, text: &str) {
        self.notes.push(text.to_owned());
    }

    fn render(&self) -> String {
        let w0 = self
            .rows
            .iter()
            .map(|r| r.0.chars().count())
            .max()
            .unwrap_or(0)
            .max(6);
        let w1 = self
            .rows
            .iter()
            .map(|r| r.1.chars().count())
            .max()
            .unwrap_or(0)
            .max(5);
        let mut out = String::new();
        let _ = writeln!(out, "\n{}\n", self.heading);
        let _ = writeln!(out, "{:<w0$}  {:<w1$}  goal", "figure", "value");
        for (f, v, g) in &self.rows {
            let _ = writeln!(out, "{f:<w0$}  {v:<w1$}  {g}");
        }
        for n in &self.notes {
            let _ = writeln!(out, "\n{n}");
        }
        out
    }
}
