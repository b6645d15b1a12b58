//! The world map: the zones a deployment splits its world into, read from a TOML file
//! (`deploy/worlds/*.toml`) and validated once, at load.
//!
//! ```toml
//! name = "dev"
//! regions = ["washington", "frankfurt", "tokyo"]   # datacenter regions zones may name
//!
//! [[zone]]
//! name = "west"                 # zone id (ZoneId rules)
//! bounds = [0, 0, 1000, 1000]   # min_x, min_y, max_x, max_y (world units)
//! region = "washington"
//! spawn = [[500, 500], [960, 250], [960, 750]]   # spawn points, inside the zone
//! ```
//!
//! A valid map ([`WorldMap`]) has at least one zone; its zones ([`ZoneSpec`]) have valid,
//! distinct names, finite non-empty bounds, a region listed in `regions` and at least one spawn
//! point inside them; and together they tile their bounding box exactly: no two overlap, no
//! space between them is left uncovered. Unknown keys are refused. Every refusal is a
//! [`WorldMapError`] naming the file and the zone.
//!
//! Geometry conventions: a zone covers the half-open rectangle `[min, max)` on both axes, so a
//! point on a border belongs to exactly one zone; the world's own max edges are the exception
//! ([`WorldMap::zone_at`]). Edges are named by compass direction with x growing east and y
//! growing north ([`Edge`]). Validation and adjacency treat coordinates closer than
//! [`COORD_EPSILON`] as equal.

use std::fmt;
use std::path::Path;

use meridian_protocol::ZoneId;
use meridian_protocol::ids::NameError;
use serde::Deserialize;

/// Two coordinates closer than this (world units) are treated as equal when validating a map
/// and when deciding whether zones share an edge.
pub const COORD_EPSILON: f32 = 1e-3;

/// A validated world map.
#[derive(Debug, Clone, PartialEq)]
pub struct WorldMap {
    /// The map's name (`dev`).
    pub name: String,
    /// The datacenter regions zones may be served from, in file order.
    pub regions: Vec<String>,
    /// The zones, in file order.
    pub zones: Vec<ZoneSpec>,
}

/// One zone of a [`WorldMap`].
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneSpec {
    /// The zone's id.
    pub id: ZoneId,
    /// Lower corner `(min_x, min_y)`, world units.
    pub min: [f32; 2],
    /// Upper corner `(max_x, max_y)`, world units.
    pub max: [f32; 2],
    /// The region whose datacenter serves the zone (one of [`WorldMap::regions`]).
    pub region: String,
    /// Where players may enter the world in this zone (at least one, all inside the zone).
    pub spawns: Vec<[f32; 2]>,
}

/// An edge of a zone's rectangle. x grows east, y grows north.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Edge {
    /// The `min_x` edge.
    West,
    /// The `max_x` edge.
    East,
    /// The `min_y` edge.
    South,
    /// The `max_y` edge.
    North,
}

impl Edge {
    /// The four edges, in the order validation scans them.
    pub const ALL: [Edge; 4] = [Edge::West, Edge::East, Edge::South, Edge::North];

    /// The edge facing this one across a border (east faces west).
    pub fn opposite(self) -> Edge {
        match self {
            Edge::West => Edge::East,
            Edge::East => Edge::West,
            Edge::South => Edge::North,
            Edge::North => Edge::South,
        }
    }

    /// The axis whose coordinate is constant along the edge: 0 (x) for west and east, 1 (y)
    /// for south and north.
    fn axis(self) -> usize {
        match self {
            Edge::West | Edge::East => 0,
            Edge::South | Edge::North => 1,
        }
    }

    /// Whether the edge is on the max side of its axis.
    fn is_max(self) -> bool {
        matches!(self, Edge::East | Edge::North)
    }
}

impl fmt::Display for Edge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Edge::West => "west",
            Edge::East => "east",
            Edge::South => "south",
            Edge::North => "north",
        })
    }
}

