//! Shared by the lobby's integration tests: a world on loopback — a store, shards started
//! in-process and published in its registry, the lobby — the real client flow through it, and
//! raw lobby streams for bad input. Ports come from the OS; every wait is bounded.

// Each test binary uses a different subset of these helpers; `expect` would fail in the binary
// that uses them all.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use anyhow::{Context, bail};
use futures::FutureExt as _;
use meridian_client::lobby::{self as client_lobby, LobbyJoin, LobbyJoinError};
use meridian_client::session::{ShardSession, client_endpoint, connect_pinned};
use meridian_cluster::registry::{Registry, RegistryConfig};
use meridian_cluster::store::{Store as _, StoreConfig, StoreHandle};
use meridian_cluster::world::WorldMap;
use meridian_lobby::service::{self, LobbyHandle, LobbyTuning};
use meridian_protocol::ShardId;
use meridian_protocol::frame::DEFAULT_MAX_FRAME;
use meridian_protocol::handshake::RejectMsg;
use meridian_protocol::lobby::{LobbyHelloMsg, LobbyMsg};
use meridian_protocol::quic::{CertificateMaterial, QuicConfig, close_code};
use meridian_protocol::stream;
use meridian_protocol::ticket::TicketKey;
use meridian_shard::config::ShardConfig;
use meridian_shard::handoff::{ClusterLink, HandoffConfig};
use meridian_shard::server::{self as shard, ShardHandle, ShardTuning};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

/// The ticket key the lobby and every test shard share.
pub const KEY_HEX: &str = "6c6f6262792d746573742d6b65792d3030303030303030303030303030303031";

/// NPCs per test shard: a few, so snapshots have something in them without costing much.
pub const NPCS: u32 = 4;

/// Longest wait for one network step (a join, a welcome, a reply).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a poll looks again.
pub const POLL_EVERY: Duration = Duration::from_millis(25);

/// Installs a test-captured log subscriber once per test binary (`RUST_LOG` overrides the
/// default filter). Output is shown only for failing tests.
pub fn init_logs() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,meridian_lobby=info"));
    // Another test of the binary may have installed it already.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Loopback, port chosen by the OS.
pub fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// The shared ticket key.
pub fn key() -> TicketKey {
    TicketKey::from_hex(KEY_HEX).expect("invariant: the test key is 64 hex characters")
}

/// A fresh in-process store.
pub async fn memory_store() -> anyhow::Result<StoreHandle> {
    StoreHandle::open("memory", &StoreConfig::default())
        .await
        .context("opening the memory store")
}

/// Starts shard `id` in `region` on loopback with a few NPCs; published in `registry` when
/// given.
pub async fn start_shard(
    id: &str,
    region: &str,
    registry: Option<Registry>,
) -> anyhow::Result<ShardHandle> {
    let cfg = ShardConfig {
        id: id.to_owned(),
        zone: format!("zone-{id}"),
        listen: loopback(),
        zone_bounds: "0,0,200,200".to_owned(),
        npcs: NPCS,
        ticket_key: Some(KEY_HEX.to_owned()),
        dev_cert: true,
        ..ShardConfig::default()
    };
    let mut tuning =
        ShardTuning::from_config(&cfg).with_context(|| format!("tuning of shard {id}"))?;
    tuning.region = region.to_owned();
    tuning.sim.npcs = NPCS;
    shard::start(&cfg, tuning, registry)
        .await
        .with_context(|| format!("starting shard {id} ({region})"))
}

/// Two zones side by side, `a` (x 0..200) and `b` (x 200..400), for shards that hold zone
/// leases and own their players in shared state.
pub const PAIR_MAP: &str = r#"
name = "pair"
regions = ["here"]

[[zone]]
name = "a"
bounds = [0, 0, 200, 200]
region = "here"
spawn = [[100, 100]]

[[zone]]
name = "b"
bounds = [200, 0, 400, 200]
region = "here"
spawn = [[300, 100]]
"#;

/// The world of [`PAIR_MAP`].
pub fn pair_map() -> anyhow::Result<Arc<WorldMap>> {
    Ok(Arc::new(
        WorldMap::parse(PAIR_MAP, "pair.toml").context("parsing the pair map")?,
    ))
}

