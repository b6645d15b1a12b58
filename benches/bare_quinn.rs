//! The baseline of the shard's CPU cost: a bare quinn server with the shard's QUIC setup (same
//! certificate kind, transport config and socket buffers, same runtime shape: a multi-thread
//! tokio runtime for the endpoint and connections, one dedicated thread for the sending) that
//! does nothing but send each connection one datagram of `--datagram-bytes` per tick at
//! `--tick-hz`, and read and discard what clients send. What the shard spends beyond this is
//! the cost of the game: simulation, replication, input handling.
//!
//! Prints one JSON line `{"event":"listening","addr":…,"cert_sha256":…}` on stdout once ready,
//! and one `{"event":"stopped",…}` line when it stops (SIGTERM, Ctrl-C or `--max-seconds`).
//! `scripts/load.sh` drives it with `benches/load_clients.rs --mode bare`.
//!
//! Without `--datagram-bytes` (as under a plain `cargo bench`) it prints a hint and exits.

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Parser;
use meridian_protocol::quic::{self, CertificateMaterial, QuicConfig};
use meridian_protocol::ticket::to_hex;
use serde_json::json;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "bare_quinn",
    about = "Bare quinn server: one datagram per connection per tick"
)]
struct Args {
    /// UDP address to bind.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Size of each datagram sent, bytes (the mean snapshot size measured on the shard);
    /// without it the program only prints a hint.
    #[arg(long)]
    datagram_bytes: Option<usize>,
    /// Datagrams per connection per second.
    #[arg(long, default_value_t = 30)]
    tick_hz: u32,
    /// Stop after this long at the latest, seconds.
    #[arg(long, default_value_t = 900)]
    max_seconds: u64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Catch-up is bounded as in the shard's tick loop: further behind, the missed ticks are dropped.
const MAX_CATCH_UP_TICKS: u32 = 5;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let Some(datagram_bytes) = args.datagram_bytes else {
        eprintln!(
            "bare_quinn: nothing to do without --datagram-bytes (run by scripts/load.sh; see --help). \
             Example: cargo bench --bench bare_quinn -- --datagram-bytes 600"
        );
        return Ok(());
    };
    anyhow::ensure!(
        args.tick_hz > 0 && args.tick_hz <= 1000,
        "--tick-hz must be 1 to 1000"
    );
    anyhow::ensure!(
        datagram_bytes > 0 && datagram_bytes <= 65_535,
        "--datagram-bytes must be 1 to 65535"
    );
    // The shard's runtime: `meridian` builds a default multi-thread runtime.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bare-worker")
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(serve(&args, datagram_bytes))
}

/// Connections to send to, by stable id.
type Conns = Arc<Mutex<Vec<(usize, quinn::Connection)>>>;

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    datagrams_in: AtomicU64,
    sent: AtomicU64,
    failed: AtomicU64,
}

async fn serve(args: &Args, datagram_bytes: usize) -> Result<()> {
    let quic_cfg = QuicConfig::default();
    let cert = CertificateMaterial::generate_dev(&["localhost", "bare-quinn"])
        .context("generating the certificate")?;
    let server_config = quic::server_config(&cert, &quic_cfg).context("server config")?;
    let bound = quic::bind_udp_socket(args.listen, quic_cfg.socket_buffer_bytes)
        .with_context(|| format!("binding {}", args.listen))?;
    if bound.recv_buffer < quic_cfg.socket_buffer_bytes {
        eprintln!(
            "bare_quinn: UDP receive buffer {} smaller than asked {}",
            bound.recv_buffer, quic_cfg.socket_buffer_bytes
        );
    }
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config),
        bound.socket,
        Arc::new(quinn::TokioRuntime),
    )
    .context("starting the endpoint")?;
    let addr = endpoint.local_addr().context("local address")?;

    let conns: Conns = Arc::new(Mutex::new(Vec::new()));
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let sender = std::thread::Builder::new()
        .name("bare-sender".into())
        .spawn({
            let (conns, counters, stop) = (conns.clone(), counters.clone(), stop.clone());
            let (hz, payload) = (args.tick_hz, vec![0x5a_u8; datagram_bytes]);
            move || send_loop(hz, &payload, &conns, &counters, &stop)
        })?;

    let accept = tokio::spawn({
        let (endpoint, conns, counters) = (endpoint.clone(), conns.clone(), counters.clone());
        async move {
            while let Some(incoming) = endpoint.accept().await {
                let (conns, counters) = (conns.clone(), counters.clone());
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    counters.connections.fetch_add(1, Ordering::Relaxed);
                    let id = conn.stable_id();
                    lock(&conns).push((id, conn.clone()));
                    while conn.read_datagram().await.is_ok() {
                        counters.datagrams_in.fetch_add(1, Ordering::Relaxed);
                    }
                    lock(&conns).retain(|(i, _)| *i != id);
                });
            }
        }
    });

    let listening = json!({
        "event": "listening", "addr": addr.to_string(), "cert_sha256": to_hex(&cert.sha256()),
        "datagram_bytes": datagram_bytes, "tick_hz": args.tick_hz,
    });
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{listening}")?;
        out.flush()?;
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = tokio::time::sleep(Duration::from_secs(args.max_seconds)) => eprintln!("bare_quinn: --max-seconds reached"),
    }
    stop.store(true, Ordering::Relaxed);
    let tick_us = tokio::task::spawn_blocking(move || sender.join())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    endpoint.close(quic::close_code::SHUTDOWN.into(), b"shutting down");
    accept.abort();
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    let pct = |q: f64, v: &[u64]| {
        v.get(((v.len() as f64 - 1.0) * q).round() as usize)
            .map_or(0.0, |us| *us as f64 / 1000.0)
    };
    let mut sorted = tick_us;
    sorted.sort_unstable();
    let stopped = json!({
        "event": "stopped",
        "ticks": sorted.len(),
        "connections": counters.connections.load(Ordering::Relaxed),
        "datagrams_in": counters.datagrams_in.load(Ordering::Relaxed),
        "sent": counters.sent.load(Ordering::Relaxed),
        "failed": counters.failed.load(Ordering::Relaxed),
        "send_tick_ms": {"p50": pct(0.5, &sorted), "p99": pct(0.99, &sorted), "max": pct(1.0, &sorted)},
    });
    println!("{stopped}");
    Ok(())
}

/// The sender thread: the shard's tick loop with nothing but the send phase. Returns the
/// duration of each tick, µs.
fn send_loop(
    hz: u32,
    payload: &[u8],
    conns: &Conns,
    counters: &Counters,
    stop: &AtomicBool,
) -> Vec<u64> {
    let dt = Duration::from_secs(1) / hz;
    let mut next = Instant::now();
    let mut took_us = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
            continue;
        }
        if ((now - next).as_nanos() / dt.as_nanos().max(1)) as u32 > MAX_CATCH_UP_TICKS {
            next = now;
        }
        let started = Instant::now();
        let (mut sent, mut failed) = (0u64, 0u64);
        for (_, conn) in lock(conns).iter() {
            // As the shard does per client: ask the datagram size, copy the encoded bytes, send.
            let ok = conn
                .max_datagram_size()
                .is_some_and(|max| payload.len() <= max)
                && conn.send_datagram(Bytes::copy_from_slice(payload)).is_ok();
            if ok {
                sent += 1;
            } else {
                failed += 1;
            }
        }
        counters.sent.fetch_add(sent, Ordering::Relaxed);
        counters.failed.fetch_add(failed, Ordering::Relaxed);
        took_us.push(started.elapsed().as_micros() as u64);
        next += dt;
    }
    took_us
}
