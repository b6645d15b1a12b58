//! Counters of one shard, shared by the tick thread and the connection tasks (relaxed atomics:
//! each is a monotonic count read for reports), and the tick status the tick thread publishes
//! once a second.

use meridian_cluster::metrics::{AtomicHistogram, Exposition, Labels, StoreOpMetrics};
use meridian_cluster::ownership::Lease;
use meridian_protocol::{ShardId, ZoneId};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::watch;

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
    /// Player states waiting to be checkpointed (a gauge: grows while shared state is out of
    /// reach, bounded).
    pub checkpoint_queue_depth: AtomicU64,
    /// Player states written by checkpoints and committed events.
    pub checkpoints_written: AtomicU64,
    /// Player states dropped from a full checkpoint queue (a newer checkpoint replaces them).
    pub checkpoints_dropped: AtomicU64,
    /// Checkpoint writes that failed (shared state out of reach); retried.
    pub checkpoint_failures: AtomicU64,
    /// Player states refused by the fence (this shard no longer owns the player at its epoch).
    pub checkpoints_refused: AtomicU64,
    /// 1 while this shard holds its zone's lease, else 0 (a gauge).
    pub lease_held: AtomicU64,
    /// Drains started (SIGTERM, `POST /drain`).
    pub drains: AtomicU64,
    /// Players with a live session (a gauge, set every tick).
    pub players: AtomicU64,
    /// Replicable entities in the world (a gauge, set every tick).
    pub entities: AtomicU64,
    /// Ghosts shown: the neighbours' entities near the borders (a gauge, set every tick).
    pub ghosts: AtomicU64,
    /// Duration of each phase of the tick, recorded by the tick thread.
    pub tick_phases: TickPhaseHistograms,
    /// Duration of outgoing handoffs: from the transfer command to ownership moved in shared
    /// state and the client told (the part of the blackout this shard sees).
    pub handoff_transfer: AtomicHistogram,
    /// Calls to shared state, per operation.
    pub store_ops: StoreOpMetrics,
}

/// Duration histograms of the phases of a tick (see [`crate::tick::TickLoop::step`]).
#[derive(Debug, Default)]
pub struct TickPhaseHistograms {
    /// Draining inputs and session changes.
    pub inputs: AtomicHistogram,
    /// Simulation step.
    pub sim: AtomicHistogram,
    /// Building snapshots.
    pub replication: AtomicHistogram,
    /// Encoding and handing datagrams to QUIC.
    pub send: AtomicHistogram,
    /// The whole tick.
    pub total: AtomicHistogram,
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

