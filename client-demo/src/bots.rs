//! Bots: many clients in one process on one tokio runtime, joining through the lobby at a
//! ramp and playing a scenario, each measured; their figures become the run [`Report`].
//!
//! Scenarios: `idle` stands still, `wander` walks at random, `geo` wanders over conditioned
//! links, `cross` walks over the nearest zone border and back forever ([`CrossWalker`], on the
//! borders of the [`WorldLayout`]), its sessions following each handoff by themselves; `swarm`
//! walks every bot to the centre of its zone ([`swarm_point`], [`steer_to`]), the worst case
//! for interest management; `churn` plays a random [`CHURN_PLAY`] seconds, leaves, and joins
//! again through the lobby, until the end of the run.
//!
//! Bots share endpoints (one UDP socket for all, or one per home region when a latency matrix
//! conditions their links), so a thousand bots need a few sockets, not a thousand.
//!
//! Reaching the lobby is retried a bounded number of times ([`LobbyRetry`]): a run against a
//! lobby that is not there stops with [`BotsError::LobbyUnreachable`] after a few seconds. A
//! run that conditions its links asks the lobby first which shards it offers and in which
//! regions ([`survey_lobby`]), and builds the conditioning from that ([`geo_plan`]).

use crate::conditioner::{
    ConditionerConfig, ConditionerError, conditioned_endpoint, profiles_from_matrix,
};
use crate::config::Scenario;
use crate::latency::{LatencyMatrix, UnknownRegion};
use crate::lobby::{self, LobbyJoin, LobbyJoinError};
use crate::report::{
    self, Churn, Handoffs, Histograms, JoinMs, Mean, MeanMax, MeanMin, Reconnects, Report, Routing,
    RttMs, TimelinePoint,
};
use crate::session::{
    Reconnect, ReconnectPolicy, SessionError, SessionEvent, ShardSession, client_endpoint,
    connect_pinned, resolve_shard_addr,
};
use meridian_protocol::control::ZoneBoundsMsg;
use meridian_protocol::handshake::RejectMsg;
use meridian_protocol::lobby::{LobbyHelloMsg, LobbyMsg};
use meridian_protocol::quic::{CertSha256, QuicConfig};
use meridian_protocol::stream;
use meridian_protocol::{PROTOCOL_VERSION, ShardId, ZoneId};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Bots' links conditioned by a latency matrix: each bot has a home region, each shard a
/// datacenter region.
#[derive(Clone, Debug)]
pub struct GeoPlan {
    /// Round trips between regions.
    pub matrix: LatencyMatrix,
    /// Home regions, assigned to bots in turn (repeat a region to weight it).
    pub home_regions: Vec<String>,
    /// Each shard's address and region.
    pub shards: Vec<(SocketAddr, String)>,
    /// Jitter, as a fraction of the one-way delay.
    pub jitter: f64,
    /// Loss each way, 0..1.
    pub loss: f64,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct BotsPlan {
    /// The lobby.
    pub lobby: SocketAddr,
    /// Its certificate fingerprint.
    pub lobby_pin: CertSha256,
    /// How many bots.
    pub count: u32,
    /// Bots started per second.
    pub ramp_per_s: u32,
    /// How long each bot plays, from the start of the run.
    pub duration: Duration,
    /// What the bots do.
    pub scenario: Scenario,
    /// Conditioned links, if any.
    pub geo: Option<GeoPlan>,
    /// Transport settings.
    pub quic: QuicConfig,
    /// Seed of the bots' random choices.
    pub seed: u64,
    /// The zones of the world, which the `cross` scenario needs to find borders.
    pub world: Option<WorldLayout>,
    /// Bot `i` plays as `<name_prefix>-<i>` ([`bot_name`]): the same name is the same player,
    /// so runs that must not meet pick different prefixes.
    pub name_prefix: String,
}

/// Why the bots could not start.
#[derive(Debug, thiserror::Error)]
pub enum BotsError {
    /// The geo scenario needs a latency matrix.
    #[error("scenario `geo` needs a latency matrix (--latency-matrix FILE)")]
    GeoWithoutMatrix,
    /// The cross scenario needs the world's zones to find the borders.
    #[error("scenario `cross` needs the world layout (the zones' rectangles) to find borders")]
    CrossWithoutWorld,
    /// No two zones of the world layout share a border.
    #[error("the world layout's {zones} zone(s) share no border: there is nothing to cross")]
    NoBorder {
        /// Zones in the layout.
        zones: usize,
    },
    /// A zone of the world layout is not a proper rectangle.
    #[error(
        "zone {index} of the world layout must be finite with min < max; got min {min:?}, max {max:?}"
    )]
    BadZone {
        /// Its index in [`WorldLayout::zones`].
        index: usize,
        /// Smallest corner given.
        min: [f32; 2],
        /// Largest corner given.
        max: [f32; 2],
    },
    /// A zone's bounds could not be read.
    #[error("zone bounds `{value}` must be four numbers \"x0,y0,x1,y1\"")]
    ZoneBoundsSyntax {
        /// The text given.
        value: String,
    },
    /// A client endpoint could not be made.
    #[error("cannot open a client endpoint: {0}")]
    Endpoint(String),
    /// The conditioner refused its configuration (unknown region…).
    #[error(transparent)]
    Conditioner(#[from] ConditionerError),
    /// No home region was given.
    #[error("geo plan has no home region")]
    NoHomeRegion,
    /// A home region is not in the latency matrix.
    #[error("home regions (--regions): {0}")]
    UnknownRegion(#[from] UnknownRegion),
    /// A shard the lobby offers runs in a region the latency matrix does not name, so its
    /// link cannot be conditioned.
    #[error(
        "shard {shard} runs in region {region:?}, which the latency matrix does not name; known regions: {}",
        known.join(", ")
    )]
    ShardRegionUnknown {
        /// The shard.
        shard: ShardId,
        /// Its region, as the lobby reports it.
        region: String,
        /// The regions of the matrix.
        known: Vec<String>,
    },
    /// The lobby could not be reached (or would not answer) in the attempts allowed.
    #[error("cannot reach the lobby at {addr} after {attempts} attempts: {detail}")]
    LobbyUnreachable {
        /// The lobby.
        addr: SocketAddr,
        /// Attempts made.
        attempts: u32,
        /// What the last attempt ran into.
        detail: String,
    },
    /// The lobby refused for a reason retrying cannot cure (protocol version, name).
    #[error("the lobby at {addr} refused the bots: {reject}")]
    LobbyRefused {
        /// The lobby.
        addr: SocketAddr,
        /// Its answer.
        reject: RejectMsg,
    },
    /// The lobby offered a shard at an address that does not resolve.
    #[error("the lobby offered shard {shard} at `{addr}`, which does not resolve: {detail}")]
    ShardAddress {
        /// The shard.
        shard: ShardId,
        /// The address offered.
        addr: String,
        /// What failed.
        detail: String,
    },
}

/// Live counts while the bots run, for a progress line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BotsProgress {
    /// Bots started.
    pub started: u32,
    /// Bots that reached play at least once.
    pub joined: u32,
    /// Bots in play.
    pub playing: u32,
    /// Bots that failed to join.
    pub join_failures: u32,
    /// Sessions lost.
    pub disconnects: u32,
    /// Handoffs completed.
    pub handoffs: u32,
    /// Handoffs that failed.
    pub handoffs_failed: u32,
    /// Sessions that reached play (more than the bots with `churn`, which joins again).
    pub joins: u32,
    /// Sessions in play that the bots ended themselves, leaving.
    pub leaves: u32,
    /// Errors of every kind so far (the report's `errors`, summed).
    pub errors: u32,
    /// Bytes received by all bots so far, updated about once a second per bot.
    pub bytes_down: u64,
    /// Bytes sent by all bots so far, updated about once a second per bot.
    pub bytes_up: u64,
    /// Snapshots received by all bots so far, updated about once a second per bot.
    pub snapshots: u64,
    /// Each bot's latest round trip to its shard, milliseconds (0 while not playing); indexed
    /// by bot.
    pub rtt_ms: Vec<f32>,
}

impl BotsProgress {
    /// Median of the round trips of the bots playing, milliseconds; `None` before any.
    pub fn rtt_ms_p50(&self) -> Option<f64> {
        let mut v: Vec<f64> = self
            .rtt_ms
            .iter()
            .filter(|r| **r > 0.0)
            .map(|r| f64::from(*r))
            .collect();
        (!v.is_empty()).then(|| report::percentile(&mut v, 0.5))
    }
}

/// The report's timeline, built from [`BotsProgress`] read once a second: each reading after
/// the first gives a point whose rates are the counters' growth since the previous one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timeline {
    /// The previous reading: its time and (snapshots, bytes down, bytes up).
    last: Option<(f64, [u64; 3])>,
    points: Vec<TimelinePoint>,
}

impl Timeline {
    /// Takes the reading `p` made `t_s` seconds into the run. A reading no later than the
    /// previous one, or at a time that is not finite, is ignored.
    pub fn observe(&mut self, t_s: f64, p: &BotsProgress) {
        if !t_s.is_finite() {
            return;
        }
        let now = [p.snapshots, p.bytes_down, p.bytes_up];
        let Some((last_t, last)) = self.last else {
            self.last = Some((t_s, now));
            return;
        };
        let dt = t_s - last_t;
        if dt <= 0.0 {
            return;
        }
        self.last = Some((t_s, now));
        let rate = |i: usize| {
            if p.playing == 0 {
                0.0
            } else {
                now[i].saturating_sub(last[i]) as f64 / dt / f64::from(p.playing)
            }
        };
        self.points.push(TimelinePoint {
            t_s,
            playing: p.playing,
            snapshots_per_s: rate(0),
            down_bytes_per_s: rate(1),
            up_bytes_per_s: rate(2),
            rtt_ms_p50: p.rtt_ms_p50().unwrap_or(0.0),
            handoffs: p.handoffs,
            errors: p.errors,
        });
    }

    /// The points so far, oldest first.
    pub fn points(&self) -> &[TimelinePoint] {
        &self.points
    }

    /// The points, oldest first.
    pub fn into_points(self) -> Vec<TimelinePoint> {
        self.points
    }
}

