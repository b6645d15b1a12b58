//! The live map: one HTML page that draws the world as it is now — the zones, each shard's
//! health, load and tick p99, the players as dots and the handoffs as they happen — for
//! operators watching a load test.
//!
//! Routes of [`router`] (merged into an admin HTTP server):
//! - `GET /map`: the page (HTML with inline script and a canvas, no external resources). It
//!   follows `/map/events`; `/map?poll` fetches `/map/state` every 250 ms instead (for headless
//!   browsers whose virtual time waits for the network to go idle, which a stream never does).
//! - `GET /map/events`: server-sent events, one `frame` event per poll (about
//!   [`DEFAULT_POLL_INTERVAL`]), each a [`MapSnapshot`] as JSON; the newest at once on connect.
//! - `GET /map/state`: the newest [`MapSnapshot`] as JSON.
//!
//! Where the figures come from: a [`MapSource`] runs one background task (however many pages
//! watch) that, every poll, lists the live shards of the registry
//! ([`Store::live_shards`](meridian_cluster::store::Store::live_shards)) and
//! asks each shard's admin endpoint for its players (`GET /players`, positions included) and its
//! tick status (`GET /status`), all shards at once, each within [`SHARD_TIMEOUT`]. The pure
//! [`MapTracker`] turns one poll into a snapshot: a player whose shard changed since the poll
//! before is a handoff, shown for [`HANDOFF_SHOWN`].
//!
//! An event stream never ends by itself: call [`MapSource::stop`] when the server serving the
//! routes shuts down gracefully, or it waits for every open page.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use meridian_cluster::audit::{HeldState, ShardPlayers};
use meridian_cluster::store::{LiveShard, Store as _, StoreHandle};
use meridian_cluster::world::WorldMap;
use meridian_protocol::{PlayerId, ShardId, ZoneId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

/// How often the map's task polls the registry and the shards unless told otherwise.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Longest one shard's admin endpoint may take to answer a poll, body included.
pub const SHARD_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a handoff stays on the map after it was seen.
pub const HANDOFF_SHOWN: Duration = Duration::from_secs(2);

/// A player not seen on any shard for this long is forgotten (a handoff is not drawn when it
/// comes back).
pub const FORGET_AFTER: Duration = Duration::from_secs(10);

/// Largest admin answer read, bytes.
pub const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

/// Longest part of an error answer's body quoted, characters.
const QUOTED_BODY_CHARS: usize = 120;

/// The page, served as is.
const PAGE: &str = include_str!("../assets/map.html");

/// The world as the map draws it, at one poll.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MapSnapshot {
    /// Poll number, from 1; 0 before the first poll.
    pub seq: u64,
    /// When the poll ended, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The world map's name and bounds, if the map was given one.
    pub world: Option<WorldView>,
    /// The zones of the world map (empty without one).
    pub zones: Vec<ZoneView>,
    /// The live shards, by id.
    pub shards: Vec<ShardView>,
    /// Every player some shard holds with a position, by id.
    pub players: Vec<PlayerDot>,
    /// Handoffs seen within the last [`HANDOFF_SHOWN`], oldest first.
    pub handoffs: Vec<HandoffMark>,
    /// Handoffs seen since the map started.
    pub handoffs_total: u64,
    /// Why the registry could not be read at this poll, if it could not.
    pub store_error: Option<String>,
}

/// The world's name and bounding box.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorldView {
    /// The world map's name.
    pub name: String,
    /// Lower corner, world units.
    pub min: [f32; 2],
    /// Upper corner, world units.
    pub max: [f32; 2],
}

/// One zone of the world map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneView {
    /// The zone.
    pub id: ZoneId,
    /// Lower corner, world units.
    pub min: [f32; 2],
    /// Upper corner, world units.
    pub max: [f32; 2],
    /// The region whose datacenter serves it.
    pub region: String,
}

/// How a shard is doing, as the map colours it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardHealth {
    /// Live, admitting, and its admin endpoint answered.
    Ok,
    /// Live but shutting down: it admits no one new.
    Draining,
    /// Live in the registry, but its admin endpoint did not answer (or it has none).
    Unreachable,
}

