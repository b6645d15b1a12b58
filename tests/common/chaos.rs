//! The chaos suite's process harness: a real `redis-server` the tests can freeze (SIGSTOP),
//! stop and start again on the same port with its data, and real `meridian` processes — a
//! lobby, one shard per zone of a two-zone world map, standbys, a `meridian bots` run and
//! `meridian audit` — each with its log in the world's temp dir.
//!
//! Redis outages: two ways, both keeping the data.
//! - Frozen ([`RedisProc::freeze`], SIGSTOP; [`RedisProc::thaw`]): the server keeps its state
//!   and connections and answers nothing; the shards' calls time out.
//! - Stopped ([`RedisProc::stop`], SIGTERM; [`RedisProc::start_again`] on the same port and
//!   directory): connections are refused, then every client reconnects. The server runs with
//!   an append-only file (fsync once a second, completed by the shutdown), so it comes back
//!   with every acknowledged write: players, scores, epochs. (An fsync on every write slows a
//!   small machine's Redis past the shards' 500 ms timeouts under 300 bots.)
//!
//! The suite's `redis` fault is the stop and restart: it is what "Redis went down and came
//! back" means to an operator, and it exercises reconnection as well as the outage. Either way
//! keys keep their absolute expiry: leases and registry entries that ran out during the outage
//! are gone when it ends, as on a production server, and the shards must take them again.
//!
//! Crashes. Every process is watched: one that exits without being told to (or a log holding
//! `panicked at`) fails [`World::check_no_crash`]. Processes are killed when the world drops.

#![allow(dead_code, reason = "each test binary uses part of the harness")]

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use meridian_cluster::Store as _;
use meridian_cluster::audit::{HeldState, ShardPlayers};
use meridian_cluster::ownership::{Lease, Ownership, PlayerState};
use meridian_cluster::store::{LiveShard, StoreConfig, StoreHandle};
use meridian_protocol::{PlayerId, ZoneId};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The ticket key lobby and shards share.
pub const TICKET_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
/// The shards' admin token (`POST /drain`).
pub const ADMIN_TOKEN: &str = "chaos-admin-token-0123456789";
/// The shards' zone lease time-to-live (the shard's default): a dead shard's zone is free again
/// this long after its last renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(3);

/// Two zones side by side, 1000 × 1000 each, with 25 spawn points apiece 200 units apart (more
/// than the 60-unit interest radius twice over): bots start in small groups, so that the
/// replication of 300 bots stays cheap enough for a debug build, and the groups by the border
/// cross it now and then.
pub const MAP: &str = r#"
name = "chaos"
regions = ["here"]

[[zone]]
name = "a"
bounds = [0, 0, 1000, 1000]
region = "here"
spawn = [[100, 100], [300, 100], [500, 100], [700, 100], [940, 100], [100, 300], [300, 300], [500, 300], [700, 300], [940, 300], [100, 500], [300, 500], [500, 500], [700, 500], [940, 500], [100, 700], [300, 700], [500, 700], [700, 700], [940, 700], [100, 900], [300, 900], [500, 900], [700, 900], [940, 900]]

[[zone]]
name = "b"
bounds = [1000, 0, 2000, 1000]
region = "here"
spawn = [[1060, 100], [1300, 100], [1500, 100], [1700, 100], [1900, 100], [1060, 300], [1300, 300], [1500, 300], [1700, 300], [1900, 300], [1060, 500], [1300, 500], [1500, 500], [1700, 500], [1900, 500], [1060, 700], [1300, 700], [1500, 700], [1700, 700], [1900, 700], [1060, 900], [1300, 900], [1500, 900], [1700, 900], [1900, 900]]
"#;

/// The zones of [`MAP`].
pub const ZONES: [&str; 2] = ["a", "b"];