/// Reads `progress` at the start of the run and once a second after, until `done`.
async fn record_timeline(
    progress: watch::Receiver<BotsProgress>,
    started: Instant,
    mut done: tokio::sync::oneshot::Receiver<()>,
) -> Vec<TimelinePoint> {
    let mut timeline = Timeline::default();
    timeline.observe(0.0, &progress.borrow());
    let second = Duration::from_secs(1);
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::from_std(started) + second, second);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                timeline.observe(started.elapsed().as_secs_f64(), &progress.borrow());
            }
            _ = &mut done => break,
        }
    }
    timeline.into_points()
}

/// How reaching the lobby is retried: `attempts` tries of at most `timeout` each, the first
/// pause `backoff`, doubling after each failure. A refusal that says "retry after" waits that
/// long instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LobbyRetry {
    /// Tries in all (at least 1).
    pub attempts: u32,
    /// Longest one try may take.
    pub timeout: Duration,
    /// Pause after the first failed try.
    pub backoff: Duration,
}

impl LobbyRetry {
    /// The pause after the `failed`-th failed try (1-based): `backoff`, doubling.
    pub fn pause(&self, failed: u32) -> Duration {
        self.backoff
            .saturating_mul(1u32 << failed.saturating_sub(1).min(16))
    }

    /// The longest the tries and pauses can take in all (not counting "retry after" waits).
    pub fn budget(&self) -> Duration {
        let pauses: Duration = (1..self.attempts.max(1)).map(|f| self.pause(f)).sum();
        self.timeout.saturating_mul(self.attempts.max(1)) + pauses
    }
}

/// The check that the lobby is there before the bots start: 3 tries over about 5 s.
pub const SURVEY_RETRY: LobbyRetry = LobbyRetry {
    attempts: 3,
    timeout: Duration::from_millis(1500),
    backoff: Duration::from_millis(250),
};

/// Each bot's join through the lobby: 3 tries, each long enough to measure every candidate
/// shard over slow links.
pub const JOIN_RETRY: LobbyRetry = LobbyRetry {
    attempts: 3,
    timeout: Duration::from_secs(10),
    backoff: Duration::from_millis(250),
};

/// How long a bot keeps retrying while the lobby answers "unavailable, retry after" (no shard
/// registered yet, shared state not reachable).
pub const UNAVAILABLE_RETRY_FOR: Duration = Duration::from_secs(15);

/// How long a `churn` bot plays before it leaves and joins again, seconds.
pub const CHURN_PLAY: std::ops::RangeInclusive<f32> = 3.0..=10.0;

/// Within this distance of its point a `swarm` bot slows down, world units.
pub const SWARM_SLOW_RADIUS: f32 = 4.0;

/// A `swarm` bot this close to its point stands still, world units.
pub const SWARM_ARRIVE: f32 = 0.5;

/// The player name of bot `i`.
pub fn bot_name(prefix: &str, i: u32) -> String {
    format!("{prefix}-{i}")
}

/// The point every `swarm` bot of a zone walks to: its centre.
pub fn swarm_point(bounds: &ZoneBoundsMsg) -> [f32; 2] {
    [
        (bounds.min_x + bounds.max_x) / 2.0,
        (bounds.min_y + bounds.max_y) / 2.0,
    ]
}

/// Heading (radians) and throttle (0 to 1) from `pos` to `target`: full speed, slowing within
/// [`SWARM_SLOW_RADIUS`], standing within [`SWARM_ARRIVE`].
pub fn steer_to(pos: [f32; 2], target: [f32; 2]) -> (f32, f32) {
    let d = dist(pos, target);
    let heading = (target[1] - pos[1]).atan2(target[0] - pos[0]);
    if !d.is_finite() {
        return (0.0, 0.0);
    }
    if d <= SWARM_ARRIVE {
        return (heading, 0.0);
    }
    (heading, (d / SWARM_SLOW_RADIUS).clamp(0.0, 1.0))
}

/// Home regions written with weights, as bots take them in turn: each region `weight` times,
/// spread through the list rather than in runs (`a:3,b` gives `a a b a`), so that the first
/// bots already cover every region.
pub fn spread_regions(weights: &[(String, u32)]) -> Vec<String> {
    let mut slots: Vec<(f64, usize, &str)> = Vec::new();
    for (order, (name, weight)) in weights.iter().enumerate() {
        for k in 0..*weight {
            let at = (f64::from(k) + 0.5) / f64::from(*weight);
            slots.push((at, order, name));
        }
    }
    slots.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    slots.into_iter().map(|(_, _, n)| n.to_owned()).collect()
}

/// A shard the lobby offers, as [`survey_lobby`] saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SurveyedShard {
    /// The shard.
    pub shard: ShardId,
    /// Its zone.
    pub zone: ZoneId,
    /// Its region.
    pub region: String,
    /// Its address, resolved.
    pub addr: SocketAddr,
}

/// The conditioning of a geo run: `homes` (with weights; every region of the matrix once if
/// empty) checked against `matrix`, the shards the lobby offers placed in their regions.
pub fn geo_plan(
    matrix: LatencyMatrix,
    homes: &[(String, u32)],
    shards: &[SurveyedShard],
    jitter: f64,
    loss: f64,
) -> Result<GeoPlan, BotsError> {
    let weights: Vec<(String, u32)> = if homes.is_empty() {
        matrix.regions().map(|r| (r.to_owned(), 1)).collect()
    } else {
        homes
            .iter()
            .map(|(name, w)| Ok((matrix.region(name)?.to_owned(), *w)))
            .collect::<Result<_, UnknownRegion>>()?
    };
    let mut placed = Vec::with_capacity(shards.len());
    for s in shards {
        let region = matrix
            .region(&s.region)
            .map_err(|e| BotsError::ShardRegionUnknown {
                shard: s.shard.clone(),
                region: s.region.clone(),
                known: e.known,
            })?;
        placed.push((s.addr, region.to_owned()));
    }
    let home_regions = spread_regions(&weights);
    if home_regions.is_empty() {
        return Err(BotsError::NoHomeRegion);
    }
    Ok(GeoPlan {
        matrix,
        home_regions,
        shards: placed,
        jitter,
        loss,
    })
}

/// Why one try at the lobby failed, and whether to try again.
enum TryFailure {
    /// Worth another try, after the usual pause.
    Retry(String),
    /// Worth another try after the lobby's delay, without using up a try.
    RetryAfter(Duration, String),
    /// Not worth another try.
    Fatal(LobbyJoinError),
}

fn classify(e: LobbyJoinError) -> TryFailure {
    if let Some(after) = e.retry_after() {
        return TryFailure::RetryAfter(after, e.to_string());
    }
    match e {
        LobbyJoinError::Connect(_)
        | LobbyJoinError::Closed
        | LobbyJoinError::Read(_)
        | LobbyJoinError::Write(_) => TryFailure::Retry(e.to_string()),
        other => TryFailure::Fatal(other),
    }
}

/// Why the tries at the lobby ended without an answer.
enum RetryEnd {
    /// Every try failed; the last failure.
    Exhausted { attempts: u32, detail: String },
    /// A failure retrying cannot cure.
    Fatal(LobbyJoinError),
}

/// Runs `attempt` under `retry`: connection failures and timeouts use up tries; "unavailable,
/// retry after" waits as asked, for [`UNAVAILABLE_RETRY_FOR`] at most.
async fn with_retry<T, F, Fut>(retry: LobbyRetry, mut attempt: F) -> Result<T, RetryEnd>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, LobbyJoinError>>,
{
    let started = Instant::now();
    let (mut tries, mut failed) = (0, 0);
    loop {
        tries += 1;
        let outcome = tokio::time::timeout(retry.timeout, attempt()).await;
        let failure = match outcome {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => classify(e),
            Err(_) => TryFailure::Retry(format!("no answer within {:?}", retry.timeout)),
        };
        let (pause, detail) = match failure {
            TryFailure::Fatal(e) => return Err(RetryEnd::Fatal(e)),
            TryFailure::RetryAfter(after, detail) if started.elapsed() < UNAVAILABLE_RETRY_FOR => {
                (after, detail)
            }
            TryFailure::RetryAfter(_, detail) => {
                return Err(RetryEnd::Exhausted {
                    attempts: tries,
                    detail,
                });
            }
            TryFailure::Retry(detail) => {
                failed += 1;
                if failed >= retry.attempts.max(1) {
                    return Err(RetryEnd::Exhausted {
                        attempts: tries,
                        detail,
                    });
                }
                (retry.pause(failed), detail)
            }
        };
        tracing::debug!(%detail, ?pause, "lobby try failed; retrying");
        tokio::time::sleep(pause).await;
    }
}

/// Says hello to the lobby at `lobby` as `name` and returns the shards it offers, each address
/// resolved; retried under `retry`. Asks for no shard: the player named is created if new, and
/// nothing else changes.
pub async fn survey_lobby(
    endpoint: &quinn::Endpoint,
    lobby: SocketAddr,
    lobby_pin: CertSha256,
    name: &str,
    quic_cfg: &QuicConfig,
    retry: LobbyRetry,
) -> Result<Vec<SurveyedShard>, BotsError> {
    let offered = with_retry(retry, || hello(endpoint, lobby, lobby_pin, name, quic_cfg))
        .await
        .map_err(|end| match end {
            RetryEnd::Exhausted { attempts, detail } => BotsError::LobbyUnreachable {
                addr: lobby,
                attempts,
                detail,
            },
            RetryEnd::Fatal(LobbyJoinError::Rejected(reject)) => BotsError::LobbyRefused {
                addr: lobby,
                reject,
            },
            RetryEnd::Fatal(e) => BotsError::LobbyUnreachable {
                addr: lobby,
                attempts: 1,
                detail: e.to_string(),
            },
        })?;
    let mut out = Vec::with_capacity(offered.len());
    for c in offered {
        let addr = resolve_shard_addr(&c.addr)
            .await
            .map_err(|e| BotsError::ShardAddress {
                shard: c.shard.clone(),
                addr: c.addr.clone(),
                detail: match e {
                    SessionError::Address { detail, .. } => detail,
                    other => other.to_string(),
                },
            })?;
        out.push(SurveyedShard {
            shard: c.shard,
            zone: c.zone,
            region: c.region,
            addr,
        });
    }
    Ok(out)
}

