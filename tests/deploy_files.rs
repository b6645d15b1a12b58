//! The deploy files, checked as what they are: `deploy/compose.yaml` and the Kubernetes overlays
//! are parsed (YAML, not grepped), every `meridian` command line in them (compose `command`,
//! container `command` + `args`, preStop `exec`) is run with `--check-config` under the
//! environment the file gives it, and the wiring between them (ports, addresses, zones,
//! regions, probes, Secrets, ConfigMaps) is checked. A broken deploy file fails this suite.
//!
//! kustomize is not a dependency of the project: [`Kustomize`] renders the overlays with the
//! subset of kustomize they use (resources, `patches` as strategic-merge files, `namespace`,
//! `labels`, `images`, `secretGenerator` from env files without a name hash) and refuses any
//! other kustomization key, so the overlays cannot drift past what is tested. Its output matched
//! `kubectl kustomize` (kustomize v5.5) for the three overlays when this was written; see
//! docs/deploy.md.
//!
//! Container paths are mapped to files of the repository, or made by the test, explicitly
//! ([`Mounts`]); the deployment's secrets are the test's ([`test_secrets_env`]); nothing is
//! dialled: `--check-config` only checks a Redis URL's form.

use meridian_cluster::world::WorldMap;
use serde_yaml::{Mapping, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The ticket key the test gives the manifests (never a real deployment's).
const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
/// The admin token the test gives the manifests.
const ADMIN_TOKEN: &str = "deploy-files-test-admin-token";
/// The Redis URL the test gives the manifests: `--check-config` never connects to it.
const REDIS_URL: &str = "redis://redis-0.redis.invalid:6379,redis://redis-1.redis.invalid:6379";
/// The binary's path in the image (the Dockerfile's ENTRYPOINT).
const IMAGE_BINARY: &str = "/usr/local/bin/meridian";
/// The world map the deploy files run.
const WORLD: &str = "deploy/worlds/three-regions.toml";
/// The regions, one Kubernetes overlay each.
const REGIONS: [&str; 3] = ["dallas", "london", "sydney"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy() -> PathBuf {
    repo().join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every document of a YAML stream (empty documents skipped).
fn yaml_docs(text: &str, origin: &str) -> Vec<Value> {
    use serde::Deserialize as _;
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| {
            Value::deserialize(doc).unwrap_or_else(|e| panic!("{origin}: invalid YAML: {e}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml_file(path: &Path) -> Value {
    let mut docs = yaml_docs(&read(path), &path.display().to_string());
    assert_eq!(
        docs.len(),
        1,
        "{}: one YAML document expected",
        path.display()
    );
    docs.remove(0)
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: a string expected, got {v:?}"))
}

fn seq_of<'a>(v: &'a Value, what: &str) -> &'a [Value] {
    v.as_sequence()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("{what}: a list expected, got {v:?}"))
}

fn map_of<'a>(v: &'a Value, what: &str) -> &'a Mapping {
    v.as_mapping()
        .unwrap_or_else(|| panic!("{what}: a mapping expected, got {v:?}"))
}

fn world() -> WorldMap {
    WorldMap::load(&repo().join(WORLD)).expect("the deployed world map is valid")
}

// ---- base64 (Secret data) and PEM (the test's certificate) ----

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unbase64(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
    {
        let v = B64
            .iter()
            .position(|b| *b == c)
            .unwrap_or_else(|| panic!("not base64: {text}"));
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = base64(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

#[test]
fn base64_round_trips() {
    for text in ["", "a", "ab", "abc", "abcd", "redis://h:6379"] {
        assert_eq!(unbase64(&base64(text.as_bytes())), text.as_bytes());
    }
    assert_eq!(base64(b"meridian"), "bWVyaWRpYW4=");
}

// ---- container paths → files ----

/// The files behind the container paths the deploy files name. A path not listed here fails
/// the suite: add it, with where its content comes from.
struct Mounts {
    map: Vec<(&'static str, PathBuf)>,
    _dir: tempfile::TempDir,
}

impl Mounts {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // The lobby's and shards' certificate: operator-provided (Secret meridian-tls); the
        // test makes one.
        let cert = meridian_protocol::quic::CertificateMaterial::generate_dev(&["localhost"])
            .expect("development certificate");
        let crt = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        std::fs::write(&crt, pem("CERTIFICATE", cert.chain[0].as_ref())).expect("write cert");
        std::fs::write(&key, pem("PRIVATE KEY", cert.key.secret_der())).expect("write key");
        let reports = dir.path().join("reports");
        std::fs::create_dir(&reports).expect("reports dir");
        Self {
            map: vec![
                // compose: bind mount of deploy/worlds/three-regions.toml; Kubernetes: the
                // ConfigMap meridian-world (checked equal to that file).
                ("/etc/meridian/world.toml", repo().join(WORLD)),
                // compose bots: bind mount of the latency matrix.
                (
                    "/etc/meridian/rtt.csv",
                    deploy().join("latency/rtt-10-regions.csv"),
                ),
                ("/etc/meridian/tls/tls.crt", crt),
                ("/etc/meridian/tls/tls.key", key),
                // compose bots: the bind mount ./reports (created by compose).
                ("/reports", reports),
            ],
            _dir: dir,
        }
    }

    /// The container paths a command line names (in its arguments and environment).
    fn paths_of(line: &CommandLine) -> Vec<String> {
        let values = line.args.iter().chain(line.env.iter().map(|(_, v)| v));
        values
            .map(|v| match v.split_once('=') {
                Some((flag, path)) if flag.starts_with("--") => path,
                _ => v.as_str(),
            })
            .filter(|p| p.starts_with('/'))
            .map(str::to_owned)
            .collect()
    }

    /// Asserts that every container path `line` names lies in one of `mounts` (container
    /// mount points: a file, or a directory holding it).
    fn assert_mounted(line: &CommandLine, mounts: &[String]) {
        for path in Self::paths_of(line) {
            assert!(
                mounts
                    .iter()
                    .any(|m| path == *m || path.starts_with(&format!("{m}/"))),
                "{}: `{path}` is not mounted into the container (mounts: {mounts:?})",
                line.origin
            );
        }
    }

    /// `value` with a leading container path replaced (`/path`, `/path/...`, or
    /// `--flag=/path...`); any other absolute path is an unmapped mount and fails.
    fn map_value(&self, value: &str, origin: &str) -> String {
        let (flag, path) = match value.split_once('=') {
            Some((flag, path)) if flag.starts_with("--") => (Some(flag), path),
            _ => (None, value),
        };
        if !path.starts_with('/') {
            return value.to_owned();
        }
        for (container, host) in &self.map {
            let rest = path.strip_prefix(container);
            if let Some(rest) = rest.filter(|r| r.is_empty() || r.starts_with('/')) {
                let mapped = format!("{}{rest}", host.display());
                return match flag {
                    Some(flag) => format!("{flag}={mapped}"),
                    None => mapped,
                };
            }
        }
        panic!("{origin}: container path `{path}` is not mapped to a file by the test (Mounts)")
    }

    /// The repository file behind a container path, if the test maps it to one.
    fn repo_file(&self, container: &str) -> Option<&Path> {
        self.map
            .iter()
            .find(|(c, _)| *c == container)
            .map(|(_, h)| h.as_path())
            .filter(|h| h.starts_with(repo()))
    }
}

// ---- running `meridian … --check-config` ----

/// One `meridian` command line of a deploy file: its arguments (without the binary) and the
/// environment the file gives it.
#[derive(Clone, Debug)]
struct CommandLine {
    origin: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl CommandLine {
    fn role(&self) -> &str {
        self.args.first().map_or("", String::as_str)
    }

    /// The value of `--flag VALUE`, `--flag=VALUE`, or the `MERIDIAN_*` variable of that flag.
    fn setting(&self, flag: &str) -> Option<String> {
        let long = format!("--{flag}");
        let with_eq = format!("{long}=");
        for (i, arg) in self.args.iter().enumerate() {
            if let Some(value) = arg.strip_prefix(&with_eq) {
                return Some(value.to_owned());
            }
            if *arg == long {
                return self.args.get(i + 1).cloned();
            }
        }
        let var = format!("MERIDIAN_{}", flag.replace('-', "_").to_uppercase());
        self.env
            .iter()
            .find(|(k, _)| *k == var)
            .map(|(_, v)| v.clone())
    }

    fn setting_addr(&self, flag: &str) -> SocketAddr {
        let value = self
            .setting(flag)
            .unwrap_or_else(|| panic!("{}: no --{flag}", self.origin));
        value
            .parse()
            .unwrap_or_else(|e| panic!("{}: --{flag} {value}: {e}", self.origin))
    }
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `meridian <args> --check-config` with the command line's environment only (no
/// `MERIDIAN_*` variable of the test's own), container paths mapped.
fn check_config(line: &CommandLine, mounts: &Mounts) -> Outcome {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meridian"));
    for (name, _) in std::env::vars_os() {
        let name_str = name.to_string_lossy();
        if name_str.starts_with("MERIDIAN_") || name_str == "RUST_LOG" {
            cmd.env_remove(&name);
        }
    }
    for arg in &line.args {
        cmd.arg(mounts.map_value(arg, &line.origin));
    }
    cmd.arg("--check-config");
    for (k, v) in &line.env {
        cmd.env(k, mounts.map_value(v, &format!("{} env {k}", line.origin)));
    }
    let out = cmd.output().expect("the meridian binary runs");
    Outcome {
        code: out.status.code().expect("exited, not killed by a signal"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn assert_check_config_ok(line: &CommandLine, mounts: &Mounts) {
    let out = check_config(line, mounts);
    assert_eq!(
        out.code,
        0,
        "{}: `meridian {} --check-config` failed: {}",
        line.origin,
        line.args.join(" "),
        out.stderr
    );
    assert!(
        out.stdout.contains("configuration OK"),
        "{}: {}",
        line.origin,
        out.stdout
    );
}

// ---- compose ----

/// Compose's variable interpolation: `$$`, `$NAME`, `${NAME}`, `${NAME:-default}`,
/// `${NAME-default}`, `${NAME:?error}`, `${NAME?error}`.
fn interpolate(text: &str, vars: &HashMap<&str, &str>, origin: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(after) = rest.strip_prefix('{') {
            let end = after
                .find('}')
                .unwrap_or_else(|| panic!("{origin}: unclosed ${{ in `{text}`"));
            let expr = &after[..end];
            rest = &after[end + 1..];
            let name_end = expr
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expr.len());
            let (name, op) = expr.split_at(name_end);
            let value = vars.get(name).copied();
            let set = value.filter(|v| !v.is_empty());
            let resolved = if op.is_empty() {
                value.unwrap_or_default().to_owned()
            } else if let Some(default) = op.strip_prefix(":-") {
                set.unwrap_or(default).to_owned()
            } else if let Some(default) = op.strip_prefix('-') {
                value.unwrap_or(default).to_owned()
            } else if let Some(error) = op.strip_prefix(":?").or_else(|| op.strip_prefix('?')) {
                set.unwrap_or_else(|| panic!("{origin}: ${{{name}}} is required: {error}"))
                    .to_owned()
            } else {
                panic!("{origin}: unsupported interpolation `${{{expr}}}`")
            };
            out.push_str(&resolved);
        } else {
            let name_end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            assert!(name_end > 0, "{origin}: a lone `$` in `{text}` (write $$)");
            out.push_str(vars.get(&rest[..name_end]).copied().unwrap_or_default());
            rest = &rest[name_end..];
        }
    }
    out.push_str(rest);
    out
}

fn interpolate_all(value: &mut Value, vars: &HashMap<&str, &str>, origin: &str) {
    match value {
        Value::String(s) => *s = interpolate(s, vars, origin),
        Value::Sequence(items) => items
            .iter_mut()
            .for_each(|v| interpolate_all(v, vars, origin)),
        Value::Mapping(map) => map
            .iter_mut()
            .for_each(|(_, v)| interpolate_all(v, vars, origin)),
        _ => {}
    }
}

/// compose.yaml, anchors and merge keys resolved, variables interpolated with the test's
/// `MERIDIAN_TICKET_KEY` (what docs/deploy.md tells operators to export).
fn compose() -> Value {
    let path = deploy().join("compose.yaml");
    let mut doc = yaml_file(&path);
    doc.apply_merge().expect("compose.yaml: merge keys");
    let vars = HashMap::from([("MERIDIAN_TICKET_KEY", KEY)]);
    interpolate_all(&mut doc, &vars, "compose.yaml");
    doc
}

fn compose_env(service: &Value, origin: &str) -> Vec<(String, String)> {
    match &service["environment"] {
        Value::Null => Vec::new(),
        Value::Mapping(map) => map
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    Value::String(s) => s.clone(),
                    Value::Bool(b) => b.to_string(),
                    Value::Number(n) => n.to_string(),
                    other => panic!("{origin}: environment value {other:?}"),
                };
                (str_of(k, origin).to_owned(), value)
            })
            .collect(),
        Value::Sequence(items) => items
            .iter()
            .map(|item| {
                let (k, v) = str_of(item, origin)
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{origin}: environment entry without `=`"));
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        other => panic!("{origin}: environment {other:?}"),
    }
}

/// The compose services that run the meridian image, with their command lines.
fn compose_meridian_services(doc: &Value) -> BTreeMap<String, (CommandLine, Value)> {
    let services = map_of(&doc["services"], "compose services");
    let mut out = BTreeMap::new();
    for (name, service) in services {
        let name = str_of(name, "service name");
        let origin = format!("compose.yaml service {name}");
        let image = service["image"].as_str().unwrap_or_default();
        let builds_meridian = service["build"]["dockerfile"].as_str() == Some("deploy/Dockerfile");
        if !builds_meridian {
            assert!(
                !image.starts_with("meridian"),
                "{origin}: runs the meridian image without building it"
            );
            continue;
        }
        assert_eq!(image, "meridian:dev", "{origin}: image");
        let args: Vec<String> = match &service["command"] {
            Value::Sequence(items) => items
                .iter()
                .map(|a| str_of(a, &origin).to_owned())
                .collect(),
            Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
            other => panic!("{origin}: no command: {other:?}"),
        };
        let line = CommandLine {
            env: compose_env(service, &origin),
            origin,
            args,
        };
        out.insert(name.to_owned(), (line, service.clone()));
    }
    out
}

fn compose_ip(service: &Value, origin: &str) -> String {
    str_of(
        &service["networks"]["meridian"]["ipv4_address"],
        &format!("{origin}: networks.meridian.ipv4_address"),
    )
    .to_owned()
}

#[test]
fn every_meridian_command_of_compose_passes_check_config() {
    let doc = compose();
    let mounts = Mounts::new();
    let services = compose_meridian_services(&doc);
    let roles: BTreeSet<&str> = services.values().map(|(l, _)| l.role()).collect();
    assert_eq!(
        roles,
        BTreeSet::from(["bots", "lobby", "shard"]),
        "compose roles"
    );
    for (line, service) in services.values() {
        assert_check_config_ok(line, &mounts);
        let targets: Vec<String> = service["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str()?.split(':').nth(1).map(str::to_owned))
            .collect();
        Mounts::assert_mounted(line, &targets);
        // Every mounted file the test maps to a repository file is the one compose mounts.
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let Some(spec) = volume.as_str() else {
                continue;
            };
            let parts: Vec<&str> = spec.split(':').collect();
            let (source, target) = (parts[0], parts.get(1).copied().unwrap_or_default());
            if let Some(expected) = mounts.repo_file(target) {
                let source = deploy().join(source);
                assert_eq!(
                    source.canonicalize().expect("mounted file exists"),
                    expected.canonicalize().expect("mapped file exists"),
                    "{}: {spec}",
                    line.origin
                );
            }
        }
    }
}

#[test]
fn compose_serves_every_zone_once_at_its_own_address() {
    let doc = compose();
    let services = compose_meridian_services(&doc);
    let world = world();
    let mut zones = BTreeMap::new();
    let mut admin = BTreeSet::new();
    for (name, (line, service)) in &services {
        let ip = compose_ip(service, &line.origin);
        match line.role() {
            "shard" => {
                let zone = line.setting("zone").expect("shard --zone");
                let spec = world
                    .zones
                    .iter()
                    .find(|z| z.id.as_str() == zone)
                    .unwrap_or_else(|| panic!("{name}: zone {zone} not in the map"));
                assert_eq!(
                    line.setting("region").as_deref(),
                    Some(spec.region.as_str()),
                    "{name}: region of zone {zone}"
                );
                assert!(
                    zones.insert(zone.clone(), name.clone()).is_none(),
                    "zone {zone} served twice"
                );
                let public = line.setting_addr("public-addr");
                let listen = line.setting_addr("listen");
                assert_eq!(public.ip().to_string(), ip, "{name}: --public-addr IP");
                assert_eq!(public.port(), listen.port(), "{name}: --public-addr port");
                let admin_addr = line.setting_addr("admin-listen");
                admin.insert(format!("{ip}:{}", admin_addr.port()));
            }
            "lobby" => {
                let lobby = services
                    .values()
                    .find(|(l, _)| l.role() == "bots")
                    .map(|(l, _)| l.setting_addr("lobby"))
                    .expect("bots --lobby");
                assert_eq!(lobby.ip().to_string(), ip, "bots --lobby");
                assert_eq!(lobby.port(), line.setting_addr("listen").port());
            }
            _ => {}
        }
    }
    let all: BTreeSet<String> = world.zones.iter().map(|z| z.id.to_string()).collect();
    assert_eq!(zones.keys().cloned().collect::<BTreeSet<_>>(), all);
    let bots = services
        .values()
        .find(|(l, _)| l.role() == "bots")
        .expect("bots");
    let metrics: BTreeSet<String> = bots
        .0
        .setting("shard-metrics")
        .expect("bots --shard-metrics")
        .split(',')
        .map(str::to_owned)
        .collect();
    assert_eq!(metrics, admin, "bots --shard-metrics: every shard's admin");
    // Prometheus scrapes every shard's admin endpoint, by service name.
    let prometheus = yaml_file(&deploy().join("monitoring/prometheus.yml"));
    let targets: BTreeSet<String> = scrape_job(&prometheus, "meridian-shard")["static_configs"]
        .as_sequence()
        .expect("static_configs")
        .iter()
        .flat_map(|c| seq_of(&c["targets"], "targets"))
        .map(|t| str_of(t, "target").to_owned())
        .collect();
    let expected: BTreeSet<String> = services
        .iter()
        .filter(|(_, (l, _))| l.role() == "shard")
        .map(|(name, (l, _))| format!("{name}:{}", l.setting_addr("admin-listen").port()))
        .collect();
    assert_eq!(targets, expected, "prometheus.yml targets");
    let lobby = services.get("lobby").expect("compose service lobby");
    let targets: Vec<&str> =
        scrape_job(&prometheus, "meridian-lobby")["static_configs"][0]["targets"]
            .as_sequence()
            .expect("lobby targets")
            .iter()
            .map(|t| str_of(t, "target"))
            .collect();
    assert_eq!(
        targets,
        [format!(
            "lobby:{}",
            lobby.0.setting_addr("admin-listen").port()
        )]
    );
}

// ---- kustomize, the subset the overlays use ----

/// Renders a kustomization directory. `files` replaces the content of files by path (the
/// deployment's secrets env file, which is not in the repository).
struct Kustomize<'a> {
    files: &'a HashMap<PathBuf, String>,
}

impl Kustomize<'_> {
    fn file(&self, path: &Path) -> String {
        match self.files.get(&normalize(path)) {
            Some(text) => text.clone(),
            None => read(path),
        }
    }

    fn render(&self, dir: &Path) -> Vec<Value> {
        let origin = dir.join("kustomization.yaml");
        let o = origin.display().to_string();
        let k = yaml_file(&origin);
        for key in map_of(&k, &o).keys() {
            let key = str_of(key, &o);
            assert!(
                [
                    "apiVersion",
                    "kind",
                    "resources",
                    "patches",
                    "namespace",
                    "labels",
                    "secretGenerator",
                    "images"
                ]
                .contains(&key),
                "{o}: `{key}` is outside the kustomize subset tests/deploy_files.rs renders"
            );
        }
        let mut out = Vec::new();
        for r in k["resources"].as_sequence().into_iter().flatten() {
            let path = dir.join(str_of(r, &o));
            if path.is_dir() {
                out.extend(self.render(&path));
            } else {
                out.extend(yaml_docs(&self.file(&path), &path.display().to_string()));
            }
        }
        for g in k["secretGenerator"].as_sequence().into_iter().flatten() {
            out.push(self.secret(dir, g, &o));
        }
        for p in k["patches"].as_sequence().into_iter().flatten() {
            let keys: Vec<&str> = map_of(p, &o).keys().map(|k| str_of(k, &o)).collect();
            assert_eq!(keys, ["path"], "{o}: patches: only `path` is rendered");
            let path = dir.join(str_of(&p["path"], &o));
            for patch in yaml_docs(&self.file(&path), &path.display().to_string()) {
                let kind = str_of(&patch["kind"], "patch kind");
                let name = str_of(&patch["metadata"]["name"], "patch name");
                let mut targets: Vec<&mut Value> = out
                    .iter_mut()
                    .filter(|r| r["kind"].as_str() == Some(kind))
                    .filter(|r| r["metadata"]["name"].as_str() == Some(name))
                    .collect();
                assert_eq!(
                    targets.len(),
                    1,
                    "{}: patch target {kind}/{name}",
                    path.display()
                );
                strategic_merge(targets.remove(0), &patch, "");
            }
        }
        for image in k["images"].as_sequence().into_iter().flatten() {
            for key in map_of(image, &o).keys() {
                let key = str_of(key, &o);
                assert!(
                    ["name", "newName", "newTag"].contains(&key),
                    "{o}: images.{key} is not rendered"
                );
            }
            let name = str_of(&image["name"], &o);
            for r in &mut out {
                // `get_mut`, not indexing: indexing a mapping for writing inserts the key.
                let containers = r
                    .get_mut("spec")
                    .and_then(|v| v.get_mut("template"))
                    .and_then(|v| v.get_mut("spec"))
                    .and_then(|v| v.get_mut("containers"))
                    .and_then(Value::as_sequence_mut);
                let Some(containers) = containers else {
                    continue;
                };
                for c in containers {
                    let current = c["image"].as_str().unwrap_or_default();
                    // `name`, `name:tag` or `name@digest` (the name may hold a registry port).
                    let base_end = current
                        .rfind(['@', ':'])
                        .filter(|at| !current[*at..].contains('/'));
                    let (base, suffix) = current.split_at(base_end.unwrap_or(current.len()));
                    if base != name {
                        continue;
                    }
                    let new_name = image["newName"].as_str().unwrap_or(name);
                    let image = match image["newTag"].as_str() {
                        Some(tag) => format!("{new_name}:{tag}"),
                        None => format!("{new_name}{suffix}"),
                    };
                    set_path(c, &["image"], Value::from(image));
                }
            }
        }
        if let Some(ns) = k["namespace"].as_str() {
            for r in &mut out {
                set_path(r, &["metadata", "namespace"], Value::from(ns));
            }
        }
        for l in k["labels"].as_sequence().into_iter().flatten() {
            for key in map_of(l, &o).keys() {
                let key = str_of(key, &o);
                assert!(
                    ["pairs", "includeSelectors", "includeTemplates"].contains(&key),
                    "{o}: labels.{key} is not rendered"
                );
            }
            let pairs = map_of(&l["pairs"], &o);
            let selectors = l["includeSelectors"].as_bool().unwrap_or(false);
            let templates = selectors || l["includeTemplates"].as_bool().unwrap_or(false);
            for r in &mut out {
                let workload = matches!(
                    r["kind"].as_str(),
                    Some("Deployment" | "StatefulSet" | "DaemonSet")
                );
                let mut paths: Vec<&[&str]> = vec![&["metadata", "labels"]];
                if templates && workload {
                    paths.push(&["spec", "template", "metadata", "labels"]);
                }
                if selectors {
                    match r["kind"].as_str() {
                        Some("Service") => paths.push(&["spec", "selector"]),
                        Some("PodDisruptionBudget") => {
                            paths.push(&["spec", "selector", "matchLabels"]);
                        }
                        _ if workload => paths.push(&["spec", "selector", "matchLabels"]),
                        _ => {}
                    }
                }
                for path in paths {
                    for (k, v) in pairs {
                        let mut full: Vec<&str> = path.to_vec();
                        full.push(str_of(k, &o));
                        set_path(r, &full, v.clone());
                    }
                }
            }
        }
        out
    }

    fn secret(&self, dir: &Path, g: &Value, o: &str) -> Value {
        for key in map_of(g, o).keys() {
            let key = str_of(key, o);
            assert!(
                ["name", "envs", "options"].contains(&key),
                "{o}: secretGenerator.{key} is not rendered"
            );
        }
        assert_eq!(
            g["options"]["disableNameSuffixHash"].as_bool(),
            Some(true),
            "{o}: secretGenerator without disableNameSuffixHash: true is not rendered"
        );
        let mut data = Mapping::new();
        for env in seq_of(&g["envs"], o) {
            let path = dir.join(str_of(env, o));
            for line in self.file(&path).lines() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (k, v) = line
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{}: `{line}` is not KEY=VALUE", path.display()));
                data.insert(Value::from(k), Value::from(base64(v.as_bytes())));
            }
        }
        let mut secret = Mapping::new();
        secret.insert("apiVersion".into(), "v1".into());
        secret.insert("kind".into(), "Secret".into());
        let mut meta = Mapping::new();
        meta.insert("name".into(), g["name"].clone());
        secret.insert("metadata".into(), Value::Mapping(meta));
        secret.insert("type".into(), "Opaque".into());
        secret.insert("data".into(), Value::Mapping(data));
        Value::Mapping(secret)
    }
}

/// `path` with `.` and `dir/..` removed (no file system access: the file may not exist).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Sets `path` in `value`, creating mappings on the way.
fn set_path(value: &mut Value, path: &[&str], leaf: Value) {
    let mut node = value;
    for (i, key) in path.iter().enumerate() {
        if !node.is_mapping() {
            *node = Value::Mapping(Mapping::new());
        }
        let map = node.as_mapping_mut().expect("made a mapping above");
        if i + 1 == path.len() {
            map.insert(Value::from(*key), leaf);
            return;
        }
        node = map
            .entry(Value::from(*key))
            .or_insert(Value::Mapping(Mapping::new()));
    }
}

/// The merge key of the lists the overlays patch (as Kubernetes' strategic merge patch
/// defines them); other lists are replaced.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    match field {
        "containers" | "initContainers" | "env" | "volumes" | "volumeMounts" => Some("name"),
        "ports" if items.iter().any(|i| !i["containerPort"].is_null()) => Some("containerPort"),
        "ports" => Some("port"),
        _ => None,
    }
}

/// Kubernetes' strategic merge patch, for mappings and the lists of [`merge_key`]; `null`
/// deletes a key.
fn strategic_merge(target: &mut Value, patch: &Value, field: &str) {
    match (target, patch) {
        (Value::Mapping(t), Value::Mapping(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                    continue;
                }
                let name = k.as_str().unwrap_or_default();
                match t.get_mut(k) {
                    Some(existing) => strategic_merge(existing, v, name),
                    None => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Sequence(t), Value::Sequence(p)) => match merge_key(field, p) {
            // As kustomize orders the result: the patch's items (merged into their
            // originals) first, in the patch's order, then the other original items.
            Some(key) => {
                let mut merged = Vec::with_capacity(t.len() + p.len());
                for item in p {
                    match t.iter().position(|e| e[key] == item[key]) {
                        Some(at) => {
                            let mut existing = t.remove(at);
                            strategic_merge(&mut existing, item, "");
                            merged.push(existing);
                        }
                        None => merged.push(item.clone()),
                    }
                }
                merged.append(t);
                *t = merged;
            }
            None => t.clone_from(p),
        },
        (t, p) => *t = p.clone(),
    }
}

#[test]
fn strategic_merge_merges_lists_by_their_key() {
    let mut target = yaml_docs(
        "spec:\n  containers:\n    - name: a\n      env:\n        - {name: X, value: '1'}\n        - {name: Y, value: '2'}\n      args: [p, q]\n",
        "target",
    )
    .remove(0);
    let patch = yaml_docs(
        "spec:\n  containers:\n    - name: a\n      env:\n        - {name: Y, value: '3'}\n        - {name: Z, value: '4'}\n      args: [r]\n",
        "patch",
    )
    .remove(0);
    strategic_merge(&mut target, &patch, "");
    let c = &target["spec"]["containers"][0];
    let env: Vec<(&str, &str)> = seq_of(&c["env"], "env")
        .iter()
        .map(|e| (str_of(&e["name"], "n"), str_of(&e["value"], "v")))
        .collect();
    assert_eq!(env, [("Y", "3"), ("Z", "4"), ("X", "1")]);
    assert_eq!(c["args"], yaml_docs("[r]", "args").remove(0));
}

/// The deployment's secrets env file, for the test: the keys of secrets.env.example, each
/// with the test's value. A key the test does not know fails (give it a value here).
fn test_secrets_env() -> String {
    let example = read(&deploy().join("k8s/base/secrets.env.example"));
    let mut out = String::new();
    for line in example.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, _) = line.split_once('=').expect("KEY=VALUE");
        let value = match key {
            "ticket-key" => KEY,
            "redis-url" => REDIS_URL,
            "admin-token" => ADMIN_TOKEN,
            other => panic!("secrets.env.example: key `{other}` has no test value"),
        };
        out.push_str(&format!("{key}={value}\n"));
    }
    out
}

fn render_overlay(region: &str, secrets_env: String) -> Vec<Value> {
    let files = HashMap::from([(deploy().join("k8s/base/secrets.env"), secrets_env)]);
    Kustomize { files: &files }.render(&deploy().join("k8s/overlays").join(region))
}

fn find<'a>(resources: &'a [Value], kind: &str, name: &str) -> &'a Value {
    resources
        .iter()
        .find(|r| r["kind"].as_str() == Some(kind) && r["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind}/{name} rendered"))
}