/// The binary under test (`CHAOS_BIN` if set: `scripts/chaos.sh` runs a release build), with
/// no `MERIDIAN_*` or `RUST_LOG` variable inherited.
pub fn meridian() -> Command {
    let bin =
        std::env::var_os("CHAOS_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_meridian").into());
    let mut cmd = Command::new(bin);
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if n.starts_with("MERIDIAN_") || n == "RUST_LOG" {
            cmd.env_remove(&name);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// A port that was free a moment ago.
fn free_tcp_port() -> Result<u16> {
    let l = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .context("binding a loopback port to find a free one")?;
    Ok(l.local_addr().context("local address")?.port())
}

/// Sends `signal` (`KILL`, `STOP`, `CONT`, `TERM`, `INT`) to process `pid` with kill(1).
pub fn signal(pid: u32, signal: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .with_context(|| format!("running kill -{signal} {pid}"))?;
    ensure!(status.success(), "kill -{signal} {pid} failed: {status}");
    Ok(())
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `timeout`.
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What became of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Runs as long as the world does.
    Lives,
    /// Killed on purpose (SIGKILL): its exit proves nothing.
    Killed,
    /// Told to exit (drain): it must exit with status 0.
    Exits,
    /// May exit by itself with status 0 (a shard that found its lease taken while frozen), or
    /// go on running.
    MayExit,
}

/// A child process with its log file, killed when dropped.
pub struct Proc {
    /// Its name in messages (`shard-a`, `lobby`…).
    pub name: String,
    child: Child,
    /// Its stderr (and stdout unless piped elsewhere).
    pub log: PathBuf,
    fate: Fate,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr into `<dir>/<name>.log`.
    pub fn spawn(name: &str, dir: &Path, cmd: &mut Command) -> Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)
            .with_context(|| format!("creating log {}", log.display()))?;
        let out = file.try_clone().context("log file handle")?;
        let child = cmd
            .stdout(out)
            .stderr(file)
            .spawn()
            .with_context(|| format!("spawning {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
            fate: Fate::Lives,
            status: None,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL (a crash, not a shutdown), reaped.
    pub fn kill9(&mut self) -> Result<()> {
        self.fate = Fate::Killed;
        self.child
            .kill()
            .with_context(|| format!("kill -9 {}", self.name))?;
        self.status = Some(self.child.wait().context("reaping")?);
        Ok(())
    }

    /// SIGSTOP: the process freezes, its sockets open.
    pub fn freeze(&self) -> Result<()> {
        signal(self.pid(), "STOP")
    }

    /// SIGCONT.
    pub fn thaw(&self) -> Result<()> {
        signal(self.pid(), "CONT")
    }

    /// SIGTERM, and from now on the process is expected to exit with status 0.
    pub fn terminate(&mut self) -> Result<()> {
        self.fate = Fate::Exits;
        signal(self.pid(), "TERM")
    }

    /// Marks the process as free to exit with status 0 by itself.
    pub fn may_exit(&mut self) {
        self.fate = Fate::MayExit;
    }

    /// Its exit status, once exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits at most `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let name = self.name.clone();
        poll(&format!("{name} to exit"), timeout, || {
            let s = self.exited();
            async move { s }
        })
        .await
    }

    /// The whole log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `Err` if the process crashed: exited when it should live, exited other than with 0 when
    /// told to exit, or panicked (its log says so).
    pub fn check_no_crash(&mut self) -> Result<()> {
        let log = self.log_text();
        if let Some(line) = log.lines().find(|l| l.contains("panicked at")) {
            bail!("{} panicked: {line}\n{}", self.name, self.tail(40));
        }
        match (self.fate, self.exited()) {
            (Fate::Lives, Some(status)) => {
                bail!(
                    "{} exited by itself ({status}):\n{}",
                    self.name,
                    self.tail(40)
                )
            }
            (Fate::Exits | Fate::MayExit, Some(status)) if !status.success() => {
                bail!("{} exited with {status}:\n{}", self.name, self.tail(40))
            }
            _ => Ok(()),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            // A frozen process dies of SIGKILL all the same.
            let _already_gone = self.child.kill();
            let _status = self.child.wait();
        }
    }
}

/// A `redis-server` on a fixed loopback port with its data in a directory (append-only file), so that it can be frozen, stopped and started again with its state.
pub struct RedisProc {
    port: u16,
    dir: PathBuf,
    logs: PathBuf,
    proc: Option<Proc>,
    starts: u32,
}

impl RedisProc {
    /// Starts a server on a free port, its data in `<dir>/redis`, and waits until it answers.
    pub async fn start(dir: &Path) -> Result<Self> {
        let data = dir.join("redis");
        std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
        let mut last = anyhow!("no port tried");
        for _ in 0..5 {
            let mut redis = Self {
                port: free_tcp_port()?,
                dir: data.clone(),
                logs: dir.to_owned(),
                proc: None,
                starts: 0,
            };
            match redis.spawn().await {
                Ok(()) => return Ok(redis),
                Err(e) => last = e,
            }
        }
        Err(last.context("redis-server did not start on 5 free ports"))
    }

    async fn spawn(&mut self) -> Result<()> {
        self.starts += 1;
        let name = format!("redis-{}", self.starts);
        let mut cmd = Command::new("redis-server");
        cmd.stdin(Stdio::null())
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--appendonly", "yes", "--appendfsync", "everysec"])
            .args(["--save", "", "--daemonize", "no", "--protected-mode", "no"]);
        let mut proc = Proc::spawn(&name, &self.logs, &mut cmd).context(
            "redis-server must be installed (scripts/test.sh installs it: apt-get install \
             redis-server)",
        )?;
        let port = self.port;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = proc.exited() {
                bail!(
                    "redis-server on {port} exited at start ({status}):\n{}",
                    proc.tail(10)
                );
            }
            if ping(port).await {
                self.proc = Some(proc);
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "redis-server on {port} did not answer within 10 s:\n{}",
                proc.tail(10)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGSTOP: the server keeps its connections and state and answers nothing.
    pub fn freeze(&self) -> Result<()> {
        self.proc.as_ref().context("redis is not running")?.freeze()
    }

    /// SIGCONT.
    pub fn thaw(&self) -> Result<()> {
        self.proc.as_ref().context("redis is not running")?.thaw()
    }

    /// SIGTERM and waits for the exit: the append-only file holds every acknowledged write;
    /// clients get connection refused until [`RedisProc::start_again`].
    pub async fn stop(&mut self) -> Result<()> {
        let mut proc = self.proc.take().context("redis is not running")?;
        proc.terminate()?;
        let status = proc.wait_exit(Duration::from_secs(10)).await?;
        ensure!(
            status.success(),
            "redis-server stopped with {status}:\n{}",
            proc.tail(20)
        );
        Ok(())
    }

    /// Starts the server again on the same port with the same data.
    pub async fn start_again(&mut self) -> Result<()> {
        ensure!(self.proc.is_none(), "redis is running");
        let mut last = anyhow!("not tried");
        // The old listening socket may linger a moment.
        for _ in 0..20 {
            match self.spawn().await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last.context(format!(
            "redis-server did not restart on port {}",
            self.port
        )))
    }

    /// `Err` if the server crashed (a server stopped by [`RedisProc::stop`] did not).
    pub fn check_no_crash(&mut self) -> Result<()> {
        self.proc.as_mut().map_or(Ok(()), Proc::check_no_crash)
    }
}

/// Whether a server on `port` answers PING now (within 500 ms).
async fn ping(port: u16) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
        s.write_all(b"PING\r\n").await?;
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(&buf == b"+PONG\r\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), attempt).await,
        Ok(Ok(true))
    )
}

/// How the shards of a world are set up.
#[derive(Clone, Debug)]
pub struct WorldOptions {
    /// `--checkpoint-ms`.
    pub checkpoint_ms: u64,
    /// `--drain-deadline-ms`.
    pub drain_deadline_ms: u64,
    /// `--tick-hz`: 10 by default, which a debug build keeps up with under 100 bots on two
    /// cores (faults do not depend on the tick rate).
    pub tick_hz: u16,
}

impl Default for WorldOptions {
    fn default() -> Self {
        Self {
            checkpoint_ms: 500,
            drain_deadline_ms: 10_000,
            tick_hz: 10,
        }
    }
}

/// Redis, a lobby, and shards: one per zone of [`MAP`] plus standbys.
pub struct World {
    /// The scratch directory: map, logs, reports, Redis data.
    pub dir: tempfile::TempDir,
    /// The shared state.
    pub redis: RedisProc,
    /// A client of it, for the test's own reads.
    pub store: StoreHandle,
    /// The lobby process.
    pub lobby: Proc,
    /// The lobby's QUIC address.
    pub lobby_addr: String,
    /// Its certificate's SHA-256, hex.
    pub lobby_pin: String,
    /// The shards, standbys included, in start order.
    pub shards: Vec<Proc>,
    map: PathBuf,
    opts: WorldOptions,
    http: reqwest::Client,
}

impl World {
    /// Starts Redis, the lobby, a shard per zone (`shard-a`, `shard-b`) and waits until both
    /// hold their lease and the lobby listens.
    pub async fn start(opts: WorldOptions) -> Result<Self> {
        // CHAOS_KEEP=1 keeps the logs, reports and Redis data for a look after the run.
        let dir = tempfile::Builder::new()
            .prefix("meridian-chaos.")
            .disable_cleanup(std::env::var_os("CHAOS_KEEP").is_some())
            .tempdir()
            .context("temp dir")?;
        let map = dir.path().join("chaos.toml");
        std::fs::write(&map, MAP).with_context(|| format!("writing {}", map.display()))?;
        let redis = RedisProc::start(dir.path()).await?;
        let store = StoreHandle::open(&redis.url(), &StoreConfig::default())
            .await
            .context("opening the store")?;
        let lobby = Proc::spawn(
            "lobby",
            dir.path(),
            meridian()
                .args(["lobby", "--listen", "127.0.0.1:0", "--dev-cert"])
                .args(["--redis", &redis.url(), "--ticket-key", TICKET_KEY]),
        )?;
        let mut world = Self {
            dir,
            redis,
            store,
            lobby,
            lobby_addr: String::new(),
            lobby_pin: String::new(),
            shards: Vec::new(),
            map,
            opts,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(1))
                .build()
                .context("HTTP client")?,
        };
        let (addr, pin) = world.lobby_line().await?;
        world.lobby_addr = addr;
        world.lobby_pin = pin;
        for zone in ZONES {
            world.start_shard(&format!("shard-{zone}"), zone)?;
        }
        for zone in ZONES {
            world
                .wait_lease(zone, Duration::from_secs(60), |l| {
                    l.owner.as_str() == format!("shard-{zone}")
                })
                .await?;
        }
        world.wait_admin(Duration::from_secs(30)).await?;
        Ok(world)
    }

    /// The lobby's `lobby listening addr=… cert_sha256=…` log line, read.
    async fn lobby_line(&mut self) -> Result<(String, String)> {
        let lobby = &mut self.lobby;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = lobby.log_text();
            if let Some(line) = text.lines().find(|l| l.contains("lobby listening")) {
                let field = |name: &str| {
                    line.split_whitespace()
                        .find_map(|w| w.strip_prefix(name))
                        .map(str::to_owned)
                };
                let addr = field("addr=").with_context(|| format!("addr in: {line}"))?;
                let pin = field("cert_sha256=").with_context(|| format!("pin in: {line}"))?;
                return Ok((addr, pin));
            }
            if let Some(status) = lobby.exited() {
                bail!("the lobby exited ({status}):\n{}", lobby.tail(30));
            }
            ensure!(
                Instant::now() < deadline,
                "the lobby did not listen within 60 s:\n{}",
                lobby.tail(30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn shard_command(&self, id: &str) -> Command {
        let mut cmd = meridian();
        cmd.args(["shard", "--dev-cert", "--ticket-key", TICKET_KEY])
            .args(["--redis", &self.redis.url()])
            .arg("--world")
            .arg(&self.map)
            .args(["--id", id, "--region", "here", "--npcs", "0"])
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--admin-token", ADMIN_TOKEN])
            .args(["--tick-hz", &self.opts.tick_hz.to_string()])
            .args(["--checkpoint-ms", &self.opts.checkpoint_ms.to_string()])
            .args([
                "--drain-deadline-ms",
                &self.opts.drain_deadline_ms.to_string(),
            ]);
        cmd
    }

    /// Starts shard `id` for `zone`.
    pub fn start_shard(&mut self, id: &str, zone: &str) -> Result<()> {
        let mut cmd = self.shard_command(id);
        cmd.args(["--zone", zone]);
        let proc = Proc::spawn(id, self.dir.path(), &mut cmd)?;
        self.shards.push(proc);
        Ok(())
    }

    /// Starts shard `id` standing by for every zone of the map, and waits until it says so.
    pub async fn start_standby(&mut self, id: &str) -> Result<()> {
        let mut cmd = self.shard_command(id);
        cmd.args(["--standby-for", &ZONES.join(",")]);
        let proc = Proc::spawn(id, self.dir.path(), &mut cmd)?;
        self.shards.push(proc);
        let proc = self.shard(id)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !proc.log_text().contains("standing by") {
            if let Some(status) = proc.exited() {
                bail!("{id} exited ({status}):\n{}", proc.tail(30));
            }
            ensure!(
                Instant::now() < deadline,
                "{id} did not stand by within 60 s:\n{}",
                proc.tail(30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// The shard process named `id`.
    pub fn shard(&mut self, id: &str) -> Result<&mut Proc> {
        self.shards
            .iter_mut()
            .find(|p| p.name == id)
            .with_context(|| format!("no shard `{id}` started"))
    }

    /// The lease of `zone` now (`None` while free).
    pub async fn lease(&self, zone: &str) -> Result<Option<Lease>> {
        let zone = ZoneId::new(zone).map_err(|e| anyhow!("zone `{zone}`: {e}"))?;
        self.store
            .get_lease(&zone)
            .await
            .with_context(|| format!("reading the lease of zone {zone}"))
    }

    /// Waits until `zone`'s lease satisfies `ok`; the lease.
    pub async fn wait_lease(
        &self,
        zone: &str,
        timeout: Duration,
        ok: impl Fn(&Lease) -> bool,
    ) -> Result<Lease> {
        let ok = &ok;
        poll(
            &format!("the lease of zone {zone}"),
            timeout,
            || async move { self.lease(zone).await.ok().flatten().filter(|l| ok(l)) },
        )
        .await
        .with_context(|| self.shard_tails())
    }

    /// Waits until every zone has a live holder and every serving shard publishes its admin
    /// address (a standby publishes none while it waits).
    pub async fn wait_admin(&self, timeout: Duration) -> Result<Vec<LiveShard>> {
        poll("the shards' admin addresses", timeout, || async move {
            let live = self.store.live_shards().await.ok()?;
            let mut held = 0;
            for zone in ZONES {
                let lease = self.lease(zone).await.ok().flatten()?;
                held += usize::from(live.iter().any(|s| s.record.id == lease.owner));
            }
            let published = live
                .iter()
                .filter(|s| {
                    ZONES
                        .iter()
                        .any(|z| s.record.zone.as_str() == *z && !s.record.draining)
                })
                .all(|s| s.record.admin_addr.is_some());
            (held == ZONES.len() && published).then_some(live)
        })
        .await
        .with_context(|| self.shard_tails())
    }

    /// Players in play on the shards that hold the zones: held `active` (or `outgoing`, frozen
    /// at a border on their way to the neighbour) by the holder of a zone's lease, under that
    /// lease's epoch, counted once each. A shard that does not answer within 1 s counts none.
    pub async fn players_in_play(&self) -> Result<usize> {
        let live = self
            .store
            .live_shards()
            .await
            .context("reading the registry")?;
        let mut in_play = std::collections::BTreeSet::new();
        for zone in ZONES {
            let Some(lease) = self.lease(zone).await? else {
                continue;
            };
            let Some(admin) = live
                .iter()
                .find(|s| s.record.id == lease.owner)
                .and_then(|s| s.record.admin_addr.clone())
            else {
                continue;
            };
            let answer = self
                .http
                .get(format!("http://{admin}/players"))
                .send()
                .await
                .and_then(reqwest::Response::error_for_status);
            let Ok(answer) = answer else { continue };
            let Ok(held) = answer.json::<ShardPlayers>().await else {
                continue;
            };
            if held.lease_epoch != Some(lease.epoch) {
                continue;
            }
            in_play.extend(
                held.players
                    .iter()
                    .filter(|p| matches!(p.state, HeldState::Active | HeldState::Outgoing))
                    .map(|p| p.player),
            );
        }
        Ok(in_play.len())
    }

    /// Waits until every one of `bots` is in play: the bots say so, and the shards holding the
    /// zones hold each of them active. How long it took.
    pub async fn wait_all_in_play(&self, bots: &Bots, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        let want = bots.count as usize;
        let mut seen;
        loop {
            let on_shards = self.players_in_play().await.unwrap_or(0);
            seen = (bots.playing(), on_shards);
            if seen.0 == Some(bots.count) && on_shards == want {
                return Ok(started.elapsed());
            }
            if let Some(status) = bots.exited() {
                bail!("{} exited ({status}):\n{}", bots.name, bots.tail(20));
            }
            if started.elapsed() >= timeout {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "{}: not every one of {want} bots in play within {timeout:?}: the bots say {:?}, \
             the shards hold {} active\n--- bots ---\n{}{}",
            bots.name,
            seen.0,
            seen.1,
            bots.tail(10),
            self.shard_tails()
        )
    }

    /// The last lines of every shard's log, for failure messages.
    pub fn shard_tails(&self) -> String {
        let mut out = String::new();
        for p in &self.shards {
            out.push_str(&format!("\n--- {} ---\n{}", p.name, p.tail(15)));
        }
        out
    }

    /// Opens a new client of the store (after Redis came back on the same port).
    pub async fn reopen_store(&mut self) -> Result<()> {
        self.store = StoreHandle::open(&self.redis.url(), &StoreConfig::default())
            .await
            .context("opening the store again")?;
        Ok(())
    }

    /// Every player record in shared state.
    pub async fn owned(&self) -> Result<Vec<Ownership>> {
        self.store
            .owned_players()
            .await
            .context("reading the players' records")
    }

    /// The shard process holding `zone`'s lease now.
    pub async fn holder(&mut self, zone: &str) -> Result<&mut Proc> {
        let lease = self
            .lease(zone)
            .await?
            .with_context(|| format!("zone {zone} has no lease holder"))?;
        self.shard(lease.owner.as_str())
    }

    /// Every player's saved state in shared state.
    pub async fn saved_states(&self) -> Result<BTreeMap<PlayerId, PlayerState>> {
        let owned = self
            .store
            .owned_players()
            .await
            .context("reading the players' records")?;
        Ok(owned
            .into_iter()
            .filter_map(|o| Some((o.player, o.state?)))
            .collect())
    }

    /// Runs `meridian audit --json` once: its exit code and report.
    pub async fn audit_once(&self) -> Result<(i32, Value)> {
        let url = self.redis.url();
        let out = tokio::task::spawn_blocking(move || {
            meridian()
                .args(["audit", "--json", "--settle-ms", "500", "--redis", &url])
                .output()
        })
        .await
        .context("audit task")?
        .context("running meridian audit")?;
        let code = out.status.code().unwrap_or(-1);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report: Value = serde_json::from_str(&stdout).with_context(|| {
            format!(
                "audit exit {code}, stdout not JSON: {stdout}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        Ok((code, report))
    }

    /// Runs the audit until it is clean (exit 0) with `players` judged owned once, for at most
    /// `timeout` (recovery in flight may leave players orphaned a moment); the clean report.
    pub async fn wait_audit_clean(&self, players: u64, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let (code, report) = self.audit_once().await?;
            if code == 0 && report["owned_once"].as_u64() == Some(players) {
                return Ok(report);
            }
            if Instant::now() >= deadline {
                bail!(
                    "the audit was not clean with {players} players owned once within \
                     {timeout:?}; last (exit {code}): {report:#}{}",
                    self.shard_tails()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `Err` naming the first process that crashed (Redis, the lobby, any shard).
    pub fn check_no_crash(&mut self) -> Result<()> {
        self.redis.check_no_crash()?;
        self.lobby.check_no_crash()?;
        for p in &mut self.shards {
            p.check_no_crash()?;
        }
        Ok(())
    }

    /// Starts `meridian bots` playing `scenario` (a long duration: [`Bots::finish`] stops it).
    pub fn bots(
        &self,
        name: &str,
        scenario: &str,
        count: u32,
        ramp: u32,
        seed: u64,
    ) -> Result<Bots> {
        let report = self.dir.path().join(format!("{name}.json"));
        let log = self.dir.path().join(format!("{name}.log"));
        let mut child = meridian()
            .args(["bots", "--lobby", &self.lobby_addr])
            .args(["--cert-sha256", &self.lobby_pin])
            .args(["--count", &count.to_string(), "--ramp", &ramp.to_string()])
            .args(["--duration", "10m", "--scenario", scenario])
            .args(["--seed", &seed.to_string()])
            .arg("--report")
            .arg(&report)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning meridian bots")?;
        let stderr = child.stderr.take().context("piped stderr")?;
        let playing = Arc::new(Mutex::new(None));
        let latest = playing.clone();
        let mut file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        // Reads every line (the bots never block on a full pipe), keeps the latest count of
        // bots playing, copies the lines to the log.
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(n) = playing_in(&line) {
                    *latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(n);
                }
                let _ = writeln!(file, "{line}");
            }
        });
        Ok(Bots {
            name: name.to_owned(),
            count,
            child: Mutex::new(child),
            playing,
            reader: Some(reader),
            report,
            log,
        })
    }
}

/// The count of `playing N` in a progress line of `meridian bots`.
fn playing_in(line: &str) -> Option<u32> {
    let rest = line.split("playing ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// A `meridian bots` run in the background.
pub struct Bots {
    /// Its name (report and log file names).
    pub name: String,
    /// Bots asked for.
    pub count: u32,
    child: Mutex<Child>,
    playing: Arc<Mutex<Option<u32>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// The report it writes when it ends.
    pub report: PathBuf,
    /// Its progress lines and errors.
    pub log: PathBuf,
}

impl Bots {
    /// Bots in play at the latest progress line (one a second).
    pub fn playing(&self) -> Option<u32> {
        *self.playing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last lines of its log.
    pub fn tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Its exit status, once it exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        child.try_wait().ok().flatten()
    }

    /// Stops the run (SIGINT: the bots leave), waits for it and reads its report.
    pub async fn finish(mut self) -> Result<Value> {
        let pid = self.child.lock().unwrap_or_else(|p| p.into_inner()).id();
        signal(pid, "INT")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.exited() {
                break status;
            }
            if Instant::now() >= deadline {
                bail!("{} did not stop within 60 s of SIGINT", self.name);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        ensure!(
            status.success(),
            "{} exited with {status}:\n{}",
            self.name,
            self.tail(30)
        );
        let text = std::fs::read_to_string(&self.report)
            .with_context(|| format!("reading {}", self.report.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", self.report.display()))
    }
}

impl Drop for Bots {
    /// A run dropped unfinished (a failed test) is stopped with SIGINT first, so that its report
    /// is written for a look (`CHAOS_KEEP=1`), and killed if it has not stopped within 10 s.
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|p| p.into_inner());
        if matches!(child.try_wait(), Ok(None)) && signal(child.id(), "INT").is_ok() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _already_gone = child.kill();
        let _status = child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_give_the_bots_in_play() {
        assert_eq!(
            playing_in("bots started 300/300 joined 300 · playing 298 · rtt p50 1.0 ms"),
            Some(298)
        );
        assert_eq!(playing_in("stopping: the bots leave"), None);
    }
}