/// One hello: the candidates the lobby offers.
async fn hello(
    endpoint: &quinn::Endpoint,
    lobby: SocketAddr,
    lobby_pin: CertSha256,
    name: &str,
    quic_cfg: &QuicConfig,
) -> Result<Vec<meridian_protocol::lobby::ShardCandidateMsg>, LobbyJoinError> {
    let conn = connect_pinned(endpoint, lobby, lobby_pin, quic_cfg)
        .await
        .map_err(LobbyJoinError::Connect)?;
    let answer = async {
        let max = meridian_protocol::frame::DEFAULT_MAX_FRAME;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| {
            LobbyJoinError::Connect(SessionError::Connect {
                addr: lobby,
                detail: e.to_string(),
            })
        })?;
        let mut buf = Vec::new();
        let hello = LobbyHelloMsg {
            protocol_version: PROTOCOL_VERSION,
            name: name.to_owned(),
            resume: None,
        };
        stream::write_frame(&mut send, &hello, max, &mut buf).await?;
        match stream::read_frame::<LobbyMsg>(&mut recv, max, &mut buf).await? {
            Some(LobbyMsg::Candidates(c)) => Ok(c.shards.iter().cloned().collect()),
            Some(LobbyMsg::Rejected(r)) => Err(LobbyJoinError::Rejected(r)),
            Some(LobbyMsg::Grant(_)) => Err(LobbyJoinError::Unexpected),
            None => Err(LobbyJoinError::Closed),
        }
    }
    .await;
    conn.close(
        meridian_protocol::quic::close_code::DONE.into(),
        b"surveyed",
    );
    answer
}

/// What a bot did over the run, all its sessions together.
#[derive(Default)]
struct BotResult {
    /// Lobby connect → first snapshot, milliseconds, for each session that reached play.
    join_ms: Vec<f64>,
    /// Error kinds met, in order.
    errors: Vec<String>,
    rtt_ms: Vec<f64>,
    snapshots: u64,
    bytes_down: u64,
    bytes_up: u64,
    play_s: f64,
    /// A session ended without the bot leaving.
    disconnected: bool,
    optimal: Option<bool>,
    /// Blackout of each completed handoff, milliseconds.
    blackouts_ms: Vec<f64>,
    handoffs_failed: u32,
    /// Sessions opened with a shard.
    sessions: u32,
    /// Sessions that reached play and that the bot ended by leaving.
    leaves: u32,
    /// The shards' tick rate, from the first welcome.
    tick_hz: Option<u16>,
    /// Never started: the run stopped first.
    not_started: bool,
    /// Time out of each completed reconnection, milliseconds.
    reconnect_out_ms: Vec<f64>,
    /// Reconnections that gave up.
    reconnects_failed: u32,
    /// The newest committed score seen (kept in memory across sessions).
    score: Option<u64>,
    /// The score went down after a reconnection.
    score_decreased: bool,
}

/// `start + duration`, or a century on if that cannot be represented.
fn deadline(start: Instant, duration: Duration) -> Instant {
    start
        .checked_add(duration)
        .or_else(|| start.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(start)
}

/// Error kind of bots the run stopped before they started.
pub const NOT_STARTED: &str = "not_started";

/// What every bot task shares.
struct BotCtx {
    plan: Arc<BotsPlan>,
    borders: Arc<Vec<Border>>,
    run_started: Instant,
    progress: watch::Sender<BotsProgress>,
}

/// Runs the bots until the duration passes or `stop` turns true; returns the report (without
/// the shards' part, which the caller that owns the shards adds). `progress` is updated as bots
/// join and leave. With no bots, returns when the duration passes or `stop` turns true.
pub async fn run(
    plan: BotsPlan,
    stop: watch::Receiver<bool>,
    progress: watch::Sender<BotsProgress>,
) -> Result<Report, BotsError> {
    let borders = Arc::new(check_plan(&plan)?);
    let any: SocketAddr = if plan.lobby.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    // One endpoint per home region (conditioned), or one for all.
    let mut endpoints: Vec<(Option<String>, quinn::Endpoint)> = Vec::new();
    match &plan.geo {
        Some(geo) => {
            if geo.home_regions.is_empty() {
                return Err(BotsError::NoHomeRegion);
            }
            let mut seen: Vec<&String> = Vec::new();
            for home in &geo.home_regions {
                if seen.contains(&home) {
                    continue;
                }
                seen.push(home);
                let links = profiles_from_matrix(
                    &geo.matrix,
                    home,
                    geo.shards.iter().cloned(),
                    geo.jitter,
                    geo.loss,
                )?;
                let cfg = ConditionerConfig {
                    links,
                    seed: plan.seed ^ (seen.len() as u64),
                    ..ConditionerConfig::default()
                };
                let (ep, _handle) = conditioned_endpoint(any, &plan.quic, cfg)?;
                endpoints.push((Some(home.clone()), ep));
            }
        }
        None => endpoints.push((
            None,
            client_endpoint(any, &plan.quic).map_err(|e| BotsError::Endpoint(e.to_string()))?,
        )),
    }
    progress.send_modify(|p| p.rtt_ms = vec![0.0; plan.count as usize]);
    let plan = Arc::new(plan);
    let started = Instant::now();
    let (timeline_done, timeline_stop) = tokio::sync::oneshot::channel();
    let timeline = tokio::spawn(record_timeline(
        progress.subscribe(),
        started,
        timeline_stop,
    ));
    let ctx = Arc::new(BotCtx {
        plan: plan.clone(),
        borders,
        run_started: started,
        progress,
    });
    let mut tasks = Vec::new();
    for i in 0..plan.count {
        let at = Duration::from_secs_f64(f64::from(i) / f64::from(plan.ramp_per_s.max(1)));
        let (home, endpoint) = match &plan.geo {
            Some(geo) => {
                let home = &geo.home_regions[i as usize % geo.home_regions.len()];
                let ep = endpoints
                    .iter()
                    .find(|(h, _)| h.as_ref() == Some(home))
                    .map(|(_, e)| e.clone());
                (
                    Some(home.clone()),
                    ep.unwrap_or_else(|| endpoints[0].1.clone()),
                )
            }
            None => (None, endpoints[0].1.clone()),
        };
        let (ctx, mut stop) = (ctx.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(started + at)) => {}
                _ = stop.wait_for(|s| *s) => {
                    return BotResult { not_started: true, ..BotResult::default() };
                }
            }
            ctx.progress.send_modify(|p| p.started += 1);
            bot(i, &ctx, &endpoint, home.as_deref(), stop).await
        }));
    }
    if plan.count == 0 {
        // No bots: the run still lasts its duration (a world with no bots runs until stopped).
        let mut stop = stop.clone();
        let end = deadline(started, plan.duration);
        tokio::select! {
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(end)) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap_or_else(|e| BotResult {
            errors: vec![format!("bot task: {e}")],
            ..BotResult::default()
        }));
    }
    for (_, ep) in &endpoints {
        ep.close(0u32.into(), b"done");
    }
    let _ = timeline_done.send(());
    let mut report = summarize(&plan, started.elapsed(), results);
    // A timeline task that failed leaves the report without its timeline, nothing else.
    report.timeline = timeline.await.unwrap_or_default();
    Ok(report)
}

/// Checks that the plan's scenario can run; returns the borders `cross` walks over (none for
/// the other scenarios).
fn check_plan(plan: &BotsPlan) -> Result<Vec<Border>, BotsError> {
    match plan.scenario {
        Scenario::Idle | Scenario::Wander | Scenario::Swarm | Scenario::Churn => Ok(Vec::new()),
        Scenario::Geo => match plan.geo {
            Some(_) => Ok(Vec::new()),
            None => Err(BotsError::GeoWithoutMatrix),
        },
        Scenario::Cross => {
            let world = plan.world.as_ref().ok_or(BotsError::CrossWithoutWorld)?;
            world.validate()?;
            let borders = world.borders();
            if borders.is_empty() {
                return Err(BotsError::NoBorder {
                    zones: world.zones.len(),
                });
            }
            Ok(borders)
        }
    }
}

/// How one session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SessionEnd {
    /// The run is over (its duration, or `stop`).
    RunOver,
    /// The bot's play time is up (`churn`): it leaves and joins again.
    PlayOver,
    /// The session ended without the bot (kicked, lost, failed handoff).
    Lost,
}

/// One bot: joins, plays, and (with `churn`) leaves and joins again, until the run is over.
async fn bot(
    i: u32,
    ctx: &BotCtx,
    endpoint: &quinn::Endpoint,
    home: Option<&str>,
    mut stop: watch::Receiver<bool>,
) -> BotResult {
    let plan = &*ctx.plan;
    let progress = &ctx.progress;
    let mut r = BotResult::default();
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(plan.seed.wrapping_add(u64::from(i)));
    let name = bot_name(&plan.name_prefix, i);
    let run_end = deadline(ctx.run_started, plan.duration);
    let mut first = true;
    loop {
        let join_started = Instant::now();
        let session_end = match plan.scenario {
            Scenario::Churn => {
                let secs = rng.random_range(CHURN_PLAY);
                run_end.min(join_started + Duration::from_secs_f32(secs))
            }
            _ => run_end,
        };
        let joined = tokio::select! {
            j = join_shard(plan, endpoint, &name) => j,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (joined, session) = match joined {
            Ok(ok) => ok,
            Err(kind) => {
                record_error(&mut r, progress, kind);
                if first {
                    progress.send_modify(|p| p.join_failures += 1);
                }
                break;
            }
        };
        if first && let (Some(geo), Some(home)) = (&plan.geo, home) {
            r.optimal = Some(routed_optimally(&joined, &geo.matrix, home));
        }
        r.tick_hz.get_or_insert(session.welcome().tick_hz);
        let end = play(
            i,
            ctx,
            &mut r,
            session,
            join_started,
            session_end,
            &mut rng,
            &mut stop,
        )
        .await;
        if first && r.join_ms.is_empty() {
            progress.send_modify(|p| p.join_failures += 1);
        }
        first = false;
        if end != SessionEnd::PlayOver || Instant::now() >= run_end || *stop.borrow() {
            break;
        }
    }
    r
}

/// Joins through the lobby (retried under [`JOIN_RETRY`]) and opens the session with the shard
/// granted; on failure, the error kind for the report.
async fn join_shard(
    plan: &BotsPlan,
    endpoint: &quinn::Endpoint,
    name: &str,
) -> Result<(LobbyJoin, ShardSession), &'static str> {
    let joined = with_retry(JOIN_RETRY, || {
        lobby::join(endpoint, plan.lobby, plan.lobby_pin, name, None, &plan.quic)
    })
    .await
    .map_err(|end| match end {
        RetryEnd::Exhausted { .. } => "lobby_connect",
        RetryEnd::Fatal(e) => join_error_kind(&e),
    })?;
    // A lost shard is come back to through the lobby, with the grant's resume ticket.
    let reconnect = Reconnect::after_join(
        plan.lobby,
        plan.lobby_pin,
        name,
        &joined,
        ReconnectPolicy::default(),
    );
    let session = ShardSession::connect_resilient(endpoint, &joined, reconnect, &plan.quic)
        .await
        .map_err(|e| match e {
            SessionError::Rejected(_) => "shard_rejected",
            _ => "shard_connect",
        })?;
    Ok((joined, session))
}