/// One live shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardView {
    /// The shard.
    pub id: ShardId,
    /// The zone it simulates.
    pub zone: ZoneId,
    /// Its region.
    pub region: String,
    /// Players it holds, as its last heartbeat said.
    pub load: u32,
    /// Most players it admits.
    pub capacity: u32,
    /// Its health.
    pub health: ShardHealth,
    /// Why it is unreachable, if it is (every failed request, `; `-separated).
    pub error: Option<String>,
    /// Players its admin endpoint listed at this poll (`None` if it did not answer).
    pub players: Option<u32>,
    /// Its tick time p99 over the last second, milliseconds, if its status said.
    pub tick_p99_ms: Option<f64>,
    /// Its last completed tick, if its status said.
    pub tick: Option<u64>,
}

/// One player drawn as a dot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlayerDot {
    /// The player.
    pub id: PlayerId,
    /// The shard that simulates it.
    pub shard: ShardId,
    /// That shard's zone.
    pub zone: ZoneId,
    /// Position, world units.
    pub pos: [f32; 2],
    /// What the shard is doing with it.
    pub state: HeldState,
}

/// A handoff seen between two polls: the player's shard changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandoffMark {
    /// The player.
    pub player: PlayerId,
    /// The shard it left.
    pub from: ShardId,
    /// The shard it is on now.
    pub to: ShardId,
    /// Where it was last seen on `from`.
    pub from_pos: [f32; 2],
    /// Where it is on `to`.
    pub to_pos: [f32; 2],
    /// When the handoff was seen, milliseconds since the Unix epoch.
    pub seen_ms: u64,
}

/// A shard's tick figures, read from its `GET /status`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TickFigures {
    /// Tick time p99 over the last second (or since start), milliseconds.
    pub p99_ms: Option<f64>,
    /// Last completed tick.
    pub tick: Option<u64>,
}

impl TickFigures {
    /// The figures of a `GET /status` answer: the p99 of `recent` (else of `total`, else a flat
    /// `tick_p99_ms`) and `tick`; fields it does not find are `None`.
    pub fn from_status(status: &serde_json::Value) -> Self {
        let p99_ms = [
            "/recent/p99_ms",
            "/total/p99_ms",
            "/tick_p99_ms",
            "/tick_ms_p99",
        ]
        .iter()
        .find_map(|path| status.pointer(path).and_then(serde_json::Value::as_f64));
        let tick = status.get("tick").and_then(serde_json::Value::as_u64);
        Self { p99_ms, tick }
    }
}

/// What one poll learnt about one live shard.
#[derive(Debug, Clone)]
pub struct ShardPoll {
    /// Its registry record.
    pub live: LiveShard,
    /// Its `GET /players`, or why it failed.
    pub players: Result<ShardPlayers, String>,
    /// Its `GET /status`, or why it failed.
    pub status: Result<TickFigures, String>,
}

/// Where a player was last seen.
#[derive(Debug, Clone)]
struct Seen {
    shard: ShardId,
    pos: [f32; 2],
    at_ms: u64,
}

/// The pure core of the map: turns polls into snapshots and remembers, between polls, which
/// shard held each player, to see handoffs.
#[derive(Debug, Default)]
pub struct MapTracker {
    world: Option<WorldView>,
    zones: Vec<ZoneView>,
    seen: HashMap<PlayerId, Seen>,
    handoffs: Vec<HandoffMark>,
    handoffs_total: u64,
    seq: u64,
}

impl MapTracker {
    /// A tracker drawing `world`'s zones, if given.
    pub fn new(world: Option<&WorldMap>) -> Self {
        let (world, zones) = match world {
            Some(w) => {
                let (min, max) = w.bounds();
                let zones = w
                    .zones
                    .iter()
                    .map(|z| ZoneView {
                        id: z.id.clone(),
                        min: z.min,
                        max: z.max,
                        region: z.region.clone(),
                    })
                    .collect();
                let view = WorldView {
                    name: w.name.clone(),
                    min,
                    max,
                };
                (Some(view), zones)
            }
            None => (None, Vec::new()),
        };
        Self {
            world,
            zones,
            ..Self::default()
        }
    }

