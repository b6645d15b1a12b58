//! Test support (cargo feature `testing`): [`RedisServer`], a throwaway `redis-server` on a free
//! loopback port, and [`RedisCluster`], a throwaway 3-master Redis Cluster, for tests of this
//! crate and of the crates above it.
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
    /// `redis-cli --cluster create` failed (or `redis-cli` is missing).
    #[error("cannot create the Redis Cluster: {detail}")]
    ClusterCreate {
        /// What failed: the tool's output.
        detail: String,
    },
    /// The cluster's nodes did not all report `cluster_state:ok` with every slot served in time.
    #[error("the Redis Cluster was not ready within {after_ms} ms: {detail}")]
    ClusterNotReady {
        /// How long we waited, milliseconds.
        after_ms: u64,
        /// The last state seen.
        detail: String,
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

/// Masters of a [`RedisCluster`].
pub const CLUSTER_NODES: usize = 3;
/// Slots of a Redis Cluster.
const CLUSTER_SLOTS: u32 = 16_384;
/// Longest wait for a new (or restarted) cluster to report `cluster_state:ok` everywhere.
const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// `cluster-node-timeout` of the test cluster, milliseconds: a stopped node is marked failing
/// after about this long.
pub const CLUSTER_NODE_TIMEOUT_MS: u64 = 1000;

/// Runs `redis-server` with the arguments after the first two (the node's `nodes.conf` and the
/// cluster's directory), and kills it (SIGKILL) as soon as a line arrives on the script's
/// standard input ([`ClusterNode::stop`]: the files stay, for a restart) or the input reaches its
/// end: when the test process dies or exits without running destructors (a cluster kept in a
/// `static` for a whole test binary); then the node's files go too.
const WATCHDOG: &str = r#"conf=$1
dir=$2
shift 2
exec 3<&0
redis-server "$@" </dev/null >/dev/null 2>&1 &
pid=$!
(
  if read -r _line <&3; then
    kill -9 "$pid" 2>/dev/null
  else
    kill -9 "$pid" 2>/dev/null
    sleep 1
    rm -f "$dir/$conf"
    rmdir "$dir" 2>/dev/null
  fi
) &
wait "$pid"
"#;

/// A Redis Cluster of [`CLUSTER_NODES`] masters (no replicas) on free loopback ports, each node
/// with its `nodes.conf` in a temporary directory, created with `redis-cli --cluster create`.
/// Every node is stopped when this value is dropped or, failing that, when the test process
/// exits.
///
/// Nodes run with `cluster-require-full-coverage no`, so that while one node is down the others
/// keep serving their slots (outage tests), and `cluster-node-timeout`
/// [`CLUSTER_NODE_TIMEOUT_MS`]. `redis-server` and `redis-cli` must be on `PATH`.
#[derive(Debug)]
pub struct RedisCluster {
    dir: std::path::PathBuf,
    nodes: Vec<ClusterNode>,
}

#[derive(Debug)]
struct ClusterNode {
    port: u16,
    bus_port: u16,
    /// The watchdog shell; the node dies when its stdin closes.
    child: Option<Child>,
}

impl ClusterNode {
    fn spawn(dir: &std::path::Path, port: u16, bus_port: u16) -> Result<Self, RedisServerError> {
        let conf = format!("nodes-{port}.conf");
        let child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("sh")
            .arg(&conf)
            .arg(dir)
            .arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .args(["--loglevel", "warning"])
            .arg("--dir")
            .arg(dir)
            .args(["--cluster-enabled", "yes"])
            .arg("--cluster-config-file")
            .arg(&conf)
            .arg("--cluster-port")
            .arg(bus_port.to_string())
            .arg("--cluster-node-timeout")
            .arg(CLUSTER_NODE_TIMEOUT_MS.to_string())
            .args(["--cluster-require-full-coverage", "no"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| RedisServerError::Spawn {
                detail: format!("cannot run sh for redis-server: {e}"),
            })?;
        Ok(Self {
            port,
            bus_port,
            child: Some(child),
        })
    }

    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A line on the watchdog's stdin kills the node and keeps its files; the watchdog
            // then exits. If the write fails the watchdog is gone, and closing stdin is enough.
            if let Some(mut stdin) = child.stdin.take() {
                use std::io::Write;
                let _gone = stdin.write_all(b"stop\n");
            }
            let _status = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster and waits (bounded) until every node reports
    /// `cluster_state:ok` with all 16384 slots served.
    pub async fn start() -> Result<Self, RedisServerError> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "meridian-redis-cluster-{}-{n}-{}",
            std::process::id(),
            free_port()?
        ));
        std::fs::create_dir_all(&dir).map_err(|e| RedisServerError::Spawn {
            detail: format!("cannot create {}: {e}", dir.display()),
        })?;
        let mut cluster = Self {
            dir,
            nodes: Vec::with_capacity(CLUSTER_NODES),
        };
        for _ in 0..CLUSTER_NODES {
            cluster.start_node().await?;
        }
        cluster.create().await?;
        cluster.wait_ok().await?;
        Ok(cluster)
    }

    async fn start_node(&mut self) -> Result<(), RedisServerError> {
        let mut last_port = 0;
        for _ in 0..PORT_ATTEMPTS {
            let (port, bus_port) = (free_port()?, free_port()?);
            if port == bus_port {
                continue;
            }
            last_port = port;
            let mut node = ClusterNode::spawn(&self.dir, port, bus_port)?;
            if wait_node(&mut node).await? {
                self.nodes.push(node);
                return Ok(());
            }
        }
        Err(RedisServerError::Exited {
            attempts: PORT_ATTEMPTS,
            port: last_port,
        })
    }

    async fn create(&self) -> Result<(), RedisServerError> {
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        for node in &self.nodes {
            cmd.arg(format!("127.0.0.1:{}", node.port));
        }
        cmd.args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null());
        let output = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .map_err(|e| RedisServerError::ClusterCreate {
                detail: e.to_string(),
            })?
            .map_err(|e| RedisServerError::ClusterCreate {
                detail: format!("cannot run redis-cli: {e}"),
            })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(RedisServerError::ClusterCreate {
                detail: format!(
                    "redis-cli exited with {}: {}{}",
                    output.status,
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ),
            })
        }
    }

    /// Waits until every running node reports `cluster_state:ok`, all slots served and every
    /// node known.
    async fn wait_ok(&mut self) -> Result<(), RedisServerError> {
        let started = Instant::now();
        let mut last = String::from("no answer yet");
        while started.elapsed() < CLUSTER_READY_TIMEOUT {
            let mut all_ok = true;
            for node in &self.nodes {
                match cluster_info(node.port).await {
                    Ok(info) => {
                        let ok = info.contains("cluster_state:ok")
                            && info.contains(&format!("cluster_slots_ok:{CLUSTER_SLOTS}"))
                            && info.contains(&format!("cluster_known_nodes:{CLUSTER_NODES}"));
                        if !ok {
                            all_ok = false;
                            last = format!("node {}: {}", node.port, info.replace("\r\n", " "));
                        }
                    }
                    Err(e) => {
                        all_ok = false;
                        last = format!("node {}: {e}", node.port);
                    }
                }
            }
            if all_ok {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(RedisServerError::ClusterNotReady {
            after_ms: millis(CLUSTER_READY_TIMEOUT),
            detail: last,
        })
    }

    /// The cluster's store URL: the nodes' URLs separated by commas
    /// (`redis://127.0.0.1:<p1>,redis://127.0.0.1:<p2>,…`).
    pub fn url(&self) -> String {
        self.node_urls().join(",")
    }

    /// Each node's `redis://127.0.0.1:<port>`.
    pub fn node_urls(&self) -> Vec<String> {
        self.nodes.iter().map(ClusterNode::url).collect()
    }

    /// The index (into [`RedisCluster::node_urls`]) of the node serving `key`'s slot, asked of
    /// the cluster (`CLUSTER KEYSLOT`, `CLUSTER SLOTS`) through any running node.
    pub async fn node_of_key(&mut self, key: &str) -> Result<usize, RedisServerError> {
        let ask = |detail: String| RedisServerError::ClusterNotReady {
            after_ms: 0,
            detail,
        };
        let running: Vec<String> = self
            .nodes
            .iter_mut()
            .filter_map(|node| node.running().then(|| node.url()))
            .collect();
        let url = running
            .first()
            .ok_or_else(|| ask("no node is running".to_owned()))?;
        let client = redis::Client::open(url.as_str()).map_err(|e| ask(e.to_string()))?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| ask(e.to_string()))?;
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(|e| ask(e.to_string()))?;
        // Each range: [start, end, [ip, port, id, ...], replicas...].
        let ranges: Vec<(i64, i64, (String, u16))> = {
            let raw: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async(&mut conn)
                .await
                .map_err(|e| ask(e.to_string()))?;
            raw.into_iter()
                .filter_map(|range| {
                    let mut parts = range.into_iter();
                    let start = redis::from_redis_value(parts.next()?).ok()?;
                    let end = redis::from_redis_value(parts.next()?).ok()?;
                    let master: Vec<redis::Value> = redis::from_redis_value(parts.next()?).ok()?;
                    let mut master = master.into_iter();
                    let ip = redis::from_redis_value(master.next()?).ok()?;
                    let port = redis::from_redis_value(master.next()?).ok()?;
                    Some((start, end, (ip, port)))
                })
                .collect()
        };
        let (_, _, (_, port)) = ranges
            .iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .ok_or_else(|| ask(format!("no node serves slot {slot}")))?;
        self.nodes
            .iter()
            .position(|node| node.port == *port)
            .ok_or_else(|| ask(format!("slot {slot} is served by unknown port {port}")))
    }

    /// Kills node `index` (like a crash); its data is lost. The other nodes keep serving their
    /// slots. Stopping a stopped node does nothing.
    pub fn stop_node(&mut self, index: usize) {
        if let Some(node) = self.nodes.get_mut(index) {
            node.stop();
        }
    }

    /// Starts node `index` again (empty, on the same ports and with its `nodes.conf`, so that it
    /// rejoins with its slots) and waits until the whole cluster is `ok` again.
    pub async fn restart_node(&mut self, index: usize) -> Result<(), RedisServerError> {
        let Some(node) = self.nodes.get_mut(index) else {
            return Err(RedisServerError::Spawn {
                detail: format!("no node {index} in a cluster of {CLUSTER_NODES}"),
            });
        };
        node.stop();
        let (port, bus_port) = (node.port, node.bus_port);
        let mut started = false;
        for _ in 0..PORT_ATTEMPTS {
            let mut fresh = ClusterNode::spawn(&self.dir, port, bus_port)?;
            if wait_node(&mut fresh).await? {
                self.nodes[index] = fresh;
                started = true;
                break;
            }
            // The old sockets may linger for a moment.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !started {
            return Err(RedisServerError::Exited {
                attempts: PORT_ATTEMPTS,
                port,
            });
        }
        self.wait_ok().await
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
        // Only our own nodes.conf files live there.
        let _ignored = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until a new node answers PING: `Ok(false)` if it exited (port taken), an error if it
/// never answered.
async fn wait_node(node: &mut ClusterNode) -> Result<bool, RedisServerError> {
    let started = Instant::now();
    while started.elapsed() < READY_TIMEOUT {
        if !node.running() {
            node.stop();
            return Ok(false);
        }
        if ping(node.port).await {
            return Ok(true);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    node.stop();
    Err(RedisServerError::NotReady {
        port: node.port,
        after_ms: millis(READY_TIMEOUT),
    })
}

/// `CLUSTER INFO` of the node on `port`.
async fn cluster_info(port: u16) -> Result<String, String> {
    let attempt = async {
        let client =
            redis::Client::open(format!("redis://127.0.0.1:{port}")).map_err(|e| e.to_string())?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async::<String>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(1), attempt)
        .await
        .map_err(|_| "no answer to CLUSTER INFO within 1 s".to_owned())?
}