/// Why a world map could not be loaded. Every variant names the file (`file`: the path, or
/// the source name given to [`WorldMap::parse`]); every variant about one zone names it.
#[derive(Debug, thiserror::Error)]
pub enum WorldMapError {
    /// The file could not be read.
    #[error("cannot read world map {file}: {error}")]
    Read {
        /// The path.
        file: String,
        /// What the file system said.
        #[source]
        error: std::io::Error,
    },
    /// The text is not TOML, or not a map in the expected format (unknown key, missing key,
    /// wrong type, wrong number of coordinates).
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// Line of the error, from 1.
        line: usize,
        /// Column of the error, in characters from 1.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The map is not in the expected format, at no particular position.
    #[error("{file}: {message}")]
    Format {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The map's `name` is empty.
    #[error("{file}: the map's `name` is empty")]
    EmptyName {
        /// The file.
        file: String,
    },
    /// `regions` is empty or missing.
    #[error("{file}: `regions` is empty: list the datacenter regions zones may name")]
    NoRegions {
        /// The file.
        file: String,
    },
    /// An entry of `regions` is an empty string.
    #[error("{file}: entry #{index} of `regions` is empty")]
    EmptyRegion {
        /// The file.
        file: String,
        /// Its position in `regions`, from 1.
        index: usize,
    },
    /// A region is listed twice in `regions`.
    #[error("{file}: region `{region}` is listed twice in `regions`")]
    DuplicateRegion {
        /// The file.
        file: String,
        /// The region.
        region: String,
    },
    /// The map has no `[[zone]]`.
    #[error("{file}: the map has no zones: add at least one [[zone]] table")]
    NoZones {
        /// The file.
        file: String,
    },
    /// A zone's name is not a valid zone id.
    #[error("{file}: zone #{index} has a bad name: {error}")]
    BadZoneName {
        /// The file.
        file: String,
        /// The zone's position among the `[[zone]]` tables, from 1.
        index: usize,
        /// The name as written.
        name: String,
        /// What is wrong with it.
        #[source]
        error: NameError,
    },
    /// A zone's bounds hold an infinite or NaN coordinate.
    #[error("{file}: zone `{zone}` has non-finite bounds {}", fmt_bounds(.bounds))]
    NonFiniteBounds {
        /// The file.
        file: String,
        /// The zone.
        zone: ZoneId,
        /// The bounds as written: min_x, min_y, max_x, max_y.
        bounds: [f32; 4],
    },
    /// A zone's bounds cover no area: min is not below max on some axis.
    #[error(
        "{file}: zone `{zone}` has empty bounds {}: min_x must be below max_x and min_y below max_y",
        fmt_bounds(.bounds)
    )]
    EmptyBounds {
        /// The file.
        file: String,
        /// The zone.
        zone: ZoneId,
        /// The bounds as written: min_x, min_y, max_x, max_y.
        bounds: [f32; 4],
    },
    /// Two zones have the same name.
    #[error("{file}: zone `{zone}` is defined twice")]
    DuplicateZone {
        /// The file.
        file: String,
        /// The zone.
        zone: ZoneId,
    },
    /// A zone names a region that `regions` does not list.
    #[error("{file}: zone `{zone}` names region `{region}`, which `regions` does not list")]
    UnknownRegion {
        /// The file.
        file: String,
        /// The zone.
        zone: ZoneId,
        /// The region it names.
        region: String,
    },
    /// A zone has no spawn point.
    #[error("{file}: zone `{zone}` has no spawn point")]
    NoSpawn {
        /// The file.
        file: String,
        /// The zone.
        zone: ZoneId,
    },
    /// A spawn point lies outside its zone (or is not finite).
    #[error(
        "{file}: zone `{zone}` has spawn point ({}, {}) outside its bounds [{}, {}) x [{}, {})",
        .point[0], .point[1], .min[0], .max[0], .min[1], .max[1]
    )]
    SpawnOutside {
        /// The file.
        file: String,
        /// The zone.
        zone: ZoneId,
        /// The spawn point.
        point: [f32; 2],
        /// The zone's lower corner.
        min: [f32; 2],
        /// The zone's upper corner.
        max: [f32; 2],
    },
    /// Two zones overlap (their intersection has positive area).
    #[error(
        "{file}: zones `{zone}` and `{other}` overlap over {}",
        fmt_bounds(&[.min[0], .min[1], .max[0], .max[1]])
    )]
    Overlap {
        /// The file.
        file: String,
        /// The zone defined first.
        zone: ZoneId,
        /// The zone defined later.
        other: ZoneId,
        /// Lower corner of their intersection.
        min: [f32; 2],
        /// Upper corner of their intersection.
        max: [f32; 2],
    },
    /// The zones do not cover their bounding box: a zone's edge borders uncovered space.
    #[error("{file}: zone `{zone}` has a gap along its {edge} edge near ({}, {})", .at[0], .at[1])]
    Gap {
        /// The file.
        file: String,
        /// The zone.
        zone: ZoneId,
        /// Its edge that borders the gap.
        edge: Edge,
        /// The middle of the first uncovered stretch of that edge.
        at: [f32; 2],
    },
}

