//! The conformance suite of the `Store` port: one set of test functions, run once against the
//! in-memory adapter (time moved by a `ManualClock`) and once against a real `redis-server`
//! started for each test (time passes for real, with short TTLs and polling). Then the tests
//! only Redis can take: prefix isolation, outages, restarts, connecting, corrupt data.

use meridian_cluster::store::{MAX_LEADERBOARD, MAX_SCORE};
use meridian_cluster::testing::RedisServer;
use meridian_cluster::{
    LiveShard, ManualClock, MemoryStore, RedisStore, Registry, RegistryConfig, Session,
    SessionToken, ShardRecord, Store, StoreConfig, StoreError, StoreHandle,
};
use meridian_protocol::{PlayerId, ShardId, ZoneId};
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// TTL used by the expiry tests: short, so that Redis tests wait little.
const TTL: Duration = Duration::from_millis(300);
/// Longest any "eventually" check polls.
const PATIENCE: Duration = Duration::from_secs(5);

fn init_logs() {
    let _already = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "meridian_cluster=debug".into()),
        )
        .try_init();
}

/// One adapter under test and the way its time moves.
struct Harness {
    store: StoreHandle,
    clock: Option<ManualClock>,
    /// Keeps the test's own Redis alive (killed on drop).
    server: Option<RedisServer>,
}

impl Harness {
    async fn memory() -> Self {
        init_logs();
        let clock = ManualClock::new(1_700_000_000_000);
        Self {
            store: MemoryStore::new(clock.clone()).into(),
            clock: Some(clock),
            server: None,
        }
    }

    async fn redis() -> Self {
        init_logs();
        let server = RedisServer::start().await.expect("start redis-server");
        let store = StoreHandle::open(&server.url(), &StoreConfig::default())
            .await
            .expect("connect to the test redis-server");
        Self {
            store,
            clock: None,
            server: Some(server),
        }
    }

    /// Lets `d` pass for the store: moves the manual clock, or sleeps for real.
    async fn pass(&self, d: Duration) {
        match &self.clock {
            Some(clock) => clock.advance(d),
            None => tokio::time::sleep(d).await,
        }
    }

    fn server(&mut self) -> &mut RedisServer {
        self.server.as_mut().expect("a Redis harness")
    }
}

/// Polls `check` until it holds, failing the test after [`PATIENCE`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < PATIENCE,
            "timed out after {PATIENCE:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn shard(id: &str, zone: &str, load: u32) -> ShardRecord {
    ShardRecord {
        id: ShardId::new(id).expect("valid shard id"),
        zone: ZoneId::new(zone).expect("valid zone"),
        region: "eu-west".into(),
        addr: "127.0.0.1:4433".into(),
        cert_sha256: [7; 32],
        capacity: 100,
        load,
        draining: false,
        admin_addr: None,
    }
}

fn token(s: &str) -> SessionToken {
    SessionToken::new(s).expect("valid token")
}

async fn live_ids(store: &impl Store) -> Vec<String> {
    ids(store.live_shards().await.expect("live_shards"))
}

async fn registry_ids(registry: &Registry) -> Vec<String> {
    ids(registry.live_shards().await.expect("live_shards"))
}

