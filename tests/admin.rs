//! The admin HTTP endpoints with the real binary: `meridian dev` serves every role of the
//! process on one port (`/healthz`, `/readyz`, `/status`, `/metrics`, the map, JSON 404s), and
//! a `meridian shard` on a real redis-server serves its own. Every `/metrics` answer is parsed
//! as Prometheus text (format 0.0.4) by the strict parser below, then checked for names,
//! types and labels.

#[path = "common/lines.rs"]
mod lines;

use lines::forward_lines;
use meridian_cluster::Store;
use meridian_cluster::store::{StoreConfig, StoreHandle};
use meridian_cluster::testing::RedisServer;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// Kills the child when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` on `addr`: status code, content type and body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the admin endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .expect("write request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    (code, content_type, body.to_owned())
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// One sample of an exposition.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A metric family: its type, help and samples.
#[derive(Debug, Default)]
struct Family {
    kind: String,
    help: Option<String>,
    samples: Vec<Sample>,
}

/// Parses a Prometheus text exposition (format 0.0.4) strictly: every line is a `# HELP`, a
/// `# TYPE`, a comment, blank, or a well-formed sample of the family whose `# TYPE` came last;
/// no family is declared twice; histograms have cumulative `le` buckets ending in `+Inf`
/// equal to their `_count`. Errors name the line.
fn parse_exposition(text: &str) -> Result<BTreeMap<String, Family>, String> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let at = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (keyword, name, tail) = (parts.next(), parts.next(), parts.next());
            match (keyword, name) {
                (Some("HELP"), Some(name)) => {
                    check_name(name).map_err(|e| at(&e))?;
                    let family = families.entry(name.to_owned()).or_default();
                    if family.help.is_some() {
                        return Err(at("second HELP for the family"));
                    }
                    family.help = Some(tail.unwrap_or_default().to_owned());
                }
                (Some("TYPE"), Some(name)) => {
                    check_name(name).map_err(|e| at(&e))?;
                    let kind = tail.ok_or_else(|| at("TYPE without a type"))?;
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at("unknown type"));
                    }
                    let family = families.entry(name.to_owned()).or_default();
                    if !family.kind.is_empty() {
                        return Err(at("second TYPE for the family"));
                    }
                    family.kind = kind.to_owned();
                    current = Some(name.to_owned());
                }
                _ => {}
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let sample = parse_sample(line).map_err(|e| at(&e))?;
        let family_name = current
            .as_deref()
            .ok_or_else(|| at("sample before any TYPE"))?;
        let suffixes: &[&str] = match families[family_name].kind.as_str() {
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        let belongs = suffixes
            .iter()
            .any(|s| sample.name == format!("{family_name}{s}"));
        if !belongs {
            return Err(at(&format!("sample outside its family {family_name}")));
        }
        families
            .get_mut(family_name)
            .expect("declared above")
            .samples
            .push(sample);
    }
    for (name, family) in &families {
        if family.kind.is_empty() {
            return Err(format!("{name}: HELP without TYPE"));
        }
        if family.kind == "histogram" {
            check_histogram(name, family)?;
        }
    }
    Ok(families)
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("bad metric name {name:?}"))
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("a sample needs a value")?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut s = after;
        loop {
            if let Some(after) = s.strip_prefix('}') {
                s = after;
                break;
            }
            let eq = s.find('=').ok_or("label without =")?;
            let label = &s[..eq];
            let ok = label
                .chars()
                .enumerate()
                .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
            if label.is_empty() || !ok {
                return Err(format!("bad label name {label:?}"));
            }
            s = s[eq + 1..]
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            let mut value = String::new();
            let mut chars = s.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c @ ('\\' | '"'))) => value.push(c),
                        _ => return Err("bad escape in a label value".into()),
                    },
                    Some((i, '"')) => break i,
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value".into()),
                }
            };
            if labels.insert(label.to_owned(), value).is_some() {
                return Err(format!("label {label} twice"));
            }
            s = &s[end + 1..];
            if let Some(after) = s.strip_prefix(',') {
                s = after;
            } else if !s.starts_with('}') {
                return Err("expected , or } after a label value".into());
            }
        }
        rest = s;
    }
    let mut fields = rest
        .strip_prefix(' ')
        .ok_or("no space before the value")?
        .split(' ');
    let value = match fields.next().ok_or("no value")? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|e| format!("bad value {v:?}: {e}"))?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|e| format!("bad timestamp {ts:?}: {e}"))?;
    }
    if fields.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// One histogram series: its `(le, cumulative count)` buckets and its `_count`.
