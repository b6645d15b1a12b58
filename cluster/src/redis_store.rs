//! [`RedisStore`]: the Redis adapter of the [`Store`] port.
//!
//! - One [`ConnectionManager`] (a multiplexed connection that reconnects by itself after Redis
//!   restarts or the network drops), shared by every clone of the store; or, given a Redis
//!   Cluster URL list (`redis://h1:p1,redis://h2:p2,…`, see [`cluster_node_urls`]), one
//!   cluster connection that routes each command to the node serving its key's slot and follows
//!   the cluster's topology.
//! - Cluster mode: no command, script or pipeline spans two slots. Operations that touch keys
//!   of several slots (a player's hash and the leaderboard, a shard's record and the registry
//!   index, several players) send one pipeline per slot, concurrently, which on a single server
//!   is one pipeline; `SCAN` visits every master; blocking reads use a dedicated cluster
//!   connection; ghost subscriptions use a plain connection to any node (`PUBLISH` reaches every
//!   node's subscribers).
//! - Every operation is bounded by [`StoreConfig::op_timeout_ms`] as a whole, round trips
//!   included, and maps failures to [`StoreError`] naming the key.
//! - Multi-command operations are pipelined; operations that must be atomic are Lua scripts on
//!   a single key or on keys sharing one hash tag (claiming a name, adding to a score, a zone's
//!   lease and its epoch counter, every fenced write to a player's hash, an inbox's group and
//!   stream), so they run unchanged on Redis Cluster. A script that meets a field it cannot read
//!   raises `CORRUPT`, reported as [`StoreError::Corrupt`] naming the key.
//! - Expiry is Redis's own (`SET … PX`): no clock is compared across machines.
//! - Blocking inbox reads (`XREADGROUP … BLOCK`) run on dedicated connections (a small pool),
//!   never on the shared one, which would hold every other command behind the wait. Each ghost
//!   subscription has its own pub/sub connection and background task.
//!
//! Where each record lives is documented in [`crate::keyspace`].

use crate::clock::unix_now_ms;
use crate::config::{check_redis_url, cluster_node_urls, redact_redis_url};
use crate::error::{
    StoreError, check_lease, check_notice, check_shard, check_state, check_zone, parse_entry_id,
};
use crate::keyspace::{INBOX_GROUP, Keyspace};
use crate::ownership::{
    AcceptOutcome, AcquireOutcome, ClaimOutcome, HandoffNotice, InboxEntry, Lease, Ownership,
    PlayerState, TransferOutcome,
};
use crate::store::{
    INBOX_MAX_LEN, INBOX_REDELIVER_AFTER, LeaderboardEntry, LiveShard, LoadedProfile,
    MAX_LEADERBOARD, MAX_SCORE, Profile, Session, SessionToken, ShardRecord, Store, StoreConfig,
    ttl_ms,
};
use futures_util::StreamExt;
use futures_util::future::try_join_all;
use meridian_protocol::{PlayerId, ShardId, ZoneId};
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection, PubSub,
};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo, Slot};
use redis::{
    AsyncConnectionConfig, Client, ErrorKind, FromRedisValue, RedisError, RedisResult, Script,
    ServerErrorKind, Value,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

/// How many times the connection manager retries one reconnection before failing the commands
/// waiting on it (the next command starts a new round).
const RECONNECT_RETRIES: usize = 4;
/// First delay between reconnection attempts.
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
/// Longest delay between reconnection attempts.
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(1);
/// First delay of [`RedisStore::connect_with_retry`]; doubles up to [`CONNECT_MAX_BACKOFF`].
const CONNECT_FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest delay of [`RedisStore::connect_with_retry`].
const CONNECT_MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Shards whose last heartbeat is older than this are dropped from the registry index (their
/// records expired long before; the index only lists candidates).
const SHARD_INDEX_RETENTION_MS: u64 = 3_600_000;
/// Keys asked per `SCAN` round trip.
const SCAN_COUNT: usize = 1000;
/// Idle dedicated connections kept for blocking inbox reads (one per concurrent reader).
const BLOCKING_POOL: usize = 4;
/// First delay before re-subscribing to ghosts after a lost connection; doubles up to
/// [`GHOST_RESUBSCRIBE_MAX`].
const GHOST_RESUBSCRIBE_MIN: Duration = Duration::from_millis(100);
/// Longest delay between ghost re-subscription attempts.
const GHOST_RESUBSCRIBE_MAX: Duration = Duration::from_secs(5);
/// How often an idle ghost subscription is pinged, so that a silently dead connection is
/// noticed.
const GHOST_PING_EVERY: Duration = Duration::from_secs(5);
/// Retries of one command by the cluster connection (after a redirection, a lost node or a
/// topology change) within the operation's timeout.
const CLUSTER_RETRIES: u32 = 3;
/// First delay between cluster retries, milliseconds.
const CLUSTER_MIN_RETRY_WAIT_MS: u64 = 20;
/// Longest delay between cluster retries, milliseconds.
const CLUSTER_MAX_RETRY_WAIT_MS: u64 = 200;

/// Longest zone lease TTL (both adapters): a longer `ttl` is cut to this, so that any duration
/// is accepted (Redis refuses expiry times beyond its range, and a lease is meant to be renewed
/// every few seconds anyway).
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// A lease TTL in whole milliseconds: at least 1, at most [`MAX_LEASE_TTL`].
pub(crate) fn lease_ttl_ms(ttl: Duration) -> u64 {
    ttl_ms(ttl.min(MAX_LEASE_TTL))
}

/// Longest a [`Store::read_inbox`] call waits for a notice (both adapters): a longer `block`
/// is cut to this, so that any duration is accepted.
pub const MAX_INBOX_BLOCK: Duration = Duration::from_secs(3600);

/// Ghost batches buffered per subscriber (both adapters). When the receiver is this far behind,
/// new batches are dropped: ghosts are refreshed every tick.
pub const GHOST_BUFFER: usize = 64;

/// Claims a name for a candidate id, or returns the id that already holds it.
/// KEYS[1] = name key; ARGV[1] = candidate id. Returns `{id, 1 if claimed now else 0}`.
static CLAIM_NAME: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local id = redis.call('GET', KEYS[1])
if id then return {id, 0} end
redis.call('SET', KEYS[1], ARGV[1])
return {ARGV[1], 1}
",
    )
});

/// Adds to a leaderboard score, kept within 0..=max. Sorted-set scores are doubles: exact up to
/// 2^53, which is why MAX_SCORE is 2^53 - 1.
/// KEYS[1] = leaderboard; ARGV[1] = member, ARGV[2] = delta, ARGV[3] = max. Returns the total.
static ADD_SCORE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local total = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '0') + tonumber(ARGV[2])
if total < 0 then total = 0 end
local max = tonumber(ARGV[3])
if total > max then total = max end
redis.call('ZADD', KEYS[1], total, ARGV[1])
return total
",
    )
});

/// Helpers shared by the player scripts (KEYS[1] = the player hash). `int` checks a numeric
/// field (absent reads as 0) and raises a `CORRUPT` error naming it; `record` reads the
/// ownership fields, checked; `reply` answers `{status, owner, zone, epoch, seq, from, state}`
/// as stored after the script's writes.
const PLAYER_PRELUDE: &str = r"
local function int(field, v)
  if not v then return 0 end
  if not string.match(v, '^%d+$') then
    error({err = 'CORRUPT field `' .. field .. '` holds `' .. v .. '`, not an unsigned integer'})
  end
  return tonumber(v)
end
local function record()
  local r = redis.call('HMGET', KEYS[1], 'owner', 'zone', 'epoch', 'seq', 'from', 'state')
  r.epoch = int('epoch', r[3])
  int('seq', r[4])
  return r
end
local function reply(status)
  local r = redis.call('HMGET', KEYS[1], 'owner', 'zone', 'epoch', 'seq', 'from', 'state')
  return {status, r[1], r[2], r[3], r[4], r[5], r[6]}
end
local function fenced(r)
  return r[1] == ARGV[1] and r[2] == ARGV[2] and r.epoch ~= 0 and r.epoch <= tonumber(ARGV[3])
end
";

/// A player script: [`PLAYER_PRELUDE`] then `body`.
fn player_script(body: &str) -> Script {
    Script::new(&format!("{PLAYER_PRELUDE}{body}"))
}

/// Claims a player for a lease (a join).
/// KEYS[1] = player; ARGV = owner, zone, epoch. Status 1: claimed; 0: stale (the record names
/// the zone under a higher epoch).
static CLAIM_PLAYER: LazyLock<Script> = LazyLock::new(|| {
    player_script(
        r"
local r = record()
if r[2] == ARGV[2] and r.epoch > tonumber(ARGV[3]) then return reply(0) end
redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'zone', ARGV[2], 'epoch', ARGV[3])
redis.call('HDEL', KEYS[1], 'from')
return reply(1)
",
    )
});

/// Hands a player to another shard, fenced by the sender's lease.
/// KEYS[1] = player; ARGV = owner, zone, epoch (the sender's lease), to, to_zone, state JSON.
/// Status 1: transferred; 0: not the owner at that epoch (the record as found).
static TRANSFER_PLAYER: LazyLock<Script> = LazyLock::new(|| {
    player_script(
        r"
local r = record()
if not fenced(r) then return reply(0) end
redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HSET', KEYS[1], 'owner', ARGV[4], 'zone', ARGV[5], 'epoch', '0', 'from', ARGV[1],
  'state', ARGV[6])
return reply(1)
",
    )
});

