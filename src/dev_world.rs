//! `meridian dev`: a whole local world in one process — the store, the lobby, one shard per
//! zone of the world map (by default three zones side by side, each in a different datacenter
//! region: `deploy/worlds/dev.toml`) and N bots that join through the lobby and play; players
//! are handed between the shards across borders. Prints a status line a second; with
//! `--duration` stops by itself, auditing ownership (every player owned exactly once) just
//! before, and, with `--report`, writes the run report with the audit in it.

use crate::dev::DevConfig;
use meridian_client::bots::{self, BotsPlan, BotsProgress, GeoPlan, WorldLayout};
use meridian_client::config::Scenario;
use meridian_client::latency;
use meridian_client::report::{AuditSummary, Report, ShardPoint, ShardReport};
use meridian_client::report_html::{self, ReportHtmlError};
use meridian_cluster::registry::{Registry, RegistryConfig};
use meridian_cluster::store::{StoreConfig, StoreHandle};
use meridian_cluster::world::WorldMap;
use meridian_lobby::admin::LobbyAdminState;
use meridian_lobby::map::{self, MapSource};
use meridian_lobby::service::{self as lobby, LobbyTuning};
use meridian_protocol::quic::CertificateMaterial;
use meridian_protocol::ticket::TicketKey;
use meridian_shard::config::ShardConfig;
use meridian_shard::handoff::{ClusterLink, HandoffConfig};
use meridian_shard::server::{self as shard, ShardHandle, ShardTuning};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;
use tracing::info;

/// How long the end-of-run audit waits between its two passes.
pub const AUDIT_SETTLE: Duration = Duration::from_secs(1);
/// Jitter of the geo scenario's links, as a fraction of the one-way delay.
pub const GEO_JITTER: f64 = 0.2;
/// Loss of the geo scenario's links, each way.
pub const GEO_LOSS: f64 = 0.01;

