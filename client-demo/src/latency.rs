//! Latency matrices: the round-trip time between every pair of datacenter regions, read from a
//! CSV file such as `shared/data/rtt-10-regions.csv`, for the link conditioner
//! ([`crate::conditioner`]) to give each destination the delay of its region as seen from the
//! client's home region.
//!
//! The format: lines starting with `#` are comments and blank lines are ignored; the first other
//! line is the header `region,<name>,<name>,…`; then one row per region, `<name>,<rtt>,<rtt>,…`,
//! in milliseconds (fractions allowed), in any order. The matrix must be square (a row for every
//! region of the header, a cell for every column); it need not be symmetric (measured matrices
//! rarely are, by a millisecond or two). Region names match ASCII-case-insensitively.
//!
//! Every parse error names the file, the line and the column (both 1-based) of the offending
//! cell.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The first cell of the header line.
pub const HEADER_KEYWORD: &str = "region";

/// Why a latency matrix could not be read. Every variant names the file (`origin`: the path, or
/// `<input>` for text parsed from memory), and where a cell is at fault its line and column.
#[derive(Debug, thiserror::Error)]
pub enum LatencyMatrixError {
    /// The file could not be read.
    #[error("cannot read latency matrix {path}: {source}", path = path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The text has no header line (only comments and blank lines, or nothing).
    #[error("{origin}: no header line `{HEADER_KEYWORD},<region>,…`")]
    MissingHeader {
        /// The file.
        origin: String,
    },
    /// The header's first cell is not `region`, or it names no region.
    #[error(
        "{origin}:{line}:{column}: bad header: expected `{HEADER_KEYWORD},<region>,…`, found {found:?}"
    )]
    BadHeader {
        /// The file.
        origin: String,
        /// Line of the header.
        line: usize,
        /// Column of the offending cell.
        column: usize,
        /// What was found there.
        found: String,
    },
    /// A region name is empty (two commas in a row in the header, or a row starting with one).
    #[error("{origin}:{line}:{column}: empty region name")]
    EmptyRegion {
        /// The file.
        origin: String,
        /// Line of the empty name.
        line: usize,
        /// Column of the empty name.
        column: usize,
    },
    /// A region appears twice in the header, or has two rows.
    #[error(
        "{origin}:{line}:{column}: region {region:?} appears twice (first on line {first_line}, column {first_column})"
    )]
    DuplicateRegion {
        /// The file.
        origin: String,
        /// Line of the second occurrence.
        line: usize,
        /// Column of the second occurrence.
        column: usize,
        /// The region.
        region: String,
        /// Line of the first occurrence.
        first_line: usize,
        /// Column of the first occurrence.
        first_column: usize,
    },
    /// A row names a region that is not in the header.
    #[error(
        "{origin}:{line}:{column}: row for unknown region {region:?}; the header names: {}",
        known.join(", ")
    )]
    UnknownRegion {
        /// The file.
        origin: String,
        /// Line of the row.
        line: usize,
        /// Column of the row's name (1 unless indented).
        column: usize,
        /// The region named by the row.
        region: String,
        /// The regions of the header.
        known: Vec<String>,
    },
    /// A row does not have one cell per region of the header (plus its name).
    #[error(
        "{origin}:{line}:{column}: row {region:?} has {found} RTT cells, expected {expected} (one per region of the header)"
    )]
    WrongCellCount {
        /// The file.
        origin: String,
        /// Line of the row.
        line: usize,
        /// Column of the first surplus cell, or just past the end of the line if cells are
        /// missing.
        column: usize,
        /// The region of the row.
        region: String,
        /// RTT cells expected: the number of regions.
        expected: usize,
        /// RTT cells found.
        found: usize,
    },
    /// A cell is not a number.
    #[error(
        "{origin}:{line}:{column}: RTT {from} → {to} is not a number of milliseconds: {cell:?}"
    )]
    NotANumber {
        /// The file.
        origin: String,
        /// Line of the cell.
        line: usize,
        /// Column of the cell.
        column: usize,
        /// The row's region.
        from: String,
        /// The column's region.
        to: String,
        /// The cell's text.
        cell: String,
    },
    /// A cell is a number but not a valid RTT: negative, infinite or too large.
    #[error(
        "{origin}:{line}:{column}: RTT {from} → {to} must be a finite, non-negative number of milliseconds, found {value}"
    )]
    InvalidRtt {
        /// The file.
        origin: String,
        /// Line of the cell.
        line: usize,
        /// Column of the cell.
        column: usize,
        /// The row's region.
        from: String,
        /// The column's region.
        to: String,
        /// The value found.
        value: f64,
    },
    /// A region of the header has no row.
    #[error("{origin}:{line}:{column}: region {region:?} of the header has no row")]
    MissingRow {
        /// The file.
        origin: String,
        /// Line of the header.
        line: usize,
        /// Column of the region in the header.
        column: usize,
        /// The region without a row.
        region: String,
    },
}