    /// The snapshot of one poll that ended at `now_ms`: `shards` when the registry was read,
    /// else why it could not be (the players and handoffs seen before are kept then).
    pub fn update(&mut self, now_ms: u64, shards: Result<Vec<ShardPoll>, String>) -> MapSnapshot {
        self.seq += 1;
        let (polls, store_error) = match shards {
            Ok(polls) => (polls, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let mut views = Vec::with_capacity(polls.len());
        // Each player once: a player both outgoing on one shard and incoming on the next is
        // drawn on the shard that simulates it.
        let mut dots: HashMap<PlayerId, PlayerDot> = HashMap::new();
        for poll in &polls {
            views.push(shard_view(poll));
            let Ok(answer) = &poll.players else {
                continue;
            };
            for held in &answer.players {
                let Some(pos) = held.pos.filter(|p| p.iter().all(|c| c.is_finite())) else {
                    continue;
                };
                let dot = PlayerDot {
                    id: held.player,
                    shard: poll.live.record.id.clone(),
                    zone: poll.live.record.zone.clone(),
                    pos,
                    state: held.state,
                };
                match dots.get(&held.player) {
                    Some(kept) if kept.state.simulates() || !held.state.simulates() => {}
                    _ => {
                        dots.insert(held.player, dot);
                    }
                }
            }
        }
        for dot in dots.values() {
            let seen = Seen {
                shard: dot.shard.clone(),
                pos: dot.pos,
                at_ms: now_ms,
            };
            if let Some(before) = self.seen.insert(dot.id, seen)
                && before.shard != dot.shard
            {
                self.handoffs.push(HandoffMark {
                    player: dot.id,
                    from: before.shard,
                    to: dot.shard.clone(),
                    from_pos: before.pos,
                    to_pos: dot.pos,
                    seen_ms: now_ms,
                });
                self.handoffs_total += 1;
            }
        }
        let forget = duration_ms(FORGET_AFTER);
        self.seen
            .retain(|_, s| now_ms.saturating_sub(s.at_ms) <= forget);
        let shown = duration_ms(HANDOFF_SHOWN);
        self.handoffs
            .retain(|h| now_ms.saturating_sub(h.seen_ms) <= shown);
        views.sort_by(|a, b| a.id.cmp(&b.id));
        let mut players: Vec<PlayerDot> = dots.into_values().collect();
        players.sort_by_key(|p| p.id);
        MapSnapshot {
            seq: self.seq,
            at_ms: now_ms,
            world: self.world.clone(),
            zones: self.zones.clone(),
            shards: views,
            players,
            handoffs: self.handoffs.clone(),
            handoffs_total: self.handoffs_total,
            store_error,
        }
    }
}

/// The view of one polled shard.
fn shard_view(poll: &ShardPoll) -> ShardView {
    let record = &poll.live.record;
    let mut errors = Vec::new();
    if let Err(e) = &poll.players {
        errors.push(e.clone());
    }
    if let Err(e) = &poll.status {
        errors.push(e.clone());
    }
    let health = if !errors.is_empty() {
        ShardHealth::Unreachable
    } else if record.draining {
        ShardHealth::Draining
    } else {
        ShardHealth::Ok
    };
    let figures = poll.status.as_ref().ok().copied().unwrap_or_default();
    ShardView {
        id: record.id.clone(),
        zone: record.zone.clone(),
        region: record.region.clone(),
        load: record.load,
        capacity: record.capacity,
        health,
        error: (!errors.is_empty()).then(|| errors.join("; ")),
        players: poll
            .players
            .as_ref()
            .ok()
            .map(|a| u32::try_from(a.players.len()).unwrap_or(u32::MAX)),
        tick_p99_ms: figures.p99_ms,
        tick: figures.tick,
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(duration_ms)
        .unwrap_or(0)
}

/// One poll's snapshot, with its JSON made once for every page that watches.
#[derive(Debug, Default)]
struct Frame {
    snapshot: MapSnapshot,
    json: String,
}

/// The live map's data: the newest [`MapSnapshot`], kept fresh by one background task. Cheap to
/// clone; the task stops at [`MapSource::stop`] or when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct MapSource {
    frames: watch::Receiver<Arc<Frame>>,
    stop: Arc<watch::Sender<bool>>,
}

impl MapSource {
    /// Starts the task polling the registry of the store `store` holds (none yet: the
    /// snapshot says so) and its shards every `poll_interval`, drawing `world`'s zones if
    /// given. Must be called within a Tokio runtime.
    pub fn start(
        store: watch::Receiver<Option<StoreHandle>>,
        world: Option<Arc<WorldMap>>,
        poll_interval: Duration,
    ) -> Self {
        let first = Frame {
            json: to_json(&MapSnapshot::default()),
            snapshot: MapSnapshot::default(),
        };
        let (tx, frames) = watch::channel(Arc::new(first));
        let (stop, stopped) = watch::channel(false);
        let tracker = MapTracker::new(world.as_deref());
        tokio::spawn(poll_loop(store, tracker, poll_interval, tx, stopped));
        Self {
            frames,
            stop: Arc::new(stop),
        }
    }

    /// [`MapSource::start`] on a store that is already open.
    pub fn with_store(
        store: StoreHandle,
        world: Option<Arc<WorldMap>>,
        poll_interval: Duration,
    ) -> Self {
        let (keep, rx) = watch::channel(Some(store));
        // The store never changes: the sender may go, the receiver keeps the value.
        drop(keep);
        Self::start(rx, world, poll_interval)
    }

    /// The newest snapshot.
    pub fn latest(&self) -> MapSnapshot {
        self.frames.borrow().snapshot.clone()
    }

    /// Stops polling and ends every open `/map/events` stream (pages reconnect, and find the
    /// server gone or a new one). Call it before a graceful shutdown of the server serving
    /// [`router`]: an event stream never ends by itself, and the server waits for it.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

fn to_json(snapshot: &MapSnapshot) -> String {
    serde_json::to_string(snapshot).expect("invariant: a map snapshot serializes to JSON")
}

/// Polls until [`MapSource::stop`] or every [`MapSource`] is gone; the frames' sender goes
/// with it, which ends the event streams.
async fn poll_loop(
    store: watch::Receiver<Option<StoreHandle>>,
    tracker: MapTracker,
    poll_interval: Duration,
    tx: watch::Sender<Arc<Frame>>,
    mut stopped: watch::Receiver<bool>,
) {
    tokio::select! {
        // Stopped, or every handle dropped.
        _ = stopped.wait_for(|s| *s) => {}
        () = poll_forever(store, tracker, poll_interval, &tx) => {}
    }
}

/// Polls every `poll_interval` until no one watches.
async fn poll_forever(
    store: watch::Receiver<Option<StoreHandle>>,
    mut tracker: MapTracker,
    poll_interval: Duration,
    tx: &watch::Sender<Arc<Frame>>,
) {
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(SHARD_TIMEOUT)
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "live map: cannot build its HTTP client; the map stays empty");
            return;
        }
    };
    let mut interval = tokio::time::interval(poll_interval.max(Duration::from_millis(10)));
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = tx.closed() => return,
            _ = interval.tick() => {}
        }
        let current = store.borrow().clone();
        let shards = match current {
            None => Err("the shared state is not connected yet".to_owned()),
            Some(store) => poll_shards(&store, &client).await,
        };
        let snapshot = tracker.update(unix_ms(), shards);
        let frame = Frame {
            json: to_json(&snapshot),
            snapshot,
        };
        if tx.send(Arc::new(frame)).is_err() {
            return;
        }
    }
}

