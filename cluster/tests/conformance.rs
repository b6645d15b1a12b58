//! The conformance suite of the `Store` port: one set of test functions, run against the
//! in-memory adapter (time moved by a `ManualClock`), against a real `redis-server` started for
//! each test (time passes for real, with short TTLs and polling), and against a real 3-master
//! Redis Cluster shared by the whole test binary (each test under its own key prefix). Then the
//! tests only Redis can take: prefix isolation, outages, restarts, connecting, corrupt data.

use meridian_cluster::ownership::{
    AcceptOutcome, AcquireOutcome, ClaimOutcome, HandoffNotice, InboxEntry, Lease, Ownership,
    PlayerState, TransferOutcome,
};
use meridian_cluster::redis_store::GHOST_BUFFER;
use meridian_cluster::store::{INBOX_REDELIVER_AFTER, MAX_LEADERBOARD, MAX_SCORE};
use meridian_cluster::testing::{RedisCluster, RedisServer};
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
    /// The store's key prefix.
    prefix: String,
}

impl Harness {
    async fn memory() -> Self {
        init_logs();
        let clock = ManualClock::new(1_700_000_000_000);
        Self {
            store: MemoryStore::new(clock.clone()).into(),
            clock: Some(clock),
            server: None,
            prefix: StoreConfig::default().prefix,
        }
    }

    /// A store on the Redis Cluster shared by this test binary, under a prefix of its own.
    async fn cluster() -> Self {
        static CLUSTER: tokio::sync::OnceCell<RedisCluster> = tokio::sync::OnceCell::const_new();
        static NEXT_PREFIX: AtomicU32 = AtomicU32::new(0);
        init_logs();
        let cluster = CLUSTER
            .get_or_init(|| async { RedisCluster::start().await.expect("start a Redis Cluster") })
            .await;
        let cfg = StoreConfig {
            prefix: format!("t{}:", NEXT_PREFIX.fetch_add(1, Ordering::Relaxed)),
            ..StoreConfig::default()
        };
        let store = StoreHandle::open(&cluster.url(), &cfg)
            .await
            .expect("connect to the test Redis Cluster");
        Self {
            store,
            clock: None,
            server: None,
            prefix: cfg.prefix,
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
            prefix: StoreConfig::default().prefix,
        }
    }

    /// Lets `d` pass for the store: moves the manual clock, or sleeps for real.
    async fn pass(&self, d: Duration) {
        match &self.clock {
            Some(clock) => clock.advance(d),
            None => tokio::time::sleep(d).await,
        }
    }

    /// A key name under the store's prefix: `rest` is what follows the prefix.
    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
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
            key: h.key("{p:999999}")
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
            key: h.key("{p:424242}")
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

// ---- Zone leases, fenced ownership, inboxes, ghosts ----

fn zone(name: &str) -> ZoneId {
    ZoneId::new(name).expect("valid zone")
}

fn sid(name: &str) -> ShardId {
    ShardId::new(name).expect("valid shard id")
}

fn lease(zone_name: &str, owner: &str, epoch: u64) -> Lease {
    Lease {
        zone: zone(zone_name),
        owner: sid(owner),
        epoch,
    }
}

fn pstate(x: f32) -> PlayerState {
    PlayerState {
        pos: [x, -x],
        vel: [0.5, 0.25],
        score: 7,
        last_input: 42,
    }
}

fn notice(player: u64, seq: u64) -> HandoffNotice {
    HandoffNotice {
        player: PlayerId(player),
        seq,
        from: sid("a-1"),
        from_zone: zone("west"),
        to_zone: zone("east"),
        state: pstate(1.0),
    }
}

/// A shard id and a zone that skipped their checks (as decoded from the wire or JSON).
fn unchecked_shard(name: &str) -> ShardId {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).expect("decodes unchecked")
}

fn unchecked_zone(name: &str) -> ZoneId {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).expect("decodes unchecked")
}

async fn acquired(s: &impl Store, zone_name: &str, shard_id: &str, ttl: Duration) -> Lease {
    match s
        .acquire_lease(&zone(zone_name), &sid(shard_id), ttl)
        .await
        .expect("acquire_lease")
    {
        AcquireOutcome::Acquired(lease) => lease,
        held @ AcquireOutcome::Held(_) => panic!("{shard_id} expected {zone_name}, got {held:?}"),
    }
}

async fn claimed_seq(s: &impl Store, player: u64, by: &Lease) -> u64 {
    match s
        .claim_player(PlayerId(player), by)
        .await
        .expect("claim_player")
    {
        ClaimOutcome::Claimed { seq, .. } => seq,
        stale @ ClaimOutcome::Stale { .. } => panic!("claim of {player} by {by:?}: {stale:?}"),
    }
}

async fn ownership(s: &impl Store, player: u64) -> Ownership {
    s.get_ownership(PlayerId(player))
        .await
        .expect("get_ownership")
        .expect("an ownership record")
}

fn assert_invalid<T: std::fmt::Debug>(result: Result<T, StoreError>, key: &str) {
    let err = result.expect_err("refused");
    assert!(
        matches!(&err, StoreError::InvalidInput { key: k, .. } if k == key),
        "expected InvalidInput naming `{key}`, got {err:?}"
    );
    assert!(!err.is_transient());
}

