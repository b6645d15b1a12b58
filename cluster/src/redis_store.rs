//! [`RedisStore`]: the Redis adapter of the [`Store`] port.
//!
//! - One [`ConnectionManager`] (a multiplexed connection that reconnects by itself after Redis
//!   restarts or the network drops), shared by every clone of the store.
//! - Every operation is bounded by [`StoreConfig::op_timeout_ms`] as a whole, round trips
//!   included, and maps failures to [`StoreError`] naming the key.
//! - Multi-command operations are pipelined; operations that must be atomic are Lua scripts on
//!   a single key (claiming a name, adding to a score), so they run unchanged on Redis Cluster.
//! - Expiry is Redis's own (`SET … PX`): no clock is compared across machines.
//!
//! Where each record lives is documented in [`crate::keyspace`].

use crate::clock::unix_now_ms;
use crate::config::{check_redis_url, redact_redis_url};
use crate::error::StoreError;
use crate::keyspace::Keyspace;
use crate::ownership::{
    AcceptOutcome, AcquireOutcome, ClaimOutcome, HandoffNotice, InboxEntry, Lease, Ownership,
    PlayerState, TransferOutcome,
};
use crate::store::{
    LeaderboardEntry, LiveShard, LoadedProfile, MAX_LEADERBOARD, MAX_SCORE, Profile, Session,
    SessionToken, ShardRecord, Store, StoreConfig, ttl_ms,
};
use meridian_protocol::{PlayerId, ShardId, ZoneId};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, Client, RedisError, Script, Value};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

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

/// The Redis adapter. Cheap to clone: clones share one connection manager.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    shared: Arc<Shared>,
}

struct Shared {
    keys: Keyspace,
    timeout: Duration,
    /// The URL with its password redacted.
    url: String,
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
            conn,
            shared: Arc::new(Shared {
                keys,
                timeout,
                url: shown,
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

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
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

    /// Maps a client error on `key` to a [`StoreError`].
    fn fail(&self, key: &str) -> impl Fn(RedisError) -> StoreError {
        let key = key.to_owned();
        move |err| classify(&key, &err, self.timeout_ms())
    }
}

/// What a Redis client error means for the caller.
fn classify(key: &str, err: &RedisError, timeout_ms: u64) -> StoreError {
    use redis::ErrorKind;
    if err.is_timeout() {
        return StoreError::Timeout {
            key: key.to_owned(),
            after_ms: timeout_ms,
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
        self.bounded(&key, async {
            redis::pipe()
                .cmd("SET")
                .arg(&key)
                .arg(value)
                .arg("PX")
                .arg(ttl_ms(ttl))
                .ignore()
                .cmd("ZADD")
                .arg(&index)
                .arg(now_ms)
                .arg(record.id.as_str())
                .ignore()
                .exec_async(&mut self.conn())
                .await
                .map_err(self.fail(&key))
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
            let mut gets = redis::pipe();
            for id in &ids {
                gets.cmd("GET").arg(self.keys().shard(id));
            }
            let values: Vec<Option<String>> = gets
                .query_async(&mut conn)
                .await
                .map_err(self.fail(&index))?;
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
        self.bounded(&key, async {
            redis::pipe()
                .cmd("DEL")
                .arg(&key)
                .ignore()
                .cmd("ZREM")
                .arg(&index)
                .arg(shard.as_str())
                .ignore()
                .exec_async(&mut self.conn())
                .await
                .map_err(self.fail(&key))
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
            let (stored_name, score): (Option<String>, Option<String>) = redis::pipe()
                .cmd("HSETNX")
                .arg(&player_key)
                .arg("name")
                .arg(name)
                .ignore()
                .cmd("HSETNX")
                .arg(&player_key)
                .arg("created_ms")
                .arg(unix_now_ms())
                .ignore()
                .cmd("HGET")
                .arg(&player_key)
                .arg("name")
                .cmd("ZSCORE")
                .arg(&leaderboard)
                .arg(Keyspace::leaderboard_member(player))
                .query_async(&mut conn)
                .await
                .map_err(self.fail(&player_key))?;
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
            let (name, score): (Option<String>, Option<String>) = redis::pipe()
                .cmd("HGET")
                .arg(&player_key)
                .arg("name")
                .cmd("ZSCORE")
                .arg(&leaderboard)
                .arg(Keyspace::leaderboard_member(player))
                .query_async(&mut self.conn())
                .await
                .map_err(self.fail(&player_key))?;
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
            let mut names = redis::pipe();
            for (player, _) in &ranked {
                names
                    .cmd("HGET")
                    .arg(self.keys().player(*player))
                    .arg("name");
            }
            let names: Vec<Option<String>> = names
                .query_async(&mut conn)
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

    #[tokio::test]
    async fn bad_urls_are_refused_before_connecting() {
        let err = RedisStore::connect("http://x", &StoreConfig::default())
            .await
            .expect_err("not redis");
        assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    }
}

// SCAFFOLD: removed once the ownership operations are implemented.
fn scaffold(key: &str) -> StoreError {
    StoreError::Unavailable {
        key: key.to_owned(),
        detail: "not implemented yet".to_owned(),
    }
}
