//! Uniform-grid spatial index over the positions of one tick, refreshed every tick.
//!
//! Stored as a counting sort (compressed rows): `cell_start[c]..cell_start[c + 1]` indexes
//! `items`, which holds positions' indices grouped by cell, ascending within a cell. A rebuild
//! is a few linear passes (cells, counts, prefix sums, placement); a refresh
//! ([`SpatialGrid::refresh`]) computes every position's cell, but re-sorts only the few that
//! changed cell since the last tick (at walking speeds about one in a hundred), copying the
//! runs of untouched cells whole. Neither allocates once the buffers have grown to the entity
//! count.

/// A grid over a rectangle; positions outside it are clamped to the border cells.
#[derive(Clone, Debug)]
pub struct SpatialGrid {
    min: [f32; 2],
    inv_cell: f32,
    cell: f32,
    cols: u32,
    /// Last column and last row, as floats.
    last: [f32; 2],
    /// Start of each cell's run in `items`; one more entry than cells.
    cell_start: Vec<u32>,
    /// Indices into `positions`, grouped by cell.
    items: Vec<u32>,
    /// Cell of each position, from the last rebuild.
    cell_of: Vec<u32>,
    /// Positions of the last rebuild, by index.
    positions: Vec<[f32; 2]>,
    // Scratch of `refresh`, reused.
    /// Positions that changed cell: `(new cell, index)`.
    movers: Vec<(u32, u32)>,
    /// Cells that lost or gained an item, sorted, deduplicated.
    touched: Vec<u32>,
    /// The next `items`, swapped in at the end.
    next_items: Vec<u32>,
}

impl SpatialGrid {
    /// A grid over `min`..`max` with square cells of `cell_size` world units (at least one cell
    /// per axis; `cell_size` must be positive and finite).
    pub fn new(min: [f32; 2], max: [f32; 2], cell_size: f32) -> Self {
        let cell = if cell_size.is_finite() && cell_size > 0.0 {
            cell_size
        } else {
            1.0
        };
        let span =
            |a: usize| (((max[a] - min[a]) / cell).ceil().max(1.0) as u32).min(MAX_CELLS_PER_AXIS);
        let (cols, rows) = (span(0), span(1));
        Self {
            min,
            inv_cell: 1.0 / cell,
            cell,
            cols,
            last: [(cols - 1) as f32, (rows - 1) as f32],
            cell_start: vec![0; (cols * rows + 1) as usize],
            items: Vec::new(),
            cell_of: Vec::new(),
            positions: Vec::new(),
            movers: Vec::new(),
            touched: Vec::new(),
            next_items: Vec::new(),
        }
    }

    /// Edge length of a cell.
    pub fn cell_size(&self) -> f32 {
        self.cell
    }

    /// Number of positions indexed.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Position `index` of the last rebuild.
    pub fn position(&self, index: u32) -> [f32; 2] {
        self.positions[index as usize]
    }

    /// Column and row of the cell holding `p`.
    #[inline]
    fn cell_xy(&self, p: [f32; 2]) -> (u32, u32) {
        cell_xy(p, self.min, self.inv_cell, self.last)
    }

    /// Replaces the index with `positions`; position `i` gets index `i`.
    pub fn rebuild(&mut self, positions: impl IntoIterator<Item = [f32; 2]>) {
        self.positions.clear();
        self.positions.extend(positions);
        self.rebuild_cells();
    }

    /// Replaces the index with `positions`, like [`SpatialGrid::rebuild`] (the same index,
    /// item for item), but reuses the last one: only positions whose cell changed are placed
    /// again. As cheap as a rebuild at worst (when the count changed, or many moved cells).
    pub fn refresh(&mut self, positions: impl IntoIterator<Item = [f32; 2]>) {
        self.begin_refresh().extend(positions);
        self.finish_refresh();
    }