/// Starts shard `id` in the world of [`PAIR_MAP`] on `registry`: serving `zone` (it takes the
/// zone's lease first, refused while another shard holds it), or, with `standby` (the URL of
/// the Redis server `registry` is on: a standby's configuration needs one), waiting until
/// `zone`'s lease is free and then taking the zone over (this call returns only then).
pub async fn start_zone_shard(
    id: &str,
    zone: &str,
    registry: &Registry,
    standby: Option<&str>,
) -> anyhow::Result<ShardHandle> {
    let map = pair_map()?;
    let bounds = map
        .zone(&meridian_protocol::ZoneId::new(zone).context("zone id")?)
        .with_context(|| format!("zone {zone} is not in the pair map"))?
        .bounds_string();
    let cfg = ShardConfig {
        id: id.to_owned(),
        zone: zone.to_owned(),
        listen: loopback(),
        zone_bounds: bounds,
        npcs: NPCS,
        ticket_key: Some(KEY_HEX.to_owned()),
        dev_cert: true,
        region: "here".to_owned(),
        standby_for: standby.map(|_| zone.to_owned()),
        redis: standby.map(str::to_owned),
        ..ShardConfig::default()
    };
    let mut tuning =
        ShardTuning::from_config(&cfg).with_context(|| format!("tuning of shard {id}"))?;
    tuning.sim.npcs = NPCS;
    let link = ClusterLink {
        registry: registry.clone(),
        world: map,
        handoff: HandoffConfig::default(),
    };
    shard::start_in_world(&cfg, tuning, link)
        .await
        .with_context(|| format!("starting shard {id} on zone {zone}"))
}

/// Polls `f` every [`POLL_EVERY`] until it returns `Some`, for at most `timeout`; the error
/// names `what` was awaited.
pub async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("{what}: not within {timeout:?}");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// The store, its registry, shards published there, the lobby and a client endpoint.
pub struct World {
    /// The shared state.
    pub store: StoreHandle,
    /// The shard registry on `store` (default timing: heartbeat 1 s, TTL 3 s).
    pub registry: Registry,
    /// What the lobby sees of the store: `None` until a test sends it.
    pub store_tx: watch::Sender<Option<StoreHandle>>,
    /// The lobby.
    pub lobby: LobbyHandle,
    /// The shards, in the order given.
    pub shards: Vec<ShardHandle>,
    /// A plain (unconditioned) client endpoint on loopback.
    pub endpoint: quinn::Endpoint,
}

impl World {
    /// Starts shards `(id, region)` published in `store`'s registry and a lobby on loopback;
    /// the lobby reaches the store from the start when `lobby_reaches_store`, else it is given
    /// `None` (a test sends the store later). Returns once every shard is listed live.
    pub async fn start(
        store: StoreHandle,
        shards: &[(&str, &str)],
        lobby_reaches_store: bool,
    ) -> anyhow::Result<Self> {
        let registry = Registry::new(store.clone(), RegistryConfig::default())
            .context("registry with default timing")?;
        let mut handles = Vec::new();
        for (id, region) in shards {
            handles.push(start_shard(id, region, Some(registry.clone())).await?);
        }
        Self::assemble(store, registry, handles, lobby_reaches_store).await
    }

    /// Starts shards `(id, zone)` in the world of [`PAIR_MAP`] on `store` (each takes its
    /// zone's lease and owns the players it admits) and a lobby that reaches the store. Returns
    /// once every shard is listed live.
    pub async fn start_zones(store: StoreHandle, shards: &[(&str, &str)]) -> anyhow::Result<Self> {
        let registry = Registry::new(store.clone(), RegistryConfig::default())
            .context("registry with default timing")?;
        let mut handles = Vec::new();
        for (id, zone) in shards {
            handles.push(start_zone_shard(id, zone, &registry, None).await?);
        }
        Self::assemble(store, registry, handles, true).await
    }

    /// The lobby and the client endpoint beside shards already started.
    async fn assemble(
        store: StoreHandle,
        registry: Registry,
        handles: Vec<ShardHandle>,
        lobby_reaches_store: bool,
    ) -> anyhow::Result<Self> {
        let cert = CertificateMaterial::generate_dev(&["localhost", "lobby"])
            .context("lobby dev certificate")?;
        let (store_tx, store_rx) = watch::channel(lobby_reaches_store.then(|| store.clone()));
        let lobby = service::start(loopback(), &cert, key(), store_rx, LobbyTuning::default())
            .context("starting the lobby")?;
        let endpoint =
            client_endpoint(loopback(), &QuicConfig::default()).context("client endpoint")?;
        let world = Self {
            store,
            registry,
            store_tx,
            lobby,
            shards: handles,
            endpoint,
        };
        let want = world.shards.len();
        let store = world.store.clone();
        // The shards appear with their first heartbeat, which is sent at once.
        let listed = poll_until("every shard listed live", STEP_TIMEOUT, || {
            let store = store.clone();
            async move {
                let live = store.live_shards().await.context("listing live shards")?;
                Ok((live.len() >= want).then_some(()))
            }
        })
        .await;
        if let Err(e) = listed {
            world.stop().await;
            return Err(e);
        }
        Ok(world)
    }

    /// Stops everything it started: client endpoint, lobby, shards (each deregisters).
    pub async fn stop(self) {
        self.endpoint.close(close_code::DONE.into(), b"test over");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        self.lobby.shutdown().await;
        for s in self.shards {
            s.shutdown().await;
        }
    }

    /// The shard with id `id`.
    pub fn shard(&self, id: &str) -> &ShardHandle {
        self.shards
            .iter()
            .find(|s| s.shard.as_str() == id)
            .unwrap_or_else(|| panic!("no shard {id} in this world"))
    }