/// `[min_x, min_y, max_x, max_y]`, as in the file.
fn fmt_bounds(b: &[f32; 4]) -> String {
    format!("[{}, {}, {}, {}]", b[0], b[1], b[2], b[3])
}

/// The file format, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMap {
    name: String,
    #[serde(default)]
    regions: Vec<String>,
    #[serde(default, rename = "zone")]
    zones: Vec<RawZone>,
}

/// One `[[zone]]` table, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZone {
    name: String,
    bounds: [f32; 4],
    region: String,
    #[serde(default)]
    spawn: Vec<[f32; 2]>,
}

/// `a` and `b` are equal within [`COORD_EPSILON`].
fn near(a: f32, b: f32) -> bool {
    (a - b).abs() <= COORD_EPSILON
}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let (mut line, mut column) = (1, 1);
    for (i, c) in text.char_indices() {
        if i >= at {
            break;
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

impl WorldMap {
    /// Reads and validates the map at `path`. Errors name the file.
    pub fn load(path: &Path) -> Result<WorldMap, WorldMapError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| WorldMapError::Read {
            file: file.clone(),
            error,
        })?;
        Self::parse(&text, &file)
    }

    /// Parses and validates a map from its TOML text; `source` names it in errors (a path, or
    /// a description such as `built-in dev map`). Syntax errors give line and column.
    pub fn parse(text: &str, source: &str) -> Result<WorldMap, WorldMapError> {
        let raw: RawMap = toml::from_str(text).map_err(|e| match e.span() {
            Some(span) => {
                let (line, column) = line_column(text, span.start);
                WorldMapError::Syntax {
                    file: source.to_owned(),
                    line,
                    column,
                    message: e.message().trim().to_owned(),
                }
            }
            None => WorldMapError::Format {
                file: source.to_owned(),
                message: e.message().trim().to_owned(),
            },
        })?;
        raw.validate(source)
    }

    /// The built-in dev map (`deploy/worlds/dev.toml`): three zones side by side, `west`,
    /// `center` and `east`, each in a different region.
    pub fn dev() -> WorldMap {
        Self::parse(
            include_str!("../../deploy/worlds/dev.toml"),
            "deploy/worlds/dev.toml",
        )
        .expect("invariant: the shipped dev map is valid (tested by tests/world_map.rs)")
    }

    /// The zone named `id`.
    pub fn zone(&self, id: &ZoneId) -> Option<&ZoneSpec> {
        self.zones.iter().find(|z| z.id == *id)
    }

    /// The zone containing `p`. Zones are half-open, `[min, max)`, so a point on a border
    /// belongs to the zone on its max side; on the world's own max edges (east and north),
    /// which no zone lies beyond, the zone touching the edge includes it. `None` outside the
    /// world (or for a non-finite point).
    pub fn zone_at(&self, p: [f32; 2]) -> Option<&ZoneSpec> {
        let (_, world_max) = self.bounds();
        self.zones.iter().find(|z| {
            (0..2).all(|a| {
                let below_max = p[a] < z.max[a]
                    || (near(z.max[a], world_max[a]) && p[a] <= z.max[a].max(world_max[a]));
                z.min[a] <= p[a] && below_max
            })
        })
    }

    /// The bounding box of all zones, `(min, max)`; for a valid map, the world. A map without
    /// zones (only possible when built by hand) gives `([0, 0], [0, 0])`.
    pub fn bounds(&self) -> ([f32; 2], [f32; 2]) {
        let mut zones = self.zones.iter();
        let Some(first) = zones.next() else {
            return ([0.0, 0.0], [0.0, 0.0]);
        };
        zones.fold((first.min, first.max), |(min, max), z| {
            (
                [min[0].min(z.min[0]), min[1].min(z.min[1])],
                [max[0].max(z.max[0]), max[1].max(z.max[1])],
            )
        })
    }

    /// The zones sharing an edge of positive length with zone `id`, in map order. Zones that
    /// only touch at a corner are not neighbours. Empty for an unknown zone.
    pub fn neighbours(&self, id: &ZoneId) -> Vec<&ZoneSpec> {
        let Some(zone) = self.zone(id) else {
            return Vec::new();
        };
        self.zones
            .iter()
            .filter(|other| other.id != *id && shared_edge(zone, other).is_some())
            .collect()
    }

    /// The segment of border zones `a` and `b` share, as its two end points ordered from low
    /// to high coordinate; `None` if they are not neighbours, the same zone, or unknown.
    pub fn border(&self, a: &ZoneId, b: &ZoneId) -> Option<([f32; 2], [f32; 2])> {
        if a == b {
            return None;
        }
        shared_edge(self.zone(a)?, self.zone(b)?).map(|(_, from, to)| (from, to))
    }
}

