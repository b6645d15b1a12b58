//! `meridian dev`: a whole local world in one process — the store, the lobby, three shards
//! (three zones side by side, each in a different datacenter region) and N bots that join
//! through the lobby and play. Prints a status line a second; with `--duration` stops by
//! itself and, with `--report`, writes the run report.

use crate::dev::DevConfig;
use meridian_client::bots::{self, BotsPlan, BotsProgress, GeoPlan};
use meridian_client::config::Scenario;
use meridian_client::latency;
use meridian_client::report::{Report, ShardReport};
use meridian_cluster::registry::{Registry, RegistryConfig};
use meridian_cluster::store::{StoreConfig, StoreHandle};
use meridian_lobby::service::{self as lobby, LobbyTuning};
use meridian_protocol::quic::CertificateMaterial;
use meridian_protocol::ticket::TicketKey;
use meridian_shard::config::ShardConfig;
use meridian_shard::server::{self as shard, ShardHandle, ShardTuning};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::sync::watch;
use tracing::info;

/// The dev world's zones: id, bounds, region.
pub const DEV_ZONES: [(&str, &str, &str); 3] = [
    ("west", "0,0,1000,1000", "washington"),
    ("center", "1000,0,2000,1000", "frankfurt"),
    ("east", "2000,0,3000,1000", "tokyo"),
];
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
    let store = StoreHandle::open(&cfg.store, &StoreConfig::default()).await?;
    info!(backend = store.backend(), "store open");
    // One key for the lobby and the shards of this process.
    let key_bytes: [u8; 32] = meridian_protocol::ticket::random_bytes();
    let key = TicketKey::from_bytes(&key_bytes);
    let key_hex = meridian_protocol::ticket::to_hex(&key_bytes);
    let registry = Registry::new(store.clone(), RegistryConfig::default())
        .map_err(|e| DevError::Setting(e.to_string()))?;

    let mut shards: Vec<ShardHandle> = Vec::new();
    for (zone, bounds, region) in DEV_ZONES {
        let scfg = ShardConfig {
            id: format!("shard-{zone}"),
            zone: zone.to_owned(),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            zone_bounds: bounds.to_owned(),
            tick_hz: cfg.tick_hz,
            npcs: cfg.npcs,
            ticket_key: Some(key_hex.clone()),
            dev_cert: true,
            ..ShardConfig::default()
        };
        let mut tuning = ShardTuning::from_config(&scfg)?;
        tuning.region = region.to_owned();
        shards.push(shard::start(&scfg, tuning, Some(registry.clone())).await?);
    }
    let cert = CertificateMaterial::generate_dev(&["localhost", "lobby"])
        .map_err(|e| DevError::Setting(e.to_string()))?;
    let (_store_tx, store_rx) = watch::channel(Some(store.clone()));
    let lobby = lobby::start(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        &cert,
        key,
        store_rx,
        LobbyTuning::default(),
    )?;
    // The shards appear in the registry with their first heartbeat.
    wait_for_registry(&registry, shards.len()).await;

    let geo = (cfg.scenario == Scenario::Geo).then(|| GeoPlan {
        matrix: latency::builtin_matrix(),
        home_regions: latency::builtin_matrix()
            .regions()
            .map(str::to_owned)
            .collect(),
        shards: shards
            .iter()
            .zip(DEV_ZONES)
            .map(|(s, (_, _, region))| (s.local_addr, region.to_owned()))
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
    };
    info!(lobby = %lobby.local_addr, bots = cfg.bots, scenario = cfg.scenario.as_str(), "dev world running");
    let (stop_tx, stop_rx) = watch::channel(false);
    let (progress_tx, progress_rx) = watch::channel(BotsProgress::default());
    let mut bots_task = tokio::spawn(bots::run(plan, stop_rx, progress_tx));
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
                let _ = stop_tx.send(true);
            }
            _ = status.tick() => println!("{}", status_line(&shards, &progress_rx.borrow())),
        }
    };
    let mut report = match result {
        Ok(r) => r?,
        Err(e) => return Err(DevError::Setting(format!("bots task failed: {e}"))),
    };
    report.tick_hz = u32::from(cfg.tick_hz);
    report.shards = shard_reports.unwrap_or_else(|| shards.iter().map(shard_report).collect());
    lobby.shutdown().await;
    for s in shards {
        s.shutdown().await;
    }
    println!(
        "joined {}/{}, join p99 {:.1} ms, snapshots/s mean {:.1}, disconnects {}, routing {}/{}",
        report.joined,
        report.bots,
        report.join_ms.p99,
        report.snapshots_per_s.mean,
        report.disconnects,
        report.routing.optimal,
        report.routing.total
    );
    if let Some(path) = &cfg.report {
        write_report(path, &report)?;
        info!(path = %path.display(), "report written");
    }
    Ok(())
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
    ShardReport {
        id: s.shard.to_string(),
        zone: s.zone.to_string(),
        players: u32::try_from(st.players).unwrap_or(u32::MAX),
        entities: u32::try_from(st.entities).unwrap_or(u32::MAX),
        tick_ms_p50: st.total.p50_ms,
        tick_ms_p99: st.total.p99_ms,
        tick_ms_max: st.total.max_ms,
        overruns: st.overruns,
    }
}

fn status_line(shards: &[ShardHandle], p: &BotsProgress) -> String {
    let per_shard: Vec<String> = shards
        .iter()
        .map(|s| {
            let st = s.status();
            format!("{} {}p p99 {:.2}ms", s.zone, st.players, st.recent.p99_ms)
        })
        .collect();
    format!(
        "{} | bots started {} playing {} join failures {} disconnects {}",
        per_shard.join(" | "),
        p.started,
        p.playing,
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
