//! The bots' HTML report: rendered from a fixed report, it is well-formed, has one chart per
//! plot with its title and axis labels, and a headless browser (Debian's `chromium`) shows the
//! charts in the page it renders.

use meridian_client::report::{
    Bucket, Handoffs, Histograms, JoinMs, Report, RttMs, ShardPoint, ShardReport, TimelinePoint,
};
use meridian_client::report_html::{self, PLOT_TITLES};
use std::path::Path;
use std::process::Command;

fn buckets(counts: &[u64]) -> Vec<Bucket> {
    let les = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0];
    les.iter()
        .zip(counts)
        .map(|(le, count)| Bucket {
            le: *le,
            count: *count,
        })
        .collect()
}

/// A ten-second run of two shards.
fn fixed_report() -> Report {
    let timeline = (1..=10)
        .map(|s| TimelinePoint {
            t_s: f64::from(s),
            playing: 20,
            snapshots_per_s: 28.0 + f64::from(s % 3),
            down_bytes_per_s: 9000.0 + 100.0 * f64::from(s),
            up_bytes_per_s: 1500.0,
            rtt_ms_p50: 12.0,
            handoffs: s * 2,
            errors: 0,
        })
        .collect();
    let shard_timeline = (1..=10)
        .flat_map(|s| {
            ["eu-1", "us-1"].map(|shard| ShardPoint {
                t_s: f64::from(s),
                shard: shard.to_owned(),
                tick_ms_p50: 0.8,
                tick_ms_p99: 1.9 + f64::from(s) / 10.0,
                players: 10,
            })
        })
        .collect();
    Report {
        schema: 1,
        bots: 20,
        duration_s: 10.0,
        tick_hz: 30,
        joined: 20,
        join_ms: JoinMs {
            p50: 40.0,
            p90: 80.0,
            p99: 120.0,
            max: 150.0,
        },
        rtt_ms: RttMs {
            p50: 12.0,
            p99: 30.0,
        },
        handoffs: Handoffs {
            count: 20,
            ms_p50: 60.0,
            ms_p99: 150.0,
            ms_max: 180.0,
            ..Handoffs::default()
        },
        shards: vec![ShardReport {
            id: "eu-1".to_owned(),
            zone: "west".to_owned(),
            players: 10,
            ..ShardReport::default()
        }],
        timeline,
        histograms: Histograms {
            join_ms: buckets(&[0, 0, 0, 0, 2, 12, 5, 1]),
            rtt_ms: buckets(&[0, 0, 10, 60, 120, 8]),
            blackout_ms: buckets(&[0, 0, 0, 0, 0, 4, 12, 4]),
        },
        shard_timeline,
        ..Report::default()
    }
}

fn write_fixed(dir: &Path) -> std::path::PathBuf {
    let json = dir.join("run.json");
    let html = report_html::write_html(&fixed_report(), &json).expect("page written");
    assert_eq!(html, dir.join("run.html"));
    html
}

#[test]
fn the_page_is_well_formed_with_one_titled_chart_per_plot() {
    let page = report_html::render_html(&fixed_report()).expect("page");
    // Written as XHTML-compatible markup: an XML parser reads it whole.
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    let doc = roxmltree::Document::parse_with_options(&page, options).expect("well-formed");
    let figures: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("figure"))
        .collect();
    assert_eq!(figures.len(), PLOT_TITLES.len());
    for (figure, title) in figures.iter().zip(PLOT_TITLES) {
        let caption = figure
            .descendants()
            .find(|n| n.has_tag_name("figcaption"))
            .and_then(|n| n.text())
            .unwrap_or_default();
        assert_eq!(caption, title);
        let svgs: Vec<_> = figure
            .descendants()
            .filter(|n| n.tag_name().name() == "svg")
            .collect();
        assert_eq!(svgs.len(), 1, "one chart in {title}");
        let texts: Vec<&str> = figure
            .descendants()
            .filter(|n| n.tag_name().name() == "text")
            .filter_map(|n| n.text())
            .map(str::trim)
            .collect();
        assert!(texts.contains(&title), "{title}: chart title in {texts:?}");
        assert!(
            texts.iter().any(|t| t.contains("ms") || t.contains("/s")),
            "{title}: a unit on an axis in {texts:?}"
        );
        let marks = figure
            .descendants()
            .filter(|n| matches!(n.tag_name().name(), "rect" | "polyline" | "path"))
            .count();
        assert!(marks > 1, "{title}: data drawn");
    }
    let axis_of = |i: usize| {
        figures[i]
            .descendants()
            .filter(|n| n.tag_name().name() == "text")
            .filter_map(|n| n.text())
            .map(str::trim)
            .collect::<Vec<_>>()
    };
    assert!(axis_of(2).contains(&"time since the bots started (s)"));
    assert!(axis_of(0).contains(&"count"));
    assert!(axis_of(5).contains(&"eu-1 p99") && axis_of(5).contains(&"us-1 p99"));
    assert!(!page.contains("(no data)"), "every chart has data");
    // Self-contained: nothing fetched.
    for outside in ["<script src", "<link", "http://", "https://"] {
        let bad = page
            .match_indices(outside)
            .any(|(i, _)| !page[..i].ends_with("xmlns=\""));
        assert!(!bad, "{outside} in the page");
    }
    assert!(page.contains("<td>20 / 0</td>"), "summary table");
}

#[test]
fn a_headless_browser_shows_every_chart() {
    let browser = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .unwrap_or_else(|| {
            panic!(
                "no chromium on this machine: run scripts/test.sh (it installs it), or \
                 `apt-get install -y chromium`"
            )
        });
    let dir = tempfile::tempdir().expect("temp dir");
    let html = write_fixed(dir.path());
    let profile = dir.path().join("profile");
    let out = Command::new(browser)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        dom.matches("<svg").count(),
        PLOT_TITLES.len(),
        "charts in the rendered page:\n{dom}"
    );
    for title in PLOT_TITLES {
        assert!(
            dom.matches(title).count() >= 2,
            "{title}: caption and chart title in the rendered page"
        );
    }
    // Each chart drew its data: bars (rect) or lines (polyline).
    for chunk in dom.split("<svg").skip(1) {
        let chart = chunk.split("</svg>").next().unwrap_or_default();
        assert!(
            chart.matches("<rect").count() > 2 || chart.contains("<polyline"),
            "an empty chart in the rendered page"
        );
    }
}