/// Lists the live shards and asks all of them at once.
async fn poll_shards(
    store: &StoreHandle,
    client: &reqwest::Client,
) -> Result<Vec<ShardPoll>, String> {
    let live = store
        .live_shards()
        .await
        .map_err(|e| format!("cannot list the live shards: {e}"))?;
    let mut asks = JoinSet::new();
    for shard in live {
        let client = client.clone();
        asks.spawn(async move { poll_shard(&client, shard).await });
    }
    let mut polls = Vec::new();
    while let Some(done) = asks.join_next().await {
        match done {
            Ok(poll) => polls.push(poll),
            Err(e) => tracing::warn!(error = %e, "live map: a shard poll failed"),
        }
    }
    Ok(polls)
}

async fn poll_shard(client: &reqwest::Client, live: LiveShard) -> ShardPoll {
    let (players, status) = match live.record.admin_addr.as_deref() {
        None => {
            let why = "no admin endpoint: its registry record has no admin_addr".to_owned();
            (Err(why.clone()), Err(why))
        }
        Some(addr) => {
            let players = async {
                let url = admin_url(addr, "/players")?;
                let body = fetch(client, &url).await?;
                let answer: ShardPlayers = serde_json::from_slice(&body)
                    .map_err(|e| format!("GET {url}: not a players list: {e}"))?;
                Ok(answer)
            };
            let status = async {
                let url = admin_url(addr, "/status")?;
                let body = fetch(client, &url).await?;
                let value: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|e| format!("GET {url}: not JSON: {e}"))?;
                Ok(TickFigures::from_status(&value))
            };
            tokio::join!(players, status)
        }
    };
    ShardPoll {
        live,
        players,
        status,
    }
}

/// The body of a `200` answer to `GET url`, within [`SHARD_TIMEOUT`] and [`MAX_ANSWER_BYTES`].
async fn fetch(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    get_body(client, url, SHARD_TIMEOUT).await
}