/// Whether the lobby granted the shard with the lowest true round trip from `home`, among the
/// candidates it offered.
fn routed_optimally(joined: &LobbyJoin, matrix: &LatencyMatrix, home: &str) -> bool {
    let true_rtt = |region: &str| matrix.rtt(home, region);
    let best = joined
        .candidates
        .shards
        .iter()
        .filter_map(|c| true_rtt(&c.region))
        .min();
    let chosen = joined
        .candidates
        .shards
        .iter()
        .find(|c| c.shard == joined.grant.shard.shard)
        .and_then(|c| true_rtt(&c.region));
    let optimal = chosen.is_some() && chosen == best;
    if !optimal {
        let measured: Vec<String> = joined
            .rtts
            .iter()
            .map(|(s, rtt)| format!("{s}={:.1}ms", rtt.as_secs_f64() * 1000.0))
            .collect();
        tracing::debug!(
            home, shard = %joined.grant.shard.shard, measured = %measured.join(","),
            "not routed to the nearest shard"
        );
    }
    optimal
}

/// Plays one session until `until`, the end of the run, `stop`, or the session's end; leaves
/// unless the session was lost.
#[expect(
    clippy::too_many_arguments,
    reason = "one session's whole context, called once per session"
)]
async fn play(
    i: u32,
    ctx: &BotCtx,
    r: &mut BotResult,
    mut session: ShardSession,
    join_started: Instant,
    until: Instant,
    rng: &mut rand_pcg::Pcg64Mcg,
    stop: &mut watch::Receiver<bool>,
) -> SessionEnd {
    let plan = &*ctx.plan;
    let progress = &ctx.progress;
    r.sessions += 1;
    let run_end = deadline(ctx.run_started, plan.duration);
    let hz = u32::from(session.welcome().tick_hz.max(1));
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / hz);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut heading: f32 = rng.random_range(0.0..std::f32::consts::TAU);
    // About one crossing bot in four dithers on the line after each return.
    let dithers = rng.random_ratio(1, 4);
    let walker_seed: u64 = rng.random();
    let mut walker: Option<CrossWalker> = None;
    let mut next_turn = Instant::now() + Duration::from_millis(rng.random_range(1000..4000));
    let mut next_sample = Instant::now() + Duration::from_secs(1);
    let mut play_started = None;
    // What was last added to the progress' byte counts.
    let mut counted = (0u64, 0u64);
    // What was last added to the progress' snapshot count.
    let mut counted_snapshots = 0u64;
    let end = loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => break SessionEnd::RunOver,
        }
        let now = Instant::now();
        if now >= until {
            break if now >= run_end {
                SessionEnd::RunOver
            } else {
                SessionEnd::PlayOver
            };
        }
        let throttle = match plan.scenario {
            Scenario::Idle => 0.0,
            Scenario::Cross => match session.own_entity() {
                // The entity id changes at a handoff; `own_entity` follows it.
                Some(me) => {
                    let w = walker.get_or_insert_with(|| {
                        CrossWalker::new(&ctx.borders, me.pos, dithers, walker_seed)
                            .expect("invariant: check_plan found at least one border")
                    });
                    let (h, t) = w.steer(now, me.pos);
                    heading = h;
                    t
                }
                None => 0.0,
            },
            Scenario::Swarm => match session.own_entity() {
                // The point follows the zone: after a handoff, the new zone's centre.
                Some(me) => {
                    let (h, t) = steer_to(me.pos, swarm_point(&session.welcome().bounds));
                    heading = h;
                    t
                }
                None => 0.0,
            },
            Scenario::Wander | Scenario::Geo | Scenario::Churn => {
                if now >= next_turn {
                    heading = rng.random_range(0.0..std::f32::consts::TAU);
                    next_turn = now + Duration::from_millis(rng.random_range(1000..4000));
                }
                1.0
            }
        };
        if session.send_input(heading, throttle, 0).is_err() {
            break SessionEnd::Lost;
        }
        if play_started.is_none() && session.stats().latest_tick.is_some() {
            play_started = Some(now);
            r.join_ms
                .push(join_started.elapsed().as_secs_f64() * 1000.0);
            let first_join = r.join_ms.len() == 1;
            progress.send_modify(|p| {
                p.playing += 1;
                p.joins += 1;
                p.joined += u32::from(first_join);
            });
        }
        if now >= next_sample {
            next_sample = now + Duration::from_secs(1);
            let rtt = session.connection().rtt().as_secs_f64() * 1000.0;
            r.rtt_ms.push(rtt);
            let stats = session.stats();
            let delta = (stats.bytes_down - counted.0, stats.bytes_up - counted.1);
            counted = (stats.bytes_down, stats.bytes_up);
            let snapshots = stats.snapshots.saturating_sub(counted_snapshots);
            counted_snapshots = stats.snapshots;
            progress.send_modify(|p| {
                if let Some(slot) = p.rtt_ms.get_mut(i as usize) {
                    *slot = rtt as f32;
                }
                p.bytes_down += delta.0;
                p.bytes_up += delta.1;
                p.snapshots += snapshots;
            });
        }
        let mut ended = false;
        while let Some(ev) = session.try_event() {
            match ev {
                SessionEvent::Kicked(_) | SessionEvent::Closed(_) => ended = true,
                SessionEvent::HandedOff { blackout, .. } => {
                    r.blackouts_ms.push(blackout.as_secs_f64() * 1000.0);
                    progress.send_modify(|p| p.handoffs += 1);
                }
                SessionEvent::HandoffFailed { .. } => {
                    r.handoffs_failed += 1;
                    record_error(r, progress, "handoff_failed");
                    progress.send_modify(|p| p.handoffs_failed += 1);
                    ended = true;
                }
                SessionEvent::Disconnected { shard, reason } => {
                    tracing::debug!(bot = i, %shard, %reason, "shard lost; reconnecting");
                }
                SessionEvent::Reconnected { out_for, .. } => {
                    r.reconnect_out_ms.push(out_for.as_secs_f64() * 1000.0);
                }
                SessionEvent::Score { total, .. } => {
                    if let Some(before) = r.score
                        && total < before
                        && !r.reconnect_out_ms.is_empty()
                    {
                        tracing::warn!(
                            bot = i,
                            before,
                            total,
                            "score went down after a reconnection"
                        );
                        r.score_decreased = true;
                    }
                    r.score = Some(r.score.map_or(total, |s| s.max(total)));
                }
                SessionEvent::Chat { .. } => {}
            }
        }
        if ended {
            break SessionEnd::Lost;
        }
    };
    let stats = session.stats();
    if stats.reconnect_failures > 0 {
        r.reconnects_failed += stats.reconnect_failures as u32;
        record_error(r, progress, "reconnect_failed");
    }
    r.snapshots += stats.snapshots;
    r.bytes_down += stats.bytes_down;
    r.bytes_up += stats.bytes_up;
    r.play_s += play_started.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let delta = (
        stats.bytes_down.saturating_sub(counted.0),
        stats.bytes_up.saturating_sub(counted.1),
    );
    let was_playing = play_started.is_some();
    let snapshots = stats.snapshots.saturating_sub(counted_snapshots);
    progress.send_modify(|p| {
        if was_playing {
            p.playing -= 1;
        }
        if let Some(slot) = p.rtt_ms.get_mut(i as usize) {
            *slot = 0.0;
        }
        p.bytes_down += delta.0;
        p.bytes_up += delta.1;
        p.snapshots += snapshots;
    });
    // A later session that the end of the run cut before its first snapshot failed nothing;
    // a first one, or one that had its whole play time, did.
    if !was_playing && (r.sessions == 1 || end != SessionEnd::RunOver) {
        record_error(r, progress, "no_snapshot");
    }
    if end == SessionEnd::Lost {
        r.disconnected = true;
        progress.send_modify(|p| p.disconnects += 1);
    } else {
        session.leave().await;
        if was_playing {
            r.leaves += 1;
            progress.send_modify(|p| p.leaves += 1);
        }
    }
    end
}

fn record_error(r: &mut BotResult, progress: &watch::Sender<BotsProgress>, kind: &str) {
    r.errors.push(kind.to_owned());
    progress.send_modify(|p| p.errors += 1);
}

fn join_error_kind(e: &LobbyJoinError) -> &'static str {
    match e {
        LobbyJoinError::Connect(_) => "lobby_connect",
        LobbyJoinError::Rejected(_) => "lobby_rejected",
        _ => "lobby_protocol",
    }
}

/// The report of a run that could not start its bots: every bot a join failure of `kind`.
pub fn unstarted_report(count: u32, elapsed: Duration, kind: &str) -> Report {
    let mut errors = BTreeMap::new();
    if count > 0 {
        errors.insert(kind.to_owned(), count);
    }
    Report {
        schema: report::REPORT_SCHEMA,
        bots: count,
        duration_s: elapsed.as_secs_f64(),
        join_failures: count,
        errors,
        ..Report::default()
    }
}

