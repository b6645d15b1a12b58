//! The link conditioner: a UDP socket for quinn that delays, jitters, drops and partitions
//! datagrams per remote address, so that one machine can play a client in London talking to
//! shards in Frankfurt and Tokyo (DESIGN.md, testing layer 3).
//!
//! [`ConditionedSocket`] wraps the runtime's real socket and implements quinn's
//! [`AsyncUdpSocket`]. Each remote address has a [`LinkProfile`] (one-way delay, [`Jitter`],
//! loss), or the default profile of [`ConditionerConfig`]; a profile applies to both directions,
//! so a profile with a one-way delay of RTT/2 makes the measured round trip equal RTT
//! ([`LinkProfile::from_rtt`], [`profiles_from_matrix`] for a [`LatencyMatrix`]). Loss is drawn
//! independently per direction and per datagram. A partitioned address
//! ([`ConditionerHandle::partition`]) loses everything both ways, including datagrams already
//! on their way when the partition starts, until it is healed.
//!
//! How it works:
//!
//! - Outgoing: `try_send` never blocks. Datagrams to an address whose profile is the identity
//!   pass straight to the real socket. Others are split into single datagrams (GSO batches;
//!   the socket also reports `max_transmit_segments() == 1` so quinn does not build them), each
//!   drawn for loss and delay, and queued for a sender task on the tokio runtime that sends them
//!   when due. Jitter may reorder them, as real networks do.
//! - Incoming: datagrams read from the real socket (GRO batches split) are drawn for loss and
//!   delay and held until due; `poll_recv` hands quinn those that are due and arms a timer for
//!   the next one. With identity profiles and nothing held, reads pass straight through.
//! - Both queues are bounded ([`ConditionerConfig::queue_capacity`]); a datagram that finds its
//!   queue full is dropped and counted, like a router's tail drop.
//!
//! [`conditioned_endpoint`] builds a client `quinn::Endpoint` over a conditioned socket and
//! returns a [`ConditionerHandle`], with which tests change profiles and partitions at run time
//! and read the counters ([`ConditionerStats`]).
//!
//! Expect what a real network does: with jitter, a client's first 1-RTT packets can overtake
//! its handshake Finished, and quinn servers discard 1-RTT packets that arrive before the
//! handshake completes, so a datagram sent in the first round trip may be lost. Wait for one
//! echo before measuring. Delays are accurate to about ±0.5 ms each way ([`TIMER_SLACK`]) plus
//! scheduling latency.
//!
//! The draws come from seeded generators (one per direction): the same seed and the same
//! traffic give the same losses and delays. Real traffic depends on timing, so runs are
//! reproducible statistically rather than packet for packet.

use crate::latency::{LatencyMatrix, UnknownRegion};
use meridian_protocol::quic::{self, QuicConfig};
use quinn::udp::{EcnCodepoint, RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, UdpPoller};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

/// Default bound of each direction's queue of held datagrams.
pub const DEFAULT_QUEUE_CAPACITY: usize = 8192;

/// The longest delay a profile may impose (one-way delay plus jitter): beyond it, a link is
/// better modelled as partitioned.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// How early a held datagram may be released. tokio's timer has a resolution of 1 ms and
/// rounds deadlines up, so a datagram released exactly when due would be late by 0.5 ms on
/// average in each direction (a round trip 1 to 2 ms too long); releasing up to 0.5 ms early
/// makes the error about ±0.5 ms around the configured delay.
pub const TIMER_SLACK: Duration = Duration::from_micros(500);

/// How many batches `poll_recv` reads from the real socket in one call before yielding, so a
/// flood cannot starve the endpoint driver.
const MAX_READ_BATCHES: usize = 16;

/// Why a conditioner could not be configured or built.
#[derive(Debug, thiserror::Error)]
pub enum ConditionerError {
    /// A profile has a loss or jitter fraction outside `0..=1`, or not a number.
    #[error("invalid link profile for {}: {reason}", link_name(*addr))]
    InvalidProfile {
        /// The destination of the profile, or `None` for the default profile.
        addr: Option<SocketAddr>,
        /// What is wrong with it.
        reason: String,
    },
    /// The queue capacity is zero.
    #[error("queue capacity must be at least 1")]
    ZeroQueueCapacity,
    /// A destination's region, or the home region, is not in the latency matrix.
    #[error(transparent)]
    UnknownRegion(#[from] UnknownRegion),
    /// The conditioner was built outside a tokio runtime (it spawns its sender task there).
    #[error("the link conditioner needs a tokio runtime: {0}")]
    NoRuntime(String),
    /// The socket could not be bound or the endpoint not built.
    #[error("cannot set up the conditioned socket: {0}")]
    Io(#[from] io::Error),
}

fn link_name(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "the default link".to_owned(), |a| a.to_string())
}

/// Variation of a link's one-way delay, drawn per datagram, uniformly in ± the amplitude. The
/// delay never goes below zero.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Jitter {
    /// Every datagram takes exactly the one-way delay.
    #[default]
    None,
    /// Uniform in ± this duration.
    Uniform(Duration),
    /// Uniform in ± this fraction of the one-way delay (`0.1`: ±10%), in `0..=1`.
    Fraction(f64),
}