    /// [`SpatialGrid::refresh`] in two steps, for a caller that fills the positions itself
    /// (from several slices, say): the positions, emptied, to fill (position `i` gets index
    /// `i`); then [`SpatialGrid::finish_refresh`].
    pub fn begin_refresh(&mut self) -> &mut Vec<[f32; 2]> {
        self.positions.clear();
        &mut self.positions
    }

    /// Indexes the positions filled since [`SpatialGrid::begin_refresh`].
    pub fn finish_refresh(&mut self) {
        if self.positions.len() != self.cell_of.len() {
            return self.rebuild_cells();
        }
        // Cells a chunk at a time (a loop that vectorizes), compared with the last ones; a
        // chunk is walked again only when one of its positions changed cell.
        let (min, inv_cell, last, cols) = (self.min, self.inv_cell, self.last, self.cols);
        // Past this many movers everything is placed again. The scratch buffers are sized for
        // it up front, so that a tick with more movers than any before allocates nothing.
        let n = self.positions.len();
        let limit = n / REFRESH_REBUILD_FRACTION;
        self.movers.clear();
        self.touched.clear();
        self.next_items.clear();
        self.movers.reserve(limit + REFRESH_CHUNK);
        self.touched.reserve(2 * (limit + REFRESH_CHUNK));
        self.next_items.reserve(n);
        let mut cells = [0u32; REFRESH_CHUNK];
        for (c, (ps, olds)) in self
            .positions
            .chunks(REFRESH_CHUNK)
            .zip(self.cell_of.chunks(REFRESH_CHUNK))
            .enumerate()
        {
            let cells = &mut cells[..ps.len()];
            for (cell, &p) in cells.iter_mut().zip(ps) {
                let (x, y) = cell_xy(p, min, inv_cell, last);
                *cell = y * cols + x;
            }
            let moved = cells
                .iter()
                .zip(olds)
                .fold(false, |any, (new, old)| any | (new != old));
            if moved {
                let base = c * REFRESH_CHUNK;
                self.movers.extend(
                    cells
                        .iter()
                        .zip(olds)
                        .enumerate()
                        .filter(|(_, (new, old))| new != old)
                        .map(|(i, (&new, _))| (new, (base + i) as u32)),
                );
                if self.movers.len() > limit {
                    return self.rebuild_cells();
                }
            }
        }
        if !self.movers.is_empty() {
            self.move_items();
        }
    }

    /// Indexes `positions` from scratch: every cell computed, every index placed.
    fn rebuild_cells(&mut self) {
        // Each pass is a separate loop over locals: no reloading of `self` behind a `push`,
        // and the cell pass vectorizes.
        let (min, inv_cell, last, cols) = (self.min, self.inv_cell, self.last, self.cols);
        self.cell_of.clear();
        self.cell_of.extend(self.positions.iter().map(|&p| {
            let (x, y) = cell_xy(p, min, inv_cell, last);
            y * cols + x
        }));
        self.place_all();
    }

