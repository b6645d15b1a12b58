//! Counters of one shard, shared by the tick thread and the connection tasks (relaxed atomics:
//! each is a monotonic count read for reports), and the tick status the tick thread publishes
//! once a second.

use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic counters. Names say what is counted; every rejection has its reason.
#[derive(Debug, Default)]
pub struct ShardMetrics {
    /// Connections that completed the QUIC handshake.
    pub connections: AtomicU64,
    /// Connections refused because the shard was at its connection limit.
    pub connections_refused_full: AtomicU64,
    /// Hellos accepted (clients welcomed).
    pub admitted: AtomicU64,
    /// Hellos refused for a protocol version mismatch.
    pub rejected_version: AtomicU64,
    /// Hellos refused for a bad ticket (forged, expired, wrong kind or shard).
    pub rejected_ticket: AtomicU64,
    /// Hellos refused for a replayed ticket.
    pub rejected_replay: AtomicU64,
    /// Hellos or control frames that failed to decode, were too large or truncated.
    pub rejected_malformed_frame: AtomicU64,
    /// Connections closed for sending no hello in time.
    pub hello_timeouts: AtomicU64,
    /// Datagrams received.
    pub datagrams_in: AtomicU64,
    /// Bytes of datagrams received.
    pub bytes_in: AtomicU64,
    /// Datagrams that failed to decode.
    pub datagrams_malformed: AtomicU64,
    /// Input datagrams dropped because the tick's input queue was full.
    pub inputs_dropped_queue_full: AtomicU64,
    /// Inputs dropped by the simulation's per-player rate limit.
    pub inputs_rejected_flood: AtomicU64,
    /// Snapshot datagrams sent.
    pub datagrams_out: AtomicU64,
    /// Bytes of snapshot datagrams sent.
    pub bytes_out: AtomicU64,
    /// Snapshots not sent (connection lost, datagrams unsupported, too large).
    pub snapshots_failed: AtomicU64,
    /// Pongs sent in answer to pings.
    pub pongs: AtomicU64,
    /// Clients kicked, all reasons.
    pub kicks: AtomicU64,
    /// Ticks that took longer than the tick interval.
    pub tick_overruns: AtomicU64,
    /// Ticks run.
    pub ticks: AtomicU64,
    /// Players handed to a neighbour (ownership moved in shared state).
    pub handoffs_out: AtomicU64,
    /// Players taken over from a neighbour (spawned here on a notice or an arrival).
    pub handoffs_in: AtomicU64,
    /// Transfers that did not go through (the border acted as a wall; retried later).
    pub handoffs_failed: AtomicU64,
    /// Handed-off clients that did not move to the new shard within the grace period.
    pub handoffs_abandoned: AtomicU64,
    /// Handoff notices ignored as stale or repeated.
    pub notices_ignored: AtomicU64,
    /// Players whose ownership claim or release was refused or failed.
    pub ownership_errors: AtomicU64,
    /// Ghost batches published to neighbours.
    pub ghost_batches_out: AtomicU64,
    /// Ghost batches received from neighbours.
    pub ghost_batches_in: AtomicU64,
    /// Times the zone lease was lost.
    pub lease_lost: AtomicU64,
}

impl ShardMetrics {
    /// Adds one to `counter`.
    #[inline]
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to `counter`.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Latency figures of one tick phase, milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct PhaseTimes {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

/// What the tick thread publishes once a second (and when it stops).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct TickStatus {
    /// Last completed tick.
    pub tick: u64,
    /// Players with a live session.
    pub players: usize,
    /// Replicable entities in the world.
    pub entities: usize,
    /// Whole tick (inputs, simulation, replication, send), since start.
    pub total: PhaseTimes,
    /// Whole tick over the last second.
    pub recent: PhaseTimes,
    /// Draining inputs and session changes, since start.
    pub inputs: PhaseTimes,
    /// Simulation step, since start.
    pub sim: PhaseTimes,
    /// Building snapshots, since start.
    pub replication: PhaseTimes,
    /// Encoding and handing datagrams to QUIC, since start.
    pub send: PhaseTimes,
    /// Ticks longer than the tick interval, since start.
    pub overruns: u64,
}
