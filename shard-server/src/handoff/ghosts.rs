//! Border ghosts: the entities of this zone near a border, published to the neighbour's shard
//! once a tick as one [`GhostBatchMsg`] per neighbour (through the store's pub/sub, off the
//! tick thread), and the neighbours' batches turned into the simulation's
//! [`GhostUpdate`](crate::sim::GhostUpdate)s. The neighbour shows them read-only to its clients,
//! so players see across borders; a ghost not refreshed within a few ticks disappears there.

use crate::sim::GhostUpdate;
use crate::sim::view::WorldView;
use meridian_protocol::codec::{self, BoundedVec, CodecError};
use meridian_protocol::quantize::{angle_to_byte, byte_to_angle};
use meridian_protocol::snapshot::EntityKind;
use meridian_protocol::{EntityId, Tick, ZoneId};
use serde::{Deserialize, Serialize};

/// Most entities in one batch; entities past it are left out of that tick's batch.
pub const MAX_GHOSTS_PER_BATCH: usize = 4096;
/// Largest encoded batch accepted, bytes.
pub const MAX_BATCH_BYTES: usize = 16 + MAX_GHOSTS_PER_BATCH * 16 + 64;

/// One entity near the border.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GhostEntityMsg {
    /// Its id in the publishing shard.
    pub id: EntityId,
    /// What it is.
    pub kind: EntityKind,
    /// Position, world units.
    pub pos: [f32; 2],
    /// Heading, one byte a turn.
    pub heading: u8,
}

/// One tick's entities near the border with one neighbour.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GhostBatchMsg {
    /// The publishing zone.
    pub zone: ZoneId,
    /// Its tick.
    pub tick: Tick,
    /// The entities.
    pub entities: BoundedVec<GhostEntityMsg, MAX_GHOSTS_PER_BATCH>,
}

/// Where the entities published to each neighbour are: this zone and, per neighbour, its
/// rectangle grown by the border band (the part of this zone the neighbour's view reaches).
#[derive(Clone, Debug)]
pub struct GhostBands {
    zone_min: [f32; 2],
    zone_max: [f32; 2],
    /// Per neighbour number: the neighbour's rectangle grown by the band.
    reach: Vec<([f32; 2], [f32; 2])>,
}

impl GhostBands {
    /// The bands of a zone with these neighbours.
    pub fn new(zone: ([f32; 2], [f32; 2]), neighbours: &[([f32; 2], [f32; 2])], band: f32) -> Self {
        Self {
            zone_min: zone.0,
            zone_max: zone.1,
            reach: neighbours
                .iter()
                .map(|&(min, max)| {
                    (
                        [min[0] - band, min[1] - band],
                        [max[0] + band, max[1] + band],
                    )
                })
                .collect(),
        }
    }

    /// How many neighbours.
    pub fn len(&self) -> usize {
        self.reach.len()
    }

    /// No neighbours.
    pub fn is_empty(&self) -> bool {
        self.reach.is_empty()
    }

    /// Fills `out[i]` (cleared first) with the entities of this zone within neighbour `i`'s
    /// reach. Entities outside the zone (players past the border, ghosts) are not published.
    pub fn collect(&self, view: &WorldView, out: &mut [Vec<GhostEntityMsg>]) {
        for batch in out.iter_mut() {
            batch.clear();
        }
        for e in &view.entities {
            let p = e.pos;
            if !inside(p, self.zone_min, self.zone_max) {
                continue;
            }
            for (i, (min, max)) in self.reach.iter().enumerate() {
                if inside(p, *min, *max)
                    && let Some(batch) = out.get_mut(i)
                    && batch.len() < MAX_GHOSTS_PER_BATCH
                {
                    batch.push(GhostEntityMsg {
                        id: e.id,
                        kind: e.kind,
                        pos: p,
                        heading: angle_to_byte(e.heading),
                    });
                }
            }
        }
    }
}

fn inside(p: [f32; 2], min: [f32; 2], max: [f32; 2]) -> bool {
    p[0] >= min[0] && p[0] <= max[0] && p[1] >= min[1] && p[1] <= max[1]
}

