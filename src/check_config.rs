//! `meridian <role> --check-config`: everything a role would refuse at start-up, found without
//! starting it. The flags, variables and file are merged and validated as for a run (see
//! [`crate::cli`]); then every file the configuration names is read and checked: world maps
//! (parsed and validated, and a shard's zone looked up in its map), certificate and key files
//! (parsed as PEM), latency matrices. Nothing touches the network: a Redis URL is checked for
//! its form only, and no port is bound.
//!
//! `main` prints the one-line summary and exits 0, or prints the error and exits 2.

use crate::cli::{DrainArgs, RoleConfig};
use meridian_client::latency::{LatencyMatrix, LatencyMatrixError};
use meridian_cluster::world::{WorldMap, WorldMapError};
use meridian_protocol::quic::{CertificateMaterial, QuicSetupError};
use meridian_shard::config::MIN_ADMIN_TOKEN_LEN;
use std::path::Path;

/// Why a configuration that validated is still unusable.
#[derive(Debug, thiserror::Error)]
pub enum CheckConfigError {
    /// A world map is missing, unreadable or invalid (the error names the file).
    #[error("--world: {0}")]
    World(#[from] WorldMapError),
    /// A certificate or key file is missing, unreadable or not PEM (the error names the file).
    #[error("--cert/--key: {0}")]
    Tls(#[from] QuicSetupError),
    /// A latency matrix is missing, unreadable or invalid (the error names the file).
    #[error("--latency-matrix: {0}")]
    LatencyMatrix(#[from] LatencyMatrixError),
    /// A zone the shard serves (`--zone`) or stands by for (`--standby-for`) is not one of
    /// the zones of its world map.
    #[error("{flag}: zone `{zone}` is not in the world map {file} (zones: {zones})")]
    ZoneNotInMap {
        /// `--zone` or `--standby-for`.
        flag: &'static str,
        /// The shard's zone.
        zone: String,
        /// The world map file.
        file: String,
        /// The zones the map has, comma-separated.
        zones: String,
    },
    /// `meridian shard drain --admin` is not a host:port.
    #[error("--admin `{admin}` is not host:port")]
    DrainAdmin {
        /// The address as given.
        admin: String,
    },
    /// `meridian shard drain --token` cannot be a shard's admin token.
    #[error(
        "--token (MERIDIAN_ADMIN_TOKEN): an admin token is at least {min} visible ASCII \
         characters"
    )]
    DrainToken {
        /// The shortest accepted token.
        min: usize,
    },
    /// The directory a report is to be written into does not exist.
    #[error("--report: the directory of {file} does not exist")]
    ReportDir {
        /// The report file.
        file: String,
    },
}

/// Checks every file `config` references. Returns a one-line summary of what was checked.
pub fn check(config: &RoleConfig) -> Result<String, CheckConfigError> {
    let role = config.role();
    let mut checked = Vec::new();
    match config {
        RoleConfig::Dev(c) => {
            if let Some(path) = &c.world {
                checked.push(world_summary(path, &WorldMap::load(path)?));
            }
            report_dir(c.report.as_deref())?;
        }
        RoleConfig::Lobby(c) => {
            tls(c.cert.as_deref(), c.key.as_deref(), &mut checked)?;
        }
        RoleConfig::Shard(c) => {
            if let Some(path) = &c.world {
                let map = WorldMap::load(path)?;
                // A standby serves the zones it stands by for; any other shard its --zone.
                let (flag, zones) = match &c.standby_for {
                    Some(list) => ("--standby-for", list.split(',').map(str::trim).collect()),
                    None => ("--zone", vec![c.zone.as_str()]),
                };
                for zone in zones {
                    if !map.zones.iter().any(|z| z.id.as_str() == zone) {
                        return Err(CheckConfigError::ZoneNotInMap {
                            flag,
                            zone: zone.to_owned(),
                            file: path.display().to_string(),
                            zones: map
                                .zones
                                .iter()
                                .map(|z| z.id.to_string())
                                .collect::<Vec<_>>()
                                .join(", "),
                        });
                    }
                }
                checked.push(world_summary(path, &map));
            }
            tls(c.cert.as_deref(), c.key.as_deref(), &mut checked)?;
        }
        RoleConfig::Client(_) | RoleConfig::Audit(_) => {}
        RoleConfig::Bots(c) => {
            if let Some(path) = &c.world {
                checked.push(world_summary(path, &WorldMap::load(path)?));
            }
            if let Some(path) = &c.latency_matrix {
                LatencyMatrix::load(path)?;
                checked.push(format!("latency matrix {}", path.display()));
            }
            report_dir(c.report.as_deref())?;
        }
    }
    Ok(if checked.is_empty() {
        format!("{role} configuration OK")
    } else {
        format!("{role} configuration OK ({})", checked.join("; "))
    })
}

fn world_summary(path: &Path, map: &WorldMap) -> String {
    format!(
        "world map {} `{}`: {} zones",
        path.display(),
        map.name,
        map.zones.len()
    )
}

/// Checks `meridian shard drain`'s arguments without sending anything: the admin address is a
/// host:port and the token one a shard accepts.
pub fn check_drain(args: &DrainArgs) -> Result<String, CheckConfigError> {
    let url = reqwest::Url::parse(&format!("http://{}/drain", args.admin));
    if args.admin.contains('/') || !url.is_ok_and(|u| u.port().is_some()) {
        return Err(CheckConfigError::DrainAdmin {
            admin: args.admin.clone(),
        });
    }
    let visible = |c: char| c.is_ascii_graphic();
    if args.token.len() < MIN_ADMIN_TOKEN_LEN || !args.token.chars().all(visible) {
        return Err(CheckConfigError::DrainToken {
            min: MIN_ADMIN_TOKEN_LEN,
        });
    }
    Ok(format!(
        "shard drain configuration OK (admin {})",
        args.admin
    ))
}

/// Parses the certificate chain and key, when both are given (`validate` already refused one
/// without the other).
fn tls(
    cert: Option<&Path>,
    key: Option<&Path>,
    checked: &mut Vec<String>,
) -> Result<(), CheckConfigError> {
    if let (Some(cert), Some(key)) = (cert, key) {
        CertificateMaterial::load_pem(cert, key)?;
        checked.push(format!(
            "certificate {} and key {}",
            cert.display(),
            key.display()
        ));
    }
    Ok(())
}

/// A report file may not exist yet, but its directory must.
fn report_dir(report: Option<&Path>) -> Result<(), CheckConfigError> {
    let Some(file) = report else { return Ok(()) };
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if dir.is_dir() {
        Ok(())
    } else {
        Err(CheckConfigError::ReportDir {
            file: file.display().to_string(),
        })
    }
}