fn ids(live: Vec<LiveShard>) -> Vec<String> {
    live.into_iter().map(|s| s.record.id.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// The suite: every function runs against both adapters.

async fn shard_heartbeat_upserts_and_lists_live_shards(h: Harness) {
    let s = &h.store;
    assert!(s.live_shards().await.expect("empty registry").is_empty());
    s.heartbeat_shard(&shard("b-1", "east", 3), Duration::from_secs(3))
        .await
        .expect("heartbeat");
    s.heartbeat_shard(&shard("a-1", "west", 5), Duration::from_secs(3))
        .await
        .expect("heartbeat");
    let live = s.live_shards().await.expect("live");
    assert_eq!(live.len(), 2);
    assert_eq!(live[0].record, shard("a-1", "west", 5), "ordered by id");
    assert_eq!(live[1].record, shard("b-1", "east", 3));
    assert!(live[0].heartbeat_ms > 1_600_000_000_000, "{live:?}");

    // Upsert: the same shard heartbeats a new load and a draining flag.
    let mut updated = shard("a-1", "west", 42);
    updated.draining = true;
    s.heartbeat_shard(&updated, Duration::from_secs(3))
        .await
        .expect("heartbeat");
    let live = s.live_shards().await.expect("live");
    assert_eq!(live.len(), 2);
    assert_eq!(live[0].record, updated);
}

async fn shard_disappears_when_heartbeats_stop(h: Harness) {
    let s = &h.store;
    s.heartbeat_shard(&shard("a-1", "west", 0), TTL)
        .await
        .expect("heartbeat");
    s.heartbeat_shard(&shard("b-1", "east", 0), Duration::from_secs(30))
        .await
        .expect("heartbeat");
    assert_eq!(live_ids(s).await, ["a-1", "b-1"]);
    h.pass(TTL + Duration::from_millis(50)).await;
    eventually("a-1 expires, b-1 stays", || async {
        live_ids(s).await == ["b-1"]
    })
    .await;
    // A shard that comes back is listed again.
    s.heartbeat_shard(&shard("a-1", "west", 0), TTL)
        .await
        .expect("heartbeat");
    assert_eq!(live_ids(s).await, ["a-1", "b-1"]);
}

async fn shard_deregisters_at_once(h: Harness) {
    let s = &h.store;
    let record = shard("a-1", "west", 0);
    s.heartbeat_shard(&record, Duration::from_secs(30))
        .await
        .expect("heartbeat");
    s.deregister_shard(&record.id).await.expect("deregister");
    assert!(live_ids(s).await.is_empty());
    s.deregister_shard(&ShardId::new("never").expect("valid"))
        .await
        .expect("deregistering an unknown shard is not an error");
}

async fn profile_is_created_once_per_name(h: Harness) {
    let s = &h.store;
    let first = s.load_or_create_profile("ada").await.expect("create");
    assert!(first.created);
    assert_eq!(first.profile.name, "ada");
    assert_eq!(first.profile.score, 0);
    let again = s.load_or_create_profile("ada").await.expect("load");
    assert!(!again.created);
    assert_eq!(again.profile, first.profile);
    let other = s.load_or_create_profile("grace").await.expect("create");
    assert!(other.created);
    assert_ne!(other.profile.player, first.profile.player);

    let by_id = s.load_profile(first.profile.player).await.expect("by id");
    assert_eq!(by_id, first.profile);
    // Names are arbitrary strings, braces and all.
    let odd = s.load_or_create_profile("{p:1} ü").await.expect("create");
    assert!(odd.created);
    assert_eq!(
        s.load_profile(odd.profile.player)
            .await
            .expect("by id")
            .name,
        "{p:1} ü"
    );

    let missing = PlayerId(999_999);
    let err = s.load_profile(missing).await.expect_err("never created");
    assert_eq!(
        err,
        StoreError::NotFound {
            key: "mer:{p:999999}".into()
        }
    );
}

async fn concurrent_first_visits_get_one_id(h: Harness) {
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let s = h.store.clone();
            tokio::spawn(async move { s.load_or_create_profile("racer").await })
        })
        .collect();
    let mut ids = HashSet::new();
    let mut created = 0;
    for task in tasks {
        let loaded = task.await.expect("task").expect("load_or_create");
        ids.insert(loaded.profile.player);
        created += usize::from(loaded.created);
    }
    assert_eq!(ids.len(), 1, "one id for one name: {ids:?}");
    assert_eq!(created, 1, "exactly one call created the profile");
}

