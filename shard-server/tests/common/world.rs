//! The two-zone world of the handoff tests: a redis-server (or a Redis Cluster), a registry,
//! the map, and shards started in it.

use super::KEY_HEX;
use meridian_cluster::registry::{Registry, RegistryConfig};
use meridian_cluster::store::{StoreConfig, StoreHandle};
use meridian_cluster::testing::RedisServer;
use meridian_cluster::world::WorldMap;
use meridian_protocol::{ShardId, ZoneId};
use meridian_shard::config::ShardConfig;
use meridian_shard::handoff::{ClusterLink, HandoffConfig};
use meridian_shard::server::{self, ShardHandle, ShardTuning};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Two zones side by side: `a` is x 0..200, `b` is x 200..400.
pub const MAP: &str = r#"
name = "pair"
regions = ["here"]

[[zone]]
name = "a"
bounds = [0, 0, 200, 200]
region = "here"
spawn = [[150, 100]]

[[zone]]
name = "b"
bounds = [200, 0, 400, 200]
region = "here"
spawn = [[250, 100]]
"#;

/// Shared state and the world map: what every shard of a test starts with.
#[derive(Clone)]
pub struct Cluster {
    pub store: StoreHandle,
    pub registry: Registry,
    pub world: Arc<WorldMap>,
}

impl Cluster {
    /// A fresh redis-server and the world of [`MAP`] on it.
    pub async fn start() -> (RedisServer, Self) {
        let redis = RedisServer::start().await.expect("redis-server starts");
        let cluster = Self::start_on(&redis.url()).await;
        (redis, cluster)
    }

    /// The world of [`MAP`] on the store at `url`: one Redis, or a Redis Cluster's comma
    /// separated node URLs (`RedisCluster::url`).
    pub async fn start_on(url: &str) -> Self {
        let store = StoreHandle::open(url, &StoreConfig::default())
            .await
            .expect("store");
        let registry = Registry::new(store.clone(), RegistryConfig::default()).expect("registry");
        let world = Arc::new(WorldMap::parse(MAP, "pair.toml").expect("map"));
        Self {
            store,
            registry,
            world,
        }
    }

    /// Starts `shard-<zone>` on `zone`, with an admin endpoint; `max_speed` of players, if
    /// given.
    pub async fn shard(
        &self,
        zone: &str,
        handoff: HandoffConfig,
        max_speed: Option<f32>,
    ) -> ShardHandle {
        let cfg = ShardConfig {
            id: format!("shard-{zone}"),
            zone: zone.into(),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            zone_bounds: self
                .world
                .zone(&zone_id(zone))
                .expect("zone in map")
                .bounds_string(),
            ticket_key: Some(KEY_HEX.into()),
            dev_cert: true,
            admin_listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
            region: "here".into(),
            ..ShardConfig::default()
        };
        let mut tuning = ShardTuning::from_config(&cfg).expect("tuning");
        tuning.sim.npcs = 0;
        tuning.sim.pickups = 0;
        if let Some(speed) = max_speed {
            tuning.sim.max_speed = speed;
        }
        let link = ClusterLink {
            registry: self.registry.clone(),
            world: self.world.clone(),
            handoff,
        };
        server::start_in_world(&cfg, tuning, link)
            .await
            .expect("shard starts in the world")
    }
}

/// Short grace periods and a quick neighbour refresh, so that a test settles in seconds.
pub fn handoff_config() -> HandoffConfig {
    HandoffConfig {
        arrival_grace: Duration::from_secs(1),
        handed_off_grace: Duration::from_secs(2),
        neighbour_refresh: Duration::from_millis(200),
        ..HandoffConfig::default()
    }
}

pub fn shard_id(name: &str) -> ShardId {
    ShardId::new(name).expect("shard id")
}

pub fn zone_id(name: &str) -> ZoneId {
    ZoneId::new(name).expect("zone id")
}
