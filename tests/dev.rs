//! `meridian dev` end to end: the real binary runs a whole world (store, lobby, three shards,
//! bots) for a few seconds and writes its report; with `--store redis://…` against a
//! redis-server this test starts on a free port.

use meridian_cluster::testing::RedisServer;
use serde_json::Value;
use std::process::Command;

fn run_dev(extra: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let report = dir.path().join("r.json");
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args([
            "dev",
            "--bots",
            "6",
            "--duration",
            "4",
            "--npcs",
            "100",
            // Tests run side by side: each world's lobby on a free port.
            "--lobby-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--report",
        ])
        .arg(&report)
        .args(extra)
        .output()
        .expect("meridian dev runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\n{stderr}",
        out.status.code()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("bots started"),
        "a status line a second:\n{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("admin http://127.0.0.1:")),
        "the admin endpoint's address on port 0 is printed:\n{stdout}"
    );
    let text = std::fs::read_to_string(&report).expect("report written");
    serde_json::from_str(&text).expect("report is JSON")
}

fn check(report: &Value) {
    assert_eq!(report["schema"], 1);
    assert_eq!(report["bots"], 6);
    assert_eq!(report["joined"], 6, "{report:#}");
    assert_eq!(report["join_failures"], 0, "{report:#}");
    assert_eq!(report["disconnects"], 0, "{report:#}");
    assert!(
        report["snapshots_per_s"]["mean"].as_f64().expect("number") > 20.0,
        "{report:#}"
    );
    assert!(report["join_ms"]["p99"].as_f64().expect("number") > 0.0);
    let shards = report["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), 3);
    let players: u64 = shards
        .iter()
        .map(|s| s["players"].as_u64().expect("players"))
        .sum();
    assert_eq!(
        players, 6,
        "every bot is on exactly one shard at the end: {report:#}"
    );
}

#[test]
fn dev_world_with_the_memory_store() {
    check(&run_dev(&[]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_world_with_redis() {
    let redis = RedisServer::start().await.expect("redis-server starts");
    let url = redis.url().to_owned();
    let report = tokio::task::spawn_blocking(move || run_dev(&["--store", &url]))
        .await
        .expect("dev ran");
    check(&report);
}
