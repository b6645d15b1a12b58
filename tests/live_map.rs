//! The live map in a real browser: `meridian dev` runs a world with bots on a Redis this test
//! starts; headless Chromium loads the map page until it shows every bot, then saves a
//! screenshot as a test artifact (`target/test-artifacts/live_map.png`).
//!
//! Chromium is Debian's `chromium` package (`scripts/test.sh` installs it when missing).

#[path = "common/lines.rs"]
mod lines;

use lines::forward_lines;
use meridian_cluster::testing::RedisServer;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Bots of the dev world; the page must show this many players.
const BOTS: usize = 6;
/// Size of the browser window, and so of the screenshot.
const WINDOW: (u32, u32) = (1400, 760);
/// Longest the test waits for the page to show every bot.
const SHOW_DEADLINE: Duration = Duration::from_secs(90);

/// The browser binary: `$CHROMIUM`, else `chromium` on the PATH, else `/usr/bin/chromium`.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("chromium"))
            .find(|p| p.is_file())
    });
    let path = on_path.unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.is_file(),
        "headless Chromium is needed at {} (Debian's `chromium` package; scripts/test.sh \
         installs it when missing, or set CHROMIUM to the browser binary)",
        path.display()
    );
    path
}

/// A running `meridian dev`, killed when dropped.
struct Dev {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dev {
    fn start(store: &str) -> Dev {
        let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args([
                "dev",
                "--bots",
                &BOTS.to_string(),
                "--npcs",
                "100",
                "--duration",
                "10m",
                "--lobby-listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--store",
                store,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("meridian dev starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = forward_lines(stdout);
        Dev {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first stdout line starting with `prefix`, within `timeout`.
    fn line(&mut self, prefix: &str, timeout: Duration) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.starts_with(prefix)) {
            return line.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.starts_with(prefix);
                    self.seen.push(line.clone());
                    if found {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "meridian dev printed no `{prefix}` line within {timeout:?}; it printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

/// Runs Chromium headless on `url` with `extra` arguments; its stdout.
fn browse(browser: &Path, profile: &Path, url: &str, extra: &[String]) -> String {
    let out = Command::new(browser)
        .args([
            "--headless=new",
            // Tests run as root in CI containers, where Chromium refuses its sandbox.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.display()),
            &format!("--window-size={},{}", WINDOW.0, WINDOW.1),
            // Time for the page to load and draw a few frames.
            "--virtual-time-budget=3000",
        ])
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed ({:?}) on {url}:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `data-NAME` attribute of the page's `#status` element in a dumped DOM.
fn status_attr(dom: &str, name: &str) -> Option<u64> {
    let start = dom.find("id=\"status\"")?;
    let element = &dom[start..start + dom[start..].find('>')?];
    let key = format!("data-{name}=\"");
    let at = element.find(&key)? + key.len();
    let end = element[at..].find('"')?;
    element[at..at + end].parse().ok()
}

/// Where test artifacts go: `<target dir>/test-artifacts`.
fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts directory");
    dir
}

/// Width and height from a PNG's IHDR chunk, if `bytes` starts like a PNG.
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if bytes.len() < 24 || &bytes[..8] != SIGNATURE || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let word =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    Some((word(16), word(20)))
}

/// A plain HTTP/1.1 GET on loopback: status code and body (read to its `Content-Length`, or to
/// the end).
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write request");
    let mut answer = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf).expect("read answer");
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            });
            if n == 0 || length.is_some_and(|len| body.len() >= len) {
                let code = head
                    .split(' ')
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .expect("a status line");
                return (code, body.to_owned());
            }
        }
        assert!(
            n > 0,
            "GET {path} on {addr}: the connection closed mid-answer"
        );
    }
}

/// Chromium showing a page in real time (no virtual time, so the page's event stream stays
/// open), with its DevTools HTTP endpoint on a free port; killed when dropped.
struct LiveBrowser {
    child: Child,
    devtools: SocketAddr,
    _profile: tempfile::TempDir,
}

impl Drop for LiveBrowser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LiveBrowser {
    fn open(browser: &Path, url: &str) -> LiveBrowser {
        let profile = tempfile::tempdir().expect("browser profile dir");
        let mut child = Command::new(browser)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                &format!("--user-data-dir={}", profile.path().display()),
                &format!("--window-size={},{}", WINDOW.0, WINDOW.1),
                url,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("DevTools listening on ws://") {
                    let addr = rest.split('/').next().unwrap_or_default().to_owned();
                    let _ = tx.send(addr);
                }
            }
        });
        let mut live = LiveBrowser {
            child,
            devtools: SocketAddr::from(([127, 0, 0, 1], 0)),
            _profile: profile,
        };
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium tells its DevTools address within 30 s");
        live.devtools = addr
            .parse()
            .unwrap_or_else(|e| panic!("DevTools address `{addr}`: {e}"));
        live
    }

    /// The titles of the pages open (`GET /json/list` of the DevTools endpoint).
    fn titles(&self) -> Vec<String> {
        let (code, body) = http_get(self.devtools, "/json/list");
        assert_eq!(code, 200, "DevTools /json/list: {body}");
        let pages: serde_json::Value = serde_json::from_str(&body).expect("/json/list is JSON");
        pages
            .as_array()
            .map(|pages| {
                pages
                    .iter()
                    .filter(|p| p["type"] == "page")
                    .filter_map(|p| p["title"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_map_shows_the_dev_world_in_chromium() {
    let browser = chromium();
    let redis = RedisServer::start().await.expect("redis-server starts");
    let url = redis.url().to_owned();
    tokio::task::spawn_blocking(move || check_map(&browser, &url))
        .await
        .expect("the browser check ran");
}

fn check_map(browser: &Path, store: &str) {
    let mut dev = Dev::start(store);
    let admin_line = dev.line("admin http://", Duration::from_secs(60));
    let admin: SocketAddr = admin_line["admin http://".len()..]
        .trim()
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|e| panic!("`{admin_line}`: not an admin address: {e}"));
    let (code, page) = http_get(admin, "/map");
    assert_eq!(code, 200, "GET /map on dev's admin server: {page}");
    assert!(page.contains("<canvas"), "the page draws on a canvas");
    assert!(
        !page.contains("src=\"http") && !page.contains("href=\"http"),
        "no external resources"
    );

    // `?poll`: the page fetches `/map/state` a few times a second instead of holding an event
    // stream open. Chromium's virtual time only advances while the network is idle, which an
    // open event stream never is (the stream itself is tested in the lobby crate).
    let map_url = format!("http://{admin}/map?poll");
    let profile = tempfile::tempdir().expect("browser profile dir");
    let deadline = Instant::now() + SHOW_DEADLINE;
    let mut last = String::new();
    let colours = loop {
        let dom = browse(
            browser,
            profile.path(),
            &map_url,
            &["--dump-dom".to_owned()],
        );
        let players = status_attr(&dom, "players");
        let shards = status_attr(&dom, "shards");
        if players == Some(BOTS as u64) && shards == Some(3) {
            break status_attr(&dom, "colours").unwrap_or(0);
        }
        last = format!("players {players:?}, shards {shards:?}");
        assert!(
            Instant::now() < deadline,
            "the page did not show {BOTS} players on 3 shards within {SHOW_DEADLINE:?}: {last}; \
             /map/state: {}",
            http_get(admin, "/map/state").1
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let _ = last;
    assert!(
        colours >= 8,
        "the drawing has only {colours} distinct colours: it shows no world"
    );

    let png = artifacts_dir().join("live_map.png");
    let _ = std::fs::remove_file(&png);
    browse(
        browser,
        profile.path(),
        &map_url,
        &[format!("--screenshot={}", png.display())],
    );
    let bytes =
        std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()));
    assert_eq!(
        png_size(&bytes),
        Some(WINDOW),
        "{} is a PNG of the window's size",
        png.display()
    );
    // A blank window of this size compresses to a few kilobytes; zones, labels, dots and the
    // shard table take tens.
    assert!(
        bytes.len() > 20_000,
        "{} is only {} bytes: the page looks empty",
        png.display(),
        bytes.len()
    );
    eprintln!(
        "live map screenshot: {} ({} bytes, {colours} colours)",
        png.display(),
        bytes.len()
    );

    let (code, state) = http_get(admin, "/map/state");
    assert_eq!(code, 200, "{state}");
    let state: serde_json::Value = serde_json::from_str(&state).expect("/map/state is JSON");
    let zones: Vec<&str> = state["zones"]
        .as_array()
        .expect("zones")
        .iter()
        .filter_map(|z| z["id"].as_str())
        .collect();
    assert_eq!(zones, ["west", "center", "east"]);
    let players = state["players"].as_array().expect("players");
    assert_eq!(players.len(), BOTS, "{state}");
    for p in players {
        let (x, y) = (p["pos"][0].as_f64(), p["pos"][1].as_f64());
        assert!(
            x.is_some_and(|x| (0.0..=3000.0).contains(&x))
                && y.is_some_and(|y| (0.0..=1000.0).contains(&y)),
            "a player inside the dev world: {p}"
        );
    }
    for shard in state["shards"].as_array().expect("shards") {
        assert_eq!(shard["health"], "ok", "{shard}");
        assert!(shard["tick_p99_ms"].as_f64().is_some(), "{shard}");
    }

    // The page as operators open it, following the event stream: its title counts the players.
    let live = LiveBrowser::open(browser, &format!("http://{admin}/map"));
    let want = format!("{BOTS} players · 3 shards");
    let deadline = Instant::now() + SHOW_DEADLINE;
    loop {
        let titles = live.titles();
        if titles.iter().any(|t| t.ends_with(&want)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page following /map/events did not show `{want}` within {SHOW_DEADLINE:?}: \
             titles {titles:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // Stopping dev with the page still following its event stream: the stream ends, and dev
    // stops by itself.
    let status = Command::new("kill")
        .args(["-TERM", &dev.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "SIGTERM sent to meridian dev");
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = dev.child.try_wait().expect("wait for meridian dev") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "meridian dev did not stop within 30 s of SIGTERM with a map page open"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "meridian dev stopped with {exit}");
    drop(live);
}
