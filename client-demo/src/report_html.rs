//! The run report as one self-contained HTML page: the summary table and six charts (join time
//! and round-trip histograms, snapshots/s and bytes/s per bot over time, handoff blackout
//! histogram, tick time per shard over time), drawn as inline SVG by `plotters`. The page
//! loads nothing: it opens from disk with no network.

use crate::report::{Bucket, Report};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The charts' titles, in the order of the page.
pub const PLOT_TITLES: [&str; 6] = [
    "Join time",
    "Round trip",
    "Snapshots per second per bot",
    "Bytes per second per bot",
    "Handoff blackout",
    "Tick time per shard",
];

/// Each chart's size in pixels.
const CHART_SIZE: (u32, u32) = (720, 360);

/// Why the HTML report could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum ReportHtmlError {
    /// A chart could not be drawn.
    #[error("cannot draw the chart {plot:?}: {detail}")]
    Draw {
        /// The chart's title.
        plot: &'static str,
        /// What the chart library said.
        detail: String,
    },
    /// The JSON report's path already ends in `.html`: the page would overwrite it.
    #[error("the report {path} ends in .html: the HTML page would overwrite it", path = path.display())]
    SamePath {
        /// The JSON report's path.
        path: PathBuf,
    },
    /// The page could not be written.
    #[error("cannot write the HTML report {path}: {source}", path = path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Where the page of the JSON report at `json` goes: the same path with the `.html` extension
/// (`r.json` → `r.html`, `r` → `r.html`). Refused when that is `json` itself.
pub fn html_path(json: &Path) -> Result<PathBuf, ReportHtmlError> {
    let html = json.with_extension("html");
    if html == json {
        return Err(ReportHtmlError::SamePath {
            path: json.to_owned(),
        });
    }
    Ok(html)
}

/// Writes the page of `report` next to the JSON report at `json` ([`html_path`]); returns
/// the page's path.
pub fn write_html(report: &Report, json: &Path) -> Result<PathBuf, ReportHtmlError> {
    let path = html_path(json)?;
    let page = render_html(report)?;
    std::fs::write(&path, page).map_err(|source| ReportHtmlError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// The whole page of `report`. Values that are not finite are left out of the charts.
pub fn render_html(report: &Report) -> Result<String, ReportHtmlError> {
    let [join_t, rtt_t, snaps_t, bytes_t, blackout_t, tick_t] = PLOT_TITLES;
    let t = &report.timeline;
    let charts = [
        (
            join_t,
            histogram_svg(
                join_t,
                "join time (ms, bucket upper bound)",
                &report.histograms.join_ms,
            )?,
        ),
        (
            rtt_t,
            histogram_svg(
                rtt_t,
                "round trip (ms, bucket upper bound)",
                &report.histograms.rtt_ms,
            )?,
        ),
        (
            snaps_t,
            lines_svg(
                snaps_t,
                "snapshots/s",
                &[Line {
                    label: "snapshots/s, mean per bot in play".to_owned(),
                    points: t.iter().map(|p| (p.t_s, p.snapshots_per_s)).collect(),
                }],
            )?,
        ),
        (
            bytes_t,
            lines_svg(
                bytes_t,
                "bytes/s",
                &[
                    Line {
                        label: "down, mean per bot in play".to_owned(),
                        points: t.iter().map(|p| (p.t_s, p.down_bytes_per_s)).collect(),
                    },
                    Line {
                        label: "up, mean per bot in play".to_owned(),
                        points: t.iter().map(|p| (p.t_s, p.up_bytes_per_s)).collect(),
                    },
                ],
            )?,
        ),
        (
            blackout_t,
            histogram_svg(
                blackout_t,
                "blackout (ms, bucket upper bound)",
                &report.histograms.blackout_ms,
            )?,
        ),
        (
            tick_t,
            lines_svg(tick_t, "tick time (ms)", &shard_lines(report))?,
        ),
    ];
    let mut page = String::new();
    page.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n\
         <title>Meridian run report</title>\n<style>\n\
         body { font-family: sans-serif; margin: 2em; }\n\
         table { border-collapse: collapse; margin-bottom: 2em; }\n\
         td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }\n\
         figure { margin: 0 0 2em 0; }\n\
         figcaption { font-weight: bold; margin-bottom: 0.3em; }\n\
         </style>\n</head>\n<body>\n<h1>Meridian run report</h1>\n",
    );
    summary_table(&mut page, report);
    for (i, (title, svg)) in charts.iter().enumerate() {
        let _ = write!(
            page,
            "<figure class=\"plot\" id=\"plot-{i}\">\n<figcaption>{}</figcaption>\n{svg}\n</figure>\n",
            escape(title)
        );
    }
    page.push_str("</body>\n</html>\n");
    Ok(page)
}