async fn lease_epochs_increase_across_acquire_expire_and_reacquire(h: Harness) {
    let s = &h.store;
    let west = zone("west");
    assert_eq!(s.get_lease(&west).await.expect("get"), None);
    let first = acquired(s, "west", "a-1", TTL).await;
    assert_eq!(first.owner, sid("a-1"));
    assert_eq!(first.zone, west);
    assert!(first.epoch >= 1);
    assert_eq!(s.get_lease(&west).await.expect("get"), Some(first.clone()));

    // Held by another: nothing changes.
    let held = s
        .acquire_lease(&west, &sid("b-1"), TTL)
        .await
        .expect("acquire");
    assert_eq!(held, AcquireOutcome::Held(first.clone()));
    assert_eq!(s.get_lease(&west).await.expect("get"), Some(first.clone()));

    // The same shard again (a restart): a new epoch; the old lease is lost.
    let restarted = acquired(s, "west", "a-1", TTL).await;
    assert!(
        restarted.epoch > first.epoch,
        "{restarted:?} after {first:?}"
    );
    assert!(!s.renew_lease(&first, TTL).await.expect("renew"));
    assert!(s.renew_lease(&restarted, TTL).await.expect("renew"));

    // Expiry frees the zone; renewing afterwards is refused; the next holder's epoch is higher.
    h.pass(TTL + Duration::from_millis(50)).await;
    eventually("the lease expires", || async {
        s.get_lease(&west).await.expect("get").is_none()
    })
    .await;
    assert!(!s.renew_lease(&restarted, TTL).await.expect("renew"));
    assert_eq!(s.get_lease(&west).await.expect("get"), None);
    let taken = acquired(s, "west", "b-1", Duration::from_secs(30)).await;
    assert!(
        taken.epoch > restarted.epoch,
        "{taken:?} after {restarted:?}"
    );
    assert!(!s.release_lease(&restarted).await.expect("release"));
    assert_eq!(s.get_lease(&west).await.expect("get"), Some(taken.clone()));

    // Zones count their epochs apart.
    let east = acquired(s, "east", "a-1", Duration::from_secs(30)).await;
    assert_eq!(east.epoch, 1);

    // A zero TTL counts as 1 ms: acquired, then soon gone.
    let brief = acquired(s, "north", "c-1", Duration::ZERO).await;
    h.pass(Duration::from_millis(5)).await;
    eventually("a 1 ms lease expires", || async {
        s.get_lease(&zone("north")).await.expect("get").is_none()
    })
    .await;
    assert!(!s.renew_lease(&brief, TTL).await.expect("renew"));

    // Any TTL is accepted (cut to MAX_LEASE_TTL).
    let long = acquired(s, "south", "c-1", Duration::MAX).await;
    assert!(s.renew_lease(&long, Duration::MAX).await.expect("renew"));
    if let Some(clock) = &h.clock {
        clock.advance(Duration::from_secs(24 * 3600));
    }
    assert_eq!(s.get_lease(&zone("south")).await.expect("get"), Some(long));
}

async fn lease_renewal_keeps_it_and_release_frees_it_keeping_the_counter(h: Harness) {
    let s = &h.store;
    let west = zone("west");
    let held = acquired(s, "west", "a-1", TTL).await;
    // Renewed before each expiry, it outlives its first TTL.
    for _ in 0..3 {
        h.pass(TTL / 2).await;
        assert!(s.renew_lease(&held, TTL).await.expect("renew"));
    }
    assert_eq!(s.get_lease(&west).await.expect("get"), Some(held.clone()));

    let wrong_epoch = Lease {
        epoch: held.epoch + 1,
        ..held.clone()
    };
    let wrong_owner = Lease {
        owner: sid("b-1"),
        ..held.clone()
    };
    assert!(!s.release_lease(&wrong_epoch).await.expect("release"));
    assert!(!s.release_lease(&wrong_owner).await.expect("release"));
    assert!(!s.renew_lease(&wrong_owner, TTL).await.expect("renew"));
    assert!(s.release_lease(&held).await.expect("release"));
    assert_eq!(s.get_lease(&west).await.expect("get"), None);
    assert!(!s.release_lease(&held).await.expect("release twice"));
    let next = acquired(s, "west", "b-1", TTL).await;
    assert_eq!(
        next.epoch,
        held.epoch + 1,
        "the counter survives the release"
    );
}

async fn claim_records_the_owner_and_stale_claims_are_refused(h: Harness) {
    let s = &h.store;
    // A player with a profile: the ownership fields live beside the profile's.
    let ada = s
        .load_or_create_profile("ada")
        .await
        .expect("create")
        .profile;
    assert_eq!(s.get_ownership(ada.player).await.expect("get"), None);
    let a = lease("west", "a-1", 2);
    let claimed = s.claim_player(ada.player, &a).await.expect("claim");
    assert_eq!(
        claimed,
        ClaimOutcome::Claimed {
            seq: 1,
            state: None
        }
    );
    let record = ownership(s, ada.player.0).await;
    assert_eq!(
        record,
        Ownership {
            player: ada.player,
            owner: Some(sid("a-1")),
            zone: Some(zone("west")),
            epoch: 2,
            seq: 1,
            from: None,
            state: None,
        }
    );
    assert_eq!(s.load_profile(ada.player).await.expect("profile"), ada);

    // A lower epoch in the same zone: stale, nothing written.
    let stale = s
        .claim_player(ada.player, &lease("west", "b-1", 1))
        .await
        .expect("claim");
    assert_eq!(stale, ClaimOutcome::Stale { epoch: 2 });
    assert_eq!(ownership(s, ada.player.0).await, record);

    // The same epoch or a higher one wins (the newest session), and so does another zone.
    assert_eq!(
        claimed_seq(s, ada.player.0, &lease("west", "b-1", 2)).await,
        2
    );
    assert_eq!(
        claimed_seq(s, ada.player.0, &lease("east", "c-1", 1)).await,
        3
    );
    let record = ownership(s, ada.player.0).await;
    assert_eq!(record.owner, Some(sid("c-1")));
    assert_eq!((record.epoch, record.seq), (1, 3));

    // A player without a profile can be claimed too; a saved state comes back on a claim.
    assert_eq!(claimed_seq(s, 500, &a).await, 1);
    assert_eq!(
        s.checkpoint_players(&a, &[(PlayerId(500), pstate(3.0))])
            .await
            .expect("checkpoint"),
        [true]
    );
    let again = s
        .claim_player(PlayerId(500), &lease("west", "a-1", 3))
        .await
        .expect("claim");
    assert_eq!(
        again,
        ClaimOutcome::Claimed {
            seq: 2,
            state: Some(pstate(3.0))
        }
    );
}