impl Jitter {
    /// The amplitude for a one-way delay of `delay`.
    pub fn amplitude(self, delay: Duration) -> Duration {
        match self {
            Self::None => Duration::ZERO,
            Self::Uniform(d) => d,
            Self::Fraction(f) if f > 0.0 => {
                Duration::try_from_secs_f64(delay.as_secs_f64() * f.min(1.0)).unwrap_or(delay)
            }
            Self::Fraction(_) => Duration::ZERO,
        }
    }
}

/// The behaviour of the link to one remote address, applied to each direction.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkProfile {
    /// Delay added to each datagram, each way.
    pub one_way_delay: Duration,
    /// Variation of that delay.
    pub jitter: Jitter,
    /// Probability that a datagram is lost, each way, in `0..=1`.
    pub loss: f64,
}

/// What becomes of one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Lost on the way.
    Lost,
    /// Arrives after this delay.
    Delayed(Duration),
}

impl LinkProfile {
    /// The profile that changes nothing: no delay, no jitter, no loss.
    pub const IDENTITY: Self = Self {
        one_way_delay: Duration::ZERO,
        jitter: Jitter::None,
        loss: 0.0,
    };

    /// A profile whose round trip (both directions) is `rtt`: one-way delay `rtt / 2`.
    pub fn from_rtt(rtt: Duration, jitter: Jitter, loss: f64) -> Self {
        Self {
            one_way_delay: rtt / 2,
            jitter,
            loss,
        }
    }

    /// Whether the profile changes nothing (datagrams then bypass the queues).
    pub fn is_identity(&self) -> bool {
        self.one_way_delay.is_zero()
            && self.jitter.amplitude(self.one_way_delay).is_zero()
            && self.loss <= 0.0
    }

    /// Checks that the loss and a jitter fraction are in `0..=1`, and that the delay plus the
    /// jitter stays within [`MAX_DELAY`].
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(format!("loss {} is not in 0..=1", self.loss));
        }
        if let Jitter::Fraction(f) = self.jitter
            && !(0.0..=1.0).contains(&f)
        {
            return Err(format!("jitter fraction {f} is not in 0..=1"));
        }
        let worst = self
            .one_way_delay
            .saturating_add(self.jitter.amplitude(self.one_way_delay));
        if worst > MAX_DELAY {
            return Err(format!(
                "delay {:?} plus jitter exceeds {MAX_DELAY:?}",
                self.one_way_delay
            ));
        }
        Ok(())
    }

    /// Draws the fate of one datagram: lost with probability `loss`, else delayed by the
    /// one-way delay plus a uniform jitter in ± the amplitude, floored at zero.
    pub fn draw(&self, rng: &mut impl Rng) -> Fate {
        if self.loss > 0.0 && rng.random::<f64>() < self.loss {
            return Fate::Lost;
        }
        let base = self.one_way_delay.as_secs_f64();
        let amplitude = self.jitter.amplitude(self.one_way_delay).as_secs_f64();
        if amplitude == 0.0 {
            return Fate::Delayed(self.one_way_delay);
        }
        let offset = (rng.random::<f64>() * 2.0 - 1.0) * amplitude;
        let delay = base + offset;
        if delay <= 0.0 {
            return Fate::Delayed(Duration::ZERO);
        }
        Fate::Delayed(Duration::try_from_secs_f64(delay).unwrap_or(MAX_DELAY))
    }
}

/// Configuration of a [`ConditionedSocket`].
#[derive(Clone, Debug, PartialEq)]
pub struct ConditionerConfig {
    /// Profiles by remote address. IPv4-mapped IPv6 addresses are treated as their IPv4 form.
    pub links: HashMap<SocketAddr, LinkProfile>,
    /// Profile of the addresses not in `links`.
    pub default_profile: LinkProfile,
    /// Seed of the loss and jitter draws.
    pub seed: u64,
    /// Most datagrams held at once in each direction; more are dropped and counted.
    pub queue_capacity: usize,
}

