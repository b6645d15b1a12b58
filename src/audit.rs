//! `meridian audit`: checks that every player is simulated by exactly one shard, its owner in
//! shared state.
//!
//! The shell around [`meridian_cluster::audit`]: it opens Redis, asks each live shard's admin
//! endpoint what it holds (`GET http://<admin_addr>/players`, [`ADMIN_TIMEOUT`]; a shard without
//! an admin address or that fails to answer is reported unreachable, with why), runs the
//! two-pass [`run_audit`], and prints the report on stdout, as a table ([`render_table`]) or
//! JSON.
//!
//! Exit codes: 0 clean, 1 a violation or an unreachable shard ([`AuditError::NotClean`]), 2 the
//! audit could not run (Redis unreachable, interrupted).

use meridian_cluster::audit::{AuditReport, ShardPlayers, ShardSource, run_audit};
use meridian_cluster::config::{AuditConfig, redact_redis_url};
use meridian_cluster::{LiveShard, RedisStore, StoreConfig, StoreError};
use meridian_lobby::map::{admin_url, get_body};
use std::fmt::Write as _;
use std::future::Future;
use std::time::Duration;

/// Longest a shard's admin endpoint may take to answer `GET /players`, body included.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Why `meridian audit` did not end clean.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Redis could not be opened (the message names the URL, password redacted).
    #[error(transparent)]
    Connect(StoreError),
    /// Reading the shared state failed part-way.
    #[error("cannot read the shared state at {url}: {source}")]
    Store {
        /// The Redis URL, password redacted.
        url: String,
        /// The failed operation.
        source: StoreError,
    },
    /// Ctrl-C or SIGTERM arrived before the audit finished.
    #[error("interrupted before the audit finished")]
    Interrupted,
    /// The audit ran and found violations or shards it could not ask (exit 1).
    #[error(
        "the audit is not clean: {violations} violation(s), {unreachable} unreachable shard(s)"
    )]
    NotClean {
        /// Players in violation.
        violations: usize,
        /// Live shards that did not answer.
        unreachable: usize,
    },
}

impl AuditError {
    /// The process exit code: 1 for a report that is not clean, 2 when the audit could not run.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::NotClean { .. } => 1,
            Self::Connect(_) | Self::Store { .. } | Self::Interrupted => 2,
        }
    }
}

