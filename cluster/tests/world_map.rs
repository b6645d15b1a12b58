//! The world map files: the shipped maps load, every invalid map is refused with an error that
//! names the file and the zone.

use std::path::{Path, PathBuf};

use meridian_cluster::world::{Edge, WorldMap, WorldMapError};
use meridian_protocol::ZoneId;
use meridian_protocol::ids::NameError;

fn worlds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/worlds")
}

fn zone(name: &str) -> ZoneId {
    ZoneId::new(name).expect("valid zone name")
}

fn names(zones: &[&meridian_cluster::world::ZoneSpec]) -> Vec<String> {
    zones.iter().map(|z| z.id.to_string()).collect()
}

/// A valid two-zone map: `left` [0, 0, 100, 100] and `right` [100, 0, 200, 100].
const TWO_ZONES: &str = r#"
name = "two"
regions = ["here", "there"]

[[zone]]
name = "left"
bounds = [0, 0, 100, 100]
region = "here"
spawn = [[50, 50]]

[[zone]]
name = "right"
bounds = [100, 0, 200, 100]
region = "there"
spawn = [[150, 50]]
"#;

/// Parses `TWO_ZONES` with `from` replaced by `to` (which must occur), expecting a refusal.
fn refused(from: &str, to: &str) -> WorldMapError {
    assert!(
        TWO_ZONES.contains(from),
        "test setup: `{from}` not in the map"
    );
    refused_text(&TWO_ZONES.replacen(from, to, 1))
}

fn refused_text(text: &str) -> WorldMapError {
    match WorldMap::parse(text, "test.toml") {
        Ok(map) => panic!("map was accepted: {map:?}"),
        Err(e) => e,
    }
}

/// The error's message names the file and each of `zones` in backquotes.
fn assert_names(e: &WorldMapError, zones: &[&str]) {
    let msg = e.to_string();
    assert!(msg.starts_with("test.toml"), "file not named: {msg}");
    for z in zones {
        assert!(
            msg.contains(&format!("`{z}`")),
            "zone `{z}` not named: {msg}"
        );
    }
}

#[test]
fn two_zones_base_map_is_valid() {
    let map = WorldMap::parse(TWO_ZONES, "test.toml").expect("valid");
    assert_eq!(map.name, "two");
    assert_eq!(map.regions, ["here", "there"]);
    assert_eq!(names(&map.neighbours(&zone("left"))), ["right"]);
}

#[test]
fn dev_map_file_loads() {
    let map = WorldMap::load(&worlds_dir().join("dev.toml")).expect("dev.toml loads");
    assert_eq!(map, WorldMap::dev());
    assert_eq!(map.name, "dev");
    assert_eq!(map.regions, ["washington", "frankfurt", "tokyo"]);
}

#[test]
fn three_regions_map_file_loads() {
    let map =
        WorldMap::load(&worlds_dir().join("three-regions.toml")).expect("three-regions.toml loads");
    assert_eq!(map.name, "three-regions");
    assert_eq!(map.zones.len(), 4);
    assert_eq!(map.bounds(), ([0.0, 0.0], [2000.0, 2000.0]));
    assert_eq!(
        names(&map.neighbours(&zone("south-west"))),
        ["south-east", "north-west"]
    );
    assert_eq!(
        names(&map.neighbours(&zone("north-east"))),
        ["south-east", "north-west"]
    );
    for z in &map.zones {
        assert!(map.regions.contains(&z.region), "zone {} region", z.id);
        assert_eq!(map.zone_at(z.spawns[0]).map(|s| &s.id), Some(&z.id));
    }
}

#[test]
fn dev_map_is_three_zones_in_a_row() {
    let map = WorldMap::dev();
    let ids: Vec<&str> = map.zones.iter().map(|z| z.id.as_str()).collect();
    assert_eq!(ids, ["west", "center", "east"]);
    assert_eq!(names(&map.neighbours(&zone("west"))), ["center"]);
    assert_eq!(names(&map.neighbours(&zone("center"))), ["west", "east"]);
    assert_eq!(names(&map.neighbours(&zone("east"))), ["center"]);
    assert_eq!(map.border(&zone("west"), &zone("east")), None);
    assert_eq!(
        map.border(&zone("center"), &zone("east")),
        Some(([2000.0, 0.0], [2000.0, 1000.0]))
    );
    assert_eq!(map.bounds(), ([0.0, 0.0], [3000.0, 1000.0]));
    let bounds: Vec<String> = map.zones.iter().map(|z| z.bounds_string()).collect();
    assert_eq!(
        bounds,
        ["0,0,1000,1000", "1000,0,2000,1000", "2000,0,3000,1000"]
    );
    let west = map.zone(&zone("west")).expect("west");
    assert_eq!(west.region, "washington");
    assert_eq!(
        west.spawns,
        [[500.0, 500.0], [960.0, 250.0], [960.0, 750.0]]
    );
    assert_eq!(
        map.zone_at([1000.0, 500.0]).map(|z| z.id.as_str()),
        Some("center")
    );
}

