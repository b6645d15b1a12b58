//! Handoff under races, over real QUIC on loopback and a real redis-server: a shard whose zone
//! lease is taken stops serving the zone and takes it back by itself; a shard restarting in the
//! middle of a transfer still receives the player; and a seeded random mix of walks across the
//! border, lease losses and restarts settles to every player owned exactly once (the audit).
//!
//! The randomized test prints its seed; `MERIDIAN_SEED=<n>` replays that seed (the choices of
//! the clients and of the driver, not the exact timing of the threads).

mod common;

use common::world::*;
use common::*;
use meridian_client::session::{SessionError, SessionEvent, ShardSession};
use meridian_cluster::Store;
use meridian_cluster::audit::{self, HeldState, ShardPlayers, ShardSource};
use meridian_cluster::ownership::{
    AcquireOutcome, ClaimOutcome, HandoffNotice, Lease, PlayerState, TransferOutcome,
};
use meridian_cluster::store::{LiveShard, StoreHandle};
use meridian_protocol::control::KickReason;
use meridian_protocol::handshake::RejectReason;
use meridian_protocol::quic::{CertSha256, QuicConfig};
use meridian_protocol::ticket::{SignedTicket, TicketKind};
use meridian_protocol::{PlayerId, ShardId, ZoneId};
use meridian_shard::handoff::HandoffConfig;
use meridian_shard::server::ShardHandle;
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The zones of [`MAP`], in the order the randomized test numbers them.
const ZONES: [&str; 2] = ["a", "b"];

fn pos(s: &ShardSession) -> Option<[f32; 2]> {
    s.own_entity().map(|e| e.pos)
}

/// What the shard's admin endpoint says it holds.
async fn holdings(shard: &ShardHandle) -> ShardPlayers {
    let addr = shard.admin_addr.expect("admin endpoint");
    let body = reqwest::get(format!("http://{addr}/players"))
        .await
        .expect("admin answers")
        .text()
        .await
        .expect("body");
    serde_json::from_str(&body).expect("players JSON")
}

async fn held(shard: &ShardHandle, player: PlayerId) -> Option<HeldState> {
    holdings(shard)
        .await
        .players
        .iter()
        .find(|h| h.player == player)
        .map(|h| h.state)
}

/// Polls `shard`'s admin endpoint until `player` is held in `want` (`None`: not held), up to
/// `timeout`; the last answer.
async fn wait_held(
    shard: &ShardHandle,
    player: PlayerId,
    want: Option<HeldState>,
    timeout: Duration,
) -> Option<HeldState> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = held(shard, player).await;
        if now == want || Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `f` every 50 ms until it returns true or `timeout` passes.
async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

/// Takes `zone`'s lease away from whoever holds it and gives it to shard `intruder` for `ttl`:
/// releases the holder's lease, then acquires. If the holder's lease keeper takes the free
/// lease back in between, again.
async fn steal_lease(
    store: &StoreHandle,
    zone: &ZoneId,
    intruder: &ShardId,
    ttl: Duration,
) -> Lease {
    for _ in 0..20 {
        if let Some(current) = store.get_lease(zone).await.expect("lease readable") {
            store.release_lease(&current).await.expect("lease released");
        }
        match store
            .acquire_lease(zone, intruder, ttl)
            .await
            .expect("lease acquirable")
        {
            AcquireOutcome::Acquired(lease) => return lease,
            AcquireOutcome::Held(_) => continue,
        }
    }
    panic!("the lease of zone {zone} could not be taken by {intruder} in 20 attempts");
}

/// The client's ownership record (it must exist).
async fn record(store: &StoreHandle, player: PlayerId) -> meridian_cluster::ownership::Ownership {
    store
        .get_ownership(player)
        .await
        .expect("record readable")
        .unwrap_or_else(|| panic!("player {player} has an ownership record"))
}

