//! Checkpoints: the players' states saved to shared state in batches, off the tick thread,
//! fenced by the zone lease; and committed events (score), written before the client hears of
//! them.
//!
//! The tick thread sends [`CheckpointCommand`]s with `try_send` and never waits. The writer
//! task keeps them in a bounded queue, in order, and writes the oldest first with one pipelined
//! [`Store::checkpoint_players`] call per batch. While shared state is out of reach the queue
//! grows (its depth is the `checkpoint_queue_depth` gauge); when full, the oldest periodic batch
//! is dropped (a newer one holds the same players' newer states), then the oldest commit. When
//! the store answers again the queue flushes by itself.
//!
//! A write refused by the fence (another shard owns the player now, at a higher epoch) is
//! counted and never retried: a shard whose lease was taken over cannot write.

use crate::metrics::ShardMetrics;
use meridian_cluster::Store;
use meridian_cluster::ownership::{Lease, PlayerState};
use meridian_cluster::store::StoreHandle;
use meridian_protocol::PlayerId;
use meridian_protocol::control::ShardControlMsg;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

/// Default [`CheckpointConfig::max_queued`].
pub const DEFAULT_MAX_QUEUED: usize = 100_000;
/// Capacity of the channel from the tick thread.
pub const CHANNEL_CAPACITY: usize = 4096;
/// Most commits written in one pipelined call.
const MAX_COMMITS_PER_WRITE: usize = 256;
/// First pause after a failed write; doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause between two attempts while shared state is out of reach.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Settings of the checkpoint writer.
#[derive(Clone, Debug)]
pub struct CheckpointConfig {
    /// How often the tick thread sends the players' states.
    pub interval: Duration,
    /// Most player states (periodic and committed) queued while shared state is out of reach.
    pub max_queued: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            max_queued: DEFAULT_MAX_QUEUED,
        }
    }
}

/// What the tick thread (or the shell) asks the writer to do.
#[derive(Debug)]
pub enum CheckpointCommand {
    /// Save these players' states (the periodic checkpoint).
    Batch(Vec<(PlayerId, PlayerState)>),
    /// A committed event: save the player's state, and only once it is written send `msg` to
    /// the client on `control`.
    Commit {
        /// The player.
        player: PlayerId,
        /// Its state, the event applied.
        state: PlayerState,
        /// The client's reliable event queue.
        control: mpsc::Sender<ShardControlMsg>,
        /// What to tell the client once written.
        msg: Box<ShardControlMsg>,
    },
    /// Answer once everything queued before this command is written (or dropped).
    Flush(oneshot::Sender<()>),
}

enum Queued {
    Batch(Vec<(PlayerId, PlayerState)>),
    Commit {
        player: PlayerId,
        state: PlayerState,
        control: mpsc::Sender<ShardControlMsg>,
        msg: Box<ShardControlMsg>,
    },
    Flush(oneshot::Sender<()>),
}

impl Queued {
    fn states(&self) -> usize {
        match self {
            Self::Batch(b) => b.len(),
            Self::Commit { .. } => 1,
            Self::Flush(_) => 0,
        }
    }
}

/// The bounded queue of the writer: pure, no I/O.
struct Queue {
    items: VecDeque<Queued>,
    states: usize,
    max: usize,
}

impl Queue {
    fn new(max: usize) -> Self {
        Self {
            items: VecDeque::new(),
            states: 0,
            max: max.max(1),
        }
    }

    /// Queues `cmd`; returns how many player states were dropped to make room.
    fn push(&mut self, cmd: CheckpointCommand) -> usize {
        let item = match cmd {
            CheckpointCommand::Batch(b) => Queued::Batch(b),
            CheckpointCommand::Commit {
                player,
                state,
                control,
                msg,
            } => Queued::Commit {
                player,
                state,
                control,
                msg,
            },
            CheckpointCommand::Flush(tx) => Queued::Flush(tx),
        };
        let mut dropped = 0;
        let incoming = item.states();
        while self.states + incoming > self.max {
            // The oldest periodic batch first: a newer one (this one, at the latest) holds the
            // same players' newer states. Then the oldest commit.
            let at = self
                .items
                .iter()
                .position(|q| matches!(q, Queued::Batch(_)))
                .or_else(|| {
                    self.items
                        .iter()
                        .position(|q| matches!(q, Queued::Commit { .. }))
                });
            let Some(at) = at else { break };
            if let Some(old) = self.items.remove(at) {
                let n = old.states();
                self.states -= n;
                dropped += n;
            }
        }
        if self.states + incoming > self.max {
            // Larger than the whole queue: keep its newest part.
            if let Queued::Batch(mut b) = item {
                let keep = self.max - self.states;
                dropped += b.len() - keep;
                b.drain(..b.len() - keep);
                self.states += b.len();
                self.items.push_back(Queued::Batch(b));
            } else {
                dropped += incoming;
            }
            return dropped;
        }
        self.states += incoming;
        self.items.push_back(item);
        dropped
    }

