//! Snapshot payload encoding: entity states, quantized, delta-encoded against a baseline the
//! client acknowledged. Shared by the shard (writes) and the client library (reads).
//!
//! - [`EntityState`]: one entity as the client knows it (id, kind, quantized position, heading).
//! - [`encode_delta`]: writes the difference between a baseline and a new state (both sorted by
//!   id; an empty baseline gives a full snapshot).
//! - [`apply_delta`]: the reader; rebuilds the new state from the baseline and the payload.
//!   Arbitrary bytes give a [`SnapshotError`], never a panic, and never more than
//!   [`MAX_SNAPSHOT_ENTITIES`] entities.
//! - [`DeltaPlanner`] and [`DeltaBudget`]: choose what fits in a byte budget before encoding,
//!   with an upper bound of the encoded size that the encoder never exceeds.
//!
//! # Payload format
//!
//! A bit stream, least significant bit first, padded with zero bits to a whole byte. `eg(v)` is
//! an order-0 exponential-Golomb code (`2⌊log₂(v+1)⌋+1` bits: 0 is one bit, 1–2 three bits).
//!
//! ```text
//! header   W-1: 4 bits (W = position delta width, 1..=16) · eg(ops) · eg(adds)
//! ops      over the baseline in id order, each:
//!            eg(skip)    baseline entries kept unchanged before this one
//!            code        0 → position · 10 → position+heading · 110 → heading
//!                        1110 → removed · 1111 + 3 bits (position, heading, kind)
//!            position    dx, dy: W bits each, two's complement, |d| < 2^(W-1);
//!                        dx = -2^(W-1) escapes to absolute x, y (16 bits each)
//!            heading     0 + 4-bit signed wrapping delta (-8..=7) | 1 + 8 bits absolute
//!            kind        3 bits
//! adds     in ascending id order, each: eg(id - previous added id - 1; the first: eg(id)),
//!          kind 3 bits, x 16 bits, y 16 bits, heading 8 bits
//! ```
//!
//! Baseline entries not named by an op are kept as they are. The encoder picks the width `W`
//! that makes the position deltas of the whole snapshot smallest.

use crate::ids::EntityId;
use serde::{Deserialize, Serialize};

/// What an entity is, for the client to draw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u8)]
pub enum EntityKind {
    /// A connected player.
    Player = 0,
    /// A wandering non-player character.
    Npc = 1,
    /// A pickup that awards score.
    Pickup = 2,
}

/// Most entities one snapshot state may hold, on both sides: the shard never replicates more to
/// one client, and [`apply_delta`] refuses a payload that would produce more.
pub const MAX_SNAPSHOT_ENTITIES: usize = 4096;

/// One entity as a client knows it: the replicated, quantized part of its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EntityState {
    /// Its id on the shard.
    pub id: EntityId,
    /// What it is.
    pub kind: EntityKind,
    /// Position, quantized within the zone's bounds ([`crate::quantize::PositionQuantizer`]).
    pub pos: [u16; 2],
    /// Facing ([`crate::quantize::angle_to_byte`]).
    pub heading: u8,
}

/// Why a payload could not be applied, or states could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The payload ends in the middle of a field.
    #[error("snapshot payload truncated: {needed} more bits needed at bit {at} of {len}")]
    Truncated {
        /// Bit offset of the field.
        at: usize,
        /// Bits the field needs.
        needed: usize,
        /// Bits in the payload.
        len: usize,
    },
    /// A variable-length number has more leading zero bits than any valid one.
    #[error("invalid variable-length number at bit {at}")]
    BadNumber {
        /// Bit offset of the number.
        at: usize,
    },
    /// The state would hold more entities than [`MAX_SNAPSHOT_ENTITIES`].
    #[error("snapshot holds {count} entities; at most {max} allowed")]
    TooManyEntities {
        /// How many there would be.
        count: u64,
        /// The limit.
        max: usize,
    },
    /// The payload changes or removes more entities than the baseline holds.
    #[error("snapshot has {ops} changes or removals for a baseline of {baseline_len} entities")]
    TooManyOps {
        /// Changes and removals announced.
        ops: u64,
        /// Entities in the baseline.
        baseline_len: usize,
    },
    /// A change or removal names a baseline entry past the end of the baseline.
    #[error("snapshot names baseline entry {index}; the baseline has {baseline_len} entities")]
    SkipPastBaseline {
        /// The entry named.
        index: u64,
        /// Entities in the baseline.
        baseline_len: usize,
    },
    /// A change of an entity marks no field as changed.
    #[error("change of entity {id:?} marks no field")]
    EmptyChange {
        /// The entity.
        id: EntityId,
    },
    /// An entity kind this version does not know.
    #[error("unknown entity kind {value}")]
    UnknownKind {
        /// The kind's number.
        value: u8,
    },
    /// A position delta moves an entity outside the quantized range.
    #[error("position delta moves entity {id:?} to {value} on axis {axis}, outside 0..=65535")]
    PositionOutOfRange {
        /// The entity.
        id: EntityId,
        /// 0 for x, 1 for y.
        axis: u8,
        /// The coordinate it would have.
        value: i32,
    },
    /// An added entity's id does not fit in 32 bits.
    #[error("added entity id {value} does not fit in 32 bits")]
    IdOverflow {
        /// The id the gaps add up to.
        value: u64,
    },
    /// Two entities share an id.
    #[error("entity {id:?} appears twice")]
    DuplicateEntity {
        /// The id.
        id: EntityId,
    },
    /// Whole bytes are left after the last entity.
    #[error("{extra} bytes left after the snapshot")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// The padding bits of the last byte are not zero.
    #[error("nonzero padding after the snapshot")]
    NonZeroPadding,
    /// A list of states is not sorted by strictly ascending id.
    #[error("{list} states are not sorted by strictly ascending id at index {index}")]
    NotSorted {
        /// Which list: `baseline` or `new`.
        list: &'static str,
        /// Index of the first entry not greater than the one before it.
        index: usize,
    },
}

