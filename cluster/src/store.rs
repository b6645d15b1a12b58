//! The [`Store`] port: every operation on shared state, with the semantics both adapters keep
//! (checked by one conformance suite, `cluster/tests/conformance.rs`), the records it reads and
//! writes, its [`StoreConfig`], and [`StoreHandle`], the cheaply cloneable handle that callers
//! hold and that picks its adapter at run time from a URL.
//!
//! Adapters: [`MemoryStore`] (one process: `meridian dev`, unit tests) and [`RedisStore`]
//! (production). Callers (lobby, shards, `meridian dev`) hold a [`StoreHandle`]; code that
//! must work with either can also be generic over [`Store`].

use crate::clock::SystemClock;
use crate::config::check_redis_url;
use crate::error::{StoreConfigError, StoreError};
use crate::keyspace::{DEFAULT_PREFIX, Keyspace, check_prefix};
use crate::memory::MemoryStore;
use crate::ownership::{
    AcceptOutcome, AcquireOutcome, ClaimOutcome, HandoffNotice, InboxEntry, Lease, Ownership,
    PlayerState, TransferOutcome,
};
use crate::redis_store::RedisStore;
use meridian_protocol::{PlayerId, ShardId, ZoneId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::future::Future;
use std::time::Duration;

/// The store URL that selects the in-memory adapter.
pub const MEMORY_URL: &str = "memory";

/// Highest score a player can reach: 2^53 - 1, the largest integer a Redis sorted-set score (a
/// double) holds exactly. [`Store::add_score`] saturates there.
pub const MAX_SCORE: u64 = (1 << 53) - 1;

/// Most entries [`Store::top_scores`] returns, whatever is asked.
pub const MAX_LEADERBOARD: usize = 1000;

/// Longest [`SessionToken`], bytes.
pub const MAX_SESSION_TOKEN_LEN: usize = 128;

/// A shard's inbox stream is trimmed to about this many entries.
pub const INBOX_MAX_LEN: usize = 10_000;

/// A notice delivered and not acknowledged for this long is delivered again.
pub const INBOX_REDELIVER_AFTER: Duration = Duration::from_secs(2);

/// Default [`StoreConfig::op_timeout_ms`].
pub const DEFAULT_OP_TIMEOUT_MS: u64 = 500;

/// Largest accepted [`StoreConfig::op_timeout_ms`]: one minute.
pub const MAX_OP_TIMEOUT_MS: u64 = 60_000;

/// What a shard publishes about itself in the registry, on every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// The shard.
    pub id: ShardId,
    /// The zone it simulates.
    pub zone: ZoneId,
    /// The region (datacenter) it runs in, e.g. `eu-west`.
    pub region: String,
    /// The QUIC address clients connect to (`host:port`).
    pub addr: String,
    /// SHA-256 of its TLS certificate, which clients pin.
    pub cert_sha256: [u8; 32],
    /// Most players it admits.
    pub capacity: u32,
    /// Players it holds now.
    pub load: u32,
    /// It is shutting down: admit no one new.
    pub draining: bool,
    /// Its admin HTTP address (`host:port`: players it simulates, status), if it serves one.
    #[serde(default)]
    pub admin_addr: Option<String>,
}

/// A shard whose heartbeat is within its TTL, as listed by [`Store::live_shards`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveShard {
    /// What the shard published.
    pub record: ShardRecord,
    /// When it last heartbeated, milliseconds since the Unix epoch, by the clock of the
    /// heartbeating process (informational: expiry is judged by the store).
    pub heartbeat_ms: u64,
}

/// A player's persistent profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// The player's id, allocated on the first visit.
    pub player: PlayerId,
    /// The name the player chose; one name, one id.
    pub name: String,
    /// Total score, `0..=`[`MAX_SCORE`].
    pub score: u64,
}

/// The answer of [`Store::load_or_create_profile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedProfile {
    /// The profile.
    pub profile: Profile,
    /// This call created it (first visit of the name).
    pub created: bool,
}

