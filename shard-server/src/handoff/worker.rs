//! The handoff worker: async tasks beside the tick thread that execute the effects of handoff
//! against the store and report back as [`HandoffEvent`]s.
//!
//! - commands ([`HandoffCommand`]): transfers (one task each, bounded), releases, notice acks;
//! - the lease keeper: renews the zone lease every third of its TTL; if it was lost, tries to
//!   take it again (a free zone is taken back with a new epoch; a zone held by another shard
//!   means this one stops serving it);
//! - the inbox reader: notices from neighbours, accepted in shared state, then handed to the
//!   tick thread, which spawns the players and asks for the acks;
//! - the neighbour watcher: which shard owns each neighbouring zone now (lease + registry);
//!   while it cannot tell (shared state out of reach) every border is closed;
//! - ghosts: publishes this zone's border entities, receives the neighbours'.

use super::ghosts::{self, GhostEntityMsg};
use super::{HandoffCommand, HandoffConfig, HandoffEvent, NeighbourInfo};
use crate::metrics::ShardMetrics;
use crate::sim::GhostUpdate;
use meridian_cluster::Store;
use meridian_cluster::error::StoreError;
use meridian_cluster::metrics::StoreOp;
use meridian_cluster::ownership::{
    AcceptOutcome, AcquireOutcome, ClaimOutcome, HandoffNotice, Lease, PlayerState, TransferOutcome,
};
use meridian_cluster::store::StoreHandle;
use meridian_protocol::control::{HandoffMsg, ShardControlMsg};
use meridian_protocol::ticket::{TicketClaims, TicketKey, TicketKind, random_nonce};
use meridian_protocol::{PlayerId, ShardId, Tick, ZoneId};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, info_span, warn};

/// Most transfers in flight at once.
const MAX_TRANSFERS_IN_FLIGHT: usize = 256;
/// How long a notice is retried before it is given up (the client's arrival still works).
const NOTICE_RETRY_FOR: Duration = Duration::from_secs(30);
/// Pause after a failed store call in a loop.
const BACKOFF: Duration = Duration::from_millis(250);

/// Everything the worker needs.
pub struct WorkerSetup {
    /// This shard.
    pub shard: ShardId,
    /// Its zone.
    pub zone: ZoneId,
    /// Shared state.
    pub store: StoreHandle,
    /// Neighbouring zones, in the simulation's neighbour order.
    pub neighbours: Vec<ZoneId>,
    /// Signs handoff tickets.
    pub key: TicketKey,
    /// Settings.
    pub config: HandoffConfig,
    /// The lease as last known (None while lost); the worker updates it, connection tasks read
    /// it for their claims.
    pub lease: watch::Sender<Option<Lease>>,
    /// From the tick thread.
    pub commands: mpsc::Receiver<HandoffCommand>,
    /// To the tick thread.
    pub events: mpsc::Sender<HandoffEvent>,
    /// Ghost batches to publish: (neighbour number, encoded batch).
    pub ghosts_out: mpsc::Receiver<(u16, Vec<u8>)>,
    /// Ghost updates received, one tick's worth per message.
    pub ghosts_in: mpsc::Sender<Vec<GhostUpdate>>,
    /// Counters.
    pub metrics: Arc<ShardMetrics>,
    /// Turns true at shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// While true the lease keeper does nothing: set by a drain before it releases the lease
    /// (so that the keeper does not take it back), and by chaos tests to simulate a stalled
    /// process.
    pub lease_paused: Arc<AtomicBool>,
}

/// Shared between the worker's tasks.
struct Shared {
    shard: ShardId,
    zone: ZoneId,
    store: StoreHandle,
    key: TicketKey,
    config: HandoffConfig,
    lease: watch::Sender<Option<Lease>>,
    neighbours: Vec<ZoneId>,
    /// The neighbour watcher's latest view.
    owners: Mutex<Vec<Option<NeighbourInfo>>>,
    events: mpsc::Sender<HandoffEvent>,
    metrics: Arc<ShardMetrics>,
    lease_paused: Arc<AtomicBool>,
}

