//! [`ClientReplication`]: the replication state of one client and the building of its snapshots.

use super::history::SentHistory;
use super::interest::{Interest, REMOVAL_WEIGHT, Seen};
use super::{BuildStats, ReplicationConfig};
use crate::sim::view::WorldView;
use meridian_protocol::datagram::SnapshotMsg;
use meridian_protocol::quantize::{PositionQuantizer, angle_to_byte};
use meridian_protocol::snapshot::{self, DeltaPlanner, EntityState, MAX_SNAPSHOT_ENTITIES};
use meridian_protocol::{EntityId, Tick};
use std::cmp::Ordering;

/// An entity this client's replication follows: in view, or out of view with its removal not
/// yet acknowledged.
#[derive(Clone, Copy, Debug)]
struct Tracked {
    id: EntityId,
    /// Accumulated priority; zero when the client's baseline is up to date.
    priority: f32,
    /// In the area of interest this tick (for the hysteresis of the next).
    in_view: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    /// In the baseline and in view, different: `(baseline index, truth index)`.
    Changed(u32, u32),
    /// In view only: truth index.
    Added(u32),
    /// In the baseline only: baseline index.
    Removed(u32),
}

/// An entity whose state differs from the baseline.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    change: Change,
    id: EntityId,
    priority: f32,
    /// Index of its entry in the new tracked list.
    tracked: u32,
    selected: bool,
}

/// Replication state of one connected client: what it was sent, what it acknowledged, the
/// priority of each entity it sees, and the buffers that building a snapshot reuses.
#[derive(Debug)]
pub struct ClientReplication {
    interest: Interest,
    quantizer: PositionQuantizer,
    own: EntityId,
    history: SentHistory,
    /// Sorted by id.
    tracked: Vec<Tracked>,
    /// Tick of the last snapshot built.
    last_tick: Option<Tick>,
    // Scratch buffers, reused every tick.
    seen: Vec<Seen>,
    truth: Vec<EntityState>,
    base: Vec<EntityState>,
    next_tracked: Vec<Tracked>,
    candidates: Vec<Candidate>,
    order: Vec<u32>,
}

impl ClientReplication {
    /// Replication for the client whose entity is `own`, in a zone quantized by `quantizer`.
    /// `cfg` should have passed [`ReplicationConfig::validate`]; a history of 0 is taken as 1.
    pub fn new(cfg: &ReplicationConfig, quantizer: PositionQuantizer, own: EntityId) -> Self {
        Self {
            interest: Interest::new(cfg.interest_radius, cfg.hysteresis),
            quantizer,
            own,
            history: SentHistory::new(cfg.history),
            tracked: Vec::new(),
            last_tick: None,
            seen: Vec::new(),
            truth: Vec::new(),
            base: Vec::new(),
            next_tracked: Vec::new(),
            candidates: Vec::new(),
            order: Vec::new(),
        }
    }

    /// The client says it has applied the snapshot of `tick`. Acknowledgements of ticks not
    /// sent, no longer kept, or older than one already received change nothing.
    pub fn on_ack(&mut self, tick: Tick) {
        self.history.on_ack(tick);
    }

    /// What the client knows after applying the snapshot of `tick`, sorted by id, while that
    /// snapshot is kept as a possible baseline.
    pub fn sent(&self, tick: Tick) -> Option<&[EntityState]> {
        self.history.get(tick)
    }

    /// The client's own entity.
    pub fn own(&self) -> EntityId {
        self.own
    }

