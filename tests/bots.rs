//! `meridian bots` as a real process: every bad input refused with what is wrong named, a lobby
//! that is not there given up after a bounded retry (the report written all the same), and
//! runs against a `meridian dev` world started as a child process — `wander`, `geo` (routing
//! through the link conditioner), `swarm`, `churn`, and a run stopped by Ctrl-C.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

const PIN: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// The binary with no `MERIDIAN_*` or `RUST_LOG` variable inherited from the test's environment.
fn meridian() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meridian"));
    for (name, _) in std::env::vars_os() {
        let name_str = name.to_string_lossy();
        if name_str.starts_with("MERIDIAN_") || name_str == "RUST_LOG" {
            cmd.env_remove(&name);
        }
    }
    cmd
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Outcome {
    /// The last line of stderr, where `main` reports its error.
    fn error_line(&self) -> &str {
        self.stderr.lines().last().unwrap_or_default()
    }

    /// Asserts exit `code` and an error line holding every one of `needles`.
    fn assert_error(&self, code: i32, needles: &[&str]) {
        assert_eq!(self.code, code, "stderr: {}", self.stderr);
        let line = self.error_line();
        assert!(line.starts_with("error: "), "{}", self.stderr);
        for needle in needles {
            assert!(line.contains(needle), "`{needle}` missing from: {line}");
        }
    }
}