async fn transfer_moves_ownership_only_from_the_owner_at_its_epoch(h: Harness) {
    let s = &h.store;
    let a = lease("west", "a-1", 2);
    let seq = claimed_seq(s, 1, &a).await;
    let before = ownership(s, 1).await;
    let (to, to_zone) = (sid("b-1"), zone("east"));
    for not_owner in [
        lease("west", "b-1", 5), // another shard
        lease("east", "a-1", 2), // another zone
        lease("west", "a-1", 1), // an epoch below the record's
    ] {
        let refused = s
            .transfer_player(PlayerId(1), &not_owner, &to, &to_zone, &pstate(1.0))
            .await
            .expect("transfer");
        assert_eq!(
            refused,
            TransferOutcome::NotOwner(Some(before.clone())),
            "{not_owner:?}"
        );
    }
    assert_eq!(ownership(s, 1).await, before, "nothing written");
    let never = s
        .transfer_player(PlayerId(2), &a, &to, &to_zone, &pstate(1.0))
        .await
        .expect("transfer");
    assert_eq!(never, TransferOutcome::NotOwner(None));

    // The owner, under an epoch at or above the record's (a renewed lease after a restart).
    let moved = s
        .transfer_player(
            PlayerId(1),
            &lease("west", "a-1", 3),
            &to,
            &to_zone,
            &pstate(9.5),
        )
        .await
        .expect("transfer");
    assert_eq!(moved, TransferOutcome::Transferred { seq: seq + 1 });
    assert_eq!(
        ownership(s, 1).await,
        Ownership {
            player: PlayerId(1),
            owner: Some(to.clone()),
            zone: Some(to_zone.clone()),
            epoch: 0,
            seq: seq + 1,
            from: Some(sid("a-1")),
            state: Some(pstate(9.5)),
        }
    );
    // The old owner cannot move it again.
    let again = s
        .transfer_player(PlayerId(1), &a, &to, &to_zone, &pstate(1.0))
        .await
        .expect("transfer");
    assert!(
        matches!(again, TransferOutcome::NotOwner(Some(_))),
        "{again:?}"
    );
}

async fn pending_transfer_is_not_transferable_until_accepted(h: Harness) {
    let s = &h.store;
    let a = lease("west", "a-1", 1);
    let b = lease("east", "b-1", 4);
    claimed_seq(s, 1, &a).await;
    let TransferOutcome::Transferred { seq } = s
        .transfer_player(PlayerId(1), &a, &b.owner, &b.zone, &pstate(1.0))
        .await
        .expect("transfer")
    else {
        panic!("the owner transfers");
    };
    let pending = ownership(s, 1).await;
    assert_eq!(pending.epoch, 0);
    for by in [b.clone(), a.clone(), lease("east", "b-1", u64::MAX)] {
        let refused = s
            .transfer_player(PlayerId(1), &by, &sid("c-1"), &zone("north"), &pstate(2.0))
            .await
            .expect("transfer");
        assert_eq!(
            refused,
            TransferOutcome::NotOwner(Some(pending.clone())),
            "{by:?}"
        );
    }
    // Checkpoints and releases are fenced the same way while pending.
    assert_eq!(
        s.checkpoint_players(&b, &[(PlayerId(1), pstate(5.0))])
            .await
            .expect("checkpoint"),
        [false]
    );
    assert!(
        !s.release_player(PlayerId(1), &b, None)
            .await
            .expect("release")
    );
    assert_eq!(ownership(s, 1).await, pending);

    s.accept_player(PlayerId(1), &b, Some(seq))
        .await
        .expect("accept");
    let onward = s
        .transfer_player(PlayerId(1), &b, &sid("c-1"), &zone("north"), &pstate(2.0))
        .await
        .expect("transfer");
    assert_eq!(onward, TransferOutcome::Transferred { seq: seq + 1 });
}

async fn accept_checks_the_offer_and_repeats_harmlessly(h: Harness) {
    let s = &h.store;
    let a = lease("west", "a-1", 3);
    let b = lease("east", "b-1", 5);
    claimed_seq(s, 1, &a).await;
    let TransferOutcome::Transferred { seq } = s
        .transfer_player(PlayerId(1), &a, &b.owner, &b.zone, &pstate(4.0))
        .await
        .expect("transfer")
    else {
        panic!("the owner transfers");
    };
    let offered = ownership(s, 1).await;
    for (by, at) in [
        (lease("east", "c-1", 5), Some(seq)), // not the new owner
        (lease("west", "b-1", 5), Some(seq)), // not its zone
        (b.clone(), Some(seq + 1)),           // another transfer's notice
        (b.clone(), Some(seq - 1)),           // an older one
    ] {
        let refused = s.accept_player(PlayerId(1), &by, at).await.expect("accept");
        assert_eq!(
            refused,
            AcceptOutcome::NotOffered(Some(offered.clone())),
            "{by:?} at {at:?}"
        );
    }
    assert_eq!(ownership(s, 1).await, offered, "nothing written");
    assert_eq!(
        s.accept_player(PlayerId(2), &b, None)
            .await
            .expect("accept"),
        AcceptOutcome::NotOffered(None)
    );

    let accepted = AcceptOutcome::Accepted {
        seq,
        state: Some(pstate(4.0)),
    };
    assert_eq!(
        s.accept_player(PlayerId(1), &b, Some(seq))
            .await
            .expect("accept"),
        accepted
    );
    let record = ownership(s, 1).await;
    assert_eq!((record.epoch, record.from.clone()), (5, None));
    assert_eq!(record.seq, seq, "accepting does not bump the sequence");
    // Again (a repeated notice, or the client arriving after the notice): same answer.
    assert_eq!(
        s.accept_player(PlayerId(1), &b, Some(seq))
            .await
            .expect("accept"),
        accepted
    );
    assert_eq!(
        s.accept_player(PlayerId(1), &b, None)
            .await
            .expect("accept"),
        accepted
    );
    // An older lease of the same shard never lowers the epoch.
    s.accept_player(PlayerId(1), &lease("east", "b-1", 2), None)
        .await
        .expect("accept");
    assert_eq!(ownership(s, 1).await, record);
}

async fn checkpoint_writes_only_fenced_players(h: Harness) {
    let s = &h.store;
    let a = lease("west", "a-1", 2);
    claimed_seq(s, 1, &a).await; // owned by a: written
    claimed_seq(s, 2, &lease("west", "b-1", 2)).await; // another owner
    claimed_seq(s, 4, &lease("west", "a-1", 3)).await; // a's newer lease: a-at-2 is stale
    claimed_seq(s, 5, &lease("north", "c-1", 1)).await;
    s.transfer_player(
        PlayerId(5),
        &lease("north", "c-1", 1),
        &a.owner,
        &a.zone,
        &pstate(0.0),
    )
    .await
    .expect("transfer"); // pending for a: not yet a's
    claimed_seq(s, 6, &lease("east", "a-1", 2)).await; // a, but another zone
    let mut records = Vec::new();
    for p in [2, 4, 5, 6] {
        records.push(s.get_ownership(PlayerId(p)).await.expect("get"));
    }

    let batch: Vec<_> = (1..=6).map(|p| (PlayerId(p), pstate(p as f32))).collect();
    let written = s.checkpoint_players(&a, &batch).await.expect("checkpoint");
    assert_eq!(written, [true, false, false, false, false, false]);
    assert_eq!(ownership(s, 1).await.state, Some(pstate(1.0)));
    for (p, record) in [2_u64, 4, 5, 6].iter().zip(records) {
        assert_eq!(
            s.get_ownership(PlayerId(*p)).await.expect("get"),
            record,
            "player {p} untouched"
        );
    }
    assert_eq!(s.get_ownership(PlayerId(3)).await.expect("get"), None);
    assert!(
        s.checkpoint_players(&a, &[])
            .await
            .expect("checkpoint")
            .is_empty()
    );
    // Saved states are what a claim gets back.
    assert_eq!(
        s.claim_player(PlayerId(1), &lease("west", "b-1", 9))
            .await
            .expect("claim"),
        ClaimOutcome::Claimed {
            seq: 2,
            state: Some(pstate(1.0))
        }
    );
}

