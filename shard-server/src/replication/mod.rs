//! Replication: for each connected client, every tick, a snapshot of the entities in its area of
//! interest, delta-encoded against the last snapshot that client acknowledged, quantized, and
//! within a byte budget by priority. Pure: no I/O, no clock; run on the tick thread.
//!
//! - [`ClientReplication`]: one per client; [`ClientReplication::on_ack`] when the client says
//!   it applied a snapshot, [`ClientReplication::build`] once per tick.
//! - [`ReplicationConfig`]: interest radius and hysteresis, byte budget, history length.
//! - [`BuildStats`]: what one snapshot held.
//!
//! How a snapshot is built (see [`ClientReplication::build`]):
//! 1. interest: the entities within `interest_radius` of the client's own entity; one already in
//!    view stays until it is beyond `interest_radius · (1 + hysteresis)`; the own entity always;
//! 2. baseline: the record of the newest acknowledged snapshot still kept, or nothing (full
//!    state). A record is what the client knows after applying that snapshot: its baseline with
//!    what was actually written, not the truth, since the budget may defer entities;
//! 3. candidates: entities added, changed or removed relative to the baseline; each in view
//!    accumulates priority every tick (more when near and fast, most for the own entity);
//! 4. budget: when everything fits it is all written; otherwise the highest priorities first,
//!    while an upper bound of the payload stays within the budget. Written entities restart
//!    from zero, deferred ones keep accumulating, so starved entities rise;
//! 5. encode ([`meridian_protocol::snapshot::encode_delta`]) and keep the record.
//!
//! Every buffer is owned by the [`ClientReplication`] and reused: a tick allocates nothing once
//! they have grown to the client's view.

mod client;
mod history;
mod interest;

#[cfg(test)]
mod tests;

pub use client::ClientReplication;

use serde::{Deserialize, Serialize};

/// Settings of replication, the same for every client of a shard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationConfig {
    /// An entity comes into a client's view within this distance of the client's own entity,
    /// world units.
    pub interest_radius: f32,
    /// An entity in view leaves it beyond `interest_radius · (1 + hysteresis)`, so that one
    /// moving along the edge does not flicker in and out.
    pub hysteresis: f32,
    /// Largest snapshot payload, bytes (the caller may pass less, to fit the path's datagrams).
    pub budget_bytes: usize,
    /// Snapshots kept per client as possible baselines (at 30 Hz, 32 is about a second: a client
    /// whose acknowledgements are older gets a full snapshot).
    pub history: usize,
}

/// Smallest accepted [`ReplicationConfig::budget_bytes`]: room for the own entity's full state
/// and a few more.
pub const MIN_BUDGET_BYTES: usize = 64;
/// Largest accepted [`ReplicationConfig::budget_bytes`]: a QUIC datagram never holds more.
pub const MAX_BUDGET_BYTES: usize = 65_535;
/// Largest accepted [`ReplicationConfig::history`].
pub const MAX_HISTORY: usize = 1024;
/// Largest accepted [`ReplicationConfig::hysteresis`].
pub const MAX_HYSTERESIS: f32 = 10.0;

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            interest_radius: 60.0,
            hysteresis: 0.15,
            budget_bytes: 1100,
            history: 32,
        }
    }
}

/// A [`ReplicationConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReplicationConfigError {
    /// `interest_radius` is zero, negative, NaN or infinite.
    #[error("interest_radius must be positive and finite; got {value}")]
    Radius {
        /// The value given.
        value: f32,
    },
    /// `hysteresis` is negative, NaN or above [`MAX_HYSTERESIS`].
    #[error("hysteresis must be within 0..={MAX_HYSTERESIS}; got {value}")]
    Hysteresis {
        /// The value given.
        value: f32,
    },
    /// `budget_bytes` is outside [`MIN_BUDGET_BYTES`]..=[`MAX_BUDGET_BYTES`].
    #[error("budget_bytes must be within {MIN_BUDGET_BYTES}..={MAX_BUDGET_BYTES}; got {value}")]
    Budget {
        /// The value given.
        value: usize,
    },
    /// `history` is outside 1..=[`MAX_HISTORY`].
    #[error("history must be within 1..={MAX_HISTORY}; got {value}")]
    History {
        /// The value given.
        value: usize,
    },
}

impl ReplicationConfig {
    /// Checks every setting.
    pub fn validate(&self) -> Result<(), ReplicationConfigError> {
        let r = self.interest_radius;
        if !(r.is_finite() && r > 0.0) {
            return Err(ReplicationConfigError::Radius { value: r });
        }
        let h = self.hysteresis;
        if !(0.0..=MAX_HYSTERESIS).contains(&h) {
            return Err(ReplicationConfigError::Hysteresis { value: h });
        }
        if !(MIN_BUDGET_BYTES..=MAX_BUDGET_BYTES).contains(&self.budget_bytes) {
            return Err(ReplicationConfigError::Budget {
                value: self.budget_bytes,
            });
        }
        if !(1..=MAX_HISTORY).contains(&self.history) {
            return Err(ReplicationConfigError::History {
                value: self.history,
            });
        }
        Ok(())
    }
}

/// What one snapshot held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuildStats {
    /// Entities in the client's area of interest, its own included.
    pub in_view: u32,
    /// Entities written: added, changed or removed relative to the baseline.
    pub written: u32,
    /// Entities that differ from the baseline but did not fit in the budget.
    pub deferred: u32,
    /// Payload size, bytes.
    pub bytes: u32,
    /// True for a full snapshot (no usable acknowledged baseline).
    pub full: bool,
}