/// Expands Kubernetes' `$(VAR)` references (command, args, env values) from `env`.
fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("$(") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        match after.find(')') {
            Some(end) => match env.iter().find(|(k, _)| *k == after[..end]) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&rest[at..at + 3 + end]),
            },
            None => out.push_str(&rest[at..]),
        }
        rest = match after.find(')') {
            Some(end) => &after[end + 1..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

/// A rendered container's environment: values, field references, Secret and ConfigMap keys.
fn container_env(
    resources: &[Value],
    pod_name: &str,
    container: &Value,
    origin: &str,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for e in container["env"].as_sequence().into_iter().flatten() {
        let name = str_of(&e["name"], origin).to_owned();
        let value = if let Some(v) = e["value"].as_str() {
            expand(v, &env)
        } else if let Some(field) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            assert_eq!(field, "metadata.name", "{origin}: env {name} fieldRef");
            pod_name.to_owned()
        } else if !e["valueFrom"]["secretKeyRef"].is_null() {
            let r = &e["valueFrom"]["secretKeyRef"];
            let secret = find(resources, "Secret", str_of(&r["name"], origin));
            let key = str_of(&r["key"], origin);
            let data = secret["data"][key]
                .as_str()
                .unwrap_or_else(|| panic!("{origin}: env {name}: Secret key {key} missing"));
            String::from_utf8(unbase64(data)).expect("UTF-8 secret")
        } else if !e["valueFrom"]["configMapKeyRef"].is_null() {
            let r = &e["valueFrom"]["configMapKeyRef"];
            let map = find(resources, "ConfigMap", str_of(&r["name"], origin));
            str_of(&map["data"][str_of(&r["key"], origin)], origin).to_owned()
        } else {
            panic!("{origin}: env {name}: value form not understood: {e:?}")
        };
        env.push((name, value));
    }
    env
}

/// A rendered workload's pod and its meridian containers.
struct Pod<'a> {
    workload: &'a Value,
    name: String,
    /// (container, its main command line, its preStop command line if it runs meridian).
    containers: Vec<(&'a Value, CommandLine, Option<CommandLine>)>,
}

fn pods<'a>(resources: &'a [Value], region: &str) -> Vec<Pod<'a>> {
    let mut out = Vec::new();
    for w in resources {
        let kind = w["kind"].as_str().unwrap_or_default();
        if !["Deployment", "StatefulSet"].contains(&kind) {
            continue;
        }
        let name = str_of(&w["metadata"]["name"], "workload name").to_owned();
        let pod_name = format!("{name}-0");
        let mut containers = Vec::new();
        for c in seq_of(&w["spec"]["template"]["spec"]["containers"], &name) {
            let origin = format!(
                "overlay {region}: {kind}/{name} container {}",
                c["name"].as_str().unwrap_or_default()
            );
            let env = container_env(resources, &pod_name, c, &origin);
            let command: Vec<String> = seq_of(&c["command"], &origin)
                .iter()
                .map(|a| expand(str_of(a, &origin), &env))
                .collect();
            assert_eq!(command, [IMAGE_BINARY], "{origin}: command");
            let args = seq_of(&c["args"], &origin)
                .iter()
                .map(|a| expand(str_of(a, &origin), &env))
                .collect::<Vec<_>>();
            for arg in &args {
                assert!(
                    !arg.contains("$("),
                    "{origin}: unresolved reference in `{arg}`"
                );
            }
            let pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
                .as_sequence()
                .map(|cmd| {
                    let cmd: Vec<String> =
                        cmd.iter().map(|a| str_of(a, &origin).to_owned()).collect();
                    // The kubelet does not expand $(VAR) in lifecycle hooks: they read the
                    // container's environment themselves.
                    for arg in &cmd {
                        assert!(
                            !arg.contains("$("),
                            "{origin}: preStop `{arg}` is not expanded by the kubelet"
                        );
                    }
                    assert_eq!(cmd[0], IMAGE_BINARY, "{origin}: preStop");
                    CommandLine {
                        origin: format!("{origin} preStop"),
                        args: cmd[1..].to_vec(),
                        env: env.clone(),
                    }
                });
            let line = CommandLine { origin, args, env };
            containers.push((c, line, pre_stop));
        }
        out.push(Pod {
            workload: w,
            name,
            containers,
        });
    }
    out
}

