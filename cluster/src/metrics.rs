//! Metric primitives shared by the shard and the lobby, exported in the Prometheus text format
//! at scrape time (with `prometheus-client`'s encoders):
//!
//! - [`AtomicHistogram`]: fixed buckets of relaxed atomics, so that a hot path (the tick
//!   thread) records a duration without locking or allocating;
//! - [`StoreOpMetrics`]: latency and errors of the calls to shared state, per operation
//!   ([`StoreOp`]), recorded by [`StoreOpMetrics::time`] around each call;
//! - [`Exposition`]: writes metric families (one `# HELP`/`# TYPE` per name, one sample per
//!   label set) from values read at scrape time.
//!
//! No label carries a player id: label values are roles, shard and zone ids, and fixed words.

use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use std::borrow::Cow;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use prometheus_client;

/// Upper bounds (seconds) of the buckets of latency histograms: 50 µs to 5 s, with the tick
/// intervals of 60, 30 and 20 Hz among them.
pub const LATENCY_BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.016_7, 0.033_3, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A histogram of durations with the fixed buckets [`LATENCY_BUCKETS`] (and `+Inf`), recorded
/// with relaxed atomics: no lock, no allocation. A scrape may read a recording half done (a
/// bucket counted, the sum not yet): a skew of one observation at most.
#[derive(Debug)]
pub struct AtomicHistogram {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Sum of the observations, nanoseconds.
    sum_ns: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl AtomicHistogram {
    /// Records one duration.
    #[inline]
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&upper| secs <= upper)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Records one duration given in microseconds.
    #[inline]
    pub fn observe_us(&self, us: u64) {
        self.observe(Duration::from_micros(us));
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Sum of the observations, seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// Upper bound and count (not cumulative) of each bucket, `+Inf` last.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        LATENCY_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(&self.counts)
            .map(|(upper, c)| (upper, c.load(Ordering::Relaxed)))
            .collect()
    }

    /// Writes the histogram's samples.
    fn encode(&self, encoder: &mut MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let buckets = self.buckets();
        let count = buckets.iter().map(|(_, c)| c).sum();
        encoder.encode_histogram::<NoLabelSet>(self.sum_seconds(), count, &buckets, None)
    }
}

/// An operation on shared state, as timed by [`StoreOpMetrics`]; its label value is
/// [`StoreOp::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum StoreOp {
    /// Renewing the zone lease.
    RenewLease,
    /// Taking the zone lease (again).
    AcquireLease,
    /// Reading a zone's lease.
    GetLease,
    /// The atomic ownership transfer of a player (handoff).
    TransferPlayer,
    /// Sending a handoff notice to the new owner's inbox.
    SendHandoff,
    /// Accepting a handed-off player.
    AcceptPlayer,
    /// Acknowledging inbox entries.
    AckInbox,
    /// Claiming a player's ownership.
    ClaimPlayer,
    /// Releasing a player's ownership.
    ReleasePlayer,
    /// Reading a player's ownership record.
    GetOwnership,
    /// Listing the live shards.
    LiveShards,
    /// Publishing a ghost batch.
    PublishGhosts,
    /// Writing a batch of player checkpoints.
    CheckpointPlayers,
    /// Loading a profile (resume).
    LoadProfile,
    /// Loading or creating a profile by name (join).
    LoadOrCreateProfile,
}

impl StoreOp {
    /// Every operation, in label order.
    pub const ALL: [StoreOp; 15] = [
        StoreOp::RenewLease,
        StoreOp::AcquireLease,
        StoreOp::GetLease,
        StoreOp::TransferPlayer,
        StoreOp::SendHandoff,
        StoreOp::AcceptPlayer,
        StoreOp::AckInbox,
        StoreOp::ClaimPlayer,
        StoreOp::ReleasePlayer,
        StoreOp::GetOwnership,
        StoreOp::LiveShards,
        StoreOp::PublishGhosts,
        StoreOp::CheckpointPlayers,
        StoreOp::LoadProfile,
        StoreOp::LoadOrCreateProfile,
    ];

    /// The `op` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreOp::RenewLease => "renew_lease",
            StoreOp::AcquireLease => "acquire_lease",
            StoreOp::GetLease => "get_lease",
            StoreOp::TransferPlayer => "transfer_player",
            StoreOp::SendHandoff => "send_handoff",
            StoreOp::AcceptPlayer => "accept_player",
            StoreOp::AckInbox => "ack_inbox",
            StoreOp::ClaimPlayer => "claim_player",
            StoreOp::ReleasePlayer => "release_player",
            StoreOp::GetOwnership => "get_ownership",
            StoreOp::LiveShards => "live_shards",
            StoreOp::PublishGhosts => "publish_ghosts",
            StoreOp::CheckpointPlayers => "checkpoint_players",
            StoreOp::LoadProfile => "load_profile",
            StoreOp::LoadOrCreateProfile => "load_or_create_profile",
        }
    }
}