impl ZoneSpec {
    /// Whether `p` lies in the zone's half-open rectangle `[min, max)`.
    pub fn contains(&self, p: [f32; 2]) -> bool {
        (0..2).all(|a| self.min[a] <= p[a] && p[a] < self.max[a])
    }

    /// The bounds as `"min_x,min_y,max_x,max_y"`, the form the shard's `--zone-bounds` flag
    /// takes.
    pub fn bounds_string(&self) -> String {
        format!(
            "{},{},{},{}",
            self.min[0], self.min[1], self.max[0], self.max[1]
        )
    }

    /// Edge `e` as (its constant coordinate, its extent along the other axis: low, high).
    fn edge(&self, e: Edge) -> (f32, f32, f32) {
        let fixed = e.axis();
        let along = 1 - fixed;
        let at = if e.is_max() {
            self.max[fixed]
        } else {
            self.min[fixed]
        };
        (at, self.min[along], self.max[along])
    }
}

/// A point on edge `e`'s line: `at` on its constant axis, `t` along it.
fn edge_point(e: Edge, at: f32, t: f32) -> [f32; 2] {
    if e.axis() == 0 { [at, t] } else { [t, at] }
}

/// The edge of `a` that `b` lies against, with the shared segment, if they share one of
/// positive length.
fn shared_edge(a: &ZoneSpec, b: &ZoneSpec) -> Option<(Edge, [f32; 2], [f32; 2])> {
    Edge::ALL.into_iter().find_map(|e| {
        let (at_a, lo_a, hi_a) = a.edge(e);
        let (at_b, lo_b, hi_b) = b.edge(e.opposite());
        let (lo, hi) = (lo_a.max(lo_b), hi_a.min(hi_b));
        (near(at_a, at_b) && hi - lo > COORD_EPSILON)
            .then(|| (e, edge_point(e, at_a, lo), edge_point(e, at_a, hi)))
    })
}

