//! Bots: many clients in one process on one tokio runtime, joining through the lobby at a
//! ramp and playing a scenario, each measured; their figures become the run [`Report`].
//!
//! Scenarios: `idle` stands still, `wander` walks at random, `geo` wanders over conditioned
//! links, `cross` walks over the nearest zone border and back forever ([`CrossWalker`], on the
//! borders of the [`WorldLayout`]), its sessions following each handoff by themselves.
//!
//! Bots share endpoints (one UDP socket for all, or one per home region when a latency matrix
//! conditions their links), so a thousand bots need a few sockets, not a thousand.

use crate::conditioner::{
    ConditionerConfig, ConditionerError, conditioned_endpoint, profiles_from_matrix,
};
use crate::config::Scenario;
use crate::latency::LatencyMatrix;
use crate::lobby::{self, LobbyJoinError};
use crate::report::{self, Handoffs, JoinMs, Mean, MeanMax, MeanMin, Report, Routing, RttMs};
use crate::session::{SessionEvent, ShardSession, client_endpoint};
use meridian_protocol::quic::{CertSha256, QuicConfig};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
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
}

/// Why the bots could not start.
#[derive(Debug, thiserror::Error)]
pub enum BotsError {
    /// The scenario needs a part of the system that is not built yet.
    #[error(
        "scenario `{0}` is not built yet in this version (available: idle, wander, cross, geo)"
    )]
    ScenarioNotBuilt(&'static str),
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
}

/// Live counts while the bots run, for a progress line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BotsProgress {
    /// Bots started.
    pub started: u32,
    /// Bots in play.
    pub playing: u32,
    /// Bots that failed to join.
    pub join_failures: u32,
    /// Sessions lost.
    pub disconnects: u32,
    /// Handoffs completed.
    pub handoffs: u32,
}

#[derive(Default)]
struct BotResult {
    join_ms: Option<f64>,
    error: Option<String>,
    rtt_ms: Vec<f64>,
    snapshots: u64,
    bytes_down: u64,
    bytes_up: u64,
    play_s: f64,
    disconnected: bool,
    optimal: Option<bool>,
    /// Blackout of each completed handoff, milliseconds.
    blackouts_ms: Vec<f64>,
    handoffs_failed: u32,
}

/// Runs the bots until the duration passes or `stop` turns true; returns the report (without
/// the shards' part, which the caller that owns the shards adds). `progress` is updated as bots
/// join and leave.
pub async fn run(
    plan: BotsPlan,
    stop: watch::Receiver<bool>,
    progress: watch::Sender<BotsProgress>,
) -> Result<Report, BotsError> {
    let borders = Arc::new(check_plan(&plan)?);
    let any: SocketAddr = (Ipv4Addr::UNSPECIFIED, 0).into();
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
    let plan = Arc::new(plan);
    let started = Instant::now();
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
        let (plan, mut stop, progress) = (plan.clone(), stop.clone(), progress.clone());
        let borders = borders.clone();
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(started + at)) => {}
                _ = stop.wait_for(|s| *s) => return BotResult::default(),
            }
            progress.send_modify(|p| p.started += 1);
            bot(
                i,
                &plan,
                &borders,
                &endpoint,
                home.as_deref(),
                started,
                stop,
                &progress,
            )
            .await
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap_or_else(|e| BotResult {
            error: Some(format!("bot task: {e}")),
            ..BotResult::default()
        }));
    }
    for (_, ep) in &endpoints {
        ep.close(0u32.into(), b"done");
    }
    Ok(summarize(&plan, started.elapsed(), results))
}

