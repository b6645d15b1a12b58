//! [`MemoryStore`]: the in-process adapter of the [`Store`] port, for `meridian dev` (one
//! process, no Redis) and unit tests of other crates.
//!
//! Same semantics as Redis, TTLs included: expiry is judged by an injected [`Clock`]
//! ([`SystemClock`](crate::clock::SystemClock) in dev, [`ManualClock`](crate::clock::ManualClock)
//! in tests). Expired entries read as absent at once and are swept from memory every
//! [`SWEEP_EVERY`] writes. One mutex guards the state, never held across an `.await`, so every
//! operation is atomic.
//!
//! Inboxes behave like a Redis stream with one consumer group: entry ids `<ms>-<n>` from the
//! clock, a pending list with delivery counts, redelivery judged by the clock. A blocking read
//! waits (in real time) on a per-inbox signal that every send bumps. Ghost batches go straight
//! to each subscriber's bounded channel; a full channel drops the batch.

use crate::clock::Clock;
use crate::error::{
    StoreConfigError, StoreError, check_lease, check_notice, check_shard, check_state, check_zone,
    parse_entry_id,
};
use crate::keyspace::Keyspace;
use crate::ownership::{
    AcceptOutcome, AcquireOutcome, ClaimOutcome, HandoffNotice, InboxEntry, Lease, Ownership,
    PlayerState, TransferOutcome,
};
use crate::redis_store::{GHOST_BUFFER, MAX_INBOX_BLOCK, lease_ttl_ms};
use crate::store::{
    INBOX_MAX_LEN, INBOX_REDELIVER_AFTER, LeaderboardEntry, LiveShard, LoadedProfile,
    MAX_LEADERBOARD, Profile, Session, SessionToken, ShardRecord, Store, StoreConfig, clamp_score,
    ttl_ms,
};
use meridian_protocol::{PlayerId, ShardId, ZoneId};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};

/// Expired entries are removed from memory after this many writes (they read as absent at once).
pub const SWEEP_EVERY: u32 = 256;

/// The in-process store. Cheap to clone; clones share the same state.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    clock: Arc<dyn Clock>,
    /// Key names, only for error messages (the same as Redis would report).
    keys: Keyspace,
    state: Mutex<State>,
}

/// A value with the time (ms) from which it reads as absent.
struct Expiring<T> {
    value: T,
    expires_at_ms: u64,
}

impl<T> Expiring<T> {
    fn live_at(&self, now_ms: u64) -> Option<&T> {
        (now_ms < self.expires_at_ms).then_some(&self.value)
    }
}

#[derive(Default)]
struct State {
    shards: BTreeMap<ShardId, Expiring<LiveShard>>,
    names: HashMap<String, PlayerId>,
    players: HashMap<PlayerId, String>,
    last_player: u64,
    scores: HashMap<PlayerId, u64>,
    /// `(score, player)`; iterated backwards: highest score first, ties by higher id, as Redis.
    ranking: BTreeSet<(u64, PlayerId)>,
    sessions: HashMap<SessionToken, Expiring<Session>>,
    nonces: HashMap<u64, u64>,
    /// Zone leases; expired ones read as free.
    leases: HashMap<ZoneId, Expiring<Lease>>,
    /// The last epoch issued per zone (never expires).
    lease_epochs: HashMap<ZoneId, u64>,
    /// Ownership records (the ownership fields of the player hash).
    owners: HashMap<PlayerId, Ownership>,
    inboxes: HashMap<ShardId, Inbox>,
    /// Ghost subscribers per zone; closed ones are dropped on the next publish or subscribe.
    ghosts: HashMap<ZoneId, Vec<mpsc::Sender<Vec<u8>>>>,
    writes_since_sweep: u32,
}

impl State {
    /// Counts a write and, every [`SWEEP_EVERY`] writes, drops what has expired.
    fn wrote(&mut self, now_ms: u64) {
        self.writes_since_sweep += 1;
        if self.writes_since_sweep < SWEEP_EVERY {
            return;
        }
        self.writes_since_sweep = 0;
        self.shards.retain(|_, e| e.live_at(now_ms).is_some());
        self.sessions.retain(|_, e| e.live_at(now_ms).is_some());
        self.nonces
            .retain(|_, expires_at_ms| now_ms < *expires_at_ms);
        self.leases.retain(|_, e| e.live_at(now_ms).is_some());
    }

