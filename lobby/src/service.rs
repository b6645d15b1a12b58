//! The lobby's QUIC service. One bidirectional stream per join:
//!
//! 1. hello: version check, player name checked, profile loaded (created on first visit);
//!    answered with the live shards to measure;
//! 2. join request: the client's round trips, checked; the routing policy picks a shard; the
//!    answer is a grant with a signed single-use join ticket and a long-lived resume ticket.
//!
//! A hello with a valid resume ticket names its player without the name. If that player is
//! still owned in a zone (its shard died, drained or lost the zone), only the shard holding
//! the zone's lease now is offered ([`routing::resume_shards`]); while no live shard holds it
//! (a failover in progress) the client is told to retry after a delay. A player owned nowhere
//! is routed like a new join.
//!
//! Every decision is logged with the candidates and their round trips. Without shared state
//! (Redis not reachable yet, or failing) or without an eligible shard, the client gets a
//! refusal with a reason and a retry delay, never a hang.

use crate::routing::{self, Measured, RouteError, RoutingConfig, ShardView};
use meridian_cluster::metrics::{StoreOp, StoreOpMetrics};
use meridian_cluster::ownership::Ownership;
use meridian_cluster::store::{LiveShard, Store, StoreHandle};
use meridian_protocol::codec::BoundedVec;
use meridian_protocol::handshake::{self, HandshakeError, RejectMsg, RejectReason};
use meridian_protocol::lobby::{
    CandidatesMsg, JoinGrantMsg, LobbyHelloMsg, LobbyMsg, LobbyRequestMsg, MAX_CANDIDATES,
    ProfileMsg, ShardCandidateMsg, validate_player_name,
};
use meridian_protocol::quic::{self, CertSha256, CertificateMaterial, QuicConfig, QuicSetupError};
use meridian_protocol::stream;
use meridian_protocol::ticket::{TicketClaims, TicketKey, TicketKind, random_nonce, to_hex};
use meridian_protocol::{PlayerId, ShardId};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{Semaphore, watch};
use tracing::{Instrument, debug, info, info_span, warn};

/// Settings of the service beyond its configuration file.
#[derive(Clone, Debug)]
pub struct LobbyTuning {
    /// The routing policy's margins.
    pub routing: RoutingConfig,
    /// How long a join ticket is valid.
    pub ticket_ttl: Duration,
    /// How long a resume ticket is valid (reusable meanwhile: it proves who the player is, it
    /// admits to no shard by itself).
    pub resume_ticket_ttl: Duration,
    /// Largest frame accepted.
    pub max_frame: usize,
    /// How long one join may take end to end (the client measures round trips meanwhile).
    pub join_timeout: Duration,
    /// Most simultaneous connections.
    pub max_connections: usize,
    /// Delay suggested to refused clients.
    pub retry_after: Duration,
    /// QUIC transport.
    pub quic: QuicConfig,
}

impl Default for LobbyTuning {
    fn default() -> Self {
        Self {
            routing: RoutingConfig::default(),
            ticket_ttl: Duration::from_secs(30),
            resume_ticket_ttl: DEFAULT_RESUME_TICKET_TTL,
            max_frame: meridian_protocol::frame::DEFAULT_MAX_FRAME,
            join_timeout: Duration::from_secs(20),
            max_connections: 10_000,
            retry_after: Duration::from_secs(1),
            quic: QuicConfig::default(),
        }
    }
}

/// Default [`LobbyTuning::resume_ticket_ttl`]: 30 minutes.
pub const DEFAULT_RESUME_TICKET_TTL: Duration = Duration::from_secs(30 * 60);

