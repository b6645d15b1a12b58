//! `meridian audit` end to end: a real `redis-server`, shard records and ownership written with
//! the store as shards write them, a small fake of a shard's admin endpoint, and the real binary.

use axum::routing::get;
use axum::{Json, Router};
use meridian_cluster::audit::{HeldPlayer, HeldState, ShardPlayers};
use meridian_cluster::ownership::{AcquireOutcome, ClaimOutcome, Lease};
use meridian_cluster::testing::RedisServer;
use meridian_cluster::{RedisStore, ShardRecord, Store, StoreConfig};
use meridian_protocol::{PlayerId, ShardId, ZoneId};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

/// A deployment prefix other than the default, so `--prefix` is exercised.
const PREFIX: &str = "audit-test:";
/// Long enough that nothing expires during a test.
const TTL: Duration = Duration::from_secs(60);

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the binary (off the runtime's threads, which serve the fake admin endpoint) with no
/// `MERIDIAN_*` or `RUST_LOG` variable inherited from the test's environment.
async fn meridian(args: Vec<String>) -> Outcome {
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_meridian"));
        for (name, _) in std::env::vars_os() {
            let text = name.to_string_lossy();
            if text.starts_with("MERIDIAN_") || text == "RUST_LOG" {
                cmd.env_remove(&name);
            }
        }
        let out = cmd.args(&args).output().expect("the meridian binary runs");
        Outcome {
            code: out.status.code().expect("exited, not killed by a signal"),
            stdout: String::from_utf8(out.stdout).expect("UTF-8 stdout"),
            stderr: String::from_utf8(out.stderr).expect("UTF-8 stderr"),
        }
    })
    .await
    .expect("the binary's thread")
}

fn audit_args(redis: &RedisServer, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["audit", "--redis", &redis.url(), "--prefix", PREFIX]
        .iter()
        .map(ToString::to_string)
        .collect();
    // No settling wait: nothing is in flight in these tests.
    args.extend(["--settle-ms".to_owned(), "0".to_owned()]);
    args.extend(extra.iter().map(ToString::to_string));
    args
}

fn shard(name: &str) -> ShardId {
    ShardId::new(name).expect("valid shard id")
}

fn zone(name: &str) -> ZoneId {
    ZoneId::new(name).expect("valid zone")
}

/// A fake shard admin endpoint that answers `answer` to `GET /players`.
async fn fake_admin(answer: ShardPlayers) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    let app = Router::new().route(
        "/players",
        get(move || {
            let answer = answer.clone();
            async move { Json(answer) }
        }),
    );
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("fake admin serves");
    });
    addr
}

/// A cluster in Redis: the store, and its test server (kept alive).
struct Cluster {
    redis: RedisServer,
    store: RedisStore,
}

impl Cluster {
    async fn start() -> Self {
        let redis = RedisServer::start().await.expect("redis-server starts");
        let config = StoreConfig {
            prefix: PREFIX.to_owned(),
            ..StoreConfig::default()
        };
        let store = RedisStore::connect(&redis.url(), &config)
            .await
            .expect("connect");
        Self { redis, store }
    }

    /// Registers `id` (serving `zone_name`) as a live shard with this admin address.
    async fn register(&self, id: &str, zone_name: &str, admin_addr: Option<SocketAddr>) {
        let record = ShardRecord {
            id: shard(id),
            zone: zone(zone_name),
            region: "local".to_owned(),
            addr: "127.0.0.1:7000".to_owned(),
            cert_sha256: [7; 32],
            capacity: 100,
            load: 0,
            draining: false,
            admin_addr: admin_addr.map(|a| a.to_string()),
        };
        self.store
            .heartbeat_shard(&record, TTL)
            .await
            .expect("heartbeat");
    }

    /// `id` takes the lease of `zone_name`.
    async fn lease(&self, zone_name: &str, id: &str) -> Lease {
        match self
            .store
            .acquire_lease(&zone(zone_name), &shard(id), TTL)
            .await
            .expect("acquire lease")
        {
            AcquireOutcome::Acquired(lease) => lease,
            AcquireOutcome::Held(lease) => panic!("lease held by {lease:?}"),
        }
    }

