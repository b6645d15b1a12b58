//! The Redis adapter on a real 3-master Redis Cluster (`RedisCluster`: `redis-server
//! --cluster-enabled yes` ×3, `redis-cli --cluster create`), beyond the conformance suite (which
//! also runs on a cluster): cluster URL lists are checked naming the bad element, operations
//! whose keys live on different nodes work (players, leaderboard, registry, a checkpoint batch,
//! the audit scan), blocking inbox reads reach the node serving each inbox, and a node that goes
//! down fails only the operations on its slots, with typed errors in bounded time, until it
//! returns.

use meridian_cluster::config::RedisUrlError;
use meridian_cluster::error::StoreConfigError;
use meridian_cluster::keyspace::Keyspace;
use meridian_cluster::ownership::{
    AcceptOutcome, AcquireOutcome, ClaimOutcome, HandoffNotice, Lease, PlayerState, TransferOutcome,
};
use meridian_cluster::testing::{CLUSTER_NODES, RedisCluster};
use meridian_cluster::{ShardRecord, Store, StoreConfig, StoreError, StoreHandle};
use meridian_protocol::{PlayerId, ShardId, ZoneId};
use std::time::{Duration, Instant};

fn init_logs() {
    let _already = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "meridian_cluster=debug".into()),
        )
        .try_init();
}

fn cfg(prefix: &str, op_timeout_ms: u64) -> StoreConfig {
    StoreConfig {
        prefix: prefix.to_owned(),
        op_timeout_ms,
    }
}

fn zone(name: &str) -> ZoneId {
    ZoneId::new(name).expect("valid zone")
}

fn sid(name: &str) -> ShardId {
    ShardId::new(name).expect("valid shard id")
}

fn pstate(x: f32) -> PlayerState {
    PlayerState {
        pos: [x, 0.0],
        vel: [0.0, 0.0],
        score: 0,
        last_input: 0,
    }
}

async fn acquired(s: &StoreHandle, zone_name: &str, shard: &str) -> Lease {
    match s
        .acquire_lease(&zone(zone_name), &sid(shard), Duration::from_secs(60))
        .await
        .expect("acquire")
    {
        AcquireOutcome::Acquired(lease) => lease,
        AcquireOutcome::Held(other) => panic!("zone {zone_name} held by {other:?}"),
    }
}