/// The new owner takes a transferred player.
/// KEYS[1] = player; ARGV = owner, zone, epoch (the taker's lease), seq or '' for any.
/// Status 1: accepted (epoch raised to the lease's, `from` cleared); 0: not offered.
static ACCEPT_PLAYER: LazyLock<Script> = LazyLock::new(|| {
    player_script(
        r"
local r = record()
if r[1] ~= ARGV[1] or r[2] ~= ARGV[2] or (ARGV[4] ~= '' and ARGV[4] ~= (r[4] or '0')) then
  return reply(0)
end
if tonumber(ARGV[3]) > r.epoch then redis.call('HSET', KEYS[1], 'epoch', ARGV[3]) end
redis.call('HDEL', KEYS[1], 'from')
return reply(1)
",
    )
});

/// Saves a player's state, fenced by the owner's lease.
/// KEYS[1] = player; ARGV = owner, zone, epoch, state JSON. Returns 1 if written, else 0.
static CHECKPOINT_PLAYER: LazyLock<Script> = LazyLock::new(|| {
    player_script(
        r"
local r = record()
if not fenced(r) then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[4])
return 1
",
    )
});

/// The player left: clears the owner (the zone stays), fenced by the owner's lease.
/// KEYS[1] = player; ARGV = owner, zone, epoch, state JSON or '' to keep the state.
/// Returns 1 if released, else 0.
static RELEASE_PLAYER: LazyLock<Script> = LazyLock::new(|| {
    player_script(
        r"
local r = record()
if not fenced(r) then return 0 end
redis.call('HDEL', KEYS[1], 'owner', 'from')
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'state', ARGV[4]) end
redis.call('HINCRBY', KEYS[1], 'seq', 1)
return 1
",
    )
});

/// Takes a zone's lease if free or held by the same shard, with the next epoch.
/// KEYS[1] = lease, KEYS[2] = epoch counter (same hash tag); ARGV = shard, ttl ms.
/// Returns `{1, shard, epoch}` when acquired, `{0, holder, holder's epoch}` when held.
static ACQUIRE_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local r = redis.call('HMGET', KEYS[1], 'owner', 'epoch')
if r[1] and r[1] ~= ARGV[1] then return {0, r[1], r[2] or ''} end
local counter = redis.call('GET', KEYS[2])
if counter and not string.match(counter, '^%d+$') then
  error({err = 'CORRUPT the epoch counter ' .. KEYS[2] .. ' holds `' .. counter .. '`'})
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'epoch', epoch)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, ARGV[1], epoch}
",
    )
});

/// Extends a lease still held at its epoch. KEYS[1] = lease; ARGV = owner, epoch, ttl ms.
static RENEW_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local r = redis.call('HMGET', KEYS[1], 'owner', 'epoch')
if r[1] ~= ARGV[1] or r[2] ~= ARGV[2] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
",
    )
});

/// Gives up a lease still held at its epoch. KEYS[1] = lease; ARGV = owner, epoch.
static RELEASE_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local r = redis.call('HMGET', KEYS[1], 'owner', 'epoch')
if r[1] ~= ARGV[1] or r[2] ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
return 1
",
    )
});

/// Creates an inbox's consumer group (reading from the first entry, so that notices sent before
/// the receiver's first read are delivered) unless it exists.
const INBOX_PRELUDE: &str = r"
local created = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
if type(created) == 'table' and created.err and not string.find(created.err, 'BUSYGROUP', 1, true) then
  return created
end
";

/// Appends a notice to an inbox. KEYS[1] = inbox; ARGV = group, max length, notice JSON.
/// Returns the entry id.
static SEND_NOTICE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{INBOX_PRELUDE}
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'notice', ARGV[3])
"
    ))
});

/// Claims for a consumer the inbox entries pending (with any consumer) for at least the
/// redelivery delay, with their delivery counts (after this delivery).
/// KEYS[1] = inbox; ARGV = group, consumer, min idle ms, count.
/// Returns `{{id, {field, value, ...}, deliveries}, ...}`.
static CLAIM_NOTICES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{INBOX_PRELUDE}
local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], '0-0', 'COUNT', ARGV[4])
local out = {{}}
for _, entry in ipairs(claimed[2]) do
  if entry and entry[2] then
    local pending = redis.call('XPENDING', KEYS[1], ARGV[1], entry[1], entry[1], 1)
    local deliveries = 1
    if pending[1] then deliveries = pending[1][4] end
    out[#out + 1] = {{entry[1], entry[2], deliveries}}
  elseif entry then
    redis.call('XACK', KEYS[1], ARGV[1], entry[1])
  end
end
return out
"
    ))
});

/// The Redis adapter. Cheap to clone: clones share one connection manager (or one cluster
/// connection).
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    shared: Arc<Shared>,
}