impl Shared {
    fn lease(&self) -> Option<Lease> {
        self.lease.borrow().clone()
    }
}

/// Starts the worker's tasks; they end at shutdown.
pub fn spawn(setup: WorkerSetup) -> Vec<JoinHandle<()>> {
    let WorkerSetup {
        shard,
        zone,
        store,
        neighbours,
        key,
        config,
        lease,
        commands,
        events,
        ghosts_out,
        ghosts_in,
        metrics,
        shutdown,
        lease_paused,
    } = setup;
    let shared = Arc::new(Shared {
        owners: Mutex::new(vec![None; neighbours.len()]),
        shard,
        zone,
        store,
        key,
        config,
        lease,
        neighbours,
        events,
        metrics,
        lease_paused,
    });
    let span = info_span!("handoff", shard = %shared.shard, zone = %shared.zone);
    vec![
        tokio::spawn(
            run_commands(shared.clone(), commands, shutdown.clone()).instrument(span.clone()),
        ),
        tokio::spawn(keep_lease(shared.clone(), shutdown.clone()).instrument(span.clone())),
        tokio::spawn(read_inbox(shared.clone(), shutdown.clone()).instrument(span.clone())),
        tokio::spawn(watch_neighbours(shared.clone(), shutdown.clone()).instrument(span.clone())),
        tokio::spawn(
            publish_ghosts(shared.clone(), ghosts_out, shutdown.clone()).instrument(span.clone()),
        ),
        tokio::spawn(receive_ghosts(shared, ghosts_in, shutdown).instrument(span)),
    ]
}

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Runs `f` until shutdown.
async fn until_shutdown<F: std::future::Future<Output = ()>>(
    mut shutdown: watch::Receiver<bool>,
    f: F,
) {
    tokio::select! {
        _ = f => {}
        _ = stopped(&mut shutdown) => {}
    }
}

async fn run_commands(
    shared: Arc<Shared>,
    mut commands: mpsc::Receiver<HandoffCommand>,
    shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_TRANSFERS_IN_FLIGHT));
    // Releases and acks go on even at shutdown: the tick thread sends its last ones then.
    let _ = shutdown;
    while let Some(cmd) = commands.recv().await {
        match cmd {
            HandoffCommand::Transfer {
                player,
                neighbour,
                to_zone,
                state,
                control,
            } => {
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    fail(&shared, player, "too many transfers in flight".into()).await;
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(
                    async move {
                        transfer(&shared, player, neighbour, to_zone, state, control).await;
                        drop(permit);
                    }
                    .in_current_span(),
                );
            }
            HandoffCommand::Release { player, state } => {
                let shared = shared.clone();
                tokio::spawn(
                    async move { release(&shared, player, state).await }.in_current_span(),
                );
            }
            HandoffCommand::Reclaim { players } => {
                let shared = shared.clone();
                tokio::spawn(async move { reclaim(&shared, players).await }.in_current_span());
            }
            HandoffCommand::AckNotice { id } => {
                let shared = shared.clone();
                tokio::spawn(
                    async move {
                        for _ in 0..5 {
                            match shared.store.ack_inbox(&shared.shard, std::slice::from_ref(&id)).await {
                                Ok(()) => return,
                                Err(e) => {
                                    debug!(error = %e, %id, "notice ack failed; retrying");
                                    tokio::time::sleep(BACKOFF).await;
                                }
                            }
                        }
                        warn!(%id, "notice not acknowledged; it will be delivered again and ignored");
                    }
                    .in_current_span(),
                );
            }
        }
    }
}

async fn fail(shared: &Shared, player: PlayerId, reason: String) {
    ShardMetrics::inc(&shared.metrics.handoffs_failed);
    let _ = shared
        .events
        .send(HandoffEvent::TransferFailed { player, reason })
        .await;
}

