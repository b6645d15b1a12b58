//! [`MemoryStore`]: the in-process adapter of the [`Store`] port, for `meridian dev` (one
//! process, no Redis) and unit tests of other crates.
//!
//! Same semantics as Redis, TTLs included: expiry is judged by an injected [`Clock`]
//! ([`SystemClock`](crate::clock::SystemClock) in dev, [`ManualClock`](crate::clock::ManualClock)
//! in tests). Expired entries read as absent at once and are swept from memory every
//! [`SWEEP_EVERY`] writes. One mutex guards the state, never held across an `.await`, so every
//! operation is atomic.

use crate::clock::Clock;
use crate::error::{StoreConfigError, StoreError};
use crate::keyspace::Keyspace;
use crate::ownership::{
    AcceptOutcome, AcquireOutcome, ClaimOutcome, HandoffNotice, InboxEntry, Lease, Ownership,
    PlayerState, TransferOutcome,
};
use crate::store::{
    LeaderboardEntry, LiveShard, LoadedProfile, MAX_LEADERBOARD, Profile, Session, SessionToken,
    ShardRecord, Store, StoreConfig, clamp_score, ttl_ms,
};
use meridian_protocol::{PlayerId, ShardId, ZoneId};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

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

    // SCAFFOLD: the ownership operations below are being implemented; until then they fail.
    async fn acquire_lease(
        &self,
        zone: &ZoneId,
        _shard: &ShardId,
        _ttl: Duration,
    ) -> Result<AcquireOutcome, StoreError> {
        Err(scaffold(zone.as_str()))
    }
    async fn renew_lease(&self, lease: &Lease, _ttl: Duration) -> Result<bool, StoreError> {
        Err(scaffold(lease.zone.as_str()))
    }
    async fn release_lease(&self, lease: &Lease) -> Result<bool, StoreError> {
        Err(scaffold(lease.zone.as_str()))
    }
    async fn get_lease(&self, zone: &ZoneId) -> Result<Option<Lease>, StoreError> {
        Err(scaffold(zone.as_str()))
    }
    async fn claim_player(
        &self,
        _player: PlayerId,
        lease: &Lease,
    ) -> Result<ClaimOutcome, StoreError> {
        Err(scaffold(lease.zone.as_str()))
    }
    async fn transfer_player(
        &self,
        _player: PlayerId,
        from: &Lease,
        _to: &ShardId,
        _to_zone: &ZoneId,
        _state: &PlayerState,
    ) -> Result<TransferOutcome, StoreError> {
        Err(scaffold(from.zone.as_str()))
    }
    async fn accept_player(
        &self,
        _player: PlayerId,
        lease: &Lease,
        _seq: Option<u64>,
    ) -> Result<AcceptOutcome, StoreError> {
        Err(scaffold(lease.zone.as_str()))
    }
    async fn checkpoint_players(
        &self,
        lease: &Lease,
        _states: &[(PlayerId, PlayerState)],
    ) -> Result<Vec<bool>, StoreError> {
        Err(scaffold(lease.zone.as_str()))
    }
    async fn release_player(
        &self,
        _player: PlayerId,
        lease: &Lease,
        _state: Option<&PlayerState>,
    ) -> Result<bool, StoreError> {
        Err(scaffold(lease.zone.as_str()))
    }
    async fn get_ownership(&self, _player: PlayerId) -> Result<Option<Ownership>, StoreError> {
        Err(scaffold("player"))
    }
    async fn owned_players(&self) -> Result<Vec<Ownership>, StoreError> {
        Err(scaffold("players"))
    }
    async fn send_handoff(&self, to: &ShardId, _notice: &HandoffNotice) -> Result<(), StoreError> {
        Err(scaffold(to.as_str()))
    }
    async fn read_inbox(
        &self,
        shard: &ShardId,
        _max: usize,
        _block: Duration,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        Err(scaffold(shard.as_str()))
    }
    async fn ack_inbox(&self, shard: &ShardId, _ids: &[String]) -> Result<(), StoreError> {
        Err(scaffold(shard.as_str()))
    }
    async fn publish_ghosts(&self, zone: &ZoneId, _batch: &[u8]) -> Result<(), StoreError> {
        Err(scaffold(zone.as_str()))
    }
    async fn subscribe_ghosts(
        &self,
        zone: &ZoneId,
    ) -> Result<tokio::sync::mpsc::Receiver<Vec<u8>>, StoreError> {
        Err(scaffold(zone.as_str()))
    }
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

// SCAFFOLD: removed once the ownership operations are implemented.
fn scaffold(key: &str) -> StoreError {
    StoreError::Unavailable {
        key: key.to_owned(),
        detail: "not implemented yet".to_owned(),
    }
}