    fn profile(&self, player: PlayerId) -> Option<Profile> {
        let name = self.players.get(&player)?;
        Some(Profile {
            player,
            name: name.clone(),
            score: self.scores.get(&player).copied().unwrap_or(0),
        })
    }
}

/// A shard's inbox: a log of notices, the group's read position and its pending entries (as a
/// Redis stream with one consumer group).
struct Inbox {
    /// Entries by id (`(ms, n)`), oldest first; trimmed to [`INBOX_MAX_LEN`].
    entries: BTreeMap<(u64, u64), HandoffNotice>,
    /// The id of the newest entry ever added.
    last_id: (u64, u64),
    /// The id of the newest entry delivered to the group: new reads start after it.
    last_delivered: (u64, u64),
    /// Delivered and not acknowledged.
    pending: BTreeMap<(u64, u64), Pending>,
    /// Bumped on every send, to wake blocked readers.
    sent: watch::Sender<u64>,
}

/// A delivered, unacknowledged entry.
struct Pending {
    delivered_at_ms: u64,
    deliveries: u32,
}

impl Default for Inbox {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            last_id: (0, 0),
            last_delivered: (0, 0),
            pending: BTreeMap::new(),
            sent: watch::Sender::new(0),
        }
    }
}

impl Inbox {
    /// Appends a notice with the next id (`<now_ms>-0`, or one above the last id if the clock
    /// did not move on), trims the oldest entries and wakes readers.
    fn push(&mut self, now_ms: u64, notice: HandoffNotice) {
        let (last_ms, last_n) = self.last_id;
        let id = if now_ms > last_ms {
            (now_ms, 0)
        } else {
            (last_ms, last_n.saturating_add(1))
        };
        self.last_id = id;
        self.entries.insert(id, notice);
        while self.entries.len() > INBOX_MAX_LEN {
            if let Some((old, _)) = self.entries.pop_first() {
                self.pending.remove(&old);
            }
        }
        self.sent.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Delivers again, oldest first, entries pending for [`INBOX_REDELIVER_AFTER`] or longer.
    fn redeliver(&mut self, now_ms: u64, max: usize, out: &mut Vec<InboxEntry>) {
        let after_ms = ttl_ms(INBOX_REDELIVER_AFTER);
        for (id, pending) in &mut self.pending {
            if out.len() >= max {
                break;
            }
            if now_ms.saturating_sub(pending.delivered_at_ms) < after_ms {
                continue;
            }
            let Some(notice) = self.entries.get(id) else {
                continue;
            };
            pending.deliveries = pending.deliveries.saturating_add(1);
            pending.delivered_at_ms = now_ms;
            out.push(InboxEntry {
                id: entry_id(*id),
                notice: notice.clone(),
                deliveries: pending.deliveries,
            });
        }
    }

    /// Delivers entries never delivered, oldest first, until `out` holds `max`.
    fn deliver_new(&mut self, now_ms: u64, max: usize, out: &mut Vec<InboxEntry>) {
        let room = max.saturating_sub(out.len());
        let new: Vec<_> = self
            .entries
            .range((Bound::Excluded(self.last_delivered), Bound::Unbounded))
            .take(room)
            .map(|(id, notice)| (*id, notice.clone()))
            .collect();
        for (id, notice) in new {
            self.last_delivered = id;
            self.pending.insert(
                id,
                Pending {
                    delivered_at_ms: now_ms,
                    deliveries: 1,
                },
            );
            out.push(InboxEntry {
                id: entry_id(id),
                notice,
                deliveries: 1,
            });
        }
    }
}

/// A stream entry id as Redis writes it: `<ms>-<n>`.
fn entry_id((ms, n): (u64, u64)) -> String {
    format!("{ms}-{n}")
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("prefix", &self.inner.keys.prefix())
            .field("clock", &self.inner.clock)
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store on `clock`, with the default key prefix (used only in error messages).
    pub fn new(clock: impl Clock) -> Self {
        Self::build(clock, Keyspace::default())
    }

    /// An empty store on `clock` whose errors name keys under `cfg.prefix`.
    pub fn with_config(clock: impl Clock, cfg: &StoreConfig) -> Result<Self, StoreConfigError> {
        cfg.validate()?;
        Ok(Self::build(clock, cfg.keyspace()?))
    }

    fn build(clock: impl Clock, keys: Keyspace) -> Self {
        Self {
            inner: Arc::new(Inner {
                clock: Arc::new(clock),
                keys,
                state: Mutex::new(State::default()),
            }),
        }
    }

    fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // No operation panics while holding the lock, so a poisoned state is still consistent.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    async fn heartbeat_shard(&self, record: &ShardRecord, ttl: Duration) -> Result<(), StoreError> {
        let now_ms = self.now_ms();
        let mut state = self.state();
        state.shards.insert(
            record.id.clone(),
            Expiring {
                value: LiveShard {
                    record: record.clone(),
                    heartbeat_ms: now_ms,
                },
                expires_at_ms: now_ms.saturating_add(ttl_ms(ttl)),
            },
        );
        state.wrote(now_ms);
        Ok(())
    }

