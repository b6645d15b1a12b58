//! A running shard: the QUIC endpoint and its accept loop on the async runtime, the tick
//! thread beside it. [`start`] returns a [`ShardHandle`] (tests start shards in-process with
//! it); [`run`] is the `meridian shard` entry point.

use crate::config::{ConfigError, ShardConfig};
use crate::metrics::{ShardMetrics, TickStatus};
use crate::net::{self, NetLimits, NetShared};
use crate::replication::ReplicationConfig;
use crate::sim::{Sim, SimConfig, SimConfigError};
use crate::tick::{TickLoop, TickSetup};
use meridian_cluster::registry::{Registry, RegistryConfig};
use meridian_cluster::store::{ShardRecord, StoreConfig, StoreHandle};
use meridian_protocol::quic::{self, CertSha256, CertificateMaterial, QuicConfig, QuicSetupError};
use meridian_protocol::ticket::{TicketKey, TicketKeyError, to_hex};
use meridian_protocol::{ShardId, ZoneId};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

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
            region: "local".to_owned(),
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
        let mut stopped = self.shutdown.subscribe();
        self.heartbeat = Some(registry.spawn_heartbeat(
            move || {
                let players = status.lock().map(|s| s.players).unwrap_or(0);
                ShardRecord {
                    load: u32::try_from(players).unwrap_or(u32::MAX),
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

    /// Stops the shard: the tick thread kicks every client with a shutdown reason and stops,
    /// the endpoint stops accepting and closes. Returns the final tick status.
    pub async fn shutdown(self) -> TickStatus {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.shutdown.send(true);
        let thread = self.tick_thread;
        let status = tokio::task::spawn_blocking(move || thread.join())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let _ = self.accept_task.await;
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
    cfg.validate()?;
    let key = TicketKey::from_hex(
        cfg.ticket_key
            .as_deref()
            .ok_or(ShardError::MissingTicketKey)?,
    )?;
    let shard = ShardId::new(cfg.id.clone()).map_err(|source| ConfigError::BadId { source })?;
    let zone = ZoneId::new(cfg.zone.clone()).map_err(|source| ConfigError::BadZone { source })?;
    let cert = match (&cfg.cert, &cfg.key) {
        (Some(c), Some(k)) if !cfg.dev_cert => CertificateMaterial::load_pem(c, k)?,
        _ => CertificateMaterial::generate_dev(&["localhost", shard.as_str()])?,
    };
    let server_config = quic::server_config(&cert, &tuning.quic)?;
    let bound =
        quic::bind_udp_socket(cfg.listen, tuning.quic.socket_buffer_bytes).map_err(|source| {
            ShardError::Bind {
                addr: cfg.listen,
                source,
            }
        })?;
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

    let sim = Sim::new(tuning.sim.clone())?;
    let metrics = Arc::new(ShardMetrics::default());
    let status = Arc::new(Mutex::new(TickStatus::default()));
    let tick = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (sessions_tx, sessions_rx) = mpsc::channel(4096);
    let (inputs_tx, inputs_rx) = mpsc::channel(65_536);
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
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let accept_task = tokio::spawn(tracing::Instrument::instrument(
        net::accept_loop(endpoint.clone(), shared, shutdown_rx),
        tracing::info_span!("shard", id = %shard, zone = %zone),
    ));
    let public_addr = cfg.public_addr.unwrap_or(local_addr);
    let record = ShardRecord {
        id: shard.clone(),
        zone: zone.clone(),
        region: tuning.region.clone(),
        addr: public_addr.to_string(),
        cert_sha256: cert.sha256(),
        capacity: tuning.capacity,
        load: 0,
        draining: false,
        admin_addr: None,
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
    };
    if let Some(registry) = registry {
        handle.publish(registry);
    }
    Ok(handle)
}

/// Runs a shard until `shutdown` completes (the binary passes Ctrl-C / SIGTERM).
pub async fn run(cfg: ShardConfig, shutdown: impl Future<Output = ()>) -> Result<(), ShardError> {
    let tuning = ShardTuning::from_config(&cfg)?;
    let mut handle = start(&cfg, tuning, None).await?;
    let mut shutdown = std::pin::pin!(shutdown);
    match &cfg.redis {
        Some(url) => {
            // Serve at once; appear in the registry once shared state is reachable.
            let store_cfg = StoreConfig::default();
            let store = tokio::select! {
                store = StoreHandle::open_with_retry(url, &store_cfg, STORE_CONNECT_DEADLINE) => store,
                _ = &mut shutdown => {
                    handle.shutdown().await;
                    return Ok(());
                }
            };
            match store.map_err(ShardError::from).and_then(|store| {
                Registry::new(store, RegistryConfig::default())
                    .map_err(|e| ShardError::Registry(e.to_string()))
            }) {
                Ok(registry) => handle.publish(registry),
                Err(e) => {
                    handle.shutdown().await;
                    return Err(e);
                }
            }
        }
        None => warn!(
            "no --redis: the shard is not published in a registry, so no lobby can route to it"
        ),
    }
    tokio::select! {
        _ = &mut shutdown => {}
        _ = handle.tick_ended() => {
            let shard = handle.shard.clone();
            let _ = handle.shutdown().await;
            return Err(ShardError::TickDied { shard });
        }
    }
    info!("shutting down");
    let status = handle.shutdown().await;
    info!(
        ticks = status.tick,
        tick_p99_ms = status.total.p99_ms,
        overruns = status.overruns,
        "shard stopped"
    );
    Ok(())
}
