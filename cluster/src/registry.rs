//! [`Registry`]: the shard registry on top of a [`Store`]. Shards announce themselves with a
//! heartbeat task ([`Registry::spawn_heartbeat`]); the lobby lists the live ones
//! ([`Registry::live_shards`]). A shard that stops heartbeating (crashed, partitioned)
//! disappears once its TTL passes; one that shuts down cleanly deregisters at once.

use crate::error::StoreError;
use crate::store::{LiveShard, ShardRecord, Store, StoreHandle};
use meridian_protocol::ShardId;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// Default [`RegistryConfig::heartbeat_interval_ms`].
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 1_000;
/// Default [`RegistryConfig::ttl_ms`].
pub const DEFAULT_SHARD_TTL_MS: u64 = 3_000;
/// A failing heartbeat loop warns on the first failure and then once per this many.
const WARN_EVERY_FAILURES: u32 = 10;

/// Timing of the shard registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// How often a shard heartbeats, milliseconds (default 1000).
    pub heartbeat_interval_ms: u64,
    /// How long after its last heartbeat a shard counts as dead, milliseconds (default 3000).
    /// Must exceed the interval, so that one late heartbeat does not drop a shard.
    pub ttl_ms: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: DEFAULT_HEARTBEAT_INTERVAL_MS,
            ttl_ms: DEFAULT_SHARD_TTL_MS,
        }
    }
}

/// Why a [`RegistryConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryConfigError {
    /// A zero heartbeat interval would spin.
    #[error("heartbeat_interval_ms must be at least 1")]
    ZeroInterval,
    /// The TTL does not exceed the heartbeat interval: live shards would flicker out.
    #[error("ttl_ms {ttl_ms} must be greater than heartbeat_interval_ms {interval_ms}")]
    TtlNotAboveInterval {
        /// The heartbeat interval given, milliseconds.
        interval_ms: u64,
        /// The TTL given, milliseconds.
        ttl_ms: u64,
    },
}

impl RegistryConfig {
    /// Checks the timing.
    pub fn validate(&self) -> Result<(), RegistryConfigError> {
        if self.heartbeat_interval_ms == 0 {
            return Err(RegistryConfigError::ZeroInterval);
        }
        if self.ttl_ms <= self.heartbeat_interval_ms {
            return Err(RegistryConfigError::TtlNotAboveInterval {
                interval_ms: self.heartbeat_interval_ms,
                ttl_ms: self.ttl_ms,
            });
        }
        Ok(())
    }

    /// [`RegistryConfig::heartbeat_interval_ms`] as a duration.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// [`RegistryConfig::ttl_ms`] as a duration.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }
}

/// The shard registry over a store (by default the run-time chosen [`StoreHandle`]). Cheap to
/// clone when the store is.
#[derive(Debug, Clone)]
pub struct Registry<S = StoreHandle> {
    store: S,
    cfg: RegistryConfig,
}

impl<S: Store> Registry<S> {
    /// A registry on `store` with checked timing.
    pub fn new(store: S, cfg: RegistryConfig) -> Result<Self, RegistryConfigError> {
        cfg.validate()?;
        Ok(Self { store, cfg })
    }

    /// The timing in use.
    pub fn config(&self) -> &RegistryConfig {
        &self.cfg
    }

    /// The store underneath.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// One heartbeat: registers or refreshes `record` for [`RegistryConfig::ttl_ms`].
    pub async fn heartbeat(&self, record: &ShardRecord) -> Result<(), StoreError> {
        self.store.heartbeat_shard(record, self.cfg.ttl()).await
    }

    /// The shards heartbeated within the TTL, ordered by id.
    pub async fn live_shards(&self) -> Result<Vec<LiveShard>, StoreError> {
        self.store.live_shards().await
    }

    /// Removes a shard at once (it stops being routed to before its TTL passes).
    pub async fn deregister(&self, shard: &ShardId) -> Result<(), StoreError> {
        self.store.deregister_shard(shard).await
    }

    /// Spawns a tokio task that heartbeats every [`RegistryConfig::heartbeat_interval_ms`]
    /// (the first at once) with the record `source` returns at that moment (current load,
    /// draining flag), until `shutdown` completes; then it deregisters the shard and ends.
    ///
    /// It never blocks the caller. A failed heartbeat is logged (a warning on the first failure,
    /// then every tenth while it keeps failing) and retried on the next tick: a Redis outage
    /// shorter than the TTL does not drop the shard. Must be called within a tokio runtime.
    pub fn spawn_heartbeat<F, D>(&self, mut source: F, shutdown: D) -> JoinHandle<()>
    where
        F: FnMut() -> ShardRecord + Send + 'static,
        D: Future + Send + 'static,
    {
        let registry = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(registry.cfg.heartbeat_interval());
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut shutdown = std::pin::pin!(shutdown);
            let mut failures: u32 = 0;
            let mut last_id = None;
            loop {
                tokio::select! {
                    biased;
                    _ = &mut shutdown => break,
                    _ = ticks.tick() => {}
                }
                let record = source();
                match registry.heartbeat(&record).await {
                    Ok(()) => {
                        if failures > 0 {
                            tracing::info!(shard = %record.id, failures, "shard heartbeat recovered");
                        }
                        failures = 0;
                    }
                    Err(error) => {
                        if failures.is_multiple_of(WARN_EVERY_FAILURES) {
                            tracing::warn!(
                                shard = %record.id,
                                consecutive_failures = failures + 1,
                                %error,
                                "shard heartbeat failed; retrying"
                            );
                        }
                        failures = failures.saturating_add(1);
                    }
                }
                last_id = Some(record.id);
            }
            let id = last_id.unwrap_or_else(|| source().id);
            match registry.deregister(&id).await {
                Ok(()) => tracing::info!(shard = %id, "shard deregistered"),
                Err(error) => tracing::warn!(
                    shard = %id,
                    %error,
                    "shard deregistration failed; it expires with its TTL"
                ),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_checks_interval_and_ttl() {
        assert_eq!(RegistryConfig::default().validate(), Ok(()));
        assert_eq!(RegistryConfig::default().ttl(), Duration::from_secs(3));
        let zero = RegistryConfig {
            heartbeat_interval_ms: 0,
            ..RegistryConfig::default()
        };
        assert_eq!(zero.validate(), Err(RegistryConfigError::ZeroInterval));
        let short = RegistryConfig {
            heartbeat_interval_ms: 1_000,
            ttl_ms: 1_000,
        };
        assert_eq!(
            short.validate(),
            Err(RegistryConfigError::TtlNotAboveInterval {
                interval_ms: 1_000,
                ttl_ms: 1_000
            })
        );
    }
}