/// Counters of the lobby.
#[derive(Debug, Default)]
pub struct LobbyMetrics {
    /// Hellos answered with candidates.
    pub hellos: AtomicU64,
    /// Grants issued.
    pub grants: AtomicU64,
    /// Refusals: wrong protocol version.
    pub rejected_version: AtomicU64,
    /// Refusals: malformed hello or request.
    pub rejected_malformed: AtomicU64,
    /// Refusals: bad player name.
    pub rejected_name: AtomicU64,
    /// Refusals: bad resume ticket.
    pub rejected_ticket: AtomicU64,
    /// Refusals: shared state unavailable.
    pub rejected_unavailable: AtomicU64,
    /// Refusals: no eligible shard.
    pub rejected_no_shard: AtomicU64,
    /// Hellos with a valid resume ticket of a player still owned in a zone, offered that
    /// zone's lease holder.
    pub resumed_to_zone: AtomicU64,
    /// Refusals of such hellos because no live shard holds the zone now (also counted in
    /// `rejected_unavailable`).
    pub resume_no_holder: AtomicU64,
    /// Routing decisions, by outcome.
    pub routing: RoutingCounts,
    /// Calls to shared state, per operation.
    pub store_ops: StoreOpMetrics,
}

/// Routing decisions of the lobby, by outcome.
#[derive(Debug, Default)]
pub struct RoutingCounts {
    /// A shard was chosen.
    pub routed: AtomicU64,
    /// No candidate was measured by the client.
    pub none_measured: AtomicU64,
    /// Every candidate was full.
    pub all_full: AtomicU64,
    /// No shard was live.
    pub no_shards: AtomicU64,
    /// Every live shard was draining.
    pub all_draining: AtomicU64,
}

impl RoutingCounts {
    /// The counter of the refusal `e`.
    pub fn refused(&self, e: &RouteError) -> &AtomicU64 {
        match e {
            RouteError::NoneMeasured => &self.none_measured,
            RouteError::AllFull => &self.all_full,
            RouteError::NoShards => &self.no_shards,
            RouteError::AllDraining => &self.all_draining,
        }
    }
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Why the lobby could not start.
#[derive(Debug, thiserror::Error)]
pub enum LobbyError {
    /// Certificates or transport settings were refused.
    #[error(transparent)]
    Quic(#[from] QuicSetupError),
    /// The UDP socket could not be bound.
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

struct Shared {
    key: TicketKey,
    store: watch::Receiver<Option<StoreHandle>>,
    tuning: LobbyTuning,
    metrics: Arc<LobbyMetrics>,
}

/// A running lobby.
pub struct LobbyHandle {
    /// The bound address.
    pub local_addr: SocketAddr,
    /// SHA-256 of its certificate (clients pin it).
    pub cert_sha256: CertSha256,
    metrics: Arc<LobbyMetrics>,
    shutdown: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
    endpoint: quinn::Endpoint,
}

impl LobbyHandle {
    /// The lobby's counters.
    pub fn metrics(&self) -> &LobbyMetrics {
        &self.metrics
    }

    /// The lobby's counters, shared (for an admin endpoint).
    pub fn shared_metrics(&self) -> Arc<LobbyMetrics> {
        self.metrics.clone()
    }

    /// Stops accepting, lets joins in progress end (bounded), closes.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.accept.await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        self.endpoint
            .close(quic::close_code::SHUTDOWN.into(), b"shutting down");
    }
}

/// Starts the lobby on `listen` with certificate `cert`. `store` holds the shared state once it
/// is reachable; until then joins are refused as unavailable.
pub fn start(
    listen: SocketAddr,
    cert: &CertificateMaterial,
    key: TicketKey,
    store: watch::Receiver<Option<StoreHandle>>,
    tuning: LobbyTuning,
) -> Result<LobbyHandle, LobbyError> {
    let server_config = quic::server_config(cert, &tuning.quic)?;
    let bound =
        quic::bind_udp_socket(listen, tuning.quic.socket_buffer_bytes).map_err(|source| {
            LobbyError::Bind {
                addr: listen,
                source,
            }
        })?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config),
        bound.socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|source| LobbyError::Bind {
        addr: listen,
        source,
    })?;
    let local_addr = endpoint.local_addr().map_err(|source| LobbyError::Bind {
        addr: listen,
        source,
    })?;
    let metrics = Arc::new(LobbyMetrics::default());
    let shared = Arc::new(Shared {
        key,
        store,
        tuning,
        metrics: metrics.clone(),
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let accept = tokio::spawn(
        accept_loop(endpoint.clone(), shared, shutdown_rx).instrument(info_span!("lobby")),
    );
    info!(addr = %local_addr, cert_sha256 = %to_hex(&cert.sha256()), "lobby listening");
    Ok(LobbyHandle {
        local_addr,
        cert_sha256: cert.sha256(),
        metrics,
        shutdown,
        accept,
        endpoint,
    })
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(shared.tuning.max_connections));
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => i,
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
        };
        let Some(incoming) = incoming else { break };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            warn!(peer = %incoming.remote_address(), "connection refused: lobby at its connection limit");
            incoming.refuse();
            continue;
        };
        let shared = shared.clone();
        let peer = incoming.remote_address();
        tokio::spawn(
            async move {
                if let Ok(conn) = incoming.await {
                    let timeout = shared.tuning.join_timeout;
                    if tokio::time::timeout(timeout, serve(&conn, &shared))
                        .await
                        .is_err()
                    {
                        debug!("join took longer than {timeout:?}; closing");
                    }
                    conn.close(quic::close_code::DONE.into(), b"done");
                }
                drop(permit);
            }
            .instrument(info_span!("join", %peer)),
        );
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn reject(reason: RejectReason, detail: impl Into<String>) -> LobbyMsg {
    LobbyMsg::Rejected(RejectMsg {
        reason,
        detail: detail.into(),
    })
}