/// One row of the leaderboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderboardEntry {
    /// The player.
    pub player: PlayerId,
    /// The player's name.
    pub name: String,
    /// The player's score.
    pub score: u64,
}

/// What a resume token stands for: enough for the lobby to send a returning client back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The player the token resumes.
    pub player: PlayerId,
    /// The zone the player was in, if known.
    #[serde(default)]
    pub zone: Option<ZoneId>,
}

/// A resume token: 1 to [`MAX_SESSION_TOKEN_LEN`] bytes of ASCII letters, digits, `-`, `_`
/// and `.` (hex or URL-safe base64). Tokens arrive from clients, so they are checked before
/// they become part of a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionToken(String);

/// Why a session token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionTokenError {
    /// Empty or longer than [`MAX_SESSION_TOKEN_LEN`] bytes.
    #[error("session token is {len} bytes long; expected 1 to {MAX_SESSION_TOKEN_LEN}")]
    BadLength {
        /// Its length in bytes.
        len: usize,
    },
    /// Holds a byte other than ASCII letters, digits, `-`, `_` and `.` (the token itself is not
    /// shown: it is a secret).
    #[error("session token holds a character other than [A-Za-z0-9._-] at byte {position}")]
    BadChar {
        /// Index of the first bad byte.
        position: usize,
    },
}

impl SessionToken {
    /// Checks and wraps a token.
    pub fn new(token: impl Into<String>) -> Result<Self, SessionTokenError> {
        let token = token.into();
        if token.is_empty() || token.len() > MAX_SESSION_TOKEN_LEN {
            return Err(SessionTokenError::BadLength { len: token.len() });
        }
        if let Some(position) = token
            .bytes()
            .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
        {
            return Err(SessionTokenError::BadChar { position });
        }
        Ok(Self(token))
    }

    /// The token as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Settings of a store, shared by both adapters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Prefix of every key (default `mer:`), so several deployments can share one Redis.
    pub prefix: String,
    /// Longest one operation may take, milliseconds, connecting included (default 500). A
    /// slower operation fails with [`StoreError::Timeout`].
    pub op_timeout_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
            op_timeout_ms: DEFAULT_OP_TIMEOUT_MS,
        }
    }
}

impl StoreConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), StoreConfigError> {
        check_prefix(&self.prefix)?;
        if !(1..=MAX_OP_TIMEOUT_MS).contains(&self.op_timeout_ms) {
            return Err(StoreConfigError::BadTimeout {
                value: self.op_timeout_ms,
                max: MAX_OP_TIMEOUT_MS,
            });
        }
        Ok(())
    }

    /// The keyspace under [`StoreConfig::prefix`].
    pub fn keyspace(&self) -> Result<Keyspace, StoreConfigError> {
        Keyspace::new(&self.prefix)
    }

    /// [`StoreConfig::op_timeout_ms`] as a duration.
    pub fn op_timeout(&self) -> Duration {
        Duration::from_millis(self.op_timeout_ms)
    }
}

/// Checks a store URL without connecting: [`MEMORY_URL`], a Redis URL, or a Redis Cluster's node
/// URLs separated by commas (the error names the bad element; see
/// [`check_redis_url`]).
pub fn check_store_url(url: &str) -> Result<(), StoreConfigError> {
    if url == MEMORY_URL {
        return Ok(());
    }
    check_redis_url(url)?;
    Ok(())
}