impl Default for ConditionerConfig {
    fn default() -> Self {
        Self {
            links: HashMap::new(),
            default_profile: LinkProfile::IDENTITY,
            seed: 0,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
        }
    }
}

impl ConditionerConfig {
    /// Checks every profile and the queue capacity.
    pub fn validate(&self) -> Result<(), ConditionerError> {
        if self.queue_capacity == 0 {
            return Err(ConditionerError::ZeroQueueCapacity);
        }
        check_profile(None, &self.default_profile)?;
        for (addr, profile) in &self.links {
            check_profile(Some(*addr), profile)?;
        }
        Ok(())
    }
}

fn check_profile(addr: Option<SocketAddr>, profile: &LinkProfile) -> Result<(), ConditionerError> {
    profile
        .validate()
        .map_err(|reason| ConditionerError::InvalidProfile { addr, reason })
}

/// Per-destination profiles for a client in `home_region` talking to servers in the regions of
/// `destinations`: one-way delay = matrix RTT from home to the server's region / 2, jitter
/// ± `jitter_fraction` of it, loss `loss` each way.
pub fn profiles_from_matrix<I, S>(
    matrix: &LatencyMatrix,
    home_region: &str,
    destinations: I,
    jitter_fraction: f64,
    loss: f64,
) -> Result<HashMap<SocketAddr, LinkProfile>, ConditionerError>
where
    I: IntoIterator<Item = (SocketAddr, S)>,
    S: AsRef<str>,
{
    let home = matrix.region(home_region)?;
    let mut links = HashMap::new();
    for (addr, region) in destinations {
        let rtt = matrix.try_rtt(home, region.as_ref())?;
        let profile = LinkProfile::from_rtt(rtt, Jitter::Fraction(jitter_fraction), loss);
        check_profile(Some(addr), &profile)?;
        links.insert(canonical(addr), profile);
    }
    Ok(links)
}

/// Counters of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Datagrams that got through: sent on the real socket (outbound) or handed to quinn
    /// (inbound).
    pub passed: u64,
    /// Datagrams held back for a non-zero delay (they count in `passed` once through).
    pub delayed: u64,
    /// Datagrams dropped by the loss draw.
    pub dropped_loss: u64,
    /// Datagrams dropped because their remote address was partitioned.
    pub dropped_partition: u64,
    /// Datagrams dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Datagrams the real socket refused (outbound), or too large for quinn's buffer (inbound).
    pub errors: u64,
}

/// Counters of a conditioner, by direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConditionerStats {
    /// From quinn to the network.
    pub outbound: DirectionStats,
    /// From the network to quinn.
    pub inbound: DirectionStats,
}

#[derive(Debug, Default)]
struct Counters {
    passed: AtomicU64,
    delayed: AtomicU64,
    dropped_loss: AtomicU64,
    dropped_partition: AtomicU64,
    dropped_queue_full: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> DirectionStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DirectionStats {
            passed: get(&self.passed),
            delayed: get(&self.delayed),
            dropped_loss: get(&self.dropped_loss),
            dropped_partition: get(&self.dropped_partition),
            dropped_queue_full: get(&self.dropped_queue_full),
            errors: get(&self.errors),
        }
    }
}

/// Profiles and partitions, changed at run time through the handle.
#[derive(Debug)]
struct LinkTable {
    links: HashMap<SocketAddr, LinkProfile>,
    default_profile: LinkProfile,
    partitioned: HashSet<SocketAddr>,
}

impl LinkTable {
    /// The profile of `addr` (canonical) and whether it is partitioned.
    fn lookup(&self, addr: SocketAddr) -> (LinkProfile, bool) {
        let profile = self
            .links
            .get(&addr)
            .copied()
            .unwrap_or(self.default_profile);
        (profile, self.partitioned.contains(&addr))
    }
}

/// State shared by the socket, its sender task and the handles.
#[derive(Debug)]
struct Shared {
    table: RwLock<LinkTable>,
    outbound_rng: Mutex<Pcg64Mcg>,
    inbound_rng: Mutex<Pcg64Mcg>,
    outbound: Counters,
    inbound: Counters,
    /// Outgoing datagrams queued for the sender task.
    outbound_queued: AtomicUsize,
    queue_capacity: usize,
}

impl Shared {
    fn table(&self) -> std::sync::RwLockReadGuard<'_, LinkTable> {
        self.table.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn table_mut(&self) -> std::sync::RwLockWriteGuard<'_, LinkTable> {
        self.table.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn lookup(&self, addr: SocketAddr) -> (LinkProfile, bool) {
        self.table().lookup(addr)
    }

