//! The shard's admin HTTP endpoint (plain HTTP/1.1, for the operator network): what the shard
//! holds, for `meridian audit`, and its tick status.
//!
//! Routes:
//! - `GET /players`: the players the shard holds, as [`ShardPlayers`] JSON. The tick thread
//!   answers an [`AdminQuery::Players`] on its next tick; `503` with `{"error": …}` if it does
//!   not within [`PLAYERS_TIMEOUT`] or has stopped.
//! - `GET /status`: [`ShardStatus`] JSON: role, id, zone, lease epoch, the state of shared
//!   state (Redis), and the last [`TickStatus`] the tick thread published (players, tick
//!   times), its fields at the top level.
//! - `GET /healthz`: `200 ok` while the endpoint serves (the process is alive).
//! - `GET /readyz`: [`Readiness`] JSON, `200` when the shard is registered, holds its zone's
//!   lease and reaches shared state, else `503` with the reasons; a shard without shared state
//!   (`meridian shard` without `--redis`) is ready while it serves.
//! - `GET /metrics`: the Prometheus text exposition of the shard's metrics
//!   ([`crate::metrics::ShardCollector`]).
//!
//! Any other path is `404` with `{"error": …}`; another method on a known path is `405`.
//!
//! The endpoint never touches the simulation: it asks the tick thread over a bounded channel
//! ([`AdminState::queries`]), which drains it with `try_recv`, and never waits on it for longer
//! than [`PLAYERS_TIMEOUT`].

use crate::metrics::TickStatus;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use meridian_cluster::Store;
use meridian_cluster::audit::{HeldPlayer, ShardPlayers};
use meridian_cluster::metrics::{TEXT_CONTENT_TYPE, encode_text};
use meridian_cluster::ownership::Lease;
use meridian_cluster::store::StoreHandle;
use meridian_protocol::{ShardId, ZoneId};
use prometheus_client::registry::Registry;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Longest `GET /players` waits for the tick thread's answer.
pub const PLAYERS_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest `GET /readyz` and `GET /status` wait for shared state to answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// A question the admin endpoint asks the tick thread, which answers it on its next tick.
#[derive(Debug)]
pub enum AdminQuery {
    /// Every player the shard holds, with its state.
    Players(oneshot::Sender<Vec<HeldPlayer>>),
}

/// What the admin endpoint serves from. Cheap to clone (handles only).
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The shard.
    pub shard: ShardId,
    /// The zone it simulates.
    pub zone: ZoneId,
    /// The epoch of the zone lease it holds; 0 while it holds none.
    pub lease_epoch: Arc<AtomicU64>,
    /// The tick status the tick thread publishes.
    pub status: Arc<Mutex<TickStatus>>,
    /// Questions for the tick thread.
    pub queries: mpsc::Sender<AdminQuery>,
    /// What `GET /metrics` exposes.
    pub exporter: Arc<Registry>,
    /// Shared state and the zone lease, when the shard is part of a world.
    pub cluster: Option<AdminCluster>,
}

/// What `GET /readyz` checks of a shard in a world.
#[derive(Debug, Clone)]
pub struct AdminCluster {
    /// Shared state.
    pub store: StoreHandle,
    /// The zone lease held now (None while lost).
    pub lease: watch::Receiver<Option<Lease>>,
}

/// `GET /status`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ShardStatus {
    /// Always `shard`.
    pub role: &'static str,
    /// The shard.
    pub id: ShardId,
    /// Its zone.
    pub zone: ZoneId,
    /// Epoch of the zone lease held; 0 while none is held.
    pub lease_epoch: u64,
    /// Shared state: `reachable`, `unreachable: <why>`, or `none` (not part of a world).
    pub redis: String,
    /// Median whole tick since start, milliseconds (also in `total`).
    pub tick_p50_ms: f64,
    /// 99th percentile whole tick since start, milliseconds (also in `total`).
    pub tick_p99_ms: f64,
    /// The last published tick status.
    #[serde(flatten)]
    pub tick: TickStatus,
}

/// `GET /readyz`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Readiness {
    /// Whether every check passed.
    pub ready: bool,
    /// Shared state: `reachable`, `unreachable: <why>`, or `none`.
    pub redis: String,
    /// Whether the registry lists this shard (None without shared state).
    pub registered: Option<bool>,
    /// Whether the shard holds its zone's lease (None without shared state).
    pub lease_held: Option<bool>,
    /// Why it is not ready, one line per failed check.
    pub reasons: Vec<String>,
}