    /// The real client flow: `lobby::join` as `name` on the world's endpoint, bounded.
    pub async fn join(&self, name: &str) -> Result<LobbyJoin, LobbyJoinError> {
        tokio::time::timeout(
            STEP_TIMEOUT,
            client_lobby::join(
                &self.endpoint,
                self.lobby.local_addr,
                self.lobby.cert_sha256,
                name,
                None,
                &QuicConfig::default(),
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("join as {name:?} took longer than {STEP_TIMEOUT:?}"))
    }

    /// A raw QUIC connection to the lobby (certificate pinned), for hand-made frames.
    pub async fn raw_connection(&self) -> anyhow::Result<quinn::Connection> {
        connect_pinned(
            &self.endpoint,
            self.lobby.local_addr,
            self.lobby.cert_sha256,
            &QuicConfig::default(),
        )
        .await
        .context("connecting to the lobby")
    }

    /// The shards the lobby offers a hello as `name` right now (by id, in its order), or its
    /// refusal. One fresh connection; the join is abandoned after the candidates.
    pub async fn offered(&self, name: &str) -> anyhow::Result<Result<Vec<ShardId>, RejectMsg>> {
        let conn = self.raw_connection().await?;
        let (mut send, mut recv) = conn.open_bi().await.context("opening a lobby stream")?;
        let hello = LobbyHelloMsg {
            protocol_version: meridian_protocol::PROTOCOL_VERSION,
            name: name.to_owned(),
            resume: None,
        };
        let mut buf = Vec::new();
        stream::write_frame(&mut send, &hello, DEFAULT_MAX_FRAME, &mut buf)
            .await
            .context("sending the hello")?;
        let reply = read_reply(&mut recv).await;
        let _ = send.finish();
        conn.close(close_code::DONE.into(), b"polled");
        Ok(match reply? {
            LobbyMsg::Candidates(c) => Ok(c.shards.iter().map(|s| s.shard.clone()).collect()),
            LobbyMsg::Rejected(r) => Err(r),
            LobbyMsg::Grant(g) => bail!("a grant in answer to a hello: {g:?}"),
        })
    }
}

/// Runs `scenario` on `world`, then stops the world whether the scenario returned, failed or
/// panicked (a failed assertion), and passes its outcome on.
pub async fn with_world<F>(world: World, scenario: F) -> anyhow::Result<()>
where
    F: AsyncFnOnce(&mut World) -> anyhow::Result<()>,
{
    let mut world = world;
    let outcome = AssertUnwindSafe(scenario(&mut world)).catch_unwind().await;
    world.stop().await;
    match outcome {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Reads the lobby's next message on `recv`, bounded by [`STEP_TIMEOUT`].
pub async fn read_reply(recv: &mut quinn::RecvStream) -> anyhow::Result<LobbyMsg> {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        STEP_TIMEOUT,
        stream::read_frame::<LobbyMsg>(recv, DEFAULT_MAX_FRAME, &mut buf),
    )
    .await
    .context("no answer from the lobby in time")?
    .context("reading the lobby's answer")?;
    read.context("the lobby finished the stream without answering")
}

/// The refusal in `msg`; fails the test on anything else.
pub fn expect_rejected(msg: LobbyMsg) -> RejectMsg {
    match msg {
        LobbyMsg::Rejected(r) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The refusal in a join's outcome; fails the test on anything else.
pub fn expect_join_rejected(outcome: Result<LobbyJoin, LobbyJoinError>) -> RejectMsg {
    match outcome {
        Err(LobbyJoinError::Rejected(r)) => r,
        Err(other) => panic!("expected a refusal, got another error: {other}"),
        Ok(j) => panic!(
            "expected a refusal, got a grant for {} (candidates {:?})",
            j.grant.shard.shard, j.candidates
        ),
    }
}

/// Connects to the granted shard with the grant's ticket and waits (bounded) until the session
/// has a few snapshots that show the player's own entity. Inputs go out on every poll, so the
/// snapshots are acknowledged and deltas flow.
pub async fn play(endpoint: &quinn::Endpoint, joined: &LobbyJoin) -> anyhow::Result<ShardSession> {
    let mut session = ShardSession::connect(
        endpoint,
        joined.addr,
        joined.grant.shard.cert_sha256,
        joined.grant.ticket.clone(),
        &QuicConfig::default(),
    )
    .await
    .with_context(|| format!("session on granted shard {}", joined.grant.shard.shard))?;
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        session
            .send_input(0.0, 0.0, 0)
            .context("sending an input")?;
        let me = session.entity();
        if session.stats().snapshots >= 3 && session.with_world(|w| w.entity(me).is_some()) {
            return Ok(session);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "no snapshots showing entity {me:?} within {STEP_TIMEOUT:?}: {:?}",
                session.stats()
            );
        }
        // A little under the 30 Hz tick, so one input per poll is not a flood.
        tokio::time::sleep(Duration::from_millis(34)).await;
    }
}
