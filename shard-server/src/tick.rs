//! The tick driver: a dedicated thread that runs the simulation at a fixed rate with a
//! fixed-timestep accumulator, and around it the per-tick work of the shell: session changes
//! and inputs in, snapshots out. It never waits on the network: channels are drained with
//! `try_recv`, datagrams are handed to quinn without blocking, reliable events go through
//! bounded queues with `try_send`.

use crate::metrics::{PhaseTimes, ShardMetrics, TickStatus};
use crate::net::{ConnId, InputEvent, SessionEvent};
use crate::replication::{ClientReplication, ReplicationConfig};
use crate::sim::{InputRejection, Sim, SimInputs, SimJoin};
use bytes::Bytes;
use hdrhistogram::Histogram;
use meridian_protocol::codec;
use meridian_protocol::control::{
    ChatMsg, KickMsg, KickReason, ScoreMsg, ShardControlMsg, WelcomeMsg, ZoneBoundsMsg,
};
use meridian_protocol::datagram::{ServerDatagramMsg, SnapshotMsg};
use meridian_protocol::quantize::PositionQuantizer;
use meridian_protocol::quic::close_code;
use meridian_protocol::{InputSeq, PlayerId, ShardId, ZoneId};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
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
}

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
}

struct PendingJoin {
    conn: ConnId,
    connection: quinn::Connection,
    control: mpsc::Sender<ShardControlMsg>,
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
    hist: Histograms,
    last_overrun_warn: Option<Instant>,
    overruns: u64,
}

fn us_since(t: Instant) -> u64 {
    t.elapsed().as_micros().max(1) as u64
}

impl TickLoop {
    /// Prepares the loop.
    pub fn new(setup: TickSetup) -> Self {
        let cfg = setup.sim.config();
        let (min, max) = (cfg.bounds_min, cfg.bounds_max);
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
            setup,
        }
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
    /// 1. inputs: session changes (joins, leaves, chat) and client inputs and acks, drained
    ///    without waiting;
    /// 2. sim: one step of the simulation;
    /// 3. outputs: welcome new clients, score events, flood strikes;
    /// 4. replication: per client, a snapshot delta against its acknowledged baseline;
    /// 5. send: encode each snapshot and hand it to QUIC (non-blocking; oldest dropped when a
    ///    client is slow).
    pub fn step(&mut self) {
        let t0 = Instant::now();
        // 1. inputs
        self.drain_sessions();
        self.drain_inputs();
        let t1 = Instant::now();
        self.hist.inputs.saturating_record(us_since(t0));
        // 2. sim
        let Self {
            setup,
            inputs,
            clients,
            by_player,
            pending,
            encode_buf,
            hist,
            quantizer,
            bounds,
            ..
        } = self;
        setup.sim.tick(inputs);
        let out = setup.sim.outputs();
        let tick = out.tick;
        setup.tick.store(tick.0, Ordering::Relaxed);
        ShardMetrics::inc(&setup.metrics.ticks);
        hist.sim.saturating_record(us_since(t1));
        // 3. outputs
        let view = setup.sim.view();
        let mut kicks: Vec<(ConnId, KickReason, &'static str)> = Vec::new();
        for &(player, entity) in &out.joined {
            let Some(join) = pending.remove(&player) else {
                // The connection ended before its welcome: remove the entity next tick.
                inputs.leaves.push(player);
                continue;
            };
            let welcome = ShardControlMsg::Welcome(WelcomeMsg {
                player,
                entity,
                shard: setup.shard.clone(),
                zone: setup.zone.clone(),
                bounds: *bounds,
                tick_hz: setup.sim.config().tick_hz,
                server_tick: tick,
            });
            if join.control.try_send(welcome).is_err() {
                inputs.leaves.push(player);
                continue;
            }
            let max_datagram = join.connection.max_datagram_size();
            let slot = ClientSlot {
                player,
                connection: join.connection,
                control: join.control,
                repl: ClientReplication::new(&setup.replication, *quantizer, entity),
                input_ack: InputSeq(0),
                flood_strikes: 0,
                max_datagram,
                datagram: ServerDatagramMsg::Snapshot(SnapshotMsg {
                    tick,
                    baseline: None,
                    input_ack: InputSeq(0),
                    payload: Vec::with_capacity(1500),
                }),
            };
            debug!(%player, entity = entity.0, "welcomed");
            clients.insert(join.conn, slot);
            by_player.insert(player, join.conn);
        }
        for score in &out.scores {
            if let Some(slot) = by_player.get(&score.player).and_then(|c| clients.get(c)) {
                let msg = ShardControlMsg::Score(ScoreMsg {
                    total: score.total,
                    delta: score.delta,
                });
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
                    .send_datagram(Bytes::copy_from_slice(encode_buf))
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
        for (conn, reason, detail) in kicks {
            self.kick(conn, reason, detail);
        }
        let total = us_since(t0);
        self.hist.total.saturating_record(total);
        self.hist.recent.saturating_record(total);
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
                } => {
                    let join = PendingJoin {
                        conn,
                        connection,
                        control,
                    };
                    if let Some(old) = self.by_player.get(&player).copied() {
                        // Same player again: the new connection wins; the old one is kicked and
                        // the new join waits one tick for the old entity to be removed.
                        self.kick(
                            old,
                            KickReason::Admin,
                            "replaced by a newer connection of the same player",
                        );
                        self.deferred_joins.push((player, join));
                    } else if let Some(prev) = self.pending.insert(player, join) {
                        prev.connection
                            .close(close_code::KICKED.into(), b"replaced by a newer connection");
                    }
                    if !self.pending.contains_key(&player) {
                        continue;
                    }
                    self.inputs.joins.push(SimJoin {
                        player,
                        spawn: None,
                        score: 0,
                    });
                }
                SessionEvent::Left { conn } => self.remove_client(conn),
                SessionEvent::Chat { conn, text } => self.relay_chat(conn, text),
            }
        }
    }

    fn queue_join(&mut self, player: PlayerId, join: PendingJoin) {
        if self.by_player.contains_key(&player) {
            self.deferred_joins.push((player, join));
            return;
        }
        self.pending.insert(player, join);
        self.inputs.joins.push(SimJoin {
            player,
            spawn: None,
            score: 0,
        });
    }

    fn remove_client(&mut self, conn: ConnId) {
        if let Some(slot) = self.clients.remove(&conn) {
            if self.by_player.get(&slot.player) == Some(&conn) {
                self.by_player.remove(&slot.player);
            }
            self.inputs.leaves.push(slot.player);
            debug!(player = %slot.player, "session removed");
        } else {
            // Left before the welcome: forget the pending join (its entity, if spawned this
            // tick, is removed when the join output arrives).
            self.pending.retain(|_, p| p.conn != conn);
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
    fn refresh_slots(&mut self) {
        for slot in self.clients.values_mut() {
            slot.flood_strikes /= 2;
            slot.max_datagram = slot.connection.max_datagram_size();
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
        for conn in conns {
            self.kick(conn, KickReason::Shutdown, "shard shutting down");
        }
        for (_, p) in self.pending.drain() {
            p.connection
                .close(close_code::SHUTDOWN.into(), b"shutting down");
        }
    }
}