#[test]
fn every_meridian_command_of_the_kubernetes_overlays_passes_check_config() {
    let mounts = Mounts::new();
    for region in REGIONS {
        let resources = render_overlay(region, test_secrets_env());
        let pods = pods(&resources, region);
        let mut roles = BTreeSet::new();
        for pod in &pods {
            for (c, line, pre_stop) in &pod.containers {
                roles.insert(line.role().to_owned());
                assert_check_config_ok(line, &mounts);
                let mount_points: Vec<String> = c["volumeMounts"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .map(|m| str_of(&m["mountPath"], &line.origin).to_owned())
                    .collect();
                Mounts::assert_mounted(line, &mount_points);
                if let Some(pre_stop) = pre_stop {
                    assert_check_config_ok(pre_stop, &mounts);
                }
            }
        }
        assert_eq!(
            roles,
            BTreeSet::from(["lobby".to_owned(), "shard".to_owned()]),
            "overlay {region}"
        );
    }
}

#[test]
fn the_shipped_secret_placeholders_are_refused() {
    let mounts = Mounts::new();
    let example = read(&deploy().join("k8s/base/secrets.env.example"));
    let resources = render_overlay("london", example);
    let pods = pods(&resources, "london");
    let lobby = pods.iter().find(|p| p.name == "lobby").expect("lobby");
    let out = check_config(&lobby.containers[0].1, &mounts);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("ticket"),
        "the ticket key is named: {}",
        out.stderr
    );
}