async fn release_clears_the_owner_and_keeps_the_zone(h: Harness) {
    let s = &h.store;
    let a = lease("west", "a-1", 2);
    let seq = claimed_seq(s, 1, &a).await;
    assert!(
        !s.release_player(PlayerId(1), &lease("west", "b-1", 2), None)
            .await
            .expect("release")
    );
    assert!(
        !s.release_player(PlayerId(2), &a, None)
            .await
            .expect("release of a player never owned")
    );
    assert!(
        s.release_player(PlayerId(1), &a, Some(&pstate(6.0)))
            .await
            .expect("release")
    );
    let released = ownership(s, 1).await;
    assert_eq!(
        released,
        Ownership {
            player: PlayerId(1),
            owner: None,
            zone: Some(zone("west")),
            epoch: 2,
            seq: seq + 1,
            from: None,
            state: Some(pstate(6.0)),
        }
    );
    assert!(
        !s.release_player(PlayerId(1), &a, None)
            .await
            .expect("again")
    );
    let moved = s
        .transfer_player(PlayerId(1), &a, &sid("b-1"), &zone("east"), &pstate(1.0))
        .await
        .expect("transfer");
    assert_eq!(moved, TransferOutcome::NotOwner(Some(released.clone())));
    assert!(s.owned_players().await.expect("owned").is_empty());
    // The zone stays fenced: a stale lease cannot claim it back; a current one can, and gets the
    // saved state.
    assert_eq!(
        s.claim_player(PlayerId(1), &lease("west", "c-1", 1))
            .await
            .expect("claim"),
        ClaimOutcome::Stale { epoch: 2 }
    );
    assert_eq!(
        s.claim_player(PlayerId(1), &lease("west", "c-1", 3))
            .await
            .expect("claim"),
        ClaimOutcome::Claimed {
            seq: seq + 2,
            state: Some(pstate(6.0))
        }
    );
    // Released without a state: the saved one stays.
    assert!(
        s.release_player(PlayerId(1), &lease("west", "c-1", 3), None)
            .await
            .expect("release")
    );
    assert_eq!(ownership(s, 1).await.state, Some(pstate(6.0)));
}

async fn owned_players_lists_exactly_the_owned_ones(h: Harness) {
    let s = &h.store;
    assert!(s.owned_players().await.expect("owned").is_empty());
    let a = lease("west", "a-1", 1);
    // 9 and 10: ordered by id, not as text.
    for p in [10, 9, 3, 4, 5] {
        claimed_seq(s, p, &a).await;
    }
    assert!(
        s.release_player(PlayerId(3), &a, None)
            .await
            .expect("release")
    );
    s.transfer_player(PlayerId(4), &a, &sid("b-1"), &zone("east"), &pstate(0.0))
        .await
        .expect("transfer"); // pending: owned by b-1 already
    // Profiles only, never owned: not listed.
    s.load_or_create_profile("ada").await.expect("create");
    s.load_or_create_profile("grace").await.expect("create");

    let owned = s.owned_players().await.expect("owned");
    let rows: Vec<(u64, String)> = owned
        .iter()
        .map(|r| {
            let owner = r.owner.as_ref().expect("owned").to_string();
            (r.player.0, owner)
        })
        .collect();
    assert_eq!(
        rows,
        [
            (4, "b-1".to_owned()),
            (5, "a-1".to_owned()),
            (9, "a-1".to_owned()),
            (10, "a-1".to_owned()),
        ]
    );
    assert_eq!(owned[1], ownership(s, 5).await);
}

async fn ownership_inputs_no_lease_can_carry_are_refused(h: Harness) {
    let s = &h.store;
    let p = PlayerId(1);
    let key = &h.key("{p:1}");
    let good = lease("west", "a-1", 1);
    claimed_seq(s, 1, &good).await;
    let before = ownership(s, 1).await;
    let zero = lease("west", "a-1", 0);
    assert_invalid(s.claim_player(p, &zero).await, key);
    assert_invalid(
        s.transfer_player(p, &zero, &sid("b-1"), &zone("east"), &pstate(0.0))
            .await,
        key,
    );
    assert_invalid(s.accept_player(p, &zero, None).await, key);
    assert_invalid(s.release_player(p, &zero, None).await, key);
    assert_invalid(
        s.checkpoint_players(&zero, &[(p, pstate(0.0))]).await,
        &h.key("{z:west}:lease"),
    );

    let nan = PlayerState {
        pos: [f32::NAN, 0.0],
        ..pstate(0.0)
    };
    let infinite = PlayerState {
        vel: [0.0, f32::INFINITY],
        ..pstate(0.0)
    };
    for bad in [nan, infinite] {
        assert_invalid(
            s.transfer_player(p, &good, &sid("b-1"), &zone("east"), &bad)
                .await,
            key,
        );
        assert_invalid(s.release_player(p, &good, Some(&bad)).await, key);
        // One bad state refuses the whole batch.
        assert_invalid(
            s.checkpoint_players(&good, &[(PlayerId(2), pstate(0.0)), (p, bad)])
                .await,
            key,
        );
    }

    let bad_shard = unchecked_shard("b}1");
    let bad_zone = unchecked_zone("");
    assert_invalid(
        s.transfer_player(p, &good, &bad_shard, &zone("east"), &pstate(0.0))
            .await,
        key,
    );
    assert_invalid(
        s.transfer_player(p, &good, &sid("b-1"), &bad_zone, &pstate(0.0))
            .await,
        key,
    );
    let forged = Lease {
        owner: bad_shard.clone(),
        ..good.clone()
    };
    assert_invalid(s.claim_player(p, &forged).await, key);
    assert_eq!(ownership(s, 1).await, before, "nothing written");

    let lease_key = &h.key("{z:we st}:lease");
    let spaced = unchecked_zone("we st");
    assert_invalid(s.acquire_lease(&spaced, &sid("a-1"), TTL).await, lease_key);
    assert_invalid(
        s.acquire_lease(&zone("west"), &bad_shard, TTL).await,
        &h.key("{z:west}:lease"),
    );
    assert_invalid(s.get_lease(&spaced).await, lease_key);
    let spaced_lease = Lease {
        zone: spaced.clone(),
        ..good.clone()
    };
    assert_invalid(s.renew_lease(&spaced_lease, TTL).await, lease_key);
    assert_invalid(s.release_lease(&spaced_lease).await, lease_key);
    assert_invalid(
        s.publish_ghosts(&spaced, b"x").await,
        &h.key("{z:we st}:ghosts"),
    );
    assert_invalid(
        s.subscribe_ghosts(&spaced).await,
        &h.key("{z:we st}:ghosts"),
    );
}

