//! The shard's admin HTTP endpoint (plain HTTP/1.1, for the operator network): what the shard
//! holds, for `meridian audit`, and its tick status.
//!
//! Routes:
//! - `GET /players`: the players the shard holds, as [`ShardPlayers`] JSON. The tick thread
//!   answers an [`AdminQuery::Players`] on its next tick; `503` with `{"error": …}` if it does
//!   not within [`PLAYERS_TIMEOUT`] or has stopped.
//! - `GET /status`: the last [`TickStatus`] the tick thread published, as JSON.
//! - `GET /healthz`: `200 ok` while the endpoint serves.
//!
//! Any other path is `404` with `{"error": …}`; another method on a known path is `405`.
//!
//! The endpoint never touches the simulation: it asks the tick thread over a bounded channel
//! ([`AdminState::queries`]), which drains it with `try_recv`, and never waits on it for longer
//! than [`PLAYERS_TIMEOUT`].

use crate::metrics::TickStatus;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use meridian_cluster::audit::{HeldPlayer, ShardPlayers};
use meridian_protocol::{ShardId, ZoneId};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Longest `GET /players` waits for the tick thread's answer.
pub const PLAYERS_TIMEOUT: Duration = Duration::from_secs(2);

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

/// `GET /status`: the last published tick status.
async fn status(State(state): State<AdminState>) -> Json<TickStatus> {
    // A panicked tick thread leaves its last status readable.
    let status = state
        .status
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    Json(status)
}

/// Any other path.
async fn not_found(uri: Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!("no such path: {}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
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
                    },
                    HeldPlayer {
                        player: PlayerId(9),
                        state: HeldState::Outgoing,
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
                    state: HeldState::Active
                },
                HeldPlayer {
                    player: PlayerId(9),
                    state: HeldState::Outgoing
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
            request(endpoint.addr, "GET", "/healthz").await,
            (200, "ok".to_owned())
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