/// A connection commands are sent on.
#[derive(Clone)]
enum Conn {
    /// The shared, reconnecting connection to one Redis server.
    Manager(ConnectionManager),
    /// A dedicated connection to one Redis server (blocking reads).
    Direct(MultiplexedConnection),
    /// A Redis Cluster: each command goes to the node serving its key's slot.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Self::Manager(conn) => conn.req_packed_command(cmd),
            Self::Direct(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Manager(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Direct(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Manager(conn) => conn.get_db(),
            Self::Direct(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// What the dedicated connections are opened from.
enum Dedicated {
    /// One Redis server: blocking reads and subscriptions connect to it.
    Single(Client),
    /// A Redis Cluster: blocking reads use cluster connections without a response timeout;
    /// subscriptions connect to the first node of the list that answers.
    Cluster {
        /// Opens cluster connections for blocking reads (boxed: far larger than a `Client`).
        blocking: Box<ClusterClient>,
        /// One client per node of the URL list.
        nodes: Vec<Client>,
    },
}

impl Dedicated {
    /// The clients a ghost subscription may use, tried in order.
    fn pubsub_clients(&self) -> Vec<Client> {
        match self {
            Self::Single(client) => vec![client.clone()],
            Self::Cluster { nodes, .. } => nodes.clone(),
        }
    }
}

struct Shared {
    keys: Keyspace,
    timeout: Duration,
    /// The URL with its password redacted.
    url: String,
    /// Opens the dedicated connections (blocking reads, pub/sub).
    dedicated: Dedicated,
    /// Idle dedicated connections for blocking reads.
    blocking: Mutex<Vec<Conn>>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.shared.url)
            .field("prefix", &self.shared.keys.prefix())
            .field("timeout", &self.shared.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the Redis at `url` and checks it with a PING, all within
    /// [`StoreConfig::op_timeout_ms`]. An unreachable Redis fails fast with
    /// [`StoreError::Connect`] naming the URL (password redacted); it never hangs.
    ///
    /// A list of node URLs separated by commas (`redis://h1:7000,redis://h2:7001`) opens a
    /// Redis Cluster: the nodes listed are seeds, the client learns the others and the slot map
    /// from them, and every master must answer the PING.
    pub async fn connect(url: &str, cfg: &StoreConfig) -> Result<Self, StoreError> {
        cfg.validate()?;
        check_redis_url(url).map_err(crate::error::StoreConfigError::from)?;
        let keys = cfg.keyspace()?;
        let shown = redact_redis_url(url);
        let timeout = cfg.op_timeout();
        let connect_error = |detail: String| StoreError::Connect {
            url: shown.clone(),
            detail,
        };
        if let Some(nodes) = cluster_node_urls(url) {
            let opening = open_cluster(&nodes, timeout);
            let (conn, dedicated) = match tokio::time::timeout(timeout, opening).await {
                Ok(Ok(opened)) => opened,
                Ok(Err(e)) => return Err(connect_error(e.to_string())),
                Err(_elapsed) => {
                    return Err(connect_error(format!(
                        "no answer from the cluster within {} ms",
                        cfg.op_timeout_ms
                    )));
                }
            };
            tracing::debug!(url = %shown, prefix = %keys.prefix(), "connected to Redis Cluster");
            return Ok(Self {
                conn,
                shared: Arc::new(Shared {
                    keys,
                    timeout,
                    url: shown,
                    dedicated,
                    blocking: Mutex::new(Vec::new()),
                }),
            });
        }
        let client = Client::open(url).map_err(|e| connect_error(e.to_string()))?;
        let opening = async {
            // One direct attempt first: it reports "connection refused" at once, where the
            // manager would keep retrying until the timeout.
            let probe_cfg = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout));
            let mut probe = client
                .get_multiplexed_async_connection_with_config(&probe_cfg)
                .await?;
            redis::cmd("PING").exec_async(&mut probe).await?;
            drop(probe);
            let manager_cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(RECONNECT_RETRIES)
                .set_min_delay(RECONNECT_MIN_DELAY)
                .set_max_delay(RECONNECT_MAX_DELAY);
            let mut conn = ConnectionManager::new_with_config(client.clone(), manager_cfg).await?;
            redis::cmd("PING").exec_async(&mut conn).await?;
            Ok::<_, RedisError>(conn)
        };
        let conn = match tokio::time::timeout(timeout, opening).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(connect_error(e.to_string())),
            Err(_elapsed) => {
                return Err(connect_error(format!(
                    "no answer within {} ms",
                    cfg.op_timeout_ms
                )));
            }
        };
        tracing::debug!(url = %shown, prefix = %keys.prefix(), "connected to Redis");
        Ok(Self {
            conn: Conn::Manager(conn),
            shared: Arc::new(Shared {
                keys,
                timeout,
                url: shown,
                dedicated: Dedicated::Single(client),
                blocking: Mutex::new(Vec::new()),
            }),
        })
    }

    /// [`RedisStore::connect`], retried with exponential backoff (100 ms doubling to 5 s) until
    /// `deadline` has passed; each failed attempt is logged as a warning. Returns the last
    /// error if Redis never answered. A bad URL or configuration fails at once.
    pub async fn connect_with_retry(
        url: &str,
        cfg: &StoreConfig,
        deadline: Duration,
    ) -> Result<Self, StoreError> {
        let started = Instant::now();
        let mut backoff = CONNECT_FIRST_BACKOFF;
        let mut attempt: u32 = 1;
        loop {
            let error = match Self::connect(url, cfg).await {
                Ok(store) => return Ok(store),
                Err(e @ StoreError::Config(_)) => return Err(e),
                Err(e) => e,
            };
            let remaining = deadline.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                tracing::warn!(
                    attempt,
                    url = %redact_redis_url(url),
                    error = %error,
                    "giving up connecting to Redis"
                );
                return Err(error);
            }
            let wait = backoff.min(remaining);
            tracing::warn!(
                attempt,
                url = %redact_redis_url(url),
                error = %error,
                retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "Redis not reachable; retrying"
            );
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(CONNECT_MAX_BACKOFF);
            attempt = attempt.saturating_add(1);
        }
    }

    /// The key names this store uses.
    pub fn keyspace(&self) -> &Keyspace {
        &self.shared.keys
    }

    /// The URL this store is connected to, password redacted.
    pub fn url(&self) -> &str {
        &self.shared.url
    }

    fn keys(&self) -> &Keyspace {
        &self.shared.keys
    }

    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// Whether this store talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    /// Sends `cmds` and answers one result per command, in order. On one server they form one
    /// pipeline; on a cluster, one pipeline per slot (commands of a slot keep their order), sent
    /// concurrently, so that no pipeline spans two slots. A command's own error is its result;
    /// a failure to reach a node fails the whole call.
    async fn query_each(&self, cmds: &[redis::Cmd]) -> RedisResult<Vec<RedisResult<Value>>> {
        let mut conn = self.conn();
        if !matches!(conn, Conn::Cluster(_)) {
            let mut pipe = redis::pipe();
            for cmd in cmds {
                pipe.add_command(cmd.clone());
            }
            pipe.ignore_errors();
            return pipe.query_async(&mut conn).await;
        }
        // Commands without a key (none of ours) each go alone.
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut by_slot: HashMap<Slot, usize> = HashMap::new();
        for (index, cmd) in cmds.iter().enumerate() {
            match cmd_slot(cmd) {
                Some(slot) => {
                    let group = *by_slot.entry(slot).or_insert_with(|| {
                        groups.push(Vec::new());
                        groups.len() - 1
                    });
                    groups[group].push(index);
                }
                None => groups.push(vec![index]),
            }
        }
        let sends = groups.iter().map(|indices| {
            let mut pipe = redis::pipe();
            for &index in indices {
                pipe.add_command(cmds[index].clone());
            }
            pipe.ignore_errors();
            let mut conn = conn.clone();
            async move { pipe.query_async::<Vec<RedisResult<Value>>>(&mut conn).await }
        });
        let replies = try_join_all(sends).await?;
        let mut out: Vec<Option<RedisResult<Value>>> = (0..cmds.len()).map(|_| None).collect();
        for (indices, group) in groups.iter().zip(replies) {
            for (&index, reply) in indices.iter().zip(group) {
                out[index] = Some(reply);
            }
        }
        Ok(out
            .into_iter()
            .map(|reply| {
                reply.unwrap_or_else(|| {
                    Err(RedisError::from((
                        ErrorKind::Client,
                        "a pipeline answered fewer replies than commands",
                    )))
                })
            })
            .collect())
    }

    /// [`RedisStore::query_each`], failing on the first command error, each reply converted.
    async fn query_all<T: FromRedisValue>(&self, cmds: &[redis::Cmd]) -> RedisResult<Vec<T>> {
        self.query_each(cmds)
            .await?
            .into_iter()
            .map(|reply| reply.and_then(|value| Ok(redis::from_redis_value(value)?)))
            .collect()
    }

    fn timeout_ms(&self) -> u64 {
        u64::try_from(self.shared.timeout.as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs one operation within the timeout; `key` is named if it times out.
    async fn bounded<T>(
        &self,
        key: &str,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.shared.timeout, op).await {
            Ok(result) => result,
            Err(_elapsed) => Err(StoreError::Timeout {
                key: key.to_owned(),
                after_ms: self.timeout_ms(),
            }),
        }
    }

    /// Runs a blocking command (`BLOCK`) on a dedicated connection, so that the shared one
    /// keeps serving the handle's other operations meanwhile. Bounded by `block` plus the
    /// operation timeout; the connection is reused only after a complete answer.
    async fn blocking_query(
        &self,
        key: &str,
        cmd: &redis::Cmd,
        block: Duration,
    ) -> Result<Value, StoreError> {
        let pooled = self
            .shared
            .blocking
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => {
                self.bounded(key, async {
                    match &self.shared.dedicated {
                        Dedicated::Single(client) => {
                            let cfg = AsyncConnectionConfig::new()
                                .set_connection_timeout(Some(self.shared.timeout))
                                .set_response_timeout(None);
                            client
                                .get_multiplexed_async_connection_with_config(&cfg)
                                .await
                                .map(Conn::Direct)
                        }
                        // Routed like any command: to the node serving the stream's slot.
                        Dedicated::Cluster { blocking, .. } => {
                            blocking.get_async_connection().await.map(Conn::Cluster)
                        }
                    }
                    .map_err(self.fail(key))
                })
                .await?
            }
        };
        let limit = block.saturating_add(self.shared.timeout);
        match tokio::time::timeout(limit, cmd.query_async::<Value>(&mut conn)).await {
            Ok(Ok(reply)) => {
                let mut pool = self
                    .shared
                    .blocking
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if pool.len() < BLOCKING_POOL {
                    pool.push(conn);
                }
                Ok(reply)
            }
            Ok(Err(e)) => Err(self.fail(key)(e)),
            Err(_elapsed) => Err(StoreError::Timeout {
                key: key.to_owned(),
                after_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }

    /// Acknowledges inbox entries and deletes them from the stream.
    async fn ack_ids(&self, key: &str, ids: &[String]) -> Result<(), StoreError> {
        self.bounded(key, async {
            redis::pipe()
                .cmd("XACK")
                .arg(key)
                .arg(INBOX_GROUP)
                .arg(ids)
                .ignore()
                .cmd("XDEL")
                .arg(key)
                .arg(ids)
                .ignore()
                .exec_async(&mut self.conn())
                .await
                .map_err(self.fail(key))
        })
        .await
    }

    /// Appends to `owned` the owned players whose hashes a `SCAN` of `node` (a cluster master;
    /// `None` on a single server) finds. Each round trip is bounded, not the whole scan.
    async fn scan_owned(
        &self,
        pattern: &str,
        node: Option<&(String, u16)>,
        owned: &mut Vec<Ownership>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let mut cursor: u64 = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .arg("TYPE")
                .arg("hash");
            let (next, keys): (u64, Vec<String>) = self
                .bounded(pattern, async {
                    let reply = match (&mut conn, node) {
                        (Conn::Cluster(cluster), Some((host, port))) => {
                            let route = SingleNodeRoutingInfo::ByAddress {
                                host: host.clone(),
                                port: *port,
                            };
                            cluster
                                .route_command(scan, RoutingInfo::SingleNode(route))
                                .await
                        }
                        _ => scan.query_async::<Value>(&mut conn).await,
                    };
                    reply
                        .and_then(|value| Ok(redis::from_redis_value(value)?))
                        .map_err(self.fail(pattern))
                })
                .await?;
            let players: Vec<(String, PlayerId)> = keys
                .into_iter()
                .filter_map(|key| {
                    let player = self.keys().parse_player_key(&key)?;
                    Some((key, player))
                })
                .collect();
            if !players.is_empty() {
                let reads: Vec<redis::Cmd> =
                    players.iter().map(|(key, _)| record_fields(key)).collect();
                let records: Vec<RecordFields> = self
                    .bounded(pattern, async {
                        self.query_all(&reads).await.map_err(self.fail(pattern))
                    })
                    .await?;
                for ((key, player), fields) in players.iter().zip(records) {
                    if let Some(record) = parse_record(key, *player, fields)?
                        && record.owner.is_some()
                    {
                        owned.push(record);
                    }
                }
            }
            cursor = next;
            if cursor == 0 {
                return Ok(());
            }
        }
    }

    /// Maps a client error on `key` to a [`StoreError`].
    fn fail(&self, key: &str) -> impl Fn(RedisError) -> StoreError {
        let key = key.to_owned();
        move |err| classify(&key, &err, self.timeout_ms())
    }
}

/// Opens a Redis Cluster from its node URLs (already checked): the shared connection (answers
/// bounded by `timeout`, a few retries across redirections and topology changes), checked with
/// a PING to every master, and what the dedicated connections are opened from.
async fn open_cluster(nodes: &[&str], timeout: Duration) -> RedisResult<(Conn, Dedicated)> {
    let builder = |response_timeout: Option<Duration>| {
        let builder = ClusterClientBuilder::new(nodes.iter().copied())
            .connection_timeout(timeout)
            .retries(CLUSTER_RETRIES)
            .min_retry_wait(CLUSTER_MIN_RETRY_WAIT_MS)
            .max_retry_wait(CLUSTER_MAX_RETRY_WAIT_MS);
        match response_timeout {
            Some(t) => builder.response_timeout(t),
            None => builder.overall_response_timeout(None),
        }
    };
    let client = builder(Some(timeout)).build()?;
    // Blocking reads wait longer than any response timeout; each is bounded by the caller.
    let blocking = builder(None).build()?;
    let mut conn = client.get_async_connection().await?;
    redis::cmd("PING").exec_async(&mut conn).await?;
    let nodes = nodes
        .iter()
        .map(|node| Client::open(*node))
        .collect::<RedisResult<Vec<_>>>()?;
    Ok((
        Conn::Cluster(conn),
        Dedicated::Cluster {
            blocking: Box::new(blocking),
            nodes,
        },
    ))
}

/// The slot of a command's key: the first argument after the name, or after the script and
/// the key count for `EVALSHA`/`EVAL` (every script of ours names its keys). `None` without a
/// key.
fn cmd_slot(cmd: &redis::Cmd) -> Option<Slot> {
    let mut args = cmd.args_iter().filter_map(|arg| match arg {
        redis::Arg::Simple(bytes) => Some(bytes),
        _ => None,
    });
    let name = args.next()?;
    let is_script = name.eq_ignore_ascii_case(b"EVALSHA") || name.eq_ignore_ascii_case(b"EVAL");
    let key = if is_script {
        args.nth(2)?
    } else {
        args.next()?
    };
    Some(Slot::for_key(key))
}

/// The address (host, port) of every master of a cluster, from `CLUSTER SLOTS`.
fn parse_masters(reply: Value) -> Option<Vec<(String, u16)>> {
    let Value::Array(ranges) = reply else {
        return None;
    };
    let mut masters: Vec<(String, u16)> = Vec::new();
    for range in ranges {
        // [start, end, [host, port, id, ...], replicas...]
        let Value::Array(parts) = range else {
            return None;
        };
        let Value::Array(master) = parts.get(2)? else {
            return None;
        };
        let host = text(master.first()?)?;
        let port = match master.get(1)? {
            Value::Int(port) => u16::try_from(*port).ok()?,
            _ => return None,
        };
        if !masters.iter().any(|(h, p)| *h == host && *p == port) {
            masters.push((host, port));
        }
    }
    Some(masters)
}

/// What a Redis client error means for the caller.
fn classify(key: &str, err: &RedisError, timeout_ms: u64) -> StoreError {
    if err.is_timeout() {
        return StoreError::Timeout {
            key: key.to_owned(),
            after_ms: timeout_ms,
        };
    }
    // `CORRUPT` is raised by our scripts on a field they cannot read.
    if err.code() == Some("CORRUPT") {
        let detail = err.detail().unwrap_or("unreadable data");
        // Redis appends where in which script the error was raised: not the caller's concern.
        let detail = detail
            .split_once(" script: ")
            .map_or(detail, |(what, _)| what);
        return StoreError::Corrupt {
            key: key.to_owned(),
            detail: detail.to_owned(),
        };
    }
    let corrupt = matches!(
        err.kind(),
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType
    ) || err.code() == Some("WRONGTYPE");
    if corrupt {
        StoreError::Corrupt {
            key: key.to_owned(),
            detail: err.to_string(),
        }
    } else {
        StoreError::Unavailable {
            key: key.to_owned(),
            detail: err.to_string(),
        }
    }
}

fn to_json(key: &str, value: &impl Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        detail: format!("cannot encode: {e}"),
    })
}

fn from_json<T: DeserializeOwned>(key: &str, json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        detail: format!("bad JSON: {e}"),
    })
}

