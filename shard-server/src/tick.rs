//! The tick driver: a dedicated thread that runs the simulation at a fixed rate with a
//! fixed-timestep accumulator, and around it the per-tick work of the shell: session changes
//! and inputs in, snapshots out. It never waits on the network: channels are drained with
//! `try_recv`, datagrams are handed to quinn without blocking, reliable events go through
//! bounded queues with `try_send`.

use crate::admin::AdminQuery;
use crate::handoff::checkpoint::CheckpointCommand;
use crate::handoff::ghosts::{GhostBands, GhostEntityMsg};
use crate::handoff::{HandoffCommand, HandoffConfig, HandoffEvent, NeighbourInfo, worker};
use crate::metrics::{PhaseTimes, ShardMetrics, TickStatus};
use crate::net::{Arrival, ConnId, InputEvent, SessionEvent};
use crate::replication::{ClientReplication, ReplicationConfig};
use crate::sim::{GhostUpdate, InputRejection, Sim, SimInputs, SimJoin};
use bytes::Bytes;
use hdrhistogram::Histogram;
use meridian_cluster::audit::{HeldPlayer, HeldState};
use meridian_cluster::ownership::PlayerState;
use meridian_protocol::codec;
use meridian_protocol::control::{
    ChatMsg, KickMsg, KickReason, NeighbourMsg, ScoreMsg, ShardControlMsg, WelcomeMsg,
    ZoneBoundsMsg,
};
use meridian_protocol::datagram::{ServerDatagramMsg, SnapshotMsg};
use meridian_protocol::quantize::PositionQuantizer;
use meridian_protocol::quic::close_code;
use meridian_protocol::{InputSeq, PlayerId, ShardId, ZoneId};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

/// Bytes of a snapshot datagram besides its payload (enum tag, ticks, ack, length), at most.
const SNAPSHOT_OVERHEAD: usize = 32;
/// Flood strikes (rejected inputs, halved every second) at which a client is kicked.
const FLOOD_KICK_STRIKES: u32 = 60;
/// Tick-overrun warnings are logged at most this often.
const OVERRUN_WARN_EVERY: Duration = Duration::from_secs(5);
/// Catch-up is bounded: a shard further behind than this many ticks drops them.
const MAX_CATCH_UP_TICKS: u32 = 5;

/// What the tick thread needs besides the simulation.
pub struct TickSetup {
    /// This shard.
    pub shard: ShardId,
    /// Its zone.
    pub zone: ZoneId,
    /// The simulation, already built.
    pub sim: Sim,
    /// Replication settings for every client.
    pub replication: ReplicationConfig,
    /// Session changes from connection tasks.
    pub sessions: mpsc::Receiver<SessionEvent>,
    /// Inputs from connection tasks.
    pub inputs: mpsc::Receiver<InputEvent>,
    /// Counters.
    pub metrics: Arc<ShardMetrics>,
    /// Where the status is published once a second.
    pub status: Arc<Mutex<TickStatus>>,
    /// The current tick, for connection tasks.
    pub tick: Arc<AtomicU64>,
    /// Set to stop the thread.
    pub stop: Arc<AtomicBool>,
    /// The link to the handoff worker, when the shard is part of a multi-zone world.
    pub handoff: Option<TickHandoff>,
    /// Questions from the admin endpoint, answered once a tick.
    pub admin: Option<mpsc::Receiver<AdminQuery>>,
    /// Checkpoints, when the shard is part of a world: where the players' states and the
    /// committed events go.
    pub checkpoints: Option<TickCheckpoints>,
    /// Players restored from their checkpoints at start (a failover): spawned at once, they
    /// wait for their clients.
    pub restored: Vec<(PlayerId, PlayerState)>,
    /// Set by the shell to drain: stop admitting, checkpoint every player, tell every client
    /// to reconnect through the lobby.
    pub drain: Arc<AtomicBool>,
    /// Set by the tick thread once the drain's checkpoint is queued and every client told: how
    /// many players it checkpointed.
    pub drained: Arc<std::sync::OnceLock<usize>>,
}

/// The tick thread's side of checkpoints.
pub struct TickCheckpoints {
    /// To the checkpoint writer.
    pub commands: mpsc::Sender<CheckpointCommand>,
    /// How often every player's state is sent.
    pub interval: Duration,
}

/// The tick thread's side of handoff: channels to and from the worker, and the geometry.
pub struct TickHandoff {
    /// To the worker.
    pub commands: mpsc::Sender<HandoffCommand>,
    /// From the worker.
    pub events: mpsc::Receiver<HandoffEvent>,
    /// Ghost batches to publish: (neighbour number, encoded batch).
    pub ghosts_out: mpsc::Sender<(u16, Vec<u8>)>,
    /// Ghost updates received.
    pub ghosts_in: mpsc::Receiver<Vec<GhostUpdate>>,
    /// Neighbouring zones, in the simulation's neighbour order.
    pub neighbours: Vec<ZoneId>,
    /// Their rectangles, same order.
    pub neighbour_rects: Vec<([f32; 2], [f32; 2])>,
    /// What is published to each neighbour.
    pub bands: GhostBands,
    /// Spawn points of the zone (joins spawn near one of them).
    pub spawns: Vec<[f32; 2]>,
    /// Settings.
    pub config: HandoffConfig,
    /// The zone lease as the worker holds it (None while lost). Admission follows it directly,
    /// not the lease events: a connection task claims a player as soon as the lease is back,
    /// which may be before the tick thread hears of it.
    pub lease: watch::Receiver<Option<meridian_cluster::ownership::Lease>>,
}

/// Spawns land within this distance of a spawn point.
const SPAWN_JITTER: f32 = 15.0;
/// Neighbour notices are checked every this many ticks.
const NOTICE_EVERY_TICKS: u64 = 5;