#[test]
fn kubernetes_overlays_serve_every_zone_with_consistent_ports_probes_and_volumes() {
    let world = world();
    let mut served: BTreeMap<String, String> = BTreeMap::new();
    let world_configmap_text = read(&repo().join(WORLD));
    for region in REGIONS {
        let resources = render_overlay(region, test_secrets_env());
        let o = format!("overlay {region}");
        for r in &resources {
            assert_eq!(r["metadata"]["namespace"].as_str(), Some("meridian"), "{o}");
            assert_eq!(
                r["metadata"]["labels"]["meridian.example/region"].as_str(),
                Some(region),
                "{o}: {:?} region label",
                r["metadata"]["name"]
            );
        }
        assert_eq!(
            find(&resources, "ConfigMap", "meridian-world")["data"]["world.toml"].as_str(),
            Some(world_configmap_text.as_str()),
            "{o}: the ConfigMap meridian-world is {WORLD}"
        );
        // One image for every container of the region, the one its overlay names.
        let images: BTreeSet<&str> = pods(&resources, region)
            .iter()
            .flat_map(|p| {
                p.containers
                    .iter()
                    .map(|(c, _, _)| c["image"].as_str().unwrap_or(""))
            })
            .collect();
        assert_eq!(
            images,
            BTreeSet::from(["registry.example.com/meridian:0.1.0"]),
            "{o}: images"
        );
        let quic = find(&resources, "Service", "shard-quic");
        let lb_ip = str_of(&quic["spec"]["loadBalancerIP"], &o);
        let pods = pods(&resources, region);
        let mut region_zones = BTreeSet::new();
        let mut standby_for = BTreeSet::new();
        let mut port_names = BTreeMap::new();
        for pod in &pods {
            let template = &pod.workload["spec"]["template"];
            let labels = map_of(&template["metadata"]["labels"], &o);
            for (k, v) in map_of(&pod.workload["spec"]["selector"]["matchLabels"], &o) {
                assert_eq!(labels.get(k), Some(v), "{o}: {} selector", pod.name);
            }
            for v in template["spec"]["volumes"]
                .as_sequence()
                .into_iter()
                .flatten()
            {
                if let Some(cm) = v["configMap"]["name"].as_str() {
                    find(&resources, "ConfigMap", cm);
                }
                if let Some(secret) = v["secret"]["secretName"].as_str() {
                    // meridian-tls is the operator's (cert-manager or kubectl create secret
                    // tls: docs/deploy.md); every other Secret is rendered.
                    if secret != "meridian-tls" {
                        find(&resources, "Secret", secret);
                    }
                }
            }
            for (c, line, pre_stop) in &pod.containers {
                let c_origin = &line.origin;
                // The shards' UDP port names are unique in the region: shard-quic sends each
                // Service port to the one pod that has its named port.
                let udp = c["ports"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["protocol"].as_str() == Some("UDP"));
                for p in udp.filter(|_| line.role() == "shard") {
                    let name = str_of(&p["name"], c_origin).to_owned();
                    assert!(
                        port_names.insert(name.clone(), pod.name.clone()).is_none(),
                        "{c_origin}: port name {name} used twice"
                    );
                }
                // Probes on the admin port, which --admin-listen binds.
                let admin = line.setting_addr("admin-listen");
                let admin_port = seq_of(&c["ports"], c_origin)
                    .iter()
                    .find(|p| p["name"].as_str() == Some("admin"))
                    .expect("admin port");
                assert_eq!(
                    admin_port["containerPort"].as_u64(),
                    Some(u64::from(admin.port()))
                );
                // A standby's /readyz is 503 until it holds a zone's lease: it has no
                // readiness probe, or it would never be Ready.
                let standby = line.setting("standby-for").is_some();
                let probes: &[(&str, &str)] = if standby {
                    assert!(
                        c["readinessProbe"].is_null(),
                        "{c_origin}: standby readiness"
                    );
                    &[("livenessProbe", "/healthz")]
                } else {
                    &[("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")]
                };
                for (probe, path) in probes {
                    assert_eq!(
                        c[*probe]["httpGet"]["path"].as_str(),
                        Some(*path),
                        "{c_origin}"
                    );
                    assert_eq!(c[*probe]["httpGet"]["port"].as_str(), Some("admin"));
                }
                if line.role() != "shard" {
                    continue;
                }
                assert_eq!(
                    pod.workload["kind"].as_str(),
                    Some("StatefulSet"),
                    "{c_origin}"
                );
                find(
                    &resources,
                    "Service",
                    str_of(&pod.workload["spec"]["serviceName"], c_origin),
                );
                assert_eq!(
                    line.setting("region").as_deref(),
                    Some(region),
                    "{c_origin}"
                );
                match line.setting("standby-for") {
                    Some(list) => standby_for.extend(list.split(',').map(str::to_owned)),
                    None => {
                        let zone = line.setting("zone").expect("--zone");
                        let spec = world
                            .zones
                            .iter()
                            .find(|z| z.id.as_str() == zone)
                            .unwrap_or_else(|| panic!("{c_origin}: zone {zone} not in the map"));
                        assert_eq!(spec.region, region, "{c_origin}: zone {zone}'s region");
                        assert!(
                            served.insert(zone.clone(), pod.name.clone()).is_none(),
                            "zone {zone} served twice"
                        );
                        region_zones.insert(zone);
                    }
                }
                // Clients reach the shard at the Service's address on the shard's own port.
                let public = line.setting_addr("public-addr");
                let listen = line.setting_addr("listen");
                assert_eq!(
                    public.ip().to_string(),
                    lb_ip,
                    "{c_origin}: --public-addr IP"
                );
                let quic_port = seq_of(&c["ports"], c_origin)
                    .iter()
                    .find(|p| p["protocol"].as_str() == Some("UDP"))
                    .expect("a UDP port");
                assert_eq!(
                    quic_port["containerPort"].as_u64(),
                    Some(u64::from(listen.port()))
                );
                let svc_port = seq_of(&quic["spec"]["ports"], &o)
                    .iter()
                    .find(|p| p["targetPort"] == quic_port["name"])
                    .unwrap_or_else(|| panic!("{c_origin}: shard-quic has no port for it"));
                assert_eq!(svc_port["protocol"].as_str(), Some("UDP"));
                assert_eq!(
                    svc_port["port"].as_u64(),
                    Some(u64::from(public.port())),
                    "{c_origin}: --public-addr port"
                );
                // The drain deadline fits in the grace period.
                let grace = template["spec"]["terminationGracePeriodSeconds"]
                    .as_u64()
                    .expect("terminationGracePeriodSeconds");
                let deadline: u64 = line
                    .setting("drain-deadline-ms")
                    .expect("--drain-deadline-ms")
                    .parse()
                    .expect("a number");
                assert!(
                    deadline < grace * 1000,
                    "{c_origin}: drain deadline > grace"
                );
                assert!(pre_stop.is_some(), "{c_origin}: no preStop drain");
            }
        }
        // Every Service port reaches exactly one named container port.
        for p in seq_of(&quic["spec"]["ports"], &o) {
            let target = str_of(&p["targetPort"], &o);
            assert!(
                port_names.contains_key(target),
                "{o}: shard-quic → {target}"
            );
        }
        assert!(!standby_for.is_empty(), "{o}: no standby");
        assert_eq!(
            standby_for, region_zones,
            "{o}: the standby covers the region's zones"
        );
        // The PDB covers every zone shard, and not the standby (never Ready, it would use up
        // the budget).
        let pdb = find(&resources, "PodDisruptionBudget", "shard");
        for pod in pods.iter().filter(|p| p.containers[0].1.role() == "shard") {
            let labels = map_of(&pod.workload["spec"]["template"]["metadata"]["labels"], &o);
            let selected = map_of(&pdb["spec"]["selector"]["matchLabels"], &o)
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v));
            let standby = pod.containers[0].1.setting("standby-for").is_some();
            assert_eq!(selected, !standby, "{o}: PDB and {}", pod.name);
        }
    }
    let all: BTreeSet<String> = world.zones.iter().map(|z| z.id.to_string()).collect();
    assert_eq!(
        served.keys().cloned().collect::<BTreeSet<_>>(),
        all,
        "zones served"
    );
}