/// One series of a line chart.
struct Line {
    label: String,
    points: Vec<(f64, f64)>,
}

/// Tick time p50 and p99 of each shard, over time.
fn shard_lines(report: &Report) -> Vec<Line> {
    let mut shards: Vec<&str> = report
        .shard_timeline
        .iter()
        .map(|p| p.shard.as_str())
        .collect();
    shards.sort_unstable();
    shards.dedup();
    let mut lines = Vec::new();
    for shard in shards {
        let of = || {
            report
                .shard_timeline
                .iter()
                .filter(move |p| p.shard == shard)
        };
        lines.push(Line {
            label: format!("{shard} p50"),
            points: of().map(|p| (p.t_s, p.tick_ms_p50)).collect(),
        });
        lines.push(Line {
            label: format!("{shard} p99"),
            points: of().map(|p| (p.t_s, p.tick_ms_p99)).collect(),
        });
    }
    lines
}

fn draw_error(plot: &'static str) -> impl Fn(String) -> ReportHtmlError {
    move |detail| ReportHtmlError::Draw { plot, detail }
}

/// A bar per bucket, labelled by its upper bound.
fn histogram_svg(
    title: &'static str,
    x_desc: &str,
    buckets: &[Bucket],
) -> Result<String, ReportHtmlError> {
    let err = draw_error(title);
    let none = [Bucket {
        le: crate::report::FIRST_BUCKET_LE,
        count: 0,
    }];
    let buckets = if buckets.is_empty() {
        &none[..]
    } else {
        buckets
    };
    let n = u32::try_from(buckets.len()).unwrap_or(u32::MAX);
    let top = buckets.iter().map(|b| b.count).max().unwrap_or(0).max(1);
    let caption = if buckets.iter().all(|b| b.count == 0) {
        format!("{title} (no data)")
    } else {
        title.to_owned()
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, CHART_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(56)
            .build_cartesian_2d((0..n).into_segmented(), 0..top + top / 10 + 1)
            .map_err(|e| err(e.to_string()))?;
        let label = |v: &SegmentValue<u32>| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => buckets
                .get(*i as usize)
                .map(|b| format!("{}", b.le))
                .unwrap_or_default(),
            SegmentValue::Last => String::new(),
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(buckets.len())
            .x_label_formatter(&label)
            .x_desc(x_desc)
            .y_desc("count")
            .draw()
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(
                Histogram::vertical(&chart)
                    .style(BLUE.mix(0.7).filled())
                    .margin(3)
                    .data(buckets.iter().zip(0u32..).map(|(b, i)| (i, b.count))),
            )
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(svg)
}

/// Lines over the run's seconds, with a legend.
fn lines_svg(title: &'static str, y_desc: &str, lines: &[Line]) -> Result<String, ReportHtmlError> {
    let err = draw_error(title);
    let finite = |l: &Line| -> Vec<(f64, f64)> {
        l.points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect()
    };
    let series: Vec<(&str, Vec<(f64, f64)>)> = lines
        .iter()
        .map(|l| (l.label.as_str(), finite(l)))
        .collect();
    let all = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x_max, mut y_max) = (1.0f64, 1.0f64);
    let mut any = false;
    for (x, y) in all {
        any = true;
        x_max = x_max.max(*x);
        y_max = y_max.max(*y);
    }
    let caption = if any {
        title.to_owned()
    } else {
        format!("{title} (no data)")
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, CHART_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max * 1.1)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("time since the bots started (s)")
            .y_desc(y_desc)
            .draw()
            .map_err(|e| err(e.to_string()))?;
        for (i, (label, points)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(|e| err(e.to_string()))?
                .label(*label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        if !series.is_empty() {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| err(e.to_string()))?;
        }
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(svg)
}

/// The run's headline figures.
fn summary_table(page: &mut String, r: &Report) {
    let mut rows: Vec<(String, String)> = vec![
        ("bots".into(), r.bots.to_string()),
        ("duration (s)".into(), format!("{:.1}", r.duration_s)),
        ("tick rate (Hz)".into(), r.tick_hz.to_string()),
        (
            "joined / join failures".into(),
            format!("{} / {}", r.joined, r.join_failures),
        ),
        (
            "join ms p50 / p90 / p99 / max".into(),
            format!(
                "{:.1} / {:.1} / {:.1} / {:.1}",
                r.join_ms.p50, r.join_ms.p90, r.join_ms.p99, r.join_ms.max
            ),
        ),
        (
            "round trip ms p50 / p99".into(),
            format!("{:.1} / {:.1}", r.rtt_ms.p50, r.rtt_ms.p99),
        ),
        (
            "snapshots/s per bot mean / min".into(),
            format!(
                "{:.1} / {:.1}",
                r.snapshots_per_s.mean, r.snapshots_per_s.min
            ),
        ),
        (
            "bytes/s down per bot mean / max".into(),
            format!(
                "{:.0} / {:.0}",
                r.down_bytes_per_s.mean, r.down_bytes_per_s.max
            ),
        ),
        (
            "bytes/s up per bot mean".into(),
            format!("{:.0}", r.up_bytes_per_s.mean),
        ),
        (
            "handoffs / failed".into(),
            format!("{} / {}", r.handoffs.count, r.handoffs.failed),
        ),
        (
            "blackout ms p50 / p99 / max".into(),
            format!(
                "{:.1} / {:.1} / {:.1}",
                r.handoffs.ms_p50, r.handoffs.ms_p99, r.handoffs.ms_max
            ),
        ),
        ("disconnects".into(), r.disconnects.to_string()),
        (
            "reconnects / failed".into(),
            format!("{} / {}", r.reconnects.count, r.reconnects.failed),
        ),
        (
            "time out ms p50 / p99 / max".into(),
            format!(
                "{:.1} / {:.1} / {:.1}",
                r.reconnects.out_ms_p50, r.reconnects.out_ms_p99, r.reconnects.out_ms_max
            ),
        ),
        ("score decreases".into(), r.score_decreases.to_string()),
        (
            "routing optimal / total".into(),
            format!("{} / {}", r.routing.optimal, r.routing.total),
        ),
    ];
    for (kind, n) in &r.errors {
        rows.push((format!("errors: {kind}"), n.to_string()));
    }
    for s in &r.shards {
        rows.push((
            format!("shard {} ({})", s.id, s.zone),
            format!(
                "{} players, tick ms p50 {:.2} p99 {:.2} max {:.2}, overruns {}",
                s.players, s.tick_ms_p50, s.tick_ms_p99, s.tick_ms_max, s.overruns
            ),
        ));
    }
    page.push_str("<table class=\"summary\">\n");
    for (k, v) in rows {
        let _ = writeln!(
            page,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(&k),
            escape(&v)
        );
    }
    page.push_str("</table>\n");
}

/// `s` as HTML text.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{ShardPoint, ShardReport, TimelinePoint};

    #[test]
    fn the_page_goes_next_to_the_json() {
        assert_eq!(
            html_path(Path::new("out/r.json")).expect("json"),
            Path::new("out/r.html")
        );
        assert_eq!(
            html_path(Path::new("r")).expect("no extension"),
            Path::new("r.html")
        );
        let err = html_path(Path::new("r.html")).expect_err("would overwrite");
        assert!(
            matches!(&err, ReportHtmlError::SamePath { path } if path == Path::new("r.html")),
            "{err:?}"
        );
    }

    #[test]
    fn text_from_the_run_is_escaped() {
        assert_eq!(escape("<a & 'b\">"), "&lt;a &amp; &#39;b&quot;&gt;");
        let mut r = Report::default();
        r.errors.insert("<script>".to_owned(), 1);
        r.shards.push(ShardReport {
            id: "a&b".to_owned(),
            ..ShardReport::default()
        });
        let page = render_html(&r).expect("page");
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;") && page.contains("a&amp;b"));
    }

    #[test]
    fn an_empty_report_still_has_every_chart() {
        let page = render_html(&Report::default()).expect("page");
        assert_eq!(page.matches("<svg").count(), PLOT_TITLES.len());
        assert_eq!(page.matches("(no data)").count(), PLOT_TITLES.len());
    }

    #[test]
    fn values_that_are_not_finite_are_left_out() {
        let r = Report {
            timeline: vec![
                TimelinePoint {
                    t_s: 1.0,
                    snapshots_per_s: f64::NAN,
                    down_bytes_per_s: f64::INFINITY,
                    ..TimelinePoint::default()
                },
                TimelinePoint {
                    t_s: 2.0,
                    snapshots_per_s: 30.0,
                    ..TimelinePoint::default()
                },
            ],
            shard_timeline: vec![ShardPoint {
                t_s: f64::NAN,
                shard: "s".to_owned(),
                ..ShardPoint::default()
            }],
            ..Report::default()
        };
        let page = render_html(&r).expect("page");
        assert_eq!(page.matches("<svg").count(), PLOT_TITLES.len());
        assert!(!page.contains("NaN") && !page.contains("inf"), "{page}");
    }

    #[test]
    fn a_page_that_cannot_be_written_names_its_file() {
        let err = write_html(&Report::default(), Path::new("/nonexistent-dir/r.json"))
            .expect_err("no such directory");
        assert!(
            matches!(&err, ReportHtmlError::Write { path, .. } if path == Path::new("/nonexistent-dir/r.html")),
            "{err:?}"
        );
    }
}