    async fn live_shards(&self) -> Result<Vec<LiveShard>, StoreError> {
        let now_ms = self.now_ms();
        let state = self.state();
        Ok(state
            .shards
            .values()
            .filter_map(|e| e.live_at(now_ms).cloned())
            .collect())
    }

    async fn deregister_shard(&self, shard: &ShardId) -> Result<(), StoreError> {
        let now_ms = self.now_ms();
        let mut state = self.state();
        state.shards.remove(shard);
        state.wrote(now_ms);
        Ok(())
    }

    async fn load_or_create_profile(&self, name: &str) -> Result<LoadedProfile, StoreError> {
        let now_ms = self.now_ms();
        let mut state = self.state();
        if let Some(&player) = state.names.get(name) {
            let profile = state.profile(player).ok_or_else(|| StoreError::Corrupt {
                key: self.inner.keys.player(player),
                detail: format!("name `{name}` maps to a player with no profile"),
            })?;
            return Ok(LoadedProfile {
                profile,
                created: false,
            });
        }
        state.last_player += 1;
        let player = PlayerId(state.last_player);
        state.names.insert(name.to_owned(), player);
        state.players.insert(player, name.to_owned());
        state.wrote(now_ms);
        Ok(LoadedProfile {
            profile: Profile {
                player,
                name: name.to_owned(),
                score: 0,
            },
            created: true,
        })
    }

    async fn load_profile(&self, player: PlayerId) -> Result<Profile, StoreError> {
        self.state()
            .profile(player)
            .ok_or_else(|| StoreError::NotFound {
                key: self.inner.keys.player(player),
            })
    }

    async fn add_score(&self, player: PlayerId, delta: i64) -> Result<u64, StoreError> {
        let now_ms = self.now_ms();
        let mut state = self.state();
        if !state.players.contains_key(&player) {
            return Err(StoreError::NotFound {
                key: self.inner.keys.player(player),
            });
        }
        let old = state.scores.get(&player).copied();
        let new = clamp_score(old.unwrap_or(0), delta);
        if let Some(old) = old {
            state.ranking.remove(&(old, player));
        }
        state.ranking.insert((new, player));
        state.scores.insert(player, new);
        state.wrote(now_ms);
        Ok(new)
    }

    async fn top_scores(&self, n: usize) -> Result<Vec<LeaderboardEntry>, StoreError> {
        let state = self.state();
        Ok(state
            .ranking
            .iter()
            .rev()
            .take(n.min(MAX_LEADERBOARD))
            .filter_map(|&(score, player)| {
                let name = state.players.get(&player)?.clone();
                Some(LeaderboardEntry {
                    player,
                    name,
                    score,
                })
            })
            .collect())
    }

    async fn put_session(
        &self,
        token: &SessionToken,
        session: &Session,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let now_ms = self.now_ms();
        let mut state = self.state();
        state.sessions.insert(
            token.clone(),
            Expiring {
                value: session.clone(),
                expires_at_ms: now_ms.saturating_add(ttl_ms(ttl)),
            },
        );
        state.wrote(now_ms);
        Ok(())
    }

    async fn get_session(&self, token: &SessionToken) -> Result<Option<Session>, StoreError> {
        let now_ms = self.now_ms();
        let state = self.state();
        Ok(state
            .sessions
            .get(token)
            .and_then(|e| e.live_at(now_ms).cloned()))
    }