#[test]
fn dallas_second_zone_shard_is_the_base_shard_but_for_its_zone_and_port() {
    let resources = render_overlay("dallas", test_secrets_env());
    let normalize = |name: &str| {
        let mut w = find(&resources, "StatefulSet", name).clone();
        for path in [
            &["metadata", "name"][..],
            &["spec", "selector"],
            &["spec", "template", "metadata"],
        ] {
            set_path(&mut w, path, Value::Null);
        }
        let c = &mut w["spec"]["template"]["spec"]["containers"][0];
        set_path(c, &["ports"], Value::Null);
        if let Some(env) = c["env"].as_sequence_mut() {
            env.retain(|e| {
                !matches!(
                    e["name"].as_str(),
                    Some("MERIDIAN_ZONE" | "MERIDIAN_LISTEN" | "MERIDIAN_PUBLIC_ADDR")
                )
            });
            // The order of the variables differs: the overlay's patch puts its own first.
            env.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        }
        w
    };
    assert_eq!(normalize("shard"), normalize("shard-north-west"));
}

// ---- Dockerfile ----

#[test]
fn dockerfile_builds_in_stages_runs_as_non_root_and_exposes_the_ports() {
    let text = read(&deploy().join("Dockerfile")).replace("\\\n", " ");
    let instructions: Vec<(String, String)> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (op, rest) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            (op.to_uppercase(), rest.trim().to_owned())
        })
        .collect();
    let stages: Vec<(usize, String)> = instructions
        .iter()
        .enumerate()
        .filter(|(_, (op, _))| op == "FROM")
        .map(|(i, (_, rest))| {
            let words: Vec<&str> = rest.split_whitespace().collect();
            assert!(
                words.len() == 3 && words[1].eq_ignore_ascii_case("AS"),
                "FROM <image> AS <name> expected: {rest}"
            );
            (i, words[2].to_owned())
        })
        .collect();
    assert!(stages.len() >= 2, "a multi-stage build");
    // The build stage's toolchain is new enough for every package of the lockfile.
    let build_image = instructions[stages[0].0]
        .1
        .split_whitespace()
        .next()
        .unwrap_or_default();
    let tag = build_image
        .strip_prefix("rust:")
        .unwrap_or_else(|| panic!("the build stage is a rust image: {build_image}"));
    let version = |v: &str| -> (u64, u64) {
        let mut parts = v.split(['.', '-']).map(|p| p.parse::<u64>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    };
    let metadata = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline"])
        .current_dir(repo())
        .output()
        .expect("cargo metadata runs");
    assert!(metadata.status.success(), "cargo metadata failed");
    let metadata: serde_json::Value =
        serde_json::from_slice(&metadata.stdout).expect("cargo metadata JSON");
    let (needed, package) = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter_map(|p| Some((version(p["rust_version"].as_str()?), p["name"].as_str()?)))
        .max()
        .expect("some package states its rust_version");
    assert!(
        version(tag) >= needed,
        "{build_image} is older than Rust {}.{} that {package} needs",
        needed.0,
        needed.1
    );
    let last = stages.last().expect("stages").0;
    let runtime = &instructions[last..];
    let copies_from: Vec<&str> = runtime
        .iter()
        .filter(|(op, rest)| op == "COPY" && rest.starts_with("--from="))
        .map(|(_, rest)| {
            rest["--from=".len()..]
                .split_whitespace()
                .next()
                .unwrap_or_default()
        })
        .collect();
    assert!(
        copies_from
            .iter()
            .all(|s| stages[..stages.len() - 1].iter().any(|(_, n)| n == s)),
        "COPY --from names an earlier stage: {copies_from:?}"
    );
    assert!(
        !copies_from.is_empty(),
        "the runtime stage copies the binary"
    );
    let user = runtime
        .iter()
        .rev()
        .find(|(op, _)| op == "USER")
        .map(|(_, u)| u.as_str())
        .expect("the runtime stage sets USER");
    let uid = user.split(':').next().unwrap_or_default();
    assert!(!["root", "0", ""].contains(&uid), "USER {user} is root");
    let exposed: BTreeSet<&str> = runtime
        .iter()
        .filter(|(op, _)| op == "EXPOSE")
        .flat_map(|(_, rest)| rest.split_whitespace())
        .collect();
    for port in ["7000/udp", "7100/udp", "8080/tcp"] {
        assert!(exposed.contains(port), "EXPOSE {port}: {exposed:?}");
    }
    let entrypoint = runtime
        .iter()
        .find(|(op, _)| op == "ENTRYPOINT")
        .map(|(_, e)| e.as_str())
        .expect("ENTRYPOINT");
    let entrypoint: Vec<String> = serde_json::from_str(entrypoint).expect("ENTRYPOINT [\"…\"]");
    assert_eq!(entrypoint, [IMAGE_BINARY]);
    let ignore = read(&deploy().join("Dockerfile.dockerignore"));
    assert!(
        ignore.lines().any(|l| l.trim() == "target/"),
        "target/ is not sent"
    );
    // The ports the Dockerfile exposes are the ones the deploy files use by default.
    let compose = compose();
    let services = compose_meridian_services(&compose);
    for (line, _) in services.values() {
        match line.role() {
            "shard" => {
                assert_eq!(line.setting_addr("listen").port(), 7000);
                assert_eq!(line.setting_addr("admin-listen").port(), 8080);
            }
            "lobby" => assert_eq!(line.setting_addr("listen").port(), 7100),
            _ => {}
        }
    }
}

