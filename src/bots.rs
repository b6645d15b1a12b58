//! `meridian bots`: load-testing bots against a running lobby (a cluster, or `meridian dev`),
//! all on one tokio runtime and a few UDP sockets, ramping up, playing a scenario for a
//! duration, then writing the run [`Report`] (the same JSON as `meridian dev`).
//!
//! Before the bots start, the lobby is reached (a bounded number of tries,
//! [`bots::SURVEY_RETRY`]) and asked which shards it offers: a run that conditions its links
//! (`geo`, or `--latency-matrix`) places each shard in the region the lobby reports for it.
//! While they run, a progress bar on stderr (one plain line a second when stderr is not a
//! terminal) shows bots joined and playing, the median round trip, bytes per second and
//! errors. Ctrl-C (or SIGTERM) stops the run cleanly: the bots leave, and the report is written
//! all the same; it is written too when the lobby cannot be reached, every bot counted a join
//! failure.

use crate::dev_world::{GEO_JITTER, GEO_LOSS};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use meridian_client::bots::{
    self, BotsError, BotsPlan, BotsProgress, SURVEY_RETRY, WorldLayout, bot_name,
};
use meridian_client::config::{
    BotsConfig, ConfigError, DurationError, parse_cert_sha256, parse_regions,
};
use meridian_client::latency::{self, LatencyMatrix, LatencyMatrixError};
use meridian_client::report::{Report, ShardPoint};
use meridian_client::report_html::{self, ReportHtmlError};
use meridian_cluster::world::{WorldMap, WorldMapError};
use meridian_protocol::quic::QuicConfig;
use std::future::Future;
use std::io::IsTerminal as _;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::info;