/// The port: every operation on shared state. Both adapters implement it with the same
/// semantics; [`StoreHandle`] dispatches to the one chosen at run time.
///
/// Every operation is bounded in time (the adapter's timeout) and names the key it failed on.
/// TTLs shorter than 1 ms count as 1 ms. Later issues add zone leases, fenced transfers and
/// inbox streams here.
pub trait Store: Clone + Send + Sync + 'static {
    /// Registers a shard or refreshes its record (upsert), stamped with the current time. The
    /// record stays live for `ttl` after this call unless heartbeated again.
    fn heartbeat_shard(
        &self,
        record: &ShardRecord,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The shards whose last heartbeat is within its TTL, ordered by shard id.
    fn live_shards(&self) -> impl Future<Output = Result<Vec<LiveShard>, StoreError>> + Send;

    /// Removes a shard from the registry at once (on graceful shutdown). Removing an unknown
    /// shard is not an error.
    fn deregister_shard(
        &self,
        shard: &ShardId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The profile of `name`, created on the first visit with a new unique id and score 0.
    /// Concurrent calls with the same name all get the same id, and exactly one of them reports
    /// `created`. Ids are unique, not dense.
    fn load_or_create_profile(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<LoadedProfile, StoreError>> + Send;

    /// The profile of `player`; [`StoreError::NotFound`] if no such player was created.
    fn load_profile(
        &self,
        player: PlayerId,
    ) -> impl Future<Output = Result<Profile, StoreError>> + Send;

    /// Adds `delta` (which may be negative) to the player's score atomically and returns the new
    /// total, kept within `0..=`[`MAX_SCORE`]. [`StoreError::NotFound`] for an unknown player.
    /// A player enters the leaderboard on the first call.
    fn add_score(
        &self,
        player: PlayerId,
        delta: i64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The `n` best scores (at most [`MAX_LEADERBOARD`]), highest first; ties by the higher
    /// player id first.
    fn top_scores(
        &self,
        n: usize,
    ) -> impl Future<Output = Result<Vec<LeaderboardEntry>, StoreError>> + Send;

    /// Stores (or replaces) a resume session for `ttl`.
    fn put_session(
        &self,
        token: &SessionToken,
        session: &Session,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The session of `token`, or `None` if it was never stored, was deleted or expired.
    fn get_session(
        &self,
        token: &SessionToken,
    ) -> impl Future<Output = Result<Option<Session>, StoreError>> + Send;

    /// Deletes a session; deleting an absent one is not an error.
    fn delete_session(
        &self,
        token: &SessionToken,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Marks a ticket nonce used: `true` the first time, `false` if it was used within the last
    /// `ttl` (then the ticket is a replay). Atomic: of concurrent calls, exactly one wins.
    fn use_nonce(
        &self,
        nonce: u64,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    // ---- Zone leases (`mer:{z:<zone>}:lease`, epoch counter `mer:{z:<zone>}:epoch`) ----

    /// Takes the zone's lease for `ttl` if it is free (absent or expired) or already held by
    /// `shard` (a restarted shard of the same id); either way with a new epoch, one above every
    /// epoch the zone ever had. Otherwise reports who holds it.
    fn acquire_lease(
        &self,
        zone: &ZoneId,
        shard: &ShardId,
        ttl: Duration,
    ) -> impl Future<Output = Result<AcquireOutcome, StoreError>> + Send;

    /// Extends `lease` by `ttl` if it is still held by its owner at its epoch: `true`; `false`
    /// if it was lost (expired, taken by another shard, or re-acquired with another epoch).
    fn renew_lease(
        &self,
        lease: &Lease,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Gives the lease up if still held at its epoch (`true`); the epoch counter stays.
    fn release_lease(&self, lease: &Lease)
    -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The zone's current lease, if held and unexpired.
    fn get_lease(
        &self,
        zone: &ZoneId,
    ) -> impl Future<Output = Result<Option<Lease>, StoreError>> + Send;

    // ---- Fenced player ownership (fields of `mer:{p:<id>}`) ----

    /// Makes `lease.owner` the player's owner in `lease.zone` at `lease.epoch` (a join: the
    /// newest session wins), bumping the transfer sequence. Refused ([`ClaimOutcome::Stale`],
    /// nothing written) if the record names the same zone under a higher epoch.
    fn claim_player(
        &self,
        player: PlayerId,
        lease: &Lease,
    ) -> impl Future<Output = Result<ClaimOutcome, StoreError>> + Send;

    /// One atomic step: if the player is owned by `from.owner` in `from.zone` under an epoch
    /// `<= from.epoch`, the owner becomes `to` in `to_zone` with epoch 0 (until `to` accepts),
    /// `from` is recorded, `state` is written and the sequence bumped. Otherwise nothing is
    /// written and the record is returned.
    fn transfer_player(
        &self,
        player: PlayerId,
        from: &Lease,
        to: &ShardId,
        to_zone: &ZoneId,
        state: &PlayerState,
    ) -> impl Future<Output = Result<TransferOutcome, StoreError>> + Send;

    /// The new owner takes a transferred player: if the record names `lease.owner` in
    /// `lease.zone` (and, with `seq`, at that sequence), its epoch becomes `lease.epoch` and
    /// `from` is cleared; returns the state written by the transfer. Repeating an accept is
    /// harmless (same answer). Otherwise nothing is written.
    fn accept_player(
        &self,
        player: PlayerId,
        lease: &Lease,
        seq: Option<u64>,
    ) -> impl Future<Output = Result<AcceptOutcome, StoreError>> + Send;

    /// Saves players' states, each fenced like a transfer (owner `lease.owner`, zone
    /// `lease.zone`, epoch `<= lease.epoch`), pipelined. One answer per player, in order:
    /// `true` if written.
    fn checkpoint_players(
        &self,
        lease: &Lease,
        states: &[(PlayerId, PlayerState)],
    ) -> impl Future<Output = Result<Vec<bool>, StoreError>> + Send;

    /// The player left: fenced like a checkpoint, clears the owner, writes `state` if given and
    /// bumps the sequence. `true` if released, `false` if not the owner (nothing written).
    fn release_player(
        &self,
        player: PlayerId,
        lease: &Lease,
        state: Option<&PlayerState>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The player's ownership record; `None` if it never had an owner.
    fn get_ownership(
        &self,
        player: PlayerId,
    ) -> impl Future<Output = Result<Option<Ownership>, StoreError>> + Send;

    /// Every player record that has an owner now (a scan: for audits, not the hot path),
    /// ordered by player id.
    fn owned_players(&self) -> impl Future<Output = Result<Vec<Ownership>, StoreError>> + Send;

    // ---- Handoff inboxes (stream `mer:{s:<shard>}:inbox`, consumer group per shard) ----

    /// Appends a notice to shard `to`'s inbox (trimmed to about [`INBOX_MAX_LEN`] entries).
    fn send_handoff(
        &self,
        to: &ShardId,
        notice: &HandoffNotice,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Up to `max` notices for `shard`: first its own entries delivered before and not
    /// acknowledged within [`INBOX_REDELIVER_AFTER`] (re-delivered, `deliveries` > 1), then new
    /// ones, waiting up to `block` for one if there are none. Does not stall the handle's other
    /// operations while it waits.
    fn read_inbox(
        &self,
        shard: &ShardId,
        max: usize,
        block: Duration,
    ) -> impl Future<Output = Result<Vec<InboxEntry>, StoreError>> + Send;

    /// Acknowledges handled notices; acknowledged entries are never delivered again.
    fn ack_inbox(
        &self,
        shard: &ShardId,
        ids: &[String],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    // ---- Border ghosts (pub/sub channel `mer:{z:<zone>}:ghosts`) ----

    /// Publishes one batch of ghost data for the shard of `zone` (fire and forget: no
    /// subscriber, no delivery).
    fn publish_ghosts(
        &self,
        zone: &ZoneId,
        batch: &[u8],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Subscribes to the ghost batches published for `zone`. The receiver yields batches in
    /// publication order; a background task keeps the subscription (re-subscribing after a
    /// lost connection, batches published meanwhile are lost) until the receiver is dropped.
    fn subscribe_ghosts(
        &self,
        zone: &ZoneId,
    ) -> impl Future<Output = Result<tokio::sync::mpsc::Receiver<Vec<u8>>, StoreError>> + Send;
}

/// The handle callers hold: either adapter, chosen at run time by [`StoreHandle::open`].
///
/// Cloning is cheap (an `Arc` inside either variant) and clones share the same store, so hand
/// one clone to each task. An enum rather than a trait object: the operations are `async`, the
/// set of adapters is closed, and callers need no generics or boxing.
#[derive(Clone)]
pub enum StoreHandle {
    /// The in-process store.
    Memory(MemoryStore),
    /// A Redis server or cluster.
    Redis(RedisStore),
}

impl fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory(store) => store.fmt(f),
            Self::Redis(store) => store.fmt(f),
        }
    }
}

impl From<MemoryStore> for StoreHandle {
    fn from(store: MemoryStore) -> Self {
        Self::Memory(store)
    }
}

impl From<RedisStore> for StoreHandle {
    fn from(store: RedisStore) -> Self {
        Self::Redis(store)
    }
}

impl StoreHandle {
    /// Opens the store named by `url`: [`MEMORY_URL`] (`memory`) for a fresh in-process store on
    /// the wall clock, a `redis://` / `rediss://` / `unix://` URL, or a Redis Cluster's node URLs
    /// separated by commas (`redis://h1:7000,redis://h2:7001`), connected and checked with a
    /// PING within [`StoreConfig::op_timeout_ms`] (see [`RedisStore::connect`]).
    pub async fn open(url: &str, cfg: &StoreConfig) -> Result<Self, StoreError> {
        cfg.validate()?;
        check_store_url(url)?;
        if url == MEMORY_URL {
            return Ok(Self::Memory(MemoryStore::with_config(SystemClock, cfg)?));
        }
        Ok(Self::Redis(RedisStore::connect(url, cfg).await?))
    }

    /// Like [`StoreHandle::open`], but keeps retrying an unreachable Redis with exponential
    /// backoff until `deadline` has passed (see [`RedisStore::connect_with_retry`]).
    pub async fn open_with_retry(
        url: &str,
        cfg: &StoreConfig,
        deadline: Duration,
    ) -> Result<Self, StoreError> {
        cfg.validate()?;
        check_store_url(url)?;
        if url == MEMORY_URL {
            return Ok(Self::Memory(MemoryStore::with_config(SystemClock, cfg)?));
        }
        Ok(Self::Redis(
            RedisStore::connect_with_retry(url, cfg, deadline).await?,
        ))
    }

    /// Which adapter this is: `"memory"` or `"redis"` (for logs).
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Redis(_) => "redis",
        }
    }
}

/// Forwards one operation to the adapter inside a [`StoreHandle`].
macro_rules! dispatch {
    ($handle:expr, $store:ident => $call:expr) => {
        match $handle {
            StoreHandle::Memory($store) => $call.await,
            StoreHandle::Redis($store) => $call.await,
        }
    };
}

impl Store for StoreHandle {
    async fn heartbeat_shard(&self, record: &ShardRecord, ttl: Duration) -> Result<(), StoreError> {
        dispatch!(self, s => s.heartbeat_shard(record, ttl))
    }

    async fn live_shards(&self) -> Result<Vec<LiveShard>, StoreError> {
        dispatch!(self, s => s.live_shards())
    }

    async fn deregister_shard(&self, shard: &ShardId) -> Result<(), StoreError> {
        dispatch!(self, s => s.deregister_shard(shard))
    }

    async fn load_or_create_profile(&self, name: &str) -> Result<LoadedProfile, StoreError> {
        dispatch!(self, s => s.load_or_create_profile(name))
    }

    async fn load_profile(&self, player: PlayerId) -> Result<Profile, StoreError> {
        dispatch!(self, s => s.load_profile(player))
    }

    async fn add_score(&self, player: PlayerId, delta: i64) -> Result<u64, StoreError> {
        dispatch!(self, s => s.add_score(player, delta))
    }

    async fn top_scores(&self, n: usize) -> Result<Vec<LeaderboardEntry>, StoreError> {
        dispatch!(self, s => s.top_scores(n))
    }

    async fn put_session(
        &self,
        token: &SessionToken,
        session: &Session,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.put_session(token, session, ttl))
    }

    async fn get_session(&self, token: &SessionToken) -> Result<Option<Session>, StoreError> {
        dispatch!(self, s => s.get_session(token))
    }

    async fn delete_session(&self, token: &SessionToken) -> Result<(), StoreError> {
        dispatch!(self, s => s.delete_session(token))
    }

    async fn use_nonce(&self, nonce: u64, ttl: Duration) -> Result<bool, StoreError> {
        dispatch!(self, s => s.use_nonce(nonce, ttl))
    }

    async fn acquire_lease(
        &self,
        zone: &ZoneId,
        shard: &ShardId,
        ttl: Duration,
    ) -> Result<AcquireOutcome, StoreError> {
        dispatch!(self, s => s.acquire_lease(zone, shard, ttl))
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        dispatch!(self, s => s.renew_lease(lease, ttl))
    }

    async fn release_lease(&self, lease: &Lease) -> Result<bool, StoreError> {
        dispatch!(self, s => s.release_lease(lease))
    }

    async fn get_lease(&self, zone: &ZoneId) -> Result<Option<Lease>, StoreError> {
        dispatch!(self, s => s.get_lease(zone))
    }

    async fn claim_player(
        &self,
        player: PlayerId,
        lease: &Lease,
    ) -> Result<ClaimOutcome, StoreError> {
        dispatch!(self, s => s.claim_player(player, lease))
    }

    async fn transfer_player(
        &self,
        player: PlayerId,
        from: &Lease,
        to: &ShardId,
        to_zone: &ZoneId,
        state: &PlayerState,
    ) -> Result<TransferOutcome, StoreError> {
        dispatch!(self, s => s.transfer_player(player, from, to, to_zone, state))
    }

    async fn accept_player(
        &self,
        player: PlayerId,
        lease: &Lease,
        seq: Option<u64>,
    ) -> Result<AcceptOutcome, StoreError> {
        dispatch!(self, s => s.accept_player(player, lease, seq))
    }

    async fn checkpoint_players(
        &self,
        lease: &Lease,
        states: &[(PlayerId, PlayerState)],
    ) -> Result<Vec<bool>, StoreError> {
        dispatch!(self, s => s.checkpoint_players(lease, states))
    }

    async fn release_player(
        &self,
        player: PlayerId,
        lease: &Lease,
        state: Option<&PlayerState>,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.release_player(player, lease, state))
    }

    async fn get_ownership(&self, player: PlayerId) -> Result<Option<Ownership>, StoreError> {
        dispatch!(self, s => s.get_ownership(player))
    }

    async fn owned_players(&self) -> Result<Vec<Ownership>, StoreError> {
        dispatch!(self, s => s.owned_players())
    }

    async fn send_handoff(&self, to: &ShardId, notice: &HandoffNotice) -> Result<(), StoreError> {
        dispatch!(self, s => s.send_handoff(to, notice))
    }

    async fn read_inbox(
        &self,
        shard: &ShardId,
        max: usize,
        block: Duration,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        dispatch!(self, s => s.read_inbox(shard, max, block))
    }

    async fn ack_inbox(&self, shard: &ShardId, ids: &[String]) -> Result<(), StoreError> {
        dispatch!(self, s => s.ack_inbox(shard, ids))
    }

    async fn publish_ghosts(&self, zone: &ZoneId, batch: &[u8]) -> Result<(), StoreError> {
        dispatch!(self, s => s.publish_ghosts(zone, batch))
    }

    async fn subscribe_ghosts(
        &self,
        zone: &ZoneId,
    ) -> Result<tokio::sync::mpsc::Receiver<Vec<u8>>, StoreError> {
        dispatch!(self, s => s.subscribe_ghosts(zone))
    }
}

/// `ttl` in whole milliseconds, at least 1 (a zero TTL would be refused by Redis).
pub(crate) fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// `current + delta`, kept within `0..=MAX_SCORE`.
pub(crate) fn clamp_score(current: u64, delta: i64) -> u64 {
    let total = i128::from(current) + i128::from(delta);
    let clamped = total.clamp(0, i128::from(MAX_SCORE));
    u64::try_from(clamped).expect("invariant: clamped to 0..=MAX_SCORE")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_validate_and_bad_values_are_refused() {
        let cfg = StoreConfig::default();
        assert_eq!(cfg.validate(), Ok(()));
        assert_eq!(cfg.prefix, "mer:");
        assert_eq!(cfg.op_timeout(), Duration::from_millis(500));
        let zero = StoreConfig {
            op_timeout_ms: 0,
            ..StoreConfig::default()
        };
        assert!(matches!(
            zero.validate(),
            Err(StoreConfigError::BadTimeout { value: 0, .. })
        ));
        let braces = StoreConfig {
            prefix: "{x}".into(),
            ..StoreConfig::default()
        };
        assert!(matches!(
            braces.validate(),
            Err(StoreConfigError::BadPrefix { .. })
        ));
    }

    #[test]
    fn config_deserializes_with_defaults() {
        let cfg: StoreConfig = serde_json::from_str(r#"{"prefix":"staging:"}"#).expect("parses");
        assert_eq!(cfg.prefix, "staging:");
        assert_eq!(cfg.op_timeout_ms, DEFAULT_OP_TIMEOUT_MS);
        assert!(serde_json::from_str::<StoreConfig>(r#"{"prefx":"x"}"#).is_err());
    }

    #[test]
    fn store_urls_are_checked() {
        assert_eq!(check_store_url("memory"), Ok(()));
        assert_eq!(check_store_url("redis://127.0.0.1:6380"), Ok(()));
        let err = check_store_url("mem").expect_err("neither memory nor redis");
        assert!(err.to_string().contains("memory"), "{err}");
        assert_eq!(
            check_store_url("redis://127.0.0.1:7000,redis://127.0.0.1:7001"),
            Ok(())
        );
        let err = check_store_url("redis://127.0.0.1:7000,memory").expect_err("memory in a list");
        assert!(err.to_string().contains("node 2 of 2 `memory`"), "{err}");
    }

    #[test]
    fn session_tokens_are_checked_without_echoing_them() {
        assert!(SessionToken::new("abc-DEF_012.x").is_ok());
        assert_eq!(
            SessionToken::new(""),
            Err(SessionTokenError::BadLength { len: 0 })
        );
        assert!(matches!(
            SessionToken::new("x".repeat(129)),
            Err(SessionTokenError::BadLength { len: 129 })
        ));
        let err = SessionToken::new("secret token").expect_err("space");
        assert_eq!(err, SessionTokenError::BadChar { position: 6 });
        assert!(!err.to_string().contains("secret"));
    }

    #[test]
    fn scores_clamp_to_zero_and_max() {
        assert_eq!(clamp_score(10, 5), 15);
        assert_eq!(clamp_score(10, -11), 0);
        assert_eq!(clamp_score(0, i64::MIN), 0);
        assert_eq!(clamp_score(MAX_SCORE, 1), MAX_SCORE);
        assert_eq!(clamp_score(0, i64::MAX), MAX_SCORE);
        assert_eq!(ttl_ms(Duration::ZERO), 1);
        assert_eq!(ttl_ms(Duration::from_micros(1500)), 1);
        assert_eq!(ttl_ms(Duration::from_secs(3)), 3000);
    }
}