// ---------------------------------------------------------------------------------------------
// Format constants

/// Bits of the position width field.
const WIDTH_BITS: u32 = 4;
/// Widest position delta field; a delta needing more is sent as an absolute position.
const MAX_WIDTH: u32 = 16;
/// Bits of a kind field.
const KIND_BITS: u32 = 3;
/// Bits of an absolute position.
const POS_ABS_BITS: u32 = 32;
/// Bits of an addition after its id gap: kind, x, y, heading.
const ADD_FIXED_BITS: u32 = KIND_BITS + POS_ABS_BITS + 8;
/// Bits of a removal after its skip.
const REMOVE_BITS: u32 = 4;
/// Bits of a heading change: flag and small delta, or flag and absolute byte.
const HEADING_SMALL_BITS: u32 = 1 + 4;
const HEADING_ABS_BITS: u32 = 1 + 8;
/// Most leading zeros of a valid exponential-Golomb number (values up to 2^32 - 1 need 32).
const MAX_EG_ZEROS: u32 = 32;

fn kind_bits(kind: EntityKind) -> u64 {
    u64::from(kind as u8)
}

fn kind_from_bits(value: u64) -> Result<EntityKind, SnapshotError> {
    match value {
        0 => Ok(EntityKind::Player),
        1 => Ok(EntityKind::Npc),
        2 => Ok(EntityKind::Pickup),
        _ => Err(SnapshotError::UnknownKind {
            value: u8::try_from(value).unwrap_or(u8::MAX),
        }),
    }
}

/// Length in bits of `eg(v)`.
fn eg_len(v: u64) -> u32 {
    let x = v.saturating_add(1);
    2 * (63 - x.leading_zeros()) + 1
}

/// Smallest delta width holding both axes of a move (17 when only an absolute position will).
fn needed_width(base: [u16; 2], new: [u16; 2]) -> u32 {
    let d = |a: usize| (i32::from(new[a]) - i32::from(base[a])).unsigned_abs();
    let m = d(0).max(d(1));
    (32 - m.leading_zeros() + 1).min(MAX_WIDTH + 1)
}

fn position_bits(width: u32, needed: u32) -> u32 {
    if needed <= width {
        2 * width
    } else {
        width + POS_ABS_BITS
    }
}

fn heading_small(base: u8, new: u8) -> Option<i8> {
    let d = new.wrapping_sub(base) as i8;
    (-8..=7).contains(&d).then_some(d)
}

/// Bits of a change after its skip: code and fields. Zero when nothing changed.
fn change_bits(width: u32, base: &EntityState, new: &EntityState) -> u32 {
    let p = base.pos != new.pos;
    let h = base.heading != new.heading;
    let k = base.kind != new.kind;
    let code = match (p, h, k) {
        (false, false, false) => return 0,
        (_, _, true) => 4 + 3,
        (true, false, false) => 1,
        (true, true, false) => 2,
        (false, true, false) => 3,
    };
    let pos = if p {
        position_bits(width, needed_width(base.pos, new.pos))
    } else {
        0
    };
    let heading = match (h, heading_small(base.heading, new.heading)) {
        (false, _) => 0,
        (true, Some(_)) => HEADING_SMALL_BITS,
        (true, None) => HEADING_ABS_BITS,
    };
    code + pos + heading + if k { KIND_BITS } else { 0 }
}