/// A region was asked for that the matrix does not know.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown region {region:?}; known regions: {}", known.join(", "))]
pub struct UnknownRegion {
    /// The region asked for.
    pub region: String,
    /// The regions the matrix knows, in header order.
    pub known: Vec<String>,
}

/// Round-trip times between regions, from a matrix file.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyMatrix {
    /// Region names, in header order.
    regions: Vec<String>,
    /// `rtt[from][to]`, indices into `regions`.
    rtt: Vec<Vec<Duration>>,
}

/// A cell of a line: its trimmed text and its 1-based column.
struct Cell<'a> {
    text: &'a str,
    column: usize,
}

/// Splits a line on commas, trimming each cell and noting the column where its text starts.
fn cells(line: &str) -> Vec<Cell<'_>> {
    let mut out = Vec::new();
    let mut start = 0;
    for piece in line.split(',') {
        let leading = piece.len() - piece.trim_start().len();
        out.push(Cell {
            text: piece.trim(),
            column: line[..start + leading].chars().count() + 1,
        });
        start += piece.len() + 1;
    }
    out
}

impl LatencyMatrix {
    /// Parses matrix text; errors name the origin `<input>`.
    pub fn parse(text: &str) -> Result<Self, LatencyMatrixError> {
        Self::parse_named(text, "<input>")
    }