/// Shared state answers, and whether its registry lists `shard`.
async fn probe(store: &StoreHandle, shard: &ShardId) -> Result<bool, String> {
    match tokio::time::timeout(PROBE_TIMEOUT, store.live_shards()).await {
        Ok(Ok(live)) => Ok(live.iter().any(|s| &s.record.id == shard)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", PROBE_TIMEOUT.as_millis())),
    }
}

/// The readiness of the shard `state` serves.
pub async fn readiness(state: &AdminState) -> Readiness {
    let Some(cluster) = &state.cluster else {
        return Readiness {
            ready: true,
            redis: "none".to_owned(),
            registered: None,
            lease_held: None,
            reasons: Vec::new(),
        };
    };
    let mut reasons = Vec::new();
    let (redis, registered) = match probe(&cluster.store, &state.shard).await {
        Ok(registered) => ("reachable".to_owned(), registered),
        Err(e) => {
            reasons.push(format!("shared state unreachable: {e}"));
            (format!("unreachable: {e}"), false)
        }
    };
    if !registered && reasons.is_empty() {
        reasons.push(format!(
            "shard {} is not in the registry (yet)",
            state.shard
        ));
    }
    let lease_held = cluster.lease.borrow().is_some();
    if !lease_held {
        reasons.push(format!("the lease on zone {} is not held", state.zone));
    }
    Readiness {
        ready: reasons.is_empty(),
        redis,
        registered: Some(registered),
        lease_held: Some(lease_held),
        reasons,
    }
}

/// Serves the admin endpoint on `listener` until `shutdown` completes, then lets the requests
/// in flight finish. Errors accepting a connection are retried; the result is an error only if
/// the server itself fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state, PLAYERS_TIMEOUT))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The routes, with `GET /players` waiting at most `players_timeout` for the tick thread.
fn router(state: AdminState, players_timeout: Duration) -> Router {
    Router::new()
        .route(
            "/players",
            get(move |State(state): State<AdminState>| players(state, players_timeout)),
        )
        .route("/status", get(status))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

/// The JSON body of an error answer.
#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    /// Why the request failed.
    error: &'a str,
}

/// `{"error": reason}` with `code`.
fn error(code: StatusCode, reason: &str) -> Response {
    (code, Json(ErrorBody { error: reason })).into_response()
}

/// `GET /players`: asks the tick thread, answers [`ShardPlayers`] or `503`.
async fn players(state: AdminState, timeout: Duration) -> Response {
    let (reply, answer) = oneshot::channel();
    let asked = tokio::time::timeout(timeout, async {
        state
            .queries
            .send(AdminQuery::Players(reply))
            .await
            .map_err(|_| "the tick thread has stopped")?;
        answer
            .await
            .map_err(|_| "the tick thread dropped the question")
    })
    .await;
    match asked {
        Ok(Ok(players)) => {
            let epoch = state.lease_epoch.load(Ordering::Acquire);
            Json(ShardPlayers {
                shard: state.shard,
                zone: state.zone,
                lease_epoch: (epoch != 0).then_some(epoch),
                players,
            })
            .into_response()
        }
        Ok(Err(reason)) => {
            tracing::warn!(reason, "admin: cannot list the players");
            error(StatusCode::SERVICE_UNAVAILABLE, reason)
        }
        Err(_elapsed) => {
            let reason = format!(
                "the tick thread did not answer within {} ms",
                timeout.as_millis()
            );
            tracing::warn!(%reason, "admin: cannot list the players");
            error(StatusCode::SERVICE_UNAVAILABLE, &reason)
        }
    }
}

/// `GET /status`: identity, lease, shared state and the last published tick status.
async fn status(State(state): State<AdminState>) -> Json<ShardStatus> {
    // A panicked tick thread leaves its last status readable.
    let tick = state
        .status
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let redis = match &state.cluster {
        None => "none".to_owned(),
        Some(c) => match probe(&c.store, &state.shard).await {
            Ok(_) => "reachable".to_owned(),
            Err(e) => format!("unreachable: {e}"),
        },
    };
    Json(ShardStatus {
        role: "shard",
        id: state.shard.clone(),
        zone: state.zone.clone(),
        lease_epoch: state.lease_epoch.load(Ordering::Acquire),
        redis,
        tick_p50_ms: tick.total.p50_ms,
        tick_p99_ms: tick.total.p99_ms,
        tick,
    })
}

/// `GET /readyz`: `200` or `503` with [`Readiness`].
async fn ready(State(state): State<AdminState>) -> Response {
    let r = readiness(&state).await;
    let code = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(r)).into_response()
}