fn run(cmd: &mut Command) -> Outcome {
    let out = cmd.output().expect("the meridian binary runs");
    Outcome {
        code: out.status.code().expect("exited, not killed by a signal"),
        stdout: String::from_utf8(out.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("UTF-8 stderr"),
    }
}

/// `meridian bots` against `lobby` with the test pin and `args`.
fn bots(lobby: &str, args: &[&str]) -> Outcome {
    run(meridian()
        .args(["bots", "--lobby", lobby, "--cert-sha256", PIN])
        .args(args))
}

fn read_report(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("report {} written: {e}", path.display()));
    serde_json::from_str(&text).expect("report is JSON")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

#[test]
fn zero_bots_are_refused() {
    bots("127.0.0.1:7100", &["--count", "0"]).assert_error(2, &["count must be at least 1"]);
    bots("127.0.0.1:7100", &["--count", "100001"]).assert_error(2, &["count 100001", "100000"]);
    let out = bots("127.0.0.1:7100", &["--count=-3"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--count"), "{}", out.stderr);
}

#[test]
fn a_duration_that_cannot_be_parsed_is_refused() {
    for bad in ["5 fortnights", "1.5m", "-3s"] {
        let out = run(meridian()
            .args(["bots", "--lobby", "127.0.0.1:7100", "--cert-sha256", PIN])
            .arg(format!("--duration={bad}")));
        out.assert_error(2, &[&format!("`{bad}`"), "duration"]);
    }
    bots("127.0.0.1:7100", &["--duration", "0s"]).assert_error(2, &["more than zero"]);
    bots("127.0.0.1:7100", &["--duration", "9000h"]).assert_error(2, &["`9000h`", "365 days"]);
}

#[test]
fn no_pin_and_no_insecure_dev_is_refused_naming_both() {
    let out = run(meridian().args(["bots", "--lobby", "127.0.0.1:7100"]));
    out.assert_error(
        2,
        &["no certificate pin", "--cert-sha256", "--insecure-dev"],
    );
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}

#[test]
fn a_pin_and_insecure_dev_together_are_refused() {
    let out = run(meridian()
        .args(["bots", "--lobby", "127.0.0.1:7100", "--insecure-dev"])
        .args(["--cert-sha256", PIN]));
    out.assert_error(
        2,
        &["--cert-sha256", "--insecure-dev", "mutually exclusive"],
    );
}

#[test]
fn insecure_dev_plays_against_a_dev_lobby_without_a_pin_and_says_so_loudly() {
    let _one = one_world();
    let dev = DevWorld::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let report = dir.path().join("insecure.json");
    let out = meridian()
        .args(["bots", "--lobby", &dev.lobby, "--insecure-dev"])
        .args(["--count", "3", "--duration", "2s", "--seed", "3"])
        .args(["--report", path_str(&report)])
        .output()
        .expect("meridian bots runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\n{stderr}",
        out.status.code()
    );
    assert!(
        stderr.contains("INSECURE") && stderr.contains("--insecure-dev"),
        "a loud warning: {stderr}"
    );
    assert!(
        stderr.contains(&dev.pin),
        "the certificate accepted is logged, and it is the lobby's: {stderr}"
    );
    assert_played("insecure", &read_report(&report), 3);
}

#[test]
fn a_bad_latency_matrix_is_named_with_its_line_and_column() {
    let dir = tempfile::tempdir().expect("temp dir");
    let matrix = dir.path().join("m.csv");
    std::fs::write(&matrix, "# rtt\nregion,a,b\na,1,x\nb,1,2\n").expect("write");
    let out = bots(
        "127.0.0.1:7100",
        &["--scenario", "geo", "--latency-matrix", path_str(&matrix)],
    );
    out.assert_error(
        2,
        &[
            &format!("{}:3:5", matrix.display()),
            "not a number",
            "\"x\"",
        ],
    );
    let missing = dir.path().join("nope.csv");
    let out = bots("127.0.0.1:7100", &["--latency-matrix", path_str(&missing)]);
    out.assert_error(2, &[path_str(&missing), "cannot read"]);
}

#[test]
fn an_unknown_region_is_named_with_the_known_ones() {
    let out = bots(
        "127.0.0.1:7100",
        &["--scenario", "geo", "--regions", "tokyo:2,mars"],
    );
    out.assert_error(2, &["\"mars\"", "tokyo", "washington", "frankfurt"]);
    // Regions mean nothing without a matrix; a weight must be a whole number.
    bots("127.0.0.1:7100", &["--regions", "tokyo"]).assert_error(2, &["--latency-matrix"]);
    bots(
        "127.0.0.1:7100",
        &["--scenario", "geo", "--regions", "tokyo:0"],
    )
    .assert_error(2, &["`tokyo:0`"]);
}

#[test]
fn cross_needs_a_world_map_that_reads() {
    bots("127.0.0.1:7100", &["--scenario", "cross"]).assert_error(2, &["--world"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let world = dir.path().join("w.toml");
    std::fs::write(&world, "[[zone]]\n").expect("write");
    let out = bots(
        "127.0.0.1:7100",
        &["--scenario", "cross", "--world", path_str(&world)],
    );
    out.assert_error(2, &[path_str(&world)]);
}

#[test]
fn an_unreachable_lobby_is_given_up_after_three_attempts_and_the_report_written() {
    // A port held by a plain UDP socket: nothing answers QUIC there.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind a loopback UDP port");
    let lobby = silent.local_addr().expect("address").to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let report = dir.path().join("r.json");
    let out = bots(
        &lobby,
        &[
            "--count",
            "4",
            "--duration",
            "5s",
            "--report",
            path_str(&report),
        ],
    );
    out.assert_error(
        1,
        &[&format!(
            "cannot reach the lobby at {lobby} after 3 attempts: "
        )],
    );
    let r = read_report(&report);
    assert_eq!(r["schema"], 1, "{r:#}");
    assert_eq!(r["bots"], 4, "{r:#}");
    assert_eq!(r["joined"], 0, "{r:#}");
    assert_eq!(r["join_failures"], 4, "{r:#}");
    assert_eq!(r["errors"]["lobby_unreachable"], 4, "{r:#}");
}

/// Held by each test that runs a dev world: one world at a time on the machine.
static ONE_WORLD: Mutex<()> = Mutex::new(());

fn one_world() -> std::sync::MutexGuard<'static, ()> {
    // A failed test poisons the lock; the next one may still run.
    ONE_WORLD.lock().unwrap_or_else(|p| p.into_inner())
}

/// A `meridian dev` world with no bots of its own, killed when dropped.
struct DevWorld {
    child: Child,
    lobby: String,
    pin: String,
    /// Its latest status line (one a second).
    status: Arc<Mutex<String>>,
    /// Its logs.
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl DevWorld {
    /// Starts the world and waits for its `lobby ADDR cert_sha256 HEX` line.
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("dev.log");
        let mut child = meridian()
            .args(["dev", "--bots", "0", "--npcs", "100"])
            .args(["--lobby-listen", "127.0.0.1:0"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("meridian dev starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        let status = Arc::new(Mutex::new(String::new()));
        let latest = status.clone();
        std::thread::spawn(move || {
            // Reads every line, so the world never blocks on a full pipe; hands over the lobby
            // line, keeps the latest status line.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("lobby ") {
                    let _ = tx.send(line);
                } else {
                    *latest.lock().unwrap_or_else(|p| p.into_inner()) = line;
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "no lobby line from meridian dev:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let parts: Vec<&str> = line.split_whitespace().collect();
        let ["lobby", lobby, "cert_sha256", pin] = parts[..] else {
            panic!("lobby line: {line}");
        };
        assert_eq!(pin.len(), 64, "{line}");
        Self {
            lobby: lobby.to_owned(),
            pin: pin.to_owned(),
            status,
            child,
            log,
            _dir: dir,
        }
    }

    /// Players on each shard, from the latest status line (`west 3p … | center 0p … | …`).
    fn players(&self) -> Vec<u64> {
        let line = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        line.split(" | ")
            .filter_map(|part| {
                let count = part.split_whitespace().nth(1)?.strip_suffix('p')?;
                count.parse().ok()
            })
            .collect()
    }

    fn bots(&self, args: &[&str]) -> Command {
        let mut cmd = meridian();
        cmd.args(["bots", "--lobby", &self.lobby, "--cert-sha256", &self.pin])
            .args(args);
        cmd
    }
}

impl Drop for DevWorld {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `meridian bots` run in the background, writing its report into `dir`.
struct BotsRun {
    name: &'static str,
    child: Child,
    report: PathBuf,
}

fn spawn_bots(dev: &DevWorld, dir: &Path, name: &'static str, args: &[&str]) -> BotsRun {
    let report = dir.join(format!("{name}.json"));
    let child = dev
        .bots(args)
        .args(["--report", path_str(&report)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("meridian bots starts");
    BotsRun {
        name,
        child,
        report,
    }
}

impl BotsRun {
    /// Waits for the run; asserts it succeeded; its report.
    fn finish(self, dev: &DevWorld) -> Value {
        let out = self.child.wait_with_output().expect("bots ran");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{}: exit {:?}\n{stderr}\ndev log:\n{}",
            self.name,
            out.status.code(),
            std::fs::read_to_string(&dev.log).unwrap_or_default()
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.starts_with("joined "), "{}: {stdout}", self.name);
        read_report(&self.report)
    }
}

/// Every bot joined, played with snapshots flowing, and met no error.
fn assert_played(name: &str, r: &Value, count: u64) {
    assert_eq!(r["schema"], 1, "{name}: {r:#}");
    assert_eq!(r["bots"], count, "{name}: {r:#}");
    assert_eq!(r["joined"], count, "{name}: {r:#}");
    assert_eq!(r["join_failures"], 0, "{name}: {r:#}");
    assert_eq!(r["disconnects"], 0, "{name}: {r:#}");
    assert_eq!(r["errors"], serde_json::json!({}), "{name}: {r:#}");
    assert_eq!(r["tick_hz"], 30, "{name}: {r:#}");
    assert!(
        r["snapshots_per_s"]["mean"].as_f64().expect("number") > 10.0,
        "{name}: snapshots flowing: {r:#}"
    );
    assert!(
        r["down_bytes_per_s"]["mean"].as_f64().expect("number") > 0.0,
        "{name}: {r:#}"
    );
}

#[test]
fn bots_play_every_scenario_against_a_running_dev_world() {
    let _one = one_world();
    let matrix = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/latency/rtt-10-regions.csv"
    );
    let header = std::fs::read_to_string(matrix)
        .expect("the shipped matrix")
        .lines()
        .find(|l| l.starts_with("region,"))
        .expect("a header line")
        .to_owned();
    for region in ["washington", "frankfurt", "tokyo"] {
        assert!(
            header.split(',').any(|r| r == region),
            "the matrix names the dev world's region {region}: {header}"
        );
    }
    let dev = DevWorld::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let common = ["--count", "20", "--ramp", "50", "--seed", "7"];
    // Geo alone: its routing rests on round trips measured through the conditioner, which a
    // world busy with other bots would blur. Then two runs at a time, so that a small machine
    // keeps up with 40 bots and the world.
    let phases: [&[(&str, &[&str])]; 3] = [
        &[(
            "geo",
            &[
                "--duration",
                "5s",
                "--scenario",
                "geo",
                "--latency-matrix",
                matrix,
            ],
        )],
        &[
            ("wander", &["--duration", "5s", "--scenario", "wander"]),
            ("swarm", &["--duration", "5s", "--scenario", "swarm"]),
        ],
        // Plays of 3 to 10 s in an 8 s run: some bots leave and join again.
        &[("churn", &["--duration", "8s", "--scenario", "churn"])],
    ];
    let mut reports = Vec::new();
    for phase in phases {
        let runs: Vec<BotsRun> = phase
            .iter()
            .map(|(name, args)| spawn_bots(&dev, dir.path(), name, &[&common[..], args].concat()))
            .collect();
        for run in runs {
            let name = run.name;
            reports.push((name, run.finish(&dev)));
        }
    }
    for (name, r) in &reports {
        assert_played(name, r, 20);
        match *name {
            "geo" => {
                let total = r["routing"]["total"].as_u64().expect("number");
                let optimal = r["routing"]["optimal"].as_u64().expect("number");
                assert_eq!(total, 20, "every bot routed: {r:#}");
                assert!(
                    optimal as f64 / total as f64 >= 0.99,
                    "each bot sent to the shard nearest its home region: {r:#}"
                );
            }
            "churn" => {
                let joins = r["churn"]["joins"].as_u64().expect("churn.joins");
                let leaves = r["churn"]["leaves"].as_u64().expect("churn.leaves");
                assert!(joins > 20, "bots joined again: {r:#}");
                // Every session in play ended with the bot leaving (none was lost).
                assert_eq!(leaves, joins, "{r:#}");
            }
            _ => {
                assert!(r.get("churn").is_none(), "{name}: {r:#}");
                assert_eq!(r["routing"]["total"], 0, "{name}: {r:#}");
            }
        }
    }
}

#[test]
fn ctrl_c_stops_the_bots_cleanly_and_writes_the_report() {
    let _one = one_world();
    let dev = DevWorld::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let report = dir.path().join("r.json");
    let mut child = dev
        .bots(&[
            "--count",
            "10",
            "--duration",
            "10m",
            "--report",
            path_str(&report),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("meridian bots starts");
    // stderr is not a terminal: a plain progress line a second. Wait until every bot plays.
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("joined 10 · playing 10 ") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let playing = rx.recv_timeout(Duration::from_secs(60));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let out = child.wait_with_output().expect("bots ran");
    let stderr = reader.join().expect("reader");
    assert!(playing.is_ok(), "the bots never all played:\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("stopping: the bots leave"), "{stderr}");
    let r = read_report(&report);
    assert_played("interrupted", &r, 10);
    assert!(
        r["duration_s"].as_f64().expect("number") < 600.0,
        "stopped before its duration: {r:#}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("joined 10/10"), "{stdout}");
    // The bots left (rather than going silent): the shards drop them at once, well before
    // a silent connection would time out (10 s).
    let deadline = Instant::now() + Duration::from_secs(4);
    loop {
        let players = dev.players();
        if players.len() == 3 && players.iter().all(|p| *p == 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "players still on the shards: {players:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