/// One transfer: the atomic ownership move, the ticket, then the notice to the new owner.
async fn transfer(
    shared: &Shared,
    player: PlayerId,
    neighbour: u16,
    to_zone: ZoneId,
    state: PlayerState,
    control: Option<mpsc::Sender<ShardControlMsg>>,
) {
    let Some(lease) = shared.lease() else {
        return fail(
            shared,
            player,
            "this shard holds no lease on its zone".into(),
        )
        .await;
    };
    let target = shared
        .owners
        .lock()
        .ok()
        .and_then(|o| o.get(usize::from(neighbour)).cloned().flatten());
    let Some(target) = target.filter(|t| t.zone == to_zone) else {
        return fail(shared, player, format!("zone {to_zone} has no live owner")).await;
    };
    let span = info_span!("handoff", %player, from = %shared.shard, to = %target.shard, seq = tracing::field::Empty);
    let transfer_started = Instant::now();
    async {
        let seq = match shared
            .metrics
            .store_ops
            .time(
                StoreOp::TransferPlayer,
                shared
                    .store
                    .transfer_player(player, &lease, &target.shard, &to_zone, &state),
            )
            .await
        {
            Ok(TransferOutcome::Transferred { seq }) => seq,
            Ok(TransferOutcome::NotOwner(record)) => {
                warn!(?record, "transfer refused: not the owner at this epoch");
                return fail(shared, player, "not the owner at this epoch".into()).await;
            }
            Err(e) => match resolve(shared, player, &lease, &target.shard, &e).await {
                Some(seq) => seq,
                None => return fail(shared, player, format!("transfer failed: {e}")).await,
            },
        };
        let claims = TicketClaims {
            kind: TicketKind::Handoff,
            player,
            shard: target.shard.clone(),
            zone: to_zone.clone(),
            expires_at_ms: crate::net::now_ms() + super::HANDOFF_TICKET_TTL.as_millis() as u64,
            nonce: random_nonce(),
        };
        let ticket = match shared.key.sign(claims) {
            Ok(t) => t,
            Err(e) => {
                // Ownership moved already: the client cannot follow, but the new owner gets the
                // notice and saves the player after its grace period.
                warn!(error = %e, "cannot sign the handoff ticket");
                return fail(shared, player, format!("cannot sign the ticket: {e}")).await;
            }
        };
        ShardMetrics::inc(&shared.metrics.handoffs_out);
        tracing::Span::current().record("seq", seq);
        info!(seq, "ownership moved");
        let msg = HandoffMsg {
            ticket,
            shard: target.shard.clone(),
            zone: to_zone.clone(),
            addr: target.addr.clone(),
            cert_sha256: target.cert_sha256,
        };
        let delivered =
            control.is_some_and(|c| c.try_send(ShardControlMsg::Handoff(msg.clone())).is_ok());
        let _ = shared
            .events
            .send(HandoffEvent::Transferred {
                player,
                msg,
                seq,
                delivered,
            })
            .await;
        shared
            .metrics
            .handoff_transfer
            .observe(transfer_started.elapsed());
        let notice = HandoffNotice {
            player,
            seq,
            from: shared.shard.clone(),
            from_zone: shared.zone.clone(),
            to_zone,
            state,
        };
        let started = Instant::now();
        loop {
            match shared
                .metrics
                .store_ops
                .time(
                    StoreOp::SendHandoff,
                    shared.store.send_handoff(&target.shard, &notice),
                )
                .await
            {
                Ok(()) => break,
                Err(e) if started.elapsed() < NOTICE_RETRY_FOR => {
                    debug!(error = %e, "notice not sent; retrying");
                    tokio::time::sleep(BACKOFF).await;
                }
                Err(e) => {
                    warn!(error = %e, "notice given up; the player moves when its client arrives");
                    break;
                }
            }
        }
    }
    .instrument(span)
    .await
}

