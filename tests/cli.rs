//! The `meridian` command line, run as a real process: help and version, exit codes, config
//! files, environment variables and their precedence, validation errors, start-up logs.
//!
//! A shard whose configuration is valid really starts; these tests give it a `--listen` address
//! a [`BusyPort`] holds, so it stops at once failing to bind (exit 1) instead of running.
//! `tests/shard_client.rs` runs shards and clients for real.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

const ROLES: [&str; 6] = ["dev", "lobby", "shard", "client", "bots", "audit"];

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

    /// Asserts a configuration error: exit 2, stderr exactly one line `error: …` holding
    /// every one of `needles`, and nothing on stdout.
    fn assert_config_error(&self, needles: &[&str]) {
        assert_eq!(self.code, 2, "stderr: {}", self.stderr);
        assert_eq!(
            self.stderr.lines().count(),
            1,
            "one line expected: {}",
            self.stderr
        );
        assert!(self.stderr.starts_with("error: "), "{}", self.stderr);
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "`{needle}` missing from: {}",
                self.stderr
            );
        }
        assert!(self.stdout.is_empty(), "stdout: {}", self.stdout);
    }

    /// Asserts that the configuration was valid and the shard started, then stopped on the
    /// `busy` port it was told to listen on (exit 1).
    fn assert_shard_ran(&self, busy: &BusyPort) {
        assert_eq!(self.code, 1, "stderr: {}", self.stderr);
        let expected = format!("error: cannot bind UDP {}: ", busy.addr);
        assert!(
            self.error_line().starts_with(&expected),
            "`{expected}` expected: {}",
            self.stderr
        );
        assert!(
            self.stderr.contains("effective configuration"),
            "{}",
            self.stderr
        );
    }
}

/// A loopback UDP port held by the test: a shard told to listen on it fails to bind.
struct BusyPort {
    _socket: UdpSocket,
    addr: SocketAddr,
    /// `addr` as text, for command lines and files.
    text: String,
}