    fn is_partitioned(&self, addr: SocketAddr) -> bool {
        self.table().partitioned.contains(&addr)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The address as profiles are keyed: IPv4-mapped IPv6 addresses (what a dual-stack socket
/// reports) in their IPv4 form.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Controls a conditioner at run time and reads its counters. Cheap to clone.
#[derive(Clone)]
pub struct ConditionerHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for ConditionerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConditionerHandle")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl ConditionerHandle {
    /// Sets the profile of `addr`; it applies to datagrams sent or received from now on.
    pub fn set_link(&self, addr: SocketAddr, profile: LinkProfile) -> Result<(), ConditionerError> {
        check_profile(Some(addr), &profile)?;
        self.shared
            .table_mut()
            .links
            .insert(canonical(addr), profile);
        Ok(())
    }

    /// Removes the profile of `addr`, which falls back to the default profile; returns the
    /// removed profile.
    pub fn remove_link(&self, addr: SocketAddr) -> Option<LinkProfile> {
        self.shared.table_mut().links.remove(&canonical(addr))
    }

    /// Sets the profile of addresses without one of their own.
    pub fn set_default_profile(&self, profile: LinkProfile) -> Result<(), ConditionerError> {
        check_profile(None, &profile)?;
        self.shared.table_mut().default_profile = profile;
        Ok(())
    }

    /// The profile that applies to `addr`: its own or the default.
    pub fn link(&self, addr: SocketAddr) -> LinkProfile {
        self.shared.lookup(canonical(addr)).0
    }

    /// Cuts (`true`) or heals (`false`) the link to `addr`: while cut, every datagram to or
    /// from it is dropped, including those already held for delay.
    pub fn partition(&self, addr: SocketAddr, cut: bool) {
        let addr = canonical(addr);
        let mut table = self.shared.table_mut();
        if cut {
            table.partitioned.insert(addr);
        } else {
            table.partitioned.remove(&addr);
        }
    }

    /// Whether the link to `addr` is cut.
    pub fn is_partitioned(&self, addr: SocketAddr) -> bool {
        self.shared.is_partitioned(canonical(addr))
    }

    /// The counters so far.
    pub fn stats(&self) -> ConditionerStats {
        ConditionerStats {
            outbound: self.shared.outbound.snapshot(),
            inbound: self.shared.inbound.snapshot(),
        }
    }
}

/// A datagram held until it is due.
#[derive(Debug)]
struct Held {
    due: Instant,
    /// Arrival order, to keep equal deadlines in order.
    seq: u64,
    /// Destination (outbound) or source (inbound), canonical.
    addr: SocketAddr,
    /// The address as quinn gave it or the socket reported it.
    raw_addr: SocketAddr,
    ecn: Option<EcnCodepoint>,
    /// Source IP (outbound) or destination IP (inbound).
    ip: Option<IpAddr>,
    data: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}

impl Eq for Held {}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Held {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// Incoming datagrams held for delay, and the timer that wakes quinn when the next is due.
#[derive(Debug, Default)]
struct Inbound {
    held: BinaryHeap<Held>,
    seq: u64,
    timer: Option<Pin<Box<Sleep>>>,
}

/// A quinn UDP socket that applies [`LinkProfile`]s and partitions to the datagrams of a real
/// socket. See the [module documentation](self).
pub struct ConditionedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    shared: Arc<Shared>,
    outbound_tx: mpsc::UnboundedSender<Held>,
    outbound_seq: AtomicU64,
    inbound: Mutex<Inbound>,
}

impl fmt::Debug for ConditionedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConditionedSocket")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl ConditionedSocket {
    /// Wraps `inner` (for instance from `quinn::TokioRuntime.wrap_udp_socket(…)`) and spawns
    /// the sender task of delayed datagrams on the current tokio runtime. The task ends once the
    /// socket is dropped and its queue is empty.
    pub fn new(
        inner: Arc<dyn AsyncUdpSocket>,
        cfg: ConditionerConfig,
    ) -> Result<(Self, ConditionerHandle), ConditionerError> {
        cfg.validate()?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| ConditionerError::NoRuntime(e.to_string()))?;
        let links = cfg
            .links
            .into_iter()
            .map(|(addr, p)| (canonical(addr), p))
            .collect();
        let shared = Arc::new(Shared {
            table: RwLock::new(LinkTable {
                links,
                default_profile: cfg.default_profile,
                partitioned: HashSet::new(),
            }),
            outbound_rng: Mutex::new(Pcg64Mcg::seed_from_u64(cfg.seed)),
            inbound_rng: Mutex::new(Pcg64Mcg::seed_from_u64(cfg.seed ^ 0x9e37_79b9_7f4a_7c15)),
            outbound: Counters::default(),
            inbound: Counters::default(),
            outbound_queued: AtomicUsize::new(0),
            queue_capacity: cfg.queue_capacity,
        });
        let (outbound_tx, outbound_rx) = mpsc::unbounded_channel();
        runtime.spawn(run_sender(inner.clone(), shared.clone(), outbound_rx));
        let handle = ConditionerHandle {
            shared: shared.clone(),
        };
        Ok((
            Self {
                inner,
                shared,
                outbound_tx,
                outbound_seq: AtomicU64::new(0),
                inbound: Mutex::new(Inbound::default()),
            },
            handle,
        ))
    }