fn summarize(plan: &BotsPlan, elapsed: Duration, results: Vec<BotResult>) -> Report {
    let mut join: Vec<f64> = results
        .iter()
        .flat_map(|r| r.join_ms.iter().copied())
        .collect();
    let joined = results.iter().filter(|r| !r.join_ms.is_empty()).count() as u32;
    let mut rtt: Vec<f64> = results
        .iter()
        .flat_map(|r| r.rtt_ms.iter().copied())
        .collect();
    let playing: Vec<&BotResult> = results
        .iter()
        .filter(|r| !r.join_ms.is_empty() && r.play_s > 0.5)
        .collect();
    let per_s = |f: &dyn Fn(&BotResult) -> u64| -> Vec<f64> {
        playing.iter().map(|r| f(r) as f64 / r.play_s).collect()
    };
    let snaps = per_s(&|r| r.snapshots);
    let down = per_s(&|r| r.bytes_down);
    let up = per_s(&|r| r.bytes_up);
    let mean = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let mut errors = BTreeMap::new();
    for e in results.iter().flat_map(|r| r.errors.iter()) {
        *errors.entry(e.clone()).or_insert(0) += 1;
    }
    let not_started = results.iter().filter(|r| r.not_started).count() as u32;
    if not_started > 0 {
        errors.insert(NOT_STARTED.to_owned(), not_started);
    }
    let routed: Vec<bool> = results.iter().filter_map(|r| r.optimal).collect();
    let mut blackouts: Vec<f64> = results
        .iter()
        .flat_map(|r| r.blackouts_ms.iter().copied())
        .collect();
    let handoffs_failed = results.iter().map(|r| r.handoffs_failed).sum();
    let mut outages: Vec<f64> = results
        .iter()
        .flat_map(|r| r.reconnect_out_ms.iter().copied())
        .collect();
    let reconnects_failed = results.iter().map(|r| r.reconnects_failed).sum();
    let histograms = Histograms {
        join_ms: report::log_buckets(&join),
        rtt_ms: report::log_buckets(&rtt),
        blackout_ms: report::log_buckets(&blackouts),
    };
    let churn = (plan.scenario == Scenario::Churn).then(|| Churn {
        joins: join.len() as u32,
        leaves: results.iter().map(|r| r.leaves).sum(),
    });
    Report {
        schema: report::REPORT_SCHEMA,
        bots: plan.count,
        duration_s: elapsed.as_secs_f64(),
        tick_hz: results
            .iter()
            .filter_map(|r| r.tick_hz)
            .max()
            .map_or(0, u32::from),
        joined,
        join_failures: plan.count.saturating_sub(joined),
        join_ms: JoinMs {
            p50: report::percentile(&mut join, 0.5),
            p90: report::percentile(&mut join, 0.9),
            p99: report::percentile(&mut join, 0.99),
            max: report::percentile(&mut join, 1.0),
        },
        rtt_ms: RttMs {
            p50: report::percentile(&mut rtt, 0.5),
            p99: report::percentile(&mut rtt, 0.99),
        },
        snapshots_per_s: MeanMin {
            mean: mean(&snaps),
            min: if snaps.is_empty() {
                0.0
            } else {
                snaps.iter().copied().fold(f64::INFINITY, f64::min)
            },
        },
        down_bytes_per_s: MeanMax {
            mean: mean(&down),
            max: down.iter().copied().fold(0.0, f64::max),
        },
        up_bytes_per_s: Mean { mean: mean(&up) },
        handoffs: Handoffs::from_blackouts(&mut blackouts, handoffs_failed),
        disconnects: results.iter().filter(|r| r.disconnected).count() as u32,
        reconnects: Reconnects::from_outages(&mut outages, reconnects_failed),
        score_decreases: results.iter().filter(|r| r.score_decreased).count() as u32,
        errors,
        routing: Routing {
            optimal: routed.iter().filter(|o| **o).count() as u32,
            total: routed.len() as u32,
        },
        shards: Vec::new(),
        audit: None,
        churn,
        timeline: Vec::new(),
        histograms,
        shard_timeline: Vec::new(),
    }
}

/// The zones of the world map, for scenarios that walk across borders.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorldLayout {
    /// Each zone's rectangle: (smallest corner, largest corner), world units.
    pub zones: Vec<([f32; 2], [f32; 2])>,
}

/// Two zone edges closer than this are the same border, world units.
pub const EDGE_TOLERANCE: f32 = 1e-3;

/// Which coordinate a border fixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BorderAxis {
    /// The line `x = at` (zones side by side): crossing it changes x.
    X,
    /// The line `y = at` (zones one above the other): crossing it changes y.
    Y,
}

/// A stretch of border shared by two zones: the segment `from..=to` (along the other axis) of
/// the line where `axis` equals `at`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Border {
    /// The coordinate the line fixes.
    pub axis: BorderAxis,
    /// Its value on the line.
    pub at: f32,
    /// Start of the shared stretch, along the other axis.
    pub from: f32,
    /// End of the shared stretch, along the other axis.
    pub to: f32,
    /// The two zones, as indices in [`WorldLayout::zones`].
    pub zones: [usize; 2],
}

impl Border {
    /// Index of the coordinate crossing changes, and of the one along the line.
    fn axes(&self) -> (usize, usize) {
        match self.axis {
            BorderAxis::X => (0, 1),
            BorderAxis::Y => (1, 0),
        }
    }

    /// Signed distance of `pos` from the line (positive on the side of larger coordinates).
    pub fn offset(&self, pos: [f32; 2]) -> f32 {
        pos[self.axes().0] - self.at
    }

    /// Distance from `pos` to the segment.
    pub fn distance(&self, pos: [f32; 2]) -> f32 {
        let (across, along) = self.axes();
        let on = pos[along].clamp(self.from, self.to);
        (pos[across] - self.at).hypot(pos[along] - on)
    }

    /// The point `offset` from the line (signed as in [`Self::offset`]) at `along`.
    fn point(&self, along: f32, offset: f32) -> [f32; 2] {
        let (a, o) = self.axes();
        let mut p = [0.0; 2];
        p[a] = self.at + offset;
        p[o] = along;
        p
    }
}

impl WorldLayout {
    /// A layout from zone rectangles written `x0,y0,x1,y1` (the shards' `zone_bounds`).
    pub fn parse<S: AsRef<str>>(bounds: impl IntoIterator<Item = S>) -> Result<Self, BotsError> {
        let mut zones = Vec::new();
        for value in bounds {
            let value = value.as_ref();
            let bad = || BotsError::ZoneBoundsSyntax {
                value: value.to_owned(),
            };
            let v: Vec<f32> = value
                .split(',')
                .map(|p| p.trim().parse::<f32>().map_err(|_| bad()))
                .collect::<Result<_, _>>()?;
            let [x0, y0, x1, y1] = v[..] else {
                return Err(bad());
            };
            zones.push(([x0, y0], [x1, y1]));
        }
        let layout = Self { zones };
        layout.validate()?;
        Ok(layout)
    }

    /// Checks that every zone is a finite rectangle with min < max.
    pub fn validate(&self) -> Result<(), BotsError> {
        for (index, &(min, max)) in self.zones.iter().enumerate() {
            let ok =
                min.iter().chain(&max).all(|v| v.is_finite()) && min[0] < max[0] && min[1] < max[1];
            if !ok {
                return Err(BotsError::BadZone { index, min, max });
            }
        }
        Ok(())
    }

    /// Every stretch of border two zones share (edges that meet over more than a point).
    pub fn borders(&self) -> Vec<Border> {
        let mut out = Vec::new();
        for (i, a) in self.zones.iter().enumerate() {
            for (j, b) in self.zones.iter().enumerate().skip(i + 1) {
                for (across, axis) in [(0, BorderAxis::X), (1, BorderAxis::Y)] {
                    let along = 1 - across;
                    let at = if (a.1[across] - b.0[across]).abs() <= EDGE_TOLERANCE {
                        a.1[across]
                    } else if (b.1[across] - a.0[across]).abs() <= EDGE_TOLERANCE {
                        b.1[across]
                    } else {
                        continue;
                    };
                    let from = a.0[along].max(b.0[along]);
                    let to = a.1[along].min(b.1[along]);
                    if to - from > EDGE_TOLERANCE {
                        out.push(Border {
                            axis,
                            at,
                            from,
                            to,
                            zones: [i, j],
                        });
                    }
                }
            }
        }
        out
    }
}

/// The border nearest to `pos`.
pub fn nearest_border(borders: &[Border], pos: [f32; 2]) -> Option<&Border> {
    borders
        .iter()
        .min_by(|a, b| a.distance(pos).total_cmp(&b.distance(pos)))
}

/// How far past the border (either way) a crossing bot turns back, world units.
pub const CROSS_DEPTH: std::ops::RangeInclusive<f32> = 12.0..=20.0;
/// How long a dithering bot oscillates at the border, seconds.
pub const DITHER_SECONDS: std::ops::RangeInclusive<f32> = 2.0..=4.0;
/// How far from the line a dithering bot aims, world units (it stays within ±1).
pub const DITHER_REACH: std::ops::RangeInclusive<f32> = 0.4..=0.8;
/// A crossing target counts as reached this close, world units.
const ARRIVE: f32 = 1.5;
/// The line counts as reached this close before dithering, world units.
const LINE_ARRIVE: f32 = 0.3;
/// Throttle while dithering: slow enough that a round trip of lag overshoots by little.
const DITHER_THROTTLE: f32 = 0.15;
/// Distance over which the approach to the line slows down, world units.
const SLOW_RADIUS: f32 = 4.0;
/// Crossings keep this far from the ends of a border stretch (or to its middle if shorter).
const END_MARGIN: f32 = 5.0;

/// What a crossing bot is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrossPhase {
    /// Walking to the far side.
    Over,
    /// Walking back to its own side.
    Back,
    /// Walking to the line, slowing down, to dither.
    ToLine,
    /// Oscillating within a unit of the line.
    Dither,
}

/// The steering of a `cross` bot: over the nearest border and back, forever; a ditherer also
/// hovers on the line for a few seconds after each return. Pure: positions and time come in.
#[derive(Clone, Debug)]
pub struct CrossWalker {
    border: Border,
    along: f32,
    home: f32,
    dithers: bool,
    phase: CrossPhase,
    target: [f32; 2],
    dither_until: Option<Instant>,
    rng: rand_pcg::Pcg64Mcg,
}

impl CrossWalker {
    /// A walker for a bot at `pos`, on the border nearest to it; `None` without borders.
    pub fn new(borders: &[Border], pos: [f32; 2], dithers: bool, seed: u64) -> Option<Self> {
        let border = *nearest_border(borders, pos)?;
        let (_, along_axis) = border.axes();
        let margin = END_MARGIN.min((border.to - border.from) / 2.0);
        let along = pos[along_axis].clamp(border.from + margin, border.to - margin);
        let home = if border.offset(pos) < 0.0 { -1.0 } else { 1.0 };
        let mut w = Self {
            border,
            along,
            home,
            dithers,
            phase: CrossPhase::Over,
            target: [0.0; 2],
            dither_until: None,
            rng: rand_pcg::Pcg64Mcg::seed_from_u64(seed),
        };
        w.target = w.crossing_target(-home);
        Some(w)
    }