/// Why `meridian bots` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum BotsRoleError {
    /// `--insecure-dev`: the lobby's certificate could not be read (no pin to fall back on).
    #[error(
        "--insecure-dev: cannot read the certificate of the lobby at {lobby}: {detail} \
         (without --insecure-dev pass --cert-sha256 HEX)"
    )]
    InsecureProbe {
        /// The lobby.
        lobby: SocketAddr,
        /// What went wrong.
        detail: String,
    },
    /// A setting the configuration check lets through but the run cannot use.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The duration cannot be read.
    #[error(transparent)]
    Duration(#[from] DurationError),
    /// The latency matrix file cannot be read; the message names the file, line and column.
    #[error(transparent)]
    Matrix(#[from] LatencyMatrixError),
    /// The world map cannot be read; the message names the file and the zone.
    #[error(transparent)]
    World(#[from] WorldMapError),
    /// The bots could not run (lobby unreachable, unknown region, no border to cross…).
    #[error(transparent)]
    Bots(#[from] BotsError),
    /// The client endpoint for reaching the lobby could not be opened.
    #[error("cannot open a client UDP socket on {bind}: {source}")]
    Endpoint {
        /// The address bound.
        bind: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The bots' task ended abnormally.
    #[error("the bots stopped abnormally: {detail}")]
    Task {
        /// What the runtime said.
        detail: String,
    },
    /// Every bot failed to join.
    #[error("none of the {count} bots could join (errors: {errors})")]
    NoneJoined {
        /// Bots run.
        count: u32,
        /// The report's errors, `kind × n`.
        errors: String,
    },
    /// The HTML page of the report could not be made or written.
    #[error(transparent)]
    Html(#[from] ReportHtmlError),
    /// The report could not be written.
    #[error("cannot write the report {path}: {source}", path = path.display())]
    Report {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl BotsRoleError {
    /// The process exit code: 2 for input that cannot be used (a file, a region, a flag), 1
    /// for a run that failed.
    pub fn exit_code(&self) -> u8 {
        match self {
            BotsRoleError::Config(_)
            | BotsRoleError::Duration(_)
            | BotsRoleError::Matrix(_)
            | BotsRoleError::World(_)
            | BotsRoleError::Html(ReportHtmlError::SamePath { .. })
            | BotsRoleError::Bots(
                BotsError::UnknownRegion(_)
                | BotsError::ShardRegionUnknown { .. }
                | BotsError::NoBorder { .. }
                | BotsError::BadZone { .. },
            ) => crate::EXIT_USAGE,
            _ => crate::EXIT_FAILURE,
        }
    }
}

/// The report's error kind for a run whose bots could not start because of `err`.
fn unstarted_kind(err: &BotsError) -> &'static str {
    match err {
        BotsError::LobbyUnreachable { .. } => "lobby_unreachable",
        BotsError::LobbyRefused { .. } => "lobby_rejected",
        BotsError::ShardAddress { .. } => "shard_address",
        _ => "not_started",
    }
}

/// Runs the bots of `cfg` until their duration passes or `shutdown` completes; writes the
/// report if asked, whatever happened once the configuration was read.
pub async fn run(cfg: BotsConfig, shutdown: impl Future<Output = ()>) -> Result<(), BotsRoleError> {
    let lobby = cfg.lobby.ok_or(ConfigError::MissingLobby)?;
    // With --insecure-dev (and no pin) the lobby's certificate is read from it below.
    let pin = match (cfg.cert_sha256.as_deref(), cfg.insecure_dev) {
        (Some(pin), _) => Some(parse_cert_sha256(pin)?),
        (None, true) => None,
        (None, false) => return Err(ConfigError::MissingPin.into()),
    };
    let duration = cfg.run_for()?;
    let matrix = if cfg.conditions_links() {
        Some(match &cfg.latency_matrix {
            Some(path) => LatencyMatrix::load(path)?,
            None => latency::builtin_matrix(),
        })
    } else {
        None
    };
    let homes = match &cfg.regions {
        Some(regions) => parse_regions(regions)?,
        None => Vec::new(),
    };
    if let Some(matrix) = &matrix {
        for (home, _) in &homes {
            matrix.region(home).map_err(BotsError::from)?;
        }
    }
    let world = match &cfg.world {
        Some(path) => {
            let map = WorldMap::load(path)?;
            Some(WorldLayout {
                zones: map.zones.iter().map(|z| (z.min, z.max)).collect(),
            })
        }
        None => None,
    };
    let seed = cfg
        .seed
        .unwrap_or_else(|| u64::from_le_bytes(meridian_protocol::ticket::random_bytes()));
    // Each run plays its own players, so runs side by side (from several machines) never
    // share one.
    let tag: [u8; 3] = meridian_protocol::ticket::random_bytes();
    let name_prefix = format!("bot-{}", meridian_protocol::ticket::to_hex(&tag));
    let report_path = cfg.report.as_deref();
    if let Some(path) = report_path {
        report_html::html_path(path)?;
    }
    let shard_metrics = cfg.shard_metrics_addrs()?;
    let started = Instant::now();
    let quic = QuicConfig::default();
    let bind: SocketAddr = if lobby.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let endpoint = meridian_client::session::client_endpoint(bind, &quic)
        .map_err(|source| BotsRoleError::Endpoint { bind, source })?;
    let pin = match pin {
        Some(pin) => pin,
        None => {
            tracing::warn!(
                %lobby,
                "INSECURE (--insecure-dev): accepting whatever certificate the lobby presents; \
                 anyone on the path can impersonate it. Development only: pin it with --cert-sha256"
            );
            let pin = meridian_client::session::probe_cert_sha256(&endpoint, lobby, &quic)
                .await
                .map_err(|e| BotsRoleError::InsecureProbe {
                    lobby,
                    detail: e.to_string(),
                })?;
            tracing::warn!(%lobby, cert_sha256 = %meridian_protocol::ticket::to_hex(&pin), "INSECURE: pinned the lobby's certificate as first seen");
            pin
        }
    };
    info!(%lobby, seed, names = %format!("{name_prefix}-<n>"), "reaching the lobby");
    let mut shutdown = std::pin::pin!(shutdown);
    // As the first bot, which plays as that player anyway.
    let first_bot = bot_name(&name_prefix, 0);
    let survey = tokio::select! {
        s = bots::survey_lobby(&endpoint, lobby, pin, &first_bot, &quic, SURVEY_RETRY) => s,
        () = &mut shutdown => {
            info!("interrupted before the bots started");
            finish_report(report_path, &bots::unstarted_report(cfg.count, started.elapsed(), bots::NOT_STARTED))?;
            return Ok(());
        }
    };
    endpoint.close(0u32.into(), b"surveyed");
    let shards = match survey {
        Ok(shards) => shards,
        Err(err) => {
            let report = bots::unstarted_report(cfg.count, started.elapsed(), unstarted_kind(&err));
            finish_report(report_path, &report)?;
            return Err(err.into());
        }
    };
    let offered: Vec<String> = shards
        .iter()
        .map(|s| format!("{}@{}({})", s.shard, s.addr, s.region))
        .collect();
    info!(shards = %offered.join(","), "the lobby offers");
    let geo = match matrix {
        Some(matrix) => match bots::geo_plan(matrix, &homes, &shards, GEO_JITTER, GEO_LOSS) {
            Ok(geo) => Some(geo),
            Err(err) => {
                let report =
                    bots::unstarted_report(cfg.count, started.elapsed(), unstarted_kind(&err));
                finish_report(report_path, &report)?;
                return Err(err.into());
            }
        },
        None => None,
    };
    let plan = BotsPlan {
        lobby,
        lobby_pin: pin,
        count: cfg.count,
        ramp_per_s: cfg.ramp,
        duration,
        scenario: cfg.scenario,
        geo,
        quic,
        seed,
        world,
        name_prefix,
    };
    info!(
        count = cfg.count,
        ramp = cfg.ramp,
        duration_s = duration.as_secs(),
        scenario = cfg.scenario.as_str(),
        "bots starting"
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let (progress_tx, progress_rx) = watch::channel(BotsProgress::default());
    let (scrape_done, scrape_stop) = tokio::sync::oneshot::channel();
    let scraper = tokio::spawn(scrape_shards(shard_metrics, Instant::now(), scrape_stop));
    let mut task = tokio::spawn(bots::run(plan, stop_rx, progress_tx));
    let mut display = Display::new(cfg.count, std::io::stderr().is_terminal());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let result = loop {
        tokio::select! {
            r = &mut task => break r,
            () = &mut shutdown, if !*stop_tx.borrow() => {
                display.note("stopping: the bots leave");
                let _ = stop_tx.send(true);
            }
            _ = tick.tick() => display.draw(&progress_rx.borrow()),
        }
    };
    display.finish();
    let _ = scrape_done.send(());
    // A scraper that failed leaves the report without the shards' timeline, nothing else.
    let shard_timeline = scraper.await.unwrap_or_default();
    let interrupted = *stop_tx.borrow();
    let report = match result {
        Ok(Ok(report)) => Report {
            shard_timeline,
            ..report
        },
        Ok(Err(err)) => {
            let report = bots::unstarted_report(cfg.count, started.elapsed(), unstarted_kind(&err));
            finish_report(report_path, &report)?;
            return Err(err.into());
        }
        Err(join) => {
            return Err(BotsRoleError::Task {
                detail: join.to_string(),
            });
        }
    };
    println!("{}", summary_line(&report));
    finish_report(report_path, &report)?;
    if report.joined == 0 && report.bots > 0 && !interrupted {
        return Err(BotsRoleError::NoneJoined {
            count: report.bots,
            errors: errors_text(&report),
        });
    }
    Ok(())
}

/// Writes `report` to `path` if one was asked for, and its HTML page next to it.
fn finish_report(path: Option<&Path>, report: &Report) -> Result<(), BotsRoleError> {
    let Some(path) = path else {
        return Ok(());
    };
    write_report(path, report)?;
    let html = report_html::write_html(report, path)?;
    info!(path = %path.display(), html = %html.display(), "report written");
    Ok(())
}

/// What the report charts of a shard's `GET /status` (the shard's `TickStatus`).
#[derive(serde::Deserialize)]
struct ScrapedStatus {
    players: u64,
    recent: ScrapedTimes,
}

/// Tick time over the last second.
#[derive(serde::Deserialize)]
struct ScrapedTimes {
    p50_ms: f64,
    p99_ms: f64,
}

/// The point of the shard at admin endpoint `shard` whose status reads `body`, `t_s` seconds
/// into the run; `None` when `body` is not a tick status.
fn shard_point(t_s: f64, shard: &str, body: &str) -> Option<ShardPoint> {
    let st: ScrapedStatus = serde_json::from_str(body).ok()?;
    Some(ShardPoint {
        t_s,
        shard: shard.to_owned(),
        tick_ms_p50: st.recent.p50_ms,
        tick_ms_p99: st.recent.p99_ms,
        players: u32::try_from(st.players).unwrap_or(u32::MAX),
    })
}

/// Reads the tick status of each admin endpoint in `addrs` once a second until `done`; an
/// endpoint that does not answer, or answers something else, gives no point that second.
async fn scrape_shards(
    addrs: Vec<String>,
    started: Instant,
    mut done: tokio::sync::oneshot::Receiver<()>,
) -> Vec<ShardPoint> {
    let mut points = Vec::new();
    if addrs.is_empty() {
        return points;
    }
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_millis(800))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot make the shard metrics client: no tick chart");
            return points;
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut done => break,
        }
        let t_s = started.elapsed().as_secs_f64();
        for addr in &addrs {
            let url = format!("http://{addr}/status");
            let body = match client.get(&url).send().await {
                Ok(resp) => resp.text().await,
                Err(e) => Err(e),
            };
            match body.map(|b| shard_point(t_s, addr, &b)) {
                Ok(Some(p)) => points.push(p),
                Ok(None) => tracing::debug!(%addr, "shard metrics: not a tick status"),
                Err(e) => tracing::debug!(%addr, error = %e, "shard metrics: no answer"),
            }
        }
    }
    points
}

/// Writes `report` as pretty JSON.
fn write_report(path: &Path, report: &Report) -> Result<(), BotsRoleError> {
    let err = |source| BotsRoleError::Report {
        path: path.to_owned(),
        source,
    };
    let json = serde_json::to_string_pretty(report).map_err(|e| err(std::io::Error::other(e)))?;
    std::fs::write(path, json + "\n").map_err(err)
}

/// The report's errors as `kind × n, …`, or `none`.
fn errors_text(report: &Report) -> String {
    if report.errors.is_empty() {
        return "none".to_owned();
    }
    report
        .errors
        .iter()
        .map(|(kind, n)| format!("{kind} × {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The line printed on stdout at the end of a run.
fn summary_line(r: &Report) -> String {
    let mut line = format!(
        "joined {}/{}, join p99 {:.1} ms, rtt p50 {:.1} ms, snapshots/s mean {:.1}, \
         down {}/s, up {}/s per bot, disconnects {}, routing {}/{}, handoffs {} (failed {}), \
         errors: {}",
        r.joined,
        r.bots,
        r.join_ms.p99,
        r.rtt_ms.p50,
        r.snapshots_per_s.mean,
        HumanBytes(r.down_bytes_per_s.mean as u64),
        HumanBytes(r.up_bytes_per_s.mean as u64),
        r.disconnects,
        r.routing.optimal,
        r.routing.total,
        r.handoffs.count,
        r.handoffs.failed,
        errors_text(r)
    );
    if let Some(churn) = r.churn {
        line.push_str(&format!(", joins {} leaves {}", churn.joins, churn.leaves));
    }
    line
}

/// The live figures of a progress line, `rates` being bytes per second down and up.
fn progress_text(p: &BotsProgress, rates: (f64, f64)) -> String {
    let rtt = p
        .rtt_ms_p50()
        .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1} ms"));
    let mut text = format!(
        "playing {} · rtt p50 {rtt} · down {}/s up {}/s · errors {}",
        p.playing,
        HumanBytes(rates.0 as u64),
        HumanBytes(rates.1 as u64),
        p.errors
    );
    if p.leaves > 0 {
        text.push_str(&format!(" · joins {} leaves {}", p.joins, p.leaves));
    }
    if p.handoffs > 0 || p.handoffs_failed > 0 {
        text.push_str(&format!(
            " · handoffs {} (failed {})",
            p.handoffs, p.handoffs_failed
        ));
    }
    text
}

/// The progress shown on stderr: a bar on a terminal, else a plain line each time.
struct Display {
    bar: Option<ProgressBar>,
    count: u32,
    /// When the byte counts were last read, and what they were.
    last: Option<(Instant, u64, u64)>,
}

impl Display {
    fn new(count: u32, terminal: bool) -> Self {
        let bar = terminal.then(|| {
            let style = ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} joined · {msg}",
            )
            .expect("invariant: the template is valid")
            .progress_chars("=> ");
            let bar = ProgressBar::new(u64::from(count)).with_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            bar,
            count,
            last: None,
        }
    }

    /// Shows `p`: bytes per second since the previous call.
    fn draw(&mut self, p: &BotsProgress) {
        let now = Instant::now();
        let rates = match self.last {
            Some((at, down, up)) => {
                let secs = now.duration_since(at).as_secs_f64().max(1e-3);
                (
                    p.bytes_down.saturating_sub(down) as f64 / secs,
                    p.bytes_up.saturating_sub(up) as f64 / secs,
                )
            }
            None => (0.0, 0.0),
        };
        self.last = Some((now, p.bytes_down, p.bytes_up));
        let text = progress_text(p, rates);
        match &self.bar {
            Some(bar) => {
                bar.set_position(u64::from(p.joined));
                bar.set_message(text);
            }
            None => eprintln!(
                "bots started {}/{} joined {} · {text}",
                p.started, self.count, p.joined
            ),
        }
    }

    /// A one-off message.
    fn note(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_client::report::Churn;

    #[test]
    fn progress_lines_show_the_live_figures() {
        let p = BotsProgress {
            started: 20,
            joined: 18,
            playing: 17,
            errors: 2,
            rtt_ms: vec![10.0, 0.0, 30.0, 20.0],
            ..BotsProgress::default()
        };
        let text = progress_text(&p, (2048.0, 512.0));
        assert_eq!(
            text,
            "playing 17 · rtt p50 20.0 ms · down 2.00 KiB/s up 512 B/s · errors 2"
        );
        let churning = BotsProgress {
            joins: 30,
            leaves: 12,
            handoffs: 4,
            handoffs_failed: 1,
            ..BotsProgress::default()
        };
        let text = progress_text(&churning, (0.0, 0.0));
        assert!(
            text.contains("rtt p50 -")
                && text.contains("joins 30 leaves 12")
                && text.contains("handoffs 4 (failed 1)"),
            "{text}"
        );
    }

    #[test]
    fn the_summary_names_the_errors_and_the_churn() {
        let mut r = bots::unstarted_report(3, Duration::from_secs(1), "lobby_unreachable");
        let line = summary_line(&r);
        assert!(
            line.starts_with("joined 0/3") && line.contains("errors: lobby_unreachable × 3"),
            "{line}"
        );
        assert!(!line.contains("joins"), "{line}");
        r.errors.clear();
        r.churn = Some(Churn {
            joins: 9,
            leaves: 6,
        });
        let line = summary_line(&r);
        assert!(
            line.contains("errors: none") && line.ends_with("joins 9 leaves 6"),
            "{line}"
        );
    }

    #[test]
    fn input_errors_exit_2_and_run_failures_1() {
        assert_eq!(
            BotsRoleError::Config(ConfigError::MissingPin).exit_code(),
            2
        );
        let probe = BotsRoleError::InsecureProbe {
            lobby: SocketAddr::from((Ipv4Addr::LOCALHOST, 1)),
            detail: "timed out".into(),
        };
        assert_eq!(
            probe.exit_code(),
            1,
            "a lobby that cannot be reached is a failed run"
        );
        let unknown = BotsError::UnknownRegion(latency::UnknownRegion {
            region: "mars".into(),
            known: vec!["tokyo".into()],
        });
        assert_eq!(BotsRoleError::Bots(unknown).exit_code(), 2);
        let unreachable = BotsError::LobbyUnreachable {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 1)),
            attempts: 3,
            detail: "no answer".into(),
        };
        assert_eq!(unstarted_kind(&unreachable), "lobby_unreachable");
        assert_eq!(BotsRoleError::Bots(unreachable).exit_code(), 1);
        let none = BotsRoleError::NoneJoined {
            count: 2,
            errors: "x × 2".into(),
        };
        assert_eq!(none.exit_code(), 1);
    }

    #[test]
    fn shard_status_reads_the_last_second_and_refuses_anything_else() {
        let body = r#"{"tick":9,"players":4,"entities":6,"overruns":0,
            "recent":{"p50_ms":1.5,"p99_ms":3.25,"max_ms":4.0},
            "total":{"p50_ms":9.0,"p99_ms":9.0,"max_ms":9.0}}"#;
        assert_eq!(
            shard_point(2.0, "127.0.0.1:7201", body),
            Some(ShardPoint {
                t_s: 2.0,
                shard: "127.0.0.1:7201".to_owned(),
                tick_ms_p50: 1.5,
                tick_ms_p99: 3.25,
                players: 4,
            })
        );
        for bad in [
            "",
            "not json",
            "{}",
            r#"{"players":-1,"recent":{"p50_ms":1,"p99_ms":2}}"#,
            r#"{"players":1,"recent":{"p50_ms":"x","p99_ms":2}}"#,
            "<html>404</html>",
        ] {
            assert_eq!(shard_point(1.0, "a:1", bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn scraping_nothing_or_a_dead_endpoint_gives_no_points() {
        let (done, stop) = tokio::sync::oneshot::channel();
        let _ = done.send(());
        assert!(
            scrape_shards(Vec::new(), Instant::now(), stop)
                .await
                .is_empty()
        );
        // A port nobody listens on: bound, then dropped.
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = free.local_addr().expect("addr").to_string();
        drop(free);
        let (done, stop) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(scrape_shards(vec![addr], Instant::now(), stop));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let _ = done.send(());
        assert!(task.await.expect("task").is_empty());
    }

    #[test]
    fn a_report_named_like_its_page_is_refused_as_a_usage_error() {
        let err = BotsRoleError::from(
            report_html::html_path(Path::new("r.html")).expect_err("same path"),
        );
        assert_eq!(err.exit_code(), 2, "{err}");
    }

    #[test]
    fn reports_are_written_as_json_and_a_bad_path_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("r.json");
        let report = bots::unstarted_report(2, Duration::ZERO, "lobby_unreachable");
        finish_report(Some(&path), &report).expect("written");
        let back: Report =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        assert_eq!(back, report);
        let page = std::fs::read_to_string(dir.path().join("r.html")).expect("the page too");
        assert_eq!(page.matches("<svg").count(), report_html::PLOT_TITLES.len());
        finish_report(None, &report).expect("nothing asked, nothing written");
        let bad = dir.path().join("missing").join("r.json");
        let err = finish_report(Some(&bad), &report).expect_err("no such directory");
        assert!(
            err.to_string().contains(&bad.display().to_string()),
            "{err}"
        );
    }
}