impl RawMap {
    fn validate(self, file: &str) -> Result<WorldMap, WorldMapError> {
        let file_owned = || file.to_owned();
        if self.name.trim().is_empty() {
            return Err(WorldMapError::EmptyName { file: file_owned() });
        }
        if self.regions.is_empty() {
            return Err(WorldMapError::NoRegions { file: file_owned() });
        }
        for (i, region) in self.regions.iter().enumerate() {
            if region.trim().is_empty() {
                return Err(WorldMapError::EmptyRegion {
                    file: file_owned(),
                    index: i + 1,
                });
            }
            if self.regions[..i].contains(region) {
                return Err(WorldMapError::DuplicateRegion {
                    file: file_owned(),
                    region: region.clone(),
                });
            }
        }
        if self.zones.is_empty() {
            return Err(WorldMapError::NoZones { file: file_owned() });
        }
        let mut zones: Vec<ZoneSpec> = Vec::with_capacity(self.zones.len());
        for (i, raw) in self.zones.into_iter().enumerate() {
            let zone = check_zone(raw, i + 1, &self.regions, &zones, file)?;
            zones.push(zone);
        }
        check_overlaps(&zones, file)?;
        check_gaps(&zones, file)?;
        Ok(WorldMap {
            name: self.name,
            regions: self.regions,
            zones,
        })
    }
}

/// Checks one zone on its own and against the zones before it (`earlier`).
fn check_zone(
    raw: RawZone,
    index: usize,
    regions: &[String],
    earlier: &[ZoneSpec],
    file: &str,
) -> Result<ZoneSpec, WorldMapError> {
    let id = ZoneId::new(raw.name.as_str()).map_err(|error| WorldMapError::BadZoneName {
        file: file.to_owned(),
        index,
        name: raw.name.clone(),
        error,
    })?;
    let bounds = raw.bounds;
    let [x0, y0, x1, y1] = bounds;
    if !bounds.iter().all(|v| v.is_finite()) {
        return Err(WorldMapError::NonFiniteBounds {
            file: file.to_owned(),
            zone: id,
            bounds,
        });
    }
    // Subtracting in f64: two finite f32 far apart cannot overflow there.
    let wide = |lo: f32, hi: f32| f64::from(hi) - f64::from(lo) > f64::from(COORD_EPSILON);
    if !(wide(x0, x1) && wide(y0, y1)) {
        return Err(WorldMapError::EmptyBounds {
            file: file.to_owned(),
            zone: id,
            bounds,
        });
    }
    if earlier.iter().any(|z| z.id == id) {
        return Err(WorldMapError::DuplicateZone {
            file: file.to_owned(),
            zone: id,
        });
    }
    if !regions.contains(&raw.region) {
        return Err(WorldMapError::UnknownRegion {
            file: file.to_owned(),
            zone: id,
            region: raw.region,
        });
    }
    if raw.spawn.is_empty() {
        return Err(WorldMapError::NoSpawn {
            file: file.to_owned(),
            zone: id,
        });
    }
    let zone = ZoneSpec {
        id,
        min: [x0, y0],
        max: [x1, y1],
        region: raw.region,
        spawns: raw.spawn,
    };
    if let Some(&point) = zone.spawns.iter().find(|p| !zone.contains(**p)) {
        return Err(WorldMapError::SpawnOutside {
            file: file.to_owned(),
            zone: zone.id,
            point,
            min: zone.min,
            max: zone.max,
        });
    }
    Ok(zone)
}

