//! `meridian`: one binary for every role of Meridian (`dev`, `lobby`, `shard`, `client`, `bots`,
//! `audit`), like `cockroach` or `nats-server`.
//!
//! This crate is wiring only: [`cli`] turns flags, `MERIDIAN_*` variables and the role's TOML
//! file into the role's config struct (which lives in the library that runs the role), `main`
//! validates it once, logs it with secrets redacted, and hands it to the role's `run`.
//!
//! Exit codes: 0 success, 1 the role failed, 2 a bad command line or configuration; `audit`:
//! 1 a report that is not clean, 2 an audit that could not run. `--check-config` (any role, and
//! `shard drain`): 0 when the role would start, 2 with the error ([`check_config`]).

mod audit;
mod bots;
mod check_config;
mod cli;
mod client;
mod config_file;
mod dev;
mod dev_world;
mod logging;

use cli::RoleConfig;
use meridian_client::config::ClientConfig;
use meridian_client::session::SessionError;
use meridian_shard::server::ShardError;
use std::fmt::Display;
use std::future::Future;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

/// Exit code of a bad command line or configuration (clap uses it for its own errors too).
const EXIT_USAGE: u8 = 2;
/// Exit code of a role that failed, or is not built yet.
const EXIT_FAILURE: u8 = 1;

