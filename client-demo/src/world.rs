//! The client's copy of the world: the snapshots it received, kept by tick so that each new
//! delta can be applied to the baseline the shard names, and interpolation between the two
//! snapshots around a render time.

use meridian_protocol::datagram::SnapshotMsg;
use meridian_protocol::quantize::{PositionQuantizer, byte_to_angle};
use meridian_protocol::snapshot::{self, EntityKind, EntityState, SnapshotError};
use meridian_protocol::{EntityId, Tick};
use std::collections::VecDeque;

/// Snapshots kept as possible baselines (the shard keeps as many sent records).
pub const SNAPSHOT_HISTORY: usize = 64;

/// Why a snapshot could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The snapshot is a delta against a tick this client no longer (or never) had.
    #[error("snapshot {tick} is a delta against {baseline}, which this client does not have")]
    MissingBaseline {
        /// The snapshot's tick.
        tick: Tick,
        /// The baseline it names.
        baseline: Tick,
    },
    /// The payload is malformed.
    #[error("snapshot {tick}: {source}")]
    Payload {
        /// The snapshot's tick.
        tick: Tick,
        /// What was wrong.
        source: SnapshotError,
    },
}

/// An entity as the game sees it: world units and radians.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EntitySample {
    /// Its id on the shard.
    pub id: EntityId,
    /// What it is.
    pub kind: EntityKind,
    /// Position, world units.
    pub pos: [f32; 2],
    /// Facing, radians.
    pub heading: f32,
}

/// Snapshots received, newest last, and what was learned from them.
#[derive(Debug)]
pub struct ClientWorld {
    quantizer: PositionQuantizer,
    history: VecDeque<(Tick, Vec<EntityState>)>,
    spare: Vec<Vec<EntityState>>,
    latest: Option<Tick>,
}

impl ClientWorld {
    /// An empty world in a zone quantized by `quantizer` (from the welcome's bounds).
    pub fn new(quantizer: PositionQuantizer) -> Self {
        Self {
            quantizer,
            history: VecDeque::with_capacity(SNAPSHOT_HISTORY),
            spare: Vec::new(),
            latest: None,
        }
    }

    /// The newest snapshot tick applied: what the client acknowledges.
    pub fn latest_tick(&self) -> Option<Tick> {
        self.latest
    }

    fn states_at(&self, tick: Tick) -> Option<&[EntityState]> {
        self.history
            .iter()
            .find(|(t, _)| *t == tick)
            .map(|(_, s)| s.as_slice())
    }

    /// Applies a snapshot. A snapshot older than the newest is kept as a baseline but does not
    /// move the world back; a duplicate is ignored.
    pub fn apply(&mut self, msg: &SnapshotMsg) -> Result<(), ApplyError> {
        if self.states_at(msg.tick).is_some() {
            return Ok(());
        }
        let mut out = self.spare.pop().unwrap_or_default();
        out.clear();
        let result = match msg.baseline {
            None => snapshot::apply_delta(&[], &msg.payload, &mut out),
            Some(b) => match self.states_at(b) {
                Some(base) => snapshot::apply_delta(base, &msg.payload, &mut out),
                None => {
                    self.spare.push(out);
                    return Err(ApplyError::MissingBaseline {
                        tick: msg.tick,
                        baseline: b,
                    });
                }
            },
        };
        if let Err(source) = result {
            self.spare.push(out);
            return Err(ApplyError::Payload {
                tick: msg.tick,
                source,
            });
        }
        if self.history.len() == SNAPSHOT_HISTORY
            && let Some((_, old)) = self.history.pop_front()
        {
            self.spare.push(old);
        }
        // Keep the history sorted by tick (late snapshots are rare; insertion is cheap).
        let at = self.history.partition_point(|(t, _)| *t < msg.tick);
        self.history.insert(at, (msg.tick, out));
        if self.latest.is_none_or(|l| msg.tick > l) {
            self.latest = Some(msg.tick);
        }
        Ok(())
    }

    fn sample(&self, s: &EntityState) -> EntitySample {
        EntitySample {
            id: s.id,
            kind: s.kind,
            pos: self.quantizer.dequantize(s.pos),
            heading: byte_to_angle(s.heading),
        }
    }

    /// The entities of the newest snapshot.
    pub fn latest(&self) -> Vec<EntitySample> {
        self.latest
            .and_then(|t| self.states_at(t))
            .map(|states| states.iter().map(|s| self.sample(s)).collect())
            .unwrap_or_default()
    }

    /// One entity in the newest snapshot.
    pub fn entity(&self, id: EntityId) -> Option<EntitySample> {
        let states = self.states_at(self.latest?)?;
        let i = states.binary_search_by_key(&id, |s| s.id).ok()?;
        Some(self.sample(&states[i]))
    }