/// Refuses two zones whose intersection has positive area.
fn check_overlaps(zones: &[ZoneSpec], file: &str) -> Result<(), WorldMapError> {
    for (i, a) in zones.iter().enumerate() {
        for b in &zones[i + 1..] {
            let min = [a.min[0].max(b.min[0]), a.min[1].max(b.min[1])];
            let max = [a.max[0].min(b.max[0]), a.max[1].min(b.max[1])];
            if max[0] - min[0] > COORD_EPSILON && max[1] - min[1] > COORD_EPSILON {
                return Err(WorldMapError::Overlap {
                    file: file.to_owned(),
                    zone: a.id.clone(),
                    other: b.id.clone(),
                    min,
                    max,
                });
            }
        }
    }
    Ok(())
}

/// Refuses zones that do not tile their bounding box (called once no two zones overlap).
///
/// With no overlaps, the zones tile the box exactly when their areas sum to the box's area.
/// That is checked edge by edge, so that the error can say where: uncovered space in the box
/// is bounded by zone edges that no zone lies against on the other side (its boundary cannot
/// lie wholly on the box's, or the box would hold no zone). So every edge of every zone that is
/// not on the box's boundary must be covered, along its whole length, by the facing edges of
/// other zones; and when that holds, no space is left uncovered.
fn check_gaps(zones: &[ZoneSpec], file: &str) -> Result<(), WorldMapError> {
    let world_min = zones.iter().fold([f32::INFINITY; 2], |m, z| {
        [m[0].min(z.min[0]), m[1].min(z.min[1])]
    });
    let world_max = zones.iter().fold([f32::NEG_INFINITY; 2], |m, z| {
        [m[0].max(z.max[0]), m[1].max(z.max[1])]
    });
    for zone in zones {
        for e in Edge::ALL {
            let (at, lo, hi) = zone.edge(e);
            let world_edge = if e.is_max() {
                world_max[e.axis()]
            } else {
                world_min[e.axis()]
            };
            if near(at, world_edge) {
                continue;
            }
            let mut cover: Vec<(f32, f32)> = zones
                .iter()
                .filter(|other| other.id != zone.id)
                .filter_map(|other| {
                    let (at_o, lo_o, hi_o) = other.edge(e.opposite());
                    let (from, to) = (lo_o.max(lo), hi_o.min(hi));
                    (near(at, at_o) && to > from).then_some((from, to))
                })
                .collect();
            cover.sort_by(|x, y| x.0.total_cmp(&y.0));
            if let Some((from, to)) = first_uncovered(lo, hi, &cover) {
                return Err(WorldMapError::Gap {
                    file: file.to_owned(),
                    zone: zone.id.clone(),
                    edge: e,
                    at: edge_point(e, at, from + (to - from) / 2.0),
                });
            }
        }
    }
    Ok(())
}

