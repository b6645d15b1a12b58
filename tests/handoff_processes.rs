//! End to end with the real binary: two `meridian shard` processes serving the two zones of a
//! world map, sharing a real redis-server. A client joins one shard, walks across the border
//! and ends up on the other; `meridian audit` finds the player owned exactly once. Then the
//! shard holding the player is killed (SIGKILL): once its registry entry expires, the audit
//! reports the player orphaned and exits 1. Every child is killed when the test ends.

use meridian_client::session::{ShardSession, client_endpoint};
use meridian_cluster::Store;
use meridian_cluster::store::{LiveShard, StoreConfig, StoreHandle};
use meridian_cluster::testing::RedisServer;
use meridian_protocol::quic::QuicConfig;
use meridian_protocol::ticket::{TicketClaims, TicketKey, TicketKind, random_nonce};
use meridian_protocol::{PlayerId, ShardId};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

const MAP: &str = r#"
name = "pair"
regions = ["here"]

[[zone]]
name = "a"
bounds = [0, 0, 200, 200]
region = "here"
spawn = [[170, 100]]

[[zone]]
name = "b"
bounds = [200, 0, 400, 200]
region = "here"
spawn = [[230, 100]]
"#;

/// Kills the child when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn meridian() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meridian"));
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if n.starts_with("MERIDIAN_") || n == "RUST_LOG" {
            cmd.env_remove(&name);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

fn shard(redis: &str, world: &std::path::Path, zone: &str) -> Guard {
    let child = meridian()
        .args(["shard", "--dev-cert", "--ticket-key", KEY, "--redis", redis])
        .arg("--world")
        .arg(world)
        .args(["--id", &format!("shard-{zone}"), "--zone", zone])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--region", "here", "--npcs", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("meridian shard starts");
    Guard(child)
}

async fn live(store: &StoreHandle, n: usize) -> Vec<LiveShard> {
    for _ in 0..600 {
        let shards = store.live_shards().await.unwrap_or_default();
        if shards.len() == n && shards.iter().all(|s| s.record.admin_addr.is_some()) {
            return shards;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{n} shards did not register within 60 s");
}

fn audit(redis: &str) -> (i32, String) {
    let out = meridian()
        .args(["audit", "--redis", redis])
        .output()
        .expect("meridian audit runs");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_processes_hand_a_player_over_and_the_audit_follows() {
    let redis = RedisServer::start().await.expect("redis-server starts");
    let url = redis.url();
    let dir = tempfile::tempdir().expect("temp dir");
    let world = dir.path().join("pair.toml");
    std::fs::write(&world, MAP).expect("map written");
    let _a = shard(&url, &world, "a");
    let mut b = shard(&url, &world, "b");
    let store = StoreHandle::open(&url, &StoreConfig::default())
        .await
        .expect("store");
    let shards = live(&store, 2).await;
    let rec = |id: &str| {
        shards
            .iter()
            .find(|s| s.record.id.as_str() == id)
            .map(|s| s.record.clone())
            .expect("shard registered")
    };
    let a = rec("shard-a");

    let key = TicketKey::from_hex(KEY).expect("key");
    let ticket = key
        .sign(TicketClaims {
            kind: TicketKind::Join,
            player: PlayerId(5),
            shard: a.id.clone(),
            zone: a.zone.clone(),
            expires_at_ms: now_ms() + 30_000,
            nonce: random_nonce(),
        })
        .expect("ticket");
    let ep = client_endpoint(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        &QuicConfig::default(),
    )
    .expect("endpoint");
    let addr: SocketAddr = a.addr.parse().expect("shard address");
    let mut s = ShardSession::connect(&ep, addr, a.cert_sha256, ticket, &QuicConfig::default())
        .await
        .expect("joined shard a");
    let b_id = ShardId::new("shard-b").expect("id");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while s.welcome().shard != b_id && tokio::time::Instant::now() < deadline {
        let _ = s.send_input(0.0, 1.0, 0);
        tokio::time::sleep(Duration::from_millis(34)).await;
    }
    assert_eq!(
        s.welcome().shard,
        b_id,
        "the client moved to shard b by itself"
    );

    let (code, out) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || audit(&url)
    })
    .await
    .expect("audit task");
    assert_eq!(code, 0, "clean audit: {out}");
    assert!(out.contains("players 1"), "{out}");
    assert!(out.contains("owned_once 1"), "{out}");

    // Kill b: the player it owns is orphaned once b's registry entry expires (3 s).
    let _ = b.0.kill();
    let _ = b.0.wait();
    let _ = live(&store, 1).await;
    let (code, out) = tokio::task::spawn_blocking(move || audit(&url))
        .await
        .expect("audit task");
    assert_eq!(code, 1, "violation found: {out}");
    assert!(out.contains("orphaned 1"), "{out}");
    drop(s);
    drop(redis);
}