    async fn delete_session(&self, token: &SessionToken) -> Result<(), StoreError> {
        let now_ms = self.now_ms();
        let mut state = self.state();
        state.sessions.remove(token);
        state.wrote(now_ms);
        Ok(())
    }

    async fn use_nonce(&self, nonce: u64, ttl: Duration) -> Result<bool, StoreError> {
        let now_ms = self.now_ms();
        let mut state = self.state();
        if state.nonces.get(&nonce).is_some_and(|&exp| now_ms < exp) {
            return Ok(false);
        }
        state
            .nonces
            .insert(nonce, now_ms.saturating_add(ttl_ms(ttl)));
        state.wrote(now_ms);
        Ok(true)
    }

    async fn acquire_lease(
        &self,
        zone: &ZoneId,
        shard: &ShardId,
        ttl: Duration,
    ) -> Result<AcquireOutcome, StoreError> {
        let key = self.inner.keys.lease(zone);
        check_zone(&key, zone)?;
        check_shard(&key, shard)?;
        let now_ms = self.now_ms();
        let mut state = self.state();
        if let Some(held) = state.leases.get(zone).and_then(|e| e.live_at(now_ms))
            && &held.owner != shard
        {
            return Ok(AcquireOutcome::Held(held.clone()));
        }
        let counter = state.lease_epochs.entry(zone.clone()).or_insert(0);
        *counter = counter.saturating_add(1);
        let lease = Lease {
            zone: zone.clone(),
            owner: shard.clone(),
            epoch: *counter,
        };
        state.leases.insert(
            zone.clone(),
            Expiring {
                value: lease.clone(),
                expires_at_ms: now_ms.saturating_add(lease_ttl_ms(ttl)),
            },
        );
        state.wrote(now_ms);
        Ok(AcquireOutcome::Acquired(lease))
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        let key = self.inner.keys.lease(&lease.zone);
        check_zone(&key, &lease.zone)?;
        let now_ms = self.now_ms();
        let mut state = self.state();
        let Some(held) = state.leases.get_mut(&lease.zone) else {
            return Ok(false);
        };
        if held.live_at(now_ms) != Some(lease) {
            return Ok(false);
        }
        held.expires_at_ms = now_ms.saturating_add(lease_ttl_ms(ttl));
        state.wrote(now_ms);
        Ok(true)
    }

    async fn release_lease(&self, lease: &Lease) -> Result<bool, StoreError> {
        let key = self.inner.keys.lease(&lease.zone);
        check_zone(&key, &lease.zone)?;
        let now_ms = self.now_ms();
        let mut state = self.state();
        let held = state
            .leases
            .get(&lease.zone)
            .is_some_and(|e| e.live_at(now_ms) == Some(lease));
        if held {
            state.leases.remove(&lease.zone);
            state.wrote(now_ms);
        }
        Ok(held)
    }

    async fn get_lease(&self, zone: &ZoneId) -> Result<Option<Lease>, StoreError> {
        check_zone(&self.inner.keys.lease(zone), zone)?;
        let now_ms = self.now_ms();
        let state = self.state();
        Ok(state
            .leases
            .get(zone)
            .and_then(|e| e.live_at(now_ms).cloned()))
    }

    async fn claim_player(
        &self,
        player: PlayerId,
        lease: &Lease,
    ) -> Result<ClaimOutcome, StoreError> {
        check_lease(&self.inner.keys.player(player), lease)?;
        let now_ms = self.now_ms();
        let mut state = self.state();
        let record = state
            .owners
            .entry(player)
            .or_insert_with(|| never_owned(player));
        if record.zone.as_ref() == Some(&lease.zone) && record.epoch > lease.epoch {
            return Ok(ClaimOutcome::Stale {
                epoch: record.epoch,
            });
        }
        record.owner = Some(lease.owner.clone());
        record.zone = Some(lease.zone.clone());
        record.epoch = lease.epoch;
        record.seq = record.seq.saturating_add(1);
        record.from = None;
        let claimed = ClaimOutcome::Claimed {
            seq: record.seq,
            state: record.state,
        };
        state.wrote(now_ms);
        Ok(claimed)
    }