/// Latency and errors of calls to shared state, per [`StoreOp`].
#[derive(Debug)]
pub struct StoreOpMetrics {
    latency: [AtomicHistogram; StoreOp::ALL.len()],
    errors: [AtomicU64; StoreOp::ALL.len()],
}

impl Default for StoreOpMetrics {
    fn default() -> Self {
        Self {
            latency: std::array::from_fn(|_| AtomicHistogram::default()),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl StoreOpMetrics {
    /// Awaits `call`, recording how long it took and whether it failed, under `op`.
    pub async fn time<T, E>(
        &self,
        op: StoreOp,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = Instant::now();
        let result = call.await;
        self.record(op, started.elapsed(), result.is_ok());
        result
    }

    /// Records one call of `op` that took `took`.
    pub fn record(&self, op: StoreOp, took: Duration, ok: bool) {
        self.latency[op as usize].observe(took);
        if !ok {
            self.errors[op as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The latency histogram of `op`.
    pub fn latency(&self, op: StoreOp) -> &AtomicHistogram {
        &self.latency[op as usize]
    }

    /// Failed calls of `op`.
    pub fn errors(&self, op: StoreOp) -> u64 {
        self.errors[op as usize].load(Ordering::Relaxed)
    }

    /// Writes `{prefix}_redis_command_seconds{op}` and `{prefix}_redis_errors_total{op}` for
    /// every source, each labelled with its own labels plus `op`; operations never called
    /// are left out.
    pub fn expose<'m>(
        out: &mut Exposition<'_>,
        prefix: &str,
        sources: impl Iterator<Item = (Labels, &'m StoreOpMetrics)> + Clone,
    ) -> Result<(), std::fmt::Error> {
        let called = |m: &StoreOpMetrics, op: StoreOp| m.latency(op).count() > 0;
        out.histograms(
            &format!("{prefix}_redis_command_seconds"),
            "Duration of calls to shared state (Redis), by operation",
            sources.clone().flat_map(|(labels, m)| {
                StoreOp::ALL
                    .into_iter()
                    .filter(move |&op| called(m, op))
                    .map(move |op| (labels.with("op", op.as_str()), m.latency(op)))
            }),
        )?;
        out.counters(
            &format!("{prefix}_redis_errors"),
            "Calls to shared state (Redis) that failed, by operation",
            sources.flat_map(|(labels, m)| {
                StoreOp::ALL
                    .into_iter()
                    .filter(move |&op| called(m, op))
                    .map(move |op| (labels.with("op", op.as_str()), m.errors(op)))
            }),
        )
    }
}

/// The labels of one sample: `(name, value)` pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels(pub Vec<(&'static str, Cow<'static, str>)>);

impl Labels {
    /// These labels and one more.
    pub fn with(&self, name: &'static str, value: impl Into<Cow<'static, str>>) -> Labels {
        let mut labels = self.0.clone();
        labels.push((name, value.into()));
        Labels(labels)
    }
}

/// Writes metric families to a Prometheus text exposition: each name once with its help and
/// type, then one sample per label set. Names are given whole (`_total` is added to counters
/// by the encoder).
pub struct Exposition<'a> {
    encoder: DescriptorEncoder<'a>,
}

impl<'a> Exposition<'a> {
    /// Writes through `encoder` (a collector's).
    pub fn new(encoder: DescriptorEncoder<'a>) -> Self {
        Self { encoder }
    }

    fn family(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        mut each: impl FnMut(&mut MetricEncoder<'_>) -> Result<(), std::fmt::Error>,
    ) -> Result<(), std::fmt::Error> {
        let mut metric = self.encoder.encode_descriptor(name, help, None, kind)?;
        each(&mut metric)
    }

    /// A counter family (the encoder appends `_total` to `name`).
    pub fn counters(
        &mut self,
        name: &str,
        help: &str,
        samples: impl Iterator<Item = (Labels, u64)>,
    ) -> Result<(), std::fmt::Error> {
        let samples: Vec<_> = samples.collect();
        if samples.is_empty() {
            return Ok(());
        }
        self.family(name, help, MetricType::Counter, |metric| {
            for (labels, value) in &samples {
                metric
                    .encode_family(&labels.0)?
                    .encode_counter::<NoLabelSet, u64, u64>(value, None)?;
            }
            Ok(())
        })
    }

    /// A gauge family.
    pub fn gauges(
        &mut self,
        name: &str,
        help: &str,
        samples: impl Iterator<Item = (Labels, f64)>,
    ) -> Result<(), std::fmt::Error> {
        let samples: Vec<_> = samples.collect();
        if samples.is_empty() {
            return Ok(());
        }
        self.family(name, help, MetricType::Gauge, |metric| {
            for (labels, value) in &samples {
                metric.encode_family(&labels.0)?.encode_gauge(value)?;
            }
            Ok(())
        })
    }

    /// A histogram family.
    pub fn histograms<'h>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl Iterator<Item = (Labels, &'h AtomicHistogram)>,
    ) -> Result<(), std::fmt::Error> {
        let samples: Vec<_> = samples.collect();
        if samples.is_empty() {
            return Ok(());
        }
        self.family(name, help, MetricType::Histogram, |metric| {
            for (labels, h) in &samples {
                h.encode(&mut metric.encode_family(&labels.0)?)?;
            }
            Ok(())
        })
    }
}

/// Content type of [`encode_text`]'s output.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The Prometheus text exposition (format 0.0.4) of `registry`.
pub fn encode_text(
    registry: &prometheus_client::registry::Registry,
) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::collector::Collector;
    use prometheus_client::registry::Registry;

    #[derive(Debug, Default)]
    struct Fixture {
        h: AtomicHistogram,
        ops: StoreOpMetrics,
    }

    impl Collector for Fixture {
        fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            let mut out = Exposition::new(encoder);
            let labels = Labels(vec![("role", "shard".into()), ("shard", "s-1".into())]);
            out.histograms(
                "meridian_test_seconds",
                "Test durations",
                [(labels.with("phase", "sim"), &self.h)].into_iter(),
            )?;
            out.counters(
                "meridian_test_things",
                "Things",
                [(labels.clone(), 7)].into_iter(),
            )?;
            StoreOpMetrics::expose(
                &mut out,
                "meridian_test",
                std::iter::once((labels, &self.ops)),
            )
        }
    }

    #[test]
    fn buckets_sum_and_count() {
        let h = AtomicHistogram::default();
        h.observe(Duration::from_micros(10));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        assert_eq!(h.count(), 3);
        assert!((h.sum_seconds() - 60.003_01).abs() < 1e-9);
        let b = h.buckets();
        assert_eq!(b.len(), LATENCY_BUCKETS.len() + 1);
        assert_eq!(b[0], (0.000_05, 1));
        assert_eq!(b[6], (0.005, 1), "3 ms lands in the 5 ms bucket");
        assert_eq!(b[LATENCY_BUCKETS.len()], (f64::INFINITY, 1));
    }

    #[test]
    fn every_op_has_its_own_slot_and_label() {
        for (i, op) in StoreOp::ALL.into_iter().enumerate() {
            assert_eq!(op as usize, i, "{op:?}");
        }
        let mut labels: Vec<_> = StoreOp::ALL.iter().map(|op| op.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), StoreOp::ALL.len());
    }

    #[tokio::test]
    async fn store_calls_are_timed_and_errors_counted() {
        let m = StoreOpMetrics::default();
        let ok: Result<u8, &str> = m.time(StoreOp::RenewLease, async { Ok(1) }).await;
        assert_eq!(ok, Ok(1));
        let err: Result<u8, &str> = m.time(StoreOp::RenewLease, async { Err("down") }).await;
        assert_eq!(err, Err("down"));
        assert_eq!(m.latency(StoreOp::RenewLease).count(), 2);
        assert_eq!(m.errors(StoreOp::RenewLease), 1);
        assert_eq!(m.latency(StoreOp::TransferPlayer).count(), 0);
    }

    #[test]
    fn exposition_is_prometheus_text() {
        let fixture = Fixture::default();
        fixture.h.observe(Duration::from_millis(2));
        fixture
            .ops
            .record(StoreOp::GetLease, Duration::from_millis(1), false);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(fixture));
        let text = encode_text(&registry).expect("encodes");
        for line in [
            "# TYPE meridian_test_seconds histogram",
            "meridian_test_seconds_bucket{role=\"shard\",shard=\"s-1\",phase=\"sim\",le=\"0.0025\"} 1",
            "meridian_test_seconds_count{role=\"shard\",shard=\"s-1\",phase=\"sim\"} 1",
            "# TYPE meridian_test_things_total counter",
            "meridian_test_things_total{role=\"shard\",shard=\"s-1\"} 7",
            "meridian_test_redis_errors_total{role=\"shard\",shard=\"s-1\",op=\"get_lease\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(
            !text.contains("renew_lease"),
            "operations never called are left out:\n{text}"
        );
    }
}