    /// Reads and parses a matrix file; errors name `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, LatencyMatrixError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| LatencyMatrixError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse_named(&text, &path.display().to_string())
    }

    /// Parses matrix text; errors name `origin` (a file name, usually).
    pub fn parse_named(text: &str, origin: &str) -> Result<Self, LatencyMatrixError> {
        let origin = origin.to_owned();
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
            .filter(|(_, l)| {
                let t = l.trim();
                !t.is_empty() && !t.starts_with('#')
            });

        let Some((header_line, header)) = lines.next() else {
            return Err(LatencyMatrixError::MissingHeader { origin });
        };
        let header_cells = cells(header);
        let first = &header_cells[0];
        if !first.text.eq_ignore_ascii_case(HEADER_KEYWORD) || header_cells.len() < 2 {
            return Err(LatencyMatrixError::BadHeader {
                origin,
                line: header_line,
                column: first.column,
                found: header.trim().to_owned(),
            });
        }
        // Region names and where the header names them.
        let mut regions: Vec<String> = Vec::new();
        let mut columns: Vec<usize> = Vec::new();
        for cell in &header_cells[1..] {
            if cell.text.is_empty() {
                return Err(LatencyMatrixError::EmptyRegion {
                    origin,
                    line: header_line,
                    column: cell.column,
                });
            }
            if let Some(i) = position(&regions, cell.text) {
                return Err(LatencyMatrixError::DuplicateRegion {
                    origin,
                    line: header_line,
                    column: cell.column,
                    region: cell.text.to_owned(),
                    first_line: header_line,
                    first_column: columns[i],
                });
            }
            regions.push(cell.text.to_owned());
            columns.push(cell.column);
        }

        let n = regions.len();
        let mut rtt: Vec<Option<Vec<Duration>>> = vec![None; n];
        // Where each region's row was found, for duplicate errors.
        let mut row_at: Vec<(usize, usize)> = vec![(0, 0); n];
        for (line, text) in lines {
            let row = cells(text);
            let name = &row[0];
            if name.text.is_empty() {
                return Err(LatencyMatrixError::EmptyRegion {
                    origin,
                    line,
                    column: name.column,
                });
            }
            let Some(from) = position(&regions, name.text) else {
                return Err(LatencyMatrixError::UnknownRegion {
                    origin,
                    line,
                    column: name.column,
                    region: name.text.to_owned(),
                    known: regions,
                });
            };
            if rtt[from].is_some() {
                let (first_line, first_column) = row_at[from];
                return Err(LatencyMatrixError::DuplicateRegion {
                    origin,
                    line,
                    column: name.column,
                    region: name.text.to_owned(),
                    first_line,
                    first_column,
                });
            }
            let found = row.len() - 1;
            if found != n {
                let column = if found > n {
                    row[n + 1].column
                } else {
                    text.chars().count() + 1
                };
                return Err(LatencyMatrixError::WrongCellCount {
                    origin,
                    line,
                    column,
                    region: regions[from].clone(),
                    expected: n,
                    found,
                });
            }
            let mut values = Vec::with_capacity(n);
            for (to, cell) in row[1..].iter().enumerate() {
                let ms: f64 = cell
                    .text
                    .parse()
                    .map_err(|_| LatencyMatrixError::NotANumber {
                        origin: origin.clone(),
                        line,
                        column: cell.column,
                        from: regions[from].clone(),
                        to: regions[to].clone(),
                        cell: cell.text.to_owned(),
                    })?;
                let rtt = Duration::try_from_secs_f64(ms / 1000.0).map_err(|_| {
                    LatencyMatrixError::InvalidRtt {
                        origin: origin.clone(),
                        line,
                        column: cell.column,
                        from: regions[from].clone(),
                        to: regions[to].clone(),
                        value: ms,
                    }
                })?;
                values.push(rtt);
            }
            rtt[from] = Some(values);
            row_at[from] = (line, name.column);
        }

        let mut full = Vec::with_capacity(n);
        for (i, row) in rtt.into_iter().enumerate() {
            match row {
                Some(row) => full.push(row),
                None => {
                    return Err(LatencyMatrixError::MissingRow {
                        origin,
                        line: header_line,
                        column: columns[i],
                        region: regions[i].clone(),
                    });
                }
            }
        }
        Ok(Self { regions, rtt: full })
    }

    /// The region names, in the header's order and spelling.
    pub fn regions(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.regions.iter().map(String::as_str)
    }

    /// The region named `name` (ASCII-case-insensitively), in the matrix's spelling.
    pub fn region(&self, name: &str) -> Result<&str, UnknownRegion> {
        self.index(name).map(|i| self.regions[i].as_str())
    }

    /// The round-trip time from region `from` to region `to` (the cell of row `from`, column
    /// `to`), or `None` if either region is unknown.
    pub fn rtt(&self, from: &str, to: &str) -> Option<Duration> {
        let from = position(&self.regions, from)?;
        let to = position(&self.regions, to)?;
        Some(self.rtt[from][to])
    }

    /// [`Self::rtt`], with an error naming the unknown region and listing the known ones.
    pub fn try_rtt(&self, from: &str, to: &str) -> Result<Duration, UnknownRegion> {
        let from = self.index(from)?;
        let to = self.index(to)?;
        Ok(self.rtt[from][to])
    }

    fn index(&self, name: &str) -> Result<usize, UnknownRegion> {
        position(&self.regions, name).ok_or_else(|| UnknownRegion {
            region: name.to_owned(),
            known: self.regions.clone(),
        })
    }
}

