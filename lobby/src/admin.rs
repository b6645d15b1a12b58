//! The lobby's admin HTTP endpoint (plain HTTP/1.1, for the operator network).
//!
//! Routes:
//! - `GET /healthz`: `200 ok` while the endpoint serves (the process is alive).
//! - `GET /readyz`: [`LobbyReadiness`] JSON, `200` when shared state (Redis) answers, else
//!   `503` with the reason: without it every join is refused.
//! - `GET /status`: [`LobbyStatus`] JSON: role, QUIC address, shared state, live shards, joins.
//! - `GET /metrics`: the Prometheus text exposition of [`LobbyCollector`].
//! - whatever the `extra` router of [`serve`] adds (the live map, [`crate::map::router`]).
//!
//! Any other path is `404` with `{"error": …}`.

use crate::service::LobbyMetrics;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use meridian_cluster::metrics::{
    Exposition, Labels, StoreOpMetrics, TEXT_CONTENT_TYPE, encode_text,
};
use meridian_cluster::store::{Store as _, StoreHandle};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// Longest `GET /readyz` and `GET /status` wait for shared state to answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the admin endpoint serves from. Cheap to clone (handles only).
#[derive(Debug, Clone)]
pub struct LobbyAdminState {
    /// The address of the lobby's QUIC endpoint.
    pub addr: SocketAddr,
    /// Shared state, once connected.
    pub store: watch::Receiver<Option<StoreHandle>>,
    /// The lobby's counters.
    pub metrics: Arc<LobbyMetrics>,
    /// What `GET /metrics` exposes.
    pub exporter: Arc<Registry>,
}

impl LobbyAdminState {
    /// The state of a lobby at `addr` with `metrics`, exposing them alone.
    pub fn new(
        addr: SocketAddr,
        store: watch::Receiver<Option<StoreHandle>>,
        metrics: Arc<LobbyMetrics>,
    ) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(LobbyCollector {
            metrics: metrics.clone(),
        }));
        Self {
            addr,
            store,
            metrics,
            exporter: Arc::new(registry),
        }
    }
}

/// Serves the admin endpoint on `listener`, with the routes of `extra` merged in, until
/// `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: LobbyAdminState,
    extra: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state).merge(extra))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The routes (without extras).
pub fn router(state: LobbyAdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

/// `GET /readyz`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LobbyReadiness {
    /// Whether shared state answers.
    pub ready: bool,
    /// Shared state: `reachable`, `unreachable: <why>`, or `connecting`.
    pub redis: String,
    /// Why it is not ready.
    pub reasons: Vec<String>,
}

/// `GET /status`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LobbyStatus {
    /// Always `lobby`.
    pub role: &'static str,
    /// The address of its QUIC endpoint.
    pub addr: String,
    /// Shared state: `reachable`, `unreachable: <why>`, or `connecting`.
    pub redis: String,
    /// Shards in the registry now (None while shared state does not answer).
    pub live_shards: Option<usize>,
    /// Joins granted since start.
    pub grants: u64,
    /// Joins refused since start, all reasons.
    pub refusals: u64,
}

/// Shared state answers: the number of live shards, or why not.
pub async fn probe(store: &watch::Receiver<Option<StoreHandle>>) -> Result<usize, String> {
    let Some(store) = store.borrow().clone() else {
        return Err("connecting".to_owned());
    };
    match tokio::time::timeout(PROBE_TIMEOUT, store.live_shards()).await {
        Ok(Ok(live)) => Ok(live.len()),
        Ok(Err(e)) => Err(format!("unreachable: {e}")),
        Err(_) => Err(format!(
            "unreachable: no answer within {} ms",
            PROBE_TIMEOUT.as_millis()
        )),
    }
}

async fn ready(State(state): State<LobbyAdminState>) -> Response {
    let (code, body) = match probe(&state.store).await {
        Ok(_) => (
            StatusCode::OK,
            LobbyReadiness {
                ready: true,
                redis: "reachable".to_owned(),
                reasons: Vec::new(),
            },
        ),
        Err(redis) => (
            StatusCode::SERVICE_UNAVAILABLE,
            LobbyReadiness {
                ready: false,
                reasons: vec![format!("shared state: {redis}")],
                redis,
            },
        ),
    };
    (code, Json(body)).into_response()
}

async fn status(State(state): State<LobbyAdminState>) -> Json<LobbyStatus> {
    Json(status_of(&state).await)
}

/// The status of the lobby `state` serves.
pub async fn status_of(state: &LobbyAdminState) -> LobbyStatus {
    let (redis, live_shards) = match probe(&state.store).await {
        Ok(n) => ("reachable".to_owned(), Some(n)),
        Err(redis) => (redis, None),
    };
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let m = &state.metrics;
    LobbyStatus {
        role: "lobby",
        addr: state.addr.to_string(),
        redis,
        live_shards,
        grants: get(&m.grants),
        refusals: refusals(m).iter().map(|(_, c)| get(c)).sum(),
    }
}

async fn metrics(State(state): State<LobbyAdminState>) -> Response {
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

/// The JSON body of an error answer.
#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    /// Why the request failed.
    error: &'a str,
}

/// `{"error": reason}` with `code`.
pub fn error(code: StatusCode, reason: &str) -> Response {
    (code, Json(ErrorBody { error: reason })).into_response()
}