/// `GET /metrics`: the Prometheus text exposition of `state.exporter`.
async fn metrics(State(state): State<AdminState>) -> Response {
    exposition(&state.exporter)
}

/// The Prometheus text exposition of `registry`, or `500` with `{"error": …}`.
pub fn exposition(registry: &Registry) -> Response {
    match encode_text(registry) {
        Ok(text) => ([(header::CONTENT_TYPE, TEXT_CONTENT_TYPE)], text).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode the metrics: {e}"),
        ),
    }
}

/// Any other path.
async fn not_found(uri: Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!("no such path: {}", uri.path()),
    )
}

// ---- `POST /drain` (graceful drain, token-protected) ----

/// What `POST /drain` needs: the operator's bearer token and the switch it turns.
///
/// `POST /drain` with `Authorization: Bearer <token>` asks the shard to drain (`202` with
/// `{"draining": true}`); a missing or wrong token is `401` with `{"error": …}`; a shard
/// started without `--admin-token` answers `404` with `{"error": …}` (the route is off).
#[derive(Debug, Clone)]
pub struct DrainControl {
    /// The token `--admin-token` set; `None`: the route is off.
    pub token: Option<String>,
    /// Turned true by an authorized request; the shard's run loop drains on it.
    pub requested: Arc<tokio::sync::watch::Sender<bool>>,
}

/// The `POST /drain` route alone, with its state applied.
pub fn drain_routes(control: DrainControl) -> Router {
    Router::new()
        .route("/drain", axum::routing::post(drain))
        .with_state(control)
}