/// The first stretch of `[lo, hi]` longer than [`COORD_EPSILON`] that no interval of `cover`
/// (sorted by start) covers.
fn first_uncovered(lo: f32, hi: f32, cover: &[(f32, f32)]) -> Option<(f32, f32)> {
    let mut reached = lo;
    for &(from, to) in cover {
        if from - reached > COORD_EPSILON {
            return Some((reached, from));
        }
        reached = reached.max(to);
    }
    (hi - reached > COORD_EPSILON).then_some((reached, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str) -> ZoneId {
        ZoneId::new(name).expect("valid zone name")
    }

    fn ids(zones: &[&ZoneSpec]) -> Vec<String> {
        zones.iter().map(|z| z.id.to_string()).collect()
    }

    /// A 2x2 grid: sw, se on the bottom row, nw, ne on top, each 100 x 100.
    fn grid() -> WorldMap {
        WorldMap::parse(
            r#"
            name = "grid"
            regions = ["r"]
            [[zone]]
            name = "sw"
            bounds = [0, 0, 100, 100]
            region = "r"
            spawn = [[50, 50]]
            [[zone]]
            name = "se"
            bounds = [100, 0, 200, 100]
            region = "r"
            spawn = [[150, 50]]
            [[zone]]
            name = "nw"
            bounds = [0, 100, 100, 200]
            region = "r"
            spawn = [[50, 150]]
            [[zone]]
            name = "ne"
            bounds = [100, 100, 200, 200]
            region = "r"
            spawn = [[150, 150]]
            "#,
            "grid",
        )
        .expect("grid map is valid")
    }

    /// A wide zone `south` under two zones `a` and `b` of unequal widths, at negative x.
    fn tee() -> WorldMap {
        WorldMap::parse(
            r#"
            name = "tee"
            regions = ["r"]
            [[zone]]
            name = "south"
            bounds = [-500, 0, 500, 100]
            region = "r"
            spawn = [[0, 50]]
            [[zone]]
            name = "a"
            bounds = [-500, 100, 200, 300]
            region = "r"
            spawn = [[0, 150]]
            [[zone]]
            name = "b"
            bounds = [200, 100, 500, 300]
            region = "r"
            spawn = [[300, 150]]
            "#,
            "tee",
        )
        .expect("tee map is valid")
    }

    #[test]
    fn neighbours_share_an_edge_not_a_corner() {
        let map = grid();
        assert_eq!(ids(&map.neighbours(&zone("sw"))), ["se", "nw"]);
        assert_eq!(ids(&map.neighbours(&zone("ne"))), ["se", "nw"]);
        assert_eq!(ids(&map.neighbours(&zone("se"))), ["sw", "ne"]);
        assert!(map.neighbours(&zone("nowhere")).is_empty());
    }

    #[test]
    fn neighbours_along_part_of_an_edge() {
        let map = tee();
        assert_eq!(ids(&map.neighbours(&zone("south"))), ["a", "b"]);
        assert_eq!(ids(&map.neighbours(&zone("a"))), ["south", "b"]);
        assert_eq!(ids(&map.neighbours(&zone("b"))), ["south", "a"]);
    }

    #[test]
    fn border_is_the_shared_segment() {
        let map = grid();
        assert_eq!(
            map.border(&zone("sw"), &zone("se")),
            Some(([100.0, 0.0], [100.0, 100.0]))
        );
        assert_eq!(
            map.border(&zone("se"), &zone("sw")),
            Some(([100.0, 0.0], [100.0, 100.0]))
        );
        assert_eq!(
            map.border(&zone("nw"), &zone("sw")),
            Some(([0.0, 100.0], [100.0, 100.0]))
        );
        assert_eq!(map.border(&zone("sw"), &zone("ne")), None, "corner only");
        assert_eq!(map.border(&zone("sw"), &zone("sw")), None, "same zone");
        assert_eq!(map.border(&zone("sw"), &zone("nowhere")), None);

        let tee = tee();
        assert_eq!(
            tee.border(&zone("south"), &zone("a")),
            Some(([-500.0, 100.0], [200.0, 100.0]))
        );
        assert_eq!(
            tee.border(&zone("b"), &zone("south")),
            Some(([200.0, 100.0], [500.0, 100.0]))
        );
        assert_eq!(
            tee.border(&zone("a"), &zone("b")),
            Some(([200.0, 100.0], [200.0, 300.0]))
        );
    }

    #[test]
    fn zone_at_is_half_open_except_on_the_world_max_edge() {
        let map = grid();
        let at = |p: [f32; 2]| map.zone_at(p).map(|z| z.id.to_string());
        assert_eq!(at([50.0, 50.0]).as_deref(), Some("sw"));
        assert_eq!(at([0.0, 0.0]).as_deref(), Some("sw"), "world min corner");
        // On an inner border the point belongs to the zone on the max side.
        assert_eq!(at([100.0, 50.0]).as_deref(), Some("se"));
        assert_eq!(at([99.99, 50.0]).as_deref(), Some("sw"));
        assert_eq!(at([50.0, 100.0]).as_deref(), Some("nw"));
        assert_eq!(at([100.0, 100.0]).as_deref(), Some("ne"));
        // The world's max edges belong to the zones touching them.
        assert_eq!(at([200.0, 50.0]).as_deref(), Some("se"));
        assert_eq!(at([50.0, 200.0]).as_deref(), Some("nw"));
        assert_eq!(at([200.0, 200.0]).as_deref(), Some("ne"));
        // Outside the world.
        assert_eq!(at([200.5, 50.0]), None);
        assert_eq!(at([-0.5, 50.0]), None);
        assert_eq!(at([50.0, -0.001]), None);
        assert_eq!(at([f32::NAN, 50.0]), None);
        assert_eq!(at([f32::INFINITY, 50.0]), None);
    }

    #[test]
    fn zone_at_with_negative_coordinates() {
        let map = tee();
        let at = |p: [f32; 2]| map.zone_at(p).map(|z| z.id.to_string());
        assert_eq!(at([-500.0, 0.0]).as_deref(), Some("south"));
        assert_eq!(at([-1.0, 99.0]).as_deref(), Some("south"));
        assert_eq!(at([-1.0, 100.0]).as_deref(), Some("a"));
        assert_eq!(at([200.0, 300.0]).as_deref(), Some("b"));
        assert_eq!(at([500.0, 0.0]).as_deref(), Some("south"));
        assert_eq!(at([-501.0, 0.0]), None);
    }

    #[test]
    fn contains_is_half_open() {
        let map = grid();
        let sw = map.zone(&zone("sw")).expect("sw");
        assert!(sw.contains([0.0, 0.0]));
        assert!(sw.contains([99.9, 99.9]));
        assert!(!sw.contains([100.0, 50.0]));
        assert!(!sw.contains([50.0, 100.0]));
        assert!(!sw.contains([f32::NAN, 50.0]));
    }

    #[test]
    fn bounds_cover_all_zones() {
        assert_eq!(grid().bounds(), ([0.0, 0.0], [200.0, 200.0]));
        assert_eq!(tee().bounds(), ([-500.0, 0.0], [500.0, 300.0]));
        let empty = WorldMap {
            name: "empty".to_owned(),
            regions: Vec::new(),
            zones: Vec::new(),
        };
        assert_eq!(empty.bounds(), ([0.0, 0.0], [0.0, 0.0]));
        assert_eq!(empty.zone_at([0.0, 0.0]), None);
    }

    #[test]
    fn bounds_string_is_the_shard_flag_form() {
        let map = tee();
        let a = map.zone(&zone("a")).expect("a");
        assert_eq!(a.bounds_string(), "-500,100,200,300");
        let half = ZoneSpec {
            min: [0.5, -0.25],
            ..a.clone()
        };
        assert_eq!(half.bounds_string(), "0.5,-0.25,200,300");
    }

    #[test]
    fn first_uncovered_finds_holes() {
        assert_eq!(first_uncovered(0.0, 10.0, &[(0.0, 10.0)]), None);
        assert_eq!(first_uncovered(0.0, 10.0, &[(0.0, 4.0), (4.0, 10.0)]), None);
        assert_eq!(
            first_uncovered(0.0, 10.0, &[(0.0, 4.0), (6.0, 10.0)]),
            Some((4.0, 6.0))
        );
        assert_eq!(first_uncovered(0.0, 10.0, &[(2.0, 10.0)]), Some((0.0, 2.0)));
        assert_eq!(first_uncovered(0.0, 10.0, &[(0.0, 8.0)]), Some((8.0, 10.0)));
        assert_eq!(first_uncovered(0.0, 10.0, &[]), Some((0.0, 10.0)));
        // Stretches within the tolerance are not holes.
        assert_eq!(first_uncovered(0.0, 10.0, &[(0.0, 9.9995)]), None);
    }

    #[test]
    fn line_column_counts_characters_from_one() {
        let text = "ab\ncdé\nf";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 1), (1, 2));
        assert_eq!(line_column(text, 3), (2, 1));
        assert_eq!(line_column(text, "ab\ncdé\n".len()), (3, 1));
        assert_eq!(line_column(text, 1000), (3, 2));
    }
}