// ---- Prometheus and Grafana ----

fn scrape_job<'a>(config: &'a Value, job: &str) -> &'a Value {
    seq_of(&config["scrape_configs"], "scrape_configs")
        .iter()
        .find(|j| j["job_name"].as_str() == Some(job))
        .unwrap_or_else(|| panic!("no scrape job {job}"))
}

#[test]
fn prometheus_configs_parse_and_scrape_the_admin_endpoints() {
    const JOBS: [&str; 2] = ["meridian-shard", "meridian-lobby"];
    for file in ["prometheus.yml", "prometheus-kubernetes.yml"] {
        let config = yaml_file(&deploy().join("monitoring").join(file));
        for job in JOBS {
            let job = scrape_job(&config, job);
            assert_eq!(job["metrics_path"].as_str(), Some("/metrics"), "{file}");
        }
    }
    // Kubernetes: each job keeps the endpoints of one Service's port, which exists and reaches
    // the `admin` port the role's --admin-listen binds.
    let config = yaml_file(&deploy().join("monitoring/prometheus-kubernetes.yml"));
    let resources = render_overlay("london", test_secrets_env());
    for job in JOBS {
        let keep = seq_of(&scrape_job(&config, job)["relabel_configs"], "relabel")
            .iter()
            .find(|r| r["action"].as_str() == Some("keep"))
            .expect("a keep rule");
        let regex = str_of(&keep["regex"], "regex");
        let (service, port) = regex.split_once(';').expect("service;port");
        let svc = find(&resources, "Service", service);
        assert!(
            seq_of(&svc["spec"]["ports"], service)
                .iter()
                .any(|p| p["name"].as_str() == Some(port)
                    && p["targetPort"].as_str() == Some("admin")),
            "{job}: Service {service} has a port {port} to the admin port"
        );
    }
    // compose mounts these files where Prometheus and Grafana read them.
    let compose = compose();
    let volumes: Vec<&str> = ["prometheus", "grafana"]
        .iter()
        .flat_map(|s| seq_of(&compose["services"][*s]["volumes"], s))
        .map(|v| str_of(v, "volume"))
        .collect();
    for v in volumes {
        let source = v.split(':').next().unwrap_or_default();
        assert!(deploy().join(source).exists(), "compose mounts {source}");
    }
}