type Series = (Vec<(f64, f64)>, Option<f64>);

/// Per label set (without `le`): buckets cumulative, `+Inf` last and equal to `_count`.
fn check_histogram(name: &str, family: &Family) -> Result<(), String> {
    let mut series: HashMap<BTreeMap<String, String>, Series> = HashMap::new();
    for s in &family.samples {
        let mut labels = s.labels.clone();
        let le = labels.remove("le");
        let entry = series.entry(labels).or_default();
        if s.name.ends_with("_bucket") {
            let le = le.ok_or_else(|| format!("{name}: bucket without le"))?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse()
                    .map_err(|e| format!("{name}: bad le {le:?}: {e}"))?
            };
            entry.0.push((bound, s.value));
        } else if s.name.ends_with("_count") {
            entry.1 = Some(s.value);
        }
    }
    for (labels, (buckets, count)) in series {
        let count = count.ok_or_else(|| format!("{name}{labels:?}: no _count"))?;
        let sorted = buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
        if !sorted {
            return Err(format!(
                "{name}{labels:?}: buckets not cumulative: {buckets:?}"
            ));
        }
        match buckets.last() {
            Some(&(bound, n)) if bound == f64::INFINITY && n == count => {}
            _ => return Err(format!("{name}{labels:?}: +Inf bucket is not _count")),
        }
    }
    Ok(())
}

/// Names follow the conventions; every sample says its role, shards their shard and zone; no
/// label carries a player.
fn check_conventions(families: &BTreeMap<String, Family>) {
    for (name, family) in families {
        assert!(name.starts_with("meridian_"), "{name}");
        if family.kind == "counter" {
            assert!(name.ends_with("_total"), "counter {name} ends in _total");
        }
        if family.kind == "histogram" {
            assert!(name.ends_with("_seconds"), "histogram {name} is in seconds");
        }
        assert!(
            family.help.as_deref().is_some_and(|h| !h.is_empty()),
            "{name} has help"
        );
        for s in &family.samples {
            let role = s.labels.get("role").map(String::as_str);
            assert!(matches!(role, Some("shard" | "lobby")), "{s:?}");
            if role == Some("shard") {
                assert!(
                    s.labels.contains_key("shard") && s.labels.contains_key("zone"),
                    "{s:?}"
                );
            }
            assert!(
                !s.labels.keys().any(|k| k.contains("player")),
                "no player label: {s:?}"
            );
        }
    }
}