async fn scores_add_atomically_and_stay_in_range(h: Harness) {
    let s = &h.store;
    let p = s
        .load_or_create_profile("ada")
        .await
        .expect("create")
        .profile;
    assert_eq!(s.add_score(p.player, 10).await.expect("add"), 10);
    assert_eq!(s.add_score(p.player, 5).await.expect("add"), 15);
    assert_eq!(s.add_score(p.player, -4).await.expect("subtract"), 11);
    assert_eq!(s.add_score(p.player, -100).await.expect("floor"), 0);
    assert_eq!(s.add_score(p.player, 0).await.expect("zero"), 0);
    assert_eq!(
        s.add_score(p.player, i64::MAX).await.expect("cap"),
        MAX_SCORE
    );
    assert_eq!(s.add_score(p.player, 1).await.expect("cap"), MAX_SCORE);
    assert_eq!(
        s.add_score(p.player, -1).await.expect("below cap"),
        MAX_SCORE - 1
    );
    assert_eq!(
        s.load_profile(p.player).await.expect("load").score,
        MAX_SCORE - 1
    );
    assert_eq!(
        s.load_or_create_profile("ada")
            .await
            .expect("load")
            .profile
            .score,
        MAX_SCORE - 1
    );
    assert_eq!(s.add_score(p.player, i64::MIN).await.expect("floor"), 0);

    let err = s
        .add_score(PlayerId(424_242), 1)
        .await
        .expect_err("unknown player");
    assert_eq!(
        err,
        StoreError::NotFound {
            key: "mer:{p:424242}".into()
        }
    );
}

async fn concurrent_score_additions_sum_exactly(h: Harness) {
    let p = h
        .store
        .load_or_create_profile("ada")
        .await
        .expect("create")
        .profile;
    let tasks: Vec<_> = (1..=50_i64)
        .map(|delta| {
            let s = h.store.clone();
            tokio::spawn(async move { s.add_score(p.player, delta).await })
        })
        .collect();
    let mut totals = HashSet::new();
    for task in tasks {
        totals.insert(task.await.expect("task").expect("add_score"));
    }
    assert_eq!(totals.len(), 50, "every call saw a distinct total");
    let expected = 50 * 51 / 2;
    assert!(totals.contains(&expected));
    assert_eq!(
        h.store.load_profile(p.player).await.expect("load").score,
        expected
    );
}

async fn leaderboard_lists_the_best_first(h: Harness) {
    let s = &h.store;
    assert!(s.top_scores(10).await.expect("empty").is_empty());
    let mut ids = Vec::new();
    for (name, score) in [("a", 30), ("b", 50), ("c", 10), ("d", 50)] {
        let p = s
            .load_or_create_profile(name)
            .await
            .expect("create")
            .profile;
        s.add_score(p.player, score).await.expect("score");
        ids.push(p.player);
    }
    // A player who never scored is not on the leaderboard.
    s.load_or_create_profile("idle").await.expect("create");

    let top = s.top_scores(3).await.expect("top");
    let rows: Vec<(&str, u64)> = top.iter().map(|e| (e.name.as_str(), e.score)).collect();
    // Ties (b and d, 50): the higher player id first.
    assert_eq!(rows, [("d", 50), ("b", 50), ("a", 30)]);
    assert_eq!(top[0].player, ids[3]);
    assert_eq!(s.top_scores(100).await.expect("all").len(), 4);
    assert!(s.top_scores(0).await.expect("none").is_empty());
    assert!(s.top_scores(usize::MAX).await.expect("capped").len() <= MAX_LEADERBOARD);

    s.add_score(ids[2], 100).await.expect("score");
    assert_eq!(s.top_scores(1).await.expect("top")[0].name, "c");
}

async fn sessions_put_get_delete_and_expire(h: Harness) {
    let s = &h.store;
    let t = token("resume-0123456789abcdef");
    assert_eq!(s.get_session(&t).await.expect("get"), None);
    let session = Session {
        player: PlayerId(7),
        zone: Some(ZoneId::new("west").expect("valid")),
    };
    s.put_session(&t, &session, Duration::from_secs(30))
        .await
        .expect("put");
    assert_eq!(s.get_session(&t).await.expect("get"), Some(session.clone()));
    s.delete_session(&t).await.expect("delete");
    assert_eq!(s.get_session(&t).await.expect("get"), None);
    s.delete_session(&t).await.expect("deleting twice is fine");

    // Replace, then expire.
    let moved = Session {
        player: PlayerId(7),
        zone: None,
    };
    s.put_session(&t, &session, TTL).await.expect("put");
    s.put_session(&t, &moved, TTL).await.expect("replace");
    assert_eq!(s.get_session(&t).await.expect("get"), Some(moved));
    h.pass(TTL + Duration::from_millis(50)).await;
    eventually("the session expires", || async {
        s.get_session(&t).await.expect("get").is_none()
    })
    .await;
}