impl BusyPort {
    fn new() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a loopback UDP port");
        let addr = socket.local_addr().expect("local address");
        Self {
            _socket: socket,
            addr,
            text: addr.to_string(),
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

fn meridian_run(args: &[&str]) -> Outcome {
    run(meridian().args(args))
}

/// A config file in a fresh temporary directory (kept alive by the returned guard).
fn config_file(content: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("role.toml");
    std::fs::write(&path, content).expect("write config");
    (dir, path)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

#[test]
fn help_lists_the_six_roles_with_a_description() {
    let out = meridian_run(&["--help"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for role in ROLES {
        let line = out
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{role} ")))
            .unwrap_or_else(|| panic!("`{role}` missing from help:\n{}", out.stdout));
        let description = line.trim_start()[role.len()..].trim();
        assert!(
            description.len() > 10,
            "`{role}` has no description: {line:?}"
        );
    }
    assert!(out.stdout.contains("--log-format"), "{}", out.stdout);
}

#[test]
fn each_role_help_mentions_each_of_its_flags_and_variables() {
    let flags: [(&str, &[&str]); 6] = [
        (
            "dev",
            &[
                "bots",
                "duration",
                "report",
                "store",
                "scenario",
                "tick-hz",
                "npcs",
                "admin-listen",
                "lobby-listen",
            ],
        ),
        (
            "lobby",
            &[
                "listen",
                "redis",
                "ticket-key",
                "cert",
                "key",
                "dev-cert",
                "max-frame-bytes",
                "keep-alive-ms",
                "idle-timeout-ms",
                "admin-listen",
            ],
        ),
        (
            "shard",
            &[
                "id",
                "zone",
                "listen",
                "public-addr",
                "zone-bounds",
                "tick-hz",
                "npcs",
                "ticket-key",
                "cert",
                "key",
                "dev-cert",
                "redis",
                "max-frame-bytes",
                "keep-alive-ms",
                "idle-timeout-ms",
                "admin-listen",
            ],
        ),
        (
            "client",
            &[
                "lobby",
                "shard",
                "cert-sha256",
                "insecure-dev",
                "name",
                "ticket-key",
                "shard-id",
                "zone",
                "duration-s",
            ],
        ),
        (
            "bots",
            &[
                "lobby",
                "cert-sha256",
                "insecure-dev",
                "count",
                "ramp",
                "duration",
                "scenario",
                "latency-matrix",
                "regions",
                "world",
                "seed",
                "report",
            ],
        ),
        ("audit", &["redis", "prefix", "settle-ms", "json"]),
    ];
    for (role, role_flags) in flags {
        let out = meridian_run(&[role, "--help"]);
        assert_eq!(out.code, 0, "{role}: {}", out.stderr);
        for flag in role_flags.iter().chain(&["config", "log-format"]) {
            assert!(
                out.stdout.contains(&format!("--{flag}")),
                "{role} help lacks --{flag}"
            );
            let var = format!("MERIDIAN_{}", flag.replace('-', "_").to_uppercase());
            assert!(out.stdout.contains(&var), "{role} help lacks {var}");
        }
        assert!(
            out.stdout.contains("[default: "),
            "{role} help states no default"
        );
    }
}

#[test]
fn help_never_shows_secret_environment_values() {
    for role in ["shard", "lobby", "client"] {
        let out = run(meridian()
            .args([role, "--help"])
            .env("MERIDIAN_TICKET_KEY", KEY)
            .env("MERIDIAN_REDIS", "redis://app:s3cret@db:6380"));
        assert_eq!(out.code, 0);
        assert!(out.stdout.contains("MERIDIAN_TICKET_KEY"), "{role}");
        assert!(
            !out.stdout.contains(KEY) && !out.stdout.contains("s3cret"),
            "{role}: {}",
            out.stdout
        );
    }
}

#[test]
fn version_names_the_crate_and_protocol_versions() {
    let out = meridian_run(&["--version"]);
    assert_eq!(out.code, 0);
    assert_eq!(
        out.stdout.trim(),
        format!("meridian {} (protocol 1)", env!("CARGO_PKG_VERSION"))
    );
    assert!(out.stdout.contains("protocol 1"));
}

#[test]
fn unknown_subcommand_and_unknown_flag_exit_2() {
    let out = meridian_run(&["serve"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("serve"), "{}", out.stderr);
    let out = meridian_run(&["shard", "--tickhz", "30"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("--tickhz"), "{}", out.stderr);
    let out = meridian_run(&[]);
    assert_eq!(out.code, 2, "no subcommand");
    let out = meridian_run(&["shard", "--tick-hz", "fast"]);
    assert_eq!(out.code, 2, "a value clap cannot parse");
    let out = meridian_run(&["--log-format", "xml", "dev"]);
    assert_eq!(out.code, 2, "bad log format");
}

#[test]
fn shard_without_ticket_key_exits_2() {
    let out = meridian_run(&["shard", "--dev-cert"]);
    out.assert_config_error(&["ticket key", "--ticket-key", "MERIDIAN_TICKET_KEY"]);
}

#[test]
fn bad_ticket_key_is_named_but_never_echoed() {
    let bad = format!("{}zz", &KEY[..62]);
    let out = meridian_run(&["shard", "--dev-cert", "--ticket-key", &bad]);
    out.assert_config_error(&["ticket key"]);
    assert!(!out.stderr.contains(&KEY[..62]), "{}", out.stderr);
}

#[test]
fn unknown_key_in_config_file_names_file_line_and_key() {
    let (_dir, path) = config_file("zone = \"west\"\ndev_cert = true\ntickhz = 30\n");
    let out = meridian_run(&["shard", "--config", path_str(&path), "--ticket-key", KEY]);
    out.assert_config_error(&[path_str(&path), "line 3", "column 1", "tickhz", "tick_hz"]);
}

#[test]
fn wrong_value_type_in_config_file_names_the_key() {
    let (_dir, path) = config_file("dev_cert = true\ntick_hz = \"fast\"\n");
    let out = meridian_run(&["shard", "--config", path_str(&path), "--ticket-key", KEY]);
    out.assert_config_error(&[path_str(&path), "line 2", "key `tick_hz`"]);
}

#[test]
fn unreadable_config_file_exits_2_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nope.toml");
    let out = meridian_run(&["lobby", "--config", path_str(&missing)]);
    out.assert_config_error(&["cannot read config file", path_str(&missing), "os error"]);
    // The same through MERIDIAN_CONFIG, and for a directory.
    let out = run(meridian().arg("bots").env("MERIDIAN_CONFIG", dir.path()));
    out.assert_config_error(&[path_str(dir.path())]);
}

#[test]
fn bad_toml_syntax_exits_2_with_the_line() {
    let (_dir, path) = config_file("dev_cert = true\nnpcs = = 5\n");
    let out = meridian_run(&["shard", "--config", path_str(&path), "--ticket-key", KEY]);
    out.assert_config_error(&[path_str(&path), "TOML parse error", "line 2"]);
}

/// A shard file that is valid but for its `tick_hz`, listening on `busy`.
fn shard_file(tick_hz: u16, busy: &BusyPort) -> (tempfile::TempDir, PathBuf) {
    config_file(&format!(
        "ticket_key = \"{KEY}\"\ndev_cert = true\ntick_hz = {tick_hz}\nlisten = \"{}\"\n",
        busy.text
    ))
}

#[test]
fn file_overrides_defaults() {
    let busy = BusyPort::new();
    let (_dir, path) = shard_file(0, &busy);
    let out = meridian_run(&["shard", "--config", path_str(&path)]);
    out.assert_config_error(&["tick_hz 0"]);
    let (_dir, path) = shard_file(60, &busy);
    let out = meridian_run(&["shard", "--config", path_str(&path)]);
    out.assert_shard_ran(&busy);
    assert!(out.stderr.contains("tick_hz: 60"), "{}", out.stderr);
}

#[test]
fn flag_overrides_file() {
    let busy = BusyPort::new();
    let (_dir, path) = shard_file(0, &busy);
    let out = meridian_run(&["shard", "--config", path_str(&path), "--tick-hz", "30"]);
    out.assert_shard_ran(&busy);
    assert!(out.stderr.contains("tick_hz: 30"), "{}", out.stderr);
}

#[test]
fn environment_overrides_file() {
    let busy = BusyPort::new();
    let (_dir, path) = shard_file(30, &busy);
    let out = run(meridian()
        .args(["shard", "--config", path_str(&path)])
        .env("MERIDIAN_TICK_HZ", "0"));
    out.assert_config_error(&["tick_hz 0"]);
    let (_dir, path) = shard_file(0, &busy);
    let out = run(meridian()
        .args(["shard", "--config", path_str(&path)])
        .env("MERIDIAN_TICK_HZ", "30"));
    out.assert_shard_ran(&busy);
    assert!(out.stderr.contains("tick_hz: 30"), "{}", out.stderr);
}

#[test]
fn flag_overrides_environment() {
    let busy = BusyPort::new();
    let out = run(meridian()
        .args([
            "shard",
            "--dev-cert",
            "--tick-hz",
            "30",
            "--listen",
            &busy.text,
        ])
        .env("MERIDIAN_TICKET_KEY", KEY)
        .env("MERIDIAN_TICK_HZ", "0"));
    out.assert_shard_ran(&busy);
    assert!(out.stderr.contains("tick_hz: 30"), "{}", out.stderr);
    let out = run(meridian()
        .args(["shard", "--dev-cert", "--tick-hz", "0"])
        .env("MERIDIAN_TICKET_KEY", KEY)
        .env("MERIDIAN_TICK_HZ", "30"));
    out.assert_config_error(&["tick_hz 0"]);
}

#[test]
fn environment_can_turn_off_a_boolean_the_file_turned_on() {
    let busy = BusyPort::new();
    let (_dir, path) = shard_file(30, &busy);
    let out = run(meridian()
        .args(["shard", "--config", path_str(&path)])
        .env("MERIDIAN_DEV_CERT", "false"));
    out.assert_config_error(&["no TLS certificate"]);
    let out = meridian_run(&["shard", "--config", path_str(&path), "--dev-cert=false"]);
    out.assert_config_error(&["no TLS certificate"]);
}

#[test]
fn config_file_comes_from_the_environment_too() {
    let busy = BusyPort::new();
    let (_dir, path) = shard_file(0, &busy);
    let out = run(meridian().arg("shard").env("MERIDIAN_CONFIG", &path));
    out.assert_config_error(&["tick_hz 0"]);
}

#[test]
fn bots_count_zero_exits_2() {
    let out = meridian_run(&[
        "bots",
        "--lobby",
        "127.0.0.1:7100",
        "--insecure-dev",
        "--count",
        "0",
    ]);
    out.assert_config_error(&["count must be at least 1"]);
}

#[test]
fn bad_duration_exits_2_naming_it() {
    let out = meridian_run(&[
        "bots",
        "--lobby",
        "127.0.0.1:7100",
        "--insecure-dev",
        "--duration",
        "5 fortnights",
    ]);
    out.assert_config_error(&["`5 fortnights`", "duration"]);
    let out = run(meridian().arg("dev").env("MERIDIAN_DURATION", "1.5h"));
    out.assert_config_error(&["`1.5h`"]);
}

#[test]
fn other_validation_errors_exit_2() {
    meridian_run(&["bots", "--insecure-dev"]).assert_config_error(&["lobby"]);
    meridian_run(&["client", "--insecure-dev"]).assert_config_error(&["--lobby"]);
    meridian_run(&["audit"]).assert_config_error(&["Redis URL"]);
    meridian_run(&["dev", "--store", "postgres://db"]).assert_config_error(&["store"]);
    meridian_run(&[
        "lobby",
        "--ticket-key",
        KEY,
        "--cert",
        "/etc/meridian/cert.pem",
    ])
    .assert_config_error(&["/etc/meridian/cert.pem", "--key"]);
    meridian_run(&[
        "shard",
        "--ticket-key",
        KEY,
        "--dev-cert",
        "--zone-bounds",
        "0,0,-5,10",
    ])
    .assert_config_error(&["`0,0,-5,10`"]);
}

#[test]
fn shard_standby_zones_are_checked_and_drain_needs_a_reachable_admin_endpoint() {
    meridian_run(&[
        "shard",
        "--ticket-key",
        KEY,
        "--dev-cert",
        "--redis",
        "redis://127.0.0.1:6390",
        "--standby-for",
        "west,bad zone",
    ])
    .assert_config_error(&["--standby-for", "zone #2", "`bad zone`"]);
    meridian_run(&[
        "shard",
        "--ticket-key",
        KEY,
        "--dev-cert",
        "--standby-for",
        "west",
    ])
    .assert_config_error(&["--standby-for needs --redis"]);
    let out = meridian_run(&["shard", "drain", "--admin", "a/b", "--token", "t"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("`a/b` is not host:port"),
        "{}",
        out.stderr
    );
    let port = dead_tcp_port().to_string();
    let admin = format!("127.0.0.1:{port}");
    let out = meridian_run(&[
        "shard",
        "drain",
        "--admin",
        &admin,
        "--token",
        "secret-token-1234",
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("cannot reach"), "{}", out.stderr);
    assert!(!out.stderr.contains("secret-token"), "{}", out.stderr);
}

#[test]
fn valid_shard_config_is_logged_redacted() {
    let busy = BusyPort::new();
    let (_dir, path) = config_file(&format!(
        "id = \"eu-west-1a\"\nzone = \"west\"\nticket_key = \"{KEY}\"\ndev_cert = true\n\
         redis = \"redis://app:s3cret@127.0.0.1:6380\"\nlisten = \"{}\"\n",
        busy.text
    ));
    let out = meridian_run(&["shard", "--config", path_str(&path)]);
    out.assert_shard_ran(&busy);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    let logs = &out.stderr[..out.stderr.len() - out.error_line().len() - 1];
    assert!(logs.contains("effective configuration"), "{logs}");
    assert!(
        logs.contains("eu-west-1a") && logs.contains("<redacted>"),
        "{logs}"
    );
    assert!(
        !out.stderr.contains(KEY) && !out.stderr.contains("s3cret"),
        "{}",
        out.stderr
    );
}

#[test]
fn bots_insecure_dev_names_the_lobby_whose_certificate_it_could_not_read() {
    // Nothing answers QUIC on this port: the certificate probe gives up after the idle
    // timeout and says which lobby, and how to do without the flag.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port();
    let lobby = format!("127.0.0.1:{port}");
    let out = meridian_run(&["bots", "--lobby", &lobby, "--insecure-dev"]);
    assert_eq!(out.code, 1, "stderr: {}", out.stderr);
    let error = out.error_line();
    assert!(
        error.contains("--insecure-dev")
            && error.contains(&lobby)
            && error.contains("--cert-sha256"),
        "{error}"
    );
    assert!(
        out.stderr.contains("INSECURE"),
        "the warning comes first: {}",
        out.stderr
    );
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}

#[test]
fn lobby_without_shared_state_is_refused() {
    let out = meridian_run(&["lobby", "--ticket-key", KEY, "--dev-cert"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.error_line().contains("--redis"), "{}", out.stderr);
}

#[test]
fn client_direct_to_shard_needs_the_ticket_key_and_only_then() {
    let out = meridian_run(&["client", "--shard", "127.0.0.1:7000", "--cert-sha256", KEY]);
    out.assert_config_error(&["--shard 127.0.0.1:7000", "--ticket-key"]);
    let out = meridian_run(&[
        "client",
        "--lobby",
        "127.0.0.1:7100",
        "--insecure-dev",
        "--ticket-key",
        KEY,
    ]);
    out.assert_config_error(&["--ticket-key", "--shard"]);
    let bad = format!("{}zz", &KEY[..62]);
    let out = meridian_run(&[
        "client",
        "--shard",
        "127.0.0.1:7000",
        "--cert-sha256",
        KEY,
        "--ticket-key",
        &bad,
    ]);
    out.assert_config_error(&["ticket key", "--ticket-key"]);
    assert!(!out.stderr.contains(&KEY[..62]), "{}", out.stderr);
    let direct = ["client", "--shard", "127.0.0.1:7000", "--cert-sha256", KEY];
    let out = run(meridian()
        .args(direct)
        .args(["--shard-id", "a b"])
        .env("MERIDIAN_TICKET_KEY", KEY));
    out.assert_config_error(&["--shard-id"]);
    let out = run(meridian()
        .args(direct)
        .env("MERIDIAN_TICKET_KEY", KEY)
        .env("MERIDIAN_ZONE", ""));
    out.assert_config_error(&["--zone"]);
}

#[test]
fn client_insecure_dev_is_not_built_and_the_ticket_key_is_never_logged() {
    let out = run(meridian()
        .args(["client", "--shard", "127.0.0.1:7000", "--insecure-dev"])
        .args(["--shard-id", "eu-1", "--zone", "west"])
        .env("MERIDIAN_TICKET_KEY", KEY));
    assert_eq!(out.code, 1, "{}", out.stderr);
    let error = out.error_line();
    assert!(
        error.starts_with("error: ")
            && error.contains("--insecure-dev is not built yet")
            && error.contains("--cert-sha256")
            && error.contains("cert_sha256="),
        "{error}"
    );
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(
        out.stderr.contains("effective configuration")
            && out.stderr.contains("ticket_key: Some(\"<redacted>\")")
            && out.stderr.contains("shard_id: \"eu-1\"")
            && out.stderr.contains("zone: \"west\""),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(KEY), "{}", out.stderr);
}

#[test]
fn json_logs_are_one_object_per_line_with_span_fields() {
    for format_from_env in [false, true] {
        let mut cmd = meridian();
        if format_from_env {
            cmd.env("MERIDIAN_LOG_FORMAT", "json");
        } else {
            cmd.args(["--log-format", "json"]);
        }
        let busy = BusyPort::new();
        let out = run(cmd.args([
            "shard",
            "--ticket-key",
            KEY,
            "--dev-cert",
            "--listen",
            &busy.text,
        ]));
        out.assert_shard_ran(&busy);
        let lines: Vec<&str> = out.stderr.lines().collect();
        let (_error, logs) = lines.split_last().expect("an error line");
        assert!(!logs.is_empty(), "no log lines: {}", out.stderr);
        for line in logs {
            let event: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
            assert_eq!(event["span"]["role"], "shard", "{line}");
            assert_eq!(event["spans"][0]["name"], "meridian", "{line}");
            assert!(!line.contains(KEY), "{line}");
        }
        let first: serde_json::Value = serde_json::from_str(logs[0]).expect("a JSON log line");
        assert_eq!(first["level"], "INFO", "{}", logs[0]);
        assert_eq!(
            first["fields"]["message"], "effective configuration",
            "{}",
            logs[0]
        );
    }
}

#[test]
fn rust_log_filters_the_logs() {
    let url = format!("redis://127.0.0.1:{}", dead_tcp_port());
    let out = run(meridian()
        .args(["audit", "--redis", &url])
        .env("RUST_LOG", "warn"));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}

/// A loopback TCP port with nothing listening on it (bound by the OS, then released).
fn dead_tcp_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback TCP port");
    listener.local_addr().expect("local address").port()
}

#[test]
fn audit_flag_errors_exit_2() {
    meridian_run(&["audit", "--settle-ms", "5"]).assert_config_error(&["Redis URL", "--redis"]);
    let out = meridian_run(&["audit", "--redis", "localhost:6380"]);
    out.assert_config_error(&["invalid Redis URL", "`localhost:6380`"]);
    let out = meridian_run(&["audit", "--redis", "redis://app:s3cret@"]);
    out.assert_config_error(&["invalid Redis URL", "<redacted>"]);
    assert!(!out.stderr.contains("s3cret"), "{}", out.stderr);
    let redis = ["audit", "--redis", "redis://127.0.0.1:1"];
    let out = run(meridian().args(redis).args(["--settle-ms", "60001"]));
    out.assert_config_error(&["settle_ms 60001", "--settle-ms"]);
    let out = run(meridian().args(redis).args(["--settle-ms", "soon"]));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--settle-ms"), "{}", out.stderr);
    let out = run(meridian().args(redis).args(["--settle-ms", "-1"]));
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = run(meridian().args(redis).args(["--prefix", "{x}"]));
    out.assert_config_error(&["--prefix", "`{x}`"]);
    let out = run(meridian().args(redis).args(["--json=maybe"]));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--json"), "{}", out.stderr);
}

#[test]
fn audit_of_an_unreachable_redis_exits_2_naming_the_url_redacted() {
    let port = dead_tcp_port();
    let out = meridian_run(&[
        "audit",
        "--redis",
        &format!("redis://app:s3cret@127.0.0.1:{port}"),
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let expected =
        format!("error: cannot connect to Redis at redis://app:<redacted>@127.0.0.1:{port}: ");
    assert!(
        out.error_line().starts_with(&expected),
        "`{expected}` expected: {}",
        out.stderr
    );
    assert!(!out.stderr.contains("s3cret"), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}

#[test]
fn audit_reads_its_file_and_environment() {
    let port = dead_tcp_port();
    let (_dir, path) = config_file(&format!(
        "redis = \"redis://127.0.0.1:{port}\"\nsettle_ms = 70000\njson = true\nprefix = \"staging:\"\n"
    ));
    let out = meridian_run(&["audit", "--config", path_str(&path)]);
    out.assert_config_error(&["settle_ms 70000"]);
    // The variable wins over the file; the audit then runs and cannot reach Redis.
    let out = run(meridian()
        .args(["audit", "--config", path_str(&path)])
        .env("MERIDIAN_SETTLE_MS", "5"));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("settle_ms: 5")
            && out.stderr.contains("json: true")
            && out.stderr.contains("prefix: \"staging:\""),
        "{}",
        out.stderr
    );
    assert!(
        out.error_line().starts_with(&format!(
            "error: cannot connect to Redis at redis://127.0.0.1:{port}"
        )),
        "{}",
        out.stderr
    );
    let (_dir, path) = config_file("redis = \"redis://127.0.0.1:1\"\nsettle = 5\n");
    let out = meridian_run(&["audit", "--config", path_str(&path)]);
    out.assert_config_error(&[path_str(&path), "settle", "settle_ms"]);
}

/// A bad world map stops `meridian shard` and `meridian dev` before anything is served, with
/// one line naming the file, the zone and what is wrong.
#[test]
fn bad_world_map_is_refused_naming_the_file_and_zone() {
    let (_dir, path) = config_file(
        "name = \"x\"\nregions = [\"r\"]\n[[zone]]\nname = \"a\"\nbounds = [0, 0, 100, 100]\n\
         region = \"nowhere\"\nspawn = [[5, 5]]\n",
    );
    let shard = meridian_run(&[
        "shard",
        "--ticket-key",
        KEY,
        "--dev-cert",
        "--redis",
        "redis://127.0.0.1:1",
        "--listen",
        "127.0.0.1:0",
        "--zone",
        "a",
        "--world",
        path_str(&path),
    ]);
    let dev = meridian_run(&["dev", "--world", path_str(&path), "--duration", "1"]);
    for out in [shard, dev] {
        assert_eq!(out.code, 1, "{}", out.stderr);
        let line = out.error_line();
        assert!(
            line.starts_with("error: ")
                && line.contains(path_str(&path))
                && line.contains("zone `a`")
                && line.contains("nowhere"),
            "{}",
            out.stderr
        );
    }
    // Without shared state there is nobody to hand players to: refused as a setting.
    meridian_run(&[
        "shard",
        "--ticket-key",
        KEY,
        "--dev-cert",
        "--world",
        path_str(&path),
    ])
    .assert_config_error(&["--world needs --redis"]);
}

/// `--check-config` on a shard of the three-region world: exit 0 and a summary on stdout, or
/// exit 2 naming the missing file. Nothing is bound or dialled (the Redis port is dead).
#[test]
fn check_config_validates_the_files_a_config_names_without_running() {
    let world = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/worlds/three-regions.toml");
    let shard = |extra: &[&str]| {
        let mut args = vec![
            "shard",
            "--ticket-key",
            KEY,
            "--redis",
            "redis://127.0.0.1:1",
            "--zone",
            "north-east",
            "--region",
            "london",
        ];
        args.extend_from_slice(extra);
        args.push("--check-config");
        meridian_run(&args)
    };
    let world_arg = path_str(&world).to_owned();
    let ok = shard(&["--dev-cert", "--world", &world_arg]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(
        ok.stdout.starts_with("shard configuration OK")
            && ok.stdout.contains("three-regions")
            && ok.stdout.contains("4 zones"),
        "{}",
        ok.stdout
    );
    assert!(
        !ok.stderr.contains("effective configuration"),
        "nothing runs: {}",
        ok.stderr
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let missing_world = dir.path().join("no-such-world.toml");
    shard(&["--dev-cert", "--world", path_str(&missing_world)])
        .assert_config_error(&["--world", path_str(&missing_world)]);

    let missing_cert = dir.path().join("no-such-cert.pem");
    let key_file = dir.path().join("key.pem");
    std::fs::write(&key_file, "not read: the certificate is missing").expect("write key");
    shard(&[
        "--world",
        &world_arg,
        "--cert",
        path_str(&missing_cert),
        "--key",
        path_str(&key_file),
    ])
    .assert_config_error(&["certificate", path_str(&missing_cert)]);

    // The zone must be one of the map's; a standby's zones too.
    meridian_run(&[
        "shard",
        "--ticket-key",
        KEY,
        "--redis",
        "redis://127.0.0.1:1",
        "--dev-cert",
        "--world",
        &world_arg,
        "--zone",
        "atlantis",
        "--check-config",
    ])
    .assert_config_error(&["--zone", "atlantis", "north-east"]);
    meridian_run(&[
        "shard",
        "--ticket-key",
        KEY,
        "--redis",
        "redis://127.0.0.1:1",
        "--dev-cert",
        "--world",
        &world_arg,
        "--standby-for",
        "north-east,atlantis",
        "--check-config",
    ])
    .assert_config_error(&["--standby-for", "atlantis"]);

    // A lobby's certificate files are read too; a bad setting is still a setting error.
    meridian_run(&[
        "lobby",
        "--ticket-key",
        KEY,
        "--redis",
        "redis://127.0.0.1:1",
        "--cert",
        path_str(&missing_cert),
        "--key",
        path_str(&key_file),
        "--check-config",
    ])
    .assert_config_error(&["certificate", path_str(&missing_cert)]);
    meridian_run(&[
        "lobby",
        "--redis",
        "redis://127.0.0.1:1",
        "--dev-cert",
        "--check-config",
    ])
    .assert_config_error(&["ticket"]);
}

/// `meridian shard drain --check-config` checks the address and token and sends nothing.
#[test]
fn drain_check_config_checks_the_address_and_token_only() {
    let dead = format!("127.0.0.1:{}", dead_tcp_port());
    let ok = run(meridian()
        .args(["shard", "drain", "--admin", &dead, "--check-config"])
        .env("MERIDIAN_ADMIN_TOKEN", "a-long-enough-admin-token"));
    assert_eq!(ok.code, 0, "nothing was sent to {dead}: {}", ok.stderr);
    assert!(ok.stdout.contains("configuration OK"), "{}", ok.stdout);
    run(meridian()
        .args(["shard", "drain", "--admin", "no-port", "--check-config"])
        .env("MERIDIAN_ADMIN_TOKEN", "a-long-enough-admin-token"))
    .assert_config_error(&["--admin", "no-port"]);
    run(meridian()
        .args(["shard", "drain", "--admin", &dead, "--check-config"])
        .env("MERIDIAN_ADMIN_TOKEN", "short"))
    .assert_config_error(&["--token", "16"]);
}

/// `bots --check-config` reads its latency matrix and world map and checks where its report
/// goes, naming the file at fault.
#[test]
fn bots_check_config_names_a_missing_matrix_or_report_directory() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let matrix = repo.join("deploy/latency/rtt-10-regions.csv");
    let world = repo.join("deploy/worlds/three-regions.toml");
    let dir = tempfile::tempdir().expect("temp dir");
    let report = dir.path().join("report.json");
    let bots = |matrix: &Path, report: &Path| {
        meridian_run(&[
            "bots",
            "--lobby",
            "127.0.0.1:7100",
            "--insecure-dev",
            "--scenario",
            "cross",
            "--world",
            path_str(&world),
            "--regions",
            "dallas,london",
            "--latency-matrix",
            path_str(matrix),
            "--report",
            path_str(report),
            "--check-config",
        ])
    };
    let ok = bots(&matrix, &report);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(ok.stdout.contains("latency matrix"), "{}", ok.stdout);
    assert!(!report.exists(), "nothing ran, no report written");
    let missing = dir.path().join("no-such-matrix.csv");
    bots(&missing, &report).assert_config_error(&["--latency-matrix", path_str(&missing)]);
    let nowhere = dir.path().join("no-such-dir").join("report.json");
    bots(&matrix, &nowhere).assert_config_error(&["--report", path_str(&nowhere)]);
}