/// Checks that the plan's scenario can run; returns the borders `cross` walks over (none for
/// the other scenarios).
fn check_plan(plan: &BotsPlan) -> Result<Vec<Border>, BotsError> {
    match plan.scenario {
        Scenario::Idle | Scenario::Wander => Ok(Vec::new()),
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
        other @ (Scenario::Swarm | Scenario::Churn) => {
            Err(BotsError::ScenarioNotBuilt(other.as_str()))
        }
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one bot's whole context, called once"
)]
async fn bot(
    i: u32,
    plan: &BotsPlan,
    borders: &[Border],
    endpoint: &quinn::Endpoint,
    home: Option<&str>,
    run_started: Instant,
    mut stop: watch::Receiver<bool>,
    progress: &watch::Sender<BotsProgress>,
) -> BotResult {
    let mut r = BotResult::default();
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(plan.seed.wrapping_add(u64::from(i)));
    let name = format!("bot-{i}");
    let join_started = Instant::now();
    let joined = loop {
        match lobby::join(
            endpoint,
            plan.lobby,
            plan.lobby_pin,
            &name,
            None,
            &plan.quic,
        )
        .await
        {
            Ok(j) => break j,
            Err(e) => {
                // Retry while the lobby says so (no shard yet, shared state not reachable).
                if let Some(after) = e.retry_after()
                    && join_started.elapsed() < Duration::from_secs(15)
                {
                    tokio::time::sleep(after).await;
                    continue;
                }
                return fail(r, progress, join_error_kind(&e));
            }
        }
    };
    if let (Some(geo), Some(home)) = (&plan.geo, home) {
        let region_of = |id: &meridian_protocol::ShardId| {
            joined
                .candidates
                .shards
                .iter()
                .find(|c| &c.shard == id)
                .map(|c| c.region.clone())
        };
        let true_rtt = |region: &str| geo.matrix.rtt(home, region);
        let best = joined
            .candidates
            .shards
            .iter()
            .filter_map(|c| true_rtt(&c.region))
            .min();
        let chosen = region_of(&joined.grant.shard.shard).and_then(|reg| true_rtt(&reg));
        r.optimal = Some(chosen.is_some() && chosen == best);
    }
    let mut session = match ShardSession::connect(
        endpoint,
        joined.addr,
        joined.grant.shard.cert_sha256,
        joined.grant.ticket,
        &plan.quic,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            let kind = match e {
                crate::session::SessionError::Rejected(_) => "shard_rejected",
                _ => "shard_connect",
            };
            return fail(r, progress, kind);
        }
    };
    let hz = u32::from(session.welcome().tick_hz.max(1));
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / hz);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut heading: f32 = rng.random_range(0.0..std::f32::consts::TAU);
    // About one crossing bot in four dithers on the line after each return.
    let dithers = rng.random_ratio(1, 4);
    let walker_seed: u64 = rng.random();
    let mut walker: Option<CrossWalker> = None;
    let mut next_turn = Instant::now() + Duration::from_millis(rng.random_range(1000..4000));
    let mut next_rtt = Instant::now() + Duration::from_secs(1);
    let mut play_started = None;
    let end = run_started + plan.duration;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let now = Instant::now();
        if now >= end {
            break;
        }
        let throttle = match plan.scenario {
            Scenario::Idle => 0.0,
            Scenario::Cross => match session.own_entity() {
                // The entity id changes at a handoff; `own_entity` follows it.
                Some(me) => {
                    let w = walker.get_or_insert_with(|| {
                        CrossWalker::new(borders, me.pos, dithers, walker_seed)
                            .expect("invariant: check_plan found at least one border")
                    });
                    let (h, t) = w.steer(now, me.pos);
                    heading = h;
                    t
                }
                None => 0.0,
            },
            _ => {
                if now >= next_turn {
                    heading = rng.random_range(0.0..std::f32::consts::TAU);
                    next_turn = now + Duration::from_millis(rng.random_range(1000..4000));
                }
                1.0
            }
        };
        if session.send_input(heading, throttle, 0).is_err() {
            r.disconnected = true;
            break;
        }
        if play_started.is_none() && session.stats().latest_tick.is_some() {
            play_started = Some(now);
            r.join_ms = Some(join_started.elapsed().as_secs_f64() * 1000.0);
            progress.send_modify(|p| p.playing += 1);
        }
        if now >= next_rtt {
            next_rtt = now + Duration::from_secs(1);
            r.rtt_ms
                .push(session.connection().rtt().as_secs_f64() * 1000.0);
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
                    r.error.get_or_insert_with(|| "handoff_failed".into());
                    ended = true;
                }
                SessionEvent::Score { .. } | SessionEvent::Chat { .. } => {}
            }
        }
        if ended {
            r.disconnected = true;
            break;
        }
    }
    let stats = session.stats();
    r.snapshots = stats.snapshots;
    r.bytes_down = stats.bytes_down;
    r.bytes_up = stats.bytes_up;
    r.play_s = play_started.map_or(0.0, |t| t.elapsed().as_secs_f64());
    if r.join_ms.is_none() {
        r.error = Some("no_snapshot".into());
        progress.send_modify(|p| p.join_failures += 1);
    } else {
        progress.send_modify(|p| p.playing -= 1);
    }
    if r.disconnected {
        progress.send_modify(|p| p.disconnects += 1);
    } else {
        session.leave().await;
    }
    r
}

fn fail(mut r: BotResult, progress: &watch::Sender<BotsProgress>, kind: &str) -> BotResult {
    r.error = Some(kind.to_owned());
    progress.send_modify(|p| p.join_failures += 1);
    r
}

fn join_error_kind(e: &LobbyJoinError) -> &'static str {
    match e {
        LobbyJoinError::Connect(_) => "lobby_connect",
        LobbyJoinError::Rejected(_) => "lobby_rejected",
        _ => "lobby_protocol",
    }
}

fn summarize(plan: &BotsPlan, elapsed: Duration, results: Vec<BotResult>) -> Report {
    let mut join: Vec<f64> = results.iter().filter_map(|r| r.join_ms).collect();
    let mut rtt: Vec<f64> = results
        .iter()
        .flat_map(|r| r.rtt_ms.iter().copied())
        .collect();
    let playing: Vec<&BotResult> = results
        .iter()
        .filter(|r| r.join_ms.is_some() && r.play_s > 0.5)
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
    for e in results.iter().filter_map(|r| r.error.as_ref()) {
        *errors.entry(e.clone()).or_insert(0) += 1;
    }
    let routed: Vec<bool> = results.iter().filter_map(|r| r.optimal).collect();
    let mut blackouts: Vec<f64> = results
        .iter()
        .flat_map(|r| r.blackouts_ms.iter().copied())
        .collect();
    let handoffs_failed = results.iter().map(|r| r.handoffs_failed).sum();
    Report {
        schema: report::REPORT_SCHEMA,
        bots: plan.count,
        duration_s: elapsed.as_secs_f64(),
        tick_hz: 0,
        joined: join.len() as u32,
        join_failures: plan.count - join.len() as u32,
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
        errors,
        routing: Routing {
            optimal: routed.iter().filter(|o| **o).count() as u32,
            total: routed.len() as u32,
        },
        shards: Vec::new(),
        audit: None,
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
    fn cross_needs_a_world_with_a_border_and_swarm_is_not_built() {
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
        assert!(matches!(
            check_plan(&plan(Scenario::Swarm, None)),
            Err(BotsError::ScenarioNotBuilt("swarm"))
        ));
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
}