/// Any other path: `404` with `{"error": "no such path: …"}`.
pub async fn not_found(uri: Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!("no such path: {}", uri.path()),
    )
}

/// The refusal counters, by outcome label.
fn refusals(m: &LobbyMetrics) -> [(&'static str, &AtomicU64); 6] {
    [
        ("rejected_version", &m.rejected_version),
        ("rejected_malformed", &m.rejected_malformed),
        ("rejected_name", &m.rejected_name),
        ("rejected_ticket", &m.rejected_ticket),
        ("rejected_unavailable", &m.rejected_unavailable),
        ("rejected_no_shard", &m.rejected_no_shard),
    ]
}

/// Exports a lobby's [`LobbyMetrics`], read at scrape time; samples carry `role="lobby"`.
#[derive(Clone, Debug)]
pub struct LobbyCollector {
    /// The lobby's counters.
    pub metrics: Arc<LobbyMetrics>,
}

impl LobbyCollector {
    fn write(&self, out: &mut Exposition<'_>) -> Result<(), std::fmt::Error> {
        let labels = Labels(vec![("role", "lobby".into())]);
        let m = &*self.metrics;
        // Destructured so that a new counter cannot be left unexported.
        let LobbyMetrics {
            hellos,
            grants,
            rejected_version: _,
            rejected_malformed: _,
            rejected_name: _,
            rejected_ticket: _,
            rejected_unavailable: _,
            rejected_no_shard: _,
            resumed_to_zone,
            resume_no_holder,
            routing,
            store_ops,
        } = m;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        out.counters(
            "meridian_lobby_hellos",
            "Hellos answered with candidate shards",
            std::iter::once((labels.clone(), get(hellos))),
        )?;
        out.counters(
            "meridian_lobby_joins",
            "Joins by outcome: granted, or refused with the reason",
            std::iter::once((labels.with("outcome", "granted"), get(grants))).chain(
                refusals(m)
                    .into_iter()
                    .map(|(outcome, c)| (labels.with("outcome", outcome), get(c))),
            ),
        )?;
        out.counters(
            "meridian_lobby_routing_decisions",
            "Decisions of the routing policy by outcome: routed, or the reason no shard fits",
            [
                ("routed", &routing.routed),
                ("none_measured", &routing.none_measured),
                ("all_full", &routing.all_full),
                ("no_shards", &routing.no_shards),
                ("all_draining", &routing.all_draining),
            ]
            .into_iter()
            .map(|(outcome, c)| (labels.with("outcome", outcome), get(c))),
        )?;
        out.counters(
            "meridian_lobby_resumes",
            "Hellos with a resume ticket of a player still owned in a zone: offered that \
             zone's holder (to_zone), or refused while no live shard holds it (no_holder)",
            [
                ("to_zone", resumed_to_zone),
                ("no_holder", resume_no_holder),
            ]
            .into_iter()
            .map(|(outcome, c)| (labels.with("outcome", outcome), get(c))),
        )?;
        StoreOpMetrics::expose(
            out,
            "meridian_lobby",
            std::iter::once((labels.clone(), store_ops)),
        )
    }
}

impl Collector for LobbyCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.write(&mut Exposition::new(encoder))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    async fn fetch(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let text = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
        stream.write_all(text.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("read");
        let answer = String::from_utf8(answer).expect("UTF-8");
        let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
        let code = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status line");
        (code, body.to_owned())
    }

    #[tokio::test]
    async fn routes_without_shared_state_and_an_extra_router() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let metrics = Arc::new(LobbyMetrics::default());
        metrics.grants.fetch_add(3, Ordering::Relaxed);
        metrics.routing.routed.fetch_add(3, Ordering::Relaxed);
        let (_store_tx, store) = watch::channel(None);
        let state =
            LobbyAdminState::new("127.0.0.1:7100".parse().expect("literal"), store, metrics);
        let extra = Router::new().route("/extra", get_route());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, state, extra, async {
            let _ = stopped.await;
        }));

        assert_eq!(fetch(addr, "/healthz").await, (200, "ok".to_owned()));
        let (code, body) = fetch(addr, "/readyz").await;
        assert_eq!(code, 503, "{body}");
        let ready: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(ready["ready"], false);
        assert_eq!(ready["reasons"][0], "shared state: connecting");
        let (code, body) = fetch(addr, "/status").await;
        assert_eq!(code, 200, "{body}");
        let status: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(
            (&status["role"], &status["grants"], &status["redis"]),
            (
                &serde_json::json!("lobby"),
                &serde_json::json!(3),
                &serde_json::json!("connecting")
            )
        );
        let (code, body) = fetch(addr, "/metrics").await;
        assert_eq!(code, 200, "{body}");
        for line in [
            "meridian_lobby_joins_total{role=\"lobby\",outcome=\"granted\"} 3",
            "meridian_lobby_routing_decisions_total{role=\"lobby\",outcome=\"routed\"} 3",
        ] {
            assert!(body.lines().any(|l| l == line), "{line} missing:\n{body}");
        }
        assert_eq!(fetch(addr, "/extra").await, (200, "extra".to_owned()));
        let (code, body) = fetch(addr, "/nope").await;
        assert_eq!(code, 404);
        assert_eq!(body, r#"{"error":"no such path: /nope"}"#);
        stop.send(()).expect("server runs");
        server.await.expect("task").expect("clean stop");
    }

    fn get_route() -> axum::routing::MethodRouter {
        get(|| async { "extra" })
    }
}