/// Reads `shard`'s inbox until it yields something or [`PATIENCE`] passes.
async fn read_some(s: &impl Store, shard: &ShardId) -> Vec<InboxEntry> {
    let started = Instant::now();
    loop {
        let read = s
            .read_inbox(shard, 10, Duration::ZERO)
            .await
            .expect("read_inbox");
        if !read.is_empty() {
            return read;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "nothing delivered to {shard} within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn inbox_delivers_redelivers_unacked_and_forgets_acked(h: Harness) {
    let s = &h.store;
    let b = sid("b-1");
    // Sent before the receiver ever read: still delivered.
    s.send_handoff(&b, &notice(1, 3)).await.expect("send");
    s.send_handoff(&b, &notice(2, 5)).await.expect("send");
    let first = s.read_inbox(&b, 10, Duration::ZERO).await.expect("read");
    let got: Vec<_> = first
        .iter()
        .map(|e| (e.notice.clone(), e.deliveries))
        .collect();
    assert_eq!(got, [(notice(1, 3), 1), (notice(2, 5), 1)]);
    assert_ne!(first[0].id, first[1].id);
    // Delivered and not yet due again: nothing new.
    assert!(
        s.read_inbox(&b, 10, Duration::ZERO)
            .await
            .expect("read")
            .is_empty()
    );

    s.ack_inbox(&b, &[first[0].id.clone()]).await.expect("ack");
    h.pass(INBOX_REDELIVER_AFTER + Duration::from_millis(100))
        .await;
    let again = read_some(s, &b).await;
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].id, first[1].id);
    assert_eq!(again[0].notice, notice(2, 5));
    assert_eq!(again[0].deliveries, 2);

    s.ack_inbox(&b, &[again[0].id.clone()]).await.expect("ack");
    s.ack_inbox(&b, &[again[0].id.clone()])
        .await
        .expect("acking twice is harmless");
    s.ack_inbox(&b, &[]).await.expect("acking nothing");
    h.pass(INBOX_REDELIVER_AFTER + Duration::from_millis(100))
        .await;
    assert!(
        s.read_inbox(&b, 10, Duration::ZERO)
            .await
            .expect("read")
            .is_empty(),
        "acknowledged notices never come back"
    );

    // New notices after a read are delivered, `max` at a time, in order.
    for seq in 10..13 {
        s.send_handoff(&b, &notice(seq, seq)).await.expect("send");
    }
    let two = s.read_inbox(&b, 2, Duration::ZERO).await.expect("read");
    let one = s.read_inbox(&b, 2, Duration::ZERO).await.expect("read");
    let seqs: Vec<u64> = two.iter().chain(&one).map(|e| e.notice.seq).collect();
    assert_eq!(seqs, [10, 11, 12]);
    assert!(
        s.read_inbox(&b, 0, Duration::ZERO)
            .await
            .expect("max 0")
            .is_empty()
    );
}

async fn inboxes_of_two_shards_are_separate(h: Harness) {
    let s = &h.store;
    let (b, c) = (sid("b-1"), sid("c-1"));
    s.send_handoff(&b, &notice(1, 1)).await.expect("send");
    s.send_handoff(&c, &notice(2, 1)).await.expect("send");
    s.send_handoff(&c, &notice(3, 1)).await.expect("send");
    let for_b = s.read_inbox(&b, 10, Duration::ZERO).await.expect("read");
    let for_c = s.read_inbox(&c, 10, Duration::ZERO).await.expect("read");
    let players = |entries: &[InboxEntry]| -> Vec<u64> {
        entries.iter().map(|e| e.notice.player.0).collect()
    };
    assert_eq!(players(&for_b), [1]);
    assert_eq!(players(&for_c), [2, 3]);
    // Acknowledging in one inbox does nothing to the other.
    s.ack_inbox(&b, &[for_c[0].id.clone()]).await.expect("ack");
    h.pass(INBOX_REDELIVER_AFTER + Duration::from_millis(100))
        .await;
    let redelivered = read_some(s, &c).await;
    assert_eq!(players(&redelivered), [2, 3]);
    assert!(redelivered.iter().all(|e| e.deliveries == 2));
    // A shard that never received anything reads nothing.
    assert!(
        s.read_inbox(&sid("d-1"), 10, Duration::ZERO)
            .await
            .expect("read")
            .is_empty()
    );
}

async fn inbox_blocking_read_waits_for_a_notice_without_stalling_the_handle(h: Harness) {
    let s = h.store.clone();
    let b = sid("b-1");
    // Nothing comes: an empty answer once the wait is over.
    assert!(
        s.read_inbox(&b, 10, Duration::from_millis(100))
            .await
            .expect("read")
            .is_empty()
    );
    let reader = tokio::spawn({
        let s = s.clone();
        let b = b.clone();
        async move { s.read_inbox(&b, 10, Duration::from_secs(20)).await }
    });
    // Meanwhile the same handle serves other operations.
    for nonce in 0..20 {
        assert!(s.use_nonce(nonce, TTL).await.expect("use_nonce"));
    }
    s.get_lease(&zone("west")).await.expect("get_lease");
    assert!(!reader.is_finished(), "the reader is still waiting");
    s.send_handoff(&b, &notice(7, 1)).await.expect("send");
    let read = reader.await.expect("task").expect("read");
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].notice, notice(7, 1));
    assert_eq!(read[0].deliveries, 1);

    // Any wait is accepted (cut to MAX_INBOX_BLOCK), and a new notice still ends it.
    let reader = tokio::spawn({
        let s = s.clone();
        let b = b.clone();
        async move { s.read_inbox(&b, 10, Duration::MAX).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.send_handoff(&b, &notice(8, 1)).await.expect("send");
    let read = reader.await.expect("task").expect("read");
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].notice, notice(8, 1));
}

