//! The link conditioner with real quinn on loopback: a client over a conditioned socket talks to
//! small echo servers. Round trips measured with datagram pings match the latency matrix from
//! the client's home region; loss drops the configured fraction; a partition stops traffic and
//! healing restores it; a bounded queue drops and counts; a QUIC stream still gets through loss
//! (QUIC retransmits).

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use meridian_client::conditioner::{
    ConditionerConfig, ConditionerHandle, Jitter, LinkProfile, conditioned_endpoint,
    profiles_from_matrix,
};
use meridian_client::latency::LatencyMatrix;
use meridian_protocol::quic::{self, CertSha256, CertificateMaterial, QuicConfig};
use quinn::congestion::{Controller, ControllerFactory};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

const MATRIX: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/data/rtt-10-regions.csv"
);

fn loopback() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

/// A quinn server on loopback that echoes datagrams and bidirectional streams, and counts the
/// datagrams it receives.
struct EchoServer {
    _endpoint: quinn::Endpoint,
    addr: SocketAddr,
    pin: CertSha256,
    /// Datagrams received.
    datagrams: Arc<AtomicU64>,
    /// Datagrams of at least [`BULK_SIZE`] bytes received (not pings).
    bulk: Arc<AtomicU64>,
}

/// Size of the datagrams of the loss test: one per QUIC packet (at most ~1450 bytes).
const BULK_SIZE: usize = 1000;

/// The round-trip test measures time on a loaded machine: it runs alone (write), the other
/// tests of this file together (read), so their bulk transfers do not steal its CPU.
static TIMING: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

async fn echo_server() -> Result<EchoServer> {
    let cert = CertificateMaterial::generate_dev(&["localhost"])?;
    let cfg = QuicConfig::default();
    let bound = quic::bind_udp_socket(loopback(), cfg.socket_buffer_bytes)?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(quic::server_config(&cert, &cfg)?),
        bound.socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    let addr = endpoint.local_addr()?;
    let datagrams = Arc::new(AtomicU64::new(0));
    let bulk = Arc::new(AtomicU64::new(0));
    let (accepting, count, bulk_count) = (endpoint.clone(), datagrams.clone(), bulk.clone());
    tokio::spawn(async move {
        while let Some(incoming) = accepting.accept().await {
            let (count, bulk_count) = (count.clone(), bulk_count.clone());
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                let streams = conn.clone();
                tokio::spawn(async move {
                    while let Ok((mut send, mut recv)) = streams.accept_bi().await {
                        tokio::spawn(async move {
                            if let Ok(data) = recv.read_to_end(1 << 20).await {
                                let _ = send.write_all(&data).await;
                                let _ = send.finish();
                            }
                        });
                    }
                });
                while let Ok(d) = conn.read_datagram().await {
                    count.fetch_add(1, Ordering::Relaxed);
                    if d.len() >= BULK_SIZE {
                        bulk_count.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = conn.send_datagram(d);
                }
            });
        }
    });
    Ok(EchoServer {
        _endpoint: endpoint,
        addr,
        pin: cert.sha256(),
        datagrams,
        bulk,
    })
}

async fn client(cfg: ConditionerConfig) -> Result<(quinn::Endpoint, ConditionerHandle)> {
    Ok(conditioned_endpoint(
        loopback(),
        &QuicConfig::default(),
        cfg,
    )?)
}

async fn connect(endpoint: &quinn::Endpoint, server: &EchoServer) -> Result<quinn::Connection> {
    let cfg = quic::client_config(server.pin, &QuicConfig::default())?;
    connect_with(endpoint, server, cfg).await
}

async fn connect_with(
    endpoint: &quinn::Endpoint,
    server: &EchoServer,
    cfg: quinn::ClientConfig,
) -> Result<quinn::Connection> {
    endpoint
        .connect_with(cfg, server.addr, quic::SERVER_NAME)?
        .await
        .with_context(|| format!("connecting to {}", server.addr))
}

