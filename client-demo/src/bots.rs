//! Bots: many clients in one process on one tokio runtime, joining through the lobby at a
//! ramp and playing a scenario, each measured; their figures become the run [`Report`].
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
}

/// Why the bots could not start.
#[derive(Debug, thiserror::Error)]
pub enum BotsError {
    /// The scenario needs a part of the system that is not built yet.
    #[error("scenario `{0}` is not built yet in this version (available: idle, wander, geo)")]
    ScenarioNotBuilt(&'static str),
    /// The geo scenario needs a latency matrix.
    #[error("scenario `geo` needs a latency matrix (--latency-matrix FILE)")]
    GeoWithoutMatrix,
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
}

/// Runs the bots until the duration passes or `stop` turns true; returns the report (without
/// the shards' part, which the caller that owns the shards adds). `progress` is updated as bots
/// join and leave.
pub async fn run(
    plan: BotsPlan,
    stop: watch::Receiver<bool>,
    progress: watch::Sender<BotsProgress>,
) -> Result<Report, BotsError> {
    match plan.scenario {
        Scenario::Idle | Scenario::Wander | Scenario::Geo => {}
        other => return Err(BotsError::ScenarioNotBuilt(other.as_str())),
    }
    if plan.scenario == Scenario::Geo && plan.geo.is_none() {
        return Err(BotsError::GeoWithoutMatrix);
    }
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
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(started + at)) => {}
                _ = stop.wait_for(|s| *s) => return BotResult::default(),
            }
            progress.send_modify(|p| p.started += 1);
            bot(
                i,
                &plan,
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

async fn bot(
    i: u32,
    plan: &BotsPlan,
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
        if plan.scenario != Scenario::Idle && now >= next_turn {
            heading = rng.random_range(0.0..std::f32::consts::TAU);
            next_turn = now + Duration::from_millis(rng.random_range(1000..4000));
        }
        let throttle = if plan.scenario == Scenario::Idle {
            0.0
        } else {
            1.0
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
            if matches!(ev, SessionEvent::Kicked(_) | SessionEvent::Closed(_)) {
                ended = true;
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
        handoffs: Handoffs::default(),
        disconnects: results.iter().filter(|r| r.disconnected).count() as u32,
        errors,
        routing: Routing {
            optimal: routed.iter().filter(|o| **o).count() as u32,
            total: routed.len() as u32,
        },
        shards: Vec::new(),
    }
}
