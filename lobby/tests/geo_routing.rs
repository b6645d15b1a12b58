//! Geo routing end to end through the link conditioner: three shards in-process registered in
//! the regions washington, frankfurt and tokyo; one client per region of the built-in latency
//! matrix, each on a conditioned endpoint that gives every shard the matrix round trip from
//! the client's home region (jitter ±20 % of the one-way delay, 1 % loss each way). Each client
//! joins through the lobby with the real client flow, which measures the shards itself; it
//! must be granted the shard whose region is nearest by the matrix, and its ticket must admit
//! it there through the same conditioned link.

mod common;

use common::*;
use meridian_client::conditioner::{
    ConditionerConfig, ConditionerStats, conditioned_endpoint, profiles_from_matrix,
};
use meridian_client::latency::{LatencyMatrix, builtin_matrix};
use meridian_client::lobby::{self as client_lobby, LobbyJoin};
use meridian_client::session::ShardSession;
use meridian_protocol::ShardId;
use meridian_protocol::quic::{CertSha256, QuicConfig, close_code};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Shards: id and region.
const SHARDS: [(&str, &str); 3] = [
    ("shard-west", "washington"),
    ("shard-center", "frankfurt"),
    ("shard-east", "tokyo"),
];
/// Jitter of every link, as a fraction of its one-way delay.
const JITTER: f64 = 0.2;
/// Loss of every link, each way.
const LOSS: f64 = 0.01;
/// Longest one client may take to join and be welcomed on its shard.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

/// What one client saw.
struct ClientRun {
    home: String,
    joined: LobbyJoin,
    /// Lobby connect → grant.
    join_time: Duration,
    /// Grant → welcome on the granted shard.
    welcome_time: Duration,
    conditioner: ConditionerStats,
}

/// One client in `home`: conditioned endpoint, join through the lobby, session on the granted
/// shard (welcome), leave.
async fn client(
    seed: u64,
    home: String,
    matrix: LatencyMatrix,
    shards: Vec<(SocketAddr, String)>,
    lobby: (SocketAddr, CertSha256),
) -> anyhow::Result<ClientRun> {
    let quic = QuicConfig::default();
    let links = profiles_from_matrix(&matrix, &home, shards, JITTER, LOSS)?;
    let (endpoint, conditioner) = conditioned_endpoint(
        loopback(),
        &quic,
        ConditionerConfig {
            links,
            seed,
            ..ConditionerConfig::default()
        },
    )?;
    let run = async {
        let started = Instant::now();
        let joined = client_lobby::join(
            &endpoint,
            lobby.0,
            lobby.1,
            &format!("player-{home}"),
            None,
            &quic,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{home}: join: {e}"))?;
        let join_time = started.elapsed();
        let session = ShardSession::connect(
            &endpoint,
            joined.addr,
            joined.grant.shard.cert_sha256,
            joined.grant.ticket.clone(),
            &quic,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{home}: session on {}: {e}", joined.grant.shard.shard))?;
        let welcome_time = started.elapsed() - join_time;
        anyhow::ensure!(
            session.welcome().player == joined.candidates.player,
            "{home}: welcomed as {} but joined as {}",
            session.welcome().player,
            joined.candidates.player
        );
        session.leave().await;
        Ok((joined, join_time, welcome_time))
    };
    let outcome = tokio::time::timeout(CLIENT_TIMEOUT, run).await;
    endpoint.close(close_code::DONE.into(), b"done");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    let (joined, join_time, welcome_time) =
        outcome.map_err(|_| anyhow::anyhow!("{home}: not done within {CLIENT_TIMEOUT:?}"))??;
    Ok(ClientRun {
        home,
        joined,
        join_time,
        welcome_time,
        conditioner: conditioner.stats(),
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_client_is_granted_the_shard_nearest_its_home_region() -> anyhow::Result<()> {
    init_logs();
    let world = World::start(memory_store().await?, &SHARDS, true).await?;
    with_world(world, async |w| {
        let matrix = builtin_matrix();
        let region_of = |id: &ShardId| {
            SHARDS
                .iter()
                .find(|(s, _)| *s == id.as_str())
                .map(|(_, r)| *r)
                .expect("invariant: a shard of this test")
        };
        let shards: Vec<(SocketAddr, String)> = w
            .shards
            .iter()
            .map(|s| (s.local_addr, region_of(&s.shard).to_owned()))
            .collect();
        let homes: Vec<String> = matrix.regions().map(str::to_owned).collect();
        assert!(homes.len() >= 8, "the built-in matrix has its regions");

        let started = Instant::now();
        let mut clients = JoinSet::new();
        for (i, home) in homes.iter().enumerate() {
            clients.spawn(client(
                i as u64 + 1,
                home.clone(),
                matrix.clone(),
                shards.clone(),
                (w.lobby.local_addr, w.lobby.cert_sha256),
            ));
        }
        let mut runs = Vec::new();
        while let Some(done) = clients.join_next().await {
            runs.push(done??);
        }
        let elapsed = started.elapsed();
        runs.sort_by(|a, b| a.home.cmp(&b.home));

        let mut report = String::new();
        let mut wrong = Vec::new();
        for run in &runs {
            let home = run.home.as_str();
            let nearest = SHARDS
                .iter()
                .map(|(_, region)| (*region, matrix.try_rtt(home, region).expect("known region")))
                .min_by_key(|(_, rtt)| *rtt)
                .map(|(region, _)| region)
                .expect("invariant: three shards");
            let granted = region_of(&run.joined.grant.shard.shard);
            let _ = write!(
                report,
                "{home:>10} → {granted:<10} (nearest {nearest:<10}) join {:>6.0} ms, welcome {:>5.0} ms, lost out/in {}/{}; measured vs matrix:",
                ms(run.join_time),
                ms(run.welcome_time),
                run.conditioner.outbound.dropped_loss,
                run.conditioner.inbound.dropped_loss,
            );
            for (shard, measured) in &run.joined.rtts {
                let region = region_of(shard);
                let want = matrix.try_rtt(home, region).expect("known region");
                let _ = write!(report, " {region}={:.1}/{:.0}", ms(*measured), ms(want));
            }
            report.push('\n');
            if granted != nearest {
                wrong.push(format!("{home}: granted {granted}, nearest is {nearest}"));
            }
        }
        println!("{} clients in {elapsed:?}:\n{report}", runs.len());

        assert_eq!(runs.len(), homes.len(), "every client joined");
        assert!(wrong.is_empty(), "misrouted: {wrong:?}\n{report}");
        for run in &runs {
            let home = run.home.as_str();
            assert_eq!(
                run.joined.rtts.len(),
                SHARDS.len(),
                "{home} measured every shard\n{report}"
            );
            for (shard, measured) in &run.joined.rtts {
                // Each way is delayed by at least (1 - jitter) of half the matrix round trip,
                // released at most 0.5 ms early: no measurement can beat that.
                let want = matrix
                    .try_rtt(home, region_of(shard))
                    .expect("known region");
                let floor = want.mul_f64(1.0 - JITTER).saturating_sub(Duration::from_millis(1));
                assert!(
                    *measured >= floor,
                    "{home} measured {shard} at {measured:?}, below the conditioner's floor {floor:?}\n{report}"
                );
            }
            assert!(
                run.conditioner.outbound.delayed > 0 && run.conditioner.inbound.delayed > 0,
                "{home}: the traffic went through the conditioner: {:?}",
                run.conditioner
            );
        }
        let m = w.lobby.metrics();
        assert_eq!(
            m.grants.load(std::sync::atomic::Ordering::Relaxed),
            homes.len() as u64
        );
        Ok(())
    })
    .await
}