    /// Places the `movers` (whose `cell_of` still holds their old cell) in their new cells:
    /// runs of cells nobody left or entered are copied whole into `next_items`, the touched
    /// cells merged (stayers and arrivals, ascending by index), and the starts shifted.
    fn move_items(&mut self) {
        let Self {
            cell_start,
            items,
            cell_of,
            movers,
            touched,
            next_items,
            ..
        } = self;
        touched.clear();
        touched.extend(movers.iter().map(|&(cell, _)| cell));
        touched.extend(movers.iter().map(|&(_, i)| cell_of[i as usize]));
        touched.sort_unstable();
        touched.dedup();
        // Arrivals by new cell, then index: the order of a cell's run.
        movers.sort_unstable();
        for &(cell, i) in movers.iter() {
            cell_of[i as usize] = cell;
        }
        next_items.clear();
        let mut arrivals = movers.iter().peekable();
        // Start shifts accumulate over the touched cells; untouched runs are copied whole.
        let mut copied_to = 0usize;
        let mut shift = 0i64;
        let mut last_cell = 0usize;
        for &cell in touched.iter() {
            let cell = cell as usize;
            let (start, end) = (cell_start[cell] as usize, cell_start[cell + 1] as usize);
            next_items.extend_from_slice(&items[copied_to..start]);
            shift_starts(&mut cell_start[last_cell + 1..=cell], shift);
            let new_start = next_items.len();
            // Stayers (their cell unchanged) and arrivals, both ascending by index.
            let mut stayers = items[start..end]
                .iter()
                .copied()
                .filter(|&i| cell_of[i as usize] as usize == cell)
                .peekable();
            loop {
                let arrival = arrivals.peek().filter(|&&&(c, _)| c as usize == cell);
                let next = match (stayers.peek(), arrival) {
                    (None, None) => break,
                    (Some(&s), Some(&&(_, a))) if a < s => {
                        arrivals.next();
                        a
                    }
                    (Some(&s), _) => {
                        stayers.next();
                        s
                    }
                    (None, Some(&&(_, a))) => {
                        arrivals.next();
                        a
                    }
                };
                next_items.push(next);
            }
            shift += (next_items.len() - new_start) as i64 - (end - start) as i64;
            copied_to = end;
            last_cell = cell;
        }
        next_items.extend_from_slice(&items[copied_to..]);
        shift_starts(&mut cell_start[last_cell + 1..], shift);
        std::mem::swap(items, next_items);
    }

    /// Places every position by its `cell_of`: counts, prefix sums, scatter.
    fn place_all(&mut self) {
        let starts = &mut self.cell_start[..];
        starts.fill(0);
        for &cell in &self.cell_of {
            starts[cell as usize + 1] += 1;
        }
        let mut sum = 0;
        for start in starts.iter_mut() {
            sum += *start;
            *start = sum;
        }
        // Every slot is written below (the scatter is a permutation): only the length matters.
        self.items.resize(self.positions.len(), 0);
        // Place each index at its cell's next free slot, using cell_start as cursors, then
        // shift the cursors back.
        for (i, &cell) in self.cell_of.iter().enumerate() {
            let slot = &mut starts[cell as usize];
            self.items[*slot as usize] = i as u32;
            *slot += 1;
        }
        starts.copy_within(..starts.len() - 1, 1);
        starts[0] = 0;
    }

    /// Calls `f(index, position)` for every indexed position within `radius` of `center`
    /// (inclusive), cell by cell.
    #[inline]
    pub fn for_each_within(&self, center: [f32; 2], radius: f32, mut f: impl FnMut(u32, [f32; 2])) {
        let r2 = radius * radius;
        let (x0, y0) = self.cell_xy([center[0] - radius, center[1] - radius]);
        let (x1, y1) = self.cell_xy([center[0] + radius, center[1] + radius]);
        for y in y0..=y1 {
            let row = y * self.cols;
            let (start, end) = (
                self.cell_start[(row + x0) as usize],
                self.cell_start[(row + x1 + 1) as usize],
            );
            // Cells x0..=x1 of one row are contiguous in `items`.
            for &i in &self.items[start as usize..end as usize] {
                let p = self.positions[i as usize];
                let (dx, dy) = (p[0] - center[0], p[1] - center[1]);
                if dx * dx + dy * dy <= r2 {
                    f(i, p);
                }
            }
        }
    }

    /// Appends to `out` the indices within `radius` of `center`.
    pub fn query_within(&self, center: [f32; 2], radius: f32, out: &mut Vec<u32>) {
        self.for_each_within(center, radius, |i, _| out.push(i));
    }
}

/// Positions [`SpatialGrid::refresh`] computes cells for between two comparisons with the
/// last ones.
const REFRESH_CHUNK: usize = 64;
/// [`SpatialGrid::refresh`] places everything again when more than one position in this many
/// changed cell.
const REFRESH_REBUILD_FRACTION: usize = 8;

