//! End to end on loopback with the real binary: `meridian shard` with a development certificate,
//! then `meridian client --shard` with a ticket it mints from the shard's key. The client plays
//! and prints its lines; a wrong certificate pin or ticket key is refused; SIGTERM stops the
//! shard cleanly.
//!
//! Readiness is the shard's JSON log line "shard listening" (its `addr` and `cert_sha256`),
//! read as it comes; every wait is bounded; every child is killed when the test ends, passing or
//! not.

#[path = "common/lines.rs"]
mod lines;

use lines::forward_lines;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The ticket key shared by the shard and the client.
const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
/// A ticket key the shard does not know.
const OTHER_KEY: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

/// Generous for a debug build on a loaded machine: certificate, world and endpoint.
const SHARD_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// A client run of `--duration-s 3`, or a refused one, with room for connecting.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the shard may take to stop after SIGTERM.
const SHARD_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Interval of the polls of a child's exit.
const POLL: Duration = Duration::from_millis(20);

/// The binary with no `MERIDIAN_*` or `RUST_LOG` variable inherited from the test's environment.
fn meridian() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meridian"));
    for (name, _) in std::env::vars_os() {
        let name_str = name.to_string_lossy();
        if name_str.starts_with("MERIDIAN_") || name_str == "RUST_LOG" {
            cmd.env_remove(&name);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// A child process that is killed (and reaped) when dropped, unless it already exited.
struct ChildGuard {
    child: Child,
    what: &'static str,
}

impl ChildGuard {
    fn spawn(cmd: &mut Command, what: &'static str) -> Self {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Self { child, what }
    }

    /// Polls for the exit until `timeout`; `None` if the child still runs.
    fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() >= deadline => return None,
                Ok(None) => std::thread::sleep(POLL),
                Err(e) => panic!("cannot wait for {}: {e}", self.what),
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads a pipe whole on a thread.
fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// A shard running as a child process, its stderr read line by line on a thread.
struct Shard {
    process: ChildGuard,
    /// The lines of its stderr, as they come; disconnected once it exited.
    lines: Receiver<String>,
    /// Every line read so far, for failure messages.
    seen: Vec<String>,
    /// The address it listens on.
    addr: String,
    /// The SHA-256 of its certificate, as it logs it.
    cert_sha256: String,
}

impl Shard {
    /// Starts a shard on a loopback port chosen by the OS and waits for "shard listening".
    fn start() -> Self {
        let mut cmd = meridian();
        cmd.args([
            "--log-format",
            "json",
            "shard",
            "--dev-cert",
            "--ticket-key",
            KEY,
        ])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--npcs",
            "50",
            "--id",
            "s1",
            "--zone",
            "z1",
        ])
        // A small zone, so that NPCs are in view wherever the player spawns: with the
        // replication's interest radius of 60, at least a quarter disc of this 120 × 120 zone
        // (about 10 of the 50 NPCs on average) is always in view; in the default 1000 × 1000
        // zone it would be 0.6 on average.
        .args(["--zone-bounds", "0,0,120,120"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let mut process = ChildGuard::spawn(&mut cmd, "the shard");
        let stderr = process.child.stderr.take().expect("stderr is piped");
        let lines = forward_lines(stderr);
        let mut shard = Self {
            process,
            lines,
            seen: Vec::new(),
            addr: String::new(),
            cert_sha256: String::new(),
        };
        let deadline = Instant::now() + SHARD_READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match shard.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no \"shard listening\" within {SHARD_READY_TIMEOUT:?}:\n{}",
                        shard.log()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = shard.process.wait_for_exit(SHARD_STOP_TIMEOUT);
                    panic!(
                        "the shard exited ({status:?}) before listening:\n{}",
                        shard.log()
                    )
                }
            };
            let event: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            shard.seen.push(line);
            let fields = &event["fields"];
            if fields["message"] == "shard listening" {
                let field = |name: &str| {
                    fields[name]
                        .as_str()
                        .unwrap_or_else(|| panic!("no string `{name}` in {event}"))
                        .to_owned()
                };
                shard.addr = field("addr");
                shard.cert_sha256 = field("cert_sha256");
                return shard;
            }
        }
    }

    /// Moves the lines read since the last call into `seen`.
    fn drain(&mut self) {
        self.seen.extend(self.lines.try_iter());
    }

    /// Once the shard exited: moves every line left into `seen`, until its stderr closes
    /// (bounded by `timeout`).
    fn drain_to_end(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Disconnected | RecvTimeoutError::Timeout) => return,
            }
        }
    }

    fn log(&self) -> String {
        self.seen.join("\n")
    }

    /// Whether a line read so far has `message`.
    fn logged(&self, message: &str) -> bool {
        self.seen.iter().any(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .is_ok_and(|event| event["fields"]["message"] == message)
        })
    }
}