/// A client plays on `a`; another shard takes `a`'s zone lease. `a` kicks the client (zone
/// lost), holds nobody, refuses new joins as unavailable, and `a`'s old lease no longer writes
/// once the new holder has claimed the player. When the lease is free again `a` takes it back
/// under a higher epoch by itself and admits joins again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_loss_stops_the_shard_serving_its_zone() {
    let (redis, c) = Cluster::start().await;
    let a = c.shard("a", handoff_config(), None).await;
    let b = c.shard("b", handoff_config(), None).await;
    let ep = endpoint();
    let quic = QuicConfig::default();
    let player = PlayerId(501);
    let mut s = join(&ep, &a, player.0).await;
    assert_eq!(s.welcome().shard, a.shard);
    assert_eq!(
        wait_held(&a, player, Some(HeldState::Active), Duration::from_secs(5)).await,
        Some(HeldState::Active)
    );
    let old = a.lease().expect("a holds its zone's lease");
    assert_eq!(
        record(&c.store, player).await.epoch,
        old.epoch,
        "claimed at join"
    );

    let intruder_id = shard_id("intruder");
    let intruder = steal_lease(&c.store, &a.zone, &intruder_id, Duration::from_secs(60)).await;
    assert!(intruder.epoch > old.epoch, "{intruder:?} after {old:?}");

    // The lease keeper notices within a renewal period (a third of the 3 s TTL).
    let kick = next_kick(&mut s, Duration::from_secs(10))
        .await
        .expect("the client is kicked");
    assert_eq!(kick.reason, KickReason::ZoneLost, "{kick:?}");
    assert!(
        eventually(Duration::from_secs(2), || a.lease().is_none()).await,
        "a knows it lost the lease: {:?}",
        a.lease()
    );
    // Its registry record says draining (heartbeats every second): lobbies and neighbours
    // stop sending players to it.
    let mut draining = false;
    for _ in 0..40 {
        draining = c
            .store
            .live_shards()
            .await
            .expect("registry")
            .iter()
            .any(|l| l.record.id == a.shard && l.record.draining);
        if draining {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(draining, "a's record says draining while it has no lease");
    let mut answer = holdings(&a).await;
    for _ in 0..40 {
        if answer.players.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        answer = holdings(&a).await;
    }
    assert!(answer.players.is_empty(), "a holds nobody: {answer:?}");
    assert_eq!(answer.lease_epoch, None, "a reports no lease: {answer:?}");

    // New joins are refused while the zone is not a's.
    match ShardSession::connect(&ep, a.local_addr, a.cert_sha256, ticket_for(&a, 502), &quic).await
    {
        Err(SessionError::Rejected(r)) => {
            assert!(
                matches!(r.reason, RejectReason::Unavailable { .. }),
                "refused as unavailable: {r:?}"
            );
        }
        other => panic!(
            "join admitted without the lease: {:?}",
            other.map(|s| s.welcome())
        ),
    }
    // The rejoin of the kicked player too.
    match ShardSession::connect(
        &ep,
        a.local_addr,
        a.cert_sha256,
        ticket_for(&a, player.0),
        &quic,
    )
    .await
    {
        Err(SessionError::Rejected(r)) => {
            assert!(
                matches!(r.reason, RejectReason::Unavailable { .. }),
                "{r:?}"
            );
        }
        other => panic!(
            "rejoin admitted without the lease: {:?}",
            other.map(|s| s.welcome())
        ),
    }
    let rec = record(&c.store, player).await;
    assert_eq!(
        rec.owner,
        Some(a.shard.clone()),
        "a wrote nothing after the loss: {rec:?}"
    );
    assert_eq!(rec.epoch, old.epoch, "{rec:?}");

    // The new holder restores the player under its epoch: a's old lease is fenced out.
    let ClaimOutcome::Claimed { .. } = c
        .store
        .claim_player(player, &intruder)
        .await
        .expect("claim by the new holder")
    else {
        panic!("the new holder's claim was refused");
    };
    match c.store.claim_player(player, &old).await.expect("claim") {
        ClaimOutcome::Stale { epoch } => assert_eq!(epoch, intruder.epoch),
        other => panic!("a claim with the old lease went through: {other:?}"),
    }
    let state = PlayerState {
        pos: [199.0, 100.0],
        vel: [0.0, 0.0],
        score: 0,
        last_input: 0,
    };
    match c
        .store
        .transfer_player(player, &old, &b.shard, &b.zone, &state)
        .await
        .expect("transfer")
    {
        TransferOutcome::NotOwner(Some(found)) => {
            assert_eq!(found.owner, Some(intruder_id.clone()), "{found:?}");
        }
        other => panic!("a transfer with the old lease went through: {other:?}"),
    }
    assert!(
        !c.store
            .release_player(player, &old, Some(&state))
            .await
            .expect("release"),
        "a release with the old lease went through"
    );
    let rec = record(&c.store, player).await;
    assert_eq!(
        (rec.owner.clone(), rec.epoch),
        (Some(intruder_id.clone()), intruder.epoch),
        "{rec:?}"
    );

    // The intruder gives the zone up: a takes it back by itself, under a higher epoch, and
    // admits joins from the moment its lease is back (the kicked player and newcomers, at once).
    assert!(
        c.store.release_lease(&intruder).await.expect("release"),
        "intruder's lease released"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.lease().is_none_or(|l| l.epoch <= intruder.epoch) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let regained = a.lease().expect("a took its zone back");
    assert!(regained.epoch > intruder.epoch, "{regained:?}");
    assert_eq!(regained.owner, a.shard);
    let joins: Vec<_> = [player.0, 503, 504, 505]
        .into_iter()
        .map(|p| {
            let (ep, quic, addr, cert) = (ep.clone(), quic.clone(), a.local_addr, a.cert_sha256);
            let ticket = ticket_for(&a, p);
            tokio::spawn(async move {
                (
                    p,
                    ShardSession::connect(&ep, addr, cert, ticket, &quic).await,
                )
            })
        })
        .collect();
    let mut sessions = Vec::new();
    let mut refused = Vec::new();
    for j in joins {
        match j.await.expect("join task") {
            (_, Ok(s)) => sessions.push(s),
            (p, Err(e)) => {
                let rec = c.store.get_ownership(PlayerId(p)).await.expect("read");
                refused.push(format!("player {p}: {e}; its record: {rec:?}"));
            }
        }
    }
    assert!(
        refused.is_empty(),
        "a holds its lease (epoch {}) but dropped joins it had admitted: {refused:#?}",
        regained.epoch
    );
    let mut s = sessions.remove(0);
    assert_eq!(s.welcome().shard, a.shard);
    assert_eq!(s.welcome().player, player);
    assert_eq!(
        wait_held(&a, player, Some(HeldState::Active), Duration::from_secs(5)).await,
        Some(HeldState::Active)
    );
    let rec = record(&c.store, player).await;
    assert_eq!(
        (rec.owner.clone(), rec.zone.clone(), rec.epoch),
        (Some(a.shard.clone()), Some(a.zone.clone()), regained.epoch),
        "{rec:?}"
    );
    assert!(s.send_input(0.0, 1.0, 0).is_ok(), "the session plays");
    assert_eq!(holdings(&a).await.lease_epoch, Some(regained.epoch));
    drop(s);
    drop(sessions);
    a.shutdown().await;
    b.shutdown().await;
    drop(redis);
}

/// The state a transfers at the border in the restart test.
const TRANSFERRED: PlayerState = PlayerState {
    pos: [204.0, 120.0],
    vel: [0.0, 0.0],
    score: 17,
    last_input: 9,
};

/// `a` hands a player to `b` (on the store, as `a`'s worker does) while `b` is down; `b` comes
/// back under the same id and returns its lease epoch's accept of the player.
async fn transfer_while_b_is_down(c: &Cluster, a: &ShardHandle, player: PlayerId) -> u64 {
    let lease_a = a.lease().expect("a's lease");
    let ClaimOutcome::Claimed { .. } = c.store.claim_player(player, &lease_a).await.expect("claim")
    else {
        panic!("a's claim refused");
    };
    let (b_shard, b_zone) = (shard_id("shard-b"), zone_id("b"));
    let TransferOutcome::Transferred { seq } = c
        .store
        .transfer_player(player, &lease_a, &b_shard, &b_zone, &TRANSFERRED)
        .await
        .expect("transfer")
    else {
        panic!("transfer refused");
    };
    let notice = HandoffNotice {
        player,
        seq,
        from: a.shard.clone(),
        from_zone: a.zone.clone(),
        to_zone: b_zone,
        state: TRANSFERRED,
    };
    c.store
        .send_handoff(&b_shard, &notice)
        .await
        .expect("notice sent");
    seq
}

/// A handoff ticket for `player` onto `shard`, signed with the test key.
fn handoff_ticket(shard: &ShardHandle, player: PlayerId) -> SignedTicket {
    ticket(
        &key(),
        TicketKind::Handoff,
        &shard.shard,
        &shard.zone,
        player.0,
        now_ms() + 15_000,
    )
}

/// `b` is down while `a` transfers a player to it and sends the notice. `b` restarts (same id,
/// same world): the notice waits in its inbox, the new `b` accepts the player under its new
/// lease epoch and spawns it; the client arriving with a genuine handoff ticket is welcomed onto
/// that entity, where `a` left it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_restarting_mid_transfer_still_receives_the_player() {
    let (redis, c) = Cluster::start().await;
    // The arrival waits long enough for the client in this test.
    let cfg = HandoffConfig {
        arrival_grace: Duration::from_secs(20),
        ..handoff_config()
    };
    let a = c.shard("a", cfg.clone(), None).await;
    let b = c.shard("b", cfg.clone(), None).await;
    let old_epoch = b.lease().expect("b's lease").epoch;
    b.shutdown().await;
    assert_eq!(
        c.store.get_lease(&zone_id("b")).await.expect("read"),
        None,
        "released at shutdown"
    );

    let player = PlayerId(88);
    let seq = transfer_while_b_is_down(&c, &a, player).await;
    let rec = record(&c.store, player).await;
    assert_eq!(
        (rec.owner.clone(), rec.epoch, rec.seq),
        (Some(shard_id("shard-b")), 0, seq),
        "waiting for b: {rec:?}"
    );

    let b = c.shard("b", cfg, None).await;
    let lease_b = b.lease().expect("the new b's lease");
    assert!(
        lease_b.epoch > old_epoch,
        "{} after {old_epoch}",
        lease_b.epoch
    );
    assert_eq!(
        wait_held(
            &b,
            player,
            Some(HeldState::Incoming),
            Duration::from_secs(10)
        )
        .await,
        Some(HeldState::Incoming),
        "the new b spawned the player from the notice"
    );
    let rec = record(&c.store, player).await;
    assert_eq!(
        (rec.owner.clone(), rec.epoch, rec.from.clone()),
        (Some(b.shard.clone()), lease_b.epoch, None),
        "accepted by the new b: {rec:?}"
    );
    assert_eq!(held(&a, player).await, None, "a does not hold it");

    let ep = endpoint();
    let s = ShardSession::connect(
        &ep,
        b.local_addr,
        b.cert_sha256,
        handoff_ticket(&b, player),
        &QuicConfig::default(),
    )
    .await
    .expect("the handed player is admitted by the new b");
    assert_eq!(s.welcome().shard, b.shard);
    assert_eq!(s.welcome().player, player);
    let mut at = None;
    for _ in 0..100 {
        at = pos(&s);
        if at.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let at = at.expect("a snapshot shows the player");
    assert!(
        (at[0] - TRANSFERRED.pos[0]).abs() < 1.0 && (at[1] - TRANSFERRED.pos[1]).abs() < 1.0,
        "welcomed at the transferred position: {at:?}"
    );
    assert_eq!(
        wait_held(&b, player, Some(HeldState::Active), Duration::from_secs(5)).await,
        Some(HeldState::Active),
        "the client took over the spawned entity"
    );
    let rec = record(&c.store, player).await;
    assert_eq!(
        (rec.owner.clone(), rec.zone.clone(), rec.epoch),
        (Some(b.shard.clone()), Some(b.zone.clone()), lease_b.epoch),
        "{rec:?}"
    );
    assert_eq!(
        rec.state.map(|s| s.score),
        Some(TRANSFERRED.score),
        "{rec:?}"
    );
    drop(s);
    a.shutdown().await;
    b.shutdown().await;
    drop(redis);
}

/// One player arriving through a notice and then its client is one player taken over: the
/// shard's `handoffs_in` counter ("players taken over from a neighbour (spawned here on a notice
/// or an arrival)") counts it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrival_by_notice_then_client_counts_one_handoff_in() {
    let (redis, c) = Cluster::start().await;
    let cfg = HandoffConfig {
        arrival_grace: Duration::from_secs(20),
        ..handoff_config()
    };
    let a = c.shard("a", cfg.clone(), None).await;
    let b = c.shard("b", cfg.clone(), None).await;
    b.shutdown().await;
    let player = PlayerId(89);
    transfer_while_b_is_down(&c, &a, player).await;
    let b = c.shard("b", cfg, None).await;
    assert_eq!(
        wait_held(
            &b,
            player,
            Some(HeldState::Incoming),
            Duration::from_secs(10)
        )
        .await,
        Some(HeldState::Incoming)
    );
    let ep = endpoint();
    let _s = ShardSession::connect(
        &ep,
        b.local_addr,
        b.cert_sha256,
        handoff_ticket(&b, player),
        &QuicConfig::default(),
    )
    .await
    .expect("admitted");
    assert_eq!(
        wait_held(&b, player, Some(HeldState::Active), Duration::from_secs(5)).await,
        Some(HeldState::Active)
    );
    let taken = b
        .metrics()
        .handoffs_in
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(taken, 1, "one player taken over, counted {taken} times");
    a.shutdown().await;
    b.shutdown().await;
    drop(redis);
}

// ---- The randomized test ----

/// Clients of the randomized test.
const CLIENTS: u64 = 12;
/// Top speed of players in the randomized test, units per second: fast enough to cross the
/// border several times in a run.
const RACE_SPEED: f32 = 20.0;
/// Shortest time the clients walk.
const WALK_FOR: Duration = Duration::from_secs(10);
/// The clients walk at least this long after the driver's last event.
const WALK_AFTER_EVENTS: Duration = Duration::from_secs(3);
/// Time given after the inputs stop for handoffs, arrivals and releases to finish.
const SETTLE: Duration = Duration::from_secs(3);
/// A session whose connection stays closed this long without reporting why is given up.
const STALL: Duration = Duration::from_millis(1500);
/// Seeds run when `MERIDIAN_SEED` is not set.
const DEFAULT_SEEDS: u64 = 3;

/// Where a client can join: an up shard.
#[derive(Clone, Debug)]
struct Target {
    shard: ShardId,
    zone: ZoneId,
    addr: SocketAddr,
    cert: CertSha256,
}

impl Target {
    fn of(h: &ShardHandle) -> Self {
        Self {
            shard: h.shard.clone(),
            zone: h.zone.clone(),
            addr: h.local_addr,
            cert: h.cert_sha256,
        }
    }
}

/// The shards clients may join now, by zone number (`None` while restarting).
type Targets = Arc<Mutex<[Option<Target>; 2]>>;

/// One thing the driver does.
#[derive(Clone, Debug)]
enum Chaos {
    /// Another shard takes the zone's lease for `hold`, then releases it.
    StealLease { zone: usize, hold: Duration },
    /// The zone's shard shuts down and starts again under the same id.
    Restart { zone: usize },
    /// Nothing for a while.
    Idle(Duration),
}

/// The driver's plan: 2 to 4 events, each after a pause.
fn plan(rng: &mut Pcg64Mcg) -> Vec<(Duration, Chaos)> {
    let n = rng.random_range(2..=4);
    (0..n)
        .map(|_| {
            let pause = Duration::from_millis(rng.random_range(500..1500));
            let chaos = match rng.random_range(0..3) {
                0 => Chaos::StealLease {
                    zone: rng.random_range(0..2),
                    hold: Duration::from_millis(rng.random_range(1000..=2000)),
                },
                1 => Chaos::Restart {
                    zone: rng.random_range(0..2),
                },
                _ => Chaos::Idle(Duration::from_millis(rng.random_range(500..1500))),
            };
            (pause, chaos)
        })
        .collect()
}

/// Runs the plan; returns the shards as they are at the end.
async fn drive(
    plan: Vec<(Duration, Chaos)>,
    mut shards: [Option<ShardHandle>; 2],
    cluster: Cluster,
    targets: Targets,
) -> [Option<ShardHandle>; 2] {
    let intruder = shard_id("intruder");
    for (pause, chaos) in plan {
        tokio::time::sleep(pause).await;
        match chaos {
            Chaos::StealLease { zone, hold } => {
                let lease = steal_lease(
                    &cluster.store,
                    &zone_id(ZONES[zone]),
                    &intruder,
                    Duration::from_secs(30),
                )
                .await;
                tokio::time::sleep(hold).await;
                assert!(
                    cluster.store.release_lease(&lease).await.expect("release"),
                    "the intruder's lease of zone {} was still its own",
                    ZONES[zone]
                );
            }
            Chaos::Restart { zone } => {
                if let Ok(mut t) = targets.lock() {
                    t[zone] = None;
                }
                let old = shards[zone]
                    .take()
                    .expect("invariant: every shard is up between events");
                old.shutdown().await;
                let new = cluster
                    .shard(ZONES[zone], handoff_config(), Some(RACE_SPEED))
                    .await;
                if let Ok(mut t) = targets.lock() {
                    t[zone] = Some(Target::of(&new));
                }
                shards[zone] = Some(new);
            }
            Chaos::Idle(d) => tokio::time::sleep(d).await,
        }
    }
    shards
}

/// A join ticket for `t`.
fn join_ticket(t: &Target, player: PlayerId) -> SignedTicket {
    ticket(
        &key(),
        TicketKind::Join,
        &t.shard,
        &t.zone,
        player.0,
        now_ms() + 30_000,
    )
}

/// Joins `t` as `player`, within a bound (a shard going down may not answer).
async fn try_join(ep: &quinn::Endpoint, t: &Target, player: PlayerId) -> Option<ShardSession> {
    let quic = QuicConfig::default();
    let connect = ShardSession::connect(ep, t.addr, t.cert, join_ticket(t, player), &quic);
    tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .ok()
        .and_then(Result::ok)
}

/// What a client did, and its session at the end (if it has one).
struct ClientRun {
    player: PlayerId,
    session: Option<ShardSession>,
    /// Handoffs its sessions completed.
    handoffs: u64,
    /// Sessions it opened after the first.
    rejoins: u32,
    /// Join attempts refused or not answered.
    join_failures: u32,
    /// Sessions given up because their connection closed and they reported nothing.
    stalls: u32,
    /// Why its sessions ended.
    endings: Vec<String>,
}

/// The session is over if it reported so among its pending events: why.
fn ended(s: &mut ShardSession) -> Option<String> {
    let mut why = None;
    while let Some(ev) = s.try_event() {
        match ev {
            SessionEvent::Kicked(k) => why = Some(format!("kicked ({:?})", k.reason)),
            SessionEvent::Closed(reason) => {
                why.get_or_insert_with(|| format!("closed ({reason})"));
            }
            SessionEvent::HandoffFailed { shard, detail } => {
                why = Some(format!("handoff to {shard} failed ({detail})"));
            }
            SessionEvent::Score { .. }
            | SessionEvent::Chat { .. }
            | SessionEvent::HandedOff { .. }
            | SessionEvent::Disconnected { .. }
            | SessionEvent::Reconnected { .. } => {}
        }
    }
    why
}

/// One client: walks toward a random point of the border region, changing every 0.5–2 s; when
/// its session ends, joins again (a random shard that is up). Once `stop` turns true it stops
/// walking as soon as it has a session (or 8 s later), brakes, and returns.
async fn run_client(
    player: PlayerId,
    session: ShardSession,
    seed: u64,
    ep: quinn::Endpoint,
    targets: Targets,
    store: StoreHandle,
    stop: watch::Receiver<bool>,
) -> ClientRun {
    let mut rng = Pcg64Mcg::seed_from_u64(seed ^ player.0.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut run = ClientRun {
        player,
        session: None,
        handoffs: 0,
        rejoins: 0,
        join_failures: 0,
        stalls: 0,
        endings: Vec::new(),
    };
    let mut current = Some(session);
    let mut goal = [0.0f32; 2];
    let mut next_turn = Instant::now();
    let mut stop_deadline = None;
    let mut closed_since: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            let deadline =
                *stop_deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(8));
            if current.is_some() || Instant::now() >= deadline {
                break;
            }
        }
        let Some(s) = current.as_mut() else {
            let up: Vec<Target> = targets
                .lock()
                .map(|t| t.iter().flatten().cloned().collect())
                .unwrap_or_default();
            if up.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let t = &up[rng.random_range(0..up.len())];
            match try_join(&ep, t, player).await {
                Some(s) => {
                    run.rejoins += 1;
                    current = Some(s);
                }
                None => {
                    run.join_failures += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            continue;
        };
        if let Some(why) = ended(s) {
            run.handoffs += s.stats().handoffs;
            run.endings.push(why);
            current = None;
            closed_since = None;
            continue;
        }
        let now = Instant::now();
        if s.is_open() {
            closed_since = None;
        } else if now.duration_since(*closed_since.get_or_insert(now)) >= STALL {
            // The shard played on closed the connection, and the session reports nothing: it
            // is switching to a shard that does not answer (it reports the failure only after
            // its connection attempts time out). Join again instead of waiting.
            let owner = store.get_ownership(player).await.ok().flatten();
            run.handoffs += s.stats().handoffs;
            run.stalls += 1;
            run.endings.push(format!(
                "stalled: {} closed the connection ({:?}) and the session reported nothing; \
                 record {owner:?}",
                s.welcome().shard,
                s.connection().close_reason()
            ));
            current = None;
            closed_since = None;
            continue;
        }
        if now >= next_turn {
            goal = [
                rng.random_range(140.0..260.0),
                rng.random_range(30.0..170.0),
            ];
            next_turn = now + Duration::from_millis(rng.random_range(500..=2000));
        }
        let heading = pos(s).map_or(0.0, |p| (goal[1] - p[1]).atan2(goal[0] - p[0]));
        let _ = s.send_input(heading, 1.0, 0);
        tokio::time::sleep(Duration::from_millis(34)).await;
    }
    if let Some(s) = current.as_mut() {
        for _ in 0..10 {
            let _ = s.send_input(0.0, 0.0, 0);
            tokio::time::sleep(Duration::from_millis(34)).await;
        }
    }
    run.session = current;
    run
}

/// Asks a shard's admin endpoint what it holds.
struct AdminSource {
    http: reqwest::Client,
}

impl ShardSource for AdminSource {
    async fn players(&self, shard: &LiveShard) -> Result<ShardPlayers, String> {
        let addr = shard
            .record
            .admin_addr
            .as_deref()
            .ok_or_else(|| format!("shard {} publishes no admin endpoint", shard.record.id))?;
        let answer = self
            .http
            .get(format!("http://{addr}/players"))
            .send()
            .await
            .map_err(|e| format!("GET /players: {e}"))?;
        if !answer.status().is_success() {
            return Err(format!("GET /players: status {}", answer.status()));
        }
        answer
            .json::<ShardPlayers>()
            .await
            .map_err(|e| format!("GET /players: {e}"))
    }
}

/// What one seed did.
struct Summary {
    handoffs: u64,
    rejoins: u32,
    join_failures: u32,
    events: Vec<Chaos>,
    /// Sessions open at the end.
    open: usize,
    /// Sessions given up during the run (closed without an event).
    stalls: u32,
    /// Why each stalled session was given up.
    stalled: Vec<(PlayerId, String)>,
    /// Clients without an open session at the end, with why their sessions ended.
    closed: Vec<(PlayerId, Vec<String>)>,
}

/// `MERIDIAN_SEED` if set (one seed), else [`DEFAULT_SEEDS`] seeds from the clock.
fn seeds() -> Vec<u64> {
    if let Ok(text) = std::env::var("MERIDIAN_SEED") {
        let seed = text
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("MERIDIAN_SEED={text:?} is not a u64: {e}"));
        return vec![seed];
    }
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64;
    (0..DEFAULT_SEEDS)
        .map(|i| {
            // splitmix64: distinct, well-spread seeds.
            let mut z = base.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        })
        .collect()
}