/// A congestion controller with a fixed 4 MiB window: congestion control off, so a count of
/// datagrams measures the conditioner's loss rather than QUIC's reaction to it (with 30% loss
/// each way, NewReno falls to its two-packet minimum window and probe timeouts back off to
/// seconds).
#[derive(Clone, Debug)]
struct FixedWindow;

impl FixedWindow {
    const WINDOW: u64 = 4 << 20;
}

impl Controller for FixedWindow {
    fn on_congestion_event(
        &mut self,
        _: std::time::Instant,
        _: std::time::Instant,
        _: bool,
        _: u64,
    ) {
    }

    fn on_mtu_update(&mut self, _: u16) {}

    fn window(&self) -> u64 {
        Self::WINDOW
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(self.clone())
    }

    fn initial_window(&self) -> u64 {
        Self::WINDOW
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

impl ControllerFactory for FixedWindow {
    fn build(self: Arc<Self>, _: std::time::Instant, _: u16) -> Box<dyn Controller> {
        Box::new(Self)
    }
}

/// Sequence numbers of pings, unique in the process, so a late echo never matches a new ping.
static NEXT_SEQ: AtomicU64 = AtomicU64::new(0);

/// Pings every 20 ms until one comes back. Once the server has echoed a datagram its handshake
/// is complete: quinn servers discard 1-RTT packets that arrive before the client's Finished,
/// which jitter can reorder, so a datagram sent in the very first round trip may be lost as on
/// a real network.
async fn warm_up(conn: &quinn::Connection, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let seq = NEXT_SEQ.fetch_add(1, Ordering::Relaxed);
                conn.send_datagram(Bytes::copy_from_slice(&seq.to_be_bytes()))?;
            }
            d = conn.read_datagram() => {
                d?;
                return Ok(());
            }
            () = tokio::time::sleep_until(deadline) => anyhow::bail!("no echo within {timeout:?}"),
        }
    }
}