    async fn transfer_player(
        &self,
        player: PlayerId,
        from: &Lease,
        to: &ShardId,
        to_zone: &ZoneId,
        player_state: &PlayerState,
    ) -> Result<TransferOutcome, StoreError> {
        let key = self.inner.keys.player(player);
        check_lease(&key, from)?;
        check_shard(&key, to)?;
        check_zone(&key, to_zone)?;
        check_state(&key, player_state)?;
        let now_ms = self.now_ms();
        let mut state = self.state();
        let Some(record) = state.owners.get_mut(&player).filter(|r| fenced(r, from)) else {
            return Ok(TransferOutcome::NotOwner(
                state.owners.get(&player).filter(|r| ever_owned(r)).cloned(),
            ));
        };
        record.owner = Some(to.clone());
        record.zone = Some(to_zone.clone());
        record.epoch = 0;
        record.from = Some(from.owner.clone());
        record.state = Some(*player_state);
        record.seq = record.seq.saturating_add(1);
        let seq = record.seq;
        state.wrote(now_ms);
        Ok(TransferOutcome::Transferred { seq })
    }

    async fn accept_player(
        &self,
        player: PlayerId,
        lease: &Lease,
        seq: Option<u64>,
    ) -> Result<AcceptOutcome, StoreError> {
        check_lease(&self.inner.keys.player(player), lease)?;
        let now_ms = self.now_ms();
        let mut state = self.state();
        let offered = |r: &Ownership| {
            r.owner.as_ref() == Some(&lease.owner)
                && r.zone.as_ref() == Some(&lease.zone)
                && seq.is_none_or(|seq| seq == r.seq)
        };
        let Some(record) = state.owners.get_mut(&player).filter(|r| offered(r)) else {
            return Ok(AcceptOutcome::NotOffered(
                state.owners.get(&player).filter(|r| ever_owned(r)).cloned(),
            ));
        };
        record.epoch = record.epoch.max(lease.epoch);
        record.from = None;
        let accepted = AcceptOutcome::Accepted {
            seq: record.seq,
            state: record.state,
        };
        state.wrote(now_ms);
        Ok(accepted)
    }

    async fn checkpoint_players(
        &self,
        lease: &Lease,
        states: &[(PlayerId, PlayerState)],
    ) -> Result<Vec<bool>, StoreError> {
        check_lease(&self.inner.keys.lease(&lease.zone), lease)?;
        for (player, player_state) in states {
            check_state(&self.inner.keys.player(*player), player_state)?;
        }
        let now_ms = self.now_ms();
        let mut state = self.state();
        let written = states
            .iter()
            .map(|(player, player_state)| {
                match state.owners.get_mut(player).filter(|r| fenced(r, lease)) {
                    Some(record) => {
                        record.state = Some(*player_state);
                        true
                    }
                    None => false,
                }
            })
            .collect();
        state.wrote(now_ms);
        Ok(written)
    }

    async fn release_player(
        &self,
        player: PlayerId,
        lease: &Lease,
        player_state: Option<&PlayerState>,
    ) -> Result<bool, StoreError> {
        let key = self.inner.keys.player(player);
        check_lease(&key, lease)?;
        if let Some(player_state) = player_state {
            check_state(&key, player_state)?;
        }
        let now_ms = self.now_ms();
        let mut state = self.state();
        let Some(record) = state.owners.get_mut(&player).filter(|r| fenced(r, lease)) else {
            return Ok(false);
        };
        record.owner = None;
        record.from = None;
        if let Some(player_state) = player_state {
            record.state = Some(*player_state);
        }
        record.seq = record.seq.saturating_add(1);
        state.wrote(now_ms);
        Ok(true)
    }

    async fn get_ownership(&self, player: PlayerId) -> Result<Option<Ownership>, StoreError> {
        Ok(self
            .state()
            .owners
            .get(&player)
            .filter(|r| ever_owned(r))
            .cloned())
    }

    async fn owned_players(&self) -> Result<Vec<Ownership>, StoreError> {
        let state = self.state();
        let mut owned: Vec<Ownership> = state
            .owners
            .values()
            .filter(|r| r.owner.is_some())
            .cloned()
            .collect();
        owned.sort_by_key(|r| r.player);
        Ok(owned)
    }