/// Counts of moves by needed width, to pick the width that makes them smallest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct WidthHistogram([u32; MAX_WIDTH as usize + 2]);

impl WidthHistogram {
    fn add(&mut self, base: [u16; 2], new: [u16; 2]) {
        if base != new {
            self.0[needed_width(base, new) as usize] += 1;
        }
    }

    fn cost(&self, width: u32) -> u64 {
        (1..=MAX_WIDTH + 1)
            .map(|n| u64::from(self.0[n as usize]) * u64::from(position_bits(width, n)))
            .sum()
    }

    /// The width with the fewest position bits; the smallest among equals.
    fn best(&self) -> u32 {
        (1..=MAX_WIDTH)
            .min_by_key(|&w| self.cost(w))
            .unwrap_or(MAX_WIDTH)
    }
}

// ---------------------------------------------------------------------------------------------
// Diff of two sorted state lists

#[derive(Clone, Copy, Debug)]
enum Diff<'a> {
    Same,
    Changed(&'a EntityState, &'a EntityState),
    Removed,
    Added(&'a EntityState),
}

/// Walks two lists sorted by id, pairing entries by id.
struct DiffIter<'a> {
    base: &'a [EntityState],
    new: &'a [EntityState],
}

impl<'a> Iterator for DiffIter<'a> {
    type Item = Diff<'a>;

    fn next(&mut self) -> Option<Diff<'a>> {
        match (self.base.split_first(), self.new.split_first()) {
            (None, None) => None,
            (Some((_, rest)), None) => {
                self.base = rest;
                Some(Diff::Removed)
            }
            (None, Some((n, rest))) => {
                self.new = rest;
                Some(Diff::Added(n))
            }
            (Some((b, brest)), Some((n, nrest))) => Some(match b.id.cmp(&n.id) {
                std::cmp::Ordering::Less => {
                    self.base = brest;
                    Diff::Removed
                }
                std::cmp::Ordering::Greater => {
                    self.new = nrest;
                    Diff::Added(n)
                }
                std::cmp::Ordering::Equal => {
                    self.base = brest;
                    self.new = nrest;
                    if b == n {
                        Diff::Same
                    } else {
                        Diff::Changed(b, n)
                    }
                }
            }),
        }
    }
}

fn diff<'a>(base: &'a [EntityState], new: &'a [EntityState]) -> DiffIter<'a> {
    DiffIter { base, new }
}

fn check_list(list: &'static str, states: &[EntityState]) -> Result<(), SnapshotError> {
    if let Some(index) = states.windows(2).position(|w| w[0].id >= w[1].id) {
        return Err(SnapshotError::NotSorted {
            list,
            index: index + 1,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Bits

struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    len: u32,
}

impl<'a> BitWriter<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        Self {
            out,
            acc: 0,
            len: 0,
        }
    }

    /// Appends the low `bits` bits of `value` (at most 56).
    #[inline]
    fn put(&mut self, value: u64, bits: u32) {
        debug_assert!(bits <= 56);
        if bits == 0 {
            return;
        }
        self.acc |= (value & ((1u64 << bits) - 1)) << self.len;
        self.len += bits;
        while self.len >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.len -= 8;
        }
    }

    #[inline]
    fn put_eg(&mut self, v: u64) {
        let x = v.saturating_add(1);
        let zeros = 63 - x.leading_zeros();
        self.put(0, zeros);
        self.put(1, 1);
        // The bits of x below its leading one, least significant first.
        self.put(x, zeros);
    }

    fn finish(self) {
        if self.len > 0 {
            self.out.push(self.acc as u8);
        }
    }
}

struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn total(&self) -> usize {
        self.bytes.len() * 8
    }

    fn remaining(&self) -> usize {
        self.total() - self.pos
    }

    /// Reads `bits` bits (at most 56).
    fn get(&mut self, bits: u32) -> Result<u64, SnapshotError> {
        let n = bits as usize;
        if n > self.remaining() {
            return Err(SnapshotError::Truncated {
                at: self.pos,
                needed: n,
                len: self.total(),
            });
        }
        let mut value = 0u64;
        let mut got = 0u32;
        while got < bits {
            let byte = self.bytes.get(self.pos / 8).copied().unwrap_or(0);
            let offset = (self.pos % 8) as u32;
            let take = (8 - offset).min(bits - got);
            let chunk = u64::from(byte >> offset) & ((1u64 << take) - 1);
            value |= chunk << got;
            got += take;
            self.pos += take as usize;
        }
        Ok(value)
    }

    fn get_bit(&mut self) -> Result<bool, SnapshotError> {
        Ok(self.get(1)? == 1)
    }

    fn get_eg(&mut self) -> Result<u64, SnapshotError> {
        let at = self.pos;
        let mut zeros = 0;
        while !self.get_bit()? {
            zeros += 1;
            if zeros > MAX_EG_ZEROS {
                return Err(SnapshotError::BadNumber { at });
            }
        }
        let low = self.get(zeros)?;
        Ok(((1u64 << zeros) | low) - 1)
    }

    fn get_signed(&mut self, bits: u32) -> Result<i32, SnapshotError> {
        Ok(sign_extend(self.get(bits)?, bits))
    }
}