/// One player id per node whose hash that node serves, in node order.
async fn player_per_node(cluster: &mut RedisCluster, keys: &Keyspace) -> Vec<PlayerId> {
    let mut found: Vec<Option<PlayerId>> = vec![None; CLUSTER_NODES];
    for id in 1..1000 {
        let node = cluster
            .node_of_key(&keys.player(PlayerId(id)))
            .await
            .expect("slot owner");
        found[node].get_or_insert(PlayerId(id));
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    found
        .into_iter()
        .map(|p| p.expect("a player on every node"))
        .collect()
}

/// One shard id per node whose inbox that node serves, in node order.
async fn shard_per_node(cluster: &mut RedisCluster, keys: &Keyspace) -> Vec<ShardId> {
    let mut found: Vec<Option<ShardId>> = vec![None; CLUSTER_NODES];
    for n in 0..1000 {
        let shard = sid(&format!("s-{n}"));
        let node = cluster
            .node_of_key(&keys.inbox(&shard))
            .await
            .expect("slot owner");
        found[node].get_or_insert(shard);
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    found
        .into_iter()
        .map(|s| s.expect("an inbox on every node"))
        .collect()
}

#[tokio::test]
async fn cluster_url_lists_are_refused_naming_the_bad_element_before_connecting() {
    init_logs();
    let started = Instant::now();
    for (url, position) in [
        ("redis://127.0.0.1:1,unix:///tmp/r.sock", 2),
        ("redis://127.0.0.1:1,", 2),
        ("127.0.0.1:1,redis://127.0.0.1:2", 1),
        ("redis://127.0.0.1:1,redis://127.0.0.1:2,http://x", 3),
    ] {
        let err = StoreHandle::open(url, &StoreConfig::default())
            .await
            .expect_err(url);
        let StoreError::Config(StoreConfigError::BadUrl(RedisUrlError::BadClusterNode {
            position: p,
            ..
        })) = &err
        else {
            panic!("{url}: expected BadClusterNode, got {err:?}");
        };
        assert_eq!(*p, position, "{url}");
        assert!(
            err.to_string().contains(&format!("node {position} of")),
            "{err}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "nothing was dialled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_list_of_dead_nodes_fails_fast_naming_the_urls_without_passwords() {
    init_logs();
    let url = "redis://app:s3cret@127.0.0.1:1,redis://app:s3cret@127.0.0.1:2";
    let started = Instant::now();
    let err = StoreHandle::open(url, &cfg("mer:", 300))
        .await
        .expect_err("nothing listens there");
    assert!(started.elapsed() < Duration::from_secs(2), "bounded");
    let StoreError::Connect { url: shown, .. } = &err else {
        panic!("expected Connect, got {err:?}");
    };
    assert_eq!(
        shown,
        "redis://app:<redacted>@127.0.0.1:1,redis://app:<redacted>@127.0.0.1:2"
    );
    assert!(!err.to_string().contains("s3cret"), "{err}");
}

/// Operations whose keys live on several nodes: a profile (player hash and leaderboard), the
/// registry (shard records and their index), a checkpoint batch over players of every node,
/// and the audit scan, which must visit every master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_spanning_nodes_work_and_the_scan_visits_every_master() {
    init_logs();
    let mut cluster = RedisCluster::start().await.expect("start a Redis Cluster");
    let config = cfg("span:", 2000);
    let keys = config.keyspace().expect("valid prefix");
    let store = StoreHandle::open(&cluster.url(), &config)
        .await
        .expect("connect");
    let StoreHandle::Redis(redis) = &store else {
        panic!("a Redis store");
    };
    assert!(redis.is_cluster());

    // Profiles: names, ids, scores and the leaderboard, on whatever nodes they hash to.
    let mut made = Vec::new();
    for name in ["ada", "bob", "cyd", "dee", "eve", "fay"] {
        let loaded = store.load_or_create_profile(name).await.expect("profile");
        assert!(loaded.created);
        made.push(loaded.profile.player);
    }
    for (i, player) in made.iter().enumerate() {
        let delta = i64::try_from(i).expect("small") * 10;
        assert_eq!(
            store.add_score(*player, delta).await.expect("score"),
            u64::try_from(delta).expect("small")
        );
    }
    let top = store.top_scores(3).await.expect("top");
    let names: Vec<&str> = top.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["fay", "eve", "dee"]);
    assert_eq!(store.load_profile(made[5]).await.expect("load").score, 50);

    // Registry: records on several nodes, the index on one.
    for n in 0..6 {
        let record = ShardRecord {
            id: sid(&format!("r-{n}")),
            zone: zone("west"),
            region: "eu".into(),
            addr: "127.0.0.1:4433".into(),
            cert_sha256: [1; 32],
            capacity: 10,
            load: n,
            draining: false,
            admin_addr: None,
        };
        store
            .heartbeat_shard(&record, Duration::from_secs(30))
            .await
            .expect("heartbeat");
    }
    let live = store.live_shards().await.expect("live");
    assert_eq!(live.len(), 6);
    store
        .deregister_shard(&sid("r-0"))
        .await
        .expect("deregister");
    assert_eq!(store.live_shards().await.expect("live").len(), 5);

    // Ownership: one player per node, checkpointed in one batch, listed by the scan.
    let players = player_per_node(&mut cluster, &keys).await;
    let lease = acquired(&store, "west", "a-1").await;
    for player in &players {
        let claimed = store.claim_player(*player, &lease).await.expect("claim");
        assert!(
            matches!(claimed, ClaimOutcome::Claimed { .. }),
            "{claimed:?}"
        );
    }
    let batch: Vec<(PlayerId, PlayerState)> = players
        .iter()
        .enumerate()
        .map(|(i, p)| (*p, pstate(i as f32 + 1.0)))
        .collect();
    let mut with_stranger = batch.clone();
    with_stranger.push((PlayerId(999_999), pstate(9.0)));
    let written = store
        .checkpoint_players(&lease, &with_stranger)
        .await
        .expect("checkpoint");
    assert_eq!(written, [true, true, true, false]);
    for (player, state) in &batch {
        let record = store
            .get_ownership(*player)
            .await
            .expect("read")
            .expect("owned");
        assert_eq!(record.state.as_ref(), Some(state));
    }
    let owned: Vec<PlayerId> = store
        .owned_players()
        .await
        .expect("scan")
        .into_iter()
        .map(|r| r.player)
        .collect();
    let mut expected = players.clone();
    expected.sort();
    assert_eq!(owned, expected, "one owned player on each of the 3 masters");
}

/// A blocking read waits on the node that serves the inbox's slot: one reader per node, all
/// waiting at once, each gets the notice sent to it, and the handle keeps serving meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blocking_inbox_reads_reach_the_node_serving_each_inbox() {
    init_logs();
    let mut cluster = RedisCluster::start().await.expect("start a Redis Cluster");
    let config = cfg("inbox:", 2000);
    let keys = config.keyspace().expect("valid prefix");
    let store = StoreHandle::open(&cluster.url(), &config)
        .await
        .expect("connect");
    let shards = shard_per_node(&mut cluster, &keys).await;
    let readers: Vec<_> = shards
        .iter()
        .map(|shard| {
            let store = store.clone();
            let shard = shard.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let got = store
                    .read_inbox(&shard, 10, Duration::from_secs(10))
                    .await
                    .expect("blocking read");
                (got, started.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The shared connection is not held by the waiting reads.
    let quick = Instant::now();
    store.get_lease(&zone("west")).await.expect("a quick read");
    assert!(quick.elapsed() < Duration::from_secs(1));
    for (n, shard) in shards.iter().enumerate() {
        let notice = HandoffNotice {
            player: PlayerId(u64::try_from(n).expect("small") + 1),
            seq: 1,
            from: sid("src"),
            from_zone: zone("west"),
            to_zone: zone("east"),
            state: pstate(1.0),
        };
        store.send_handoff(shard, &notice).await.expect("send");
    }
    for (n, reader) in readers.into_iter().enumerate() {
        let (got, waited) = reader.await.expect("reader task");
        assert_eq!(got.len(), 1, "reader {n}: {got:?}");
        assert_eq!(
            got[0].notice.player,
            PlayerId(u64::try_from(n).expect("small") + 1)
        );
        assert!(
            waited < Duration::from_secs(5),
            "woken by the notice: {waited:?}"
        );
        store
            .ack_inbox(&shards[n], &[got[0].id.clone()])
            .await
            .expect("ack");
    }
}

/// Polls `op` until it succeeds, at most `patience`.
async fn until_ok<T, F, Fut>(what: &str, patience: Duration, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let started = Instant::now();
    loop {
        match op().await {
            Ok(value) => return value,
            Err(e) => assert!(
                started.elapsed() < patience,
                "{what}: still failing after {patience:?}: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A node goes down: operations on its slots fail with a typed, transient error naming the key
/// within the operation timeout (no panic, no hang), the other nodes' slots keep working, and
/// once the node is back (empty: nothing is persisted) the same handle works on its slots again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_fails_only_its_slots_with_typed_errors_until_it_returns() {
    init_logs();
    let mut cluster = RedisCluster::start().await.expect("start a Redis Cluster");
    let op_timeout_ms = 500;
    let config = cfg("down:", op_timeout_ms);
    let keys = config.keyspace().expect("valid prefix");
    let store = StoreHandle::open(&cluster.url(), &config)
        .await
        .expect("connect");
    let players = player_per_node(&mut cluster, &keys).await;
    let lease = acquired(&store, "west", "a-1").await;
    let lease_node = cluster
        .node_of_key(&keys.lease(&zone("west")))
        .await
        .expect("slot owner");
    // Stop a node that does not serve the lease, so that the survivors' writes stay fenced.
    let down = (lease_node + 1) % CLUSTER_NODES;
    let up = (down + 1) % CLUSTER_NODES;
    for player in &players {
        store.claim_player(*player, &lease).await.expect("claim");
    }

    cluster.stop_node(down);
    let stopped = Instant::now();
    let gone = players[down];
    let gone_key = keys.player(gone);
    for _ in 0..3 {
        let started = Instant::now();
        let err = store
            .get_ownership(gone)
            .await
            .expect_err("its node is down");
        let waited = started.elapsed();
        assert!(err.is_transient(), "{err:?}");
        assert!(
            matches!(&err, StoreError::Unavailable { key, .. } | StoreError::Timeout { key, .. } if *key == gone_key),
            "{err:?}"
        );
        assert!(
            waited < Duration::from_millis(op_timeout_ms + 500),
            "bounded by the timeout: {waited:?}"
        );
        let err = store
            .transfer_player(gone, &lease, &sid("b-1"), &zone("east"), &pstate(1.0))
            .await
            .expect_err("its node is down");
        assert!(err.is_transient(), "{err:?}");
    }
    // The other nodes keep serving their slots (after the client has noticed the loss).
    let alive = players[up];
    let record = until_ok("a player on a live node", Duration::from_secs(5), || {
        store.get_ownership(alive)
    })
    .await
    .expect("claimed");
    assert_eq!(record.owner, Some(sid("a-1")));
    eprintln!(
        "node {down} down: a live node's player read {} ms after the stop",
        stopped.elapsed().as_millis()
    );
    let (b_shard, east, moved_state) = (sid("b-1"), zone("east"), pstate(2.0));
    let moved = until_ok("a transfer on a live node", Duration::from_secs(5), || {
        store.transfer_player(alive, &lease, &b_shard, &east, &moved_state)
    })
    .await;
    assert!(
        matches!(moved, TransferOutcome::Transferred { .. }),
        "{moved:?}"
    );
    let b = Lease {
        zone: zone("east"),
        owner: sid("b-1"),
        epoch: 1,
    };
    let accepted = store.accept_player(alive, &b, None).await.expect("accept");
    assert!(
        matches!(accepted, AcceptOutcome::Accepted { .. }),
        "{accepted:?}"
    );
    // A batch touching the lost node fails as a whole, typed.
    let err = store
        .checkpoint_players(
            &lease,
            &[(players[lease_node], pstate(3.0)), (gone, pstate(3.0))],
        )
        .await
        .expect_err("one player's node is down");
    assert!(err.is_transient(), "{err:?}");

    let restarting = Instant::now();
    cluster.restart_node(down).await.expect("restart the node");
    // Back, empty: the player has no record there any more, and can be claimed again.
    let after = until_ok("the restarted node", Duration::from_secs(10), || {
        store.get_ownership(gone)
    })
    .await;
    assert_eq!(after, None, "nothing was persisted");
    eprintln!(
        "node {down} back: its player read {} ms after the restart began",
        restarting.elapsed().as_millis()
    );
    let again = store.claim_player(gone, &lease).await.expect("claim again");
    assert!(matches!(again, ClaimOutcome::Claimed { .. }), "{again:?}");
    let written = store
        .checkpoint_players(
            &lease,
            &[(players[lease_node], pstate(4.0)), (gone, pstate(4.0))],
        )
        .await
        .expect("checkpoint across nodes again");
    assert_eq!(written, [true, true]);
}

/// Ghost batches are published on any node and reach a subscriber on another; when the node a
/// subscription uses goes down, the subscription moves to another node by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ghost_subscription_moves_to_another_node_when_its_node_dies() {
    init_logs();
    let mut cluster = RedisCluster::start().await.expect("start a Redis Cluster");
    let config = cfg("ghosts:", 500);
    let keys = config.keyspace().expect("valid prefix");
    let store = StoreHandle::open(&cluster.url(), &config)
        .await
        .expect("connect");
    // A zone whose channel hashes to a node other than the first of the list, which the
    // subscription uses: publishing keeps working while the first node is down.
    let mut zone_name = None;
    for n in 0..1000 {
        let candidate = format!("z{n}");
        let node = cluster
            .node_of_key(&keys.ghosts(&zone(&candidate)))
            .await
            .expect("slot owner");
        if node != 0 {
            zone_name = Some(candidate);
            break;
        }
    }
    let west = zone(&zone_name.expect("a zone off the first node"));
    let mut rx = store.subscribe_ghosts(&west).await.expect("subscribe");
    store.publish_ghosts(&west, b"one").await.expect("publish");
    let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a batch in time")
        .expect("subscribed");
    assert_eq!(first, b"one");

    cluster.stop_node(0);
    let started = Instant::now();
    let mut n: u32 = 0;
    let moved = loop {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the subscription did not move to a live node"
        );
        n += 1;
        let batch = n.to_be_bytes();
        // The publish itself may fail while the client notices the lost node.
        let _ = store.publish_ghosts(&west, &batch).await;
        match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            Ok(Some(got)) if got == batch => break started.elapsed(),
            Ok(Some(_older)) => {}
            Ok(None) => panic!("the subscription task ended"),
            Err(_elapsed) => {}
        }
    };
    eprintln!(
        "ghost subscription moved off the dead node in {} ms",
        moved.as_millis()
    );
    cluster.restart_node(0).await.expect("restart the node");
    store.publish_ghosts(&west, b"back").await.expect("publish");
    let mut got_back = false;
    while let Ok(Some(batch)) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
        if batch == b"back" {
            got_back = true;
            break;
        }
    }
    assert!(got_back, "batches still flow after the node returns");
}