#[test]
fn missing_file_names_the_file() {
    let path = worlds_dir().join("no-such-map.toml");
    let e = WorldMap::load(&path).expect_err("missing file");
    assert!(matches!(&e, WorldMapError::Read { file, .. } if file.ends_with("no-such-map.toml")));
    assert!(e.to_string().contains("no-such-map.toml"), "{e}");
}

#[test]
fn syntax_error_in_a_file_names_file_line_and_column() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "name = \"x\"\nregions = [\"a\"\n\n[[zone]]\n").expect("write");
    let e = WorldMap::load(&path).expect_err("broken");
    let WorldMapError::Syntax {
        file, line, column, ..
    } = &e
    else {
        panic!("expected a syntax error, got {e:?}");
    };
    assert!(file.ends_with("broken.toml"), "{file}");
    // The unclosed array is noticed at the next token, the `[[zone]]` header.
    assert_eq!((*line, *column), (4, 1), "{e}");
    assert!(e.to_string().contains("broken.toml:4:1: "), "{e}");
}

#[test]
fn syntax_error_gives_line_and_column() {
    let e = refused_text("name = \"x\"\nregions = [\"a\"]\n  bounds = = 3\n");
    match &e {
        WorldMapError::Syntax {
            file, line, column, ..
        } => {
            assert_eq!(file, "test.toml");
            assert_eq!(*line, 3);
            assert_eq!(*column, 12, "{e}");
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    assert!(e.to_string().starts_with("test.toml:3:12: "), "{e}");
}

#[test]
fn unknown_top_level_key_is_refused_with_its_position() {
    let e = refused("name = \"two\"\n", "name = \"two\"\ncolour = \"blue\"\n");
    match &e {
        WorldMapError::Syntax {
            line,
            column,
            message,
            ..
        } => {
            assert_eq!((*line, *column), (3, 1), "{e}");
            assert!(message.contains("colour"), "{message}");
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn unknown_zone_key_is_refused_with_its_position() {
    let e = refused("region = \"there\"\n", "region = \"there\"\nheight = 3\n");
    match &e {
        WorldMapError::Syntax {
            line,
            column,
            message,
            ..
        } => {
            assert_eq!((*line, *column), (15, 1), "{e}");
            assert!(message.contains("height"), "{message}");
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn bounds_with_three_numbers_are_refused() {
    let e = refused("[100, 0, 200, 100]", "[100, 0, 200]");
    assert!(
        matches!(&e, WorldMapError::Syntax { line: 13, .. }),
        "{e:?}"
    );
}

#[test]
fn bounds_that_are_not_numbers_are_refused() {
    let e = refused("[100, 0, 200, 100]", "[100, 0, \"200\", 100]");
    assert!(
        matches!(&e, WorldMapError::Syntax { line: 13, .. }),
        "{e:?}"
    );
}

#[test]
fn missing_name_is_refused() {
    let e = refused("name = \"two\"\n", "");
    assert!(
        matches!(
            &e,
            WorldMapError::Syntax { .. } | WorldMapError::Format { .. }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("name"), "{e}");
}

#[test]
fn empty_map_name_is_refused() {
    let e = refused("name = \"two\"", "name = \"\"");
    assert!(matches!(e, WorldMapError::EmptyName { .. }), "{e:?}");
}

#[test]
fn bad_zone_name_is_refused() {
    let e = refused("name = \"right\"", "name = \"right side\"");
    match &e {
        WorldMapError::BadZoneName {
            index, name, error, ..
        } => {
            assert_eq!(*index, 2);
            assert_eq!(name, "right side");
            assert!(matches!(error, NameError::BadChar { .. }));
        }
        other => panic!("expected BadZoneName, got {other:?}"),
    }
    assert_names(&e, &["right side"]);
}

#[test]
fn empty_zone_name_is_refused_by_position() {
    let e = refused("name = \"left\"", "name = \"\"");
    assert!(
        matches!(
            &e,
            WorldMapError::BadZoneName {
                index: 1,
                error: NameError::Empty { .. },
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("zone #1"), "{e}");
}

#[test]
fn non_finite_bounds_are_refused() {
    for bad in ["inf", "-inf", "nan"] {
        let e = refused("[100, 0, 200, 100]", &format!("[100, 0, {bad}, 100]"));
        assert!(
            matches!(&e, WorldMapError::NonFiniteBounds { zone, .. } if zone.as_str() == "right"),
            "{bad}: {e:?}"
        );
        assert_names(&e, &["right"]);
    }
}

#[test]
fn empty_bounds_are_refused() {
    for bad in [
        "[100, 0, 100, 100]",
        "[100, 0, 200, 0]",
        "[200, 0, 100, 100]",
        "[100, 0, 100.0005, 100]",
    ] {
        let e = refused("[100, 0, 200, 100]", bad);
        assert!(
            matches!(&e, WorldMapError::EmptyBounds { zone, .. } if zone.as_str() == "right"),
            "{bad}: {e:?}"
        );
        assert_names(&e, &["right"]);
    }
}

#[test]
fn duplicate_zone_is_refused() {
    let e = refused("name = \"right\"", "name = \"left\"");
    assert!(
        matches!(&e, WorldMapError::DuplicateZone { zone, .. } if zone.as_str() == "left"),
        "{e:?}"
    );
    assert_names(&e, &["left"]);
}

#[test]
fn map_without_zones_is_refused() {
    let e = refused_text("name = \"none\"\nregions = [\"here\"]\n");
    assert!(
        matches!(&e, WorldMapError::NoZones { file } if file == "test.toml"),
        "{e:?}"
    );
}

#[test]
fn overlapping_zones_are_refused_naming_both() {
    let e = refused("[100, 0, 200, 100]", "[90, 0, 200, 100]");
    match &e {
        WorldMapError::Overlap {
            zone,
            other,
            min,
            max,
            ..
        } => {
            assert_eq!(zone.as_str(), "left");
            assert_eq!(other.as_str(), "right");
            assert_eq!((*min, *max), ([90.0, 0.0], [100.0, 100.0]));
        }
        other => panic!("expected Overlap, got {other:?}"),
    }
    assert_names(&e, &["left", "right"]);
}

#[test]
fn zones_touching_within_the_tolerance_are_accepted() {
    let touching = TWO_ZONES.replacen("[100, 0, 200, 100]", "[99.9995, 0, 200, 100]", 1);
    let map = WorldMap::parse(&touching, "test.toml").expect("within tolerance");
    assert_eq!(names(&map.neighbours(&zone("left"))), ["right"]);
    let apart = TWO_ZONES.replacen("[100, 0, 200, 100]", "[100.0005, 0, 200, 100]", 1);
    WorldMap::parse(&apart, "test.toml").expect("within tolerance");
}

#[test]
fn gap_between_zones_is_refused_with_its_place() {
    let e = refused("[100, 0, 200, 100]", "[101, 0, 200, 100]");
    match &e {
        WorldMapError::Gap { zone, edge, at, .. } => {
            assert_eq!(zone.as_str(), "left");
            assert_eq!(*edge, Edge::East);
            assert_eq!(*at, [100.0, 50.0]);
        }
        other => panic!("expected Gap, got {other:?}"),
    }
    assert_names(&e, &["left"]);
}

#[test]
fn gap_message_says_which_edge_and_where() {
    // `center` covers only the south half of west's east edge; `east` sits beside both.
    let e = refused_text(
        r#"
        name = "holes"
        regions = ["r"]
        [[zone]]
        name = "west"
        bounds = [0, 0, 1000, 1000]
        region = "r"
        spawn = [[500, 500]]
        [[zone]]
        name = "center"
        bounds = [1000, 0, 2000, 500]
        region = "r"
        spawn = [[1500, 250]]
        [[zone]]
        name = "east"
        bounds = [2000, 0, 3000, 1000]
        region = "r"
        spawn = [[2500, 500]]
        "#,
    );
    assert!(
        matches!(&e, WorldMapError::Gap { zone, edge: Edge::East, at, .. }
            if zone.as_str() == "west" && *at == [1000.0, 750.0]),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "test.toml: zone `west` has a gap along its east edge near (1000, 750)"
    );
}

#[test]
fn missing_corner_is_a_gap() {
    // An L of three zones in a 2x2 box: the north-east quarter is uncovered.
    let e = refused_text(
        r#"
        name = "ell"
        regions = ["r"]
        [[zone]]
        name = "sw"
        bounds = [0, 0, 10, 10]
        region = "r"
        spawn = [[5, 5]]
        [[zone]]
        name = "se"
        bounds = [10, 0, 20, 10]
        region = "r"
        spawn = [[15, 5]]
        [[zone]]
        name = "nw"
        bounds = [0, 10, 10, 20]
        region = "r"
        spawn = [[5, 15]]
        "#,
    );
    assert!(
        matches!(&e, WorldMapError::Gap { zone, edge: Edge::North, at, .. }
            if zone.as_str() == "se" && *at == [15.0, 10.0]),
        "{e:?}"
    );
    assert_names(&e, &["se"]);
}

#[test]
fn hole_inside_the_world_is_a_gap() {
    // Four zones around an uncovered square [10, 10, 20, 20].
    let e = refused_text(
        r#"
        name = "ring"
        regions = ["r"]
        [[zone]]
        name = "bottom"
        bounds = [0, 0, 30, 10]
        region = "r"
        spawn = [[5, 5]]
        [[zone]]
        name = "top"
        bounds = [0, 20, 30, 30]
        region = "r"
        spawn = [[5, 25]]
        [[zone]]
        name = "left"
        bounds = [0, 10, 10, 20]
        region = "r"
        spawn = [[5, 15]]
        [[zone]]
        name = "right"
        bounds = [20, 10, 30, 20]
        region = "r"
        spawn = [[25, 15]]
        "#,
    );
    assert!(
        matches!(&e, WorldMapError::Gap { zone, edge: Edge::North, at, .. }
            if zone.as_str() == "bottom" && *at == [15.0, 10.0]),
        "{e:?}"
    );
}

#[test]
fn unknown_region_is_refused_naming_zone_and_region() {
    let e = refused("region = \"there\"", "region = \"mars\"");
    assert!(
        matches!(&e, WorldMapError::UnknownRegion { zone, region, .. }
            if zone.as_str() == "right" && region == "mars"),
        "{e:?}"
    );
    assert_names(&e, &["right", "mars"]);
}

#[test]
fn duplicate_region_is_refused() {
    let e = refused(
        "regions = [\"here\", \"there\"]",
        "regions = [\"here\", \"there\", \"here\"]",
    );
    assert!(
        matches!(&e, WorldMapError::DuplicateRegion { region, .. } if region == "here"),
        "{e:?}"
    );
    assert_names(&e, &["here"]);
}

#[test]
fn empty_regions_are_refused() {
    let e = refused("regions = [\"here\", \"there\"]", "regions = []");
    assert!(matches!(e, WorldMapError::NoRegions { .. }), "{e:?}");
    let e = refused("regions = [\"here\", \"there\"]\n", "");
    assert!(matches!(e, WorldMapError::NoRegions { .. }), "{e:?}");
    let e = refused(
        "regions = [\"here\", \"there\"]",
        "regions = [\"here\", \"there\", \"\"]",
    );
    assert!(
        matches!(e, WorldMapError::EmptyRegion { index: 3, .. }),
        "{e:?}"
    );
}

#[test]
fn zone_without_spawn_is_refused() {
    for (from, to) in [
        ("spawn = [[150, 50]]", "spawn = []"),
        ("spawn = [[150, 50]]\n", ""),
    ] {
        let e = refused(from, to);
        assert!(
            matches!(&e, WorldMapError::NoSpawn { zone, .. } if zone.as_str() == "right"),
            "{e:?}"
        );
        assert_names(&e, &["right"]);
    }
}

#[test]
fn spawn_outside_its_zone_is_refused_naming_zone_and_point() {
    for (bad, point) in [
        ("[[150, 50], [50, 50]]", [50.0, 50.0]),
        ("[[200, 50]]", [200.0, 50.0]),
        ("[[150, -1]]", [150.0, -1.0]),
        ("[[150, inf]]", [150.0, f32::INFINITY]),
    ] {
        let e = refused("[[150, 50]]", bad);
        assert!(
            matches!(&e, WorldMapError::SpawnOutside { zone, point: p, .. }
                if zone.as_str() == "right" && *p == point),
            "{bad}: {e:?}"
        );
        assert_names(&e, &["right"]);
        let shown = format!("({}, {})", point[0], point[1]);
        assert!(e.to_string().contains(&shown), "{e}");
    }
}

#[test]
fn spawn_with_one_coordinate_is_refused() {
    let e = refused("[[150, 50]]", "[[150]]");
    assert!(
        matches!(&e, WorldMapError::Syntax { line: 15, .. }),
        "{e:?}"
    );
}

#[test]
fn not_toml_at_all_is_refused_without_panicking() {
    for text in ["", "\u{0}\u{1}", "[[[", "zone = 3", "name = 1"] {
        assert!(WorldMap::parse(text, "test.toml").is_err(), "{text:?}");
    }
}