fn parse_player(key: &str, text: &str) -> Result<PlayerId, StoreError> {
    text.parse().map(PlayerId).map_err(|_| StoreError::Corrupt {
        key: key.to_owned(),
        detail: format!("`{text}` is not a player id"),
    })
}

/// A sorted-set score as written by [`ADD_SCORE`]: an integer in `0..=MAX_SCORE`.
fn parse_score(key: &str, text: Option<&str>) -> Result<u64, StoreError> {
    let Some(text) = text else { return Ok(0) };
    if let Ok(score) = text.parse::<u64>() {
        return Ok(score.min(MAX_SCORE));
    }
    match text.parse::<f64>() {
        // Checked: integral and non-negative; `as` saturates above u64::MAX.
        Ok(score) if score.is_finite() && score.trunc() == score && score >= 0.0 => {
            Ok((score as u64).min(MAX_SCORE))
        }
        _ => Err(StoreError::Corrupt {
            key: key.to_owned(),
            detail: format!("`{text}` is not a score"),
        }),
    }
}

impl Store for RedisStore {
    async fn heartbeat_shard(&self, record: &ShardRecord, ttl: Duration) -> Result<(), StoreError> {
        let key = self.keys().shard(&record.id);
        let index = self.keys().shards();
        let now_ms = unix_now_ms();
        let value = to_json(
            &key,
            &LiveShard {
                record: record.clone(),
                heartbeat_ms: now_ms,
            },
        )?;
        let mut set = redis::cmd("SET");
        set.arg(&key).arg(value).arg("PX").arg(ttl_ms(ttl));
        let mut index_add = redis::cmd("ZADD");
        index_add.arg(&index).arg(now_ms).arg(record.id.as_str());
        self.bounded(&key, async {
            // Two slots on a cluster: the record's and the index's.
            let _replies: Vec<Value> = self
                .query_all(&[set, index_add])
                .await
                .map_err(self.fail(&key))?;
            Ok(())
        })
        .await
    }

    async fn live_shards(&self) -> Result<Vec<LiveShard>, StoreError> {
        let index = self.keys().shards();
        self.bounded(&index, async {
            let mut conn = self.conn();
            let cutoff = unix_now_ms().saturating_sub(SHARD_INDEX_RETENTION_MS);
            let (members,): (Vec<String>,) = redis::pipe()
                .cmd("ZREMRANGEBYSCORE")
                .arg(&index)
                .arg("-inf")
                .arg(format!("({cutoff}"))
                .ignore()
                .cmd("ZRANGE")
                .arg(&index)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .map_err(self.fail(&index))?;
            if members.is_empty() {
                return Ok(Vec::new());
            }
            let mut ids = Vec::with_capacity(members.len());
            for member in &members {
                ids.push(
                    ShardId::new(member.as_str()).map_err(|e| StoreError::Corrupt {
                        key: index.clone(),
                        detail: e.to_string(),
                    })?,
                );
            }
            let gets: Vec<redis::Cmd> = ids
                .iter()
                .map(|id| {
                    let mut get = redis::cmd("GET");
                    get.arg(self.keys().shard(id));
                    get
                })
                .collect();
            let values: Vec<Option<String>> =
                self.query_all(&gets).await.map_err(self.fail(&index))?;
            let mut live = Vec::with_capacity(ids.len());
            for (id, value) in ids.iter().zip(values) {
                let Some(json) = value else { continue };
                let key = self.keys().shard(id);
                let shard: LiveShard = from_json(&key, &json)?;
                if &shard.record.id != id {
                    return Err(StoreError::Corrupt {
                        key,
                        detail: format!("holds the record of shard `{}`", shard.record.id),
                    });
                }
                live.push(shard);
            }
            live.sort_by(|a, b| a.record.id.cmp(&b.record.id));
            Ok(live)
        })
        .await
    }

    async fn deregister_shard(&self, shard: &ShardId) -> Result<(), StoreError> {
        let key = self.keys().shard(shard);
        let index = self.keys().shards();
        let mut del = redis::cmd("DEL");
        del.arg(&key);
        let mut index_rem = redis::cmd("ZREM");
        index_rem.arg(&index).arg(shard.as_str());
        self.bounded(&key, async {
            let _replies: Vec<Value> = self
                .query_all(&[del, index_rem])
                .await
                .map_err(self.fail(&key))?;
            Ok(())
        })
        .await
    }

