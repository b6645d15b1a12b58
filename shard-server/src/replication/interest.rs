//! Area of interest: which entities one client sees this tick, with hysteresis at the edge, and
//! how much each one's update matters.

use crate::sim::view::WorldView;
use meridian_protocol::EntityId;
use meridian_protocol::snapshot::MAX_SNAPSHOT_ENTITIES;

/// Priority gained per tick by the client's own entity: above any other.
pub(super) const OWN_WEIGHT: f32 = 1000.0;
/// Priority gained per tick by a removal not yet written (as an entity at rest midway to the
/// edge: removals are cheap, but a client should not keep ghosts long).
pub(super) const REMOVAL_WEIGHT: f32 = 2.0;
/// Speed (world units per second) from which an entity gains the most for moving.
const FAST_SPEED: f32 = 10.0;

/// An entity in view this tick.
#[derive(Clone, Copy, Debug)]
pub(super) struct Seen {
    /// Its id.
    pub(super) id: EntityId,
    /// Its index in [`WorldView::entities`].
    pub(super) index: u32,
}

/// Interest radii of one client.
#[derive(Clone, Copy, Debug)]
pub(super) struct Interest {
    /// Entering radius, squared.
    enter2: f32,
    /// Leaving radius.
    leave: f32,
}

impl Interest {
    pub(super) fn new(radius: f32, hysteresis: f32) -> Self {
        Self {
            enter2: radius * radius,
            leave: radius * (1.0 + hysteresis.max(0.0)),
        }
    }

    /// Fills `seen` (cleared first) with the entities in view, sorted by id: the own entity at
    /// `own` (always), those within the entering radius, and those within the leaving radius for
    /// which `was_in_view` says they were in view the tick before. At most
    /// [`MAX_SNAPSHOT_ENTITIES`], the nearest kept. Empty when `own` is not in the view.
    pub(super) fn collect(
        &self,
        view: &WorldView,
        own: u32,
        was_in_view: impl Fn(EntityId) -> bool,
        seen: &mut Vec<Seen>,
    ) {
        seen.clear();
        let Some(me) = view.entities.get(own as usize) else {
            return;
        };
        let center = me.pos;
        seen.push(Seen {
            id: me.id,
            index: own,
        });
        view.grid.for_each_within(center, self.leave, |i, p| {
            let Some(e) = view.entities.get(i as usize).filter(|_| i != own) else {
                return;
            };
            let (dx, dy) = (p[0] - center[0], p[1] - center[1]);
            if dx * dx + dy * dy <= self.enter2 || was_in_view(e.id) {
                seen.push(Seen { id: e.id, index: i });
            }
        });
        if seen.len() > MAX_SNAPSHOT_ENTITIES {
            // Rare: keep the nearest (the own entity first).
            let key = |s: &Seen| {
                let p = view.entities[s.index as usize].pos;
                let (dx, dy) = (p[0] - center[0], p[1] - center[1]);
                (s.index != own, dx * dx + dy * dy)
            };
            seen.select_nth_unstable_by(MAX_SNAPSHOT_ENTITIES - 1, |a, b| {
                let (ka, kb) = (key(a), key(b));
                ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
            });
            seen.truncate(MAX_SNAPSHOT_ENTITIES);
        }
        seen.sort_unstable_by_key(|s| s.id);
        // Two entities with one id would break the sorted records; keep one.
        seen.dedup_by_key(|s| s.id);
    }

    /// Priority an entity in view at `index` gains this tick: 1 at rest at the edge, up to 3
    /// more when near, up to 2 more when fast; [`OWN_WEIGHT`] for the own entity.
    pub(super) fn weight(&self, view: &WorldView, own: u32, index: u32) -> f32 {
        if index == own {
            return OWN_WEIGHT;
        }
        let (Some(me), Some(e)) = (
            view.entities.get(own as usize),
            view.entities.get(index as usize),
        ) else {
            return 1.0;
        };
        let (dx, dy) = (e.pos[0] - me.pos[0], e.pos[1] - me.pos[1]);
        let near = 1.0 - ((dx * dx + dy * dy).sqrt() / self.leave).min(1.0);
        let speed = (e.vel[0] * e.vel[0] + e.vel[1] * e.vel[1]).sqrt();
        let fast = (speed / FAST_SPEED).min(1.0);
        // NaN (a corrupt position or velocity) counts as nothing.
        1.0 + 2.0 * near.max(0.0) + 2.0 * fast.max(0.0)
    }
}