/// The metric names a family's `# TYPE` line allows in queries.
fn sample_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" if !name.ends_with("_total") => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        for s in suffixes {
            names.insert(format!("{name}{s}"));
        }
    }
    names
}

/// `GET path` on a plain HTTP/1.1 server: (status, body).
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Kills the child on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn grafana_dashboard_parses_and_queries_metrics_a_shard_exposes() {
    let text = read(&deploy().join("monitoring/grafana/dashboards/meridian.json"));
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    let mut titles = Vec::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "panel ids are unique"
        );
        assert!(p["gridPos"]["w"].as_u64().is_some(), "gridPos: {p}");
        if p["type"] == "row" {
            continue;
        }
        titles.push(p["title"].as_str().expect("title").to_owned());
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}: no query", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            assert!(!expr.trim().is_empty());
            exprs.push(expr.to_owned());
        }
    }
    for needed in ["Players per shard", "Tick p99", "Handoffs", "Redis latency"] {
        assert!(
            titles.iter().any(|t| t.contains(needed)),
            "a panel for {needed}: {titles:?}"
        );
    }
    // Every metric the dashboard queries is one a running shard (with shared state) exposes.
    let redis = meridian_cluster::testing::RedisServer::start()
        .await
        .expect("redis-server");
    let admin = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("free port");
        listener.local_addr().expect("addr")
    };
    let child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["shard", "--listen", "127.0.0.1:0", "--dev-cert"])
        .args(["--redis", &redis.url(), "--ticket-key", KEY])
        .args(["--admin-listen", &admin.to_string()])
        .env_remove("MERIDIAN_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a shard");
    let _child = Child(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let exposition = loop {
        match tokio::task::spawn_blocking(move || http_get(admin, "/metrics"))
            .await
            .expect("join")
        {
            // Shared-state metrics appear with the first call to Redis (the lease renewal).
            Ok((200, body)) if body.contains("meridian_shard_redis_command_seconds_bucket") => {
                break body;
            }
            other => {
                assert!(
                    Instant::now() < deadline,
                    "the shard's /metrics did not answer: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let exposed = sample_names(&exposition);
    let used: BTreeSet<String> = exprs
        .iter()
        .flat_map(|e| {
            e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("meridian_"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(!used.is_empty());
    let unknown: Vec<&String> = used.difference(&exposed).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics no shard exposes: {unknown:?}; exposed: {exposed:?}"
    );
    // Grafana's provisioning parses and points at the mounted dashboards.
    let provider =
        yaml_file(&deploy().join("monitoring/grafana/provisioning/dashboards/meridian.yaml"));
    let path = str_of(
        &provider["providers"][0]["options"]["path"],
        "provider path",
    );
    let compose = compose();
    assert!(
        seq_of(
            &compose["services"]["grafana"]["volumes"],
            "grafana volumes"
        )
        .iter()
        .any(|v| v
            .as_str()
            .is_some_and(|v| v.ends_with(&format!(":{path}:ro")))),
        "grafana mounts the dashboards at {path}"
    );
    yaml_file(&deploy().join("monitoring/grafana/provisioning/datasources/prometheus.yaml"));
}