/// The body of a `200` answer to `GET url` on an admin endpoint, within `timeout` and
/// [`MAX_ANSWER_BYTES`]; any other answer is an error quoting the start of its body. Shared by
/// the map and `meridian audit`.
pub async fn get_body(
    client: &reqwest::Client,
    url: &str,
    timeout: std::time::Duration,
) -> Result<Vec<u8>, String> {
    let read = async {
        let mut response = client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {}", error_chain(&e)))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("GET {url}: reading the answer: {}", error_chain(&e)))?
        {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(format!(
                    "GET {url}: answer larger than {MAX_ANSWER_BYTES} bytes"
                ));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            let quoted: String = text
                .chars()
                .take(QUOTED_BODY_CHARS)
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            return Err(format!("GET {url}: HTTP {status}: {}", quoted.trim()));
        }
        Ok(body)
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(answer) => answer,
        Err(_elapsed) => Err(format!(
            "GET {url}: no answer within {} ms",
            timeout.as_millis()
        )),
    }
}

/// `http://<addr><path>`, if `addr` is a bare `host:port` (it comes from shared state, so it
/// may hold anything).
pub fn admin_url(addr: &str, path: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "bad admin_addr `{}` in its registry record",
            addr.escape_debug()
        )
    };
    let is_bare = !addr.is_empty()
        && addr.len() <= 255
        && addr
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_'));
    if !is_bare {
        return Err(bad());
    }
    let url = format!("http://{addr}{path}");
    let parsed = reqwest::Url::parse(&url).map_err(|_| bad())?;
    if parsed.host().is_none() || parsed.port_or_known_default().is_none() {
        return Err(bad());
    }
    Ok(url)
}

/// An error and its sources, `: `-separated (reqwest's own message is terse).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The map's routes (`/map`, `/map/events`, `/map/state`), to merge into an admin server.
pub fn router(source: MapSource) -> Router {
    Router::new()
        .route("/map", get(page))
        .route("/map/state", get(state))
        .route("/map/events", get(events))
        .with_state(source)
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn state(State(source): State<MapSource>) -> Response {
    let json = source.frames.borrow().json.clone();
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        json,
    )
        .into_response()
}