/// Serves one connection: one join per stream, streams one after another.
async fn serve(conn: &quinn::Connection, shared: &Shared) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let mut buf = Vec::new();
        let reply = join(&mut send, &mut recv, shared, &mut buf).await;
        if let Some(reply) = reply {
            let _ = stream::write_frame(&mut send, &reply, shared.tuning.max_frame, &mut buf).await;
        }
        let _ = send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
    }
}

/// One join; returns the last message to send (a grant or a refusal).
async fn join(
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    shared: &Shared,
    buf: &mut Vec<u8>,
) -> Option<LobbyMsg> {
    let m = &shared.metrics;
    let max = shared.tuning.max_frame;
    let retry_ms = shared.tuning.retry_after.as_millis() as u32;
    // 1. hello
    match stream::read_frame_payload(recv, max, buf).await {
        Ok(true) => {}
        Ok(false) => return None,
        Err(e) => {
            inc(&m.rejected_malformed);
            return Some(reject(RejectReason::Malformed, format!("hello: {e}")));
        }
    }
    match handshake::check_version(buf) {
        Ok(()) => {}
        Err(HandshakeError::VersionMismatch { theirs, .. }) => {
            inc(&m.rejected_version);
            return Some(LobbyMsg::Rejected(RejectMsg::version_mismatch(theirs)));
        }
        Err(e) => {
            inc(&m.rejected_malformed);
            return Some(reject(RejectReason::Malformed, e.to_string()));
        }
    }
    let hello: LobbyHelloMsg = match meridian_protocol::frame::decode_payload(buf, max) {
        Ok(h) => h,
        Err(e) => {
            inc(&m.rejected_malformed);
            return Some(reject(RejectReason::Malformed, format!("hello: {e}")));
        }
    };
    if let Err(e) = validate_player_name(&hello.name) {
        inc(&m.rejected_name);
        return Some(reject(RejectReason::BadName, e.to_string()));
    }
    let resumed: Option<PlayerId> = match &hello.resume {
        None => None,
        Some(t) => match shared.key.verify(t, TicketKind::Resume, None, now_ms()) {
            Ok(c) => Some(c.player),
            Err(e) => {
                inc(&m.rejected_ticket);
                return Some(reject(RejectReason::BadTicket, e.to_string()));
            }
        },
    };
    let Some(store) = shared.store.borrow().clone() else {
        inc(&m.rejected_unavailable);
        return Some(reject(
            RejectReason::Unavailable {
                retry_after_ms: retry_ms,
            },
            "shared state is not reachable yet",
        ));
    };
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        inc(&m.rejected_unavailable);
        warn!(error = %e, "{what} failed");
        reject(
            RejectReason::Unavailable {
                retry_after_ms: retry_ms,
            },
            format!("{what} unavailable: {e}"),
        )
    };
    let profile = match resumed {
        Some(player) => {
            m.store_ops
                .time(StoreOp::LoadProfile, store.load_profile(player))
                .await
        }
        None => m
            .store_ops
            .time(
                StoreOp::LoadOrCreateProfile,
                store.load_or_create_profile(&hello.name),
            )
            .await
            .map(|l| l.profile),
    };
    let profile = match profile {
        Ok(p) => p,
        Err(meridian_cluster::StoreError::NotFound { .. }) if resumed.is_some() => {
            inc(&m.rejected_ticket);
            return Some(reject(
                RejectReason::BadTicket,
                format!(
                    "resume ticket names player {}, who has no profile",
                    resumed.map_or(0, |p| p.0)
                ),
            ));
        }
        Err(e) => return Some(unavailable("profile", &e)),
    };
    let live = match m
        .store_ops
        .time(StoreOp::LiveShards, store.live_shards())
        .await
    {
        Ok(l) => l,
        Err(e) => return Some(unavailable("shard registry", &e)),
    };
    let views_of = |shards: &[&LiveShard]| -> Vec<ShardView> {
        shards
            .iter()
            .map(|s| ShardView {
                id: s.record.id.clone(),
                zone: s.record.zone.clone(),
                load: s.record.load,
                capacity: s.record.capacity,
                draining: s.record.draining,
                healthy: true,
            })
            .collect()
    };
    // A returning player still owned in a zone goes back to that zone's lease holder.
    let resume_zone = match resumed {
        None => None,
        Some(player) => match m
            .store_ops
            .time(StoreOp::GetOwnership, store.get_ownership(player))
            .await
        {
            Ok(Some(Ownership {
                owner: Some(_),
                zone: Some(zone),
                ..
            })) => Some(zone),
            Ok(_) => None,
            Err(e) => return Some(unavailable("ownership record", &e)),
        },
    };
    let offered: Vec<&LiveShard> = match &resume_zone {
        None => live
            .iter()
            .filter(|s| !s.record.draining)
            .take(MAX_CANDIDATES)
            .collect(),
        Some(zone) => {
            let holder = match m
                .store_ops
                .time(StoreOp::GetLease, store.get_lease(zone))
                .await
            {
                Ok(lease) => lease.map(|l| l.owner),
                Err(e) => return Some(unavailable("zone lease", &e)),
            };
            let all: Vec<&LiveShard> = live.iter().collect();
            match routing::resume_shards(&views_of(&all), zone, holder.as_ref()) {
                Ok(picked) => {
                    inc(&m.resumed_to_zone);
                    info!(player = %profile.player, %zone, holder = ?holder.as_ref().map(ShardId::as_str), "resume: routed to the zone's holder");
                    picked.into_iter().map(|i| all[i]).collect()
                }
                Err(e) => {
                    inc(&m.rejected_unavailable);
                    inc(&m.resume_no_holder);
                    info!(player = %profile.player, error = %e, "resume: no shard for the player's zone yet");
                    return Some(reject(
                        RejectReason::Unavailable {
                            retry_after_ms: retry_ms,
                        },
                        format!("player {} cannot resume yet: {e}", profile.player),
                    ));
                }
            }
        }
    };
    if offered.is_empty() {
        inc(&m.rejected_no_shard);
        return Some(reject(
            RejectReason::Unavailable {
                retry_after_ms: retry_ms,
            },
            "no shard is available",
        ));
    }
    let candidates: Vec<ShardCandidateMsg> = offered
        .iter()
        .map(|s| ShardCandidateMsg {
            shard: s.record.id.clone(),
            zone: s.record.zone.clone(),
            region: s.record.region.clone(),
            addr: s.record.addr.clone(),
            cert_sha256: s.record.cert_sha256,
        })
        .collect();
    let answer = LobbyMsg::Candidates(CandidatesMsg {
        player: profile.player,
        profile: ProfileMsg {
            name: profile.name.clone(),
            score: profile.score,
        },
        shards: BoundedVec::try_from_vec(candidates.clone())
            .expect("invariant: at most MAX_CANDIDATES were taken"),
    });
    if let Err(e) = stream::write_frame(send, &answer, max, buf).await {
        debug!(error = %e, "client went away");
        return None;
    }
    inc(&m.hellos);

    // 2. join request
    let request: LobbyRequestMsg = match stream::read_frame(recv, max, buf).await {
        Ok(Some(r)) => r,
        Ok(None) => return None,
        Err(e) => {
            inc(&m.rejected_malformed);
            return Some(reject(
                RejectReason::Malformed,
                format!("join request: {e}"),
            ));
        }
    };
    let LobbyRequestMsg::Join(request) = request;
    let rtts: Vec<Measured> = request
        .rtts
        .iter()
        .map(|r| Measured {
            shard: r.shard.clone(),
            rtt: Duration::from_micros(u64::from(r.rtt_us)),
        })
        .collect();
    let offered_ids: Vec<ShardId> = candidates.iter().map(|c| c.shard.clone()).collect();
    if let Err(e) = routing::check_measurements(&offered_ids, &rtts) {
        inc(&m.rejected_malformed);
        return Some(reject(RejectReason::Malformed, e.to_string()));
    }
    let views = views_of(&offered);
    let party = request.party.as_deref().and_then(|p| ShardId::new(p).ok());
    let decision = match routing::route(&views, &rtts, party.as_ref(), &shared.tuning.routing) {
        Ok(d) => {
            inc(&m.routing.routed);
            d
        }
        Err(e) => {
            inc(m.routing.refused(&e));
            // A returning player whose zone's holder did not answer its pings: the holder may
            // be restarting; the client is told to come back rather than that it misbehaved.
            let resume_unmeasured = e == RouteError::NoneMeasured && resume_zone.is_some();
            inc(if resume_unmeasured {
                &m.rejected_unavailable
            } else if e == RouteError::NoneMeasured {
                &m.rejected_malformed
            } else {
                &m.rejected_no_shard
            });
            let reason = match e {
                RouteError::NoneMeasured if resume_unmeasured => RejectReason::Unavailable {
                    retry_after_ms: retry_ms,
                },
                RouteError::NoneMeasured => RejectReason::Malformed,
                RouteError::AllFull => RejectReason::Full,
                RouteError::NoShards | RouteError::AllDraining => RejectReason::Unavailable {
                    retry_after_ms: retry_ms,
                },
            };
            info!(player = %profile.player, error = %e, "no shard for player");
            return Some(reject(reason, e.to_string()));
        }
    };
    let measured: Vec<String> = rtts
        .iter()
        .map(|r| format!("{}={:.1}ms", r.shard, r.rtt.as_secs_f64() * 1000.0))
        .collect();
    info!(
        player = %profile.player, shard = %decision.shard, rtt_ms = decision.rtt.as_secs_f64() * 1000.0,
        reason = ?decision.reason, candidates = %measured.join(","), "routed"
    );
    let Some(chosen) = candidates.into_iter().find(|c| c.shard == decision.shard) else {
        return Some(reject(
            RejectReason::Malformed,
            "routing chose a shard that was not offered",
        ));
    };
    let claims = TicketClaims {
        kind: TicketKind::Join,
        player: profile.player,
        shard: chosen.shard.clone(),
        zone: chosen.zone.clone(),
        expires_at_ms: now_ms() + shared.tuning.ticket_ttl.as_millis() as u64,
        nonce: random_nonce(),
    };
    let resume_claims = TicketClaims {
        kind: TicketKind::Resume,
        player: profile.player,
        shard: chosen.shard.clone(),
        zone: chosen.zone.clone(),
        expires_at_ms: now_ms() + shared.tuning.resume_ticket_ttl.as_millis() as u64,
        nonce: random_nonce(),
    };
    let (ticket, resume) = match (shared.key.sign(claims), shared.key.sign(resume_claims)) {
        (Ok(t), Ok(r)) => (t, r),
        (Err(e), _) | (_, Err(e)) => return Some(reject(RejectReason::Malformed, e.to_string())),
    };
    inc(&m.grants);
    Some(LobbyMsg::Grant(JoinGrantMsg {
        shard: chosen,
        ticket,
        resume,
    }))
}