fn sign_extend(raw: u64, bits: u32) -> i32 {
    let shift = 64 - bits;
    ((raw << shift) as i64 >> shift) as i32
}

// ---------------------------------------------------------------------------------------------
// Writer

/// Appends to `out` the payload that turns `baseline` into `new`. Both must be sorted by
/// strictly ascending id and hold at most [`MAX_SNAPSHOT_ENTITIES`]; an empty baseline gives a
/// full snapshot. Entities equal in both are not written. `out` keeps its capacity, so a caller
/// that reuses one buffer does not allocate per snapshot.
pub fn encode_delta(
    baseline: &[EntityState],
    new: &[EntityState],
    out: &mut Vec<u8>,
) -> Result<(), SnapshotError> {
    for (list, states) in [("baseline", baseline), ("new", new)] {
        check_list(list, states)?;
        if states.len() > MAX_SNAPSHOT_ENTITIES {
            return Err(SnapshotError::TooManyEntities {
                count: states.len() as u64,
                max: MAX_SNAPSHOT_ENTITIES,
            });
        }
    }
    let (mut ops, mut adds) = (0u64, 0u64);
    let mut widths = WidthHistogram::default();
    for d in diff(baseline, new) {
        match d {
            Diff::Same => {}
            Diff::Changed(b, n) => {
                ops += 1;
                widths.add(b.pos, n.pos);
            }
            Diff::Removed => ops += 1,
            Diff::Added(_) => adds += 1,
        }
    }
    let width = widths.best();

    let mut w = BitWriter::new(out);
    w.put(u64::from(width - 1), WIDTH_BITS);
    w.put_eg(ops);
    w.put_eg(adds);

    let mut skip = 0u64;
    for d in diff(baseline, new) {
        match d {
            Diff::Same => skip += 1,
            Diff::Added(_) => {}
            Diff::Removed => {
                w.put_eg(skip);
                skip = 0;
                w.put(0b0111, 4);
            }
            Diff::Changed(b, n) => {
                w.put_eg(skip);
                skip = 0;
                put_change(&mut w, width, b, n);
            }
        }
    }

    let mut next_id = 0u64;
    for d in diff(baseline, new) {
        if let Diff::Added(n) = d {
            let id = u64::from(n.id.0);
            w.put_eg(id - next_id);
            next_id = id + 1;
            w.put(kind_bits(n.kind), KIND_BITS);
            w.put(u64::from(n.pos[0]), 16);
            w.put(u64::from(n.pos[1]), 16);
            w.put(u64::from(n.heading), 8);
        }
    }
    w.finish();
    Ok(())
}

fn put_change(w: &mut BitWriter<'_>, width: u32, b: &EntityState, n: &EntityState) {
    let p = b.pos != n.pos;
    let h = b.heading != n.heading;
    let k = b.kind != n.kind;
    match (p, h, k) {
        (_, _, true) => {
            w.put(0b1111, 4);
            w.put(u64::from(p) | u64::from(h) << 1 | 1 << 2, 3);
        }
        (true, false, false) => w.put(0b0, 1),
        (true, true, false) => w.put(0b01, 2),
        (false, true, false) => w.put(0b011, 3),
        // Not reached: equal states are not changes.
        (false, false, false) => w.put(0b0, 1),
    }
    if p {
        let dx = i32::from(n.pos[0]) - i32::from(b.pos[0]);
        let dy = i32::from(n.pos[1]) - i32::from(b.pos[1]);
        if needed_width(b.pos, n.pos) <= width {
            w.put(dx as u64, width);
            w.put(dy as u64, width);
        } else {
            w.put(1u64 << (width - 1), width);
            w.put(u64::from(n.pos[0]), 16);
            w.put(u64::from(n.pos[1]), 16);
        }
    }
    if h {
        match heading_small(b.heading, n.heading) {
            Some(d) => {
                w.put(0, 1);
                w.put(d as u64, 4);
            }
            None => {
                w.put(1, 1);
                w.put(u64::from(n.heading), 8);
            }
        }
    }
    if k {
        w.put(kind_bits(n.kind), KIND_BITS);
    }
}