    /// The holder of `lease` claims `player`, as a shard does on a join.
    async fn claim(&self, player: u64, lease: &Lease) {
        let outcome = self
            .store
            .claim_player(PlayerId(player), lease)
            .await
            .expect("claim");
        assert!(
            matches!(outcome, ClaimOutcome::Claimed { .. }),
            "{outcome:?}"
        );
    }
}

fn held(players: &[u64], lease: &Lease) -> ShardPlayers {
    ShardPlayers {
        shard: lease.owner.clone(),
        zone: lease.zone.clone(),
        lease_epoch: Some(lease.epoch),
        players: players
            .iter()
            .map(|p| HeldPlayer {
                player: PlayerId(*p),
                state: HeldState::Active,
                pos: None,
            })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_cluster_exits_0_and_prints_its_counts() {
    let cluster = Cluster::start().await;
    let lease = cluster.lease("west", "eu-1").await;
    cluster.claim(1, &lease).await;
    cluster.claim(2, &lease).await;
    let admin = fake_admin(held(&[1, 2], &lease)).await;
    cluster.register("eu-1", "west", Some(admin)).await;

    let out = meridian(audit_args(&cluster.redis, &[])).await;
    assert_eq!(
        out.code, 0,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    for line in [
        "players 2",
        "owned_once 2",
        "orphaned 0",
        "duplicated 0",
        "stale_epoch 0",
    ] {
        assert!(
            out.stdout.lines().any(|l| l == line),
            "`{line}` missing: {}",
            out.stdout
        );
    }
    assert!(!out.stdout.contains("violation"), "{}", out.stdout);

    let out = meridian(audit_args(&cluster.redis, &["--json"])).await;
    assert_eq!(
        out.code, 0,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON on stdout");
    assert_eq!(report["players"], 2, "{report}");
    assert_eq!(report["owned_once"], 2, "{report}");
    assert_eq!(report["violations"], serde_json::json!([]), "{report}");
    assert_eq!(report["unreachable"], serde_json::json!([]), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_owned_by_a_dead_shard_exits_1() {
    let cluster = Cluster::start().await;
    let lease = cluster.lease("west", "eu-1").await;
    cluster.claim(1, &lease).await;
    let admin = fake_admin(held(&[1], &lease)).await;
    cluster.register("eu-1", "west", Some(admin)).await;
    // `eu-2` took its zone and a player, and never heartbeated (or died since).
    let dead = cluster.lease("east", "eu-2").await;
    cluster.claim(3, &dead).await;

    let out = meridian(audit_args(&cluster.redis, &[])).await;
    assert_eq!(
        out.code, 1,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    for line in [
        "players 2",
        "owned_once 1",
        "orphaned 1",
        "violation p3 orphaned: owned by dead shard eu-2",
    ] {
        assert!(
            out.stdout.lines().any(|l| l == line),
            "`{line}` missing: {}",
            out.stdout
        );
    }
    let error = out.stderr.lines().last().unwrap_or_default();
    assert!(
        error.starts_with("error: the audit is not clean: 1 violation"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_that_cannot_be_asked_is_unreachable_and_exits_1() {
    let cluster = Cluster::start().await;
    let lease = cluster.lease("west", "eu-1").await;
    cluster.claim(1, &lease).await;
    // Live, but publishes no admin address: its player is not judged.
    cluster.register("eu-1", "west", None).await;

    let out = meridian(audit_args(&cluster.redis, &["--json"])).await;
    assert_eq!(
        out.code, 1,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON on stdout");
    assert_eq!(report["players"], 1, "{report}");
    assert_eq!(report["not_judged"], 1, "{report}");
    assert_eq!(report["unreachable"][0]["shard"], "eu-1", "{report}");
    let reason = report["unreachable"][0]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("admin_addr"), "{report}");
}