    /// Builds the snapshot of `view.tick` for this client into `msg`: sets `msg.tick` and
    /// `msg.baseline`, and refills `msg.payload` (its capacity reused). `msg.input_ack` is left to
    /// the caller. `own_index` is the client's entity's index in `view.entities` (if it does not
    /// hold [`ClientReplication::own`], the entity is looked up by id; if it is absent, the
    /// snapshot removes everything).
    ///
    /// The payload is at most `budget` bytes (or one byte, the header of an empty delta, if the
    /// budget is smaller). Call it once per tick, with increasing ticks; a tick not above the
    /// previous one restarts the client from a full snapshot.
    pub fn build(
        &mut self,
        view: &WorldView,
        own_index: u32,
        budget: usize,
        msg: &mut SnapshotMsg,
    ) -> BuildStats {
        let tick = view.tick;
        if let Some(last) = self.last_tick
            && tick <= last
        {
            self.history.reset(last);
        }
        self.last_tick = Some(tick);

        // 1. Interest.
        let own_index = self.own_index(view, own_index);
        let Self {
            interest,
            tracked,
            seen,
            ..
        } = self;
        interest.collect(
            view,
            own_index,
            |id| {
                tracked
                    .binary_search_by_key(&id, |t| t.id)
                    .is_ok_and(|i| tracked[i].in_view)
            },
            seen,
        );
        self.truth.clear();
        self.truth.extend(self.seen.iter().map(|s| {
            let e = &view.entities[s.index as usize];
            EntityState {
                id: e.id,
                kind: e.kind,
                pos: self.quantizer.quantize(e.pos),
                heading: angle_to_byte(e.heading),
            }
        }));

        // 2. Baseline.
        self.base.clear();
        let baseline = self.history.baseline().map(|(t, states)| {
            self.base.extend_from_slice(states);
            t
        });

        // 3. Candidates.
        self.find_candidates();

        // 4. Budget, and priorities.
        self.select(budget, view, own_index);

        // 5. The record, the payload.
        let record = self.history.push(tick);
        let (mut b, mut t) = (0, 0);
        let mut cands = self.candidates.iter();
        loop {
            let (base, truth) = (self.base.get(b), self.truth.get(t));
            let order = match (base, truth) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(x), Some(y)) => x.id.cmp(&y.id),
            };
            match (order, base, truth) {
                (Ordering::Equal, Some(x), Some(y)) if x == y => {
                    record.push(*y);
                    b += 1;
                    t += 1;
                    continue;
                }
                (Ordering::Equal, ..) => {
                    b += 1;
                    t += 1;
                }
                (Ordering::Less, ..) => b += 1,
                (Ordering::Greater, ..) => t += 1,
            }
            let Some(c) = cands.next() else { break };
            let keep = match (c.change, c.selected) {
                (Change::Changed(_, ti) | Change::Added(ti), true) => Some(self.truth[ti as usize]),
                (Change::Changed(bi, _) | Change::Removed(bi), false) => {
                    Some(self.base[bi as usize])
                }
                (Change::Added(_), false) | (Change::Removed(_), true) => None,
            };
            record.extend(keep);
        }

        msg.tick = tick;
        msg.baseline = baseline;
        msg.payload.clear();
        snapshot::encode_delta(&self.base, record, &mut msg.payload).expect(
            "invariant: records are merges of lists sorted by id, within MAX_SNAPSHOT_ENTITIES",
        );

        for c in &self.candidates {
            if c.selected {
                self.next_tracked[c.tracked as usize].priority = 0.0;
            }
        }
        std::mem::swap(&mut self.tracked, &mut self.next_tracked);

        let written = self.candidates.iter().filter(|c| c.selected).count();
        BuildStats {
            in_view: self.truth.len() as u32,
            written: written as u32,
            deferred: (self.candidates.len() - written) as u32,
            bytes: msg.payload.len() as u32,
            full: baseline.is_none(),
        }
    }

    /// The index of the own entity: `hint` if it holds it, else found by id, else past the end.
    fn own_index(&self, view: &WorldView, hint: u32) -> u32 {
        match view.entities.get(hint as usize) {
            Some(e) if e.id == self.own => hint,
            _ => view
                .entities
                .iter()
                .position(|e| e.id == self.own)
                .map_or(u32::MAX, |i| i as u32),
        }
    }

    /// Walks the baseline and the truth by id: fills `candidates` (in id order, with the
    /// priority accumulated before this tick) and `next_tracked`; entities equal to the baseline
    /// are up to date and start again from zero.
    fn find_candidates(&mut self) {
        self.candidates.clear();
        self.next_tracked.clear();
        let (mut b, mut t, mut p) = (0usize, 0usize, 0usize);
        loop {
            let (base, truth) = (self.base.get(b), self.truth.get(t));
            let (id, change) = match (base, truth) {
                (None, None) => break,
                (Some(x), Some(y)) if x.id == y.id => {
                    let same = x == y;
                    let change = Change::Changed(b as u32, t as u32);
                    b += 1;
                    t += 1;
                    (y.id, (!same).then_some(change))
                }
                (Some(x), Some(y)) if x.id < y.id => {
                    b += 1;
                    (x.id, Some(Change::Removed(b as u32 - 1)))
                }
                (Some(x), None) => {
                    b += 1;
                    (x.id, Some(Change::Removed(b as u32 - 1)))
                }
                (_, Some(y)) => {
                    t += 1;
                    (y.id, Some(Change::Added(t as u32 - 1)))
                }
            };
            // The previous priority, from the tracked list (sorted by id, like this walk).
            while self.tracked.get(p).is_some_and(|e| e.id < id) {
                p += 1;
            }
            let prev = match self.tracked.get(p) {
                Some(e) if e.id == id => e.priority,
                _ => 0.0,
            };
            let in_view = !matches!(change, Some(Change::Removed(_)));
            let priority = if change.is_some() { prev } else { 0.0 };
            self.next_tracked.push(Tracked {
                id,
                priority,
                in_view,
            });
            if let Some(change) = change {
                self.candidates.push(Candidate {
                    change,
                    id,
                    priority,
                    tracked: self.next_tracked.len() as u32 - 1,
                    selected: false,
                });
            }
        }
    }

    /// Marks the candidates written this tick: all when they fit, else by priority while an
    /// upper bound of the payload stays within `budget`.
    ///
    /// Priorities only matter when something must wait: when everything fits, every candidate
    /// is written and starts again from zero, so this tick's gains are not even computed.
    fn select(&mut self, budget: usize, view: &WorldView, own_index: u32) {
        let mut planner = DeltaPlanner::new();
        for c in &self.candidates {
            if let Change::Changed(b, t) = c.change {
                planner.change(&self.base[b as usize], &self.truth[t as usize]);
            }
        }
        let mut fit = planner.budget(budget, self.base.len());
        let (base, truth) = (&self.base, &self.truth);
        let all_fit = fit.try_all(self.candidates.iter().map(|c| match c.change {
            Change::Changed(b, t) => {
                snapshot::DeltaEntry::Change(&base[b as usize], &truth[t as usize])
            }
            Change::Added(t) => snapshot::DeltaEntry::Add(&truth[t as usize]),
            Change::Removed(_) => snapshot::DeltaEntry::Remove,
        }));
        // The record never holds more than the limit: additions wait for removals if needed.
        let adds = self
            .candidates
            .iter()
            .filter(|c| matches!(c.change, Change::Added(_)))
            .count();
        if all_fit && self.base.len() + adds <= MAX_SNAPSHOT_ENTITIES {
            self.candidates.iter_mut().for_each(|c| c.selected = true);
            return;
        }

        // Every candidate gains this tick's priority; the deferred keep it.
        for c in &mut self.candidates {
            c.priority += match c.change {
                Change::Removed(_) => REMOVAL_WEIGHT,
                Change::Changed(_, t) | Change::Added(t) => {
                    self.interest
                        .weight(view, own_index, self.seen[t as usize].index)
                }
            };
            self.next_tracked[c.tracked as usize].priority = c.priority;
        }
        self.order.clear();
        self.order.extend(0..self.candidates.len() as u32);
        let cands = &self.candidates;
        self.order.sort_unstable_by(|&x, &y| {
            let (x, y) = (&cands[x as usize], &cands[y as usize]);
            y.priority.total_cmp(&x.priority).then(x.id.cmp(&y.id))
        });
        let mut count = self.base.len();
        for &i in &self.order {
            let c = &mut self.candidates[i as usize];
            c.selected = match c.change {
                Change::Changed(b, t) => fit.try_change(&base[b as usize], &truth[t as usize]),
                Change::Added(t) => {
                    count < MAX_SNAPSHOT_ENTITIES && fit.try_add(&truth[t as usize])
                }
                Change::Removed(_) => fit.try_remove(),
            };
            match (c.change, c.selected) {
                (Change::Added(_), true) => count += 1,
                (Change::Removed(_), true) => count -= 1,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
impl ClientReplication {
    /// The quantized states in view at the last build, sorted by id.
    pub(super) fn truth(&self) -> &[EntityState] {
        &self.truth
    }

    /// Addresses of the scratch buffers, to check that they are reused.
    pub(super) fn buffer_addresses(&self) -> [usize; 6] {
        [
            self.seen.as_ptr() as usize,
            self.truth.as_ptr() as usize,
            self.base.as_ptr() as usize,
            self.tracked.as_ptr().min(self.next_tracked.as_ptr()) as usize,
            self.candidates.as_ptr() as usize,
            self.order.as_ptr() as usize,
        ]
    }
}