/// Adds `shift` to each start (a start never goes below 0 or above the item count: the shifts
/// are the net changes of the cells before it).
#[inline]
fn shift_starts(starts: &mut [u32], shift: i64) {
    if shift != 0 {
        for s in starts {
            *s = (i64::from(*s) + shift) as u32;
        }
    }
}

/// Most cells a grid has along one axis (a larger grid keeps this many, the last ones taking
/// the rest of the rectangle): cell coordinates stay exact in `f32` arithmetic.
const MAX_CELLS_PER_AXIS: u32 = 1 << 22;

/// Column and row of the cell holding `p`, in a grid at `min` with cells of `1 / inv_cell` and
/// `last` the last column and row. Positions outside the grid clamp to its border cells, NaN to
/// the first.
#[inline]
fn cell_xy(p: [f32; 2], min: [f32; 2], inv_cell: f32, last: [f32; 2]) -> (u32, u32) {
    (
        axis_cell((p[0] - min[0]) * inv_cell, last[0]),
        axis_cell((p[1] - min[1]) * inv_cell, last[1]),
    )
}

/// `floor(v)` clamped to `0..=last` (`last` below 2^22), NaN to 0.
///
/// Neither `f32::floor` (a call to libm's `floorf`: x86-64's baseline has no rounding
/// instruction) nor a saturating `as` cast (a compare-and-fix-up sequence per lane): about
/// 1.5 ns per position instead of 5.5 on the machine the benches ran on, which made this the
/// largest cost of a rebuild. Exact: checked against `floor` over every `f32` of a range in
/// the tests.
#[inline]
fn axis_cell(v: f32, last: f32) -> u32 {
    // Written as comparisons, not `max`/`min`, so that they compile to single instructions;
    // NaN fails `v > 0.0` and becomes 0.
    let v = if v > 0.0 { v } else { 0.0 };
    let v = if v < last { v } else { last };
    // Adding 1.5 · 2^23 rounds to the nearest integer, which lands in the low mantissa bits.
    let nearest = ((v + 12_582_912.0).to_bits() & 0x7F_FFFF) as i32 - 0x40_0000;
    // One less where rounding went up: the floor.
    (nearest - i32::from(nearest as f32 > v)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn query_matches_brute_force(
            pts in proptest::collection::vec((-10.0f32..110.0, -10.0f32..110.0), 0..300),
            cx in 0.0f32..100.0, cy in 0.0f32..100.0, r in 0.0f32..40.0, cell in 1.0f32..30.0,
        ) {
            let mut grid = SpatialGrid::new([0.0, 0.0], [100.0, 100.0], cell);
            grid.rebuild(pts.iter().map(|&(x, y)| [x, y]));
            let mut got = Vec::new();
            grid.query_within([cx, cy], r, &mut got);
            got.sort_unstable();
            let want: Vec<u32> = pts.iter().enumerate()
                .filter(|(_, (x, y))| (x - cx) * (x - cx) + (y - cy) * (y - cy) <= r * r)
                .map(|(i, _)| i as u32)
                .collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn axis_cell_is_floor() {
        // Every f32 within 1,000 steps of each integer up to 4,096 (where floor changes and
        // rounding could slip), and a sweep in between.
        for k in 0..4096u32 {
            let bits = (k as f32).to_bits();
            for v in (bits.saturating_sub(1000)..bits + 1000).map(f32::from_bits) {
                assert_eq!(axis_cell(v, 4095.0), v.floor() as u32, "{v}");
            }
        }
        let mut v = 0.0f32;
        while v < 4095.0 {
            assert_eq!(axis_cell(v, 4095.0), v.floor() as u32, "{v}");
            v += 0.0137;
        }
        for (v, want) in [
            (-0.5, 0),
            (-1e30, 0),
            (f32::NAN, 0),
            (5000.0, 4095),
            (f32::INFINITY, 4095),
        ] {
            assert_eq!(axis_cell(v, 4095.0), want, "{v}");
        }
        let big = (MAX_CELLS_PER_AXIS - 1) as f32;
        assert_eq!(axis_cell(big - 0.5, big), MAX_CELLS_PER_AXIS - 2);
        assert_eq!(axis_cell(big, big), MAX_CELLS_PER_AXIS - 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// A refresh gives the very index a rebuild would, whatever moved (a few positions,
        /// many, or the count changed), tick after tick.
        #[test]
        fn refresh_matches_rebuild(
            start in proptest::collection::vec((-10.0f32..110.0, -10.0f32..110.0), 0..200),
            steps in proptest::collection::vec(
                (proptest::collection::vec((any::<prop::sample::Index>(), -30.0f32..30.0, -30.0f32..30.0), 0..40),
                 0usize..3),
                1..6),
            cell in 1.0f32..30.0,
        ) {
            let mut pts: Vec<[f32; 2]> = start.iter().map(|&(x, y)| [x, y]).collect();
            let mut refreshed = SpatialGrid::new([0.0, 0.0], [100.0, 100.0], cell);
            refreshed.rebuild(pts.iter().copied());
            for (moves, grow) in steps {
                for (at, dx, dy) in moves {
                    if !pts.is_empty() {
                        let n = pts.len();
                        let p = &mut pts[at.index(n)];
                        *p = [p[0] + dx, p[1] + dy];
                    }
                }
                // Now and then the count changes, as when entities spawn.
                pts.extend((0..grow).map(|k| [k as f32 * 7.0, 50.0]));
                refreshed.refresh(pts.iter().copied());
                let mut rebuilt = SpatialGrid::new([0.0, 0.0], [100.0, 100.0], cell);
                rebuilt.rebuild(pts.iter().copied());
                prop_assert_eq!(&refreshed.cell_start, &rebuilt.cell_start);
                prop_assert_eq!(&refreshed.items, &rebuilt.items);
                prop_assert_eq!(&refreshed.cell_of, &rebuilt.cell_of);
                prop_assert_eq!(&refreshed.positions, &rebuilt.positions);
            }
        }
    }

    #[test]
    fn refresh_moves_only_what_changed_cell() {
        let mut grid = SpatialGrid::new([0.0, 0.0], [100.0, 100.0], 10.0);
        let mut pts: Vec<[f32; 2]> = (0..1000)
            .map(|i| [(i % 100) as f32 + 0.5, (i / 10) as f32 + 0.5])
            .collect();
        grid.rebuild(pts.iter().copied());
        // Within their cells: nothing to place.
        for p in &mut pts {
            p[0] += 0.25;
        }
        grid.refresh(pts.iter().copied());
        assert!(grid.movers.is_empty());
        // One crosses into the next cell: it alone is placed again, and found there.
        pts[5] = [15.0, 0.5];
        grid.refresh(pts.iter().copied());
        assert_eq!(grid.movers, vec![(1, 5)]);
        let mut found = Vec::new();
        grid.query_within([15.0, 0.5], 0.1, &mut found);
        assert_eq!(found, vec![5]);
    }

    #[test]
    fn rebuild_reuses_buffers() {
        let mut grid = SpatialGrid::new([0.0, 0.0], [100.0, 100.0], 10.0);
        grid.rebuild((0..1000).map(|i| [i as f32 % 100.0, i as f32 / 10.0]));
        let caps = (
            grid.items.capacity(),
            grid.positions.capacity(),
            grid.cell_of.capacity(),
        );
        grid.rebuild((0..1000).map(|i| [(i * 7) as f32 % 100.0, (i * 3) as f32 % 100.0]));
        assert_eq!(
            caps,
            (
                grid.items.capacity(),
                grid.positions.capacity(),
                grid.cell_of.capacity()
            )
        );
        assert_eq!(grid.len(), 1000);
    }
}