// ---------------------------------------------------------------------------------------------
// Reader

/// Rebuilds into `out` (cleared first) the state that `payload` encodes against `baseline`,
/// sorted by id. `baseline` must be the state of the snapshot the payload names as its
/// baseline (empty for a full snapshot), sorted by id.
///
/// Any payload gives either the state or an error, never a panic; `out` never grows past
/// [`MAX_SNAPSHOT_ENTITIES`] plus the baseline's length. After an error `out` holds an
/// unspecified part of the state.
pub fn apply_delta(
    baseline: &[EntityState],
    payload: &[u8],
    out: &mut Vec<EntityState>,
) -> Result<(), SnapshotError> {
    out.clear();
    check_list("baseline", baseline)?;
    let mut r = BitReader {
        bytes: payload,
        pos: 0,
    };
    let width = r.get(WIDTH_BITS)? as u32 + 1;
    let ops = r.get_eg()?;
    if ops > baseline.len() as u64 {
        return Err(SnapshotError::TooManyOps {
            ops,
            baseline_len: baseline.len(),
        });
    }
    let adds = r.get_eg()?;
    if adds > MAX_SNAPSHOT_ENTITIES as u64 {
        return Err(SnapshotError::TooManyEntities {
            count: adds,
            max: MAX_SNAPSHOT_ENTITIES,
        });
    }
    // Every op takes at least two bits and every addition more than ADD_FIXED_BITS: refuse
    // counts the payload cannot hold before reserving room for them.
    let least = ops * 2 + adds * u64::from(ADD_FIXED_BITS + 1);
    if least > r.remaining() as u64 {
        return Err(SnapshotError::Truncated {
            at: r.pos,
            needed: usize::try_from(least).unwrap_or(usize::MAX),
            len: r.total(),
        });
    }
    out.reserve((baseline.len() + adds as usize).min(MAX_SNAPSHOT_ENTITIES));

    let mut cursor = 0usize;
    for _ in 0..ops {
        let skip = r.get_eg()?;
        let index = cursor as u64 + skip;
        if index >= baseline.len() as u64 {
            return Err(SnapshotError::SkipPastBaseline {
                index,
                baseline_len: baseline.len(),
            });
        }
        let index = index as usize;
        let base = &baseline[index];
        out.extend_from_slice(&baseline[cursor..index]);
        cursor = index + 1;
        if let Some(changed) = read_op(&mut r, width, base)? {
            out.push(changed);
        }
    }
    out.extend_from_slice(&baseline[cursor..]);
    let count = out.len() as u64 + adds;
    if count > MAX_SNAPSHOT_ENTITIES as u64 {
        return Err(SnapshotError::TooManyEntities {
            count,
            max: MAX_SNAPSHOT_ENTITIES,
        });
    }

    let mut next_id = 0u64;
    for _ in 0..adds {
        let value = next_id + r.get_eg()?;
        let id = u32::try_from(value).map_err(|_| SnapshotError::IdOverflow { value })?;
        next_id = value + 1;
        let kind = kind_from_bits(r.get(KIND_BITS)?)?;
        let pos = [r.get(16)? as u16, r.get(16)? as u16];
        let heading = r.get(8)? as u8;
        out.push(EntityState {
            id: EntityId(id),
            kind,
            pos,
            heading,
        });
    }

    let rest = r.remaining();
    if rest >= 8 {
        return Err(SnapshotError::TrailingBytes { extra: rest / 8 });
    }
    if r.get(rest as u32)? != 0 {
        return Err(SnapshotError::NonZeroPadding);
    }
    if adds > 0 {
        // Additions were appended after the kept entities; both runs are sorted.
        out.sort_unstable_by_key(|e| e.id);
        if let Some(w) = out.windows(2).find(|w| w[0].id == w[1].id) {
            return Err(SnapshotError::DuplicateEntity { id: w[0].id });
        }
    }
    Ok(())
}