/// After a transfer call that failed without an answer (timeout, connection lost), finds out
/// whether it took effect by reading the record until the store answers: `Some(seq)` if the
/// player was moved to `to` by this shard.
async fn resolve(
    shared: &Shared,
    player: PlayerId,
    lease: &Lease,
    to: &ShardId,
    error: &StoreError,
) -> Option<u64> {
    if !matches!(
        error,
        StoreError::Timeout { .. } | StoreError::Unavailable { .. }
    ) {
        return None;
    }
    warn!(%error, "transfer outcome unknown; reading the record");
    loop {
        match shared
            .metrics
            .store_ops
            .time(StoreOp::GetOwnership, shared.store.get_ownership(player))
            .await
        {
            Ok(Some(rec)) => {
                let moved =
                    rec.owner.as_ref() == Some(to) && rec.from.as_ref() == Some(&lease.owner);
                return moved.then_some(rec.seq);
            }
            Ok(None) => return None,
            Err(e) => {
                debug!(error = %e, "record unreadable; retrying");
                tokio::time::sleep(BACKOFF).await;
            }
        }
    }
}

async fn release(shared: &Shared, player: PlayerId, state: Option<PlayerState>) {
    let Some(lease) = shared.lease() else {
        ShardMetrics::inc(&shared.metrics.ownership_errors);
        warn!(%player, "player not released: this shard holds no lease");
        return;
    };
    for attempt in 0..5 {
        match shared
            .metrics
            .store_ops
            .time(
                StoreOp::ReleasePlayer,
                shared.store.release_player(player, &lease, state.as_ref()),
            )
            .await
        {
            Ok(true) => {
                debug!(%player, "released");
                return;
            }
            Ok(false) => {
                // Someone else owns it now (it joined elsewhere): nothing of ours to release.
                debug!(%player, "not released: no longer the owner");
                return;
            }
            Err(e) => {
                debug!(%player, error = %e, attempt, "release failed; retrying");
                tokio::time::sleep(BACKOFF * (attempt + 1)).await;
            }
        }
    }
    ShardMetrics::inc(&shared.metrics.ownership_errors);
    warn!(%player, "player not released after 5 attempts");
}

/// Claims `players` again under the current lease.
async fn reclaim(shared: &Shared, players: Vec<PlayerId>) {
    let Some(lease) = shared.lease() else {
        return;
    };
    let mut claimed = 0usize;
    for player in &players {
        match shared
            .metrics
            .store_ops
            .time(
                StoreOp::ClaimPlayer,
                shared.store.claim_player(*player, &lease),
            )
            .await
        {
            Ok(ClaimOutcome::Claimed { .. }) => claimed += 1,
            Ok(ClaimOutcome::Stale { epoch }) => {
                ShardMetrics::inc(&shared.metrics.ownership_errors);
                warn!(%player, epoch, "player not reclaimed: its record has a newer epoch");
            }
            Err(e) => {
                ShardMetrics::inc(&shared.metrics.ownership_errors);
                warn!(%player, error = %e, "player not reclaimed");
            }
        }
    }
    info!(
        claimed,
        of = players.len(),
        epoch = lease.epoch,
        "players claimed again under the new lease"
    );
}

/// Renews the lease; re-acquires it when lost; reports losses and recoveries.
async fn keep_lease(shared: Arc<Shared>, shutdown: watch::Receiver<bool>) {
    let ttl = shared.config.lease_ttl;
    let every = ttl / 3;
    let mut lost_reported = false;
    let body = async {
        loop {
            tokio::time::sleep(every).await;
            if shared.lease_paused.load(Ordering::Relaxed) {
                continue;
            }
            let current = shared.lease();
            shared
                .metrics
                .lease_held
                .store(u64::from(current.is_some()), Ordering::Relaxed);
            let held = match &current {
                Some(lease) => match shared
                    .metrics
                    .store_ops
                    .time(StoreOp::RenewLease, shared.store.renew_lease(lease, ttl))
                    .await
                {
                    Ok(held) => held,
                    Err(e) => {
                        // Out of reach: nobody else can take the lease meanwhile (it lives in
                        // the store); keep serving and try again.
                        debug!(error = %e, "lease renewal failed; retrying");
                        continue;
                    }
                },
                None => false,
            };
            if held {
                continue;
            }
            match shared
                .metrics
                .store_ops
                .time(
                    StoreOp::AcquireLease,
                    shared.store.acquire_lease(&shared.zone, &shared.shard, ttl),
                )
                .await
            {
                Ok(AcquireOutcome::Acquired(lease)) => {
                    info!(epoch = lease.epoch, "zone lease taken again");
                    shared.lease.send_replace(Some(lease.clone()));
                    shared.metrics.lease_held.store(1, Ordering::Relaxed);
                    lost_reported = false;
                    let _ = shared.events.send(HandoffEvent::LeaseRegained(lease)).await;
                }
                Ok(AcquireOutcome::Held(holder)) => {
                    shared.lease.send_replace(None);
                    shared.metrics.lease_held.store(0, Ordering::Relaxed);
                    if !lost_reported {
                        lost_reported = true;
                        ShardMetrics::inc(&shared.metrics.lease_lost);
                        warn!(holder = %holder.owner, epoch = holder.epoch, "zone lease lost: another shard serves the zone now");
                        let _ = shared
                            .events
                            .send(HandoffEvent::LeaseLost {
                                holder: Some(holder),
                            })
                            .await;
                    }
                }
                Err(e) => debug!(error = %e, "lease acquisition failed; retrying"),
            }
        }
    };
    until_shutdown(shutdown, body).await;
}