/// Sends `n` datagram pings `every` apart and returns the round trips of those echoed before
/// `timeout` (counted from the first ping).
async fn ping(
    conn: &quinn::Connection,
    n: u64,
    every: Duration,
    timeout: Duration,
) -> Result<Vec<Duration>> {
    let deadline = Instant::now() + timeout;
    let mut tick = tokio::time::interval(every);
    let mut sent: HashMap<u64, Instant> = HashMap::new();
    let mut rtts = Vec::new();
    let mut count = 0;
    while (rtts.len() as u64) < n {
        tokio::select! {
            _ = tick.tick(), if count < n => {
                let seq = NEXT_SEQ.fetch_add(1, Ordering::Relaxed);
                conn.send_datagram(Bytes::copy_from_slice(&seq.to_be_bytes()))?;
                sent.insert(seq, Instant::now());
                count += 1;
            }
            d = conn.read_datagram() => {
                let d = d?;
                let seq = u64::from_be_bytes(d[..].try_into().context("ping size")?);
                if let Some(at) = sent.remove(&seq) {
                    rtts.push(at.elapsed());
                }
            }
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    Ok(rtts)
}

#[tokio::test]
async fn round_trips_match_the_matrix_from_the_home_region() -> Result<()> {
    let _alone = TIMING.write().await;
    let matrix = LatencyMatrix::load(MATRIX)?;
    let (frankfurt, tokyo) = tokio::try_join!(echo_server(), echo_server())?;
    let links = profiles_from_matrix(
        &matrix,
        "london",
        [(frankfurt.addr, "frankfurt"), (tokyo.addr, "tokyo")],
        0.05,
        0.0,
    )?;
    let (endpoint, handle) = client(ConditionerConfig {
        links,
        seed: 1,
        ..ConditionerConfig::default()
    })
    .await?;
    let (to_frankfurt, to_tokyo) =
        tokio::try_join!(connect(&endpoint, &frankfurt), connect(&endpoint, &tokyo))?;
    let second = Duration::from_secs(1);
    tokio::try_join!(warm_up(&to_frankfurt, second), warm_up(&to_tokyo, second))?;
    let every = Duration::from_millis(10);
    let timeout = Duration::from_secs(2);
    let (fra, tok) = tokio::try_join!(
        ping(&to_frankfurt, 10, every, timeout),
        ping(&to_tokyo, 10, every, timeout)
    )?;
    for (region, rtts) in [("frankfurt", fra), ("tokyo", tok)] {
        let expected = matrix
            .rtt("london", region)
            .context("region in the matrix")?;
        ensure!(
            rtts.len() == 10,
            "{region}: {} of 10 pings came back",
            rtts.len()
        );
        let min = rtts.iter().min().copied().context("some rtt")?;
        let tolerance = expected.mul_f64(0.15) + Duration::from_millis(2);
        eprintln!("london → {region}: min RTT {min:?} (matrix {expected:?}), all {rtts:?}");
        ensure!(
            min.abs_diff(expected) <= tolerance,
            "london → {region}: min RTT {min:?}, matrix {expected:?} ± {tolerance:?} (all: {rtts:?})"
        );
    }
    let stats = handle.stats();
    ensure!(
        stats.outbound.delayed > 0 && stats.inbound.delayed > 0,
        "{stats:?}"
    );
    ensure!(
        stats.outbound.dropped_loss == 0 && stats.inbound.dropped_loss == 0,
        "{stats:?}"
    );
    Ok(())
}

#[tokio::test]
async fn loss_drops_about_the_configured_fraction() -> Result<()> {
    let _shared = TIMING.read().await;
    let server = echo_server().await?;
    let (endpoint, handle) = client(ConditionerConfig {
        seed: 42,
        ..ConditionerConfig::default()
    })
    .await?;
    let quic_cfg = QuicConfig::default();
    let mut transport = quic::transport_config(&quic_cfg)?;
    transport.congestion_controller_factory(Arc::new(FixedWindow));
    let mut client_cfg = quic::client_config(server.pin, &quic_cfg)?;
    client_cfg.transport_config(Arc::new(transport));
    let conn = connect_with(&endpoint, &server, client_cfg).await?;
    warm_up(&conn, Duration::from_secs(1)).await?;
    // Lossless handshake; then 30% loss each way.
    handle.set_link(
        server.addr,
        LinkProfile {
            loss: 0.3,
            ..LinkProfile::IDENTITY
        },
    )?;
    let before = handle.stats();
    let sent_before = conn.stats().frame_tx.datagram;
    // One datagram per QUIC packet, so one loss draw each.
    let n = 400u64;
    ensure!(
        conn.max_datagram_size().unwrap_or(0) >= BULK_SIZE,
        "datagram size"
    );
    let payload = Bytes::from(vec![7u8; BULK_SIZE]);
    for _ in 0..n {
        conn.send_datagram(payload.clone())?;
    }
    // Wait until quinn has sent them all (and the warm-up pings still queued), then for the
    // server's count to settle.
    let deadline = Instant::now() + Duration::from_secs(3);
    while conn.stats().frame_tx.datagram - sent_before < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sent = conn.stats().frame_tx.datagram - sent_before;
    ensure!(sent >= n, "quinn sent {sent} of {n} datagrams");
    let mut last = (u64::MAX, Instant::now());
    loop {
        let got = server.bulk.load(Ordering::Relaxed);
        if got != last.0 {
            last = (got, Instant::now());
        }
        if last.1.elapsed() > Duration::from_millis(100) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let received = server.bulk.load(Ordering::Relaxed);
    let rate = 1.0 - received as f64 / n as f64;
    ensure!(
        (0.2..=0.4).contains(&rate),
        "server got {received} of {n} datagrams: loss {rate:.3}, configured 0.3"
    );
    let after = handle.stats();
    let lost = after.outbound.dropped_loss - before.outbound.dropped_loss;
    let passed = after.outbound.passed - before.outbound.passed;
    let counted = lost as f64 / (lost + passed) as f64;
    ensure!(
        (0.2..=0.4).contains(&counted),
        "outbound loss counted {counted:.3} ({lost} of {}): {after:?}",
        lost + passed
    );
    ensure!(
        after.inbound.dropped_loss > before.inbound.dropped_loss,
        "{after:?}"
    );
    Ok(())
}

#[tokio::test]
async fn partition_stops_traffic_and_healing_restores_it() -> Result<()> {
    let _shared = TIMING.read().await;
    let server = echo_server().await?;
    let mut links = HashMap::new();
    links.insert(
        server.addr,
        LinkProfile {
            one_way_delay: Duration::from_millis(20),
            jitter: Jitter::Uniform(Duration::from_millis(2)),
            loss: 0.0,
        },
    );
    let (endpoint, handle) = client(ConditionerConfig {
        links,
        seed: 7,
        ..ConditionerConfig::default()
    })
    .await?;
    let conn = connect(&endpoint, &server).await?;
    warm_up(&conn, Duration::from_secs(1)).await?;
    let every = Duration::from_millis(5);
    let ok = ping(&conn, 3, every, Duration::from_secs(1)).await?;
    ensure!(ok.len() == 3, "before the partition: {ok:?}");

    // Pings in flight when the link is cut are lost too.
    conn.send_datagram(Bytes::copy_from_slice(&u64::MAX.to_be_bytes()))?;
    let echoed_before = server.datagrams.load(Ordering::Relaxed);
    handle.partition(server.addr, true);
    ensure!(handle.is_partitioned(server.addr));
    let cut = ping(&conn, 5, every, Duration::from_millis(300)).await?;
    ensure!(cut.is_empty(), "through the partition: {cut:?}");
    let stats = handle.stats();
    // Small datagrams may share a packet: at least one packet was cut.
    ensure!(stats.outbound.dropped_partition >= 1, "{stats:?}");
    ensure!(
        server.datagrams.load(Ordering::Relaxed) == echoed_before,
        "the server heard through the partition"
    );

    handle.partition(server.addr, false);
    let healed = ping(&conn, 5, Duration::from_millis(20), Duration::from_secs(3)).await?;
    ensure!(!healed.is_empty(), "nothing came back after healing");
    ensure!(conn.close_reason().is_none(), "{:?}", conn.close_reason());
    Ok(())
}

#[tokio::test]
async fn full_queue_drops_and_counts() -> Result<()> {
    let _shared = TIMING.read().await;
    let server = echo_server().await?;
    let (endpoint, handle) = client(ConditionerConfig {
        queue_capacity: 8,
        ..ConditionerConfig::default()
    })
    .await?;
    let conn = connect(&endpoint, &server).await?;
    handle.set_link(
        server.addr,
        LinkProfile {
            one_way_delay: Duration::from_millis(100),
            ..LinkProfile::IDENTITY
        },
    )?;
    for seq in 0..50u64 {
        conn.send_datagram(Bytes::copy_from_slice(&seq.to_be_bytes()))?;
        tokio::task::yield_now().await;
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while handle.stats().outbound.dropped_queue_full == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = handle.stats();
    ensure!(stats.outbound.dropped_queue_full > 0, "{stats:?}");
    ensure!(stats.outbound.delayed > 0, "{stats:?}");
    Ok(())
}

#[tokio::test]
async fn stream_gets_through_five_percent_loss() -> Result<()> {
    let _shared = TIMING.read().await;
    let server = echo_server().await?;
    let mut links = HashMap::new();
    links.insert(
        server.addr,
        LinkProfile {
            one_way_delay: Duration::from_millis(3),
            jitter: Jitter::Uniform(Duration::from_millis(1)),
            loss: 0.05,
        },
    );
    let (endpoint, handle) = client(ConditionerConfig {
        links,
        seed: 5,
        ..ConditionerConfig::default()
    })
    .await?;
    let exchange = async {
        let conn = connect(&endpoint, &server).await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        let data: Vec<u8> = (0..128 * 1024u32).map(|i| (i % 251) as u8).collect();
        send.write_all(&data).await?;
        send.finish()?;
        let echoed = recv.read_to_end(1 << 20).await?;
        ensure!(echoed == data, "echo differs: {} bytes back", echoed.len());
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(8), exchange)
        .await
        .context("stream exchange timed out")??;
    let stats = handle.stats();
    ensure!(
        stats.outbound.dropped_loss + stats.inbound.dropped_loss > 0,
        "no loss happened: {stats:?}"
    );
    Ok(())
}