    /// A handle on this socket's profiles, partitions and counters.
    pub fn handle(&self) -> ConditionerHandle {
        ConditionerHandle {
            shared: self.shared.clone(),
        }
    }

    /// Draws the fate of one incoming datagram and holds it, or drops and counts it.
    fn admit_inbound(&self, inbound: &mut Inbound, meta: &RecvMeta, data: &[u8], now: Instant) {
        let counters = &self.shared.inbound;
        let addr = canonical(meta.addr);
        let (profile, partitioned) = self.shared.lookup(addr);
        if partitioned {
            Counters::add(&counters.dropped_partition, 1);
            return;
        }
        let delay = match profile.draw(&mut *lock(&self.shared.inbound_rng)) {
            Fate::Lost => {
                Counters::add(&counters.dropped_loss, 1);
                return;
            }
            Fate::Delayed(d) => d,
        };
        if inbound.held.len() >= self.shared.queue_capacity {
            Counters::add(&counters.dropped_queue_full, 1);
            return;
        }
        if !delay.is_zero() {
            Counters::add(&counters.delayed, 1);
        }
        inbound.seq += 1;
        inbound.held.push(Held {
            due: deadline(now, delay),
            seq: inbound.seq,
            addr,
            raw_addr: meta.addr,
            ecn: meta.ecn,
            ip: meta.dst_ip,
            data: data.to_vec(),
        });
    }

    /// Whether a batch just read can go to quinn as it is: nothing held, and every source
    /// has the identity profile and is not partitioned.
    fn passes_through(&self, inbound: &Inbound, meta: &[RecvMeta]) -> bool {
        if !inbound.held.is_empty() {
            return false;
        }
        let table = self.shared.table();
        meta.iter().all(|m| {
            let (profile, partitioned) = table.lookup(canonical(m.addr));
            !partitioned && profile.is_identity()
        })
    }

    /// Moves the held datagrams that are due into quinn's buffers; returns how many.
    fn deliver_due(
        &self,
        inbound: &mut Inbound,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
        now: Instant,
    ) -> usize {
        let counters = &self.shared.inbound;
        let slots = bufs.len().min(meta.len());
        let mut n = 0;
        while n < slots {
            let Some(head) = inbound.held.peek() else {
                break;
            };
            if release_at(head.due) > now {
                break;
            }
            let Some(held) = inbound.held.pop() else {
                break;
            };
            if self.shared.is_partitioned(held.addr) {
                Counters::add(&counters.dropped_partition, 1);
                continue;
            }
            let len = held.data.len();
            let Some(buf) = bufs[n].get_mut(..len) else {
                Counters::add(&counters.errors, 1);
                continue;
            };
            buf.copy_from_slice(&held.data);
            let m = &mut meta[n];
            m.addr = held.raw_addr;
            m.len = len;
            m.stride = len;
            m.ecn = held.ecn;
            m.dst_ip = held.ip;
            Counters::add(&counters.passed, 1);
            n += 1;
        }
        n
    }

    /// Conditions one outgoing datagram (a single segment) to a non-identity link.
    fn queue_outbound(&self, transmit: &Transmit<'_>, data: &[u8], profile: &LinkProfile) {
        let counters = &self.shared.outbound;
        let delay = match profile.draw(&mut *lock(&self.shared.outbound_rng)) {
            Fate::Lost => {
                Counters::add(&counters.dropped_loss, 1);
                return;
            }
            Fate::Delayed(d) => d,
        };
        let queued = &self.shared.outbound_queued;
        if queued.fetch_add(1, Ordering::AcqRel) >= self.shared.queue_capacity {
            queued.fetch_sub(1, Ordering::AcqRel);
            Counters::add(&counters.dropped_queue_full, 1);
            return;
        }
        if !delay.is_zero() {
            Counters::add(&counters.delayed, 1);
        }
        let held = Held {
            due: deadline(Instant::now(), delay),
            seq: self.outbound_seq.fetch_add(1, Ordering::Relaxed),
            addr: canonical(transmit.destination),
            raw_addr: transmit.destination,
            ecn: transmit.ecn,
            ip: transmit.src_ip,
            data: data.to_vec(),
        };
        if self.outbound_tx.send(held).is_err() {
            // The sender task is gone: the runtime is shutting down.
            queued.fetch_sub(1, Ordering::AcqRel);
            Counters::add(&counters.errors, 1);
        }
    }
}