/// Reads this shard's inbox and hands accepted notices to the tick thread.
async fn read_inbox(shared: Arc<Shared>, shutdown: watch::Receiver<bool>) {
    let body = async {
        loop {
            let Some(lease) = shared.lease() else {
                tokio::time::sleep(BACKOFF).await;
                continue;
            };
            let entries = match shared
                .store
                .read_inbox(&shared.shard, 128, Duration::from_millis(500))
                .await
            {
                Ok(entries) => entries,
                Err(e) => {
                    debug!(error = %e, "inbox read failed; retrying");
                    tokio::time::sleep(BACKOFF).await;
                    continue;
                }
            };
            for entry in entries {
                let notice = entry.notice;
                let span = info_span!("handoff", player = %notice.player, from = %notice.from, to = %shared.shard, seq = notice.seq);
                let (shared, lease) = (&shared, &lease);
                async move { match shared
                    .metrics
                    .store_ops
                    .time(
                        StoreOp::AcceptPlayer,
                        shared.store.accept_player(notice.player, lease, Some(notice.seq)),
                    )
                    .await
                {
                    Ok(AcceptOutcome::Accepted { state, .. }) => {
                        info!("handoff notice accepted");
                        let state = state.unwrap_or(notice.state);
                        let _ = shared
                            .events
                            .send(HandoffEvent::Notice {
                                id: entry.id,
                                notice,
                                state,
                            })
                            .await;
                    }
                    Ok(AcceptOutcome::NotOffered(record)) => {
                        ShardMetrics::inc(&shared.metrics.notices_ignored);
                        debug!(player = %notice.player, seq = notice.seq, ?record, "stale notice ignored");
                        let _ = shared.store.ack_inbox(&shared.shard, &[entry.id]).await;
                    }
                    Err(e) => {
                        // Not acknowledged: delivered again later.
                        debug!(error = %e, player = %notice.player, "notice not accepted yet");
                    }
                } }
                .instrument(span)
                .await;
            }
        }
    };
    until_shutdown(shutdown, body).await;
}

/// Looks up the owner of each neighbouring zone.
async fn watch_neighbours(shared: Arc<Shared>, shutdown: watch::Receiver<bool>) {
    let body = async {
        let mut last: Option<Vec<Option<NeighbourInfo>>> = None;
        let mut failures = 0u32;
        loop {
            let owners = look_up_neighbours(&shared).await;
            let owners = match owners {
                Ok(o) => {
                    failures = 0;
                    o
                }
                Err(e) => {
                    failures += 1;
                    debug!(error = %e, failures, "neighbour lookup failed");
                    if failures < 2 {
                        tokio::time::sleep(shared.config.neighbour_refresh).await;
                        continue;
                    }
                    // Cannot tell who owns the neighbours: every border is a wall meanwhile.
                    vec![None; shared.neighbours.len()]
                }
            };
            if last.as_ref() != Some(&owners) {
                if let Ok(mut o) = shared.owners.lock() {
                    o.clone_from(&owners);
                }
                info!(
                    open = owners.iter().filter(|o| o.is_some()).count(),
                    of = owners.len(),
                    "neighbours changed"
                );
                let _ = shared
                    .events
                    .send(HandoffEvent::Neighbours(owners.clone()))
                    .await;
                last = Some(owners);
            }
            tokio::time::sleep(shared.config.neighbour_refresh).await;
        }
    };
    until_shutdown(shutdown, body).await;
}