    fn crossing_target(&mut self, side: f32) -> [f32; 2] {
        let depth = self.rng.random_range(CROSS_DEPTH);
        self.border.point(self.along, side * depth)
    }

    /// The border it crosses.
    pub fn border(&self) -> &Border {
        &self.border
    }

    /// The side it started on: +1 or -1, as the sign of [`Border::offset`].
    pub fn home_side(&self) -> f32 {
        self.home
    }

    /// Whether it dithers at the line after each return.
    pub fn dithers(&self) -> bool {
        self.dithers
    }

    /// What it is doing.
    pub fn phase(&self) -> CrossPhase {
        self.phase
    }

    /// Where it is heading.
    pub fn target(&self) -> [f32; 2] {
        self.target
    }

    /// Heading (radians) and throttle (0 to 1) for a bot at `pos` at `now`.
    pub fn steer(&mut self, now: Instant, pos: [f32; 2]) -> (f32, f32) {
        // Each phase change happens at most once a call; four covers a full cycle.
        for _ in 0..4 {
            let d = dist(pos, self.target);
            match self.phase {
                CrossPhase::Over if d <= ARRIVE => {
                    self.phase = CrossPhase::Back;
                    self.target = self.crossing_target(self.home);
                }
                CrossPhase::Back if d <= ARRIVE => {
                    if self.dithers {
                        self.phase = CrossPhase::ToLine;
                        self.target = self.border.point(self.along, 0.0);
                    } else {
                        self.phase = CrossPhase::Over;
                        self.target = self.crossing_target(-self.home);
                    }
                }
                CrossPhase::ToLine if d <= LINE_ARRIVE => {
                    self.phase = CrossPhase::Dither;
                    let secs = self.rng.random_range(DITHER_SECONDS);
                    self.dither_until = Some(now + Duration::from_secs_f32(secs));
                    let reach = self.rng.random_range(DITHER_REACH);
                    self.target = self.border.point(self.along, -self.home * reach);
                }
                CrossPhase::Dither if self.dither_until.is_none_or(|t| now >= t) => {
                    self.phase = CrossPhase::Over;
                    self.dither_until = None;
                    self.target = self.crossing_target(-self.home);
                }
                CrossPhase::Dither => {
                    let goal = self.border.offset(self.target);
                    // Reached or passed the target: turn to the other side of the line.
                    if self.border.offset(pos) * goal.signum() >= goal.abs() - 0.05 {
                        let reach = self.rng.random_range(DITHER_REACH);
                        self.target = self.border.point(self.along, -goal.signum() * reach);
                    }
                    break;
                }
                _ => break,
            }
        }
        let d = dist(pos, self.target);
        let heading = (self.target[1] - pos[1]).atan2(self.target[0] - pos[0]);
        let throttle = match self.phase {
            CrossPhase::Over | CrossPhase::Back => 1.0,
            CrossPhase::ToLine => (d / SLOW_RADIUS).clamp(DITHER_THROTTLE, 1.0),
            CrossPhase::Dither => DITHER_THROTTLE,
        };
        (heading, throttle)
    }
}