    async fn load_or_create_profile(&self, name: &str) -> Result<LoadedProfile, StoreError> {
        let name_key = self.keys().player_name(name);
        self.bounded(&name_key, async {
            let mut conn = self.conn();
            let existing: Option<String> = redis::cmd("GET")
                .arg(&name_key)
                .query_async(&mut conn)
                .await
                .map_err(self.fail(&name_key))?;
            let (player, created) = match existing {
                Some(id) => (parse_player(&name_key, &id)?, false),
                None => {
                    let seq = self.keys().player_seq();
                    let candidate: u64 = redis::cmd("INCR")
                        .arg(&seq)
                        .query_async(&mut conn)
                        .await
                        .map_err(self.fail(&seq))?;
                    // Atomic on the name key alone: of concurrent first visits, one claims the
                    // name; the others get its id (their candidate ids stay unused).
                    let (id, claimed): (String, i64) = CLAIM_NAME
                        .key(&name_key)
                        .arg(candidate)
                        .invoke_async(&mut conn)
                        .await
                        .map_err(self.fail(&name_key))?;
                    (parse_player(&name_key, &id)?, claimed == 1)
                }
            };
            // Idempotent: also repairs a name claimed by a process that died before this step.
            let player_key = self.keys().player(player);
            let leaderboard = self.keys().leaderboard();
            let mut set_name = redis::cmd("HSETNX");
            set_name.arg(&player_key).arg("name").arg(name);
            let mut set_created = redis::cmd("HSETNX");
            set_created
                .arg(&player_key)
                .arg("created_ms")
                .arg(unix_now_ms());
            let mut get_name = redis::cmd("HGET");
            get_name.arg(&player_key).arg("name");
            // The player's hash and the leaderboard: two slots on a cluster.
            let replies: Vec<Option<String>> = self
                .query_all(&[
                    set_name,
                    set_created,
                    get_name,
                    score_cmd(&leaderboard, player),
                ])
                .await
                .map_err(self.fail(&player_key))?;
            let [_, _, stored_name, score] = <[Option<String>; 4]>::try_from(replies)
                .map_err(|_| not_a_stream_reply(&player_key, "pipeline"))?;
            if stored_name.as_deref() != Some(name) {
                return Err(StoreError::Corrupt {
                    key: player_key,
                    detail: format!(
                        "name `{name}` maps to this player, whose name is {stored_name:?}"
                    ),
                });
            }
            Ok(LoadedProfile {
                profile: Profile {
                    player,
                    name: name.to_owned(),
                    score: parse_score(&leaderboard, score.as_deref())?,
                },
                created,
            })
        })
        .await
    }

    async fn load_profile(&self, player: PlayerId) -> Result<Profile, StoreError> {
        let player_key = self.keys().player(player);
        let leaderboard = self.keys().leaderboard();
        self.bounded(&player_key, async {
            let mut get_name = redis::cmd("HGET");
            get_name.arg(&player_key).arg("name");
            let replies: Vec<Option<String>> = self
                .query_all(&[get_name, score_cmd(&leaderboard, player)])
                .await
                .map_err(self.fail(&player_key))?;
            let [name, score] = <[Option<String>; 2]>::try_from(replies)
                .map_err(|_| not_a_stream_reply(&player_key, "pipeline"))?;
            let Some(name) = name else {
                return Err(StoreError::NotFound {
                    key: player_key.clone(),
                });
            };
            Ok(Profile {
                player,
                name,
                score: parse_score(&leaderboard, score.as_deref())?,
            })
        })
        .await
    }

    async fn add_score(&self, player: PlayerId, delta: i64) -> Result<u64, StoreError> {
        let player_key = self.keys().player(player);
        let leaderboard = self.keys().leaderboard();
        self.bounded(&player_key, async {
            let mut conn = self.conn();
            let exists: bool = redis::cmd("EXISTS")
                .arg(&player_key)
                .query_async(&mut conn)
                .await
                .map_err(self.fail(&player_key))?;
            if !exists {
                return Err(StoreError::NotFound {
                    key: player_key.clone(),
                });
            }
            ADD_SCORE
                .key(&leaderboard)
                .arg(Keyspace::leaderboard_member(player))
                .arg(delta)
                .arg(MAX_SCORE)
                .invoke_async(&mut conn)
                .await
                .map_err(self.fail(&leaderboard))
        })
        .await
    }

    async fn top_scores(&self, n: usize) -> Result<Vec<LeaderboardEntry>, StoreError> {
        let n = n.min(MAX_LEADERBOARD);
        if n == 0 {
            return Ok(Vec::new());
        }
        let leaderboard = self.keys().leaderboard();
        self.bounded(&leaderboard, async {
            let mut conn = self.conn();
            let rows: Vec<(String, String)> = redis::cmd("ZREVRANGE")
                .arg(&leaderboard)
                .arg(0)
                .arg(n - 1)
                .arg("WITHSCORES")
                .query_async(&mut conn)
                .await
                .map_err(self.fail(&leaderboard))?;
            let mut ranked = Vec::with_capacity(rows.len());
            for (member, score) in &rows {
                let player = Keyspace::parse_leaderboard_member(member).ok_or_else(|| {
                    StoreError::Corrupt {
                        key: leaderboard.clone(),
                        detail: format!("member `{member}` is not a player id"),
                    }
                })?;
                ranked.push((player, parse_score(&leaderboard, Some(score))?));
            }
            if ranked.is_empty() {
                return Ok(Vec::new());
            }
            let names: Vec<redis::Cmd> = ranked
                .iter()
                .map(|(player, _)| {
                    let mut get = redis::cmd("HGET");
                    get.arg(self.keys().player(*player)).arg("name");
                    get
                })
                .collect();
            let names: Vec<Option<String>> = self
                .query_all(&names)
                .await
                .map_err(self.fail(&leaderboard))?;
            Ok(ranked
                .into_iter()
                .zip(names)
                .filter_map(|((player, score), name)| {
                    // add_score requires a profile, so a nameless member is not expected.
                    Some(LeaderboardEntry {
                        player,
                        name: name?,
                        score,
                    })
                })
                .collect())
        })
        .await
    }

    async fn put_session(
        &self,
        token: &SessionToken,
        session: &Session,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = self.keys().session(token.as_str());
        let value = to_json(&key, session)?;
        self.bounded(&key, async {
            redis::cmd("SET")
                .arg(&key)
                .arg(value)
                .arg("PX")
                .arg(ttl_ms(ttl))
                .exec_async(&mut self.conn())
                .await
                .map_err(self.fail(&key))
        })
        .await
    }