/// What a client run printed, and how it ended.
struct ClientRun {
    code: i32,
    stdout: String,
    stderr: String,
}

impl ClientRun {
    /// The last line of stderr, where `main` reports its error.
    fn error_line(&self) -> &str {
        self.stderr.lines().last().unwrap_or_default()
    }
}

/// Runs `meridian client --shard …` against `shard` to its end (bounded by [`CLIENT_TIMEOUT`]).
fn run_client(shard: &Shard, cert_sha256: &str, ticket_key: &str) -> ClientRun {
    let mut cmd = meridian();
    cmd.args([
        "client",
        "--shard",
        &shard.addr,
        "--cert-sha256",
        cert_sha256,
    ])
    .args([
        "--ticket-key",
        ticket_key,
        "--shard-id",
        "s1",
        "--zone",
        "z1",
    ])
    .args(["--duration-s", "3"])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut client = ChildGuard::spawn(&mut cmd, "the client");
    let stdout = read_all(client.child.stdout.take().expect("stdout is piped"));
    let stderr = read_all(client.child.stderr.take().expect("stderr is piped"));
    let status = client.wait_for_exit(CLIENT_TIMEOUT);
    drop(client);
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    let Some(status) = status else {
        panic!("the client ran past {CLIENT_TIMEOUT:?}:\nstdout:\n{stdout}\nstderr:\n{stderr}");
    };
    ClientRun {
        code: status
            .code()
            .expect("the client exited, not killed by a signal"),
        stdout,
        stderr,
    }
}

/// The number after `key` in `line`: `number_after("a snapshots/s=30 b", "snapshots/s=")`.
fn number_after(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[test]
fn number_after_reads_the_demo_line() {
    let line = "t=2s pos=(1.0, 2.0) in_view=51 (players 1, npcs 50, pickups 0) rtt=0.3ms \
                snapshots/s=30 down=12.0kB/s up=1.0kB/s score=0";
    assert_eq!(number_after(line, "snapshots/s="), Some(30));
    assert_eq!(number_after(line, "npcs "), Some(50));
    assert_eq!(number_after(line, "bots "), None);
}

#[test]
fn client_plays_on_a_shard_with_a_dev_ticket_and_the_shard_stops_on_sigterm() {
    let mut shard = Shard::start();
    assert_eq!(shard.cert_sha256.len(), 64, "{}", shard.cert_sha256);

    // The client plays for three seconds and prints a line a second.
    let played = run_client(&shard, &shard.cert_sha256, KEY);
    shard.drain();
    assert_eq!(
        played.code,
        0,
        "client failed:\nstdout:\n{}\nstderr:\n{}\nshard:\n{}",
        played.stdout,
        played.stderr,
        shard.log()
    );
    let lines: Vec<&str> = played
        .stdout
        .lines()
        .filter(|l| l.contains("snapshots/s="))
        .collect();
    assert!(lines.len() >= 2, "two lines expected:\n{}", played.stdout);
    let best_rate = lines
        .iter()
        .filter_map(|l| number_after(l, "snapshots/s="))
        .max();
    assert!(
        best_rate.is_some_and(|rate| rate >= 20),
        "no second with 20 snapshots or more:\n{}",
        played.stdout
    );
    assert!(
        lines
            .iter()
            .any(|l| number_after(l, "npcs ").is_some_and(|n| n > 0)),
        "no NPC in view:\n{}",
        played.stdout
    );
    assert!(!played.stderr.contains(KEY), "{}", played.stderr);

    // A wrong certificate pin: the client refuses the shard.
    let wrong_pin = if shard.cert_sha256.starts_with('0') {
        "1".repeat(64)
    } else {
        "0".repeat(64)
    };
    let refused = run_client(&shard, &wrong_pin, KEY);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    let error = refused.error_line();
    assert!(
        error.starts_with("error: ")
            && error.contains("does not match the pinned")
            && error.contains(&wrong_pin),
        "{}",
        refused.stderr
    );
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);

    // A ticket signed with another key: the shard refuses the client.
    let refused = run_client(&shard, &shard.cert_sha256, OTHER_KEY);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    let error = refused.error_line();
    assert!(
        error.starts_with("error: shard refused the session") && error.contains("ticket"),
        "{}",
        refused.stderr
    );
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);

    // SIGTERM: the shard stops cleanly.
    let pid = shard.process.child.id().to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(kill.success(), "kill -TERM {pid}: {kill}");
    let status = shard.process.wait_for_exit(SHARD_STOP_TIMEOUT);
    let Some(status) = status else {
        shard.drain();
        panic!(
            "the shard still runs {SHARD_STOP_TIMEOUT:?} after SIGTERM:\n{}",
            shard.log()
        );
    };
    shard.drain_to_end(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{status}:\n{}", shard.log());
    assert!(shard.logged("shard stopped"), "{}", shard.log());
    assert!(!shard.log().contains(KEY), "{}", shard.log());
}