/// Encodes one batch.
pub fn encode_batch(
    zone: &ZoneId,
    tick: Tick,
    entities: &[GhostEntityMsg],
) -> Result<Vec<u8>, CodecError> {
    let mut list = BoundedVec::new();
    for e in entities.iter().take(MAX_GHOSTS_PER_BATCH) {
        // `take` keeps it within the bound.
        let _ = list.try_push(*e);
    }
    codec::encode(&GhostBatchMsg {
        zone: zone.clone(),
        tick,
        entities: list,
    })
}

/// Decodes a batch from a neighbour and appends its entities to `out` as updates from
/// neighbour number `source`, looked up by the batch's zone in `neighbours`. A batch from a zone
/// that is not a neighbour is refused.
pub fn decode_batch(
    bytes: &[u8],
    neighbours: &[ZoneId],
    out: &mut Vec<GhostUpdate>,
) -> Result<usize, GhostBatchError> {
    let batch: GhostBatchMsg = codec::decode(bytes, MAX_BATCH_BYTES)
        .map_err(|e| GhostBatchError::Malformed(e.to_string()))?;
    let source = neighbours
        .iter()
        .position(|z| *z == batch.zone)
        .ok_or_else(|| GhostBatchError::NotANeighbour(batch.zone.clone()))?;
    let source =
        u16::try_from(source).map_err(|_| GhostBatchError::NotANeighbour(batch.zone.clone()))?;
    for e in batch.entities.iter() {
        if !(e.pos[0].is_finite() && e.pos[1].is_finite()) {
            continue;
        }
        out.push(GhostUpdate {
            source,
            remote: e.id,
            kind: e.kind,
            pos: e.pos,
            heading: byte_to_angle(e.heading),
        });
    }
    Ok(batch.entities.len())
}

/// Why a ghost batch was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GhostBatchError {
    /// It did not decode.
    #[error("malformed ghost batch: {0}")]
    Malformed(String),
    /// It came from a zone that does not border this one.
    #[error("ghost batch from zone `{0}`, which is not a neighbour")]
    NotANeighbour(ZoneId),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::view::EntityView;

    fn zone(s: &str) -> ZoneId {
        ZoneId::new(s).expect("valid zone")
    }

    #[test]
    fn batches_round_trip_and_refuse_strangers_and_garbage() {
        let entities = [GhostEntityMsg {
            id: EntityId(7),
            kind: EntityKind::Player,
            pos: [999.0, 10.0],
            heading: 64,
        }];
        let bytes = encode_batch(&zone("west"), Tick(5), &entities).expect("encodes");
        let mut out = Vec::new();
        let n = decode_batch(&bytes, &[zone("east"), zone("west")], &mut out).expect("decodes");
        assert_eq!(n, 1);
        assert_eq!(out[0].source, 1);
        assert_eq!(out[0].remote, EntityId(7));
        assert_eq!(out[0].pos, [999.0, 10.0]);
        assert!(matches!(
            decode_batch(&bytes, &[zone("east")], &mut out),
            Err(GhostBatchError::NotANeighbour(_))
        ));
        assert!(matches!(
            decode_batch(&[0xff, 0xff, 0xff], &[zone("west")], &mut out),
            Err(GhostBatchError::Malformed(_))
        ));
    }

    #[test]
    fn only_entities_of_the_zone_within_a_neighbours_reach_are_collected() {
        // Zone 0..1000 x 0..1000; neighbour east 1000..2000; band 40.
        let bands = GhostBands::new(
            ([0.0, 0.0], [1000.0, 1000.0]),
            &[([1000.0, 0.0], [2000.0, 1000.0])],
            40.0,
        );
        let mut view = WorldView::new([0.0, 0.0], [1040.0, 1000.0], 25.0);
        for (id, x) in [(1, 500.0), (2, 970.0), (3, 1001.0), (4, 959.0)] {
            view.entities.push(EntityView {
                id: EntityId(id),
                kind: EntityKind::Npc,
                pos: [x, 500.0],
                vel: [0.0, 0.0],
                heading: 0.0,
            });
        }
        let mut out = vec![Vec::new()];
        bands.collect(&view, &mut out);
        let ids: Vec<u32> = out[0].iter().map(|e| e.id.0).collect();
        assert_eq!(ids, vec![2]);
    }
}
