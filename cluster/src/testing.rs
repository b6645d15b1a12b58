//! Test support (cargo feature `testing`): [`RedisServer`], a throwaway `redis-server` on a free
//! loopback port, for tests of this crate and of the crates above it.
//!
//! Enable it from a dev-dependency:
//!
//! ```toml
//! [dev-dependencies]
//! meridian-cluster = { workspace = true, features = ["testing"] }
//! ```
//!
//! Each test starts its own server and it dies with the test ([`Drop`] kills it). It never
//! touches the machine's Redis on 6379. Nothing is persisted (`--save "" --appendonly no`).
//! `redis-server` must be on `PATH`; `scripts/test.sh` installs it.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How many free ports [`RedisServer::start`] tries before giving up (another process may take
/// a port between our probe and the server's bind).
const PORT_ATTEMPTS: u32 = 5;
/// Longest wait for a new server to answer PING.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Delay between PING polls.
const POLL_EVERY: Duration = Duration::from_millis(10);

/// Why a test Redis server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RedisServerError {
    /// `redis-server` is not on `PATH`.
    #[error(
        "redis-server is not installed (not found on PATH): run scripts/test.sh, which installs it \
         (apt-get install redis-server redis-tools)"
    )]
    NotInstalled,
    /// The process could not be spawned, or no free port could be found.
    #[error("cannot start redis-server: {detail}")]
    Spawn {
        /// What failed.
        detail: String,
    },
    /// The server exited at start on every port tried (usually: the port was taken).
    #[error("redis-server exited at start on {attempts} ports in a row (last port {port})")]
    Exited {
        /// Ports tried.
        attempts: u32,
        /// The last port tried.
        port: u16,
    },
    /// The server started but did not answer PING in time.
    #[error("redis-server on port {port} did not answer PING within {after_ms} ms")]
    NotReady {
        /// Its port.
        port: u16,
        /// How long we waited, milliseconds.
        after_ms: u64,
    },
}

/// A `redis-server` child process on `127.0.0.1:<free port>`, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port and waits (polling, bounded) until it answers PING.
    pub async fn start() -> Result<Self, RedisServerError> {
        let mut last_port = 0;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            last_port = port;
            let mut server = Self {
                port,
                child: Some(spawn(port)?),
            };
            match server.wait_ready().await {
                Ok(()) => return Ok(server),
                Err(Ready::Exited) => continue,
                Err(Ready::Timeout) => {
                    return Err(RedisServerError::NotReady {
                        port,
                        after_ms: millis(READY_TIMEOUT),
                    });
                }
            }
        }
        Err(RedisServerError::Exited {
            attempts: PORT_ATTEMPTS,
            port: last_port,
        })
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Kills the server (SIGKILL, like a crash) and reaps it; its data is lost. Stopping a
    /// stopped server does nothing.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error means it already exited: nothing left to kill.
            let _already_exited = child.kill();
            let _status = child.wait();
        }
    }

    /// Stops the server if it runs and starts a fresh, empty one on the same port (for outage
    /// tests: clients keep their URL). Waits until it answers PING.
    pub async fn restart(&mut self) -> Result<(), RedisServerError> {
        self.stop();
        for _ in 0..PORT_ATTEMPTS {
            self.child = Some(spawn(self.port)?);
            match self.wait_ready().await {
                Ok(()) => return Ok(()),
                // The old socket may linger for a moment: try again.
                Err(Ready::Exited) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(Ready::Timeout) => break,
            }
        }
        self.stop();
        Err(RedisServerError::NotReady {
            port: self.port,
            after_ms: millis(READY_TIMEOUT),
        })
    }

    async fn wait_ready(&mut self) -> Result<(), Ready> {
        let started = Instant::now();
        while started.elapsed() < READY_TIMEOUT {
            let exited = match self.child.as_mut() {
                Some(child) => !matches!(child.try_wait(), Ok(None)),
                None => true,
            };
            if exited {
                self.stop();
                return Err(Ready::Exited);
            }
            if ping(self.port).await {
                return Ok(());
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
        self.stop();
        Err(Ready::Timeout)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

enum Ready {
    Exited,
    Timeout,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A port that was free a moment ago (bound to port 0, then released).
fn free_port() -> Result<u16, RedisServerError> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).map_err(|e| {
        RedisServerError::Spawn {
            detail: format!("cannot find a free port: {e}"),
        }
    })?;
    let port = listener
        .local_addr()
        .map_err(|e| RedisServerError::Spawn {
            detail: format!("cannot find a free port: {e}"),
        })?
        .port();
    Ok(port)
}

fn spawn(port: u16) -> Result<Child, RedisServerError> {
    Command::new("redis-server")
        .arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--daemonize", "no"])
        .args(["--loglevel", "warning"])
        .arg("--dir")
        .arg(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RedisServerError::NotInstalled,
            _ => RedisServerError::Spawn {
                detail: e.to_string(),
            },
        })
}

/// Whether a Redis on `port` answers `PING` with `+PONG` within 200 ms.
async fn ping(port: u16) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await?;
        Ok::<_, std::io::Error>(&reply == b"+PONG\r\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(200), attempt).await,
        Ok(Ok(true))
    )
}