/// Like [`serve`], with the `POST /drain` route added.
pub async fn serve_with_drain(
    listener: tokio::net::TcpListener,
    state: AdminState,
    control: DrainControl,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = drain_routes(control).merge(router(state, PLAYERS_TIMEOUT));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// `POST /drain`: checks the bearer token, then turns the drain switch.
async fn drain(State(control): State<DrainControl>, headers: axum::http::HeaderMap) -> Response {
    let Some(expected) = &control.token else {
        return error(
            StatusCode::NOT_FOUND,
            "POST /drain is off: the shard was started without --admin-token",
        );
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(given) = given else {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing `Authorization: Bearer <token>` header",
        );
    };
    if !same_token(given.trim().as_bytes(), expected.as_bytes()) {
        return error(StatusCode::UNAUTHORIZED, "wrong admin token");
    }
    control.requested.send_replace(true);
    tracing::info!("drain requested on the admin endpoint");
    /// The answer of an accepted drain.
    #[derive(serde::Serialize)]
    struct Draining {
        /// Always true.
        draining: bool,
    }
    (StatusCode::ACCEPTED, Json(Draining { draining: true })).into_response()
}

/// Compares two tokens in time independent of where they differ.
fn same_token(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{ShardCollector, ShardMetrics, ShardSource};
    use meridian_cluster::audit::HeldState;
    use meridian_protocol::PlayerId;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A running endpoint on a loopback port, with the other end of its channel.
    struct Endpoint {
        addr: SocketAddr,
        queries: mpsc::Receiver<AdminQuery>,
        lease_epoch: Arc<AtomicU64>,
        stop: Option<oneshot::Sender<()>>,
        server: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    /// The metrics of shard eu-1 in zone west, after 5 ticks.
    fn exporter() -> Registry {
        let metrics = Arc::new(ShardMetrics::default());
        ShardMetrics::add(&metrics.ticks, 5);
        ShardCollector::new(vec![ShardSource {
            shard: ShardId::new("eu-1").expect("valid"),
            zone: ZoneId::new("west").expect("valid"),
            metrics,
            lease: None,
            status: Arc::default(),
        }])
        .into_registry()
    }

    async fn start(players_timeout: Duration) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let (queries_tx, queries) = mpsc::channel(4);
        let lease_epoch = Arc::new(AtomicU64::new(0));
        let status = TickStatus {
            tick: 42,
            players: 3,
            overruns: 1,
            ..TickStatus::default()
        };
        let state = AdminState {
            shard: ShardId::new("eu-1").expect("valid"),
            zone: ZoneId::new("west").expect("valid"),
            lease_epoch: Arc::clone(&lease_epoch),
            status: Arc::new(Mutex::new(status)),
            queries: queries_tx,
            exporter: Arc::new(exporter()),
            cluster: None,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let app = router(state, players_timeout);
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Endpoint {
            addr,
            queries,
            lease_epoch,
            stop: Some(stop),
            server,
        }
    }

    /// Sends raw bytes as a request; the status code and the body of the answer.
    async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request).await.expect("write request");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("read answer");
        let answer = String::from_utf8(answer).expect("UTF-8 answer");
        let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
        let code = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("a status line");
        (code, body.to_owned())
    }

    async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
        let text = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
        raw(addr, text.as_bytes()).await
    }

    fn json(body: &str) -> serde_json::Value {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
    }

    #[tokio::test]
    async fn players_come_from_the_tick_thread_with_the_lease_epoch() {
        let mut endpoint = start(PLAYERS_TIMEOUT).await;
        let mut queries = endpoint.queries;
        let fake_tick = tokio::spawn(async move {
            let mut answered = 0;
            while let Some(AdminQuery::Players(reply)) = queries.recv().await {
                let held = vec![
                    HeldPlayer {
                        player: PlayerId(7),
                        state: HeldState::Active,
                        pos: None,
                    },
                    HeldPlayer {
                        player: PlayerId(9),
                        state: HeldState::Outgoing,
                        pos: None,
                    },
                ];
                reply.send(held).expect("the endpoint waits");
                answered += 1;
            }
            answered
        });
        let (code, body) = request(endpoint.addr, "GET", "/players").await;
        assert_eq!(code, 200, "{body}");
        let answer: ShardPlayers = serde_json::from_str(&body).expect("ShardPlayers JSON");
        assert_eq!(answer.shard.as_str(), "eu-1");
        assert_eq!(answer.zone.as_str(), "west");
        assert_eq!(answer.lease_epoch, None, "no lease: epoch 0");
        assert_eq!(
            answer.players,
            [
                HeldPlayer {
                    player: PlayerId(7),
                    state: HeldState::Active,
                    pos: None,
                },
                HeldPlayer {
                    player: PlayerId(9),
                    state: HeldState::Outgoing,
                    pos: None,
                }
            ]
        );
        assert_eq!(json(&body)["players"][1]["state"], "outgoing");

        endpoint.lease_epoch.store(12, Ordering::Release);
        let (code, body) = request(endpoint.addr, "GET", "/players").await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(json(&body)["lease_epoch"], 12);

        endpoint
            .stop
            .take()
            .expect("running")
            .send(())
            .expect("server waits");
        endpoint
            .server
            .await
            .expect("server task")
            .expect("server stops cleanly");
        let answered = tokio::time::timeout(Duration::from_secs(10), fake_tick)
            .await
            .expect("the channel closes with the server")
            .expect("fake tick");
        assert_eq!(answered, 2);
    }

    fn error_of(body: &str) -> String {
        json(body)["error"].as_str().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn players_is_503_when_the_tick_thread_is_silent() {
        let endpoint = start(Duration::from_millis(50)).await;
        let Endpoint {
            addr, mut queries, ..
        } = endpoint;
        // Takes the question and never answers.
        let silent = tokio::spawn(async move {
            let kept = queries.recv().await;
            (queries, kept)
        });
        let (code, body) = request(addr, "GET", "/players").await;
        assert_eq!(code, 503, "{body}");
        assert_eq!(
            error_of(&body),
            "the tick thread did not answer within 50 ms"
        );
        let (_queries, kept) = silent.await.expect("silent task");
        assert!(kept.is_some(), "the question reached the tick thread");
    }

    #[tokio::test]
    async fn players_is_503_when_the_tick_thread_drops_the_question_or_is_gone() {
        let endpoint = start(PLAYERS_TIMEOUT).await;
        let Endpoint {
            addr, mut queries, ..
        } = endpoint;
        let dropping = tokio::spawn(async move {
            drop(queries.recv().await);
            queries
        });
        let (code, body) = request(addr, "GET", "/players").await;
        assert_eq!(code, 503, "{body}");
        assert_eq!(error_of(&body), "the tick thread dropped the question");
        drop(dropping.await.expect("dropping task"));
        let (code, body) = request(addr, "GET", "/players").await;
        assert_eq!(code, 503, "{body}");
        assert_eq!(error_of(&body), "the tick thread has stopped");
    }

    #[tokio::test]
    async fn status_health_and_unknown_paths() {
        let endpoint = start(PLAYERS_TIMEOUT).await;
        let (code, body) = request(endpoint.addr, "GET", "/status").await;
        assert_eq!(code, 200, "{body}");
        let status = json(&body);
        assert_eq!(
            (
                &status["tick"],
                &status["players"],
                &status["overruns"],
                &status["total"]["p99_ms"]
            ),
            (
                &serde_json::json!(42),
                &serde_json::json!(3),
                &serde_json::json!(1),
                &serde_json::json!(0.0)
            ),
            "{body}"
        );
        assert_eq!(
            (
                &status["role"],
                &status["id"],
                &status["zone"],
                &status["redis"]
            ),
            (
                &serde_json::json!("shard"),
                &serde_json::json!("eu-1"),
                &serde_json::json!("west"),
                &serde_json::json!("none")
            ),
            "{body}"
        );
        assert_eq!(
            request(endpoint.addr, "GET", "/healthz").await,
            (200, "ok".to_owned())
        );
        let (code, body) = request(endpoint.addr, "GET", "/readyz").await;
        assert_eq!(
            code, 200,
            "without shared state a serving shard is ready: {body}"
        );
        assert_eq!(json(&body)["ready"], true);
        let (code, body) = request(endpoint.addr, "GET", "/metrics").await;
        assert_eq!(code, 200, "{body}");
        assert!(
            body.lines().any(|l| l
                == "meridian_shard_ticks_total{role=\"shard\",shard=\"eu-1\",zone=\"west\"} 5"),
            "{body}"
        );
        let (code, body) = request(endpoint.addr, "GET", "/nope").await;
        assert_eq!(code, 404, "{body}");
        assert_eq!(json(&body)["error"], "no such path: /nope");
        let (code, _) = request(endpoint.addr, "POST", "/players").await;
        assert_eq!(code, 405);
    }

    #[tokio::test]
    async fn a_malformed_request_is_refused_and_the_endpoint_serves_on() {
        let endpoint = start(PLAYERS_TIMEOUT).await;
        let mut stream = TcpStream::connect(endpoint.addr).await.expect("connect");
        stream
            .write_all(b"\x00\x01 not http at all\r\n\r\n")
            .await
            .expect("write");
        let mut answer = Vec::new();
        // hyper answers 400 or closes; either way the connection ends.
        stream.read_to_end(&mut answer).await.expect("read");
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
            "{answer}"
        );
        assert_eq!(
            request(endpoint.addr, "GET", "/healthz").await,
            (200, "ok".to_owned())
        );
    }
}