struct ClientSlot {
    player: PlayerId,
    connection: quinn::Connection,
    control: mpsc::Sender<ShardControlMsg>,
    repl: ClientReplication,
    input_ack: InputSeq,
    flood_strikes: u32,
    /// The connection's datagram size, read once a second (reading it takes the connection's
    /// lock, which per client per tick cost 7% of a loaded tick) and after a failed send.
    max_datagram: Option<usize>,
    datagram: ServerDatagramMsg,
    /// Per neighbour, the generation of the neighbour's owner this client was told about (0:
    /// none).
    notified: Vec<u32>,
}

/// A frozen player whose transfer is in flight.
struct Outgoing {
    /// Its client left meanwhile: if the transfer fails, release the player.
    left: bool,
}

/// A handed-off client that has not moved yet.
struct HandedOff {
    player: PlayerId,
    connection: quinn::Connection,
    control: mpsc::Sender<ShardControlMsg>,
    deadline: Instant,
}

/// A player spawned from a notice (or restored from its checkpoint), waiting for its client.
struct Incoming {
    since: Instant,
    /// The notice to acknowledge once the entity exists.
    notice: Option<String>,
    /// How long it waits; `None`: the handoff arrival grace.
    grace: Option<Duration>,
}

struct PendingJoin {
    conn: ConnId,
    connection: quinn::Connection,
    control: mpsc::Sender<ShardControlMsg>,
    arrival: Option<Arrival>,
}

struct Histograms {
    total: Histogram<u64>,
    recent: Histogram<u64>,
    inputs: Histogram<u64>,
    sim: Histogram<u64>,
    replication: Histogram<u64>,
    send: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .expect("invariant: static histogram bounds are valid")
}