/// The samples of `name` for which `labels` all match.
fn values(
    families: &BTreeMap<String, Family>,
    family: &str,
    sample: &str,
    labels: &[(&str, &str)],
) -> Vec<f64> {
    families
        .get(family)
        .unwrap_or_else(|| panic!("no family {family}"))
        .samples
        .iter()
        .filter(|s| {
            s.name == sample
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .collect()
}

#[test]
fn the_parser_refuses_malformed_expositions() {
    let good = "# HELP m_total Things.\n# TYPE m_total counter\nm_total{role=\"a\\\"b\"} 3\n";
    let parsed = parse_exposition(good).expect("valid");
    assert_eq!(parsed["m_total"].samples[0].labels["role"], "a\"b");
    for (bad, why) in [
        ("m_total 1\n", "sample before any TYPE"),
        ("# TYPE m counter\n# TYPE m counter\n", "second TYPE"),
        ("# TYPE m gauge\nm{a=\"1\" 2\n", "expected , or }"),
        ("# TYPE m gauge\nm{a=1} 2\n", "not quoted"),
        ("# TYPE m gauge\nm one\n", "bad value"),
        ("# TYPE m gauge\nother 1\n", "outside its family"),
        ("# TYPE m gauge\nm{9a=\"x\"} 1\n", "bad label name"),
        (
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
            "not cumulative",
        ),
        (
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 3\n",
            "+Inf bucket",
        ),
    ] {
        let err = parse_exposition(bad).expect_err(bad);
        assert!(err.contains(why), "{bad:?}: {err}");
    }
}

/// `meridian dev` running until dropped, with its stdout lines.
struct Dev {
    _child: Guard,
    lines: mpsc::Receiver<String>,
}

impl Dev {
    fn start() -> Dev {
        let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(["dev", "--bots", "2", "--npcs", "50", "--duration", "2m"])
            .args([
                "--lobby-listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("meridian dev starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = forward_lines(stdout);
        Dev {
            _child: Guard(child),
            lines,
        }
    }

    /// The address of the `admin http://ADDR` line.
    fn admin(&self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if let Some(addr) = line.strip_prefix("admin http://") {
                return addr.parse().expect("an address");
            }
            seen.push(line);
        }
        panic!("no admin line; stdout:\n{}", seen.join("\n"));
    }
}

/// Polls `path` until it answers 200 (up to 30 s); the last answer.
fn until_ok(addr: SocketAddr, path: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, _, body) = http_get(addr, path);
        if code == 200 || Instant::now() > deadline {
            return (code, body);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn dev_serves_every_role_on_one_admin_endpoint() {
    let dev = Dev::start();
    let admin = dev.admin();
    assert_eq!(
        {
            let (code, _, body) = http_get(admin, "/healthz");
            (code, body)
        },
        (200, "ok".to_owned())
    );
    let (code, body) = until_ok(admin, "/readyz");
    assert_eq!(code, 200, "dev becomes ready: {body}");
    let ready = json(&body);
    assert_eq!(
        (&ready["ready"], &ready["redis"]),
        (&Value::Bool(true), &Value::from("reachable"))
    );

    let (code, _, body) = http_get(admin, "/status");
    assert_eq!(code, 200, "{body}");
    let status = json(&body);
    assert_eq!(status["role"], "dev");
    assert_eq!(status["lobby"]["role"], "lobby");
    assert_eq!(status["lobby"]["live_shards"], 3, "{body}");
    let shards = status["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), 3, "{body}");
    for s in shards {
        assert_eq!(s["role"], "shard");
        assert!(s["lease_epoch"].as_u64().expect("epoch") > 0, "{s}");
        assert!(s["tick_p99_ms"].as_f64().is_some(), "{s}");
        assert!(s["players"].as_u64().is_some(), "{s}");
    }
    let zones: Vec<&str> = shards.iter().filter_map(|s| s["zone"].as_str()).collect();
    assert_eq!(zones, ["west", "center", "east"]);

    // The bots join meanwhile: wait until both are counted, then read the metrics.
    let deadline = Instant::now() + Duration::from_secs(30);
    let families = loop {
        let (code, content_type, body) = http_get(admin, "/metrics");
        assert_eq!(code, 200, "{body}");
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let families = parse_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
        let joined: f64 = values(
            &families,
            "meridian_lobby_joins_total",
            "meridian_lobby_joins_total",
            &[("outcome", "granted")],
        )
        .iter()
        .sum();
        if joined >= 2.0 || Instant::now() > deadline {
            break families;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    check_conventions(&families);
    assert_eq!(
        families["meridian_shard_tick_phase_seconds"].kind,
        "histogram"
    );
    for zone in ["west", "center", "east"] {
        for phase in ["inputs", "sim", "replication", "send", "total"] {
            let counts = values(
                &families,
                "meridian_shard_tick_phase_seconds",
                "meridian_shard_tick_phase_seconds_count",
                &[("zone", zone), ("phase", phase)],
            );
            assert_eq!(counts.len(), 1, "{zone} {phase}");
            assert!(counts[0] > 0.0, "{zone} {phase} ticks recorded");
        }
        let held = values(
            &families,
            "meridian_shard_lease_epoch",
            "meridian_shard_lease_epoch",
            &[("zone", zone)],
        );
        assert!(held[0] > 0.0, "{zone} holds its lease");
    }
    let granted = values(
        &families,
        "meridian_lobby_joins_total",
        "meridian_lobby_joins_total",
        &[("outcome", "granted")],
    );
    assert_eq!(granted, [2.0], "both bots joined");
    let routed = values(
        &families,
        "meridian_lobby_routing_decisions_total",
        "meridian_lobby_routing_decisions_total",
        &[("outcome", "routed")],
    );
    assert_eq!(routed, [2.0]);
    let players: f64 = values(
        &families,
        "meridian_shard_players",
        "meridian_shard_players",
        &[],
    )
    .iter()
    .sum();
    assert!(players <= 2.0, "{players}");
    for family in [
        "meridian_shard_ticks_total",
        "meridian_shard_tick_overruns_total",
        "meridian_shard_entities",
        "meridian_shard_ghosts",
        "meridian_shard_datagrams_total",
        "meridian_shard_datagram_bytes_total",
        "meridian_shard_inputs_rejected_total",
        "meridian_shard_handoffs_total",
        "meridian_shard_checkpoint_queue_depth",
        "meridian_shard_lease_held",
        "meridian_lobby_redis_command_seconds",
    ] {
        assert!(families.contains_key(family), "{family} exported");
    }
    let lookups = values(
        &families,
        "meridian_lobby_redis_command_seconds",
        "meridian_lobby_redis_command_seconds_count",
        &[("op", "live_shards")],
    );
    assert!(
        lookups[0] >= 2.0,
        "one registry read per join at least: {lookups:?}"
    );

    // Unknown routes: JSON 404s; the map is mounted.
    let (code, content_type, body) = http_get(admin, "/no/such/route");
    assert_eq!(code, 404);
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    assert_eq!(json(&body)["error"], "no such path: /no/such/route");
    let (code, _, _) = http_get(admin, "/map");
    assert_eq!(code, 200, "the live map is served by dev's admin endpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_on_redis_serves_readiness_status_and_metrics() {
    let redis = RedisServer::start().await.expect("redis-server starts");
    let _shard = Guard(
        Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args([
                "shard",
                "--dev-cert",
                "--ticket-key",
                KEY,
                "--redis",
                &redis.url(),
            ])
            .args(["--id", "shard-solo", "--zone", "solo", "--region", "here"])
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--npcs", "10"])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("meridian shard starts"),
    );
    let store = StoreHandle::open(&redis.url(), &StoreConfig::default())
        .await
        .expect("store");
    let mut admin = None;
    for _ in 0..300 {
        let live = store.live_shards().await.unwrap_or_default();
        admin = live
            .iter()
            .find_map(|s| s.record.admin_addr.as_deref()?.parse::<SocketAddr>().ok());
        if admin.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let admin = admin.expect("the shard registers its admin address");
    let checks = tokio::task::spawn_blocking(move || {
        let (code, body) = until_ok(admin, "/readyz");
        assert_eq!(code, 200, "registered, lease held, Redis reachable: {body}");
        let ready = json(&body);
        assert_eq!(
            (&ready["registered"], &ready["lease_held"], &ready["redis"]),
            (
                &Value::Bool(true),
                &Value::Bool(true),
                &Value::from("reachable")
            )
        );
        let (code, _, body) = http_get(admin, "/status");
        assert_eq!(code, 200, "{body}");
        let status = json(&body);
        assert_eq!(
            (
                &status["role"],
                &status["id"],
                &status["zone"],
                &status["redis"]
            ),
            (
                &Value::from("shard"),
                &Value::from("shard-solo"),
                &Value::from("solo"),
                &Value::from("reachable")
            )
        );
        assert!(status["lease_epoch"].as_u64().expect("epoch") > 0, "{body}");
        assert!(
            status["tick"].as_u64().is_some() && status["total"]["p99_ms"].is_number(),
            "{body}"
        );

        let (code, content_type, body) = http_get(admin, "/metrics");
        assert_eq!(code, 200, "{body}");
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        let families = parse_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
        check_conventions(&families);
        let ticks = values(
            &families,
            "meridian_shard_ticks_total",
            "meridian_shard_ticks_total",
            &[("shard", "shard-solo"), ("zone", "solo")],
        );
        assert!(ticks[0] > 0.0, "{ticks:?}");
        let epoch = values(
            &families,
            "meridian_shard_lease_epoch",
            "meridian_shard_lease_epoch",
            &[],
        );
        assert_eq!(epoch.len(), 1);
        assert!(epoch[0] > 0.0);
        assert!(
            families
                .values()
                .all(|f| f.samples.iter().all(|s| s.labels["role"] == "shard"))
        );

        let (code, _, body) = http_get(admin, "/nope");
        assert_eq!(code, 404);
        assert_eq!(json(&body)["error"], "no such path: /nope");
    });
    checks.await.expect("checks pass");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lobby_serves_readiness_status_metrics_and_the_map() {
    let redis = RedisServer::start().await.expect("redis-server starts");
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args([
            "--log-format",
            "json",
            "lobby",
            "--dev-cert",
            "--ticket-key",
            KEY,
        ])
        .args(["--redis", &redis.url()])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("meridian lobby starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let _lobby = Guard(child);
    // The admin address, from the lobby's JSON log line.
    let admin = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
        let addr = lines
            .find_map(|l| {
                let v: Value = serde_json::from_str(&l).ok()?;
                (v["fields"]["message"] == "admin endpoint listening")
                    .then(|| v["fields"]["addr"].as_str()?.parse::<SocketAddr>().ok())?
            })
            .expect("an `admin endpoint listening` line");
        // Keeps reading so that the lobby never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        addr
    })
    .await
    .expect("log reader");
    let checks = tokio::task::spawn_blocking(move || {
        let (code, body) = until_ok(admin, "/readyz");
        assert_eq!(code, 200, "Redis reachable: {body}");
        assert_eq!(json(&body)["redis"], "reachable");
        let (code, _, body) = http_get(admin, "/status");
        assert_eq!(code, 200, "{body}");
        let status = json(&body);
        assert_eq!(
            (&status["role"], &status["live_shards"], &status["grants"]),
            (&Value::from("lobby"), &Value::from(0), &Value::from(0))
        );
        let (code, _, body) = http_get(admin, "/metrics");
        assert_eq!(code, 200, "{body}");
        let families = parse_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
        check_conventions(&families);
        assert_eq!(
            values(
                &families,
                "meridian_lobby_joins_total",
                "meridian_lobby_joins_total",
                &[("outcome", "granted")]
            ),
            [0.0]
        );
        assert!(
            families
                .values()
                .all(|f| f.samples.iter().all(|s| s.labels["role"] == "lobby"))
        );
        let (code, _, _) = http_get(admin, "/map");
        assert_eq!(
            code, 200,
            "the live map is merged into the lobby's admin endpoint"
        );
        let (code, _, body) = http_get(admin, "/nope");
        assert_eq!(code, 404);
        assert_eq!(json(&body)["error"], "no such path: /nope");
    });
    checks.await.expect("checks pass");
}