/// Reads one op's code and fields; `None` for a removal.
fn read_op(
    r: &mut BitReader<'_>,
    width: u32,
    base: &EntityState,
) -> Result<Option<EntityState>, SnapshotError> {
    let (p, h, k) = if !r.get_bit()? {
        (true, false, false)
    } else if !r.get_bit()? {
        (true, true, false)
    } else if !r.get_bit()? {
        (false, true, false)
    } else if !r.get_bit()? {
        return Ok(None);
    } else {
        let mask = r.get(3)?;
        (mask & 1 != 0, mask & 2 != 0, mask & 4 != 0)
    };
    if !(p || h || k) {
        return Err(SnapshotError::EmptyChange { id: base.id });
    }
    let mut new = *base;
    if p {
        let raw = r.get(width)?;
        if raw == 1u64 << (width - 1) {
            new.pos = [r.get(16)? as u16, r.get(16)? as u16];
        } else {
            let d = [sign_extend(raw, width), r.get_signed(width)?];
            for (axis, (pos, d)) in new.pos.iter_mut().zip(d).enumerate() {
                let value = i32::from(*pos) + d;
                *pos = u16::try_from(value).map_err(|_| SnapshotError::PositionOutOfRange {
                    id: base.id,
                    axis: axis as u8,
                    value,
                })?;
            }
        }
    }
    if h {
        new.heading = if r.get_bit()? {
            r.get(8)? as u8
        } else {
            base.heading.wrapping_add(r.get_signed(4)? as u8)
        };
    }
    if k {
        new.kind = kind_from_bits(r.get(KIND_BITS)?)?;
    }
    Ok(Some(new))
}

// ---------------------------------------------------------------------------------------------
// Budget

/// First step of filling a byte budget: is told every change the snapshot might write, and
/// picks the position delta width for them ([`DeltaPlanner::budget`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeltaPlanner {
    widths: WidthHistogram,
}

impl DeltaPlanner {
    /// A planner that knows no change yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a change that might be written (the entity is in both states).
    pub fn change(&mut self, base: &EntityState, new: &EntityState) {
        self.widths.add(base.pos, new.pos);
    }

    /// A budget of `budget_bytes` for a delta against a baseline of `baseline_len` entities.
    pub fn budget(&self, budget_bytes: usize, baseline_len: usize) -> DeltaBudget {
        DeltaBudget {
            width: self.widths.best(),
            budget_bits: (budget_bytes as u64).saturating_mul(8),
            baseline_len,
            ops: 0,
            adds: 0,
            add_ids: (0, 0),
            entry_bits: 0,
        }
    }
}

/// One entry of a delta, for [`DeltaBudget::try_all`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeltaEntry<'a> {
    /// An entity in both states: baseline, new.
    Change(&'a EntityState, &'a EntityState),
    /// An entity in the new state only.
    Add(&'a EntityState),
    /// A baseline entity not in the new state.
    Remove,
}

/// Second step of filling a byte budget: accepts changes, additions and removals while an upper
/// bound of the encoded size stays within the budget.
///
/// The bound holds for [`encode_delta`] of the baseline and the new state made of the baseline
/// with exactly the accepted entries applied, provided every accepted change was declared to
/// the [`DeltaPlanner`] and every removal names a distinct baseline entity. It is tight: it
/// counts every field exactly and bounds only the lengths of the skips and id gaps, by their
/// worst case given how many there are.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeltaBudget {
    width: u32,
    budget_bits: u64,
    baseline_len: usize,
    ops: u64,
    adds: u64,
    /// Smallest and largest accepted addition ids (meaningless while `adds` is 0).
    add_ids: (u32, u32),
    entry_bits: u64,
}

/// Upper bound of `Σ eg_len(g)` over `m` numbers with `Σ (g + 1) ≤ total`.
///
/// `eg_len(g) ≤ 2 log₂(g + 1) + 1`, and by concavity of the logarithm the sum is largest when
/// the numbers are equal: `m + 2m log₂(total / m)`.
fn spread_bits(m: u64, total: u64) -> u64 {
    if m == 0 {
        return 0;
    }
    let mf = m as f64;
    let bits = mf + 2.0 * mf * (total as f64 / mf).max(1.0).log2();
    // The margin covers the rounding of the float arithmetic.
    (bits + 1e-6).ceil() as u64
}

impl DeltaBudget {
    /// Upper bound of the payload, bits, if the counts and fields were these.
    fn bound_bits(&self, ops: u64, adds: u64, add_ids: (u32, u32), entry_bits: u64) -> u64 {
        let header = u64::from(WIDTH_BITS + eg_len(ops) + eg_len(adds));
        // Skips: `Σ (skip + 1)` is at most the baseline's length. Id gaps: the first is the
        // smallest id itself, the others add up (each plus one) to the largest minus it.
        let gaps = if adds == 0 {
            0
        } else {
            u64::from(eg_len(u64::from(add_ids.0)))
                + spread_bits(adds - 1, u64::from(add_ids.1 - add_ids.0))
        };
        header + entry_bits + spread_bits(ops, self.baseline_len as u64) + gaps
    }