async fn events(
    State(source): State<MapSource>,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let mut frames = source.frames;
    // The newest frame at once, then each new one; a slow page skips frames, it never queues.
    frames.mark_changed();
    let stream = futures::stream::unfold(frames, |mut frames| async move {
        frames.changed().await.ok()?;
        let event = Event::default()
            .event("frame")
            .data(frames.borrow_and_update().json.as_str());
        Some((Ok(event), frames))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_cluster::audit::HeldPlayer;
    use meridian_cluster::store::ShardRecord;

    fn live(id: &str, zone: &str, draining: bool) -> LiveShard {
        LiveShard {
            record: ShardRecord {
                id: ShardId::new(id).expect("valid"),
                zone: ZoneId::new(zone).expect("valid"),
                region: "frankfurt".into(),
                addr: "127.0.0.1:1".into(),
                cert_sha256: [0; 32],
                capacity: 100,
                load: 2,
                draining,
                admin_addr: Some("127.0.0.1:2".into()),
            },
            heartbeat_ms: 0,
        }
    }

    fn held(player: u64, state: HeldState, pos: Option<[f32; 2]>) -> HeldPlayer {
        HeldPlayer {
            player: PlayerId(player),
            state,
            pos,
        }
    }

    fn poll(id: &str, zone: &str, players: Vec<HeldPlayer>) -> ShardPoll {
        let live = live(id, zone, false);
        ShardPoll {
            players: Ok(ShardPlayers {
                shard: live.record.id.clone(),
                zone: live.record.zone.clone(),
                lease_epoch: Some(1),
                players,
            }),
            status: Ok(TickFigures {
                p99_ms: Some(1.5),
                tick: Some(30),
            }),
            live,
        }
    }

    #[test]
    fn the_snapshot_holds_the_zones_shards_and_players() {
        let world = WorldMap::dev();
        let mut tracker = MapTracker::new(Some(&world));
        let snap = tracker.update(
            1_000,
            Ok(vec![
                poll(
                    "shard-west",
                    "west",
                    vec![
                        held(1, HeldState::Active, Some([10.0, 20.0])),
                        held(2, HeldState::Joining, None),
                    ],
                ),
                poll(
                    "shard-center",
                    "center",
                    vec![held(3, HeldState::Active, Some([1500.0, 500.0]))],
                ),
            ]),
        );
        assert_eq!(snap.seq, 1);
        let view = snap.world.as_ref().expect("a world");
        assert_eq!(
            (view.name.as_str(), view.min, view.max),
            ("dev", [0.0, 0.0], [3000.0, 1000.0])
        );
        let zones: Vec<&str> = snap.zones.iter().map(|z| z.id.as_str()).collect();
        assert_eq!(zones, ["west", "center", "east"]);
        let shards: Vec<(&str, ShardHealth, Option<u32>)> = snap
            .shards
            .iter()
            .map(|s| (s.id.as_str(), s.health, s.players))
            .collect();
        assert_eq!(
            shards,
            [
                ("shard-center", ShardHealth::Ok, Some(1)),
                ("shard-west", ShardHealth::Ok, Some(2))
            ]
        );
        assert_eq!(snap.shards[0].tick_p99_ms, Some(1.5));
        let dots: Vec<(u64, &str, [f32; 2])> = snap
            .players
            .iter()
            .map(|p| (p.id.0, p.shard.as_str(), p.pos))
            .collect();
        assert_eq!(
            dots,
            [
                (1, "shard-west", [10.0, 20.0]),
                (3, "shard-center", [1500.0, 500.0])
            ],
            "a player without a position is not drawn"
        );
        assert!(snap.handoffs.is_empty() && snap.store_error.is_none());
    }

    #[test]
    fn a_player_whose_shard_changed_is_a_handoff_shown_for_a_while() {
        let mut tracker = MapTracker::new(None);
        tracker.update(
            1_000,
            Ok(vec![
                poll(
                    "a",
                    "west",
                    vec![held(7, HeldState::Active, Some([990.0, 5.0]))],
                ),
                poll("b", "center", vec![]),
            ]),
        );
        // Mid-handoff: outgoing on a, incoming on b; drawn on b, the shard that simulates it.
        let snap = tracker.update(
            1_250,
            Ok(vec![
                poll(
                    "a",
                    "west",
                    vec![held(7, HeldState::Outgoing, Some([999.0, 5.0]))],
                ),
                poll(
                    "b",
                    "center",
                    vec![held(7, HeldState::Incoming, Some([1001.0, 5.0]))],
                ),
            ]),
        );
        assert_eq!(
            snap.players.len(),
            1,
            "each player once: {:?}",
            snap.players
        );
        assert_eq!(snap.players[0].shard.as_str(), "b");
        assert_eq!(
            snap.handoffs,
            [HandoffMark {
                player: PlayerId(7),
                from: ShardId::new("a").expect("valid"),
                to: ShardId::new("b").expect("valid"),
                from_pos: [990.0, 5.0],
                to_pos: [1001.0, 5.0],
                seen_ms: 1_250,
            }]
        );
        assert_eq!(snap.handoffs_total, 1);
        // The same shard again: no new handoff; the mark stays for HANDOFF_SHOWN.
        let later = 1_250 + duration_ms(HANDOFF_SHOWN);
        let snap = tracker.update(
            later,
            Ok(vec![poll(
                "b",
                "center",
                vec![held(7, HeldState::Active, Some([1010.0, 5.0]))],
            )]),
        );
        assert_eq!((snap.handoffs.len(), snap.handoffs_total), (1, 1));
        let snap = tracker.update(later + 1, Ok(vec![]));
        assert!(snap.handoffs.is_empty(), "{:?}", snap.handoffs);
        assert!(snap.players.is_empty());
        assert_eq!(snap.handoffs_total, 1);
    }

    #[test]
    fn a_player_unseen_for_long_is_forgotten_and_its_return_is_no_handoff() {
        let mut tracker = MapTracker::new(None);
        tracker.update(
            0,
            Ok(vec![poll(
                "a",
                "west",
                vec![held(1, HeldState::Active, Some([1.0, 1.0]))],
            )]),
        );
        // Its shard's answer missed one poll: it comes back on another shard, a handoff.
        tracker.update(250, Ok(vec![]));
        let snap = tracker.update(
            500,
            Ok(vec![poll(
                "b",
                "center",
                vec![held(1, HeldState::Active, Some([2.0, 1.0]))],
            )]),
        );
        assert_eq!(snap.handoffs_total, 1);
        // Gone longer than FORGET_AFTER: a fresh join, not a handoff.
        let back = 500 + duration_ms(FORGET_AFTER) + 1;
        tracker.update(back, Ok(vec![]));
        let snap = tracker.update(
            back + 250,
            Ok(vec![poll(
                "a",
                "west",
                vec![held(1, HeldState::Active, Some([3.0, 1.0]))],
            )]),
        );
        assert_eq!(snap.handoffs_total, 1);
    }

    #[test]
    fn unreachable_draining_and_store_errors_are_shown_with_why() {
        let mut tracker = MapTracker::new(None);
        let mut down = poll("a", "west", vec![]);
        down.players = Err("GET http://127.0.0.1:2/players: connection refused".into());
        down.status = Err("GET http://127.0.0.1:2/status: connection refused".into());
        let mut draining = poll("b", "center", vec![]);
        draining.live.record.draining = true;
        let snap = tracker.update(10, Ok(vec![down, draining]));
        assert_eq!(snap.shards[0].health, ShardHealth::Unreachable);
        assert_eq!(
            snap.shards[0].error.as_deref(),
            Some(
                "GET http://127.0.0.1:2/players: connection refused; \
                 GET http://127.0.0.1:2/status: connection refused"
            )
        );
        assert_eq!(snap.shards[0].players, None);
        assert_eq!(snap.shards[1].health, ShardHealth::Draining);
        assert_eq!(snap.shards[1].error, None);
        let snap = tracker.update(20, Err("cannot list the live shards: timeout".into()));
        assert_eq!(
            snap.store_error.as_deref(),
            Some("cannot list the live shards: timeout")
        );
        assert!(snap.shards.is_empty());
    }

    #[test]
    fn non_finite_positions_are_not_drawn() {
        let mut tracker = MapTracker::new(None);
        let snap = tracker.update(
            0,
            Ok(vec![poll(
                "a",
                "west",
                vec![
                    held(1, HeldState::Active, Some([f32::NAN, 1.0])),
                    held(2, HeldState::Active, Some([f32::INFINITY, 1.0])),
                    held(3, HeldState::Active, Some([4.0, 1.0])),
                ],
            )]),
        );
        let ids: Vec<u64> = snap.players.iter().map(|p| p.id.0).collect();
        assert_eq!(ids, [3]);
        assert!(to_json(&snap).contains("\"pos\":[4.0,1.0]"));
    }

    #[test]
    fn tick_figures_are_read_from_the_status_answer() {
        let status =
            serde_json::json!({"tick": 42, "recent": {"p99_ms": 2.5}, "total": {"p99_ms": 9.0}});
        assert_eq!(
            TickFigures::from_status(&status),
            TickFigures {
                p99_ms: Some(2.5),
                tick: Some(42)
            }
        );
        let flat = serde_json::json!({"tick_p99_ms": 3.0});
        assert_eq!(TickFigures::from_status(&flat).p99_ms, Some(3.0));
        assert_eq!(
            TickFigures::from_status(&serde_json::json!({"tick": "soon"})),
            TickFigures::default()
        );
    }

    #[test]
    fn admin_addresses_are_checked_before_use() {
        assert_eq!(
            admin_url("127.0.0.1:9000", "/status").as_deref(),
            Ok("http://127.0.0.1:9000/status")
        );
        assert_eq!(
            admin_url("[::1]:9000", "/players").as_deref(),
            Ok("http://[::1]:9000/players")
        );
        for bad in [
            "",
            "evil.example/steal?x=",
            "user@host:1",
            "a\nb",
            "[::1",
            "host:99999",
        ] {
            let err = admin_url(bad, "/players").expect_err(bad);
            assert!(err.contains("bad admin_addr"), "{bad:?}: {err}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }
    /// A fake shard admin endpoint answering `/players` and `/status`.
    async fn fake_shard(players: Vec<HeldPlayer>) -> std::net::SocketAddr {
        let answer = ShardPlayers {
            shard: ShardId::new("shard-west").expect("valid"),
            zone: ZoneId::new("west").expect("valid"),
            lease_epoch: Some(3),
            players,
        };
        let app = Router::new()
            .route("/players", get(move || async move { axum::Json(answer) }))
            .route(
                "/status",
                get(|| async {
                    axum::Json(serde_json::json!({"tick": 90, "recent": {"p99_ms": 1.25}}))
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    async fn get_text(url: &str) -> (u16, String) {
        let answer = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
            .get(url)
            .send()
            .await
            .expect("request");
        let code = answer.status().as_u16();
        (code, answer.text().await.expect("body"))
    }

    #[tokio::test]
    async fn the_routes_serve_the_page_the_state_and_a_stream_of_frames() {
        use meridian_cluster::{MemoryStore, SystemClock};
        let shard_admin = fake_shard(vec![
            held(1, HeldState::Active, Some([100.0, 200.0])),
            held(2, HeldState::Active, Some([300.0, 400.0])),
        ])
        .await;
        let store = MemoryStore::new(SystemClock);
        let mut record = live("shard-west", "west", false).record;
        record.admin_addr = Some(shard_admin.to_string());
        store
            .heartbeat_shard(&record, Duration::from_secs(60))
            .await
            .expect("registered");
        let source = MapSource::with_store(
            store.into(),
            Some(Arc::new(WorldMap::dev())),
            Duration::from_millis(20),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, router(source)).await });

        let (code, page) = get_text(&format!("http://{addr}/map")).await;
        assert_eq!(code, 200);
        assert!(
            page.contains("<canvas") && page.contains("data-players"),
            "{page}"
        );

        let state = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let (code, body) = get_text(&format!("http://{addr}/map/state")).await;
                assert_eq!(code, 200, "{body}");
                let snap: MapSnapshot = serde_json::from_str(&body).expect("a snapshot");
                if !snap.players.is_empty() {
                    return snap;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the players appear");
        let dots: Vec<(u64, [f32; 2])> = state.players.iter().map(|p| (p.id.0, p.pos)).collect();
        assert_eq!(dots, [(1, [100.0, 200.0]), (2, [300.0, 400.0])]);
        assert_eq!(state.shards.len(), 1);
        assert_eq!(state.shards[0].health, ShardHealth::Ok);
        assert_eq!(state.shards[0].tick_p99_ms, Some(1.25));
        assert_eq!(state.shards[0].tick, Some(90));
        assert_eq!(state.zones.len(), 3);

        // Two frames of the event stream, each a snapshot, the second newer.
        let mut answer = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
            .get(format!("http://{addr}/map/events"))
            .send()
            .await
            .expect("events");
        assert_eq!(answer.status().as_u16(), 200);
        let content_type = answer
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(content_type, "text/event-stream");
        let mut text = String::new();
        let frames = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let chunk = answer.chunk().await.expect("stream").expect("open stream");
                text.push_str(&String::from_utf8_lossy(&chunk));
                let frames: Vec<MapSnapshot> = text
                    .split("\n\n")
                    .filter(|e| e.contains("event: frame"))
                    .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
                    .filter_map(|d| serde_json::from_str(d).ok())
                    .collect();
                if frames.len() >= 2 {
                    return frames;
                }
            }
        })
        .await
        .expect("two frames arrive");
        assert!(
            frames[1].seq > frames[0].seq,
            "{} then {}",
            frames[0].seq,
            frames[1].seq
        );
        assert_eq!(frames[1].players.len(), 2);
    }

    #[tokio::test]
    async fn stop_ends_the_open_event_streams_so_a_graceful_shutdown_finishes() {
        let (_keep, rx) = watch::channel(None);
        let source = MapSource::start(rx, None, Duration::from_millis(10));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let (shut, shutting) = tokio::sync::oneshot::channel::<()>();
        let app = router(source.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = shutting.await;
                })
                .await
        });
        let mut answer = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
            .get(format!("http://{addr}/map/events"))
            .send()
            .await
            .expect("events");
        let first = answer
            .chunk()
            .await
            .expect("stream")
            .expect("a first frame");
        assert!(String::from_utf8_lossy(&first).contains("event: frame"));
        source.stop();
        shut.send(()).expect("server waits");
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            while answer.chunk().await.expect("stream").is_some() {}
        })
        .await;
        assert!(ended.is_ok(), "the event stream ends at stop");
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server shuts down with a page open")
            .expect("server task")
            .expect("server ran");
        let seq = source.latest().seq;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(source.latest().seq, seq, "no poll after stop");
    }

    #[tokio::test]
    async fn without_a_store_the_snapshot_says_so() {
        let (_keep, rx) = watch::channel(None);
        let source = MapSource::start(rx, None, Duration::from_millis(10));
        let snap = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let snap = source.latest();
                if snap.seq > 0 {
                    return snap;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("a poll ran");
        assert_eq!(
            snap.store_error.as_deref(),
            Some("the shared state is not connected yet")
        );
        assert!(snap.world.is_none() && snap.zones.is_empty());
    }
}