    async fn get_session(&self, token: &SessionToken) -> Result<Option<Session>, StoreError> {
        let key = self.keys().session(token.as_str());
        self.bounded(&key, async {
            let json: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut self.conn())
                .await
                .map_err(self.fail(&key))?;
            json.map(|json| from_json(&key, &json)).transpose()
        })
        .await
    }

    async fn delete_session(&self, token: &SessionToken) -> Result<(), StoreError> {
        let key = self.keys().session(token.as_str());
        self.bounded(&key, async {
            redis::cmd("DEL")
                .arg(&key)
                .exec_async(&mut self.conn())
                .await
                .map_err(self.fail(&key))
        })
        .await
    }

    async fn use_nonce(&self, nonce: u64, ttl: Duration) -> Result<bool, StoreError> {
        let key = self.keys().nonce(nonce);
        self.bounded(&key, async {
            let reply: Value = redis::cmd("SET")
                .arg(&key)
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms(ttl))
                .query_async(&mut self.conn())
                .await
                .map_err(self.fail(&key))?;
            Ok(!matches!(reply, Value::Nil))
        })
        .await
    }

    async fn acquire_lease(
        &self,
        zone: &ZoneId,
        shard: &ShardId,
        ttl: Duration,
    ) -> Result<AcquireOutcome, StoreError> {
        let key = self.keys().lease(zone);
        check_zone(&key, zone)?;
        check_shard(&key, shard)?;
        self.bounded(&key, async {
            let (status, owner, epoch): (i64, String, String) = ACQUIRE_LEASE
                .key(&key)
                .key(self.keys().lease_epoch(zone))
                .arg(shard.as_str())
                .arg(lease_ttl_ms(ttl))
                .invoke_async(&mut self.conn())
                .await
                .map_err(self.fail(&key))?;
            let lease = Lease {
                zone: zone.clone(),
                owner: parse_shard(&key, "owner", &owner)?,
                epoch: parse_u64(&key, "epoch", &epoch)?,
            };
            Ok(if status == 1 {
                AcquireOutcome::Acquired(lease)
            } else {
                AcquireOutcome::Held(lease)
            })
        })
        .await
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        let key = self.keys().lease(&lease.zone);
        check_zone(&key, &lease.zone)?;
        self.bounded(&key, async {
            let renewed: i64 = RENEW_LEASE
                .key(&key)
                .arg(lease.owner.as_str())
                .arg(lease.epoch)
                .arg(lease_ttl_ms(ttl))
                .invoke_async(&mut self.conn())
                .await
                .map_err(self.fail(&key))?;
            Ok(renewed == 1)
        })
        .await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<bool, StoreError> {
        let key = self.keys().lease(&lease.zone);
        check_zone(&key, &lease.zone)?;
        self.bounded(&key, async {
            let released: i64 = RELEASE_LEASE
                .key(&key)
                .arg(lease.owner.as_str())
                .arg(lease.epoch)
                .invoke_async(&mut self.conn())
                .await
                .map_err(self.fail(&key))?;
            Ok(released == 1)
        })
        .await
    }

    async fn get_lease(&self, zone: &ZoneId) -> Result<Option<Lease>, StoreError> {
        let key = self.keys().lease(zone);
        check_zone(&key, zone)?;
        self.bounded(&key, async {
            let (owner, epoch): (Option<String>, Option<String>) = redis::cmd("HMGET")
                .arg(&key)
                .arg("owner")
                .arg("epoch")
                .query_async(&mut self.conn())
                .await
                .map_err(self.fail(&key))?;
            let Some(owner) = owner else { return Ok(None) };
            Ok(Some(Lease {
                zone: zone.clone(),
                owner: parse_shard(&key, "owner", &owner)?,
                epoch: parse_u64(&key, "epoch", epoch.as_deref().unwrap_or_default())?,
            }))
        })
        .await
    }

    async fn claim_player(
        &self,
        player: PlayerId,
        lease: &Lease,
    ) -> Result<ClaimOutcome, StoreError> {
        let key = self.keys().player(player);
        check_lease(&key, lease)?;
        self.bounded(&key, async {
            let reply: RecordReply = CLAIM_PLAYER
                .key(&key)
                .arg(lease.owner.as_str())
                .arg(lease.zone.as_str())
                .arg(lease.epoch)
                .invoke_async(&mut self.conn())
                .await
                .map_err(self.fail(&key))?;
            let (status, record) = parse_reply(&key, player, reply)?;
            let record = written(&key, record)?;
            Ok(if status == 1 {
                ClaimOutcome::Claimed {
                    seq: record.seq,
                    state: record.state,
                }
            } else {
                ClaimOutcome::Stale {
                    epoch: record.epoch,
                }
            })
        })
        .await
    }

    async fn transfer_player(
        &self,
        player: PlayerId,
        from: &Lease,
        to: &ShardId,
        to_zone: &ZoneId,
        state: &PlayerState,
    ) -> Result<TransferOutcome, StoreError> {
        let key = self.keys().player(player);
        check_lease(&key, from)?;
        check_shard(&key, to)?;
        check_zone(&key, to_zone)?;
        check_state(&key, state)?;
        let state = to_json(&key, state)?;
        self.bounded(&key, async {
            let reply: RecordReply = TRANSFER_PLAYER
                .key(&key)
                .arg(from.owner.as_str())
                .arg(from.zone.as_str())
                .arg(from.epoch)
                .arg(to.as_str())
                .arg(to_zone.as_str())
                .arg(state)
                .invoke_async(&mut self.conn())
                .await
                .map_err(self.fail(&key))?;
            let (status, record) = parse_reply(&key, player, reply)?;
            Ok(if status == 1 {
                TransferOutcome::Transferred {
                    seq: written(&key, record)?.seq,
                }
            } else {
                TransferOutcome::NotOwner(record)
            })
        })
        .await
    }

    async fn accept_player(
        &self,
        player: PlayerId,
        lease: &Lease,
        seq: Option<u64>,
    ) -> Result<AcceptOutcome, StoreError> {
        let key = self.keys().player(player);
        check_lease(&key, lease)?;
        self.bounded(&key, async {
            let reply: RecordReply = ACCEPT_PLAYER
                .key(&key)
                .arg(lease.owner.as_str())
                .arg(lease.zone.as_str())
                .arg(lease.epoch)
                .arg(seq.map(|seq| seq.to_string()).unwrap_or_default())
                .invoke_async(&mut self.conn())
                .await
                .map_err(self.fail(&key))?;
            let (status, record) = parse_reply(&key, player, reply)?;
            Ok(if status == 1 {
                let record = written(&key, record)?;
                AcceptOutcome::Accepted {
                    seq: record.seq,
                    state: record.state,
                }
            } else {
                AcceptOutcome::NotOffered(record)
            })
        })
        .await
    }

    async fn checkpoint_players(
        &self,
        lease: &Lease,
        states: &[(PlayerId, PlayerState)],
    ) -> Result<Vec<bool>, StoreError> {
        let lease_key = self.keys().lease(&lease.zone);
        check_lease(&lease_key, lease)?;
        if states.is_empty() {
            return Ok(Vec::new());
        }
        let mut calls = Vec::with_capacity(states.len());
        for (player, state) in states {
            let key = self.keys().player(*player);
            check_state(&key, state)?;
            let json = to_json(&key, state)?;
            calls.push((key, json));
        }
        // One round trip: one script call per player (each on its own key, so each may live on
        // another Cluster node: one pipeline per slot there), pipelined.
        let cmds: Vec<redis::Cmd> = calls
            .iter()
            .map(|(key, json)| {
                let mut cmd = redis::cmd("EVALSHA");
                cmd.arg(CHECKPOINT_PLAYER.get_hash())
                    .arg(1)
                    .arg(key)
                    .arg(lease.owner.as_str())
                    .arg(lease.zone.as_str())
                    .arg(lease.epoch)
                    .arg(json);
                cmd
            })
            .collect();
        let as_int = |replies: Vec<RedisResult<Value>>| -> Vec<RedisResult<i64>> {
            replies
                .into_iter()
                .map(|reply| reply.and_then(|value| Ok(redis::from_redis_value(value)?)))
                .collect()
        };
        self.bounded(&lease_key, async {
            let mut conn = self.conn();
            let mut replies = as_int(
                self.query_each(&cmds)
                    .await
                    .map_err(self.fail(&lease_key))?,
            );
            let unloaded = replies.iter().any(|r| {
                r.as_ref()
                    .is_err_and(|e| e.kind() == ErrorKind::Server(ServerErrorKind::NoScript))
            });
            if unloaded {
                // Redis lost its script cache (a restart): load the script, then send again
                // (idempotent: each call writes the same state under the same fence).
                CHECKPOINT_PLAYER
                    .prepare_invoke()
                    .load_async(&mut conn)
                    .await
                    .map_err(self.fail(&lease_key))?;
                replies = as_int(
                    self.query_each(&cmds)
                        .await
                        .map_err(self.fail(&lease_key))?,
                );
            }
            calls
                .iter()
                .zip(replies)
                .map(|((key, _), reply)| reply.map(|n| n == 1).map_err(self.fail(key)))
                .collect()
        })
        .await
    }

    async fn release_player(
        &self,
        player: PlayerId,
        lease: &Lease,
        state: Option<&PlayerState>,
    ) -> Result<bool, StoreError> {
        let key = self.keys().player(player);
        check_lease(&key, lease)?;
        let state = match state {
            Some(state) => {
                check_state(&key, state)?;
                to_json(&key, state)?
            }
            None => String::new(),
        };
        self.bounded(&key, async {
            let released: i64 = RELEASE_PLAYER
                .key(&key)
                .arg(lease.owner.as_str())
                .arg(lease.zone.as_str())
                .arg(lease.epoch)
                .arg(state)
                .invoke_async(&mut self.conn())
                .await
                .map_err(self.fail(&key))?;
            Ok(released == 1)
        })
        .await
    }

    async fn get_ownership(&self, player: PlayerId) -> Result<Option<Ownership>, StoreError> {
        let key = self.keys().player(player);
        self.bounded(&key, async {
            let fields: RecordFields = record_fields(&key)
                .query_async(&mut self.conn())
                .await
                .map_err(self.fail(&key))?;
            parse_record(&key, player, fields)
        })
        .await
    }

    async fn owned_players(&self) -> Result<Vec<Ownership>, StoreError> {
        let pattern = self.keys().player_pattern();
        // A cluster is scanned master by master: each holds its own slots' keys.
        let nodes: Vec<Option<(String, u16)>> = match &self.conn {
            Conn::Cluster(conn) => {
                let mut conn = conn.clone();
                let reply = self
                    .bounded(&pattern, async {
                        conn.route_command(
                            redis::cmd("CLUSTER").arg("SLOTS").clone(),
                            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                        )
                        .await
                        .map_err(self.fail(&pattern))
                    })
                    .await?;
                parse_masters(reply)
                    .ok_or_else(|| not_a_stream_reply(&pattern, "CLUSTER SLOTS"))?
                    .into_iter()
                    .map(Some)
                    .collect()
            }
            Conn::Manager(_) | Conn::Direct(_) => vec![None],
        };
        let mut owned = Vec::new();
        for node in &nodes {
            self.scan_owned(&pattern, node.as_ref(), &mut owned).await?;
        }
        // SCAN may return a key more than once.
        owned.sort_by_key(|r| r.player);
        owned.dedup_by_key(|r| r.player);
        Ok(owned)
    }

    async fn send_handoff(&self, to: &ShardId, notice: &HandoffNotice) -> Result<(), StoreError> {
        let key = self.keys().inbox(to);
        check_shard(&key, to)?;
        check_notice(&key, notice)?;
        let json = to_json(&key, notice)?;
        self.bounded(&key, async {
            let _id: String = SEND_NOTICE
                .key(&key)
                .arg(INBOX_GROUP)
                .arg(INBOX_MAX_LEN)
                .arg(json)
                .invoke_async(&mut self.conn())
                .await
                .map_err(self.fail(&key))?;
            Ok(())
        })
        .await
    }

    async fn read_inbox(
        &self,
        shard: &ShardId,
        max: usize,
        block: Duration,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        let key = self.keys().inbox(shard);
        check_shard(&key, shard)?;
        let block = block.min(MAX_INBOX_BLOCK);
        let max = max.min(INBOX_MAX_LEN);
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut read = InboxRead::default();
        let claimed: Value = self
            .bounded(&key, async {
                CLAIM_NOTICES
                    .key(&key)
                    .arg(INBOX_GROUP)
                    .arg(shard.as_str())
                    .arg(ttl_ms(INBOX_REDELIVER_AFTER))
                    .arg(max)
                    .invoke_async(&mut self.conn())
                    .await
                    .map_err(self.fail(&key))
            })
            .await?;
        for (id, fields, deliveries) in parse_claimed(&key, claimed)? {
            read.decode(&key, id, &fields, deliveries);
        }
        let room = max.saturating_sub(read.len());
        if room > 0 {
            let mut new = redis::cmd("XREADGROUP");
            new.arg("GROUP")
                .arg(INBOX_GROUP)
                .arg(shard.as_str())
                .arg("COUNT")
                .arg(room);
            // Redelivered entries are answered at once; otherwise wait for a new one.
            let blocking = !block.is_zero() && read.len() == 0;
            if blocking {
                new.arg("BLOCK").arg(ttl_ms(block));
            }
            new.arg("STREAMS").arg(&key).arg(">");
            let reply: Value = if blocking {
                self.blocking_query(&key, &new, block).await?
            } else {
                self.bounded(&key, async {
                    new.query_async(&mut self.conn())
                        .await
                        .map_err(self.fail(&key))
                })
                .await?
            };
            for (id, fields) in parse_stream_read(&key, reply)? {
                read.decode(&key, id, &fields, 1);
            }
        }
        if !read.malformed.is_empty() {
            // Acknowledged so that they are never delivered again: no version can read them. If
            // that fails they come back later and are skipped again; the good ones are answered.
            if let Err(error) = self.ack_ids(&key, &read.malformed).await {
                tracing::warn!(stream = %key, %error, "cannot acknowledge malformed inbox entries");
            }
        }
        Ok(read.entries)
    }

    async fn ack_inbox(&self, shard: &ShardId, ids: &[String]) -> Result<(), StoreError> {
        let key = self.keys().inbox(shard);
        check_shard(&key, shard)?;
        for id in ids {
            parse_entry_id(&key, id)?;
        }
        if ids.is_empty() {
            return Ok(());
        }
        self.ack_ids(&key, ids).await
    }

    async fn publish_ghosts(&self, zone: &ZoneId, batch: &[u8]) -> Result<(), StoreError> {
        let channel = self.keys().ghosts(zone);
        check_zone(&channel, zone)?;
        self.bounded(&channel, async {
            redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(batch)
                .exec_async(&mut self.conn())
                .await
                .map_err(self.fail(&channel))
        })
        .await
    }

    async fn subscribe_ghosts(&self, zone: &ZoneId) -> Result<mpsc::Receiver<Vec<u8>>, StoreError> {
        let channel = self.keys().ghosts(zone);
        check_zone(&channel, zone)?;
        // The first subscription is made here, so that batches published after this call
        // returns are delivered, and an unreachable Redis is reported to the caller.
        let clients = self.shared.dedicated.pubsub_clients();
        let pubsub = self
            .bounded(&channel, async {
                subscribe(&clients, 0, &channel)
                    .await
                    .map_err(self.fail(&channel))
            })
            .await?;
        let (tx, rx) = mpsc::channel(GHOST_BUFFER);
        tokio::spawn(forward_ghosts(
            clients,
            channel,
            pubsub,
            tx,
            self.shared.timeout,
        ));
        Ok(rx)
    }
}