/// Why `meridian lobby` could not run.
#[derive(Debug, thiserror::Error)]
pub enum LobbyRunError {
    /// The service could not start.
    #[error(transparent)]
    Start(#[from] LobbyError),
    /// The ticket key is missing or malformed.
    #[error("ticket key: {0}")]
    TicketKey(String),
    /// No shared state was configured.
    #[error("the lobby needs --redis: it finds the shards in the shared registry")]
    NoStore,
    /// The admin endpoint could not be bound.
    #[error("cannot bind the admin endpoint on {addr}: {source}")]
    AdminBind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Runs `meridian lobby` until `shutdown` completes. Shared state is connected in the
/// background with backoff (each attempt logged); until it is reachable joins are refused as
/// unavailable with a retry delay.
pub async fn run(
    cfg: crate::config::LobbyConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), LobbyRunError> {
    let url = cfg.redis.clone().ok_or(LobbyRunError::NoStore)?;
    let key = TicketKey::from_hex(cfg.ticket_key.as_deref().unwrap_or_default())
        .map_err(|e| LobbyRunError::TicketKey(e.to_string()))?;
    let cert = match (&cfg.cert, &cfg.key) {
        (Some(c), Some(k)) if !cfg.dev_cert => {
            CertificateMaterial::load_pem(c, k).map_err(LobbyError::from)?
        }
        _ => {
            CertificateMaterial::generate_dev(&["localhost", "lobby"]).map_err(LobbyError::from)?
        }
    };
    let tuning = LobbyTuning {
        max_frame: cfg.max_frame_bytes as usize,
        quic: QuicConfig {
            keep_alive_ms: cfg.keep_alive_ms,
            idle_timeout_ms: cfg.idle_timeout_ms,
            ..QuicConfig::default()
        },
        ..LobbyTuning::default()
    };
    let (store_tx, store_rx) = watch::channel(None);
    let connector = tokio::spawn(async move {
        let store_cfg = meridian_cluster::store::StoreConfig::default();
        loop {
            match StoreHandle::open_with_retry(&url, &store_cfg, Duration::from_secs(60)).await {
                Ok(store) => {
                    info!(backend = store.backend(), "shared state connected");
                    let _ = store_tx.send(Some(store));
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "shared state still unreachable; joins are refused as unavailable; retrying")
                }
            }
        }
    });
    let admin_store = store_rx.clone();
    let handle = start(cfg.listen, &cert, key, store_rx, tuning)?;
    let (stop_admin, admin_stopped) = watch::channel(false);
    if let Some(addr) = cfg.admin_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| LobbyRunError::AdminBind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| LobbyRunError::AdminBind { addr, source })?;
        let map = crate::map::MapSource::start(
            admin_store.clone(),
            None,
            crate::map::DEFAULT_POLL_INTERVAL,
        );
        let state = crate::admin::LobbyAdminState::new(
            handle.local_addr,
            admin_store,
            handle.shared_metrics(),
        );
        let mut stopped = admin_stopped;
        let map_stop = map.clone();
        tokio::spawn(async move {
            let stop = async move {
                let _ = stopped.wait_for(|s| *s).await;
                // Ends the map's event streams, which would keep the shutdown waiting.
                map_stop.stop();
            };
            if let Err(e) =
                crate::admin::serve(listener, state, crate::map::router(map), stop).await
            {
                warn!(error = %e, "admin endpoint stopped");
            }
        });
        info!(addr = %bound, "admin endpoint listening");
    }
    shutdown.await;
    info!("shutting down");
    let _ = stop_admin.send(true);
    connector.abort();
    handle.shutdown().await;
    Ok(())
}