/// Why the dev world stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] meridian_cluster::error::StoreError),
    /// A shard could not start.
    #[error("shard: {0}")]
    Shard(#[from] meridian_shard::server::ShardError),
    /// The lobby could not start.
    #[error("lobby: {0}")]
    Lobby(#[from] meridian_lobby::service::LobbyError),
    /// The bots could not run.
    #[error("bots: {0}")]
    Bots(#[from] meridian_client::bots::BotsError),
    /// A setting was refused.
    #[error("{0}")]
    Setting(String),
    /// The world map could not be read.
    #[error(transparent)]
    World(#[from] meridian_cluster::world::WorldMapError),
    /// The HTML page of the report could not be made or written.
    #[error(transparent)]
    Html(#[from] ReportHtmlError),
    /// The admin endpoint could not be bound.
    #[error(
        "cannot bind the admin endpoint on {addr}: {source} (choose another with --admin-listen)"
    )]
    AdminBind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The report could not be written.
    #[error("cannot write the report {path}: {source}")]
    Report {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Runs the dev world until its duration passes or `shutdown` completes.
pub async fn run(cfg: DevConfig, shutdown: impl Future<Output = ()>) -> Result<(), DevError> {
    let duration = cfg
        .run_for()
        .map_err(|e| DevError::Setting(e.to_string()))?;
    if let Some(path) = &cfg.report {
        report_html::html_path(path)?;
    }
    let store = StoreHandle::open(&cfg.store, &StoreConfig::default()).await?;
    info!(backend = store.backend(), "store open");
    // Bound first: a taken port is reported before anything starts.
    let admin_err = |source| DevError::AdminBind {
        addr: cfg.admin_listen,
        source,
    };
    let admin_listener = tokio::net::TcpListener::bind(cfg.admin_listen)
        .await
        .map_err(admin_err)?;
    let admin_addr = admin_listener.local_addr().map_err(admin_err)?;
    // One key for the lobby and the shards of this process.
    let key_bytes: [u8; 32] = meridian_protocol::ticket::random_bytes();
    let key = TicketKey::from_bytes(&key_bytes);
    let key_hex = meridian_protocol::ticket::to_hex(&key_bytes);
    let registry = Registry::new(store.clone(), RegistryConfig::default())
        .map_err(|e| DevError::Setting(e.to_string()))?;

    let world = Arc::new(match &cfg.world {
        Some(path) => WorldMap::load(path)?,
        None => WorldMap::dev(),
    });
    let mut shards: Vec<ShardHandle> = Vec::new();
    for zone in &world.zones {
        let scfg = ShardConfig {
            id: format!("shard-{}", zone.id),
            zone: zone.id.to_string(),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            zone_bounds: zone.bounds_string(),
            tick_hz: cfg.tick_hz,
            npcs: cfg.npcs,
            ticket_key: Some(key_hex.clone()),
            dev_cert: true,
            admin_listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
            region: zone.region.clone(),
            ..ShardConfig::default()
        };
        let tuning = ShardTuning::from_config(&scfg)?;
        let link = ClusterLink {
            registry: registry.clone(),
            world: world.clone(),
            handoff: HandoffConfig::default(),
        };
        shards.push(shard::start_in_world(&scfg, tuning, link).await?);
    }
    let cert = CertificateMaterial::generate_dev(&["localhost", "lobby"])
        .map_err(|e| DevError::Setting(e.to_string()))?;
    let (_store_tx, store_rx) = watch::channel(Some(store.clone()));
    let lobby = lobby::start(
        cfg.lobby_listen,
        &cert,
        key,
        store_rx.clone(),
        LobbyTuning::default(),
    )?;
    // The shards appear in the registry with their first heartbeat.
    wait_for_registry(&registry, shards.len()).await;
    // Where `meridian bots --lobby ADDR --cert-sha256 HEX` finds this world; once the shards
    // are registered, so that a reader may take the line as "ready".
    println!(
        "lobby {} cert_sha256 {}",
        lobby.local_addr,
        meridian_protocol::ticket::to_hex(&lobby.cert_sha256)
    );
    let admin_state = admin::DevAdminState::new(
        LobbyAdminState::new(lobby.local_addr, store_rx.clone(), lobby.shared_metrics()),
        shards.iter().map(ShardHandle::metrics_source).collect(),
        store_rx,
    );
    let map = MapSource::with_store(
        store.clone(),
        Some(world.clone()),
        map::DEFAULT_POLL_INTERVAL,
    );
    let (stop_admin, mut admin_stopped) = watch::channel(false);
    let admin_task = tokio::spawn(async move {
        axum::serve(
            admin_listener,
            admin::router(admin_state, map::router(map.clone())),
        )
        .with_graceful_shutdown(async move {
            let _ = admin_stopped.wait_for(|s| *s).await;
            // Ends the map's event streams, which would keep the shutdown waiting.
            map.stop();
        })
        .await
    });
    // Every role's health, status and metrics, and the live map (`/map`).
    println!("admin http://{admin_addr}");

    let geo = (cfg.scenario == Scenario::Geo).then(|| GeoPlan {
        matrix: latency::builtin_matrix(),
        home_regions: latency::builtin_matrix()
            .regions()
            .map(str::to_owned)
            .collect(),
        shards: shards
            .iter()
            .zip(&world.zones)
            .map(|(s, zone)| (s.local_addr, zone.region.clone()))
            .collect(),
        jitter: GEO_JITTER,
        loss: GEO_LOSS,
    });
    let plan = BotsPlan {
        lobby: lobby.local_addr,
        lobby_pin: lobby.cert_sha256,
        count: cfg.bots,
        ramp_per_s: 100,
        // The world, not the bots, ends the run: the shards are read while the bots still play.
        duration: Duration::from_secs(100 * 365 * 24 * 3600),
        scenario: cfg.scenario,
        geo,
        quic: Default::default(),
        seed: 1,
        name_prefix: "bot".to_owned(),
        world: Some(WorldLayout {
            zones: world.zones.iter().map(|z| (z.min, z.max)).collect(),
        }),
    };
    info!(lobby = %lobby.local_addr, bots = cfg.bots, scenario = cfg.scenario.as_str(), "dev world running");
    let (stop_tx, stop_rx) = watch::channel(false);
    let (progress_tx, progress_rx) = watch::channel(BotsProgress::default());
    let run_started = std::time::Instant::now();
    let mut bots_task = tokio::spawn(bots::run(plan, stop_rx, progress_tx));
    let mut shard_timeline: Vec<ShardPoint> = Vec::new();
    let mut status = tokio::time::interval(Duration::from_secs(1));
    status.tick().await;
    tokio::pin!(shutdown);
    let end = duration.map(|d| tokio::time::Instant::now() + d);
    let until_end = async move {
        match end {
            Some(end) => tokio::time::sleep_until(end).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until_end);
    let mut shard_reports = None;
    let mut audit = None;
    let result = loop {
        tokio::select! {
            r = &mut bots_task => break r,
            _ = &mut shutdown, if !*stop_tx.borrow() => {
                info!("stopping: bots leave, then the lobby and shards stop");
                shard_reports = Some(shards.iter().map(shard_report).collect::<Vec<_>>());
                let _ = stop_tx.send(true);
            }
            _ = &mut until_end, if !*stop_tx.borrow() => {
                shard_reports = Some(shards.iter().map(shard_report).collect::<Vec<_>>());
                // The audit runs on the live world, bots still playing, just before it stops.
                audit = Some(run_audit(&store).await);
                let _ = stop_tx.send(true);
            }
            _ = status.tick() => {
                println!("{}", status_line(&shards, &progress_rx.borrow()));
                let t_s = run_started.elapsed().as_secs_f64();
                shard_timeline.extend(shards.iter().map(|s| shard_point(s, t_s)));
            }
        }
    };
    let mut report = match result {
        Ok(r) => r?,
        Err(e) => return Err(DevError::Setting(format!("bots task failed: {e}"))),
    };
    report.tick_hz = u32::from(cfg.tick_hz);
    report.shard_timeline = shard_timeline;
    if let Some(audit) = audit {
        let audit = audit?;
        println!(
            "audit: players {}, owned once {}, orphaned {}, duplicated {}, stale epoch {} \
             (in flight in both passes, not judged: {})",
            audit.players,
            audit.owned_once,
            audit.orphaned,
            audit.duplicated,
            audit.stale_epoch,
            audit.settling
        );
        for v in audit.violations.iter().take(20) {
            println!("  {:?} player {}: {}", v.kind, v.player, v.detail);
        }
        report.audit = Some(AuditSummary {
            players: audit.players,
            owned_once: audit.owned_once,
            orphaned: audit.orphaned,
            duplicated: audit.duplicated,
            stale_epoch: audit.stale_epoch,
        });
    }
    report.shards = shard_reports.unwrap_or_else(|| shards.iter().map(shard_report).collect());
    let _ = stop_admin.send(true);
    match admin_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "admin endpoint failed"),
        Err(e) => tracing::warn!(error = %e, "admin endpoint task failed"),
    }
    lobby.shutdown().await;
    for s in shards {
        s.shutdown().await;
    }
    println!(
        "joined {}/{}, join p99 {:.1} ms, snapshots/s mean {:.1}, disconnects {}, routing {}/{}, \
         handoffs {} (failed {}, blackout p50 {:.1} ms p99 {:.1} ms)",
        report.joined,
        report.bots,
        report.join_ms.p99,
        report.snapshots_per_s.mean,
        report.disconnects,
        report.routing.optimal,
        report.routing.total,
        report.handoffs.count,
        report.handoffs.failed,
        report.handoffs.ms_p50,
        report.handoffs.ms_p99
    );
    if let Some(path) = &cfg.report {
        write_report(path, &report)?;
        let html = report_html::write_html(&report, path)?;
        info!(path = %path.display(), html = %html.display(), "report written");
    }
    Ok(())
}

/// The ownership audit of `meridian audit`, on this world's store and shards.
async fn run_audit(store: &StoreHandle) -> Result<meridian_cluster::audit::AuditReport, DevError> {
    let source = crate::audit::HttpShardSource::new();
    meridian_cluster::audit::run_audit(store, &source, AUDIT_SETTLE)
        .await
        .map_err(DevError::Store)
}

async fn wait_for_registry(registry: &Registry, n: usize) {
    use meridian_cluster::store::Store as _;
    for _ in 0..100 {
        if registry
            .store()
            .live_shards()
            .await
            .map(|l| l.len() >= n)
            .unwrap_or(false)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn shard_report(s: &ShardHandle) -> ShardReport {
    let st = s.status();
    let m = s.metrics();
    ShardReport {
        id: s.shard.to_string(),
        zone: s.zone.to_string(),
        players: u32::try_from(st.players).unwrap_or(u32::MAX),
        entities: u32::try_from(st.entities).unwrap_or(u32::MAX),
        tick_ms_p50: st.total.p50_ms,
        tick_ms_p99: st.total.p99_ms,
        tick_ms_max: st.total.max_ms,
        overruns: st.overruns,
        handoffs_out: m.handoffs_out.load(Ordering::Relaxed),
        handoffs_in: m.handoffs_in.load(Ordering::Relaxed),
        handoffs_failed: m.handoffs_failed.load(Ordering::Relaxed),
    }
}

/// `s`'s tick time over the last second, `t_s` seconds into the run.
fn shard_point(s: &ShardHandle, t_s: f64) -> ShardPoint {
    let st = s.status();
    ShardPoint {
        t_s,
        shard: s.shard.to_string(),
        tick_ms_p50: st.recent.p50_ms,
        tick_ms_p99: st.recent.p99_ms,
        players: u32::try_from(st.players).unwrap_or(u32::MAX),
    }
}

fn status_line(shards: &[ShardHandle], p: &BotsProgress) -> String {
    let per_shard: Vec<String> = shards
        .iter()
        .map(|s| {
            let st = s.status();
            let m = s.metrics();
            format!(
                "{} {}p p99 {:.2}ms out {} in {}",
                s.zone,
                st.players,
                st.recent.p99_ms,
                m.handoffs_out.load(Ordering::Relaxed),
                m.handoffs_in.load(Ordering::Relaxed)
            )
        })
        .collect();
    format!(
        "{} | bots started {} playing {} handoffs {} join failures {} disconnects {}",
        per_shard.join(" | "),
        p.started,
        p.playing,
        p.handoffs,
        p.join_failures,
        p.disconnects
    )
}

fn write_report(path: &std::path::Path, report: &Report) -> Result<(), DevError> {
    let err = |source| DevError::Report {
        path: path.display().to_string(),
        source,
    };
    let json = serde_json::to_string_pretty(report).map_err(|e| err(std::io::Error::other(e)))?;
    std::fs::write(path, json + "\n").map_err(err)
}

/// The admin endpoint of `meridian dev`: one HTTP server for every role of the process.
///
/// - `GET /healthz`: `200 ok` while it serves;
/// - `GET /readyz`: `200` when shared state answers, every shard is registered and holds its
///   zone's lease, else `503`; [`DevReadiness`] JSON either way;
/// - `GET /status`: [`DevStatus`] JSON: the lobby's status and each shard's;
/// - `GET /metrics`: the metrics of the lobby and of every shard, labelled by `role`, `shard`
///   and `zone`;
/// - the live map's routes (`/map`, [`meridian_lobby::map::router`]).
///
/// Any other path is `404` with `{"error": …}`.
mod admin {
    use axum::Router;
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Json, Response};
    use axum::routing::get;
    use meridian_cluster::store::StoreHandle;
    use meridian_lobby::admin::{
        self as lobby_admin, LobbyAdminState, LobbyCollector, LobbyStatus,
    };
    use meridian_shard::admin::ShardStatus;
    use meridian_shard::metrics::{ShardCollector, ShardSource};
    use prometheus_client::registry::Registry;
    use std::sync::{Arc, PoisonError};
    use tokio::sync::watch;

    /// What the dev admin endpoint serves from.
    #[derive(Clone)]
    pub struct DevAdminState {
        /// The lobby.
        pub lobby: LobbyAdminState,
        /// The shards.
        pub shards: Vec<ShardSource>,
        /// Shared state.
        pub store: watch::Receiver<Option<StoreHandle>>,
        /// Every role's metrics.
        pub exporter: Arc<Registry>,
    }

    impl DevAdminState {
        /// Exposes the lobby's and the shards' metrics together.
        pub fn new(
            lobby: LobbyAdminState,
            shards: Vec<ShardSource>,
            store: watch::Receiver<Option<StoreHandle>>,
        ) -> Self {
            let mut registry = Registry::default();
            registry.register_collector(Box::new(LobbyCollector {
                metrics: lobby.metrics.clone(),
            }));
            registry.register_collector(Box::new(ShardCollector::new(shards.clone())));
            Self {
                lobby,
                shards,
                store,
                exporter: Arc::new(registry),
            }
        }
    }

    /// `GET /status`.
    #[derive(serde::Serialize)]
    pub struct DevStatus {
        /// Always `dev`.
        pub role: &'static str,
        /// The lobby.
        pub lobby: LobbyStatus,
        /// Every shard.
        pub shards: Vec<ShardStatus>,
    }

    /// `GET /readyz`.
    #[derive(serde::Serialize)]
    pub struct DevReadiness {
        /// Whether every check passed.
        pub ready: bool,
        /// Shared state: `reachable`, or why not.
        pub redis: String,
        /// Why it is not ready, one line per failed check.
        pub reasons: Vec<String>,
    }

    /// The routes, the map's among them.
    pub fn router(state: DevAdminState, extra: Router) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(ready))
            .route("/status", get(status))
            .route("/metrics", get(metrics))
            .fallback(lobby_admin::not_found)
            .with_state(state)
            .merge(extra)
    }

    /// Whether shared state answers, with the shards it lists.
    async fn live(store: &watch::Receiver<Option<StoreHandle>>) -> Result<Vec<String>, String> {
        use meridian_cluster::store::Store as _;
        let Some(store) = store.borrow().clone() else {
            return Err("not open".to_owned());
        };
        match tokio::time::timeout(lobby_admin::PROBE_TIMEOUT, store.live_shards()).await {
            Ok(Ok(l)) => Ok(l.iter().map(|s| s.record.id.to_string()).collect()),
            Ok(Err(e)) => Err(format!("unreachable: {e}")),
            Err(_) => Err("unreachable: no answer in time".to_owned()),
        }
    }

    async fn ready(State(state): State<DevAdminState>) -> Response {
        let mut reasons = Vec::new();
        let redis = match live(&state.store).await {
            Ok(listed) => {
                for s in &state.shards {
                    if !listed.iter().any(|id| id == s.shard.as_str()) {
                        reasons.push(format!("shard {} is not in the registry", s.shard));
                    }
                }
                "reachable".to_owned()
            }
            Err(e) => {
                reasons.push(format!("shared state: {e}"));
                e
            }
        };
        for s in &state.shards {
            if s.lease_epoch() == 0 {
                reasons.push(format!("shard {} does not hold zone {}", s.shard, s.zone));
            }
        }
        let code = if reasons.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let body = DevReadiness {
            ready: reasons.is_empty(),
            redis,
            reasons,
        };
        (code, Json(body)).into_response()
    }

    async fn status(State(state): State<DevAdminState>) -> Json<DevStatus> {
        let redis = match live(&state.store).await {
            Ok(_) => "reachable".to_owned(),
            Err(e) => e,
        };
        let lobby = lobby_admin::status_of(&state.lobby).await;
        let shards = state
            .shards
            .iter()
            .map(|s| {
                let tick = s
                    .status
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                ShardStatus {
                    role: "shard",
                    id: s.shard.clone(),
                    zone: s.zone.clone(),
                    lease_epoch: s.lease_epoch(),
                    redis: redis.clone(),
                    tick_p50_ms: tick.total.p50_ms,
                    tick_p99_ms: tick.total.p99_ms,
                    tick,
                }
            })
            .collect();
        Json(DevStatus {
            role: "dev",
            lobby,
            shards,
        })
    }

    async fn metrics(State(state): State<DevAdminState>) -> Response {
        lobby_admin::exposition(&state.exporter)
    }
}
