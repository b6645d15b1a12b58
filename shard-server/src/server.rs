//! A running shard: the QUIC endpoint and its accept loop on the async runtime, the tick
//! thread beside it. [`start`] returns a [`ShardHandle`] (tests start shards in-process with
//! it); [`run`] is the `meridian shard` entry point.

use crate::admin::{self, AdminQuery, AdminState, DrainControl};
use crate::config::{ConfigError, ShardConfig};
use crate::handoff::checkpoint::{self, CheckpointCommand, CheckpointConfig};
use crate::handoff::ghosts::GhostBands;
use crate::handoff::{ClusterLink, worker};
use crate::metrics::{ShardCollector, ShardMetrics, ShardSource, TickStatus};
use crate::net::{self, NetLimits, NetShared};
use crate::replication::ReplicationConfig;
use crate::sim::{BorderConfig, Sim, SimConfig, SimConfigError};
use crate::tick::{TickCheckpoints, TickHandoff, TickLoop, TickSetup};
use meridian_cluster::Store;
use meridian_cluster::ownership::{AcquireOutcome, ClaimOutcome, Lease, PlayerState};
use meridian_cluster::registry::{Registry, RegistryConfig};
use meridian_cluster::store::{ShardRecord, StoreConfig, StoreHandle};
use meridian_cluster::world::WorldMap;
use meridian_protocol::quic::{self, CertSha256, CertificateMaterial, QuicConfig, QuicSetupError};
use meridian_protocol::ticket::{TicketKey, TicketKeyError, to_hex};
use meridian_protocol::{PlayerId, ShardId, ZoneId};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{Instrument, debug, info, warn};

/// Why a shard could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The ticket key is missing or malformed.
    #[error("ticket key: {0}")]
    TicketKey(#[from] TicketKeyError),
    /// The ticket key is missing.
    #[error(
        "missing ticket key: set --ticket-key or MERIDIAN_TICKET_KEY (64 hexadecimal characters)"
    )]
    MissingTicketKey,
    /// Certificates or transport settings were refused.
    #[error(transparent)]
    Quic(#[from] QuicSetupError),
    /// The simulation settings were refused.
    #[error("simulation settings: {0}")]
    Sim(#[from] SimConfigError),
    /// The UDP socket could not be bound.
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The tick thread could not be started.
    #[error("cannot start the tick thread: {0}")]
    Thread(std::io::Error),
    /// Shared state could not be reached.
    #[error("shared state: {0}")]
    Store(#[from] meridian_cluster::error::StoreError),
    /// The registry settings were refused.
    #[error("registry: {0}")]
    Registry(String),
    /// The world map does not list the shard's zone.
    #[error("zone `{zone}` is not in the world map `{map}` (zones: {zones})")]
    ZoneNotInMap {
        /// The shard's zone.
        zone: ZoneId,
        /// The map's name.
        map: String,
        /// The zones it has.
        zones: String,
    },
    /// Another live shard holds the zone's lease.
    #[error(
        "zone `{zone}` is served by shard `{holder}` (lease epoch {epoch}); start this shard for another zone or stop that one"
    )]
    ZoneHeld {
        /// The zone.
        zone: ZoneId,
        /// The shard holding it.
        holder: ShardId,
        /// Its lease epoch.
        epoch: u64,
    },
    /// The admin endpoint could not be bound.
    #[error("cannot bind the admin endpoint on {addr}: {source}")]
    AdminBind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The world map could not be read.
    #[error(transparent)]
    WorldMap(#[from] meridian_cluster::world::WorldMapError),
    /// A standby without a world map stands by for several zones: it cannot tell their bounds.
    #[error(
        "--standby-for lists {count} zones without --world: give the world map, or stand by for one zone (its bounds are --zone-bounds)"
    )]
    StandbyNeedsWorld {
        /// How many zones were listed.
        count: usize,
    },
    /// The tick thread stopped without being asked to (a panic in the simulation: see the log).
    #[error("the tick thread of shard {shard} stopped unexpectedly; the shard cannot go on")]
    TickDied {
        /// The shard.
        shard: ShardId,
    },
}

/// Settings of a shard beyond its configuration file: derived from it by
/// [`ShardTuning::from_config`], adjustable by tests and benchmarks.
#[derive(Clone, Debug)]
pub struct ShardTuning {
    /// The simulation.
    pub sim: SimConfig,
    /// Replication to every client.
    pub replication: ReplicationConfig,
    /// Connection limits.
    pub limits: NetLimits,
    /// QUIC transport.
    pub quic: QuicConfig,
    /// The region (datacenter) this shard runs in, as named in latency matrices; published in
    /// the registry.
    pub region: String,
    /// Most players this shard admits; published in the registry for routing.
    pub capacity: u32,
}