/// Twelve clients walk back and forth across the border of two shards while a seeded driver
/// takes leases away and gives them back, and restarts shards; kicked clients join again. Once
/// the inputs stop and things settle, the audit finds every player owned exactly once, by the
/// shard its client plays on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_walks_lease_losses_and_restarts_settle_to_single_ownership() {
    for seed in seeds() {
        println!("seed {seed} (replay: MERIDIAN_SEED={seed})");
        let s = run_seed(seed).await;
        println!(
            "seed {seed}: {} handoffs, {} rejoins ({} join attempts failed, {} stalled sessions \
             given up), {} of {CLIENTS} sessions open at the end; events injected: {:?}",
            s.handoffs, s.rejoins, s.join_failures, s.stalls, s.open, s.events
        );
        for (player, why) in &s.stalled {
            println!("  player {player}: {why}");
        }
        for (player, endings) in &s.closed {
            println!("  player {player} has no open session at the end: {endings:?}");
        }
    }
}

async fn run_seed(seed: u64) -> Summary {
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    let (redis, cluster) = Cluster::start().await;
    let a = cluster.shard("a", handoff_config(), Some(RACE_SPEED)).await;
    let b = cluster.shard("b", handoff_config(), Some(RACE_SPEED)).await;
    let targets: Targets = Arc::new(Mutex::new([Some(Target::of(&a)), Some(Target::of(&b))]));
    let ep = endpoint();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let player = PlayerId(1000 + i);
        let home = if i % 2 == 0 { &a } else { &b };
        let session = join(&ep, home, player.0).await;
        clients.push(tokio::spawn(run_client(
            player,
            session,
            seed,
            ep.clone(),
            targets.clone(),
            cluster.store.clone(),
            stop_rx.clone(),
        )));
    }
    let started = Instant::now();
    let plan = plan(&mut rng);
    let events: Vec<Chaos> = plan.iter().map(|(_, c)| c.clone()).collect();
    let shards = tokio::time::timeout(
        Duration::from_secs(40),
        drive(plan, [Some(a), Some(b)], cluster.clone(), targets.clone()),
    )
    .await
    .unwrap_or_else(|_| panic!("seed {seed}: the driver did not finish its plan in 40 s"));
    let walk_end = (started + WALK_FOR).max(Instant::now() + WALK_AFTER_EVENTS);
    tokio::time::sleep_until(walk_end).await;
    stop_tx.send_replace(true);
    let mut runs = Vec::new();
    for c in clients {
        runs.push(c.await.expect("client task"));
    }
    tokio::time::sleep(SETTLE).await;

    let [Some(a), Some(b)] = shards else {
        panic!("seed {seed}: a shard is missing after the plan");
    };
    let shards = [a, b];
    let mut summary = Summary {
        handoffs: 0,
        rejoins: 0,
        join_failures: 0,
        events,
        open: 0,
        stalls: 0,
        stalled: Vec::new(),
        closed: Vec::new(),
    };
    // Each client whose session is still open: owned by the shard its session is on, under that
    // shard's lease epoch, and held by that shard alone.
    let mut held_by = Vec::new();
    for h in &shards {
        held_by.push(holdings(h).await);
    }
    for run in &mut runs {
        summary.handoffs += run.handoffs;
        summary.rejoins += run.rejoins;
        summary.join_failures += run.join_failures;
        let Some(s) = run.session.as_mut() else {
            continue;
        };
        summary.handoffs += s.stats().handoffs;
        if let Some(why) = ended(s) {
            run.endings.push(format!("at the end: {why}"));
            continue;
        }
        if !s.is_open() {
            run.endings.push(format!(
                "at the end: connection to {} closed without an event: {:?}; {:?}",
                s.welcome().shard,
                s.connection().close_reason(),
                s.stats()
            ));
            continue;
        }
        summary.open += 1;
        let on = s.welcome().shard;
        let rec = record(&cluster.store, run.player).await;
        let context = format!(
            "seed {seed}: player {} plays on {on} (endings {:?}); record {rec:?}; shards hold {:?}",
            run.player,
            run.endings,
            held_by
                .iter()
                .map(|h| (
                    h.shard.to_string(),
                    h.players
                        .iter()
                        .filter(|p| p.player == run.player)
                        .map(|p| p.state)
                        .collect::<Vec<_>>()
                ))
                .collect::<Vec<_>>()
        );
        assert_eq!(rec.owner.as_ref(), Some(&on), "{context}");
        let shard = shards
            .iter()
            .find(|h| h.shard == on)
            .unwrap_or_else(|| panic!("{context}: no such shard"));
        assert_eq!(
            Some(rec.epoch),
            shard.lease().map(|l| l.epoch),
            "fenced with the owner's current lease: {context}"
        );
        for h in &held_by {
            let states: Vec<HeldState> = h
                .players
                .iter()
                .filter(|p| p.player == run.player)
                .map(|p| p.state)
                .collect();
            let want: &[HeldState] = if h.shard == on {
                &[HeldState::Active]
            } else {
                &[]
            };
            assert_eq!(states, want, "held by {}: {context}", h.shard);
        }
    }
    for run in &runs {
        summary.stalls += run.stalls;
        for e in run.endings.iter().filter(|e| e.starts_with("stalled")) {
            summary.stalled.push((run.player, e.clone()));
        }
        if run.session.is_none()
            || run
                .endings
                .last()
                .is_some_and(|e| e.starts_with("at the end"))
        {
            summary.closed.push((run.player, run.endings.clone()));
        }
    }
    // No record owned by a shard that does not hold the player.
    let owned = cluster.store.owned_players().await.expect("owned players");
    for rec in &owned {
        let holder = held_by
            .iter()
            .find(|h| Some(&h.shard) == rec.owner.as_ref());
        assert!(
            holder.is_some_and(|h| h.players.iter().any(|p| p.player == rec.player)),
            "seed {seed}: {rec:?} is owned by a shard that does not hold it ({held_by:?})"
        );
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("http client");
    let report = audit::run_audit(
        &cluster.store,
        &AdminSource { http },
        Duration::from_millis(500),
    )
    .await
    .expect("audit");
    assert_eq!(report.duplicated, 0, "seed {seed}: {report:?}");
    assert_eq!(report.stale_epoch, 0, "seed {seed}: {report:?}");
    assert!(report.clean(), "seed {seed}: {report:?}");
    assert_eq!(
        report.owned_once as usize, summary.open,
        "seed {seed}: the players of the open sessions, and no other: {report:?}"
    );

    for run in runs {
        drop(run.session);
    }
    let [a, b] = shards;
    tokio::join!(a.shutdown(), b.shutdown());
    drop(redis);
    summary
}