    /// Sets the gauge `gauge` to `value`.
    #[inline]
    pub fn set(gauge: &AtomicU64, value: usize) {
        gauge.store(u64::try_from(value).unwrap_or(u64::MAX), Ordering::Relaxed);
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

/// One atomic field of [`ShardMetrics`].
type Field = fn(&ShardMetrics) -> &AtomicU64;
/// A label added to a field's samples.
type ExtraLabel = Option<(&'static str, &'static str)>;
/// A field and the label that tells it from the others of its family.
type Part = (Field, ExtraLabel);

/// What the metrics of one shard are read from at scrape time.
#[derive(Clone, Debug)]
pub struct ShardSource {
    /// The shard (label `shard`).
    pub shard: ShardId,
    /// Its zone (label `zone`).
    pub zone: ZoneId,
    /// Its counters and gauges.
    pub metrics: Arc<ShardMetrics>,
    /// Its zone lease, when part of a world.
    pub lease: Option<watch::Receiver<Option<Lease>>>,
    /// The tick status its tick thread publishes once a second.
    pub status: Arc<std::sync::Mutex<TickStatus>>,
}

impl ShardSource {
    /// The labels every sample of this shard carries.
    pub fn labels(&self) -> Labels {
        Labels(vec![
            ("role", "shard".into()),
            ("shard", self.shard.to_string().into()),
            ("zone", self.zone.to_string().into()),
        ])
    }

    /// The epoch of the lease held now; 0 while none is held.
    pub fn lease_epoch(&self) -> u64 {
        self.lease
            .as_ref()
            .and_then(|rx| rx.borrow().as_ref().map(|l| l.epoch))
            .unwrap_or(0)
    }
}

/// Exports the metrics of one or more shards (one per shard in `meridian shard`, every shard
/// of the process in `meridian dev`), read from their atomics at scrape time: call sites only
/// increment [`ShardMetrics`] fields.
#[derive(Clone, Debug, Default)]
pub struct ShardCollector {
    /// The shards.
    pub shards: Vec<ShardSource>,
}

impl ShardCollector {
    /// A collector of `shards`.
    pub fn new(shards: Vec<ShardSource>) -> Self {
        Self { shards }
    }

    /// A registry that exposes this collector alone.
    pub fn into_registry(self) -> prometheus_client::registry::Registry {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(self));
        registry
    }

    fn write(&self, out: &mut Exposition<'_>) -> Result<(), std::fmt::Error> {
        // Per shard: its labels and the fields of its metrics, destructured so that a new
        // field cannot be left unexported.
        let rows: Vec<(Labels, &ShardMetrics)> = self
            .shards
            .iter()
            .map(|s| (s.labels(), &*s.metrics))
            .collect();
        let each = |f: Field, extra: ExtraLabel| {
            rows.iter().map(move |(l, m)| {
                let labels = match extra {
                    Some((k, v)) => l.with(k, v),
                    None => l.clone(),
                };
                (labels, ShardMetrics::get(f(m)))
            })
        };
        let counter = |out: &mut Exposition<'_>,
                       name: &str,
                       help: &str,
                       parts: &[Part]|
         -> Result<(), std::fmt::Error> {
            out.counters(
                name,
                help,
                parts.iter().flat_map(|&(f, extra)| each(f, extra)),
            )
        };
        let gauge = |out: &mut Exposition<'_>,
                     name: &str,
                     help: &str,
                     f: Field|
         -> Result<(), std::fmt::Error> {
            out.gauges(name, help, each(f, None).map(|(l, v)| (l, v as f64)))
        };
        // A compile-time check that every field is exported below.
        for (_, m) in &rows {
            let ShardMetrics {
                connections: _,
                connections_refused_full: _,
                admitted: _,
                rejected_version: _,
                rejected_ticket: _,
                rejected_replay: _,
                rejected_malformed_frame: _,
                hello_timeouts: _,
                datagrams_in: _,
                bytes_in: _,
                datagrams_malformed: _,
                inputs_dropped_queue_full: _,
                inputs_rejected_flood: _,
                datagrams_out: _,
                bytes_out: _,
                snapshots_failed: _,
                pongs: _,
                kicks: _,
                tick_overruns: _,
                ticks: _,
                handoffs_out: _,
                handoffs_in: _,
                handoffs_failed: _,
                handoffs_abandoned: _,
                notices_ignored: _,
                ownership_errors: _,
                ghost_batches_out: _,
                ghost_batches_in: _,
                lease_lost: _,
                checkpoint_queue_depth: _,
                checkpoints_written: _,
                checkpoints_dropped: _,
                checkpoint_failures: _,
                checkpoints_refused: _,
                lease_held: _,
                drains: _,
                players: _,
                entities: _,
                ghosts: _,
                tick_phases: _,
                handoff_transfer: _,
                store_ops: _,
            } = m;
        }
        let out_in = |o: Field, i: Field| {
            [
                (o, Some(("direction", "out"))),
                (i, Some(("direction", "in"))),
            ]
        };

        counter(
            out,
            "meridian_shard_ticks",
            "Ticks run",
            &[(|m| &m.ticks, None)],
        )?;
        counter(
            out,
            "meridian_shard_tick_overruns",
            "Ticks that took longer than the tick interval",
            &[(|m| &m.tick_overruns, None)],
        )?;
        out.histograms(
            "meridian_shard_tick_phase_seconds",
            "Duration of each phase of a tick (inputs, sim, replication, send) and of the whole tick (total)",
            rows.iter().flat_map(|(l, m)| {
                let p = &m.tick_phases;
                [
                    (l.with("phase", "inputs"), &p.inputs),
                    (l.with("phase", "sim"), &p.sim),
                    (l.with("phase", "replication"), &p.replication),
                    (l.with("phase", "send"), &p.send),
                    (l.with("phase", "total"), &p.total),
                ]
            }),
        )?;
        gauge(
            out,
            "meridian_shard_players",
            "Players with a live session",
            |m| &m.players,
        )?;
        gauge(
            out,
            "meridian_shard_entities",
            "Replicable entities in the world",
            |m| &m.entities,
        )?;
        gauge(
            out,
            "meridian_shard_ghosts",
            "Neighbours' entities shown near the borders",
            |m| &m.ghosts,
        )?;
        counter(
            out,
            "meridian_shard_connections",
            "Connections that completed the QUIC handshake",
            &[(|m| &m.connections, None)],
        )?;
        counter(
            out,
            "meridian_shard_connections_refused",
            "Connections refused, by reason",
            &[(|m| &m.connections_refused_full, Some(("reason", "full")))],
        )?;
        counter(
            out,
            "meridian_shard_hellos",
            "Client hellos, by outcome",
            &[
                (|m| &m.admitted, Some(("outcome", "admitted"))),
                (
                    |m| &m.rejected_version,
                    Some(("outcome", "rejected_version")),
                ),
                (|m| &m.rejected_ticket, Some(("outcome", "rejected_ticket"))),
                (|m| &m.rejected_replay, Some(("outcome", "rejected_replay"))),
                (|m| &m.hello_timeouts, Some(("outcome", "timeout"))),
            ],
        )?;
        counter(
            out,
            "meridian_shard_frames_malformed",
            "Hellos or control frames that failed to decode, were too large or truncated",
            &[(|m| &m.rejected_malformed_frame, None)],
        )?;
        counter(
            out,
            "meridian_shard_datagrams",
            "Datagrams received (in) and snapshot datagrams sent (out)",
            &out_in(|m| &m.datagrams_out, |m| &m.datagrams_in),
        )?;
        counter(
            out,
            "meridian_shard_datagram_bytes",
            "Bytes of datagrams received (in) and of snapshot datagrams sent (out)",
            &out_in(|m| &m.bytes_out, |m| &m.bytes_in),
        )?;
        counter(
            out,
            "meridian_shard_datagrams_malformed",
            "Datagrams received that failed to decode",
            &[(|m| &m.datagrams_malformed, None)],
        )?;
        counter(
            out,
            "meridian_shard_inputs_rejected",
            "Client inputs dropped, by reason",
            &[
                (
                    |m| &m.inputs_dropped_queue_full,
                    Some(("reason", "queue_full")),
                ),
                (|m| &m.inputs_rejected_flood, Some(("reason", "flood"))),
            ],
        )?;
        counter(
            out,
            "meridian_shard_snapshots_failed",
            "Snapshots not sent (connection lost, datagrams unsupported, too large)",
            &[(|m| &m.snapshots_failed, None)],
        )?;
        counter(
            out,
            "meridian_shard_pongs",
            "Pongs sent in answer to pings",
            &[(|m| &m.pongs, None)],
        )?;
        counter(
            out,
            "meridian_shard_kicks",
            "Clients kicked, all reasons",
            &[(|m| &m.kicks, None)],
        )?;
        counter(
            out,
            "meridian_shard_handoffs",
            "Handoffs by outcome: out (ownership moved to a neighbour), in (taken from a \
             neighbour), failed (transfer refused or failed; retried), abandoned (the client \
             did not follow in time)",
            &[
                (|m| &m.handoffs_out, Some(("outcome", "out"))),
                (|m| &m.handoffs_in, Some(("outcome", "in"))),
                (|m| &m.handoffs_failed, Some(("outcome", "failed"))),
                (|m| &m.handoffs_abandoned, Some(("outcome", "abandoned"))),
            ],
        )?;
        out.histograms(
            "meridian_shard_handoff_transfer_seconds",
            "Duration of outgoing handoffs, from the transfer command to ownership moved and the client told",
            rows.iter().map(|(l, m)| (l.clone(), &m.handoff_transfer)),
        )?;
        counter(
            out,
            "meridian_shard_handoff_notices_ignored",
            "Handoff notices ignored as stale or repeated",
            &[(|m| &m.notices_ignored, None)],
        )?;
        counter(
            out,
            "meridian_shard_ownership_errors",
            "Players whose ownership claim or release was refused or failed",
            &[(|m| &m.ownership_errors, None)],
        )?;
        counter(
            out,
            "meridian_shard_ghost_batches",
            "Ghost batches published to (out) and received from (in) neighbours",
            &out_in(|m| &m.ghost_batches_out, |m| &m.ghost_batches_in),
        )?;
        gauge(
            out,
            "meridian_shard_lease_held",
            "1 while the shard holds its zone's lease, else 0",
            |m| &m.lease_held,
        )?;
        out.gauges(
            "meridian_shard_lease_epoch",
            "Fencing epoch of the zone lease held now (0 while none is held)",
            self.shards
                .iter()
                .map(|s| (s.labels(), s.lease_epoch() as f64)),
        )?;
        counter(
            out,
            "meridian_shard_lease_lost",
            "Times the zone lease was lost",
            &[(|m| &m.lease_lost, None)],
        )?;
        counter(
            out,
            "meridian_shard_drains",
            "Drains started (SIGTERM, POST /drain)",
            &[(|m| &m.drains, None)],
        )?;
        gauge(
            out,
            "meridian_shard_checkpoint_queue_depth",
            "Player states waiting to be checkpointed",
            |m| &m.checkpoint_queue_depth,
        )?;
        counter(
            out,
            "meridian_shard_checkpoints",
            "Player states checkpointed, by outcome: written, dropped (replaced in a full \
             queue), failed (shared state out of reach; retried), refused (fenced: no longer \
             the owner)",
            &[
                (|m| &m.checkpoints_written, Some(("outcome", "written"))),
                (|m| &m.checkpoints_dropped, Some(("outcome", "dropped"))),
                (|m| &m.checkpoint_failures, Some(("outcome", "failed"))),
                (|m| &m.checkpoints_refused, Some(("outcome", "refused"))),
            ],
        )?;
        StoreOpMetrics::expose(
            out,
            "meridian_shard",
            rows.iter().map(|(l, m)| (l.clone(), &m.store_ops)),
        )
    }
}

impl Collector for ShardCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.write(&mut Exposition::new(encoder))
    }
}