fn times(h: &Histogram<u64>) -> PhaseTimes {
    if h.is_empty() {
        return PhaseTimes::default();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    PhaseTimes {
        p50_ms: ms(h.value_at_quantile(0.5)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
    }
}

/// The tick loop's state.
pub struct TickLoop {
    setup: TickSetup,
    quantizer: PositionQuantizer,
    bounds: ZoneBoundsMsg,
    inputs: SimInputs,
    clients: BTreeMap<ConnId, ClientSlot>,
    by_player: HashMap<PlayerId, ConnId>,
    pending: HashMap<PlayerId, PendingJoin>,
    deferred_joins: Vec<(PlayerId, PendingJoin)>,
    encode_buf: Vec<u8>,
    /// The tick's datagrams, carved one after the other out of shared blocks: one allocation
    /// per block of datagrams, not one per datagram.
    send_arena: bytes::BytesMut,
    hist: Histograms,
    last_overrun_warn: Option<Instant>,
    overruns: u64,
    /// Owner of each neighbouring zone, as the worker last reported.
    neighbours: Vec<Option<NeighbourInfo>>,
    /// Generation of each neighbour's owner (bumped on every change).
    neighbour_gen: Vec<u32>,
    outgoing: HashMap<PlayerId, Outgoing>,
    handed: HashMap<ConnId, HandedOff>,
    incoming: HashMap<PlayerId, Incoming>,
    ghost_buf: Vec<Vec<GhostEntityMsg>>,
    spawn_rng: Pcg64Mcg,
    /// When the players' states were last sent to the checkpoint writer.
    last_checkpoint: Instant,
    /// The drain was carried out.
    drain_done: bool,
}

fn us_since(t: Instant) -> u64 {
    t.elapsed().as_micros().max(1) as u64
}

impl TickLoop {
    /// Prepares the loop.
    pub fn new(setup: TickSetup) -> Self {
        let cfg = setup.sim.config();
        let seed = cfg.seed;
        let n_neighbours = setup.handoff.as_ref().map_or(0, |h| h.neighbours.len());
        // Positions are quantized within the view: the zone plus the border band.
        let (min, max) = cfg.view_bounds();
        let quantizer =
            PositionQuantizer::new(min, max).expect("invariant: the sim validated its bounds");
        Self {
            quantizer,
            bounds: ZoneBoundsMsg {
                min_x: min[0],
                min_y: min[1],
                max_x: max[0],
                max_y: max[1],
            },
            inputs: SimInputs::default(),
            clients: BTreeMap::new(),
            by_player: HashMap::new(),
            pending: HashMap::new(),
            deferred_joins: Vec::new(),
            encode_buf: Vec::with_capacity(2048),
            send_arena: bytes::BytesMut::new(),
            hist: Histograms {
                total: histogram(),
                recent: histogram(),
                inputs: histogram(),
                sim: histogram(),
                replication: histogram(),
                send: histogram(),
            },
            last_overrun_warn: None,
            overruns: 0,
            neighbours: vec![None; n_neighbours],
            neighbour_gen: vec![0; n_neighbours],
            outgoing: HashMap::new(),
            handed: HashMap::new(),
            incoming: HashMap::new(),
            ghost_buf: vec![Vec::new(); n_neighbours],
            spawn_rng: Pcg64Mcg::seed_from_u64(seed),
            last_checkpoint: Instant::now(),
            drain_done: false,
            setup,
        }
        .with_restored()
    }

    /// Spawns the players restored from their checkpoints; each waits for its client.
    fn with_restored(mut self) -> Self {
        let grace = self
            .setup
            .handoff
            .as_ref()
            .map_or(crate::handoff::RESUME_GRACE, |h| h.config.resume_grace);
        let now = Instant::now();
        for (player, state) in std::mem::take(&mut self.setup.restored) {
            self.incoming.insert(
                player,
                Incoming {
                    since: now,
                    notice: None,
                    grace: Some(grace),
                },
            );
            self.inputs.joins.push(arrival_join(player, &state));
        }
        if !self.incoming.is_empty() {
            info!(
                players = self.incoming.len(),
                "players restored from their checkpoints; waiting for their clients"
            );
        }
        self
    }

    /// Runs until the stop flag is set, then kicks every client with a shutdown reason.
    pub fn run(mut self) -> TickStatus {
        let hz = u32::from(self.setup.sim.config().tick_hz);
        let dt = Duration::from_secs(1) / hz;
        let mut next = Instant::now();
        let mut last_publish = Instant::now();
        info!(shard = %self.setup.shard, zone = %self.setup.zone, tick_hz = hz, "tick loop started");
        while !self.setup.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now < next {
                std::thread::sleep(next - now);
                continue;
            }
            let behind = ((now - next).as_nanos() / dt.as_nanos().max(1)) as u32;
            if behind > MAX_CATCH_UP_TICKS {
                // Too far behind to catch up without a burst: skip the missed ticks.
                next = now;
            }
            let started = Instant::now();
            self.step();
            let took = started.elapsed();
            next += dt;
            if took > dt {
                self.overruns += 1;
                ShardMetrics::inc(&self.setup.metrics.tick_overruns);
                if self
                    .last_overrun_warn
                    .is_none_or(|t| t.elapsed() >= OVERRUN_WARN_EVERY)
                {
                    self.last_overrun_warn = Some(Instant::now());
                    warn!(
                        took_ms = took.as_secs_f64() * 1000.0,
                        budget_ms = dt.as_secs_f64() * 1000.0,
                        overruns = self.overruns,
                        "tick overrun"
                    );
                }
            }
            if last_publish.elapsed() >= Duration::from_secs(1) {
                last_publish = Instant::now();
                self.publish();
                self.hist.recent.reset();
                self.refresh_slots();
            }
        }
        self.shutdown_clients();
        self.publish();
        self.status()
    }

    /// One tick. The phases, in order:
    /// 1. inputs: session changes (joins, leaves, chat), handoff events (transfer results,
    ///    notices, neighbours, lease), ghost updates, admin questions, and client inputs and
    ///    acks, all drained without waiting;
    /// 2. sim: one step of the simulation;
    /// 3. outputs: welcome new clients, score events, flood strikes, crossings (to the handoff
    ///    worker), neighbour notices, this tick's ghost batches;
    /// 4. replication: per client, a snapshot delta against its acknowledged baseline;
    /// 5. send: encode each snapshot and hand it to QUIC (non-blocking; oldest dropped when a
    ///    client is slow).
    pub fn step(&mut self) {
        let t0 = Instant::now();
        // 1. inputs
        if !self.drain_done && self.setup.drain.load(Ordering::Relaxed) {
            self.drain_now();
        }
        self.drain_sessions();
        self.drain_handoff();
        self.answer_admin();
        self.drain_inputs();
        let t1 = Instant::now();
        self.hist.inputs.saturating_record(us_since(t0));
        self.setup.metrics.tick_phases.inputs.observe(t1 - t0);
        // 2. sim
        let Self {
            setup,
            inputs,
            clients,
            by_player,
            pending,
            encode_buf,
            send_arena,
            hist,
            quantizer,
            bounds,
            incoming,
            outgoing,
            ..
        } = self;
        setup.sim.tick(inputs);
        let out = setup.sim.outputs();
        let tick = out.tick;
        setup.tick.store(tick.0, Ordering::Relaxed);
        ShardMetrics::inc(&setup.metrics.ticks);
        hist.sim.saturating_record(us_since(t1));
        setup.metrics.tick_phases.sim.observe(t1.elapsed());
        // 3. outputs
        let view = setup.sim.view();
        let mut kicks: Vec<(ConnId, KickReason, &'static str)> = Vec::new();
        for &(player, entity) in &out.joined {
            if let Some(arrived) = incoming.get_mut(&player) {
                // Spawned from a notice: acknowledge it now that the entity exists.
                if let (Some(id), Some(h)) = (arrived.notice.take(), &setup.handoff) {
                    let _ = h.commands.try_send(HandoffCommand::AckNotice { id });
                }
                continue;
            }
            let Some(join) = pending.remove(&player) else {
                // The connection ended before its welcome: remove the entity next tick.
                inputs.leaves.push(player);
                continue;
            };
            if join.arrival.as_ref().is_some_and(|a| !a.resumed) {
                ShardMetrics::inc(&setup.metrics.handoffs_in);
            }
            if let Some(slot) = welcome(
                setup,
                *quantizer,
                *bounds,
                tick,
                player,
                entity,
                join.connection,
                join.control,
            ) {
                debug!(%player, entity = entity.0, "welcomed");
                clients.insert(join.conn, slot);
                by_player.insert(player, join.conn);
            } else {
                inputs.leaves.push(player);
            }
        }
        for score in &out.scores {
            if let Some(slot) = by_player.get(&score.player).and_then(|c| clients.get(c)) {
                let msg = ShardControlMsg::Score(ScoreMsg {
                    total: score.total,
                    delta: score.delta,
                });
                if let Some(cp) = &setup.checkpoints {
                    // Committed first: the writer tells the client once the state is written.
                    let Some(state) = setup.sim.player_state(score.player).map(saved_state) else {
                        continue;
                    };
                    let commit = CheckpointCommand::Commit {
                        player: score.player,
                        state,
                        control: slot.control.clone(),
                        msg: Box::new(msg),
                    };
                    if cp.commands.try_send(commit).is_err() {
                        // The next checkpoint carries the score; the client hears of it with
                        // the next committed event.
                        ShardMetrics::inc(&setup.metrics.checkpoints_dropped);
                    }
                    continue;
                }
                if slot.control.try_send(msg).is_err() {
                    kicks.push((
                        by_player[&score.player],
                        KickReason::Admin,
                        "reliable event queue full: client not reading",
                    ));
                }
            }
        }
        for rej in &out.rejected {
            if let InputRejection::Flood = rej.reason {
                ShardMetrics::inc(&setup.metrics.inputs_rejected_flood);
                if let Some(conn) = by_player.get(&rej.player).copied()
                    && let Some(slot) = clients.get_mut(&conn)
                {
                    slot.flood_strikes += 1;
                    if slot.flood_strikes == FLOOD_KICK_STRIKES {
                        kicks.push((
                            conn,
                            KickReason::InputFlood,
                            "inputs faster than the tick rate allows",
                        ));
                    }
                }
            }
        }
        for &(player, seq) in &out.input_acks {
            if let Some(slot) = by_player.get(&player).and_then(|c| clients.get_mut(c)) {
                slot.input_ack = seq;
            }
        }
        if let Some(h) = &setup.handoff {
            for c in &out.crossings {
                let state = PlayerState {
                    pos: c.pos,
                    vel: c.vel,
                    score: c.score,
                    last_input: c.last_input.0,
                };
                let control = by_player
                    .get(&c.player)
                    .and_then(|conn| clients.get(conn))
                    .map(|slot| slot.control.clone());
                let sent = h
                    .neighbours
                    .get(usize::from(c.neighbour))
                    .is_some_and(|zone| {
                        h.commands
                            .try_send(HandoffCommand::Transfer {
                                player: c.player,
                                neighbour: c.neighbour,
                                to_zone: zone.clone(),
                                state,
                                control,
                            })
                            .is_ok()
                    });
                if sent {
                    outgoing.insert(c.player, Outgoing { left: false });
                } else {
                    ShardMetrics::inc(&setup.metrics.handoffs_failed);
                    inputs.transfer_failed.push(c.player);
                }
            }
        }
        // 4 + 5. replication and send, timed apart.
        let (mut repl_ns, mut send_ns) = (0u64, 0u64);
        for slot in clients.values_mut() {
            let Some(me) = view.player(slot.player) else {
                continue;
            };
            let Some(max) = slot.max_datagram else {
                ShardMetrics::inc(&setup.metrics.snapshots_failed);
                continue;
            };
            let budget = setup
                .replication
                .budget_bytes
                .min(max.saturating_sub(SNAPSHOT_OVERHEAD));
            let r0 = Instant::now();
            // A slot's datagram is built as a snapshot and never replaced.
            let ServerDatagramMsg::Snapshot(msg) = &mut slot.datagram else {
                continue;
            };
            slot.repl.build(view, me.index, budget, msg);
            msg.input_ack = slot.input_ack;
            let r1 = Instant::now();
            encode_buf.clear();
            let sent = codec::encode_into(&slot.datagram, encode_buf).is_ok()
                && slot
                    .connection
                    .send_datagram(carve_datagram(send_arena, encode_buf))
                    .is_ok();
            if sent {
                ShardMetrics::inc(&setup.metrics.datagrams_out);
                ShardMetrics::add(&setup.metrics.bytes_out, encode_buf.len() as u64);
            } else {
                ShardMetrics::inc(&setup.metrics.snapshots_failed);
                // The path may have shrunk: read the size again before the next snapshot.
                slot.max_datagram = slot.connection.max_datagram_size();
            }
            let r2 = Instant::now();
            repl_ns += (r1 - r0).as_nanos() as u64;
            send_ns += (r2 - r1).as_nanos() as u64;
        }
        hist.replication.saturating_record((repl_ns / 1000).max(1));
        hist.send.saturating_record((send_ns / 1000).max(1));
        let phases = &setup.metrics.tick_phases;
        phases.replication.observe(Duration::from_nanos(repl_ns));
        phases.send.observe(Duration::from_nanos(send_ns));
        for (conn, reason, detail) in kicks {
            self.kick(conn, reason, detail);
        }
        self.publish_border(tick);
        self.checkpoint();
        let total = us_since(t0);
        self.hist.total.saturating_record(total);
        self.hist.recent.saturating_record(total);
        let m = &self.setup.metrics;
        m.tick_phases.total.observe(t0.elapsed());
        ShardMetrics::set(&m.players, self.clients.len());
        ShardMetrics::set(&m.entities, self.setup.sim.view().entities.len());
        ShardMetrics::set(&m.ghosts, self.setup.sim.ghost_count());
    }

    /// Every checkpoint interval, sends the state of every player this shard owns to the
    /// checkpoint writer (one allocation per interval, not per tick).
    fn checkpoint(&mut self) {
        let Some(cp) = &self.setup.checkpoints else {
            return;
        };
        if self.last_checkpoint.elapsed() < cp.interval || !self.admitting() {
            return;
        }
        self.last_checkpoint = Instant::now();
        let batch = self.owned_states();
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        if cp
            .commands
            .try_send(CheckpointCommand::Batch(batch))
            .is_err()
        {
            ShardMetrics::add(&self.setup.metrics.checkpoints_dropped, n);
        }
    }

    /// The states of the players this shard owns (not those frozen mid-transfer).
    fn owned_states(&self) -> Vec<(PlayerId, PlayerState)> {
        self.setup
            .sim
            .players()
            .filter(|(p, _)| !self.outgoing.contains_key(p))
            .map(|(p, snap)| (p, saved_state(snap)))
            .collect()
    }

    /// The drain: admission stops (see [`TickLoop::admitting`]), every player's state goes to
    /// the checkpoint writer (ownership is kept, so that the next holder of the zone restores
    /// them), and every client is told to reconnect through the lobby.
    fn drain_now(&mut self) {
        self.drain_done = true;
        let batch = self.owned_states();
        let players = batch.len();
        if let Some(cp) = &self.setup.checkpoints
            && !batch.is_empty()
            && cp
                .commands
                .try_send(CheckpointCommand::Batch(batch))
                .is_err()
        {
            ShardMetrics::add(&self.setup.metrics.checkpoints_dropped, players as u64);
            warn!(players, "drain checkpoint not queued: the writer is behind");
        }
        let conns: Vec<ConnId> = self.clients.keys().copied().collect();
        for conn in conns {
            let Some(slot) = self.clients.remove(&conn) else {
                continue;
            };
            self.by_player.remove(&slot.player);
            ShardMetrics::inc(&self.setup.metrics.kicks);
            let msg = ShardControlMsg::Kick(KickMsg {
                reason: KickReason::Draining,
                detail: "shard draining: reconnect through the lobby to resume".into(),
            });
            if slot.control.try_send(msg).is_err() {
                slot.connection
                    .close(close_code::KICKED.into(), b"shard draining");
            }
            // Not released: the checkpoint above keeps the player's place for the next
            // holder of the zone.
            if !self.outgoing.contains_key(&slot.player) {
                self.inputs.leaves.push(slot.player);
            }
        }
        for (player, _) in self.incoming.drain() {
            self.inputs.leaves.push(player);
        }
        for (_, p) in self.pending.drain() {
            p.connection
                .close(close_code::SHUTDOWN.into(), b"shard draining");
        }
        for (_, p) in self.deferred_joins.drain(..) {
            p.connection
                .close(close_code::SHUTDOWN.into(), b"shard draining");
        }
        info!(
            players,
            "draining: players checkpointed, clients sent to the lobby"
        );
        let _ = self.setup.drained.set(players);
    }

    /// Neighbour notices to clients near a border (every few ticks) and this tick's ghost
    /// batches.
    fn publish_border(&mut self, tick: meridian_protocol::Tick) {
        let Some(h) = &self.setup.handoff else {
            return;
        };
        let view = self.setup.sim.view();
        if tick.0.is_multiple_of(NOTICE_EVERY_TICKS) && self.neighbours.iter().any(Option::is_some)
        {
            let reach = h.config.notice_distance;
            for slot in self.clients.values_mut() {
                let Some(me) = view.player(slot.player) else {
                    continue;
                };
                let p = view.grid.position(me.index);
                for (i, owner) in self.neighbours.iter().enumerate() {
                    let (Some(info), Some(&(min, max))) = (owner, h.neighbour_rects.get(i)) else {
                        continue;
                    };
                    let gen_now = self.neighbour_gen[i];
                    if slot.notified.get(i) == Some(&gen_now)
                        || distance_to_rect(p, min, max) > reach
                    {
                        continue;
                    }
                    let msg = ShardControlMsg::Neighbour(NeighbourMsg {
                        zone: info.zone.clone(),
                        shard: info.shard.clone(),
                        addr: info.addr.clone(),
                        cert_sha256: info.cert_sha256,
                    });
                    if slot.control.try_send(msg).is_ok()
                        && let Some(n) = slot.notified.get_mut(i)
                    {
                        *n = gen_now;
                    }
                }
            }
        }
        if !h.bands.is_empty() {
            h.bands.collect(view, &mut self.ghost_buf);
            worker::queue_ghosts(&self.setup.zone, tick, &self.ghost_buf, &h.ghosts_out);
        }
    }

    /// Handoff events and ghost updates from the worker.
    fn drain_handoff(&mut self) {
        let Some(h) = self.setup.handoff.as_mut() else {
            return;
        };
        while let Ok(batch) = h.ghosts_in.try_recv() {
            self.inputs.ghosts.extend_from_slice(&batch);
        }
        let mut events = Vec::new();
        while let Ok(ev) = h.events.try_recv() {
            events.push(ev);
        }
        for ev in events {
            self.on_handoff_event(ev);
        }
    }

    fn on_handoff_event(&mut self, ev: HandoffEvent) {
        match ev {
            HandoffEvent::Transferred {
                player,
                msg,
                seq,
                delivered,
            } => {
                let left = self.outgoing.remove(&player).is_some_and(|o| o.left);
                self.inputs.leaves.push(player);
                if left {
                    return;
                }
                let Some(conn) = self.by_player.remove(&player) else {
                    return;
                };
                let Some(slot) = self.clients.remove(&conn) else {
                    return;
                };
                debug!(%player, seq, to = %msg.shard, "handed off");
                let grace = self
                    .setup
                    .handoff
                    .as_ref()
                    .map_or(crate::handoff::HANDED_OFF_GRACE, |h| {
                        h.config.handed_off_grace
                    });
                if !delivered
                    && slot
                        .control
                        .try_send(ShardControlMsg::Handoff(msg))
                        .is_err()
                {
                    slot.connection
                        .close(close_code::KICKED.into(), b"handoff could not be sent");
                    return;
                }
                self.handed.insert(
                    conn,
                    HandedOff {
                        player,
                        connection: slot.connection,
                        control: slot.control,
                        deadline: Instant::now() + grace,
                    },
                );
            }
            HandoffEvent::TransferFailed { player, reason } => {
                debug!(%player, %reason, "transfer failed; the border holds");
                match self.outgoing.remove(&player) {
                    Some(Outgoing { left: true }) => self.release(player),
                    _ => self.inputs.transfer_failed.push(player),
                }
            }
            HandoffEvent::Notice { id, notice, state } => {
                let player = notice.player;
                let here = self.by_player.contains_key(&player)
                    || self.pending.contains_key(&player)
                    || self.incoming.contains_key(&player)
                    || self.setup.sim.view().player(player).is_some();
                if here || !self.admitting() {
                    // Its client arrived first (or this is a repeat): nothing to spawn.
                    if let Some(h) = &self.setup.handoff {
                        let _ = h.commands.try_send(HandoffCommand::AckNotice { id });
                    }
                    return;
                }
                ShardMetrics::inc(&self.setup.metrics.handoffs_in);
                debug!(%player, seq = notice.seq, from = %notice.from, "arrival by notice");
                self.incoming.insert(
                    player,
                    Incoming {
                        since: Instant::now(),
                        notice: Some(id),
                        grace: None,
                    },
                );
                self.inputs.joins.push(arrival_join(player, &state));
            }
            HandoffEvent::Neighbours(owners) => {
                let open: Vec<bool> = owners.iter().map(Option::is_some).collect();
                for (i, owner) in owners.into_iter().enumerate() {
                    if let Some(old) = self.neighbours.get_mut(i)
                        && *old != owner
                    {
                        *old = owner;
                        self.neighbour_gen[i] = self.neighbour_gen[i].wrapping_add(1).max(1);
                    }
                }
                self.inputs.open_borders = Some(open);
            }
            HandoffEvent::LeaseLost { holder } => {
                warn!(holder = ?holder.as_ref().map(|l| l.owner.to_string()), "zone lease lost: closing every session of the zone");
                let conns: Vec<ConnId> = self.clients.keys().copied().collect();
                for conn in conns {
                    self.kick(
                        conn,
                        KickReason::ZoneLost,
                        "this shard no longer serves the zone",
                    );
                }
                for (player, _) in self.incoming.drain() {
                    self.inputs.leaves.push(player);
                }
                self.inputs.open_borders = Some(vec![false; self.neighbours.len()]);
            }
            HandoffEvent::LeaseRegained(lease) => {
                info!(epoch = lease.epoch, "zone lease held again: serving");
                let players: Vec<PlayerId> =
                    self.held_players().into_iter().map(|h| h.player).collect();
                if let Some(h) = &self.setup.handoff
                    && !players.is_empty()
                    && h.commands
                        .try_send(HandoffCommand::Reclaim { players })
                        .is_err()
                {
                    warn!("players not reclaimed: handoff worker busy");
                }
            }
        }
    }

    /// Answers the admin endpoint's questions.
    fn answer_admin(&mut self) {
        let Some(rx) = self.setup.admin.as_mut() else {
            return;
        };
        let mut questions = Vec::new();
        while let Ok(q) = rx.try_recv() {
            questions.push(q);
        }
        for q in questions {
            match q {
                AdminQuery::Players(reply) => {
                    let _ = reply.send(self.held_players());
                }
            }
        }
    }

    /// Every player this shard holds, in what state (for audits).
    pub fn held_players(&self) -> Vec<HeldPlayer> {
        let pos = |player| self.setup.sim.player_state(player).map(|s| s.pos);
        let mut held = Vec::new();
        for slot in self.clients.values() {
            let state = if self.outgoing.contains_key(&slot.player) {
                HeldState::Outgoing
            } else {
                HeldState::Active
            };
            held.push(HeldPlayer {
                player: slot.player,
                state,
                pos: pos(slot.player),
            });
        }
        for player in self.pending.keys() {
            held.push(HeldPlayer {
                player: *player,
                state: HeldState::Joining,
                pos: None,
            });
        }
        for (player, _) in &self.deferred_joins {
            held.push(HeldPlayer {
                player: *player,
                state: HeldState::Joining,
                pos: None,
            });
        }
        for player in self.incoming.keys() {
            held.push(HeldPlayer {
                player: *player,
                state: HeldState::Incoming,
                pos: pos(*player),
            });
        }
        for (player, o) in &self.outgoing {
            // Frozen players whose client already left have no slot.
            if o.left {
                held.push(HeldPlayer {
                    player: *player,
                    state: HeldState::Outgoing,
                    pos: pos(*player),
                });
            }
        }
        held.sort_by_key(|h| h.player);
        held.dedup_by_key(|h| h.player);
        held
    }

    /// Saves and releases a player that leaves this shard for good (not by handoff), and
    /// removes its entity.
    fn release(&mut self, player: PlayerId) {
        self.inputs.leaves.push(player);
        let Some(h) = &self.setup.handoff else {
            return;
        };
        let state = self.setup.sim.player_state(player).map(saved_state);
        if h.commands
            .try_send(HandoffCommand::Release { player, state })
            .is_err()
        {
            ShardMetrics::inc(&self.setup.metrics.ownership_errors);
            warn!(%player, "release not queued: handoff worker busy");
        }
    }

    fn drain_sessions(&mut self) {
        // Joins that had to wait for the previous session of the same player to leave.
        for (player, join) in std::mem::take(&mut self.deferred_joins) {
            self.queue_join(player, join);
        }
        while let Ok(ev) = self.setup.sessions.try_recv() {
            match ev {
                SessionEvent::Joined {
                    conn,
                    player,
                    connection,
                    control,
                    arrival,
                } => {
                    let join = PendingJoin {
                        conn,
                        connection,
                        control,
                        arrival,
                    };
                    if !self.admitting() {
                        // Claimed under a lease lost since (or the shard is draining): the
                        // client goes back to the lobby.
                        let kick = if self.drain_done {
                            ShardControlMsg::Kick(KickMsg {
                                reason: KickReason::Draining,
                                detail: "shard draining: reconnect through the lobby".into(),
                            })
                        } else {
                            ShardControlMsg::Kick(KickMsg {
                                reason: KickReason::ZoneLost,
                                detail: "this shard no longer serves the zone".into(),
                            })
                        };
                        if join.control.try_send(kick).is_err() {
                            join.connection
                                .close(close_code::KICKED.into(), b"zone not served here");
                        }
                        continue;
                    }
                    if self.incoming.remove(&player).is_some() {
                        // Its entity came with the notice: attach the client to it.
                        self.attach(player, join);
                        continue;
                    }
                    if let Some(old) = self.by_player.get(&player).copied() {
                        // Same player again: the new connection wins; the old one is kicked and
                        // the new join waits one tick for the old entity to be removed.
                        self.kick(
                            old,
                            KickReason::Admin,
                            "replaced by a newer connection of the same player",
                        );
                        self.deferred_joins.push((player, join));
                        continue;
                    }
                    self.queue_join(player, join);
                }
                SessionEvent::Left { conn } => self.remove_client(conn),
                SessionEvent::Chat { conn, text } => self.relay_chat(conn, text),
            }
        }
    }

    /// Whether this shard admits players now: not once draining; otherwise always when
    /// alone, while it holds its zone's lease when part of a world.
    fn admitting(&self) -> bool {
        !self.drain_done
            && self
                .setup
                .handoff
                .as_ref()
                .is_none_or(|h| h.lease.borrow().is_some())
    }

    /// A client arrives for an entity that already exists (spawned from a notice).
    fn attach(&mut self, player: PlayerId, join: PendingJoin) {
        let tick = self.setup.sim.tick_number();
        let Some(entity) = self.setup.sim.view().player(player).map(|p| p.entity) else {
            // Not spawned yet (notice this tick): spawn through the normal path.
            self.queue_join(player, join);
            return;
        };
        // Counted as a handoff in when the notice spawned it.
        match welcome(
            &self.setup,
            self.quantizer,
            self.bounds,
            tick,
            player,
            entity,
            join.connection,
            join.control,
        ) {
            Some(slot) => {
                debug!(%player, entity = entity.0, "client joined its arrived entity");
                self.clients.insert(join.conn, slot);
                self.by_player.insert(player, join.conn);
            }
            None => self.release(player),
        }
    }

    fn queue_join(&mut self, player: PlayerId, join: PendingJoin) {
        if self.by_player.contains_key(&player) {
            self.deferred_joins.push((player, join));
            return;
        }
        let sim_join = match &join.arrival {
            Some(a) => arrival_join(player, &a.state),
            None => SimJoin {
                player,
                spawn: self.spawn_point(),
                ..SimJoin::default()
            },
        };
        if let Some(prev) = self.pending.insert(player, join) {
            prev.connection
                .close(close_code::KICKED.into(), b"replaced by a newer connection");
            return;
        }
        self.inputs.joins.push(sim_join);
    }

    /// A point near one of the zone's spawn points; `None` (anywhere in the zone) without a
    /// world map.
    fn spawn_point(&mut self) -> Option<[f32; 2]> {
        let h = self.setup.handoff.as_ref()?;
        if h.spawns.is_empty() {
            return None;
        }
        let base = h.spawns[self.spawn_rng.random_range(0..h.spawns.len())];
        let cfg = self.setup.sim.config();
        let (min, max) = (cfg.bounds_min, cfg.bounds_max);
        Some([0, 1].map(|a| {
            let j: f32 = self.spawn_rng.random_range(-SPAWN_JITTER..=SPAWN_JITTER);
            (base[a] + j).clamp(min[a], max[a])
        }))
    }

    fn remove_client(&mut self, conn: ConnId) {
        if let Some(h) = self.handed.remove(&conn) {
            debug!(player = %h.player, "handed-off client moved on");
            return;
        }
        if let Some(slot) = self.clients.remove(&conn) {
            if self.by_player.get(&slot.player) == Some(&conn) {
                self.by_player.remove(&slot.player);
            }
            if let Some(o) = self.outgoing.get_mut(&slot.player) {
                // Mid-transfer: the transfer decides what happens to the entity.
                o.left = true;
            } else {
                self.release(slot.player);
            }
            debug!(player = %slot.player, "session removed");
        } else {
            // Left before the welcome: forget the pending join (its entity, if spawned this
            // tick, is removed when the join output arrives).
            let before = self.pending.len();
            self.pending.retain(|_, p| p.conn != conn);
            if self.pending.len() != before {
                debug!("pending join dropped");
            }
            self.deferred_joins.retain(|(_, p)| p.conn != conn);
        }
    }

    fn drain_inputs(&mut self) {
        while let Ok(InputEvent { conn, msg }) = self.setup.inputs.try_recv() {
            let Some(slot) = self.clients.get_mut(&conn) else {
                continue;
            };
            if let Some(ack) = msg.ack {
                slot.repl.on_ack(ack);
            }
            for frame in msg.inputs.iter() {
                self.inputs.inputs.push((slot.player, *frame));
            }
        }
    }

    fn kick(&mut self, conn: ConnId, reason: KickReason, detail: &str) {
        let Some(slot) = self.clients.get(&conn) else {
            return;
        };
        ShardMetrics::inc(&self.setup.metrics.kicks);
        if reason == KickReason::Shutdown {
            info!(player = %slot.player, detail, "closing session: shard shutting down");
        } else {
            warn!(player = %slot.player, ?reason, detail, "kicking client");
        }
        let msg = ShardControlMsg::Kick(KickMsg {
            reason,
            detail: detail.to_owned(),
        });
        if slot.control.try_send(msg).is_err() {
            slot.connection
                .close(close_code::KICKED.into(), detail.as_bytes());
        }
        self.remove_client(conn);
    }

    fn relay_chat(&mut self, conn: ConnId, text: String) {
        let Some(from) = self.clients.get(&conn) else {
            return;
        };
        let view = self.setup.sim.view();
        let Some(me) = view.player(from.player) else {
            return;
        };
        let center = view.grid.position(me.index);
        let radius = self.setup.replication.interest_radius;
        let msg = ShardControlMsg::Chat(ChatMsg {
            from: from.player,
            text,
        });
        let near: Vec<PlayerId> = view
            .players
            .iter()
            .filter(|p| {
                let q = view.grid.position(p.index);
                (q[0] - center[0]).powi(2) + (q[1] - center[1]).powi(2) <= radius * radius
            })
            .map(|p| p.player)
            .collect();
        for player in near {
            if let Some(slot) = self
                .by_player
                .get(&player)
                .and_then(|c| self.clients.get(c))
            {
                let _ = slot.control.try_send(msg.clone());
            }
        }
    }

    /// Once a second: flood strikes halve, datagram sizes are read again.
    /// Once a second: flood strikes halve, datagram sizes are read again, grace periods of
    /// handed-off clients and of arrivals without a client run out.
    fn refresh_slots(&mut self) {
        for slot in self.clients.values_mut() {
            slot.flood_strikes /= 2;
            slot.max_datagram = slot.connection.max_datagram_size();
        }
        let now = Instant::now();
        let late: Vec<ConnId> = self
            .handed
            .iter()
            .filter(|(_, h)| h.deadline <= now)
            .map(|(c, _)| *c)
            .collect();
        for conn in late {
            if let Some(h) = self.handed.remove(&conn) {
                ShardMetrics::inc(&self.setup.metrics.handoffs_abandoned);
                info!(player = %h.player, "handed-off client did not move in time; closing");
                let msg = ShardControlMsg::Kick(KickMsg {
                    reason: KickReason::HandedOff,
                    detail: "handed off to another shard; the client did not move".into(),
                });
                if h.control.try_send(msg).is_err() {
                    h.connection.close(close_code::KICKED.into(), b"handed off");
                }
            }
        }
        let grace = self
            .setup
            .handoff
            .as_ref()
            .map_or(crate::handoff::ARRIVAL_GRACE, |h| h.config.arrival_grace);
        let stale: Vec<PlayerId> = self
            .incoming
            .iter()
            .filter(|(_, i)| now.duration_since(i.since) >= i.grace.unwrap_or(grace))
            .map(|(p, _)| *p)
            .collect();
        for player in stale {
            self.incoming.remove(&player);
            info!(%player, "arrived player's client never came; saving and removing it");
            self.release(player);
        }
    }

    fn status(&self) -> TickStatus {
        TickStatus {
            tick: self.setup.sim.tick_number().0,
            players: self.clients.len(),
            entities: self.setup.sim.view().entities.len(),
            total: times(&self.hist.total),
            recent: times(&self.hist.recent),
            inputs: times(&self.hist.inputs),
            sim: times(&self.hist.sim),
            replication: times(&self.hist.replication),
            send: times(&self.hist.send),
            overruns: self.overruns,
        }
    }

    fn publish(&self) {
        let status = self.status();
        if let Ok(mut s) = self.setup.status.lock() {
            *s = status;
        }
    }

    fn shutdown_clients(&mut self) {
        let conns: Vec<ConnId> = self.clients.keys().copied().collect();
        for player in self.incoming.keys().copied().collect::<Vec<_>>() {
            self.release(player);
        }
        for conn in conns {
            self.kick(conn, KickReason::Shutdown, "shard shutting down");
        }
        for (_, h) in self.handed.drain() {
            h.connection
                .close(close_code::SHUTDOWN.into(), b"shutting down");
        }
        for (_, p) in self.pending.drain() {
            p.connection
                .close(close_code::SHUTDOWN.into(), b"shutting down");
        }
    }
}

/// `bytes` as a datagram carved out of `arena`, which gets a new block of
/// [`SEND_ARENA_BLOCK`] bytes when the current one is used up (the block lives until every
/// datagram carved out of it is sent).
fn carve_datagram(arena: &mut bytes::BytesMut, bytes: &[u8]) -> Bytes {
    if arena.capacity() < bytes.len() {
        *arena = bytes::BytesMut::with_capacity(SEND_ARENA_BLOCK.max(bytes.len()));
    }
    arena.extend_from_slice(bytes);
    arena.split().freeze()
}

/// Size of the blocks datagrams are carved out of: about a thousand snapshots.
const SEND_ARENA_BLOCK: usize = 64 * 1024;

/// Sends the welcome and builds the client's slot; `None` if the client's queue is gone.
#[expect(
    clippy::too_many_arguments,
    reason = "the pieces of one slot, borrowed apart"
)]
fn welcome(
    setup: &TickSetup,
    quantizer: PositionQuantizer,
    bounds: ZoneBoundsMsg,
    tick: meridian_protocol::Tick,
    player: PlayerId,
    entity: meridian_protocol::EntityId,
    connection: quinn::Connection,
    control: mpsc::Sender<ShardControlMsg>,
) -> Option<ClientSlot> {
    let welcome = ShardControlMsg::Welcome(WelcomeMsg {
        player,
        entity,
        shard: setup.shard.clone(),
        zone: setup.zone.clone(),
        bounds,
        tick_hz: setup.sim.config().tick_hz,
        server_tick: tick,
    });
    control.try_send(welcome).ok()?;
    let max_datagram = connection.max_datagram_size();
    let neighbours = setup.handoff.as_ref().map_or(0, |h| h.neighbours.len());
    Some(ClientSlot {
        player,
        connection,
        control,
        repl: ClientReplication::new(&setup.replication, quantizer, entity),
        input_ack: InputSeq(0),
        flood_strikes: 0,
        max_datagram,
        datagram: ServerDatagramMsg::Snapshot(SnapshotMsg {
            tick,
            baseline: None,
            input_ack: InputSeq(0),
            payload: Vec::with_capacity(1500),
        }),
        notified: vec![0; neighbours],
    })
}

/// What is saved of a player.
fn saved_state(s: crate::sim::PlayerSnapshot) -> PlayerState {
    PlayerState {
        pos: s.pos,
        vel: s.vel,
        score: s.score,
        last_input: s.last_input.0,
    }
}

/// The simulation join of a player arriving with its saved state.
fn arrival_join(player: PlayerId, state: &PlayerState) -> SimJoin {
    SimJoin {
        player,
        spawn: Some(state.pos),
        score: state.score,
        velocity: state.vel,
        last_input: InputSeq(state.last_input),
    }
}

/// Distance from `p` to the rectangle `min`..`max` (0 inside).
fn distance_to_rect(p: [f32; 2], min: [f32; 2], max: [f32; 2]) -> f32 {
    let dx = (min[0] - p[0]).max(0.0).max(p[0] - max[0]);
    let dy = (min[1] - p[1]).max(0.0).max(p[1] - max[1]);
    (dx * dx + dy * dy).sqrt()
}