/// Why a role stopped with an error.
#[derive(Debug, thiserror::Error)]
enum RunError {
    /// `client --insecure-dev`: the client library only pins certificates.
    #[error(
        "client --insecure-dev is not built yet: the client only pins certificates; pass \
         --cert-sha256 (the shard logs its fingerprint at start-up as cert_sha256=)"
    )]
    InsecureNotBuilt,
    /// The async runtime could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// The Ctrl-C / SIGTERM handlers could not be installed.
    #[error("cannot listen for shutdown signals: {0}")]
    Signals(std::io::Error),
    /// The shard failed.
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// The direct-to-shard client could not be set up.
    #[error(transparent)]
    Direct(#[from] client::DirectError),
    /// The client's session with the shard failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The dev world failed.
    #[error(transparent)]
    Dev(#[from] dev_world::DevError),
    /// The lobby failed.
    #[error(transparent)]
    Lobby(#[from] meridian_lobby::service::LobbyRunError),
    /// The lobby's certificate fingerprint is malformed.
    #[error("--cert-sha256: {0}")]
    Pin(String),
    /// Joining through the lobby failed.
    #[error(transparent)]
    LobbyJoin(#[from] meridian_client::lobby::LobbyJoinError),
    /// The audit could not run (exit 2) or was not clean (exit 1).
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
    /// The bots could not run (exit 2 for unusable input, 1 otherwise).
    #[error(transparent)]
    Bots(#[from] bots::BotsRoleError),
}

impl RunError {
    /// The process exit code of this failure: [`EXIT_FAILURE`] but for the audit's own codes.
    fn exit_code(&self) -> u8 {
        match self {
            RunError::Audit(err) => err.exit_code(),
            RunError::Bots(err) => err.exit_code(),
            _ => EXIT_FAILURE,
        }
    }
}

/// How long the runtime waits, after the role returned, for its remaining tasks to stop.
const RUNTIME_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let cli = cli::parse();
    if let cli::Command::Shard(cli::ShardArgs {
        action: Some(cli::ShardAction::Drain(args)),
        ..
    }) = &cli.command
    {
        if cli.check_config {
            return match check_config::check_drain(args) {
                Ok(summary) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(err) => fail(EXIT_USAGE, &err),
            };
        }
        return drain_shard(args);
    }
    let config = match cli.command.into_config() {
        Ok(config) => config,
        Err(err) => return fail(EXIT_USAGE, &err),
    };
    if cli.check_config {
        return match check_config::check(&config) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(err) => fail(EXIT_USAGE, &err),
        };
    }
    if let Err(err) = logging::init(cli.log_format.unwrap_or_default()) {
        return fail(EXIT_USAGE, &err);
    }
    let span = tracing::info_span!("meridian", role = config.role());
    let _entered = span.enter();
    tracing::info!(version = env!("CARGO_PKG_VERSION"), config = ?config, "effective configuration");
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(err.exit_code(), &err),
    }
}

/// Runs the role. Building a role is a change of its arm here, to
/// `block_on(|shutdown| meridian_<crate>::run(config, shutdown))`.
fn run(config: RoleConfig) -> Result<(), RunError> {
    match config {
        RoleConfig::Dev(config) => block_on(|shutdown| async move {
            dev_world::run(config, shutdown).await?;
            Ok(())
        }),
        RoleConfig::Lobby(config) => block_on(|shutdown| async move {
            meridian_lobby::service::run(config, shutdown).await?;
            Ok(())
        }),
        RoleConfig::Shard(config) => block_on(|shutdown| async move {
            meridian_shard::server::run(config, shutdown).await?;
            Ok(())
        }),
        RoleConfig::Client(config) => run_client(&config),
        RoleConfig::Bots(config) => block_on(|shutdown| async move {
            bots::run(config, shutdown).await?;
            Ok(())
        }),
        RoleConfig::Audit(config) => block_on(|shutdown| async move {
            audit::run(&config, shutdown).await?;
            Ok(())
        }),
    }
}

/// `meridian client`: straight to `--shard` with a ticket minted from `--ticket-key`, printing
/// the demo's line every second on stdout. Through the lobby: not built yet.
fn run_client(config: &ClientConfig) -> Result<(), RunError> {
    if config.insecure_dev {
        return Err(RunError::InsecureNotBuilt);
    }
    if let Some(lobby) = config.lobby {
        return run_client_via_lobby(config, lobby);
    }
    let draw = client::TicketDraw::random();
    let opts = client::direct_options(config, now_ms(), draw)?;
    tracing::info!(
        shard = %opts.shard, shard_id = %opts.ticket.claims.shard, zone = %opts.ticket.claims.zone,
        player = %draw.player, "joining the shard directly with a development ticket"
    );
    block_on(|shutdown| async move {
        meridian_client::demo::run(opts, shutdown, |line| {
            // A closed stdout does not stop the client: it plays on until told to stop.
            let _ = writeln!(std::io::stdout().lock(), "{line}");
        })
        .await?;
        Ok(())
    })
}

/// `meridian client --lobby`: joins through the lobby (which measures nothing itself: the client
/// pings the candidate shards), then plays like the direct client.
fn run_client_via_lobby(
    config: &ClientConfig,
    lobby: std::net::SocketAddr,
) -> Result<(), RunError> {
    let pin = meridian_client::config::parse_cert_sha256(
        config.cert_sha256.as_deref().unwrap_or_default(),
    )
    .map_err(|e| RunError::Pin(e.to_string()))?;
    let name = config.name.clone();
    let duration = config.duration_s.map(Duration::from_secs);
    block_on(|shutdown| async move {
        let quic = meridian_protocol::quic::QuicConfig::default();
        let bind: std::net::SocketAddr = if lobby.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let endpoint = meridian_client::session::client_endpoint(bind, &quic).map_err(|e| {
            SessionError::Connect {
                addr: lobby,
                detail: e.to_string(),
            }
        })?;
        let joined =
            meridian_client::lobby::join(&endpoint, lobby, pin, &name, None, &quic).await?;
        let rtts: Vec<String> = joined
            .rtts
            .iter()
            .map(|(s, r)| format!("{s}={:.1}ms", r.as_secs_f64() * 1000.0))
            .collect();
        tracing::info!(player = %joined.candidates.player, shard = %joined.grant.shard.shard, addr = %joined.addr,
            measured = %rtts.join(","), "the lobby granted a shard");
        // A lost shard is come back to through the lobby, with the grant's resume ticket.
        let reconnect = meridian_client::session::Reconnect::after_join(
            lobby,
            pin,
            &name,
            &joined,
            meridian_client::session::ReconnectPolicy::default(),
        );
        let opts = meridian_client::demo::DemoOptions {
            shard: joined.addr,
            cert_sha256: joined.grant.shard.cert_sha256,
            ticket: joined.grant.ticket.clone(),
            duration,
            quic,
            via_lobby: Some(Box::new((joined, reconnect))),
        };
        meridian_client::demo::run(opts, shutdown, |line| {
            let _ = writeln!(std::io::stdout().lock(), "{line}");
        })
        .await?;
        Ok(())
    })
}

/// `meridian shard drain`: `POST /drain` on a shard's admin endpoint with its token. Exit 0 when
/// the shard accepted (it drains and exits by itself), 1 when it refused or could not be
/// reached, 2 for a malformed address.
fn drain_shard(args: &cli::DrainArgs) -> ExitCode {
    let url = format!("http://{}/drain", args.admin);
    if reqwest::Url::parse(&url).is_err() || args.admin.contains('/') {
        let _ = writeln!(
            std::io::stderr(),
            "error: --admin `{}` is not host:port",
            args.admin
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => return fail(EXIT_FAILURE, &RunError::Runtime(err)),
    };
    let answer = runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(&url)
            .bearer_auth(&args.token)
            .timeout(Duration::from_secs(10))
            .send()
            .await?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        Ok::<_, reqwest::Error>((status, body))
    });
    match answer {
        Ok((status, body)) if status.is_success() => {
            let _ = writeln!(std::io::stdout(), "{body}");
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            let _ = writeln!(std::io::stderr(), "error: {url} answered {status}: {body}");
            ExitCode::from(EXIT_FAILURE)
        }
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "error: cannot reach {url}: {err}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is set before it).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Runs `role` on a multi-thread tokio runtime built for it, with a future that completes on
/// Ctrl-C or SIGTERM. The signal handlers are installed before `role` starts, so a signal sent
/// once the role says it is ready is never missed.
fn block_on<F, Fut>(role: F) -> Result<(), RunError>
where
    F: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
    Fut: Future<Output = Result<(), RunError>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("meridian-worker")
        .build()
        .map_err(RunError::Runtime)?;
    let result = runtime.block_on(async move {
        let shutdown = shutdown_signal().map_err(RunError::Signals)?;
        role(Box::pin(shutdown)).await
    });
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    result
}

/// Completes on the first SIGINT (Ctrl-C) or SIGTERM. Installs the handlers at once; must be
/// called within the runtime.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(signal = name, "shutdown requested");
    })
}

/// Completes on the first Ctrl-C. Must be called within the runtime.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send> {
    Ok(async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => tracing::info!(signal = "Ctrl-C", "shutdown requested"),
            Err(err) => {
                tracing::warn!(%err, "cannot listen for Ctrl-C; stop the process another way");
                std::future::pending::<()>().await;
            }
        }
    })
}

/// Prints `error: …` on one line of stderr and returns `code`.
fn fail(code: u8, err: &dyn Display) -> ExitCode {
    let message = err.to_string().replace(['\r', '\n'], " ");
    eprintln!("error: {message}");
    ExitCode::from(code)
}