/// The ownership fields of a player hash, in the order [`record_fields`] reads them: owner,
/// zone, epoch, seq, from, state.
type RecordFields = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// What the player scripts answer: a status, then [`RecordFields`].
type RecordReply = (
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// `ZSCORE <leaderboard> <player's member>`.
fn score_cmd(leaderboard: &str, player: PlayerId) -> redis::Cmd {
    let mut cmd = redis::cmd("ZSCORE");
    cmd.arg(leaderboard)
        .arg(Keyspace::leaderboard_member(player));
    cmd
}

/// `HMGET <key> owner zone epoch seq from state`.
fn record_fields(key: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("HMGET");
    cmd.arg(key)
        .arg("owner")
        .arg("zone")
        .arg("epoch")
        .arg("seq")
        .arg("from")
        .arg("state");
    cmd
}

fn parse_u64(key: &str, field: &str, text: &str) -> Result<u64, StoreError> {
    text.parse().map_err(|_| StoreError::Corrupt {
        key: key.to_owned(),
        detail: format!("field `{field}` holds `{text}`, not an unsigned integer"),
    })
}

fn parse_shard(key: &str, field: &str, text: &str) -> Result<ShardId, StoreError> {
    ShardId::new(text).map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        detail: format!("field `{field}`: {e}"),
    })
}

fn parse_zone(key: &str, field: &str, text: &str) -> Result<ZoneId, StoreError> {
    ZoneId::new(text).map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        detail: format!("field `{field}`: {e}"),
    })
}

/// A player's ownership record from its fields; `None` if it never had an owner (no `owner`
/// and no `seq`: a profile only, or no hash at all).
fn parse_record(
    key: &str,
    player: PlayerId,
    (owner, zone, epoch, seq, from, state): RecordFields,
) -> Result<Option<Ownership>, StoreError> {
    if owner.is_none() && seq.is_none() {
        return Ok(None);
    }
    let number =
        |field: &str, text: Option<String>| text.map_or(Ok(0), |text| parse_u64(key, field, &text));
    Ok(Some(Ownership {
        player,
        owner: owner.map(|o| parse_shard(key, "owner", &o)).transpose()?,
        zone: zone.map(|z| parse_zone(key, "zone", &z)).transpose()?,
        epoch: number("epoch", epoch)?,
        seq: number("seq", seq)?,
        from: from.map(|f| parse_shard(key, "from", &f)).transpose()?,
        state: state
            .map(|json| from_json::<PlayerState>(key, &json))
            .transpose()?,
    }))
}

/// The status and record of a player script's reply.
fn parse_reply(
    key: &str,
    player: PlayerId,
    (status, owner, zone, epoch, seq, from, state): RecordReply,
) -> Result<(i64, Option<Ownership>), StoreError> {
    if !matches!(status, 0 | 1) {
        return Err(StoreError::Corrupt {
            key: key.to_owned(),
            detail: format!("unexpected script status {status}"),
        });
    }
    let record = parse_record(key, player, (owner, zone, epoch, seq, from, state))?;
    Ok((status, record))
}

/// The record a script has just written (so it exists).
fn written(key: &str, record: Option<Ownership>) -> Result<Ownership, StoreError> {
    record.ok_or_else(|| StoreError::Corrupt {
        key: key.to_owned(),
        detail: "the record is missing right after a write".to_owned(),
    })
}

/// A bulk or simple string reply as text.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// The field/value pairs of a stream entry (a flat array, or a map in RESP3).
fn entry_fields(value: &Value) -> Option<Vec<(String, Option<String>)>> {
    match value {
        Value::Array(items) => Some(
            items
                .chunks(2)
                .filter_map(|pair| match pair {
                    [field, value] => Some((text(field)?, text(value))),
                    _ => None,
                })
                .collect(),
        ),
        Value::Map(pairs) => Some(
            pairs
                .iter()
                .filter_map(|(field, value)| Some((text(field)?, text(value))))
                .collect(),
        ),
        Value::Nil => Some(Vec::new()),
        _ => None,
    }
}

/// A stream entry id and its fields (`[id, [field, value, ...]]`).
type RawEntry = (String, Vec<(String, Option<String>)>);

/// A claimed stream entry: id, fields and delivery count.
type ClaimedEntry = (String, Vec<(String, Option<String>)>, u32);

fn not_a_stream_reply(key: &str, what: &str) -> StoreError {
    StoreError::Corrupt {
        key: key.to_owned(),
        detail: format!("unexpected {what} reply"),
    }
}

fn parse_raw_entry(key: &str, value: &Value) -> Result<RawEntry, StoreError> {
    let Value::Array(parts) = value else {
        return Err(not_a_stream_reply(key, "stream entry"));
    };
    match parts.as_slice() {
        [id, fields, ..] => {
            let id = text(id).ok_or_else(|| not_a_stream_reply(key, "stream entry id"))?;
            let fields =
                entry_fields(fields).ok_or_else(|| not_a_stream_reply(key, "stream entry"))?;
            Ok((id, fields))
        }
        _ => Err(not_a_stream_reply(key, "stream entry")),
    }
}

/// The entries of a [`CLAIM_NOTICES`] reply, with their delivery counts.
fn parse_claimed(key: &str, reply: Value) -> Result<Vec<ClaimedEntry>, StoreError> {
    let Value::Array(items) = reply else {
        return Err(not_a_stream_reply(key, "XAUTOCLAIM"));
    };
    let mut claimed = Vec::with_capacity(items.len());
    for item in &items {
        let Value::Array(parts) = item else {
            return Err(not_a_stream_reply(key, "XAUTOCLAIM"));
        };
        let [id, fields, deliveries] = parts.as_slice() else {
            return Err(not_a_stream_reply(key, "XAUTOCLAIM"));
        };
        let id = text(id).ok_or_else(|| not_a_stream_reply(key, "XAUTOCLAIM"))?;
        let fields = entry_fields(fields).ok_or_else(|| not_a_stream_reply(key, "XAUTOCLAIM"))?;
        let deliveries = match deliveries {
            Value::Int(n) => u32::try_from(*n).unwrap_or(u32::MAX),
            _ => return Err(not_a_stream_reply(key, "XPENDING")),
        };
        claimed.push((id, fields, deliveries));
    }
    Ok(claimed)
}