    async fn send_handoff(&self, to: &ShardId, notice: &HandoffNotice) -> Result<(), StoreError> {
        let key = self.inner.keys.inbox(to);
        check_shard(&key, to)?;
        check_notice(&key, notice)?;
        let now_ms = self.now_ms();
        let mut state = self.state();
        state
            .inboxes
            .entry(to.clone())
            .or_default()
            .push(now_ms, notice.clone());
        state.wrote(now_ms);
        Ok(())
    }

    async fn read_inbox(
        &self,
        shard: &ShardId,
        max: usize,
        block: Duration,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        check_shard(&self.inner.keys.inbox(shard), shard)?;
        let max = max.min(INBOX_MAX_LEN);
        if max == 0 {
            return Ok(Vec::new());
        }
        let block = block.min(MAX_INBOX_BLOCK);
        let deadline = tokio::time::Instant::now() + block;
        let mut first = true;
        loop {
            let mut changed = {
                let now_ms = self.now_ms();
                let mut state = self.state();
                let inbox = state.inboxes.entry(shard.clone()).or_default();
                let mut entries = Vec::new();
                if first {
                    inbox.redeliver(now_ms, max, &mut entries);
                    first = false;
                }
                inbox.deliver_new(now_ms, max, &mut entries);
                // Marks the current version seen while the lock is held: a notice sent after
                // this point wakes the wait below.
                let mut changed = inbox.sent.subscribe();
                changed.borrow_and_update();
                if !entries.is_empty() {
                    state.wrote(now_ms);
                    return Ok(entries);
                }
                changed
            };
            if block.is_zero()
                || tokio::time::timeout_at(deadline, changed.changed())
                    .await
                    .is_err()
            {
                return Ok(Vec::new());
            }
        }
    }

    async fn ack_inbox(&self, shard: &ShardId, ids: &[String]) -> Result<(), StoreError> {
        let key = self.inner.keys.inbox(shard);
        check_shard(&key, shard)?;
        let ids = ids
            .iter()
            .map(|id| parse_entry_id(&key, id))
            .collect::<Result<Vec<_>, _>>()?;
        let now_ms = self.now_ms();
        let mut state = self.state();
        if let Some(inbox) = state.inboxes.get_mut(shard) {
            for id in ids {
                inbox.pending.remove(&id);
                inbox.entries.remove(&id);
            }
            state.wrote(now_ms);
        }
        Ok(())
    }

    async fn publish_ghosts(&self, zone: &ZoneId, batch: &[u8]) -> Result<(), StoreError> {
        check_zone(&self.inner.keys.ghosts(zone), zone)?;
        let mut state = self.state();
        let Some(subscribers) = state.ghosts.get_mut(zone) else {
            return Ok(());
        };
        subscribers.retain(|tx| match tx.try_send(batch.to_vec()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                tracing::debug!(%zone, "ghost subscriber is behind: batch dropped");
                true
            }
            Err(TrySendError::Closed(_)) => false,
        });
        if subscribers.is_empty() {
            state.ghosts.remove(zone);
        }
        Ok(())
    }

    async fn subscribe_ghosts(&self, zone: &ZoneId) -> Result<mpsc::Receiver<Vec<u8>>, StoreError> {
        check_zone(&self.inner.keys.ghosts(zone), zone)?;
        let (tx, rx) = mpsc::channel(GHOST_BUFFER);
        let mut state = self.state();
        let subscribers = state.ghosts.entry(zone.clone()).or_default();
        subscribers.retain(|tx| !tx.is_closed());
        subscribers.push(tx);
        Ok(rx)
    }
}

/// An ownership record with no field set (reads as "never owned").
fn never_owned(player: PlayerId) -> Ownership {
    Ownership {
        player,
        owner: None,
        zone: None,
        epoch: 0,
        seq: 0,
        from: None,
        state: None,
    }
}

/// Whether a record was ever written by an ownership operation (the Redis adapter: the hash has
/// an `owner` or a `seq`).
fn ever_owned(record: &Ownership) -> bool {
    record.owner.is_some() || record.seq > 0
}