    /// Entities at a fractional tick, linearly interpolated between the snapshots just before
    /// and just after it (an entity present in only one of them is shown as it is there).
    /// Before the oldest or after the newest snapshot, the nearest one is shown as it is.
    pub fn interpolated(&self, at: f64) -> Vec<EntitySample> {
        let after = self.history.partition_point(|(t, _)| (t.0 as f64) < at);
        let pick = |i: usize| self.history.get(i).map(|(t, s)| (*t, s.as_slice()));
        let (Some((t0, a)), Some((t1, b))) = (after.checked_sub(1).and_then(pick), pick(after))
        else {
            let nearest = pick(after).or_else(|| after.checked_sub(1).and_then(pick));
            return nearest
                .map(|(_, s)| s.iter().map(|e| self.sample(e)).collect())
                .unwrap_or_default();
        };
        let f = ((at - t0.0 as f64) / (t1.0 - t0.0) as f64).clamp(0.0, 1.0) as f32;
        b.iter()
            .map(|eb| {
                let mut s = self.sample(eb);
                if let Ok(i) = a.binary_search_by_key(&eb.id, |e| e.id) {
                    let pa = self.quantizer.dequantize(a[i].pos);
                    s.pos = [
                        pa[0] + (s.pos[0] - pa[0]) * f,
                        pa[1] + (s.pos[1] - pa[1]) * f,
                    ];
                }
                s
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_protocol::InputSeq;

    fn q() -> PositionQuantizer {
        PositionQuantizer::new([0.0, 0.0], [100.0, 100.0]).expect("bounds")
    }

    fn state(id: u32, x: u16) -> EntityState {
        EntityState {
            id: EntityId(id),
            kind: EntityKind::Npc,
            pos: [x, 1000],
            heading: 0,
        }
    }

    fn snap(
        tick: u64,
        baseline: Option<(u64, &[EntityState])>,
        new: &[EntityState],
    ) -> SnapshotMsg {
        let mut payload = Vec::new();
        snapshot::encode_delta(baseline.map_or(&[][..], |b| b.1), new, &mut payload)
            .expect("encode");
        SnapshotMsg {
            tick: Tick(tick),
            baseline: baseline.map(|b| Tick(b.0)),
            input_ack: InputSeq(0),
            payload,
        }
    }

    #[test]
    fn deltas_apply_to_the_named_baseline_and_late_snapshots_do_not_go_back() {
        let mut w = ClientWorld::new(q());
        let s1 = [state(1, 100), state(2, 200)];
        w.apply(&snap(1, None, &s1)).expect("full");
        let s3 = [state(1, 300), state(3, 50)];
        w.apply(&snap(3, Some((1, &s1)), &s3))
            .expect("delta against 1");
        assert_eq!(w.latest_tick(), Some(Tick(3)));
        let ids: Vec<u32> = w.latest().iter().map(|e| e.id.0).collect();
        assert_eq!(ids, vec![1, 3]);
        // Tick 2 arrives late: kept as a baseline, the world stays at 3.
        let s2 = [state(1, 200), state(2, 200)];
        w.apply(&snap(2, Some((1, &s1)), &s2)).expect("late delta");
        assert_eq!(w.latest_tick(), Some(Tick(3)));
        // A delta against 2 now works.
        w.apply(&snap(4, Some((2, &s2)), &[state(2, 10)]))
            .expect("delta against late 2");
        assert_eq!(w.latest().len(), 1);
    }

    #[test]
    fn a_missing_baseline_is_an_error_not_a_wrong_world() {
        let mut w = ClientWorld::new(q());
        let s1 = [state(1, 100)];
        let err = w
            .apply(&snap(5, Some((4, &s1)), &[state(1, 5)]))
            .expect_err("no baseline 4");
        assert!(
            matches!(
                err,
                ApplyError::MissingBaseline {
                    tick: Tick(5),
                    baseline: Tick(4)
                }
            ),
            "{err}"
        );
        assert_eq!(w.latest_tick(), None);
        let mut bad = snap(6, None, &s1);
        bad.payload.truncate(bad.payload.len() - 1);
        bad.payload.push(0xff);
        bad.payload.extend_from_slice(&[0xff; 8]);
        assert!(matches!(w.apply(&bad), Err(ApplyError::Payload { .. })));
    }

    #[test]
    fn interpolation_is_linear_between_snapshots() {
        let mut w = ClientWorld::new(q());
        let s10 = [state(1, 0)];
        let s12 = [state(1, 2000)];
        w.apply(&snap(10, None, &s10)).expect("full");
        w.apply(&snap(12, Some((10, &s10)), &s12)).expect("delta");
        let mid = w.interpolated(11.0);
        let x_end = q().dequantize([2000, 1000])[0];
        assert!((mid[0].pos[0] - x_end / 2.0).abs() < 1e-3, "{mid:?}");
        assert_eq!(w.interpolated(9.0)[0].pos[0], 0.0);
        assert!((w.interpolated(20.0)[0].pos[0] - x_end).abs() < 1e-3);
    }
}