async fn nonces_are_single_use_until_their_ttl(h: Harness) {
    let s = &h.store;
    assert!(s.use_nonce(0xfeed, TTL).await.expect("first use"));
    assert!(!s.use_nonce(0xfeed, TTL).await.expect("replay"));
    assert!(s.use_nonce(0xbeef, TTL).await.expect("another nonce"));
    h.pass(TTL + Duration::from_millis(50)).await;
    eventually("the nonce can be used again after its TTL", || async {
        s.use_nonce(0xfeed, TTL).await.expect("use")
    })
    .await;

    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let s = h.store.clone();
            tokio::spawn(async move { s.use_nonce(42, Duration::from_secs(30)).await })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.expect("task").expect("use_nonce"));
    }
    assert_eq!(winners, 1, "exactly one concurrent use wins");
}

async fn registry_heartbeat_task_tracks_the_shard_and_deregisters_on_shutdown(h: Harness) {
    let cfg = RegistryConfig {
        heartbeat_interval_ms: 20,
        ttl_ms: 200,
    };
    let registry = Registry::new(h.store.clone(), cfg).expect("valid config");
    let load = Arc::new(AtomicU32::new(1));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let source_load = load.clone();
    let task = registry.spawn_heartbeat(
        move || shard("a-1", "west", source_load.load(Ordering::SeqCst)),
        stopped,
    );
    eventually("the shard is listed", || async {
        registry_ids(&registry).await == ["a-1"]
    })
    .await;
    load.store(9, Ordering::SeqCst);
    eventually("the new load is published", || async {
        registry
            .live_shards()
            .await
            .expect("live")
            .first()
            .is_some_and(|s| s.record.load == 9)
    })
    .await;
    stop.send(()).expect("task alive");
    task.await.expect("task ends cleanly");
    assert!(registry_ids(&registry).await.is_empty(), "deregistered");
}

async fn registry_drops_a_shard_that_stops_heartbeating(h: Harness) {
    let cfg = RegistryConfig {
        heartbeat_interval_ms: 20,
        ttl_ms: 200,
    };
    let registry = Registry::new(h.store.clone(), cfg).expect("valid config");
    let task = registry.spawn_heartbeat(|| shard("a-1", "west", 0), std::future::pending::<()>());
    eventually("the shard is listed", || async {
        registry_ids(&registry).await == ["a-1"]
    })
    .await;
    // Crash: the task dies without deregistering.
    task.abort();
    let _aborted = task.await;
    let crashed_at = Instant::now();
    h.pass(Duration::from_millis(250)).await;
    eventually("the silent shard disappears within its TTL", || async {
        registry_ids(&registry).await.is_empty()
    })
    .await;
    // Real time (Redis): gone within the TTL of its last heartbeat, give or take scheduling.
    let gone_after = crashed_at.elapsed();
    assert!(
        gone_after < Duration::from_millis(200 + 400),
        "disappeared after {gone_after:?}"
    );
}

/// Runs each listed suite function once per adapter: `memory::<name>` and `redis::<name>`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Harness::memory().await).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Harness::redis().await).await;
                }
            )*
        }
    };
}

conformance!(
    shard_heartbeat_upserts_and_lists_live_shards,
    shard_disappears_when_heartbeats_stop,
    shard_deregisters_at_once,
    profile_is_created_once_per_name,
    concurrent_first_visits_get_one_id,
    scores_add_atomically_and_stay_in_range,
    concurrent_score_additions_sum_exactly,
    leaderboard_lists_the_best_first,
    sessions_put_get_delete_and_expire,
    nonces_are_single_use_until_their_ttl,
    registry_heartbeat_task_tracks_the_shard_and_deregisters_on_shutdown,
    registry_drops_a_shard_that_stops_heartbeating,
);

// ---------------------------------------------------------------------------------------------
// Redis only.