/// Runs the audit and prints its report on stdout; `Ok` only if it is clean. Stops early when
/// `shutdown` completes.
pub async fn run(
    config: &AuditConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AuditError> {
    let report = tokio::select! {
        report = audit(config) => report?,
        () = shutdown => return Err(AuditError::Interrupted),
    };
    let text = if config.json {
        let mut json =
            serde_json::to_string_pretty(&report).expect("invariant: a report serializes to JSON");
        json.push('\n');
        json
    } else {
        render_table(&report)
    };
    print_stdout(&text);
    if report.clean() {
        Ok(())
    } else {
        Err(AuditError::NotClean {
            violations: report.violations.len(),
            unreachable: report.unreachable.len(),
        })
    }
}

/// Writes `text` to stdout; a closed stdout does not change the verdict (the exit code says it).
fn print_stdout(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Opens Redis and runs the two passes.
async fn audit(config: &AuditConfig) -> Result<AuditReport, AuditError> {
    let store_config = StoreConfig {
        prefix: config.prefix.clone(),
        ..StoreConfig::default()
    };
    let store = RedisStore::connect(&config.redis, &store_config)
        .await
        .map_err(AuditError::Connect)?;
    let shards = HttpShardSource::new();
    tracing::info!(settle_ms = config.settle_ms, "auditing: two passes");
    run_audit(&store, &shards, config.settle())
        .await
        .map_err(|source| AuditError::Store {
            url: redact_redis_url(&config.redis),
            source,
        })
}

/// The report as lines of `name value`, then one line per violation and per unreachable shard.
pub fn render_table(report: &AuditReport) -> String {
    let mut out = String::new();
    let figures = [
        ("players", report.players),
        ("owned_once", report.owned_once),
        ("orphaned", report.orphaned),
        ("duplicated", report.duplicated),
        ("stale_epoch", report.stale_epoch),
        ("settling", report.settling),
        ("not_judged", report.not_judged),
    ];
    for (name, value) in figures {
        let _ = writeln!(out, "{name} {value}");
    }
    for v in &report.violations {
        let _ = writeln!(out, "violation {} {}: {}", v.player, v.kind, v.detail);
    }
    for (shard, reason) in &report.unreachable {
        let _ = writeln!(out, "unreachable {shard}: {reason}");
    }
    out
}

/// Asks shards what they hold over HTTP: `GET http://<admin_addr>/players` (the [`ShardSource`]
/// of `meridian audit` and of the dev world's end-of-run audit).
#[derive(Debug, Clone)]
pub struct HttpShardSource {
    client: reqwest::Client,
}

impl Default for HttpShardSource {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpShardSource {
    /// A client for plain HTTP, never through a proxy (admin endpoints are on the operator
    /// network), each request bounded by [`ADMIN_TIMEOUT`].
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(ADMIN_TIMEOUT)
            .build()
            .expect("invariant: a plain HTTP client without TLS, proxies or headers builds");
        Self { client }
    }

    /// The answer of `url`, within [`ADMIN_TIMEOUT`] and [`meridian_lobby::map::MAX_ANSWER_BYTES`].
    async fn fetch(&self, url: &str) -> Result<ShardPlayers, String> {
        let body = get_body(&self.client, url, ADMIN_TIMEOUT).await?;
        let answer: ShardPlayers = serde_json::from_slice(&body)
            .map_err(|e| format!("GET {url}: not a players list: {e}"))?;
        answer
            .shard
            .validate()
            .and(answer.zone.validate())
            .map_err(|e| format!("GET {url}: not a players list: {e}"))?;
        Ok(answer)
    }
}

impl ShardSource for HttpShardSource {
    async fn players(&self, shard: &LiveShard) -> Result<ShardPlayers, String> {
        let Some(addr) = shard.record.admin_addr.as_deref() else {
            return Err("no admin endpoint: its registry record has no admin_addr".to_owned());
        };
        let url = players_url(addr)?;
        match tokio::time::timeout(ADMIN_TIMEOUT, self.fetch(&url)).await {
            Ok(answer) => answer,
            Err(_elapsed) => Err(format!(
                "GET {url}: no answer within {} ms",
                ADMIN_TIMEOUT.as_millis()
            )),
        }
    }
}

/// `http://<addr>/players`, if `addr` is a bare `host:port` (it comes from shared state, so it
/// may hold anything).
fn players_url(addr: &str) -> Result<String, String> {
    admin_url(addr, "/players")
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_cluster::audit::{Violation, ViolationKind};
    use meridian_protocol::{PlayerId, ShardId};

    #[test]
    fn the_table_names_every_figure_violation_and_unreachable_shard() {
        let report = AuditReport {
            players: 3,
            owned_once: 1,
            orphaned: 1,
            violations: vec![Violation {
                player: PlayerId(5),
                kind: ViolationKind::Orphaned,
                detail: "owned by dead shard b".into(),
            }],
            unreachable: vec![(ShardId::new("c").expect("valid"), "refused".into())],
            not_judged: 1,
            ..AuditReport::default()
        };
        let table = render_table(&report);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines,
            [
                "players 3",
                "owned_once 1",
                "orphaned 1",
                "duplicated 0",
                "stale_epoch 0",
                "settling 0",
                "not_judged 1",
                "violation p5 orphaned: owned by dead shard b",
                "unreachable c: refused",
            ]
        );
    }

    #[test]
    fn admin_addresses_are_checked_before_use() {
        assert_eq!(
            players_url("127.0.0.1:9000").as_deref(),
            Ok("http://127.0.0.1:9000/players")
        );
        assert_eq!(
            players_url("[::1]:9000").as_deref(),
            Ok("http://[::1]:9000/players")
        );
        assert_eq!(
            players_url("shard-1.internal:80").as_deref(),
            Ok("http://shard-1.internal:80/players")
        );
        for bad in [
            "",
            "evil.example/steal?x=",
            "user@host:1",
            "host:1 ",
            "a\nb",
            "[::1",
            "host:99999",
        ] {
            let err = players_url(bad).expect_err(bad);
            assert!(err.contains("bad admin_addr"), "{bad:?}: {err}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }

    #[test]
    fn only_a_report_that_is_not_clean_exits_1() {
        let not_clean = AuditError::NotClean {
            violations: 1,
            unreachable: 0,
        };
        assert_eq!(not_clean.exit_code(), 1);
        assert_eq!(AuditError::Interrupted.exit_code(), 2);
        let store = AuditError::Store {
            url: "redis://h".into(),
            source: StoreError::NotFound { key: "k".into() },
        };
        assert_eq!(store.exit_code(), 2);
        assert!(store.to_string().contains("redis://h"), "{store}");
    }
}
