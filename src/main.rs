//! `meridian`: one binary for every role of Meridian (`dev`, `lobby`, `shard`, `client`, `bots`,
//! `audit`), like `cockroach` or `nats-server`.
//!
//! This crate is wiring only: [`cli`] turns flags, `MERIDIAN_*` variables and the role's TOML
//! file into the role's config struct (which lives in the library that runs the role), `main`
//! validates it once, logs it with secrets redacted, and hands it to the role's `run`.
//!
//! Exit codes: 0 success, 1 the role failed, 2 a bad command line or configuration.

mod cli;
mod config_file;
mod dev;
mod logging;

use cli::RoleConfig;
use std::fmt::Display;
use std::process::ExitCode;

/// Exit code of a bad command line or configuration (clap uses it for its own errors too).
const EXIT_USAGE: u8 = 2;
/// Exit code of a role that failed, or is not built yet.
const EXIT_FAILURE: u8 = 1;

/// Why a role stopped with an error.
#[derive(Debug, thiserror::Error)]
enum RunError {
    /// The role exists on the command line, but this version cannot run it yet.
    #[error("the {role} role is not built yet in this version of meridian (config is valid)")]
    NotBuilt {
        /// The role.
        role: &'static str,
    },
}

fn main() -> ExitCode {
    let cli = cli::parse();
    let config = match cli.command.into_config() {
        Ok(config) => config,
        Err(err) => return fail(EXIT_USAGE, &err),
    };
    if let Err(err) = logging::init(cli.log_format.unwrap_or_default()) {
        return fail(EXIT_USAGE, &err);
    }
    let span = tracing::info_span!("meridian", role = config.role());
    let _entered = span.enter();
    tracing::info!(version = env!("CARGO_PKG_VERSION"), config = ?config, "effective configuration");
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(EXIT_FAILURE, &err),
    }
}

/// Runs the role. Building a role is a one-line change of its arm here, to
/// `meridian_<crate>::run(config, shutdown_signal())` (inside a runtime).
fn run(config: RoleConfig) -> Result<(), RunError> {
    match config {
        RoleConfig::Dev(_config) => Err(RunError::NotBuilt { role: "dev" }),
        RoleConfig::Lobby(_config) => Err(RunError::NotBuilt { role: "lobby" }),
        RoleConfig::Shard(_config) => Err(RunError::NotBuilt { role: "shard" }),
        RoleConfig::Client(_config) => Err(RunError::NotBuilt { role: "client" }),
        RoleConfig::Bots(_config) => Err(RunError::NotBuilt { role: "bots" }),
        RoleConfig::Audit(_config) => Err(RunError::NotBuilt { role: "audit" }),
    }
}

/// Prints `error: …` on one line of stderr and returns `code`.
fn fail(code: u8, err: &dyn Display) -> ExitCode {
    let message = err.to_string().replace(['\r', '\n'], " ");
    eprintln!("error: {message}");
    ExitCode::from(code)
}