async fn open_redis(url: &str, prefix: &str, op_timeout_ms: u64) -> StoreHandle {
    let cfg = StoreConfig {
        prefix: prefix.into(),
        op_timeout_ms,
    };
    StoreHandle::open(url, &cfg).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_prefixes_isolate_deployments() {
    init_logs();
    let server = RedisServer::start().await.expect("start redis-server");
    let a = open_redis(&server.url(), "a:", 500).await;
    let b = open_redis(&server.url(), "b:", 500).await;

    let in_a = a.load_or_create_profile("ada").await.expect("create");
    a.add_score(in_a.profile.player, 5).await.expect("score");
    let in_b = b.load_or_create_profile("ada").await.expect("create");
    assert!(in_b.created, "b does not see a's player");
    assert_eq!(in_b.profile.score, 0);
    assert!(b.top_scores(10).await.expect("top").is_empty());

    a.heartbeat_shard(&shard("a-1", "west", 0), Duration::from_secs(30))
        .await
        .expect("heartbeat");
    assert!(live_ids(&b).await.is_empty());
    assert_eq!(live_ids(&a).await, ["a-1"]);

    let t = token("tok");
    let session = Session {
        player: PlayerId(1),
        zone: None,
    };
    a.put_session(&t, &session, Duration::from_secs(30))
        .await
        .expect("put");
    assert_eq!(b.get_session(&t).await.expect("get"), None);
    assert!(
        a.use_nonce(1, Duration::from_secs(30))
            .await
            .expect("nonce")
    );
    assert!(
        b.use_nonce(1, Duration::from_secs(30))
            .await
            .expect("nonce")
    );

    // Every key lives under its prefix.
    let client = ::redis::Client::open(server.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    assert!(
        keys.iter()
            .all(|k| k.starts_with("a:") || k.starts_with("b:")),
        "{keys:?}"
    );
    assert!(keys.contains(&"a:{p:1}".to_owned()), "{keys:?}");
}

/// Every operation on a stopped Redis fails fast with `Unavailable` or `Timeout` naming its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_gives_typed_errors_naming_the_key() {
    let mut h = Harness::redis().await;
    let store = open_redis(&h.server().url(), "mer:", 300).await;
    let player = store
        .load_or_create_profile("ada")
        .await
        .expect("create")
        .profile
        .player;
    h.server().stop();

    fn check<T: std::fmt::Debug>(result: Result<T, StoreError>, key: &str) {
        let err = result.expect_err("Redis is down");
        assert!(
            matches!(
                err,
                StoreError::Unavailable { .. } | StoreError::Timeout { .. }
            ),
            "{err:?}"
        );
        assert_eq!(err.key(), Some(key), "{err}");
        assert!(err.is_transient());
    }
    let started = Instant::now();
    let t = token("tok");
    let id = ShardId::new("a-1").expect("valid");
    check(store.load_profile(player).await, "mer:{p:1}");
    check(store.add_score(player, 1).await, "mer:{p:1}");
    check(store.load_or_create_profile("ada").await, "mer:{n:ada}");
    check(store.top_scores(3).await, "mer:leaderboard");
    check(
        store.heartbeat_shard(&shard("a-1", "west", 0), TTL).await,
        "mer:{s:a-1}:info",
    );
    check(store.live_shards().await, "mer:shards");
    check(store.deregister_shard(&id).await, "mer:{s:a-1}:info");
    check(store.get_session(&t).await, "mer:session:tok");
    check(
        store
            .put_session(&t, &Session { player, zone: None }, TTL)
            .await,
        "mer:session:tok",
    );
    check(store.delete_session(&t).await, "mer:session:tok");
    check(store.use_nonce(1, TTL).await, "mer:nonce:0000000000000001");
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(11 * 300 + 1_000),
        "each call is bounded by the 300 ms timeout: {elapsed:?}"
    );
}