/// The entries of an `XREADGROUP` reply on one stream (`nil` when a blocking read timed out).
fn parse_stream_read(key: &str, reply: Value) -> Result<Vec<RawEntry>, StoreError> {
    let streams = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams
            .into_iter()
            .map(|stream| match stream {
                Value::Array(mut parts) if parts.len() == 2 => {
                    Ok(parts.pop().expect("invariant: two parts"))
                }
                _ => Err(not_a_stream_reply(key, "XREADGROUP")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Value::Map(streams) => streams.into_iter().map(|(_, entries)| entries).collect(),
        _ => return Err(not_a_stream_reply(key, "XREADGROUP")),
    };
    let mut entries = Vec::new();
    for stream in streams {
        let Value::Array(items) = stream else {
            return Err(not_a_stream_reply(key, "XREADGROUP"));
        };
        for item in &items {
            entries.push(parse_raw_entry(key, item)?);
        }
    }
    Ok(entries)
}

/// The notices of one read, and the ids of entries no version of Meridian can read.
#[derive(Default)]
struct InboxRead {
    entries: Vec<InboxEntry>,
    malformed: Vec<String>,
}

impl InboxRead {
    fn len(&self) -> usize {
        self.entries.len() + self.malformed.len()
    }

    /// Decodes an entry's `notice` field; a malformed entry is logged and set aside.
    fn decode(
        &mut self,
        key: &str,
        id: String,
        fields: &[(String, Option<String>)],
        deliveries: u32,
    ) {
        let json = fields
            .iter()
            .find(|(field, _)| field == "notice")
            .and_then(|(_, value)| value.as_deref());
        let decoded = match json {
            None => Err("no `notice` field".to_owned()),
            Some(json) => serde_json::from_str::<HandoffNotice>(json)
                .map_err(|e| format!("bad JSON: {e}"))
                .and_then(|notice| {
                    check_notice(key, &notice)
                        .map(|()| notice)
                        .map_err(|e| e.to_string())
                }),
        };
        match decoded {
            Ok(notice) => self.entries.push(InboxEntry {
                id,
                notice,
                deliveries,
            }),
            Err(why) => {
                tracing::warn!(
                    stream = %key,
                    id = %id,
                    error = %why,
                    "skipping a malformed inbox entry (acknowledged, never delivered again)"
                );
                self.malformed.push(id);
            }
        }
    }
}

/// A dedicated pub/sub connection subscribed to `channel`, on the first of `clients` that
/// answers, starting with `clients[first]` (a cluster's nodes: a message published on any node
/// reaches every node's subscribers).
async fn subscribe(clients: &[Client], first: usize, channel: &str) -> Result<PubSub, RedisError> {
    let mut last = RedisError::from((ErrorKind::Client, "no Redis node to subscribe on"));
    let start = first.checked_rem(clients.len()).unwrap_or(0);
    for client in clients[start..].iter().chain(&clients[..start]) {
        let attempt = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            Ok::<_, RedisError>(pubsub)
        };
        match attempt.await {
            Ok(pubsub) => return Ok(pubsub),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Why [`pump_ghosts`] returned.
enum PumpEnd {
    /// The receiver was dropped: the subscription ends.
    ReceiverGone,
    /// The connection closed or stopped answering.
    ConnectionLost(String),
}

/// The background task of [`Store::subscribe_ghosts`]: forwards batches until the receiver
/// is dropped, re-subscribing with backoff after a lost connection (one warning per outage).
async fn forward_ghosts(
    clients: Vec<Client>,
    channel: String,
    first: PubSub,
    tx: mpsc::Sender<Vec<u8>>,
    timeout: Duration,
) {
    let mut next = Some(first);
    // Where the next re-subscription starts: after a failed or timed out attempt, the next node
    // (an unreachable node that swallows packets would otherwise use up every attempt).
    let mut start: usize = 0;
    let mut backoff = GHOST_RESUBSCRIBE_MIN;
    let mut in_outage = false;
    loop {
        let pubsub = match next.take() {
            Some(pubsub) => pubsub,
            None => {
                let attempt = tokio::select! {
                    () = tx.closed() => return,
                    attempt = tokio::time::timeout(timeout, subscribe(&clients, start, &channel)) => attempt,
                };
                match attempt {
                    Ok(Ok(pubsub)) => {
                        tracing::info!(%channel, "ghost subscription restored");
                        in_outage = false;
                        backoff = GHOST_RESUBSCRIBE_MIN;
                        pubsub
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%channel, %error, "ghost re-subscription failed");
                        start = start.wrapping_add(1);
                        tokio::select! {
                            () = tx.closed() => return,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(GHOST_RESUBSCRIBE_MAX);
                        continue;
                    }
                    Err(_elapsed) => {
                        tracing::debug!(%channel, "ghost re-subscription timed out");
                        start = start.wrapping_add(1);
                        backoff = (backoff * 2).min(GHOST_RESUBSCRIBE_MAX);
                        continue;
                    }
                }
            }
        };
        match pump_ghosts(pubsub, &tx, timeout, GHOST_PING_EVERY).await {
            PumpEnd::ReceiverGone => {
                tracing::debug!(%channel, "ghost receiver dropped: unsubscribed");
                return;
            }
            PumpEnd::ConnectionLost(error) => {
                if !in_outage {
                    tracing::warn!(%channel, %error, "ghost subscription lost; re-subscribing");
                    in_outage = true;
                }
            }
        }
    }
}

/// Forwards the messages of one subscribed connection; pings it now and then so that a
/// silently dead connection is noticed.
async fn pump_ghosts(
    pubsub: PubSub,
    tx: &mpsc::Sender<Vec<u8>>,
    timeout: Duration,
    ping_every: Duration,
) -> PumpEnd {
    let (mut sink, mut stream) = pubsub.split();
    let mut ping = tokio::time::interval(ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.reset();
    loop {
        tokio::select! {
            () = tx.closed() => return PumpEnd::ReceiverGone,
            message = stream.next() => {
                let Some(message) = message else {
                    return PumpEnd::ConnectionLost("connection closed".to_owned());
                };
                match tx.try_send(message.get_payload_bytes().to_vec()) {
                    Ok(()) => {}
                    // Ghosts are refreshed every tick: a late batch is worth nothing.
                    Err(TrySendError::Full(_)) => {
                        tracing::trace!("ghost receiver is behind: batch dropped");
                    }
                    Err(TrySendError::Closed(_)) => return PumpEnd::ReceiverGone,
                }
            }
            _ = ping.tick() => {
                match tokio::time::timeout(timeout, sink.ping::<Value>()).await {
                    Ok(Ok(_pong)) => {}
                    Ok(Err(error)) => return PumpEnd::ConnectionLost(error.to_string()),
                    Err(_elapsed) => {
                        return PumpEnd::ConnectionLost("no answer to PING".to_owned());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_parse_from_redis_replies() {
        assert_eq!(parse_score("k", None), Ok(0));
        assert_eq!(parse_score("k", Some("15")), Ok(15));
        assert_eq!(parse_score("k", Some("15.0")), Ok(15));
        assert_eq!(parse_score("k", Some("9007199254740991")), Ok(MAX_SCORE));
        assert!(matches!(
            parse_score("k", Some("1.5")),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            parse_score("k", Some("-1")),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            parse_score("k", Some("inf")),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn client_errors_map_to_typed_errors_naming_the_key() {
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(
            classify("mer:k", &io, 500),
            StoreError::Unavailable { key, .. } if key == "mer:k"
        ));
        let timed_out = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert_eq!(
            classify("mer:k", &timed_out, 500),
            StoreError::Timeout {
                key: "mer:k".into(),
                after_ms: 500
            }
        );
    }

    #[tokio::test]
    async fn connecting_to_nothing_fails_fast_naming_the_url_without_its_password() {
        // Port 1 on loopback: nothing listens there without root.
        let url = "redis://app:s3cret@127.0.0.1:1/0";
        let started = Instant::now();
        let err = RedisStore::connect(url, &StoreConfig::default())
            .await
            .expect_err("nothing listens on port 1");
        assert!(started.elapsed() < Duration::from_secs(2));
        let StoreError::Connect { url: shown, .. } = &err else {
            panic!("expected Connect, got {err:?}");
        };
        assert_eq!(shown, "redis://app:<redacted>@127.0.0.1:1/0");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    /// Pings of a subscribed connection are answered (a failed ping would end the pump and
    /// make the task re-subscribe, losing batches), and batches keep flowing between them.
    #[cfg(feature = "testing")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_subscribed_connection_answers_pings_and_keeps_forwarding() {
        let server = crate::testing::RedisServer::start()
            .await
            .expect("start redis-server");
        let client = Client::open(server.url()).expect("url");
        let pubsub = subscribe(std::slice::from_ref(&client), 0, "ch")
            .await
            .expect("subscribe");
        let (tx, mut rx) = mpsc::channel(GHOST_BUFFER);
        let pump = tokio::spawn(async move {
            pump_ghosts(
                pubsub,
                &tx,
                Duration::from_secs(5),
                Duration::from_millis(10),
            )
            .await
        });
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        for n in 0..20_u8 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            redis::cmd("PUBLISH")
                .arg("ch")
                .arg(&[n][..])
                .exec_async(&mut conn)
                .await
                .expect("PUBLISH");
            let batch = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("a batch in time")
                .expect("the pump is alive");
            assert_eq!(batch, [n]);
        }
        assert!(!pump.is_finished(), "pings were answered");
        drop(rx);
        let end = pump.await.expect("task");
        assert!(matches!(end, PumpEnd::ReceiverGone));
    }

    #[tokio::test]
    async fn bad_urls_are_refused_before_connecting() {
        let err = RedisStore::connect("http://x", &StoreConfig::default())
            .await
            .expect_err("not redis");
        assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    }
}