fn dist(a: [f32; 2], b: [f32; 2]) -> f32 {
    (a[0] - b[0]).hypot(a[1] - b[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three zones in a row, 1000 wide, and a fourth under the middle one, half as wide.
    fn layout() -> WorldLayout {
        WorldLayout::parse([
            "0,0,1000,1000",
            "1000,0,2000,1000",
            "2000,0,3000,1000",
            "1250,-500,1750,0",
        ])
        .expect("layout")
    }

    fn plan(scenario: Scenario, world: Option<WorldLayout>) -> BotsPlan {
        BotsPlan {
            lobby: SocketAddr::from((Ipv4Addr::LOCALHOST, 1)),
            lobby_pin: [0; 32],
            count: 1,
            ramp_per_s: 1,
            duration: Duration::from_secs(1),
            scenario,
            geo: None,
            quic: QuicConfig::default(),
            seed: 1,
            world,
            name_prefix: "bot".into(),
        }
    }

    #[test]
    fn borders_are_the_edges_two_zones_share() {
        let borders = layout().borders();
        assert_eq!(
            borders,
            vec![
                Border {
                    axis: BorderAxis::X,
                    at: 1000.0,
                    from: 0.0,
                    to: 1000.0,
                    zones: [0, 1],
                },
                Border {
                    axis: BorderAxis::X,
                    at: 2000.0,
                    from: 0.0,
                    to: 1000.0,
                    zones: [1, 2],
                },
                Border {
                    axis: BorderAxis::Y,
                    at: 0.0,
                    from: 1250.0,
                    to: 1750.0,
                    zones: [1, 3],
                },
            ]
        );
        // Zones meeting at a corner only, or apart, share no border.
        let corner = WorldLayout::parse(["0,0,10,10", "10,10,20,20", "30,0,40,10"]).expect("ok");
        assert!(corner.borders().is_empty());
        // A float edge a hair off still counts as shared.
        let near = WorldLayout {
            zones: vec![([0.0, 0.0], [10.0, 10.0]), ([10.0004, 0.0], [20.0, 10.0])],
        };
        assert_eq!(near.borders().len(), 1);
    }

    #[test]
    fn bad_layouts_are_refused_with_their_reason() {
        for bad in ["0,0,10", "0,0,10,x", "", "0,0,10,10,5"] {
            assert!(
                matches!(
                    WorldLayout::parse([bad]),
                    Err(BotsError::ZoneBoundsSyntax { ref value }) if value == bad
                ),
                "{bad}"
            );
        }
        for (bad, index) in [("0,0,0,10", 0), ("5,5,1,10", 0), ("0,0,inf,10", 0)] {
            let err = WorldLayout::parse([bad]).expect_err(bad);
            assert!(
                matches!(err, BotsError::BadZone { index: i, .. } if i == index),
                "{bad}: {err}"
            );
        }
        let nan = WorldLayout {
            zones: vec![([0.0, 0.0], [1.0, 1.0]), ([f32::NAN, 0.0], [1.0, 1.0])],
        };
        assert!(matches!(
            nan.validate(),
            Err(BotsError::BadZone { index: 1, .. })
        ));
    }

    #[test]
    fn cross_needs_a_world_with_a_border_and_geo_a_matrix() {
        assert!(matches!(
            check_plan(&plan(Scenario::Cross, None)),
            Err(BotsError::CrossWithoutWorld)
        ));
        let lone = WorldLayout::parse(["0,0,10,10"]).expect("one zone");
        assert!(matches!(
            check_plan(&plan(Scenario::Cross, Some(lone))),
            Err(BotsError::NoBorder { zones: 1 })
        ));
        let bad = WorldLayout {
            zones: vec![([0.0, 0.0], [0.0, 0.0])],
        };
        assert!(matches!(
            check_plan(&plan(Scenario::Cross, Some(bad))),
            Err(BotsError::BadZone { index: 0, .. })
        ));
        assert_eq!(
            check_plan(&plan(Scenario::Cross, Some(layout())))
                .expect("cross runs")
                .len(),
            3
        );
        for runs in [
            Scenario::Idle,
            Scenario::Wander,
            Scenario::Swarm,
            Scenario::Churn,
        ] {
            assert_eq!(
                check_plan(&plan(runs, None))
                    .expect("runs without a world")
                    .len(),
                0,
                "{runs}"
            );
        }
        assert!(matches!(
            check_plan(&plan(Scenario::Geo, None)),
            Err(BotsError::GeoWithoutMatrix)
        ));
        assert!(check_plan(&plan(Scenario::Wander, None)).is_ok());
    }

    #[test]
    fn a_bot_picks_the_nearest_border() {
        let borders = layout().borders();
        let at = |pos| nearest_border(&borders, pos).map(|b| (b.axis, b.at));
        assert_eq!(at([990.0, 500.0]), Some((BorderAxis::X, 1000.0)));
        assert_eq!(at([1700.0, 500.0]), Some((BorderAxis::X, 2000.0)));
        assert_eq!(at([1500.0, 20.0]), Some((BorderAxis::Y, 0.0)));
        // Under the first zone, far from the bottom border's stretch: the x = 1000 line wins.
        assert_eq!(at([1100.0, 5.0]), Some((BorderAxis::X, 1000.0)));
        assert_eq!(nearest_border(&[], [0.0, 0.0]), None);
    }

    /// A bot under steering: velocity toward heading × throttle × 8 units/s, acceleration
    /// bounded by 40 units/s² (the shard's defaults), 30 Hz, and the bot seeing its position
    /// `LAG` ticks late (the round trip). Calls `check` each tick with the walker and the
    /// true position.
    fn simulate(
        walker: &mut CrossWalker,
        start: [f32; 2],
        seconds: u32,
        mut check: impl FnMut(&CrossWalker, [f32; 2]),
    ) {
        const HZ: u32 = 30;
        const LAG: usize = 3;
        let dt = 1.0 / HZ as f32;
        let t0 = Instant::now();
        let mut pos = start;
        let mut vel = [0.0f32; 2];
        let mut seen = std::collections::VecDeque::from(vec![start; LAG + 1]);
        for tick in 0..seconds * HZ {
            let now = t0 + Duration::from_secs_f32(tick as f32 * dt);
            let observed = seen[0];
            let (h, t) = walker.steer(now, observed);
            assert!((0.0..=1.0).contains(&t), "throttle {t}");
            let want = [h.cos() * t * 8.0, h.sin() * t * 8.0];
            let dv = [want[0] - vel[0], want[1] - vel[1]];
            let n = dv[0].hypot(dv[1]);
            let max_dv = 40.0 * dt;
            let scale = if n > max_dv { max_dv / n } else { 1.0 };
            vel = [vel[0] + dv[0] * scale, vel[1] + dv[1] * scale];
            pos = [pos[0] + vel[0] * dt, pos[1] + vel[1] * dt];
            seen.pop_front();
            seen.push_back(pos);
            check(walker, pos);
        }
    }

    #[test]
    fn a_crossing_bot_alternates_sides_past_the_border() {
        let borders = layout().borders();
        let start = [985.0, 400.0];
        let mut w = CrossWalker::new(&borders, start, false, 7).expect("walker");
        assert_eq!((w.border().axis, w.border().at), (BorderAxis::X, 1000.0));
        assert_eq!(w.home_side(), -1.0);
        let mut targets = vec![w.target()];
        let mut crossings = 0;
        let mut side = -1.0f32;
        simulate(&mut w, start, 60, |w, pos| {
            if targets.last() != Some(&w.target()) {
                targets.push(w.target());
            }
            assert_ne!(w.phase(), CrossPhase::Dither, "this bot does not dither");
            let now_side = (pos[0] - 1000.0).signum();
            if now_side != 0.0 && now_side != side {
                crossings += 1;
                side = now_side;
            }
        });
        assert!(
            targets.len() >= 6,
            "a few round trips in a minute: {targets:?}"
        );
        for (i, t) in targets.iter().enumerate() {
            let offset = t[0] - 1000.0;
            // Over on even steps (the far side, +x), back on odd ones.
            let expected_side = if i % 2 == 0 { 1.0 } else { -1.0 };
            assert_eq!(offset.signum(), expected_side, "target {i}: {t:?}");
            assert!(
                CROSS_DEPTH.contains(&offset.abs()),
                "target {i} is {offset} from the line"
            );
            assert_eq!(t[1], 400.0, "crossings keep to the bot's stretch");
        }
        assert!(crossings >= 5, "{crossings} crossings");
    }

    #[test]
    fn a_dithering_bot_stays_within_a_unit_of_the_line() {
        let borders = layout().borders();
        // Below the bottom border's stretch, on the y = 0 line.
        let start = [1500.0, -30.0];
        let mut w = CrossWalker::new(&borders, start, true, 3).expect("walker");
        assert_eq!((w.border().axis, w.border().at), (BorderAxis::Y, 0.0));
        let mut dither_ticks = 0;
        let mut dither_sides = [false; 2];
        let mut phases = vec![w.phase()];
        simulate(&mut w, start, 90, |w, pos| {
            if phases.last() != Some(&w.phase()) {
                phases.push(w.phase());
            }
            if w.phase() == CrossPhase::Dither {
                dither_ticks += 1;
                assert!(pos[1].abs() <= 1.0, "dithering at {pos:?}");
                dither_sides[usize::from(pos[1] > 0.0)] = true;
            }
        });
        use CrossPhase::*;
        assert!(
            phases.windows(4).any(|w| w == [Over, Back, ToLine, Dither]),
            "{phases:?}"
        );
        assert!(
            phases.windows(2).any(|w| w == [Dither, Over]),
            "a full crossing follows the dithering: {phases:?}"
        );
        assert_eq!(dither_sides, [true, true], "it oscillates across the line");
        // 2 to 4 s per dither at 30 Hz, at least once.
        assert!(dither_ticks >= 60, "{dither_ticks} ticks of dithering");
    }

    #[test]
    fn walkers_are_deterministic_per_seed() {
        let borders = layout().borders();
        let targets = |seed| {
            let mut w = CrossWalker::new(&borders, [990.0, 10.0], true, seed).expect("walker");
            let mut out = vec![w.target()];
            simulate(&mut w, [990.0, 10.0], 20, |w, _| {
                if out.last() != Some(&w.target()) {
                    out.push(w.target());
                }
            });
            out
        };
        assert_eq!(targets(5), targets(5));
        assert_ne!(targets(5), targets(6));
        // Near the end of a stretch, crossings keep off the corner.
        let w = CrossWalker::new(&borders, [990.0, 1.0], false, 1).expect("walker");
        assert_eq!(w.target()[1], END_MARGIN);
    }

    #[test]
    fn lobby_retries_are_bounded_and_back_off() {
        assert_eq!(SURVEY_RETRY.attempts, 3);
        assert_eq!(SURVEY_RETRY.pause(1), Duration::from_millis(250));
        assert_eq!(SURVEY_RETRY.pause(2), Duration::from_millis(500));
        // Three tries of 1.5 s and two pauses: about five seconds before giving up.
        assert_eq!(SURVEY_RETRY.budget(), Duration::from_millis(5250));
        let huge = LobbyRetry {
            attempts: 100,
            timeout: Duration::from_secs(1),
            backoff: Duration::from_secs(1),
        };
        assert_eq!(
            huge.pause(64),
            Duration::from_secs(1 << 16),
            "capped doubling"
        );
        let none = LobbyRetry {
            attempts: 0,
            ..SURVEY_RETRY
        };
        assert_eq!(none.budget(), SURVEY_RETRY.timeout, "at least one try");
    }

    fn unavailable() -> LobbyJoinError {
        LobbyJoinError::Rejected(RejectMsg {
            reason: meridian_protocol::handshake::RejectReason::Unavailable { retry_after_ms: 1 },
            detail: "no shard is available".into(),
        })
    }

    const FAST: LobbyRetry = LobbyRetry {
        attempts: 3,
        timeout: Duration::from_secs(5),
        backoff: Duration::from_millis(1),
    };

    #[tokio::test]
    async fn retries_use_up_tries_on_failures_but_not_on_retry_after() {
        // Two "retry after" answers and two lost connections, then an answer: within 3 tries.
        let mut script = vec![
            Err(unavailable()),
            Err(LobbyJoinError::Closed),
            Err(unavailable()),
            Err(LobbyJoinError::Closed),
            Ok(7),
        ]
        .into_iter();
        let mut calls = 0;
        let got = with_retry(FAST, || {
            calls += 1;
            let next = script.next().expect("not called past the script");
            async move { next }
        })
        .await;
        assert!(matches!(got, Ok(7)));
        assert_eq!(calls, 5);
        // Three lost connections: given up after the third, naming the last failure.
        let mut calls = 0;
        let got = with_retry(FAST, || {
            calls += 1;
            async { Err::<(), _>(LobbyJoinError::Closed) }
        })
        .await;
        assert!(
            matches!(&got, Err(RetryEnd::Exhausted { attempts: 3, detail }) if detail.contains("closed")),
            "{:?}",
            got.as_ref().err().map(|_| ())
        );
        assert_eq!(calls, 3);
        // A failure retrying cannot cure stops at once.
        let mut calls = 0;
        let got = with_retry(FAST, || {
            calls += 1;
            async { Err::<(), _>(LobbyJoinError::Unexpected) }
        })
        .await;
        assert!(matches!(
            got,
            Err(RetryEnd::Fatal(LobbyJoinError::Unexpected))
        ));
        assert_eq!(calls, 1);
        // A try that never answers counts as failed after its timeout.
        let slow = LobbyRetry {
            attempts: 2,
            timeout: Duration::from_millis(20),
            backoff: Duration::from_millis(1),
        };
        let got = with_retry(slow, || {
            std::future::pending::<Result<(), LobbyJoinError>>()
        })
        .await;
        assert!(
            matches!(&got, Err(RetryEnd::Exhausted { attempts: 2, detail }) if detail.contains("no answer")),
        );
    }

    #[tokio::test]
    async fn a_lobby_that_is_not_there_is_given_up_after_the_tries() {
        // A port held by a plain UDP socket: nothing answers QUIC there.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = silent.local_addr().expect("addr");
        let quic = QuicConfig::default();
        let endpoint =
            client_endpoint(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), &quic).expect("endpoint");
        let retry = LobbyRetry {
            attempts: 3,
            timeout: Duration::from_millis(200),
            backoff: Duration::from_millis(10),
        };
        let err = survey_lobby(&endpoint, addr, [7; 32], "bot-0", &quic, retry)
            .await
            .expect_err("nobody there");
        assert!(
            matches!(&err, BotsError::LobbyUnreachable { addr: a, attempts: 3, .. } if *a == addr),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "cannot reach the lobby at {addr} after 3 attempts: "
            )),
            "{msg}"
        );
    }

    const SMALL: &str = "region,a,b,c\na,1,10,20\nb,10,2,30\nc,20,30,3\n";

    fn surveyed(region: &str, port: u16) -> SurveyedShard {
        SurveyedShard {
            shard: ShardId::new(format!("shard-{port}")).expect("id"),
            zone: ZoneId::new("z").expect("zone"),
            region: region.into(),
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        }
    }

    #[test]
    fn geo_plans_come_from_the_regions_the_lobby_reports() {
        let matrix = LatencyMatrix::parse(SMALL).expect("matrix");
        let shards = [surveyed("A", 1), surveyed("c", 2)];
        let plan = geo_plan(matrix.clone(), &[], &shards, 0.2, 0.01).expect("plan");
        assert_eq!(plan.home_regions, ["a", "b", "c"], "every region once");
        assert_eq!(
            plan.shards,
            [
                (SocketAddr::from((Ipv4Addr::LOCALHOST, 1)), "a".to_owned()),
                (SocketAddr::from((Ipv4Addr::LOCALHOST, 2)), "c".to_owned())
            ]
        );
        let weighted = geo_plan(
            matrix.clone(),
            &[("B".into(), 2), ("a".into(), 1)],
            &shards,
            0.0,
            0.0,
        )
        .expect("plan");
        assert_eq!(weighted.home_regions, ["b", "a", "b"]);
        // An unknown home region is named, with the known ones.
        let err = geo_plan(matrix.clone(), &[("mars".into(), 1)], &shards, 0.0, 0.0)
            .expect_err("unknown home");
        assert!(matches!(&err, BotsError::UnknownRegion(u) if u.region == "mars"));
        let msg = err.to_string();
        assert!(msg.contains("\"mars\"") && msg.contains("a, b, c"), "{msg}");
        // A shard in a region the matrix does not name cannot be conditioned.
        let err = geo_plan(matrix, &[], &[surveyed("pluto", 3)], 0.0, 0.0)
            .expect_err("unknown shard region");
        assert!(
            matches!(&err, BotsError::ShardRegionUnknown { region, .. } if region == "pluto"),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("shard-3") && msg.contains("\"pluto\"") && msg.contains("a, b, c"),
            "{msg}"
        );
    }

    #[test]
    fn weighted_regions_are_spread_through_the_turns() {
        let w = |v: &[(&str, u32)]| -> Vec<(String, u32)> {
            v.iter().map(|(n, k)| ((*n).to_owned(), *k)).collect()
        };
        assert_eq!(
            spread_regions(&w(&[("a", 3), ("b", 1)])),
            ["a", "a", "b", "a"]
        );
        assert_eq!(
            spread_regions(&w(&[("x", 1), ("y", 1), ("z", 1)])),
            ["x", "y", "z"]
        );
        let many = spread_regions(&w(&[("a", 5), ("b", 3), ("c", 2)]));
        assert_eq!(many.len(), 10);
        for (name, k) in [("a", 5), ("b", 3), ("c", 2)] {
            assert_eq!(many.iter().filter(|n| *n == name).count(), k, "{many:?}");
        }
        assert!(spread_regions(&[]).is_empty());
    }

    #[test]
    fn swarm_bots_walk_to_the_middle_of_their_zone_and_stop() {
        let bounds = ZoneBoundsMsg {
            min_x: 1000.0,
            min_y: 0.0,
            max_x: 2000.0,
            max_y: 1000.0,
        };
        let p = swarm_point(&bounds);
        assert_eq!(p, [1500.0, 500.0]);
        let (h, t) = steer_to([1000.0, 500.0], p);
        assert_eq!(t, 1.0);
        assert!(h.abs() < 1e-6, "east: {h}");
        let (h, t) = steer_to([1500.0, 600.0], p);
        assert_eq!(t, 1.0);
        assert!((h + std::f32::consts::FRAC_PI_2).abs() < 1e-6, "south: {h}");
        let (_, t) = steer_to([1502.0, 500.0], p);
        assert!(t > 0.0 && t < 1.0, "slowing: {t}");
        assert_eq!(steer_to([1500.2, 500.0], p).1, 0.0, "arrived");
        assert_eq!(steer_to([f32::NAN, 500.0], p), (0.0, 0.0));
        assert_eq!(steer_to([f32::INFINITY, 500.0], p), (0.0, 0.0));
        // A bot under this steering ends within the arrival radius.
        let mut pos = [1010.0f32, 20.0];
        for _ in 0..30 * 200 {
            let (h, t) = steer_to(pos, p);
            pos = [
                pos[0] + h.cos() * t * 8.0 / 30.0,
                pos[1] + h.sin() * t * 8.0 / 30.0,
            ];
        }
        assert!(dist(pos, p) <= SWARM_ARRIVE, "{pos:?}");
    }

    #[test]
    fn reports_count_bots_joins_and_leaves() {
        let churn = BotsPlan {
            count: 4,
            ..plan(Scenario::Churn, None)
        };
        let results = vec![
            // Joined three times, left three times.
            BotResult {
                join_ms: vec![10.0, 20.0, 30.0],
                leaves: 3,
                play_s: 9.0,
                snapshots: 270,
                tick_hz: Some(30),
                ..BotResult::default()
            },
            // Joined once, then lost.
            BotResult {
                join_ms: vec![40.0],
                disconnected: true,
                play_s: 2.0,
                snapshots: 60,
                errors: vec!["handoff_failed".into()],
                ..BotResult::default()
            },
            // Never joined.
            BotResult {
                errors: vec!["lobby_connect".into()],
                ..BotResult::default()
            },
            BotResult {
                not_started: true,
                ..BotResult::default()
            },
        ];
        let r = summarize(&churn, Duration::from_secs(10), results);
        assert_eq!((r.bots, r.joined, r.join_failures), (4, 2, 2));
        assert_eq!(
            r.churn,
            Some(Churn {
                joins: 4,
                leaves: 3
            })
        );
        assert_eq!(r.join_ms.max, 40.0);
        assert_eq!(r.join_ms.p50, 20.0);
        assert_eq!(r.disconnects, 1);
        assert_eq!(r.tick_hz, 30);
        assert_eq!(r.snapshots_per_s.mean, 30.0);
        let errors: Vec<(&str, u32)> = r.errors.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(
            errors,
            [
                ("handoff_failed", 1),
                ("lobby_connect", 1),
                (NOT_STARTED, 1)
            ]
        );
        let wander = summarize(&plan(Scenario::Wander, None), Duration::ZERO, Vec::new());
        assert_eq!(wander.churn, None);
    }

    #[test]
    fn reconnections_and_score_decreases_are_summarized() {
        let results = vec![
            BotResult {
                join_ms: vec![10.0],
                reconnect_out_ms: vec![400.0, 3_000.0],
                play_s: 5.0,
                ..BotResult::default()
            },
            BotResult {
                join_ms: vec![10.0],
                reconnect_out_ms: vec![1_000.0],
                score_decreased: true,
                play_s: 5.0,
                ..BotResult::default()
            },
            BotResult {
                join_ms: vec![10.0],
                reconnects_failed: 1,
                disconnected: true,
                play_s: 5.0,
                ..BotResult::default()
            },
        ];
        let r = summarize(
            &plan(Scenario::Wander, None),
            Duration::from_secs(5),
            results,
        );
        assert_eq!(
            r.reconnects,
            Reconnects {
                count: 3,
                failed: 1,
                out_ms_p50: 1_000.0,
                out_ms_p99: 3_000.0,
                out_ms_max: 3_000.0,
            }
        );
        assert_eq!(r.score_decreases, 1);
        let quiet = summarize(&plan(Scenario::Wander, None), Duration::ZERO, Vec::new());
        assert_eq!(
            (quiet.reconnects, quiet.score_decreases),
            (Reconnects::default(), 0)
        );
    }

    #[test]
    fn a_run_that_could_not_start_reports_every_bot_failed() {
        let r = unstarted_report(20, Duration::from_secs(5), "lobby_unreachable");
        assert_eq!(
            (r.schema, r.bots, r.joined, r.join_failures),
            (1, 20, 0, 20)
        );
        assert_eq!(r.errors.get("lobby_unreachable"), Some(&20));
        assert!(unstarted_report(0, Duration::ZERO, "x").errors.is_empty());
    }

    #[tokio::test]
    async fn a_run_without_bots_lasts_until_stopped() {
        let plan = BotsPlan {
            count: 0,
            duration: Duration::from_secs(3600),
            ..plan(Scenario::Wander, None)
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let (progress_tx, _progress_rx) = watch::channel(BotsProgress::default());
        let mut run = tokio::spawn(run(plan, stop_rx, progress_tx));
        tokio::select! {
            r = &mut run => panic!("ended before being stopped: {:?}", r.map(|r| r.map(|r| r.bots))),
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        stop_tx.send(true).expect("run listens");
        let report = run.await.expect("task").expect("report");
        assert_eq!(
            (report.bots, report.joined, report.join_failures),
            (0, 0, 0)
        );
        assert!(report.errors.is_empty(), "{:?}", report.errors);
    }

    #[test]
    fn deadlines_never_overflow() {
        let now = Instant::now();
        assert_eq!(
            deadline(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert!(deadline(now, Duration::MAX) > now + Duration::from_secs(3600 * 24 * 365));
    }

    #[test]
    fn the_timeline_gives_rates_per_bot_in_play_from_the_counters_growth() {
        let mut t = Timeline::default();
        let mut p = BotsProgress {
            playing: 2,
            snapshots: 100,
            bytes_down: 1000,
            bytes_up: 10,
            rtt_ms: vec![10.0, 30.0, 20.0],
            ..BotsProgress::default()
        };
        t.observe(0.0, &p);
        assert!(t.points().is_empty(), "the first reading is the baseline");
        p.snapshots += 120;
        p.bytes_down += 4000;
        p.bytes_up += 200;
        p.handoffs = 3;
        p.errors = 1;
        t.observe(2.0, &p);
        assert_eq!(
            t.points(),
            [TimelinePoint {
                t_s: 2.0,
                playing: 2,
                snapshots_per_s: 30.0,
                down_bytes_per_s: 1000.0,
                up_bytes_per_s: 50.0,
                rtt_ms_p50: 20.0,
                handoffs: 3,
                errors: 1,
            }]
        );
        p.playing = 0;
        p.rtt_ms = vec![0.0; 3];
        t.observe(3.0, &p);
        let last = t.points().last().cloned().expect("a second point");
        assert_eq!(
            (
                last.playing,
                last.snapshots_per_s,
                last.rtt_ms_p50,
                last.handoffs
            ),
            (0, 0.0, 0.0, 3),
            "nobody playing, no rates"
        );
    }

    #[test]
    fn the_timeline_ignores_readings_out_of_order_or_at_no_time() {
        let mut t = Timeline::default();
        let p = BotsProgress {
            playing: 1,
            ..BotsProgress::default()
        };
        t.observe(f64::NAN, &p);
        t.observe(5.0, &p);
        t.observe(5.0, &p);
        t.observe(4.0, &p);
        t.observe(f64::INFINITY, &p);
        assert!(t.points().is_empty(), "{:?}", t.points());
        // A counter that went down (it never should) gives no negative rate.
        let less = BotsProgress {
            playing: 1,
            snapshots: 0,
            ..p.clone()
        };
        let more = BotsProgress { snapshots: 50, ..p };
        t.observe(6.0, &more);
        t.observe(7.0, &less);
        let rates: Vec<f64> = t.points().iter().map(|p| p.snapshots_per_s).collect();
        assert_eq!(rates, [50.0, 0.0]);
    }

    #[test]
    fn reports_bucket_join_round_trip_and_blackout() {
        let r = summarize(
            &plan(Scenario::Wander, None),
            Duration::from_secs(10),
            vec![BotResult {
                join_ms: vec![3.0, 40.0],
                rtt_ms: vec![15.0],
                blackouts_ms: vec![120.0],
                ..BotResult::default()
            }],
        );
        let total = |b: &[report::Bucket]| b.iter().map(|b| b.count).sum::<u64>();
        assert_eq!(total(&r.histograms.join_ms), 2);
        assert_eq!(r.histograms.join_ms.last().map(|b| b.le), Some(50.0));
        assert_eq!(total(&r.histograms.rtt_ms), 1);
        assert_eq!(r.histograms.blackout_ms.last().map(|b| b.le), Some(200.0));
    }

    #[test]
    fn progress_takes_the_median_round_trip_of_the_bots_playing() {
        let mut p = BotsProgress::default();
        assert_eq!(p.rtt_ms_p50(), None);
        p.rtt_ms = vec![0.0, 30.0, 10.0, 0.0, 20.0];
        assert_eq!(p.rtt_ms_p50(), Some(20.0));
    }
}