async fn inbox_inputs_are_checked(h: Harness) {
    let s = &h.store;
    let b = sid("b-1");
    let key = &h.key("{s:b-1}:inbox");
    s.send_handoff(&b, &notice(1, 1)).await.expect("send");
    let read = s.read_inbox(&b, 10, Duration::ZERO).await.expect("read");
    for bad in ["", "abc", "1-", "-1", "1-2-3", "1-x"] {
        assert_invalid(s.ack_inbox(&b, &[bad.to_owned()]).await, key);
    }
    // A malformed id among good ones refuses the whole call: the good one is not acknowledged.
    assert_invalid(
        s.ack_inbox(&b, &[read[0].id.clone(), "nope".to_owned()])
            .await,
        key,
    );
    // A well-formed id of no entry acknowledges nothing.
    s.ack_inbox(&b, &["1-0".to_owned()]).await.expect("ack");
    h.pass(INBOX_REDELIVER_AFTER + Duration::from_millis(100))
        .await;
    assert_eq!(read_some(s, &b).await[0].id, read[0].id, "still pending");

    let bad_state = HandoffNotice {
        state: PlayerState {
            pos: [0.0, f32::NAN],
            ..pstate(0.0)
        },
        ..notice(1, 1)
    };
    assert_invalid(s.send_handoff(&b, &bad_state).await, key);
    let bad_names = HandoffNotice {
        from: unchecked_shard("a 1"),
        ..notice(1, 1)
    };
    assert_invalid(s.send_handoff(&b, &bad_names).await, key);
    let bad = unchecked_shard("{b}");
    let bad_key = &h.key("{s:{b}}:inbox");
    assert_invalid(s.send_handoff(&bad, &notice(1, 1)).await, bad_key);
    assert_invalid(s.read_inbox(&bad, 1, Duration::ZERO).await, bad_key);
    assert_invalid(s.ack_inbox(&bad, &[]).await, bad_key);
    // A huge `max` is capped, not an error.
    assert!(
        s.read_inbox(&b, usize::MAX, Duration::ZERO)
            .await
            .expect("read")
            .is_empty()
    );
}

/// Receives the next batch, failing the test after [`PATIENCE`].
async fn next_batch(rx: &mut tokio::sync::mpsc::Receiver<Vec<u8>>) -> Vec<u8> {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("a batch within PATIENCE")
        .expect("the subscription is alive")
}

async fn ghosts_are_delivered_in_order_per_zone(h: Harness) {
    let s = &h.store;
    // No subscriber: nothing to deliver, not an error.
    s.publish_ghosts(&zone("west"), b"lost")
        .await
        .expect("publish");
    let mut west = s.subscribe_ghosts(&zone("west")).await.expect("subscribe");
    let mut west_too = s.subscribe_ghosts(&zone("west")).await.expect("subscribe");
    let mut east = s.subscribe_ghosts(&zone("east")).await.expect("subscribe");
    for batch in [&b"one"[..], b"two", b"", &[0, 255, 7]] {
        s.publish_ghosts(&zone("west"), batch)
            .await
            .expect("publish");
    }
    s.publish_ghosts(&zone("east"), b"east")
        .await
        .expect("publish");
    for rx in [&mut west, &mut west_too] {
        assert_eq!(next_batch(rx).await, b"one");
        assert_eq!(next_batch(rx).await, b"two");
        assert_eq!(next_batch(rx).await, b"");
        assert_eq!(next_batch(rx).await, [0, 255, 7]);
    }
    assert_eq!(next_batch(&mut east).await, b"east");
    assert!(west.try_recv().is_err(), "nothing else for west");
    assert!(east.try_recv().is_err(), "nothing else for east");

    // A dropped receiver ends its subscription; the others keep theirs.
    drop(west);
    s.publish_ghosts(&zone("west"), b"three")
        .await
        .expect("publish");
    assert_eq!(next_batch(&mut west_too).await, b"three");
}

async fn ghosts_beyond_the_buffer_are_dropped_not_queued(h: Harness) {
    let s = &h.store;
    let mut rx = s.subscribe_ghosts(&zone("west")).await.expect("subscribe");
    let sent = GHOST_BUFFER * 3;
    for n in 0..sent {
        s.publish_ghosts(&zone("west"), &n.to_le_bytes())
            .await
            .expect("publish");
    }
    s.publish_ghosts(&zone("west"), b"end")
        .await
        .expect("publish");
    // Drain until the receiver is empty for a while: what was kept arrives in order.
    let mut received = Vec::new();
    while let Ok(Some(batch)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
        received.push(batch);
    }
    assert!(!received.is_empty());
    if h.clock.is_some() {
        // In process, nothing drains the buffer meanwhile: exactly a buffer's worth is kept.
        assert_eq!(received.len(), GHOST_BUFFER);
    }
    assert!(
        received.len() <= sent + 1,
        "{} batches for {} sent",
        received.len(),
        sent + 1
    );
    let numbers: Vec<usize> = received
        .iter()
        .filter_map(|b| Some(usize::from_le_bytes(b.as_slice().try_into().ok()?)))
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "in order: {numbers:?}"
    );
    // The subscription still works after the overflow.
    s.publish_ghosts(&zone("west"), b"after")
        .await
        .expect("publish");
    assert_eq!(next_batch(&mut rx).await, b"after");
}

