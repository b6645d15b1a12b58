//! The snapshots sent to one client, kept as possible baselines, and its acknowledgements.

use meridian_protocol::Tick;
use meridian_protocol::snapshot::EntityState;

/// What the client knows after applying the snapshot of `tick`.
#[derive(Debug, Default)]
struct SentRecord {
    tick: Tick,
    states: Vec<EntityState>,
}

/// A ring of the last sent records (their buffers reused) and the newest acknowledgement.
#[derive(Debug)]
pub(super) struct SentHistory {
    records: Vec<SentRecord>,
    /// Slot the next record goes to.
    head: usize,
    /// Records held, at most `records.len()`.
    len: usize,
    /// The newest acknowledged tick whose record was held when the acknowledgement came.
    acked: Option<Tick>,
    /// Acknowledgements of this tick or older are ignored: they may name snapshots sent before a
    /// reset, under the same ticks as records kept after it.
    ack_floor: Option<Tick>,
}

impl SentHistory {
    /// Room for `capacity` records (at least one).
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            records: (0..capacity.max(1))
                .map(|_| SentRecord::default())
                .collect(),
            head: 0,
            len: 0,
            acked: None,
            ack_floor: None,
        }
    }

    fn find(&self, tick: Tick) -> Option<&SentRecord> {
        let cap = self.records.len();
        (1..=self.len)
            .map(|back| &self.records[(self.head + cap - back) % cap])
            .find(|r| r.tick == tick)
    }

    /// The record of `tick`, if still held.
    pub(super) fn get(&self, tick: Tick) -> Option<&[EntityState]> {
        self.find(tick).map(|r| r.states.as_slice())
    }

    /// The client applied the snapshot of `tick`. Ticks never sent, no longer held or older
    /// than the newest acknowledgement change nothing.
    pub(super) fn on_ack(&mut self, tick: Tick) {
        if self.ack_floor.is_some_and(|floor| tick <= floor)
            || self.acked.is_some_and(|acked| tick <= acked)
            || self.find(tick).is_none()
        {
            return;
        }
        self.acked = Some(tick);
    }

    /// The newest acknowledged record still held: the baseline of the next snapshot.
    pub(super) fn baseline(&self) -> Option<(Tick, &[EntityState])> {
        let tick = self.acked?;
        self.get(tick).map(|states| (tick, states))
    }

    /// Starts the record of `tick` in the oldest slot (evicting it) and returns its buffer,
    /// empty. Ticks must increase from record to record.
    pub(super) fn push(&mut self, tick: Tick) -> &mut Vec<EntityState> {
        let cap = self.records.len();
        let slot = &mut self.records[self.head];
        self.head = (self.head + 1) % cap;
        self.len = (self.len + 1).min(cap);
        slot.tick = tick;
        slot.states.clear();
        &mut slot.states
    }

    /// Forgets every record and acknowledgement, and ignores from now on acknowledgements of
    /// `floor` and older.
    pub(super) fn reset(&mut self, floor: Tick) {
        self.len = 0;
        self.acked = None;
        self.ack_floor = Some(self.ack_floor.map_or(floor, |f| f.max(floor)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_evicts_and_acks_fall_back() {
        let mut h = SentHistory::new(3);
        for t in 1..=5 {
            h.push(Tick(t));
        }
        assert!(h.get(Tick(5)).is_some() && h.get(Tick(3)).is_some());
        assert!(h.get(Tick(2)).is_none(), "evicted");
        h.on_ack(Tick(2));
        assert!(h.baseline().is_none(), "an evicted tick is no baseline");
        h.on_ack(Tick(9));
        assert!(h.baseline().is_none(), "a tick never sent is no baseline");
        h.on_ack(Tick(4));
        h.on_ack(Tick(3));
        assert_eq!(h.baseline().map(|b| b.0), Some(Tick(4)), "newest ack kept");
        h.push(Tick(6));
        h.push(Tick(7));
        assert!(h.baseline().is_none(), "the acked record was evicted");
        h.reset(Tick(7));
        h.push(Tick(7));
        h.on_ack(Tick(7));
        assert!(
            h.baseline().is_none(),
            "acks at or below the floor are ignored"
        );
        h.push(Tick(8));
        h.on_ack(Tick(8));
        assert_eq!(h.baseline().map(|b| b.0), Some(Tick(8)));
    }
}