impl ShardTuning {
    /// The tuning a configuration implies.
    pub fn from_config(cfg: &ShardConfig) -> Result<Self, ShardError> {
        let bounds = cfg.bounds()?;
        let sim = SimConfig {
            bounds_min: bounds.min,
            bounds_max: bounds.max,
            tick_hz: cfg.tick_hz,
            npcs: cfg.npcs,
            ..SimConfig::default()
        };
        let limits = NetLimits {
            max_frame: cfg.max_frame_bytes as usize,
            ..NetLimits::default()
        };
        let quic = QuicConfig {
            keep_alive_ms: cfg.keep_alive_ms,
            idle_timeout_ms: cfg.idle_timeout_ms,
            ..QuicConfig::default()
        };
        Ok(Self {
            sim,
            replication: ReplicationConfig::default(),
            limits,
            quic,
            region: cfg.region.clone(),
            capacity: 1_000,
        })
    }
}

/// How long a shard started with `--redis` keeps trying to reach it before giving up.
pub const STORE_CONNECT_DEADLINE: Duration = Duration::from_secs(30);

/// A running shard.
pub struct ShardHandle {
    /// The address the endpoint is bound to.
    pub local_addr: SocketAddr,
    /// SHA-256 of the certificate it serves (clients pin it).
    pub cert_sha256: CertSha256,
    /// This shard.
    pub shard: ShardId,
    /// Its zone.
    pub zone: ZoneId,
    status: Arc<Mutex<TickStatus>>,
    metrics: Arc<ShardMetrics>,
    stop: Arc<AtomicBool>,
    shutdown: watch::Sender<bool>,
    tick_thread: std::thread::JoinHandle<TickStatus>,
    tick_ended: watch::Receiver<bool>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
    record: ShardRecord,
    accept_task: tokio::task::JoinHandle<()>,
    endpoint: quinn::Endpoint,
    /// The zone lease and the store it lives in, when part of a world.
    lease: Option<(StoreHandle, watch::Receiver<Option<Lease>>)>,
    /// The handoff worker's tasks.
    workers: Vec<tokio::task::JoinHandle<()>>,
    /// The admin endpoint's address, if it serves one.
    pub admin_addr: Option<SocketAddr>,
    /// Set when shutting down: published in the registry record.
    draining: Arc<AtomicBool>,
    /// Where the shard is published.
    registry: Option<Registry>,
    /// How long neighbours take to notice a draining record (two refreshes of their watchers).
    drain_notice: Duration,
    /// Asks the tick thread to drain.
    tick_drain: Arc<AtomicBool>,
    /// Set by the tick thread once drained, with the players it checkpointed.
    tick_drained: Arc<std::sync::OnceLock<usize>>,
    /// Stops the lease keeper (drain, chaos tests).
    lease_paused: Arc<AtomicBool>,
    /// To the checkpoint writer (flushes), when part of a world.
    checkpoints: Option<mpsc::Sender<CheckpointCommand>>,
    /// Longest a drain takes.
    drain_deadline: Duration,
    /// Turned true by `POST /drain`.
    drain_switch: Arc<watch::Sender<bool>>,
    /// The lease was released by a drain.
    lease_released: bool,
}

/// What a drain did.
#[derive(Clone, Debug)]
pub struct DrainReport {
    /// Players whose state was checkpointed and whose clients were told to reconnect.
    pub players: usize,
    /// Every checkpoint queued before the drain was written (or refused by the fence).
    pub flushed: bool,
    /// The zone lease was released (a standby may take the zone at once).
    pub lease_released: bool,
    /// The drain (and the shutdown after it) finished within the deadline.
    pub within_deadline: bool,
    /// How long it took.
    pub took: Duration,
    /// The final tick status.
    pub status: TickStatus,
}

impl ShardHandle {
    /// The tick status published last (once a second).
    pub fn status(&self) -> TickStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Publishes the shard in `registry` (heartbeat every interval with the current load) until
    /// the shard shuts down, when it is deregistered. Replaces an earlier publication.
    pub fn publish(&mut self, registry: Registry) {
        if let Some(old) = self.heartbeat.take() {
            old.abort();
        }
        let record = self.record.clone();
        let status = self.status.clone();
        let draining = self.draining.clone();
        // A shard without its zone's lease admits nobody: it says so as draining, so that
        // lobbies stop routing to it and neighbours stop handing players to it.
        let lease = self.lease.as_ref().map(|(_, rx)| rx.clone());
        let mut stopped = self.shutdown.subscribe();
        self.registry = Some(registry.clone());
        self.heartbeat = Some(registry.spawn_heartbeat(
            move || {
                let players = status.lock().map(|s| s.players).unwrap_or(0);
                ShardRecord {
                    load: u32::try_from(players).unwrap_or(u32::MAX),
                    draining: draining.load(Ordering::Relaxed)
                        || lease.as_ref().is_some_and(|rx| rx.borrow().is_none()),
                    ..record.clone()
                }
            },
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        ));
    }

    /// Completes when the tick thread has ended, asked to or not.
    pub async fn tick_ended(&self) {
        let mut rx = self.tick_ended.clone();
        let _ = rx.wait_for(|ended| *ended).await;
    }