    /// Flush markers at the front are answered; then the next write: a batch, or up to
    /// [`MAX_COMMITS_PER_WRITE`] consecutive commits.
    fn next_write(&mut self) -> Option<usize> {
        while let Some(Queued::Flush(_)) = self.items.front() {
            if let Some(Queued::Flush(tx)) = self.items.pop_front() {
                let _ = tx.send(());
            }
        }
        match self.items.front()? {
            Queued::Batch(_) => Some(1),
            _ => Some(
                self.items
                    .iter()
                    .take(MAX_COMMITS_PER_WRITE)
                    .take_while(|q| matches!(q, Queued::Commit { .. }))
                    .count(),
            ),
        }
    }

    fn states_of(&self, n: usize, out: &mut Vec<(PlayerId, PlayerState)>) {
        out.clear();
        for item in self.items.iter().take(n) {
            match item {
                Queued::Batch(b) => out.extend_from_slice(b),
                Queued::Commit { player, state, .. } => out.push((*player, *state)),
                Queued::Flush(_) => {}
            }
        }
    }

    fn pop(&mut self, n: usize) -> Vec<Queued> {
        let taken: Vec<Queued> = self.items.drain(..n).collect();
        self.states -= taken.iter().map(Queued::states).sum::<usize>();
        taken
    }
}