/// When a datagram due at `due` is released: up to [`TIMER_SLACK`] early, which centres the
/// error of tokio's millisecond timer (it fires up to 1 ms after the deadline) on zero.
fn release_at(due: Instant) -> Instant {
    due.checked_sub(TIMER_SLACK).unwrap_or(due)
}

/// `now + delay`, saturating at [`MAX_DELAY`] from now.
fn deadline(now: Instant, delay: Duration) -> Instant {
    now.checked_add(delay.min(MAX_DELAY)).unwrap_or(now)
}

/// The segments of a transmit: one, or several of `segment_size` bytes for a GSO batch.
fn segments<'a>(transmit: &Transmit<'a>) -> impl Iterator<Item = &'a [u8]> {
    let contents = transmit.contents;
    let size = transmit.segment_size.unwrap_or(contents.len()).max(1);
    contents.chunks(size)
}

impl AsyncUdpSocket for ConditionedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        // Only the pass-through path can report `WouldBlock`; it is the real socket's.
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let counters = &self.shared.outbound;
        let addr = canonical(transmit.destination);
        let (profile, partitioned) = self.shared.lookup(addr);
        let count = segments(transmit).count() as u64;
        if partitioned {
            Counters::add(&counters.dropped_partition, count);
            return Ok(());
        }
        if profile.is_identity() {
            self.inner.try_send(transmit)?;
            Counters::add(&counters.passed, count);
            return Ok(());
        }
        for segment in segments(transmit) {
            self.queue_outbound(transmit, segment, &profile);
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut inbound = lock(&self.inbound);
        loop {
            // 1. Read what the real socket has, into the held queue (quinn's buffers serve as
            //    scratch space until step 2 fills them).
            let mut batches = 0;
            let mut more = false;
            while batches < MAX_READ_BATCHES {
                let n = match self.inner.poll_recv(cx, bufs, meta) {
                    Poll::Pending => break,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(n)) => n,
                };
                batches += 1;
                more = batches == MAX_READ_BATCHES;
                if self.passes_through(&inbound, &meta[..n]) {
                    let datagrams: usize = meta[..n]
                        .iter()
                        .map(|m| m.len.div_ceil(m.stride.max(1)))
                        .sum();
                    Counters::add(&self.shared.inbound.passed, datagrams as u64);
                    return Poll::Ready(Ok(n));
                }
                let now = Instant::now();
                for (m, buf) in meta[..n].iter().zip(bufs.iter()) {
                    let data = buf.get(..m.len).unwrap_or(buf);
                    for datagram in data.chunks(m.stride.max(1)) {
                        self.admit_inbound(&mut inbound, m, datagram, now);
                    }
                }
            }

            // 2. Hand quinn the datagrams that are due.
            let n = self.deliver_due(&mut inbound, bufs, meta, Instant::now());
            if n > 0 {
                return Poll::Ready(Ok(n));
            }
            if more {
                // The socket may hold more: come back after letting other tasks run.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }

            // 3. Wake up when the next held datagram is due.
            let Some(due) = inbound.held.peek().map(|h| release_at(h.due)) else {
                return Poll::Pending;
            };
            let timer = inbound
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            timer.as_mut().reset(due);
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // Due already: go round again.
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        // No GSO batches: every datagram gets its own loss and delay draw. `try_send` splits
        // batches anyway, should one come.
        1
    }

    fn max_receive_segments(&self) -> usize {
        // quinn sizes its receive buffers by this; the real socket may deliver GRO batches into
        // them, which `poll_recv` splits.
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// Sends queued outgoing datagrams when they are due, until the socket is dropped and the
/// queue is empty.
async fn run_sender(
    inner: Arc<dyn AsyncUdpSocket>,
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Held>,
) {
    let counters = &shared.outbound;
    let mut poller = inner.clone().create_io_poller();
    let mut held: BinaryHeap<Held> = BinaryHeap::new();
    let mut open = true;
    loop {
        // Send what is due.
        let now = Instant::now();
        while let Some(head) = held.peek()
            && release_at(head.due) <= now
        {
            if shared.is_partitioned(head.addr) {
                Counters::add(&counters.dropped_partition, 1);
            } else {
                let transmit = Transmit {
                    destination: head.raw_addr,
                    ecn: head.ecn,
                    contents: &head.data,
                    segment_size: None,
                    src_ip: head.ip,
                };
                match inner.try_send(&transmit) {
                    Ok(()) => Counters::add(&counters.passed, 1),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        let writable =
                            std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx)).await;
                        if let Err(e) = writable {
                            tracing::debug!(error = %e, "conditioner: socket not writable");
                            Counters::add(&counters.errors, 1);
                        } else {
                            continue;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, dest = %head.raw_addr, "conditioner: send failed");
                        Counters::add(&counters.errors, 1);
                    }
                }
            }
            held.pop();
            shared.outbound_queued.fetch_sub(1, Ordering::AcqRel);
        }
        if !open && held.is_empty() {
            return;
        }
        let next_due = held.peek().map(|h| release_at(h.due));
        tokio::select! {
            item = rx.recv(), if open => match item {
                Some(item) => {
                    held.push(item);
                    while let Ok(item) = rx.try_recv() {
                        held.push(item);
                    }
                }
                None => open = false,
            },
            () = sleep_until_opt(next_due) => {}
        }
    }
}