/// After Redis restarts, the same handle works again (the connection manager reconnects).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_is_survived_by_the_same_handle() {
    let mut h = Harness::redis().await;
    let store = h.store.clone();
    store.load_or_create_profile("ada").await.expect("create");
    h.server().stop();
    assert!(store.load_or_create_profile("ada").await.is_err());
    h.server().restart().await.expect("restart redis-server");
    eventually("the handle reconnects", || async {
        store.load_or_create_profile("grace").await.is_ok()
    })
    .await;
    // The restarted Redis is empty (no persistence): everything works from scratch, scripts
    // included (reloaded after NOSCRIPT).
    let ada = store.load_or_create_profile("ada").await.expect("create");
    assert!(ada.created);
    assert_eq!(
        store.add_score(ada.profile.player, 3).await.expect("score"),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_connect_to_a_dead_server_fails_fast_naming_the_url() {
    init_logs();
    let mut server = RedisServer::start().await.expect("start redis-server");
    server.stop();
    let url = format!("redis://app:s3cret@127.0.0.1:{}", server.port());
    let started = Instant::now();
    let err = StoreHandle::open(&url, &StoreConfig::default())
        .await
        .expect_err("nothing listens");
    assert!(started.elapsed() < Duration::from_secs(2), "bounded");
    let StoreError::Connect { url: shown, .. } = &err else {
        panic!("expected Connect, got {err:?}");
    };
    assert_eq!(
        shown,
        &format!("redis://app:<redacted>@127.0.0.1:{}", server.port())
    );
    assert!(!err.to_string().contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_connect_with_retry_waits_for_redis_up_to_a_deadline() {
    init_logs();
    let mut server = RedisServer::start().await.expect("start redis-server");
    server.stop();
    let url = server.url();

    let started = Instant::now();
    let err =
        RedisStore::connect_with_retry(&url, &StoreConfig::default(), Duration::from_millis(300))
            .await
            .expect_err("Redis stays down");
    assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "gives up at the deadline"
    );

    let retrying = tokio::spawn({
        let url = url.clone();
        async move {
            RedisStore::connect_with_retry(&url, &StoreConfig::default(), Duration::from_secs(10))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart().await.expect("restart redis-server");
    let store = retrying
        .await
        .expect("task")
        .expect("connects once Redis is up");
    assert!(store.use_nonce(1, TTL).await.expect("works"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_handle_opens_the_adapter_named_by_the_url() {
    init_logs();
    let cfg = StoreConfig::default();
    let memory = StoreHandle::open("memory", &cfg).await.expect("memory");
    assert_eq!(memory.backend(), "memory");
    assert!(memory.use_nonce(1, TTL).await.expect("works"));

    let server = RedisServer::start().await.expect("start redis-server");
    let redis = StoreHandle::open(&server.url(), &cfg).await.expect("redis");
    assert_eq!(redis.backend(), "redis");

    for bad in ["memroy", "localhost:6379", ""] {
        let err = StoreHandle::open(bad, &cfg).await.expect_err(bad);
        assert!(matches!(err, StoreError::Config(_)), "{bad}: {err:?}");
    }
    let bad_cfg = StoreConfig {
        prefix: String::new(),
        ..StoreConfig::default()
    };
    assert!(matches!(
        StoreHandle::open("memory", &bad_cfg).await,
        Err(StoreError::Config(_))
    ));
}

/// Data this version does not write reads as `Corrupt`, naming the key, never a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_foreign_data_is_reported_corrupt() {
    let h = Harness::redis().await;
    let server = h.server.as_ref().expect("redis");
    let client = ::redis::Client::open(server.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let set =
        |key: &'static str, value: &'static str| ::redis::cmd("SET").arg(key).arg(value).clone();
    set("mer:session:tok", "not json")
        .exec_async(&mut conn)
        .await
        .expect("SET");
    set("mer:{n:ada}", "not-a-number")
        .exec_async(&mut conn)
        .await
        .expect("SET");
    set("mer:leaderboard", "a string, not a sorted set")
        .exec_async(&mut conn)
        .await
        .expect("SET");

    let err = h
        .store
        .get_session(&token("tok"))
        .await
        .expect_err("bad JSON");
    assert!(
        matches!(&err, StoreError::Corrupt { key, .. } if key == "mer:session:tok"),
        "{err:?}"
    );
    let err = h
        .store
        .load_or_create_profile("ada")
        .await
        .expect_err("bad id");
    assert!(
        matches!(&err, StoreError::Corrupt { key, .. } if key == "mer:{n:ada}"),
        "{err:?}"
    );
    let err = h.store.top_scores(3).await.expect_err("wrong type");
    assert!(
        matches!(&err, StoreError::Corrupt { key, .. } if key == "mer:leaderboard"),
        "{err:?}"
    );
}