// ---- standby: the endpoint while no zone is held ----

/// `GET /status` of a standby.
#[derive(Debug, Clone, serde::Serialize)]
struct StandbyStatus<'a> {
    /// Always `shard`.
    role: &'static str,
    /// The shard.
    id: &'a ShardId,
    /// Always true here.
    standby: bool,
    /// The zones it takes over when their lease is free.
    zones: &'a [ZoneId],
    /// Always 0: a standby holds nobody.
    players: u32,
}

/// Serves a standby's endpoint until `shutdown` completes (the standby took a zone and the full
/// endpoint takes the socket over): `GET /healthz` `200 ok`; `GET /readyz` `503` (it serves no
/// zone yet); `GET /status` a [`StandbyStatus`]; `GET /players` an empty [`ShardPlayers`] (so
/// `meridian audit` counts a standby as holding nobody rather than unreachable); anything else
/// `404` with `{"error": …}`.
pub async fn serve_standby(
    listener: tokio::net::TcpListener,
    shard: ShardId,
    zones: Vec<ZoneId>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, standby_router(shard, zones))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The routes of [`serve_standby`].
fn standby_router(shard: ShardId, zones: Vec<ZoneId>) -> Router {
    let state = Arc::new((shard, zones));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<Arc<(ShardId, Vec<ZoneId>)>>| async move {
                let names: Vec<&str> = s.1.iter().map(ZoneId::as_str).collect();
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!(
                        "standing by for zones {}; holds no zone lease",
                        names.join(",")
                    ),
                )
            }),
        )
        .route(
            "/status",
            get(|State(s): State<Arc<(ShardId, Vec<ZoneId>)>>| async move {
                Json(StandbyStatus {
                    role: "shard",
                    id: &s.0,
                    standby: true,
                    zones: &s.1,
                    players: 0,
                })
                .into_response()
            }),
        )
        .route(
            "/players",
            get(|State(s): State<Arc<(ShardId, Vec<ZoneId>)>>| async move {
                match s.1.first() {
                    Some(zone) => Json(ShardPlayers {
                        shard: s.0.clone(),
                        zone: zone.clone(),
                        lease_epoch: None,
                        players: Vec::new(),
                    })
                    .into_response(),
                    None => error(StatusCode::SERVICE_UNAVAILABLE, "standby for no zone"),
                }
            }),
        )
        .fallback(not_found)
        .with_state(state)
}