/// The fence of transfers, checkpoints and releases: owned by `lease.owner` in `lease.zone`,
/// accepted (epoch not 0) under an epoch not above the lease's.
fn fenced(record: &Ownership, lease: &Lease) -> bool {
    record.owner.as_ref() == Some(&lease.owner)
        && record.zone.as_ref() == Some(&lease.zone)
        && record.epoch != 0
        && record.epoch <= lease.epoch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[tokio::test]
    async fn expired_entries_are_swept_from_memory() {
        let clock = ManualClock::new(1_000);
        let store = MemoryStore::new(clock.clone());
        for nonce in 0..100 {
            assert!(
                store
                    .use_nonce(nonce, Duration::from_millis(10))
                    .await
                    .expect("memory")
            );
        }
        clock.advance(Duration::from_millis(10));
        for nonce in 1_000..1_000 + u64::from(SWEEP_EVERY) {
            assert!(
                store
                    .use_nonce(nonce, Duration::from_secs(60))
                    .await
                    .expect("memory")
            );
        }
        let state = store.state();
        assert!(
            state.nonces.len() <= SWEEP_EVERY as usize,
            "{} nonces kept",
            state.nonces.len()
        );
        assert!(!state.nonces.contains_key(&0));
    }

    #[tokio::test]
    async fn dropped_ghost_receivers_are_forgotten() {
        let store = MemoryStore::new(ManualClock::new(0));
        let west = ZoneId::new("west").expect("valid");
        let kept = store.subscribe_ghosts(&west).await.expect("subscribe");
        let dropped = store.subscribe_ghosts(&west).await.expect("subscribe");
        assert_eq!(store.state().ghosts[&west].len(), 2);
        drop(dropped);
        store.publish_ghosts(&west, b"x").await.expect("publish");
        assert_eq!(store.state().ghosts[&west].len(), 1);
        drop(kept);
        store.publish_ghosts(&west, b"y").await.expect("publish");
        assert!(
            !store.state().ghosts.contains_key(&west),
            "no subscriber left"
        );
    }

    fn notice(seq: u64) -> HandoffNotice {
        HandoffNotice {
            player: PlayerId(1),
            seq,
            from: ShardId::new("a-1").expect("valid"),
            from_zone: ZoneId::new("west").expect("valid"),
            to_zone: ZoneId::new("east").expect("valid"),
            state: PlayerState {
                pos: [0.0, 0.0],
                vel: [0.0, 0.0],
                score: 0,
                last_input: 0,
            },
        }
    }

    #[tokio::test]
    async fn inboxes_are_trimmed_to_their_maximum_length() {
        let clock = ManualClock::new(1_000);
        let store = MemoryStore::new(clock.clone());
        let b = ShardId::new("b-1").expect("valid");
        store.send_handoff(&b, &notice(0)).await.expect("send");
        let first = store.read_inbox(&b, 1, Duration::ZERO).await.expect("read");
        assert_eq!(first[0].id, "1000-0");
        for seq in 1..=INBOX_MAX_LEN as u64 {
            store.send_handoff(&b, &notice(seq)).await.expect("send");
        }
        {
            let state = store.state();
            let inbox = &state.inboxes[&b];
            assert_eq!(inbox.entries.len(), INBOX_MAX_LEN);
            assert!(
                inbox.pending.is_empty(),
                "the trimmed entry is no longer pending"
            );
        }
        // Ids keep increasing while the clock stands still.
        let next = store.read_inbox(&b, 2, Duration::ZERO).await.expect("read");
        let ids: Vec<&str> = next.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["1000-1", "1000-2"]);
        clock.advance(INBOX_REDELIVER_AFTER);
        let again = store
            .read_inbox(&b, 10, Duration::ZERO)
            .await
            .expect("read");
        assert_eq!(again.len(), 10);
        assert_eq!(again[0].deliveries, 2, "the two pending first");
        assert_eq!(again[2].deliveries, 1, "then new ones");
    }

    #[tokio::test]
    async fn errors_name_keys_under_the_configured_prefix() {
        let cfg = StoreConfig {
            prefix: "test:".into(),
            ..StoreConfig::default()
        };
        let store = MemoryStore::with_config(ManualClock::new(0), &cfg).expect("valid");
        let err = store.load_profile(PlayerId(7)).await.expect_err("absent");
        assert_eq!(
            err,
            StoreError::NotFound {
                key: "test:{p:7}".into()
            }
        );
    }
}