    /// The shard's counters.
    pub fn metrics(&self) -> &ShardMetrics {
        &self.metrics
    }

    /// What the shard's metrics are read from at scrape time, for an admin endpoint that
    /// serves several shards (`meridian dev`).
    pub fn metrics_source(&self) -> ShardSource {
        ShardSource {
            shard: self.shard.clone(),
            zone: self.zone.clone(),
            metrics: self.metrics.clone(),
            lease: self.lease.as_ref().map(|(_, rx)| rx.clone()),
            status: self.status.clone(),
        }
    }

    /// The zone lease held now (None without shared state, or while lost).
    pub fn lease(&self) -> Option<Lease> {
        self.lease.as_ref().and_then(|(_, rx)| rx.borrow().clone())
    }

    /// Completes when a drain is asked for on the admin endpoint (`POST /drain`).
    pub async fn drain_requested(&self) {
        let mut rx = self.drain_switch.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Pauses (or resumes) the renewal of the zone lease while the shard keeps serving: what a
    /// stalled or cut-off process looks like to the rest of the cluster (chaos tests).
    pub fn set_lease_keeping_paused(&self, paused: bool) {
        self.lease_paused.store(paused, Ordering::Relaxed);
    }

    /// Stops the shard the way a crash does: the endpoint closes at once, nothing is saved,
    /// released or deregistered; the zone lease and the registry record expire by themselves
    /// (chaos tests).
    pub async fn crash(self) {
        self.lease_paused.store(true, Ordering::Relaxed);
        for w in &self.workers {
            w.abort();
        }
        if let Some(h) = &self.heartbeat {
            h.abort();
        }
        self.accept_task.abort();
        self.endpoint
            .close(quic::close_code::SHUTDOWN.into(), b"crashed");
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.tick_thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }

    /// Drains the shard, then stops it, all within its drain deadline (`--drain-deadline-ms`):
    /// it stops admitting (the registry record says draining, hellos are refused), checkpoints
    /// every player keeping their ownership, sends every client a [`KickReason::Draining`]
    /// (reconnect through the lobby), waits for the checkpoints to be written, releases the
    /// zone lease (a standby takes the zone at once and restores the players), and shuts down.
    ///
    /// [`KickReason::Draining`]: meridian_protocol::control::KickReason::Draining
    pub async fn drain(mut self) -> DrainReport {
        let started = tokio::time::Instant::now();
        let deadline = started + self.drain_deadline;
        ShardMetrics::inc(&self.metrics.drains);
        info!(
            deadline_ms = self.drain_deadline.as_millis() as u64,
            "draining"
        );
        self.draining.store(true, Ordering::Relaxed);
        if let Some(registry) = &self.registry {
            let record = ShardRecord {
                draining: true,
                ..self.record.clone()
            };
            if let Err(e) = registry.heartbeat(&record).await {
                warn!(error = %e, "draining record not published");
            }
        }
        self.tick_drain.store(true, Ordering::Relaxed);
        let drained = self.tick_drained.clone();
        let players = tokio::time::timeout_at(deadline, async {
            loop {
                if let Some(n) = drained.get() {
                    return *n;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        let told = players.is_ok();
        let players = players.unwrap_or(0);
        let mut flushed = self.checkpoints.is_none() && told;
        if let (Some(tx), true) = (&self.checkpoints, told) {
            let (done, wait) = oneshot::channel();
            flushed = tokio::time::timeout_at(deadline, async {
                tx.send(CheckpointCommand::Flush(done)).await.is_ok() && wait.await.is_ok()
            })
            .await
            .unwrap_or(false);
        }
        if !flushed {
            warn!("drain: checkpoints not all written within the deadline");
        }
        let mut lease_released = false;
        if let Some((store, rx)) = &self.lease {
            self.lease_paused.store(true, Ordering::Relaxed);
            let lease = rx.borrow().clone();
            if let Some(lease) = lease {
                match tokio::time::timeout_at(deadline, store.release_lease(&lease)).await {
                    Ok(Ok(released)) => {
                        lease_released = released;
                        info!(zone = %lease.zone, epoch = lease.epoch, released, "zone lease given up");
                    }
                    Ok(Err(e)) => {
                        warn!(error = %e, "zone lease not released; it expires by itself")
                    }
                    Err(_) => {
                        warn!("zone lease not released within the deadline; it expires by itself")
                    }
                }
            }
        }
        self.lease_released = lease_released;
        let status = tokio::time::timeout_at(deadline, self.shutdown())
            .await
            .ok();
        let within_deadline = status.is_some() && tokio::time::Instant::now() <= deadline;
        let report = DrainReport {
            players,
            flushed,
            lease_released,
            within_deadline,
            took: started.elapsed(),
            status: status.unwrap_or_default(),
        };
        info!(
            players = report.players,
            flushed = report.flushed,
            lease_released = report.lease_released,
            took_ms = report.took.as_millis() as u64,
            "drained"
        );
        report
    }

    /// Stops the shard: the tick thread kicks every client with a shutdown reason and stops,
    /// the endpoint stops accepting and closes. Returns the final tick status.
    pub async fn shutdown(self) -> TickStatus {
        let drained = self.tick_drained.get().is_some();
        if let (Some(registry), Some(_), false) = (&self.registry, &self.lease, drained) {
            // Neighbours stop handing players here before the endpoint goes away: the record
            // says draining, and their watchers look again within a refresh.
            self.draining.store(true, Ordering::Relaxed);
            let record = ShardRecord {
                draining: true,
                ..self.record.clone()
            };
            if registry.heartbeat(&record).await.is_ok() {
                tokio::time::sleep(self.drain_notice).await;
            }
        }
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.shutdown.send(true);
        let thread = self.tick_thread;
        let status = tokio::task::spawn_blocking(move || thread.join())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let _ = self.accept_task.await;
        // Releases and acks queued by the tick thread's last steps get a moment to finish.
        tokio::time::sleep(Duration::from_millis(100)).await;
        for w in &self.workers {
            w.abort();
        }
        if let (Some((store, rx)), false) = (&self.lease, self.lease_released) {
            let lease = rx.borrow().clone();
            if let Some(lease) = lease {
                match store.release_lease(&lease).await {
                    Ok(_) => info!(zone = %lease.zone, epoch = lease.epoch, "zone lease released"),
                    Err(e) => warn!(error = %e, "zone lease not released; it expires by itself"),
                }
            }
        }
        if let Some(h) = self.heartbeat {
            // The heartbeat task deregisters the shard when it sees the shutdown.
            let _ = tokio::time::timeout(Duration::from_secs(2), h).await;
        }
        // Let the kicks reach the clients, then close what is left.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        self.endpoint
            .close(quic::close_code::SHUTDOWN.into(), b"shutting down");
        status
    }
}

/// Starts a shard from a validated configuration: binds its endpoint, builds its world and
/// starts its tick thread; with a `registry`, publishes the shard there every heartbeat
/// (address, certificate, region, capacity, load) until it shuts down. Must be called within
/// a tokio runtime.
pub async fn start(
    cfg: &ShardConfig,
    tuning: ShardTuning,
    registry: Option<Registry>,
) -> Result<ShardHandle, ShardError> {
    start_inner(cfg, tuning, registry, None, None).await
}

/// Binds the shard's UDP socket.
fn bind(cfg: &ShardConfig, tuning: &ShardTuning) -> Result<quic::BoundSocket, ShardError> {
    quic::bind_udp_socket(cfg.listen, tuning.quic.socket_buffer_bytes).map_err(|source| {
        ShardError::Bind {
            addr: cfg.listen,
            source,
        }
    })
}

/// Starts a shard as part of a multi-zone world: takes its zone's lease (refused if another
/// live shard holds it), claims the ownership of every player it admits, hands players to its
/// neighbours across borders and takes theirs, shows their border entities, and publishes
/// itself in the registry. Must be called within a tokio runtime.
pub async fn start_in_world(
    cfg: &ShardConfig,
    tuning: ShardTuning,
    link: ClusterLink,
) -> Result<ShardHandle, ShardError> {
    let registry = link.registry.clone();
    start_inner(cfg, tuning, Some(registry), Some(link), None).await
}

async fn start_inner(
    cfg: &ShardConfig,
    mut tuning: ShardTuning,
    registry: Option<Registry>,
    link: Option<ClusterLink>,
    socket: Option<quic::BoundSocket>,
) -> Result<ShardHandle, ShardError> {
    cfg.validate()?;
    let key = TicketKey::from_hex(
        cfg.ticket_key
            .as_deref()
            .ok_or(ShardError::MissingTicketKey)?,
    )?;
    let shard = ShardId::new(cfg.id.clone()).map_err(|source| ConfigError::BadId { source })?;
    let mut zone =
        ZoneId::new(cfg.zone.clone()).map_err(|source| ConfigError::BadZone { source })?;
    let cert = match (&cfg.cert, &cfg.key) {
        (Some(c), Some(k)) if !cfg.dev_cert => CertificateMaterial::load_pem(c, k)?,
        _ => CertificateMaterial::generate_dev(&["localhost", shard.as_str()])?,
    };
    let server_config = quic::server_config(&cert, &tuning.quic)?;
    let bound = match socket {
        Some(bound) => bound,
        None => bind(cfg, &tuning)?,
    };
    if bound.recv_buffer < tuning.quic.socket_buffer_bytes {
        warn!(
            granted = bound.recv_buffer,
            asked = tuning.quic.socket_buffer_bytes,
            "UDP receive buffer smaller than asked (raise net.core.rmem_max)"
        );
    }
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config),
        bound.socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|source| ShardError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let local_addr = endpoint.local_addr().map_err(|source| ShardError::Bind {
        addr: cfg.listen,
        source,
    })?;

    // The admin port is bound first: a standby serves it while it waits (liveness probes, the
    // audit), then hands the same socket to the full endpoint.
    let admin_socket = match cfg.admin_listen {
        Some(addr) => {
            let bind = || -> std::io::Result<(std::net::TcpListener, SocketAddr)> {
                let l = std::net::TcpListener::bind(addr)?;
                l.set_nonblocking(true)?;
                let bound = l.local_addr()?;
                Ok((l, bound))
            };
            Some(bind().map_err(|source| ShardError::AdminBind { addr, source })?)
        }
        None => None,
    };

    // In a world: the map decides the zone's rectangle and its neighbours, and the lease is
    // taken before anything is served. A standby waits here until one of its zones is free.
    let mut world_parts = None;
    let mut restored = Vec::new();
    if let Some(link) = &link {
        let standby = cfg.standby_zones()?;
        for z in standby.iter().chain(standby.is_empty().then_some(&zone)) {
            zone_spec(&link.world, z)?;
        }
        let store = link.registry.store().clone();
        let lease = if standby.is_empty() {
            match store
                .acquire_lease(&zone, &shard, link.handoff.lease_ttl)
                .await?
            {
                AcquireOutcome::Acquired(lease) => lease,
                AcquireOutcome::Held(holder) => {
                    return Err(ShardError::ZoneHeld {
                        zone: zone.clone(),
                        holder: holder.owner,
                        epoch: holder.epoch,
                    });
                }
            }
        } else {
            let record = ShardRecord {
                id: shard.clone(),
                zone: standby[0].clone(),
                region: tuning.region.clone(),
                addr: cfg.public_addr.unwrap_or(local_addr).to_string(),
                cert_sha256: cert.sha256(),
                capacity: tuning.capacity,
                load: 0,
                draining: true,
                admin_addr: admin_socket.as_ref().map(|(_, a)| a.to_string()),
            };
            let standby_admin = match &admin_socket {
                Some((listener, addr)) => {
                    let listener = listener
                        .try_clone()
                        .and_then(tokio::net::TcpListener::from_std)
                        .map_err(|source| ShardError::AdminBind {
                            addr: *addr,
                            source,
                        })?;
                    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                    let served = tokio::spawn(admin::serve_standby(
                        listener,
                        shard.clone(),
                        standby.clone(),
                        async move {
                            let _ = stopped.await;
                        },
                    ));
                    Some((stop, served))
                }
                None => None,
            };
            let lease =
                wait_for_zone(&link.registry, &standby, link.handoff.lease_ttl, record).await;
            if let Some((stop, served)) = standby_admin {
                let _ = stop.send(());
                let _ = served.await;
            }
            lease
        };
        zone = lease.zone.clone();
        let spec = zone_spec(&link.world, &zone)?;
        if [spec.min, spec.max] != [tuning.sim.bounds_min, tuning.sim.bounds_max] {
            info!(zone = %zone, bounds = %spec.bounds_string(), "zone bounds taken from the world map");
        }
        tuning.sim.bounds_min = spec.min;
        tuning.sim.bounds_max = spec.max;
        let neighbours: Vec<_> = link.world.neighbours(&zone).into_iter().cloned().collect();
        let (world_min, world_max) = link.world.bounds();
        let border = BorderConfig {
            world_min,
            world_max,
            neighbours: neighbours.iter().map(|n| (n.min, n.max)).collect(),
            ..BorderConfig::default()
        };
        tuning.sim.border = Some(border);
        info!(zone = %zone, epoch = lease.epoch, "zone lease taken");
        restored = restore_players(&store, &lease).await;
        world_parts = Some((link.clone(), spec, neighbours, store, lease));
    }
    let sim = Sim::new(tuning.sim.clone())?;
    let metrics = Arc::new(ShardMetrics::default());
    let status = Arc::new(Mutex::new(TickStatus::default()));
    let tick = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (sessions_tx, sessions_rx) = mpsc::channel(4096);
    let (inputs_tx, inputs_rx) = mpsc::channel(65_536);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (admin_tx, admin_rx) = mpsc::channel::<AdminQuery>(64);
    let tick_drain = Arc::new(AtomicBool::new(false));
    let tick_drained = Arc::new(std::sync::OnceLock::new());
    let lease_paused = Arc::new(AtomicBool::new(false));
    let draining = Arc::new(AtomicBool::new(false));
    let mut tick_checkpoints = None;
    let mut checkpoint_tx = None;
    // The handoff machinery: channels between the tick thread and the worker.
    let mut tick_handoff = None;
    let mut net_cluster = None;
    let mut lease_handle = None;
    let mut workers = Vec::new();
    if let Some((link, spec, neighbours, store, lease)) = world_parts {
        let (lease_tx, lease_rx) = watch::channel(Some(lease));
        let (cmd_tx, cmd_rx) = mpsc::channel(8192);
        let (ev_tx, ev_rx) = mpsc::channel(8192);
        let (gout_tx, gout_rx) = mpsc::channel(256);
        let (gin_tx, gin_rx) = mpsc::channel(256);
        let border = tuning
            .sim
            .border
            .clone()
            .expect("invariant: set above for a shard in a world");
        let neighbour_ids: Vec<ZoneId> = neighbours.iter().map(|n| n.id.clone()).collect();
        tick_handoff = Some(TickHandoff {
            commands: cmd_tx,
            events: ev_rx,
            ghosts_out: gout_tx,
            ghosts_in: gin_rx,
            neighbours: neighbour_ids.clone(),
            neighbour_rects: border.neighbours.clone(),
            bands: GhostBands::new((spec.min, spec.max), &border.neighbours, border.band),
            spawns: spec.spawns.clone(),
            config: link.handoff.clone(),
            lease: lease_rx.clone(),
        });
        workers = worker::spawn(worker::WorkerSetup {
            shard: shard.clone(),
            zone: zone.clone(),
            store: store.clone(),
            neighbours: neighbour_ids,
            key: key.clone(),
            config: link.handoff.clone(),
            lease: lease_tx,
            commands: cmd_rx,
            events: ev_tx,
            ghosts_out: gout_rx,
            ghosts_in: gin_tx,
            metrics: metrics.clone(),
            shutdown: shutdown_rx.clone(),
            lease_paused: lease_paused.clone(),
        });
        metrics.lease_held.store(1, Ordering::Relaxed);
        let (cp_tx, cp_rx) = mpsc::channel(checkpoint::CHANNEL_CAPACITY);
        let cp_config = CheckpointConfig {
            interval: cfg.checkpoint_interval(),
            max_queued: link.handoff.checkpoint_queue,
        };
        tick_checkpoints = Some(TickCheckpoints {
            commands: cp_tx.clone(),
            interval: cp_config.interval,
        });
        checkpoint_tx = Some(cp_tx);
        workers.push(tokio::spawn(
            checkpoint::run(
                store.clone(),
                lease_rx.clone(),
                cp_config,
                cp_rx,
                metrics.clone(),
                shutdown_rx.clone(),
            )
            .instrument(tracing::info_span!("checkpoint", shard = %shard, zone = %zone)),
        ));
        net_cluster = Some(net::NetCluster {
            store: store.clone(),
            lease: lease_rx.clone(),
        });
        lease_handle = Some((store, lease_rx));
    }
    let setup = TickSetup {
        shard: shard.clone(),
        zone: zone.clone(),
        sim,
        replication: tuning.replication.clone(),
        sessions: sessions_rx,
        inputs: inputs_rx,
        metrics: metrics.clone(),
        status: status.clone(),
        tick: tick.clone(),
        stop: stop.clone(),
        handoff: tick_handoff,
        admin: Some(admin_rx),
        checkpoints: tick_checkpoints,
        restored,
        drain: tick_drain.clone(),
        drained: tick_drained.clone(),
    };
    let span = tracing::info_span!("shard", id = %shard, zone = %zone);
    let (ended_tx, tick_ended) = watch::channel(false);
    let tick_thread = std::thread::Builder::new()
        .name(format!("tick-{shard}"))
        .spawn(move || {
            // Tells the shell when the thread ends, by return or by panic.
            struct Ended(watch::Sender<bool>);
            impl Drop for Ended {
                fn drop(&mut self) {
                    let _ = self.0.send(true);
                }
            }
            let _ended = Ended(ended_tx);
            span.in_scope(|| TickLoop::new(setup).run())
        })
        .map_err(ShardError::Thread)?;

    let shared = Arc::new(NetShared {
        shard: shard.clone(),
        key,
        nonces: Mutex::new(Default::default()),
        metrics: metrics.clone(),
        sessions: sessions_tx,
        inputs: inputs_tx,
        tick,
        limits: tuning.limits.clone(),
        cluster: net_cluster,
        draining: draining.clone(),
    });
    let accept_task = tokio::spawn(tracing::Instrument::instrument(
        net::accept_loop(endpoint.clone(), shared, shutdown_rx.clone()),
        tracing::info_span!("shard", id = %shard, zone = %zone),
    ));
    let drain_switch = Arc::new(watch::channel(false).0);
    let admin_addr = match admin_socket {
        Some((listener, bound)) => {
            let listener = tokio::net::TcpListener::from_std(listener).map_err(|source| {
                ShardError::AdminBind {
                    addr: bound,
                    source,
                }
            })?;
            let epoch = Arc::new(AtomicU64::new(0));
            if let Some((_, rx)) = &lease_handle {
                let mut rx = rx.clone();
                let epoch = epoch.clone();
                workers.push(tokio::spawn(async move {
                    loop {
                        let e = rx.borrow_and_update().as_ref().map_or(0, |l| l.epoch);
                        epoch.store(e, Ordering::Relaxed);
                        if rx.changed().await.is_err() {
                            return;
                        }
                    }
                }));
            }
            let exporter = ShardCollector::new(vec![ShardSource {
                shard: shard.clone(),
                zone: zone.clone(),
                metrics: metrics.clone(),
                lease: lease_handle.as_ref().map(|(_, rx)| rx.clone()),
                status: status.clone(),
            }])
            .into_registry();
            let state = AdminState {
                shard: shard.clone(),
                zone: zone.clone(),
                lease_epoch: epoch,
                status: status.clone(),
                queries: admin_tx,
                exporter: Arc::new(exporter),
                cluster: lease_handle
                    .as_ref()
                    .map(|(store, rx)| admin::AdminCluster {
                        store: store.clone(),
                        lease: rx.clone(),
                    }),
            };
            let mut stop_admin = shutdown_rx.clone();
            let control = DrainControl {
                token: cfg.admin_token.clone(),
                requested: drain_switch.clone(),
            };
            tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop_admin.wait_for(|s| *s).await;
                };
                if let Err(e) = admin::serve_with_drain(listener, state, control, stopped).await {
                    warn!(error = %e, "admin endpoint stopped");
                }
            });
            info!(addr = %bound, "admin endpoint listening");
            Some(bound)
        }
        None => None,
    };
    let public_addr = cfg.public_addr.unwrap_or(local_addr);
    let drain_notice = link
        .as_ref()
        .map_or(Duration::ZERO, |l| l.handoff.neighbour_refresh * 2);
    let record = ShardRecord {
        id: shard.clone(),
        zone: zone.clone(),
        region: tuning.region.clone(),
        addr: public_addr.to_string(),
        cert_sha256: cert.sha256(),
        capacity: tuning.capacity,
        load: 0,
        draining: false,
        admin_addr: admin_addr.map(|a| a.to_string()),
    };
    info!(
        shard = %shard, zone = %zone, addr = %local_addr, region = %tuning.region, cert_sha256 = %to_hex(&cert.sha256()),
        tick_hz = tuning.sim.tick_hz, npcs = tuning.sim.npcs, "shard listening"
    );
    let mut handle = ShardHandle {
        local_addr,
        cert_sha256: cert.sha256(),
        shard,
        zone,
        status,
        metrics,
        stop,
        shutdown: shutdown_tx,
        tick_thread,
        tick_ended,
        heartbeat: None,
        record,
        accept_task,
        endpoint,
        lease: lease_handle,
        workers,
        admin_addr,
        draining,
        registry: None,
        drain_notice,
        tick_drain,
        tick_drained,
        lease_paused,
        checkpoints: checkpoint_tx,
        drain_deadline: cfg.drain_deadline(),
        drain_switch,
        lease_released: false,
    };
    if let Some(registry) = registry {
        handle.publish(registry);
    }
    Ok(handle)
}

/// Runs a shard until `shutdown` completes (the binary passes Ctrl-C / SIGTERM). With
/// `--redis`, waits for shared state (retrying up to [`STORE_CONNECT_DEADLINE`]), takes the
/// zone's lease and joins the world (`--world`, or the zone alone); without it, serves the zone
/// alone and unlisted.
pub async fn run(cfg: ShardConfig, shutdown: impl Future<Output = ()>) -> Result<(), ShardError> {
    let tuning = ShardTuning::from_config(&cfg)?;
    let mut shutdown = std::pin::pin!(shutdown);
    let handle = match &cfg.redis {
        Some(url) => {
            // The port first: a taken port is reported at once, not after waiting for Redis.
            cfg.validate()?;
            let socket = bind(&cfg, &tuning)?;
            let world = match &cfg.world {
                Some(path) => WorldMap::load(path)?,
                None => {
                    let bounds = cfg.bounds()?;
                    let standby = cfg.standby_zones()?;
                    let zone = match standby.as_slice() {
                        [] => ZoneId::new(cfg.zone.clone())
                            .map_err(|source| ConfigError::BadZone { source })?,
                        [one] => one.clone(),
                        more => return Err(ShardError::StandbyNeedsWorld { count: more.len() }),
                    };
                    single_zone_world(zone, bounds.min, bounds.max, &cfg.region)
                }
            };
            let store_cfg = StoreConfig::default();
            let store = tokio::select! {
                store = StoreHandle::open_with_retry(url, &store_cfg, STORE_CONNECT_DEADLINE) => store?,
                _ = &mut shutdown => return Ok(()),
            };
            let registry = Registry::new(store, RegistryConfig::default())
                .map_err(|e| ShardError::Registry(e.to_string()))?;
            let link = ClusterLink {
                registry,
                world: Arc::new(world),
                handoff: crate::handoff::HandoffConfig {
                    notice_distance: cfg.border_notice as f32,
                    ..crate::handoff::HandoffConfig::default()
                },
            };
            let registry = link.registry.clone();
            tokio::select! {
                handle = start_inner(&cfg, tuning, Some(registry), Some(link), Some(socket)) => handle?,
                _ = &mut shutdown => return Ok(()),
            }
        }
        None => {
            warn!(
                "no --redis: the shard serves its zone alone, unlisted (no lobby can route to it, no handoffs)"
            );
            start(&cfg, tuning, None).await?
        }
    };
    tokio::select! {
        _ = &mut shutdown => info!("shutdown signal: draining"),
        _ = handle.drain_requested() => info!("drain requested: draining"),
        _ = handle.tick_ended() => {
            let shard = handle.shard.clone();
            let _ = handle.shutdown().await;
            return Err(ShardError::TickDied { shard });
        }
    }
    let report = handle.drain().await;
    info!(
        ticks = report.status.tick,
        tick_p99_ms = report.status.total.p99_ms,
        overruns = report.status.overruns,
        players = report.players,
        within_deadline = report.within_deadline,
        "shard stopped"
    );
    Ok(())
}

/// The spec of `zone` in `world`, or why it is not there.
fn zone_spec(
    world: &WorldMap,
    zone: &ZoneId,
) -> Result<meridian_cluster::world::ZoneSpec, ShardError> {
    world
        .zone(zone)
        .cloned()
        .ok_or_else(|| ShardError::ZoneNotInMap {
            zone: zone.clone(),
            map: world.name.clone(),
            zones: world
                .zones
                .iter()
                .map(|z| z.id.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// A standby: publishes itself as draining (no lobby routes to it, no neighbour hands players
/// to it) and tries the leases of its zones every third of the lease TTL, until it wins one.
async fn wait_for_zone(
    registry: &Registry,
    zones: &[ZoneId],
    ttl: Duration,
    record: ShardRecord,
) -> Lease {
    let store = registry.store();
    let names: Vec<String> = zones.iter().map(ToString::to_string).collect();
    info!(zones = %names.join(","), "standing by");
    let mut last_error: Option<std::time::Instant> = None;
    loop {
        for zone in zones {
            match store.acquire_lease(zone, &record.id, ttl).await {
                Ok(AcquireOutcome::Acquired(lease)) => {
                    info!(zone = %zone, epoch = lease.epoch, "standby taking over the zone");
                    return lease;
                }
                Ok(AcquireOutcome::Held(holder)) => {
                    debug!(zone = %zone, holder = %holder.owner, "zone still held");
                }
                Err(e) => {
                    if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        last_error = Some(std::time::Instant::now());
                        warn!(error = %e, "standby cannot reach shared state; retrying");
                    }
                }
            }
        }
        let _ = registry.heartbeat(&record).await;
        tokio::time::sleep(ttl / 3).await;
    }
}

/// Takes over the players whose records still name an owner in the lease's zone (its previous
/// holder died or drained; transfers in flight excepted): claims each under the new epoch, so
/// that the old holder can write nothing more, and returns their checkpointed states to spawn.
/// A scan of shared state, run once when the zone's lease is taken.
async fn restore_players(store: &StoreHandle, lease: &Lease) -> Vec<(PlayerId, PlayerState)> {
    let owned = match store.owned_players().await {
        Ok(owned) => owned,
        Err(e) => {
            warn!(error = %e, "players of the zone not restored: shared state out of reach");
            return Vec::new();
        }
    };
    let mut restored = Vec::new();
    for rec in owned
        .into_iter()
        // A record with `from` set (epoch 0) is a transfer still waiting for this zone's
        // shard: its notice (or its client) brings it in.
        .filter(|r| {
            r.zone.as_ref() == Some(&lease.zone)
                && r.owner.is_some()
                && r.from.is_none()
                && r.epoch != 0
        })
    {
        match store.claim_player(rec.player, lease).await {
            Ok(ClaimOutcome::Claimed {
                state: Some(state), ..
            }) => restored.push((rec.player, state)),
            Ok(ClaimOutcome::Claimed { state: None, .. }) => {
                debug!(player = %rec.player, "claimed without a checkpoint: it spawns anew on join");
            }
            Ok(ClaimOutcome::Stale { epoch }) => {
                warn!(player = %rec.player, epoch, "player not restored: its record has a newer epoch");
            }
            Err(e) => warn!(player = %rec.player, error = %e, "player not restored"),
        }
    }
    if !restored.is_empty() {
        info!(
            players = restored.len(),
            epoch = lease.epoch,
            "players of the zone restored from their checkpoints"
        );
    }
    restored
}

/// The world of a shard started without a map: its zone alone, spawning at its centre.
fn single_zone_world(zone: ZoneId, min: [f32; 2], max: [f32; 2], region: &str) -> WorldMap {
    WorldMap {
        name: format!("zone {zone} alone"),
        regions: vec![region.to_owned()],
        zones: vec![meridian_cluster::world::ZoneSpec {
            id: zone,
            min,
            max,
            region: region.to_owned(),
            spawns: vec![[(min[0] + max[0]) / 2.0, (min[1] + max[1]) / 2.0]],
        }],
    }
}