/// Sleeps until `due`, or forever.
async fn sleep_until_opt(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// A client `quinn::Endpoint` bound at `bind` (with `quic_cfg`'s socket buffers, through
/// [`quic::bind_udp_socket`]) over a [`ConditionedSocket`] configured by `cfg`, and the handle
/// of the conditioner. Connect with `endpoint.connect_with(client_config, addr, …)`. Must be
/// called within a tokio runtime.
pub fn conditioned_endpoint(
    bind: SocketAddr,
    quic_cfg: &QuicConfig,
    cfg: ConditionerConfig,
) -> Result<(quinn::Endpoint, ConditionerHandle), ConditionerError> {
    cfg.validate()?;
    let bound = quic::bind_udp_socket(bind, quic_cfg.socket_buffer_bytes)?;
    let runtime: Arc<dyn Runtime> = Arc::new(quinn::TokioRuntime);
    let inner = runtime.wrap_udp_socket(bound.socket)?;
    let (socket, handle) = ConditionedSocket::new(inner, cfg)?;
    let endpoint = quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        None,
        Arc::new(socket),
        runtime,
    )?;
    Ok((endpoint, handle))
}

#[cfg(test)]
#[expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn identity_and_validation() {
        assert!(LinkProfile::IDENTITY.is_identity());
        assert!(LinkProfile::default().is_identity());
        let p = LinkProfile {
            loss: 0.1,
            ..LinkProfile::IDENTITY
        };
        assert!(!p.is_identity());
        let jitter_only = LinkProfile {
            jitter: Jitter::Uniform(Duration::from_millis(1)),
            ..LinkProfile::IDENTITY
        };
        assert!(!jitter_only.is_identity());
        // A fraction of no delay is no jitter.
        let fraction_of_zero = LinkProfile {
            jitter: Jitter::Fraction(0.5),
            ..LinkProfile::IDENTITY
        };
        assert!(fraction_of_zero.is_identity());
        assert!(
            LinkProfile {
                loss: 1.5,
                ..LinkProfile::IDENTITY
            }
            .validate()
            .is_err()
        );
        assert!(
            LinkProfile {
                loss: f64::NAN,
                ..LinkProfile::IDENTITY
            }
            .validate()
            .is_err()
        );
        assert!(
            LinkProfile {
                jitter: Jitter::Fraction(-0.1),
                ..LinkProfile::IDENTITY
            }
            .validate()
            .is_err()
        );
        let mut cfg = ConditionerConfig::default();
        cfg.validate().unwrap();
        cfg.links.insert(
            addr(1),
            LinkProfile {
                loss: 2.0,
                ..LinkProfile::IDENTITY
            },
        );
        let err = cfg.validate().unwrap_err();
        assert!(
            matches!(&err, ConditionerError::InvalidProfile { addr: Some(a), .. } if *a == addr(1))
        );
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
        cfg.links.clear();
        cfg.queue_capacity = 0;
        assert!(matches!(
            cfg.validate(),
            Err(ConditionerError::ZeroQueueCapacity)
        ));
    }

    #[test]
    fn draws_respect_loss_and_jitter_bounds() {
        let mut rng = Pcg64Mcg::seed_from_u64(7);
        let p = LinkProfile {
            one_way_delay: Duration::from_millis(100),
            jitter: Jitter::Fraction(0.1),
            loss: 0.25,
        };
        let n = 20_000;
        let mut lost = 0;
        let (mut min, mut max) = (Duration::MAX, Duration::ZERO);
        for _ in 0..n {
            match p.draw(&mut rng) {
                Fate::Lost => lost += 1,
                Fate::Delayed(d) => {
                    min = min.min(d);
                    max = max.max(d);
                }
            }
        }
        let rate = f64::from(lost) / f64::from(n);
        assert!((0.23..0.27).contains(&rate), "loss rate {rate}");
        assert!(min >= Duration::from_millis(90), "{min:?}");
        assert!(max <= Duration::from_millis(110), "{max:?}");
        assert!(min < Duration::from_millis(91) && max > Duration::from_millis(109));

        // The same seed gives the same draws.
        let mut a = Pcg64Mcg::seed_from_u64(3);
        let mut b = Pcg64Mcg::seed_from_u64(3);
        for _ in 0..100 {
            assert_eq!(p.draw(&mut a), p.draw(&mut b));
        }
    }

    #[test]
    fn jitter_never_goes_negative() {
        let mut rng = Pcg64Mcg::seed_from_u64(1);
        let p = LinkProfile {
            one_way_delay: Duration::from_millis(1),
            jitter: Jitter::Uniform(Duration::from_millis(5)),
            loss: 0.0,
        };
        let mut zeros = 0;
        for _ in 0..1000 {
            match p.draw(&mut rng) {
                Fate::Delayed(d) if d.is_zero() => zeros += 1,
                Fate::Delayed(d) => assert!(d <= Duration::from_millis(6)),
                Fate::Lost => panic!("no loss configured"),
            }
        }
        assert!(zeros > 0);
    }

    #[test]
    fn profiles_from_the_shared_matrix() {
        let matrix = LatencyMatrix::load(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/data/rtt-10-regions.csv"
        ))
        .unwrap();
        let v6_mapped: SocketAddr = "[::ffff:127.0.0.1]:2".parse().unwrap();
        let links = profiles_from_matrix(
            &matrix,
            "London",
            [(addr(1), "frankfurt"), (v6_mapped, "tokyo")],
            0.05,
            0.01,
        )
        .unwrap();
        assert_eq!(
            links[&addr(1)],
            LinkProfile {
                one_way_delay: Duration::from_millis(6),
                jitter: Jitter::Fraction(0.05),
                loss: 0.01,
            }
        );
        assert_eq!(
            links[&addr(2)].one_way_delay,
            Duration::from_micros(123_500)
        );

        let err =
            profiles_from_matrix(&matrix, "mars", [(addr(1), "tokyo")], 0.0, 0.0).unwrap_err();
        assert!(
            matches!(&err, ConditionerError::UnknownRegion(u) if u.region == "mars" && u.known.len() == 10)
        );
        let err =
            profiles_from_matrix(&matrix, "london", [(addr(1), "atlantis")], 0.0, 0.0).unwrap_err();
        assert!(err.to_string().contains("atlantis"), "{err}");
        assert!(err.to_string().contains("sao-paulo"), "{err}");
        let err =
            profiles_from_matrix(&matrix, "london", [(addr(1), "tokyo")], 0.0, 1.5).unwrap_err();
        assert!(matches!(err, ConditionerError::InvalidProfile { .. }));
    }

    #[test]
    fn held_datagrams_pop_earliest_first_then_in_order() {
        let t0 = Instant::now();
        let held = |due_ms: u64, seq: u64| Held {
            due: t0 + Duration::from_millis(due_ms),
            seq,
            addr: addr(1),
            raw_addr: addr(1),
            ecn: None,
            ip: None,
            data: Vec::new(),
        };
        let mut heap = BinaryHeap::new();
        for (due, seq) in [(5, 0), (1, 1), (5, 2), (3, 3), (1, 4)] {
            heap.push(held(due, seq));
        }
        let order: Vec<u64> = std::iter::from_fn(|| heap.pop().map(|h| h.seq)).collect();
        assert_eq!(order, [1, 4, 3, 0, 2]);
    }

    #[test]
    fn gso_batches_split_into_segments() {
        let contents = [0u8; 25];
        let t = Transmit {
            destination: addr(1),
            ecn: None,
            contents: &contents,
            segment_size: Some(10),
            src_ip: None,
        };
        assert_eq!(
            segments(&t).map(<[u8]>::len).collect::<Vec<_>>(),
            [10, 10, 5]
        );
        let single = Transmit {
            segment_size: None,
            ..t
        };
        assert_eq!(segments(&single).count(), 1);
    }
}