/// Runs each listed suite function once per adapter: `memory::<name>`, `redis::<name>` and
/// `redis_cluster::<name>`.
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
        mod redis_cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Harness::cluster().await).await;
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
    lease_epochs_increase_across_acquire_expire_and_reacquire,
    lease_renewal_keeps_it_and_release_frees_it_keeping_the_counter,
    claim_records_the_owner_and_stale_claims_are_refused,
    transfer_moves_ownership_only_from_the_owner_at_its_epoch,
    pending_transfer_is_not_transferable_until_accepted,
    accept_checks_the_offer_and_repeats_harmlessly,
    checkpoint_writes_only_fenced_players,
    release_clears_the_owner_and_keeps_the_zone,
    owned_players_lists_exactly_the_owned_ones,
    ownership_inputs_no_lease_can_carry_are_refused,
    inbox_delivers_redelivers_unacked_and_forgets_acked,
    inboxes_of_two_shards_are_separate,
    inbox_blocking_read_waits_for_a_notice_without_stalling_the_handle,
    inbox_inputs_are_checked,
    ghosts_are_delivered_in_order_per_zone,
    ghosts_beyond_the_buffer_are_dropped_not_queued,
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
    let west = zone("west");
    let a = lease("west", "a-1", 1);
    let lease_key = "mer:{z:west}:lease";
    check(store.acquire_lease(&west, &id, TTL).await, lease_key);
    check(store.renew_lease(&a, TTL).await, lease_key);
    check(store.release_lease(&a).await, lease_key);
    check(store.get_lease(&west).await, lease_key);
    check(store.claim_player(player, &a).await, "mer:{p:1}");
    check(
        store
            .transfer_player(player, &a, &id, &west, &pstate(0.0))
            .await,
        "mer:{p:1}",
    );
    check(store.accept_player(player, &a, None).await, "mer:{p:1}");
    check(
        store.checkpoint_players(&a, &[(player, pstate(0.0))]).await,
        lease_key,
    );
    check(store.release_player(player, &a, None).await, "mer:{p:1}");
    check(store.get_ownership(player).await, "mer:{p:1}");
    check(store.owned_players().await, "mer:{p:*}");
    let inbox = "mer:{s:a-1}:inbox";
    check(store.send_handoff(&id, &notice(1, 1)).await, inbox);
    check(
        store.read_inbox(&id, 10, Duration::from_millis(100)).await,
        inbox,
    );
    check(store.ack_inbox(&id, &["1-0".to_owned()]).await, inbox);
    check(
        store.publish_ghosts(&west, b"x").await,
        "mer:{z:west}:ghosts",
    );
    check(store.subscribe_ghosts(&west).await, "mer:{z:west}:ghosts");
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(27 * 300 + 1_000),
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