    fn try_accept(&mut self, ops: u64, adds: u64, add_ids: (u32, u32), bits: u32) -> bool {
        let entry_bits = self.entry_bits + u64::from(bits);
        let total = self.bound_bits(ops, adds, add_ids, entry_bits);
        if total.div_ceil(8) * 8 > self.budget_bits {
            return false;
        }
        (self.ops, self.adds, self.add_ids, self.entry_bits) = (ops, adds, add_ids, entry_bits);
        true
    }

    /// Accepts every entry if together they fit, else none (and the budget is unchanged). One
    /// bound for the lot: cheaper than an entry at a time when everything fits.
    pub fn try_all<'a>(&mut self, entries: impl IntoIterator<Item = DeltaEntry<'a>>) -> bool {
        let (mut ops, mut adds, mut ids, mut bits) =
            (self.ops, self.adds, self.add_ids, self.entry_bits);
        for entry in entries {
            match entry {
                DeltaEntry::Change(base, new) => {
                    let b = change_bits(self.width, base, new);
                    if b > 0 {
                        ops += 1;
                        bits += u64::from(b);
                    }
                }
                DeltaEntry::Add(new) => {
                    let id = new.id.0;
                    ids = if adds == 0 {
                        (id, id)
                    } else {
                        (ids.0.min(id), ids.1.max(id))
                    };
                    adds += 1;
                    bits += u64::from(ADD_FIXED_BITS);
                }
                DeltaEntry::Remove => {
                    ops += 1;
                    bits += u64::from(REMOVE_BITS);
                }
            }
        }
        if self.bound_bits(ops, adds, ids, bits).div_ceil(8) * 8 > self.budget_bits {
            return false;
        }
        (self.ops, self.adds, self.add_ids, self.entry_bits) = (ops, adds, ids, bits);
        true
    }

    /// Accepts the change `base` → `new` if it fits (an unchanged entity always fits: it costs
    /// nothing).
    pub fn try_change(&mut self, base: &EntityState, new: &EntityState) -> bool {
        let bits = change_bits(self.width, base, new);
        if bits == 0 {
            return true;
        }
        self.try_accept(self.ops + 1, self.adds, self.add_ids, bits)
    }

    /// Accepts the addition of `new` if it fits.
    pub fn try_add(&mut self, new: &EntityState) -> bool {
        let id = new.id.0;
        let ids = if self.adds == 0 {
            (id, id)
        } else {
            (self.add_ids.0.min(id), self.add_ids.1.max(id))
        };
        self.try_accept(self.ops, self.adds + 1, ids, ADD_FIXED_BITS)
    }

    /// Accepts the removal of a baseline entity if it fits.
    pub fn try_remove(&mut self) -> bool {
        self.try_accept(self.ops + 1, self.adds, self.add_ids, REMOVE_BITS)
    }

    /// Upper bound of the payload with what was accepted so far, bytes.
    pub fn bound_bytes(&self) -> usize {
        let bits = self.bound_bits(self.ops, self.adds, self.add_ids, self.entry_bits);
        usize::try_from(bits.div_ceil(8)).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(id: u32, x: u16, y: u16, heading: u8) -> EntityState {
        EntityState {
            id: EntityId(id),
            kind: EntityKind::Npc,
            pos: [x, y],
            heading,
        }
    }

    fn round_trip(base: &[EntityState], new: &[EntityState]) -> Vec<u8> {
        let mut payload = Vec::new();
        encode_delta(base, new, &mut payload).expect("encode");
        let mut out = Vec::new();
        apply_delta(base, &payload, &mut out).expect("apply");
        assert_eq!(out, new);
        payload
    }

    #[test]
    fn empty_to_empty_is_one_byte() {
        assert_eq!(round_trip(&[], &[]).len(), 1);
    }

    #[test]
    fn unchanged_entities_cost_nothing() {
        let states: Vec<_> = (0..100).map(|i| st(i * 7, 100, 200, 3)).collect();
        assert_eq!(round_trip(&states, &states).len(), 1);
    }

    #[test]
    fn full_snapshot_and_edges() {
        let new = vec![
            st(0, 0, 0, 0),
            st(5, u16::MAX, 0, 255),
            st(u32::MAX, 1, u16::MAX, 7),
        ];
        round_trip(&[], &new);
        // Escape to absolute, heading wraps, kind change, removal and addition together.
        let mut changed = new.clone();
        changed[0].pos = [u16::MAX, u16::MAX];
        changed[0].heading = 250;
        changed[1].kind = EntityKind::Player;
        changed.remove(2);
        changed.push(st(9, 4, 4, 4));
        changed.sort_unstable_by_key(|e| e.id);
        round_trip(&new, &changed);
    }

    #[test]
    fn small_moves_are_small() {
        let base: Vec<_> = (0..100).map(|i| st(i * 3, 30_000, 30_000, 10)).collect();
        let new: Vec<_> = base
            .iter()
            .map(|e| EntityState {
                pos: [e.pos[0] + 40, e.pos[1] - 25],
                ..*e
            })
            .collect();
        let bytes = round_trip(&base, &new).len();
        // skip 1 + code 1 + 2 × 7 bits = 16 bits each.
        assert!(bytes <= 100 * 2 + 3, "{bytes}");
    }

    #[test]
    fn unsorted_input_is_refused() {
        let mut out = Vec::new();
        let bad = [st(2, 0, 0, 0), st(1, 0, 0, 0)];
        assert!(matches!(
            encode_delta(&[], &bad, &mut out),
            Err(SnapshotError::NotSorted {
                list: "new",
                index: 1
            })
        ));
        assert!(matches!(
            apply_delta(&bad, &[0], &mut Vec::new()),
            Err(SnapshotError::NotSorted {
                list: "baseline",
                ..
            })
        ));
    }

    #[test]
    fn malformed_payloads_are_typed_errors() {
        let mut out = Vec::new();
        assert!(matches!(
            apply_delta(&[], &[], &mut out),
            Err(SnapshotError::Truncated { .. })
        ));
        // 40 zero bits: an exponential-Golomb number with too many leading zeros.
        assert!(matches!(
            apply_delta(&[], &[0, 0, 0, 0, 0, 0], &mut out),
            Err(SnapshotError::BadNumber { .. })
        ));
        let good = round_trip(&[], &[st(3, 1, 2, 3)]);
        let mut long = good.clone();
        long.push(0);
        assert_eq!(
            apply_delta(&[], &long, &mut out),
            Err(SnapshotError::TrailingBytes { extra: 1 })
        );
        // One op for an empty baseline.
        let mut payload = Vec::new();
        encode_delta(&[st(1, 0, 0, 0)], &[], &mut payload).expect("encode");
        assert!(matches!(
            apply_delta(&[], &payload, &mut out),
            Err(SnapshotError::TooManyOps { ops: 1, .. })
        ));
        // An addition of an id already in the baseline.
        assert_eq!(
            apply_delta(&[st(3, 0, 0, 0)], &good, &mut out),
            Err(SnapshotError::DuplicateEntity { id: EntityId(3) })
        );
    }

    #[test]
    fn budget_bound_holds_and_is_tight() {
        let base: Vec<_> = (0..200).map(|i| st(i * 5, 1000, 1000, 0)).collect();
        let truth: Vec<_> = base
            .iter()
            .map(|e| EntityState {
                pos: [e.pos[0] + (e.id.0 % 50) as u16, e.pos[1]],
                heading: (e.id.0 % 3) as u8,
                ..*e
            })
            .chain((0..20).map(|i| st(2000 + i * 13, 5, 5, 5)))
            .collect();
        for budget in [1, 10, 50, 100, 300, 2000] {
            let mut planner = DeltaPlanner::new();
            for (b, n) in base.iter().zip(&truth) {
                planner.change(b, n);
            }
            let mut budget_left = planner.budget(budget, base.len());
            let mut new = Vec::new();
            for (i, n) in truth.iter().enumerate() {
                // Every seventh baseline entity is removed, the others change; then additions.
                let kept = match base.get(i) {
                    Some(_) if i % 7 == 3 && budget_left.try_remove() => None,
                    Some(b) if i % 7 == 3 => Some(*b),
                    Some(b) if budget_left.try_change(b, n) => Some(*n),
                    Some(b) => Some(*b),
                    None if budget_left.try_add(n) => Some(*n),
                    None => None,
                };
                new.extend(kept);
            }
            let payload = round_trip(&base, &new);
            assert!(
                payload.len() <= budget_left.bound_bytes(),
                "budget {budget}"
            );
            assert!(
                payload.len() <= budget.max(1),
                "budget {budget}: {}",
                payload.len()
            );
            // The skip bound assumes skips spread over the whole baseline; here the accepted
            // ops come first in id order, so only a budget that takes all of them is tight.
            assert!(
                budget < 2000
                    || budget_left.bound_bytes() <= payload.len() + payload.len() / 20 + 2,
                "loose bound at {budget}: {} vs {}",
                budget_left.bound_bytes(),
                payload.len()
            );
        }
    }
}