async fn look_up_neighbours(shared: &Shared) -> Result<Vec<Option<NeighbourInfo>>, StoreError> {
    let live = shared.store.live_shards().await?;
    let mut owners = Vec::with_capacity(shared.neighbours.len());
    for zone in &shared.neighbours {
        let owner = shared.store.get_lease(zone).await?.and_then(|lease| {
            live.iter()
                .find(|s| {
                    s.record.id == lease.owner && s.record.zone == *zone && !s.record.draining
                })
                .map(|s| NeighbourInfo {
                    zone: zone.clone(),
                    shard: lease.owner.clone(),
                    addr: s.record.addr.clone(),
                    cert_sha256: s.record.cert_sha256,
                })
        });
        owners.push(owner);
    }
    Ok(owners)
}

async fn publish_ghosts(
    shared: Arc<Shared>,
    mut batches: mpsc::Receiver<(u16, Vec<u8>)>,
    shutdown: watch::Receiver<bool>,
) {
    let body = async {
        let mut last_error: Option<Instant> = None;
        while let Some((neighbour, batch)) = batches.recv().await {
            let Some(zone) = shared.neighbours.get(usize::from(neighbour)) else {
                continue;
            };
            match shared
                .metrics
                .store_ops
                .time(
                    StoreOp::PublishGhosts,
                    shared.store.publish_ghosts(zone, &batch),
                )
                .await
            {
                Ok(()) => ShardMetrics::inc(&shared.metrics.ghost_batches_out),
                Err(e) => {
                    if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        last_error = Some(Instant::now());
                        warn!(error = %e, "ghost batch not published");
                    }
                }
            }
        }
    };
    until_shutdown(shutdown, body).await;
}

async fn receive_ghosts(
    shared: Arc<Shared>,
    updates: mpsc::Sender<Vec<GhostUpdate>>,
    shutdown: watch::Receiver<bool>,
) {
    let body = async {
        let mut rx = loop {
            match shared.store.subscribe_ghosts(&shared.zone).await {
                Ok(rx) => break rx,
                Err(e) => {
                    debug!(error = %e, "ghost subscription failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        while let Some(bytes) = rx.recv().await {
            let mut out = Vec::new();
            match ghosts::decode_batch(&bytes, &shared.neighbours, &mut out) {
                Ok(_) => {
                    ShardMetrics::inc(&shared.metrics.ghost_batches_in);
                    // Dropped when the tick thread is behind: the next batch refreshes them.
                    let _ = updates.try_send(out);
                }
                Err(e) => debug!(error = %e, "ghost batch refused"),
            }
        }
    };
    until_shutdown(shutdown, body).await;
}

/// Encodes this tick's ghost batches (one per neighbour with entities near its border) and
/// queues them for publication; called by the tick thread. Batches are dropped when the queue
/// is full.
pub fn queue_ghosts(
    zone: &ZoneId,
    tick: Tick,
    batches: &[Vec<GhostEntityMsg>],
    out: &mpsc::Sender<(u16, Vec<u8>)>,
) {
    for (i, batch) in batches.iter().enumerate() {
        let Ok(n) = u16::try_from(i) else { break };
        if batch.is_empty() {
            // Nothing near that border: the neighbour's ghosts of it expire by themselves.
            continue;
        }
        if let Ok(bytes) = ghosts::encode_batch(zone, tick, batch) {
            let _ = out.try_send((n, bytes));
        }
    }
}