/// A raw connection to the test's Redis, for writing data the store would never write.
async fn raw(h: &Harness) -> ::redis::aio::MultiplexedConnection {
    let server = h.server.as_ref().expect("a Redis harness");
    ::redis::Client::open(server.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

/// Entries no version of Meridian can read are skipped, acknowledged (never delivered again)
/// and do not fail the read of the good ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_malformed_inbox_entries_are_skipped_and_acknowledged() {
    let h = Harness::redis().await;
    let s = &h.store;
    let b = sid("b-1");
    let mut conn = raw(&h).await;
    let key = "mer:{s:b-1}:inbox";
    s.send_handoff(&b, &notice(1, 1)).await.expect("send");
    let xadd = |fields: &[(&str, &str)]| {
        let mut cmd = ::redis::cmd("XADD");
        cmd.arg(key).arg("*");
        for (field, value) in fields {
            cmd.arg(*field).arg(*value);
        }
        cmd
    };
    let bad_names = serde_json::to_string(&HandoffNotice {
        to_zone: unchecked_zone("no such zone"),
        ..notice(9, 9)
    })
    .expect("encode");
    for garbage in [
        vec![("garbage", "x")],
        vec![("notice", "{not json")],
        vec![("notice", r#"{"player":1}"#)],
        vec![("notice", bad_names.as_str())],
    ] {
        let _id: String = xadd(&garbage).query_async(&mut conn).await.expect("XADD");
    }
    s.send_handoff(&b, &notice(2, 1)).await.expect("send");

    let read = s.read_inbox(&b, 10, Duration::ZERO).await.expect("read");
    let players: Vec<u64> = read.iter().map(|e| e.notice.player.0).collect();
    assert_eq!(players, [1, 2], "the good notices, in order");
    s.ack_inbox(&b, &read.iter().map(|e| e.id.clone()).collect::<Vec<_>>())
        .await
        .expect("ack");
    // XPENDING's summary: the count of pending entries, then their range and consumers.
    let (pending, _, _, _): (u64, ::redis::Value, ::redis::Value, ::redis::Value) =
        ::redis::cmd("XPENDING")
            .arg(key)
            .arg("meridian")
            .query_async(&mut conn)
            .await
            .expect("XPENDING");
    assert_eq!(pending, 0, "the garbage was acknowledged too");
    h.pass(INBOX_REDELIVER_AFTER + Duration::from_millis(100))
        .await;
    assert!(
        s.read_inbox(&b, 10, Duration::ZERO)
            .await
            .expect("read")
            .is_empty(),
        "never delivered again"
    );
}

/// Dropping the receiver ends the background task, which unsubscribes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_ghost_task_unsubscribes_when_the_receiver_is_dropped() {
    let h = Harness::redis().await;
    let mut conn = raw(&h).await;
    let channel = "mer:{z:west}:ghosts";
    let subscribers = |conn: &mut ::redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        async move {
            let (_, n): (String, u64) = ::redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(channel)
                .query_async(&mut conn)
                .await
                .expect("PUBSUB NUMSUB");
            n
        }
    };
    let rx = h
        .store
        .subscribe_ghosts(&zone("west"))
        .await
        .expect("subscribe");
    assert_eq!(
        subscribers(&mut conn).await,
        1,
        "subscribed when the call returns"
    );
    drop(rx);
    let started = Instant::now();
    while subscribers(&mut conn).await != 0 {
        assert!(started.elapsed() < PATIENCE, "still subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// After Redis restarts, the subscription comes back by itself (batches published meanwhile
/// are lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_ghost_subscription_survives_a_redis_restart() {
    let mut h = Harness::redis().await;
    let store = h.store.clone();
    let mut rx = store
        .subscribe_ghosts(&zone("west"))
        .await
        .expect("subscribe");
    store
        .publish_ghosts(&zone("west"), b"before")
        .await
        .expect("publish");
    assert_eq!(next_batch(&mut rx).await, b"before");
    h.server().restart().await.expect("restart redis-server");
    let started = Instant::now();
    loop {
        // Publishing fails until the shared connection is back; batches published before the
        // subscription is back are lost.
        let _maybe = store.publish_ghosts(&zone("west"), b"after").await;
        if let Ok(Some(batch)) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            assert_eq!(batch, b"after");
            break;
        }
        assert!(started.elapsed() < PATIENCE * 2, "never re-subscribed");
    }
}

/// Ownership and lease data this version does not write reads as `Corrupt`, naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_foreign_ownership_data_is_reported_corrupt() {
    let h = Harness::redis().await;
    let s = &h.store;
    let mut conn = raw(&h).await;
    let hset = |key: &str, field: &str, value: &str| {
        ::redis::cmd("HSET").arg(key).arg(field).arg(value).clone()
    };
    let a = lease("west", "a-1", 1);
    let cases = [
        ("mer:{p:1}", "epoch", "x"),
        ("mer:{p:2}", "seq", "-1"),
        ("mer:{p:3}", "owner", "not a shard"),
        ("mer:{p:4}", "state", "{not json"),
        ("mer:{p:5}", "zone", ""),
    ];
    for (key, field, value) in cases {
        hset(key, "seq", "1")
            .exec_async(&mut conn)
            .await
            .expect("HSET");
        hset(key, field, value)
            .exec_async(&mut conn)
            .await
            .expect("HSET");
    }
    let corrupt = |err: StoreError, key: &str| {
        assert!(
            matches!(&err, StoreError::Corrupt { key: k, .. } if k == key),
            "expected Corrupt naming `{key}`, got {err:?}"
        );
    };
    for (n, (key, _, _)) in cases.iter().enumerate() {
        let p = PlayerId(n as u64 + 1);
        corrupt(s.get_ownership(p).await.expect_err("corrupt"), key);
    }
    // Fields the scripts compare are checked by the scripts too.
    let err = s.claim_player(PlayerId(1), &a).await.expect_err("corrupt");
    assert_eq!(
        err,
        StoreError::Corrupt {
            key: "mer:{p:1}".into(),
            detail: "field `epoch` holds `x`, not an unsigned integer".into()
        }
    );
    corrupt(
        s.claim_player(PlayerId(1), &a).await.expect_err("corrupt"),
        "mer:{p:1}",
    );
    corrupt(
        s.transfer_player(PlayerId(2), &a, &sid("b-1"), &zone("east"), &pstate(0.0))
            .await
            .expect_err("corrupt"),
        "mer:{p:2}",
    );
    corrupt(
        s.accept_player(PlayerId(1), &a, None)
            .await
            .expect_err("corrupt"),
        "mer:{p:1}",
    );
    corrupt(
        s.release_player(PlayerId(1), &a, None)
            .await
            .expect_err("corrupt"),
        "mer:{p:1}",
    );
    corrupt(
        s.checkpoint_players(
            &a,
            &[(PlayerId(6), pstate(0.0)), (PlayerId(1), pstate(0.0))],
        )
        .await
        .expect_err("corrupt"),
        "mer:{p:1}",
    );
    // The audit scan stops at the first corrupt record it meets (in no particular order).
    let err = s.owned_players().await.expect_err("corrupt");
    assert!(
        matches!(&err, StoreError::Corrupt { key, .. } if cases.iter().any(|c| c.0 == key)),
        "{err:?}"
    );

    // A player key of the wrong type.
    ::redis::cmd("SET")
        .arg("mer:{p:7}")
        .arg("a string")
        .exec_async(&mut conn)
        .await
        .expect("SET");
    corrupt(
        s.claim_player(PlayerId(7), &a)
            .await
            .expect_err("wrong type"),
        "mer:{p:7}",
    );
    corrupt(
        s.get_ownership(PlayerId(7)).await.expect_err("wrong type"),
        "mer:{p:7}",
    );

    // Lease data.
    ::redis::cmd("SET")
        .arg("mer:{z:west}:epoch")
        .arg("x")
        .exec_async(&mut conn)
        .await
        .expect("SET");
    corrupt(
        s.acquire_lease(&zone("west"), &sid("a-1"), TTL)
            .await
            .expect_err("corrupt counter"),
        "mer:{z:west}:lease",
    );
    hset("mer:{z:east}:lease", "owner", "a 1")
        .exec_async(&mut conn)
        .await
        .expect("HSET");
    corrupt(
        s.get_lease(&zone("east")).await.expect_err("bad owner"),
        "mer:{z:east}:lease",
    );
    // An inbox key of the wrong type.
    ::redis::cmd("SET")
        .arg("mer:{s:b-1}:inbox")
        .arg("x")
        .exec_async(&mut conn)
        .await
        .expect("SET");
    corrupt(
        s.send_handoff(&sid("b-1"), &notice(1, 1))
            .await
            .expect_err("wrong type"),
        "mer:{s:b-1}:inbox",
    );
    corrupt(
        s.read_inbox(&sid("b-1"), 1, Duration::ZERO)
            .await
            .expect_err("wrong type"),
        "mer:{s:b-1}:inbox",
    );
}

/// After a restart Redis has forgotten its scripts: the pipelined checkpoint loads its script
/// and sends again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_checkpoint_reloads_its_script_after_a_restart() {
    let mut h = Harness::redis().await;
    let store = h.store.clone();
    let a = lease("west", "a-1", 1);
    claimed_seq(&store, 1, &a).await;
    assert_eq!(
        store
            .checkpoint_players(&a, &[(PlayerId(1), pstate(1.0))])
            .await
            .expect("checkpoint"),
        [true]
    );
    h.server().restart().await.expect("restart redis-server");
    eventually("the handle reconnects", || async {
        store.get_ownership(PlayerId(1)).await.is_ok()
    })
    .await;
    // Empty again: claim (its own script reloads by itself), then checkpoint.
    claimed_seq(&store, 1, &a).await;
    assert_eq!(
        store
            .checkpoint_players(
                &a,
                &[(PlayerId(1), pstate(2.0)), (PlayerId(2), pstate(2.0))]
            )
            .await
            .expect("checkpoint"),
        [true, false]
    );
    assert_eq!(ownership(&store, 1).await.state, Some(pstate(2.0)));
}

/// `owned_players` scans only its own prefix, glob characters in it included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_owned_players_stay_within_the_prefix() {
    init_logs();
    let server = RedisServer::start().await.expect("start redis-server");
    let globby = open_redis(&server.url(), "x*:", 500).await;
    let plain = open_redis(&server.url(), "xy:", 500).await;
    let a = lease("west", "a-1", 1);
    claimed_seq(&globby, 1, &a).await;
    claimed_seq(&plain, 2, &a).await;
    claimed_seq(&plain, 3, &a).await;
    let players =
        |owned: Vec<Ownership>| -> Vec<u64> { owned.iter().map(|r| r.player.0).collect() };
    assert_eq!(players(globby.owned_players().await.expect("owned")), [1]);
    assert_eq!(players(plain.owned_players().await.expect("owned")), [2, 3]);
    // Many players: the scan takes several rounds.
    for p in 10..1_500 {
        claimed_seq(&plain, p, &a).await;
    }
    let owned = plain.owned_players().await.expect("owned");
    assert_eq!(owned.len(), 2 + 1_490);
    assert!(owned.windows(2).all(|w| w[0].player < w[1].player));
}