impl fmt::Display for LatencyMatrix {
    /// Writes the matrix back in its file format (milliseconds).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{HEADER_KEYWORD}")?;
        for r in &self.regions {
            write!(f, ",{r}")?;
        }
        writeln!(f)?;
        for (r, row) in self.regions.iter().zip(&self.rtt) {
            write!(f, "{r}")?;
            for v in row {
                write!(f, ",{}", v.as_secs_f64() * 1000.0)?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

fn position(regions: &[String], name: &str) -> Option<usize> {
    regions.iter().position(|r| r.eq_ignore_ascii_case(name))
}

#[cfg(test)]
#[expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]
mod tests {
    use super::*;

    const SMALL: &str = "\
# comment
  # indented comment

region,a,b,c
a,1,10,20.5
b,10,2,30
c,21,30,3
";

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn parses_small_matrix() {
        let m = LatencyMatrix::parse(SMALL).unwrap();
        assert_eq!(m.regions().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(m.rtt("a", "b"), Some(ms(10)));
        assert_eq!(m.rtt("a", "c"), Some(Duration::from_micros(20_500)));
        assert_eq!(m.rtt("c", "a"), Some(ms(21)));
        assert_eq!(m.rtt("B", "C"), Some(ms(30)), "case-insensitive");
        assert_eq!(m.rtt("a", "zz"), None);
        assert_eq!(m.region("C").unwrap(), "c");
    }

    #[test]
    fn rows_in_any_order_crlf_and_spaces() {
        let text = "region, a , b\r\n b , 5 , 6\r\na,1,5\r\n";
        let m = LatencyMatrix::parse(text).unwrap();
        assert_eq!(m.rtt("b", "a"), Some(ms(5)));
        assert_eq!(m.rtt("b", "b"), Some(ms(6)));
    }

    #[test]
    fn display_round_trips() {
        let m = LatencyMatrix::parse(SMALL).unwrap();
        let again = LatencyMatrix::parse(&m.to_string()).unwrap();
        assert_eq!(m, again);
    }

    #[test]
    fn loads_the_shared_matrix() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/data/rtt-10-regions.csv"
        );
        let m = LatencyMatrix::load(path).unwrap();
        assert_eq!(m.regions().len(), 10);
        assert_eq!(m.rtt("london", "frankfurt"), Some(ms(12)));
        assert_eq!(m.rtt("london", "tokyo"), Some(ms(247)));
        assert_eq!(m.rtt("tokyo", "london"), Some(ms(246)));
        assert_eq!(m.rtt("sao-paulo", "sydney"), Some(ms(326)));
    }

    #[test]
    fn unknown_region_lists_known() {
        let m = LatencyMatrix::parse(SMALL).unwrap();
        let err = m.try_rtt("a", "mars").unwrap_err();
        assert_eq!(err.region, "mars");
        assert_eq!(err.known, ["a", "b", "c"]);
        assert_eq!(
            err.to_string(),
            "unknown region \"mars\"; known regions: a, b, c"
        );
        assert!(m.region("venus").is_err());
    }

    #[test]
    fn read_error_names_the_file() {
        let err = LatencyMatrix::load("/nonexistent/matrix.csv").unwrap_err();
        assert!(
            matches!(&err, LatencyMatrixError::Read { path, .. } if path == Path::new("/nonexistent/matrix.csv"))
        );
        assert!(err.to_string().contains("/nonexistent/matrix.csv"), "{err}");
    }

    #[test]
    fn missing_header() {
        let err = LatencyMatrix::parse_named("# only\n\n", "m.csv").unwrap_err();
        assert!(
            matches!(&err, LatencyMatrixError::MissingHeader { origin } if origin == "m.csv"),
            "{err:?}"
        );
    }

    #[test]
    fn bad_header() {
        let err = LatencyMatrix::parse_named("# c\nfrom,a,b\n", "m.csv").unwrap_err();
        match &err {
            LatencyMatrixError::BadHeader {
                origin,
                line,
                column,
                found,
            } => {
                assert_eq!((origin.as_str(), *line, *column), ("m.csv", 2, 1));
                assert_eq!(found, "from,a,b");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            err.to_string().starts_with("m.csv:2:1: bad header"),
            "{err}"
        );
        let err = LatencyMatrix::parse("region\n").unwrap_err();
        assert!(matches!(err, LatencyMatrixError::BadHeader { line: 1, .. }));
    }

    #[test]
    fn empty_region_name() {
        let err = LatencyMatrix::parse("region,a,,b\n").unwrap_err();
        assert!(
            matches!(
                err,
                LatencyMatrixError::EmptyRegion {
                    line: 1,
                    column: 10,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = LatencyMatrix::parse("region,a\n,1\n").unwrap_err();
        assert!(
            matches!(
                err,
                LatencyMatrixError::EmptyRegion {
                    line: 2,
                    column: 1,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn duplicate_region_in_header() {
        let err = LatencyMatrix::parse("region,a,b,A\n").unwrap_err();
        match err {
            LatencyMatrixError::DuplicateRegion {
                line,
                column,
                region,
                first_line,
                first_column,
                ..
            } => {
                assert_eq!((line, column), (1, 12));
                assert_eq!(region, "A");
                assert_eq!((first_line, first_column), (1, 8));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn duplicate_row() {
        let err = LatencyMatrix::parse("region,a,b\na,1,2\nb,2,1\n\na,1,2\n").unwrap_err();
        match &err {
            LatencyMatrixError::DuplicateRegion {
                line,
                column,
                region,
                first_line,
                first_column,
                ..
            } => {
                assert_eq!((*line, *column), (5, 1));
                assert_eq!(region, "a");
                assert_eq!((*first_line, *first_column), (2, 1));
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().starts_with("<input>:5:1:"), "{err}");
    }

    #[test]
    fn unknown_row_region() {
        let err = LatencyMatrix::parse_named("region,a,b\na,1,2\n  c,1,2\n", "m.csv").unwrap_err();
        match &err {
            LatencyMatrixError::UnknownRegion {
                line,
                column,
                region,
                known,
                ..
            } => {
                assert_eq!((*line, *column), (3, 3));
                assert_eq!(region, "c");
                assert_eq!(known, &["a", "b"]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "m.csv:3:3: row for unknown region \"c\"; the header names: a, b"
        );
    }

    #[test]
    fn too_many_cells() {
        let err = LatencyMatrix::parse("region,a,b\na,1,2,3\n").unwrap_err();
        match err {
            LatencyMatrixError::WrongCellCount {
                line,
                column,
                region,
                expected,
                found,
                ..
            } => {
                assert_eq!((line, column), (2, 7));
                assert_eq!(region, "a");
                assert_eq!((expected, found), (2, 3));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn too_few_cells() {
        let err = LatencyMatrix::parse("region,a,b\na,1,2\nb,1\n").unwrap_err();
        match err {
            LatencyMatrixError::WrongCellCount {
                line,
                column,
                expected,
                found,
                ..
            } => {
                assert_eq!((line, column), (3, 4));
                assert_eq!((expected, found), (2, 1));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn not_a_number() {
        let err = LatencyMatrix::parse_named("region,a,b\na,1,2\nb,1, 2ms\n", "m.csv").unwrap_err();
        match &err {
            LatencyMatrixError::NotANumber {
                line,
                column,
                from,
                to,
                cell,
                ..
            } => {
                assert_eq!((*line, *column), (3, 6));
                assert_eq!((from.as_str(), to.as_str()), ("b", "b"));
                assert_eq!(cell, "2ms");
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().starts_with("m.csv:3:6: RTT b → b"), "{err}");
        let err = LatencyMatrix::parse("region,a\na,\n").unwrap_err();
        assert!(
            matches!(
                err,
                LatencyMatrixError::NotANumber {
                    line: 2,
                    column: 3,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn negative_or_infinite_value() {
        let err = LatencyMatrix::parse("region,a,b\na,1,-2\nb,2,1\n").unwrap_err();
        match err {
            LatencyMatrixError::InvalidRtt {
                line,
                column,
                from,
                to,
                value,
                ..
            } => {
                assert_eq!((line, column), (2, 5));
                assert_eq!((from.as_str(), to.as_str()), ("a", "b"));
                assert_eq!(value, -2.0);
            }
            other => panic!("{other:?}"),
        }
        for bad in ["inf", "NaN", "1e300"] {
            let err = LatencyMatrix::parse(&format!("region,a\na,{bad}\n")).unwrap_err();
            assert!(
                matches!(
                    err,
                    LatencyMatrixError::InvalidRtt {
                        line: 2,
                        column: 3,
                        ..
                    }
                ),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn missing_row() {
        let err = LatencyMatrix::parse_named("# x\nregion,a,b,c\na,1,2,3\nc,1,2,3\n", "m.csv")
            .unwrap_err();
        match &err {
            LatencyMatrixError::MissingRow {
                line,
                column,
                region,
                ..
            } => {
                assert_eq!((*line, *column), (2, 10));
                assert_eq!(region, "b");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "m.csv:2:10: region \"b\" of the header has no row"
        );
    }
}

/// The matrix shipped with Meridian (`deploy/latency/rtt-10-regions.csv`: average round trips
/// between 10 cloud regions, source in the file), for `meridian dev` and tests.
pub const BUILTIN_MATRIX: &str = include_str!("../../deploy/latency/rtt-10-regions.csv");

/// [`BUILTIN_MATRIX`], parsed.
pub fn builtin_matrix() -> LatencyMatrix {
    LatencyMatrix::parse_named(BUILTIN_MATRIX, "deploy/latency/rtt-10-regions.csv")
        .expect("invariant: the shipped matrix parses (tested)")
}

#[cfg(test)]
mod builtin_tests {
    #[test]
    fn the_shipped_matrix_parses() {
        let m = super::builtin_matrix();
        assert_eq!(m.regions().len(), 10);
        assert_eq!(
            m.rtt("london", "frankfurt"),
            Some(std::time::Duration::from_millis(12))
        );
    }
}