/// Runs the writer until the tick thread and the shell drop their senders, or `shutdown` turns
/// true and the queue is empty (or the store stays out of reach).
pub async fn run(
    store: StoreHandle,
    lease: watch::Receiver<Option<Lease>>,
    config: CheckpointConfig,
    mut commands: mpsc::Receiver<CheckpointCommand>,
    metrics: Arc<ShardMetrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut queue = Queue::new(config.max_queued);
    let mut states = Vec::new();
    let mut backoff = MIN_BACKOFF;
    let mut failing_since: Option<tokio::time::Instant> = None;
    let depth = |q: &Queue| {
        metrics
            .checkpoint_queue_depth
            .store(q.states as u64, Ordering::Relaxed);
    };
    let mut open = true;
    loop {
        // Take what is there without waiting; wait only when there is nothing to write.
        while let Ok(cmd) = commands.try_recv() {
            let dropped = queue.push(cmd);
            if dropped > 0 {
                ShardMetrics::add(&metrics.checkpoints_dropped, dropped as u64);
            }
        }
        depth(&queue);
        let Some(n) = queue.next_write() else {
            if !open {
                return;
            }
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => {
                        let dropped = queue.push(cmd);
                        ShardMetrics::add(&metrics.checkpoints_dropped, dropped as u64);
                    }
                    None => open = false,
                },
                _ = shutdown.wait_for(|s| *s) => open = false,
            }
            continue;
        };
        let Some(held) = lease.borrow().clone() else {
            if !open {
                // Stopping without a lease: nothing can be written any more.
                ShardMetrics::add(&metrics.checkpoints_dropped, queue.states as u64);
                queue.pop(queue.items.len());
                depth(&queue);
                return;
            }
            // No lease: nothing can be written; wait for it (or for more to queue).
            wait_or_receive(&mut commands, &mut queue, &metrics, MAX_BACKOFF, &mut open).await;
            continue;
        };
        queue.states_of(n, &mut states);
        match metrics
            .store_ops
            .time(
                meridian_cluster::metrics::StoreOp::CheckpointPlayers,
                store.checkpoint_players(&held, &states),
            )
            .await
        {
            Ok(written) => {
                backoff = MIN_BACKOFF;
                if let Some(since) = failing_since.take() {
                    info!(
                        outage_ms = since.elapsed().as_millis() as u64,
                        queued = queue.states,
                        "shared state back: flushing checkpoints"
                    );
                }
                let ok = written.iter().filter(|w| **w).count();
                let refused = written.len() - ok;
                ShardMetrics::add(&metrics.checkpoints_written, ok as u64);
                if refused > 0 {
                    ShardMetrics::add(&metrics.checkpoints_refused, refused as u64);
                    debug!(
                        refused,
                        epoch = held.epoch,
                        "checkpoints refused by the fence"
                    );
                }
                let mut answers = written.into_iter();
                for item in queue.pop(n) {
                    match item {
                        Queued::Batch(b) => {
                            // One answer per player of the batch.
                            for _ in 0..b.len() {
                                answers.next();
                            }
                        }
                        Queued::Commit {
                            player,
                            control,
                            msg,
                            ..
                        } => {
                            if answers.next().unwrap_or(false) {
                                // Written: now the client may hear of it.
                                let _ = control.try_send(*msg);
                            } else {
                                warn!(%player, "event not committed: this shard no longer owns the player");
                            }
                        }
                        Queued::Flush(tx) => {
                            let _ = tx.send(());
                        }
                    }
                }
            }
            Err(e) => {
                ShardMetrics::inc(&metrics.checkpoint_failures);
                if failing_since.is_none() {
                    failing_since = Some(tokio::time::Instant::now());
                    warn!(error = %e, queued = queue.states, "checkpoint not written; queueing until shared state answers");
                } else {
                    debug!(error = %e, "checkpoint retry failed");
                }
                if !open && *shutdown.borrow() {
                    // Stopping and the store does not answer: what is queued is lost (the
                    // previous checkpoint stands).
                    warn!(lost = queue.states, "stopping with checkpoints unwritten");
                    ShardMetrics::add(&metrics.checkpoints_dropped, queue.states as u64);
                    queue.pop(queue.items.len());
                    depth(&queue);
                    return;
                }
                wait_or_receive(&mut commands, &mut queue, &metrics, backoff, &mut open).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Waits `pause`, queueing what arrives meanwhile.
async fn wait_or_receive(
    commands: &mut mpsc::Receiver<CheckpointCommand>,
    queue: &mut Queue,
    metrics: &ShardMetrics,
    pause: Duration,
    open: &mut bool,
) {
    let until = tokio::time::sleep(pause);
    tokio::pin!(until);
    loop {
        tokio::select! {
            cmd = commands.recv(), if *open => match cmd {
                Some(cmd) => {
                    let dropped = queue.push(cmd);
                    ShardMetrics::add(&metrics.checkpoints_dropped, dropped as u64);
                    metrics
                        .checkpoint_queue_depth
                        .store(queue.states as u64, Ordering::Relaxed);
                }
                None => *open = false,
            },
            _ = &mut until => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(x: f32) -> PlayerState {
        PlayerState {
            pos: [x, 0.0],
            vel: [0.0, 0.0],
            score: 0,
            last_input: 0,
        }
    }

    fn batch(players: std::ops::Range<u64>) -> CheckpointCommand {
        CheckpointCommand::Batch(players.map(|p| (PlayerId(p), state(p as f32))).collect())
    }

    fn commit(player: u64) -> CheckpointCommand {
        let (control, _) = mpsc::channel(1);
        CheckpointCommand::Commit {
            player: PlayerId(player),
            state: state(1.0),
            control,
            msg: Box::new(ShardControlMsg::Kick(meridian_protocol::control::KickMsg {
                reason: meridian_protocol::control::KickReason::Admin,
                detail: String::new(),
            })),
        }
    }

    #[test]
    fn a_full_queue_drops_the_oldest_batch_first_and_stays_bounded() {
        let mut q = Queue::new(10);
        assert_eq!(q.push(batch(0..4)), 0);
        assert_eq!(q.push(commit(1)), 0);
        assert_eq!(q.push(batch(0..4)), 0);
        assert_eq!(q.states, 9);
        // Room for 1 more: the oldest batch (4 states) goes, the commit stays.
        assert_eq!(q.push(batch(10..12)), 4);
        assert_eq!(q.states, 7);
        assert!(matches!(q.items.front(), Some(Queued::Commit { .. })));
        // Commits go only when no batch is left: both batches (4 + 2), then the commit.
        assert_eq!(q.push(batch(0..10)), 7);
        assert_eq!(q.states, 10);
        assert_eq!(q.push(commit(2)), 10);
        assert_eq!(q.states, 1);
        assert!(matches!(q.items.front(), Some(Queued::Commit { .. })));
    }

    #[test]
    fn a_batch_larger_than_the_queue_keeps_its_newest_part() {
        let mut q = Queue::new(3);
        assert_eq!(q.push(batch(0..5)), 2);
        let mut out = Vec::new();
        assert_eq!(q.next_write(), Some(1));
        q.states_of(1, &mut out);
        assert_eq!(
            out.iter().map(|(p, _)| p.0).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
    }

    #[test]
    fn commits_are_written_together_and_flushes_answer_in_order() {
        let mut q = Queue::new(100);
        let (tx, mut rx) = oneshot::channel();
        q.push(CheckpointCommand::Flush(tx));
        q.push(commit(1));
        q.push(commit(2));
        q.push(batch(0..3));
        assert_eq!(q.next_write(), Some(2), "two commits in one write");
        assert_eq!(rx.try_recv(), Ok(()), "nothing was queued before the flush");
        let mut out = Vec::new();
        q.states_of(2, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(q.pop(2).len(), 2);
        assert_eq!(q.next_write(), Some(1));
        assert_eq!(q.states, 3);
    }
}
