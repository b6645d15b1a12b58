//! The run report of `meridian dev` and `meridian bots`: one JSON document whose field names
//! are a contract (users script against them). `schema` changes when a field changes meaning.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of the report's shape.
pub const REPORT_SCHEMA: u32 = 1;

/// A whole run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`REPORT_SCHEMA`].
    pub schema: u32,
    /// Bots asked for.
    pub bots: u32,
    /// Length of the run, seconds.
    pub duration_s: f64,
    /// Shards' tick rate.
    pub tick_hz: u32,
    /// Bots that reached play (first snapshot).
    pub joined: u32,
    /// Bots that never did.
    pub join_failures: u32,
    /// Lobby connect → first snapshot, milliseconds.
    pub join_ms: JoinMs,
    /// QUIC round trip to the shard, sampled once a second per bot, milliseconds.
    pub rtt_ms: RttMs,
    /// Snapshots received per second, per bot.
    pub snapshots_per_s: MeanMin,
    /// Bytes received per second, per bot.
    pub down_bytes_per_s: MeanMax,
    /// Bytes sent per second, per bot.
    pub up_bytes_per_s: Mean,
    /// Handoffs between shards.
    pub handoffs: Handoffs,
    /// Sessions that ended without the bot leaving (kicked, connection lost).
    pub disconnects: u32,
    /// Errors by kind.
    pub errors: BTreeMap<String, u32>,
    /// Routing quality, when a latency matrix is in use.
    pub routing: Routing,
    /// Each shard at the end of the run.
    pub shards: Vec<ShardReport>,
    /// Who owns each player in shared state at the end of the run, when the run could read it
    /// (`meridian dev` does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditSummary>,
    /// Joins and leaves of a `churn` run (absent from other runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub churn: Option<Churn>,
}

/// The comings and goings of a `churn` run: each bot plays a while, leaves, and joins again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Churn {
    /// Sessions that reached play (first joins included).
    pub joins: u32,
    /// Of those, the sessions the bots ended themselves by leaving (the last one at the end of
    /// the run included); the others were lost (`disconnects`).
    pub leaves: u32,
}

/// The ownership audit: every player known to shared state should be owned by exactly one
/// shard, at its current epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditSummary {
    /// Players audited.
    pub players: u32,
    /// Players owned by exactly one live shard: the healthy case.
    pub owned_once: u32,
    /// Players no live shard owns.
    pub orphaned: u32,
    /// Players more than one shard believes it owns.
    pub duplicated: u32,
    /// Players a shard holds with an epoch older than the one in shared state.
    pub stale_epoch: u32,
}

/// Percentiles of join time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JoinMs {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// Percentiles of round-trip time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RttMs {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// Mean and minimum over bots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MeanMin {
    /// Mean.
    pub mean: f64,
    /// Minimum.
    pub min: f64,
}

/// Mean and maximum over bots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MeanMax {
    /// Mean.
    pub mean: f64,
    /// Maximum.
    pub max: f64,
}

/// Mean over bots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Mean {
    /// Mean.
    pub mean: f64,
}

/// Handoffs and their blackout (last snapshot from the old shard → first from the new).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Handoffs {
    /// Handoffs completed.
    pub count: u32,
    /// Handoffs that failed.
    pub failed: u32,
    /// Median blackout, milliseconds.
    pub ms_p50: f64,
    /// 99th percentile blackout, milliseconds.
    pub ms_p99: f64,
    /// Longest blackout, milliseconds.
    pub ms_max: f64,
}

impl Handoffs {
    /// The summary of `blackouts_ms` (one per completed handoff) and `failed` handoffs.
    pub fn from_blackouts(blackouts_ms: &mut [f64], failed: u32) -> Self {
        Self {
            count: blackouts_ms.len() as u32,
            failed,
            ms_p50: percentile(blackouts_ms, 0.5),
            ms_p99: percentile(blackouts_ms, 0.99),
            ms_max: percentile(blackouts_ms, 1.0),
        }
    }
}

/// How many bots landed on the shard with the lowest true round trip.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Routing {
    /// Bots whose chosen shard had the lowest true round trip from their home region.
    pub optimal: u32,
    /// Bots routed with a latency matrix in use.
    pub total: u32,
}

/// One shard at the end of the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardReport {
    /// The shard.
    pub id: String,
    /// Its zone.
    pub zone: String,
    /// Players connected.
    pub players: u32,
    /// Replicable entities.
    pub entities: u32,
    /// Median tick time, milliseconds.
    pub tick_ms_p50: f64,
    /// 99th percentile tick time, milliseconds.
    pub tick_ms_p99: f64,
    /// Longest tick, milliseconds.
    pub tick_ms_max: f64,
    /// Ticks longer than the tick interval.
    pub overruns: u64,
    /// Players this shard handed to a neighbour.
    #[serde(default)]
    pub handoffs_out: u64,
    /// Players it took over from a neighbour.
    #[serde(default)]
    pub handoffs_in: u64,
    /// Transfers that did not go through (the border held; retried later).
    #[serde(default)]
    pub handoffs_failed: u64,
}

/// Percentile `q` (0..=1) of `values` by nearest rank; 0 when empty.
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_are_the_contract() {
        let json = serde_json::to_value(Report {
            schema: REPORT_SCHEMA,
            ..Report::default()
        })
        .expect("json");
        for key in [
            "schema",
            "bots",
            "duration_s",
            "tick_hz",
            "joined",
            "join_failures",
            "join_ms",
            "rtt_ms",
            "snapshots_per_s",
            "down_bytes_per_s",
            "up_bytes_per_s",
            "handoffs",
            "disconnects",
            "errors",
            "routing",
            "shards",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        for (obj, keys) in [
            ("join_ms", &["p50", "p90", "p99", "max"][..]),
            ("rtt_ms", &["p50", "p99"]),
            ("snapshots_per_s", &["mean", "min"]),
            ("down_bytes_per_s", &["mean", "max"]),
            ("up_bytes_per_s", &["mean"]),
            (
                "handoffs",
                &["count", "failed", "ms_p50", "ms_p99", "ms_max"],
            ),
            ("routing", &["optimal", "total"]),
        ] {
            for k in keys {
                assert!(json[obj].get(*k).is_some(), "missing {obj}.{k}");
            }
        }
        let shard = serde_json::to_value(ShardReport::default()).expect("json");
        for k in [
            "id",
            "zone",
            "players",
            "entities",
            "tick_ms_p50",
            "tick_ms_p99",
            "tick_ms_max",
            "overruns",
        ] {
            assert!(shard.get(k).is_some(), "missing shards[].{k}");
        }
    }

    #[test]
    fn the_audit_appears_only_when_filled_under_its_contract_names() {
        let without = serde_json::to_value(Report::default()).expect("json");
        assert!(without.get("audit").is_none(), "{without}");
        let back: Report = serde_json::from_value(without).expect("a report without audit reads");
        assert_eq!(back.audit, None);
        let audit = AuditSummary {
            players: 10,
            owned_once: 7,
            orphaned: 1,
            duplicated: 1,
            stale_epoch: 1,
        };
        let with = serde_json::to_value(Report {
            audit: Some(audit),
            ..Report::default()
        })
        .expect("json");
        for (k, v) in [
            ("players", 10),
            ("owned_once", 7),
            ("orphaned", 1),
            ("duplicated", 1),
            ("stale_epoch", 1),
        ] {
            assert_eq!(with["audit"][k], v, "audit.{k} in {with}");
        }
        let back: Report = serde_json::from_value(with).expect("round trip");
        assert_eq!(back.audit, Some(audit));
    }

    #[test]
    fn churn_appears_only_when_filled_under_its_contract_names() {
        let without = serde_json::to_value(Report::default()).expect("json");
        assert!(without.get("churn").is_none(), "{without}");
        let with = serde_json::to_value(Report {
            churn: Some(Churn {
                joins: 7,
                leaves: 5,
            }),
            ..Report::default()
        })
        .expect("json");
        assert_eq!(with["churn"]["joins"], 7, "{with}");
        assert_eq!(with["churn"]["leaves"], 5, "{with}");
        let back: Report = serde_json::from_value(with).expect("round trip");
        assert_eq!(
            back.churn,
            Some(Churn {
                joins: 7,
                leaves: 5
            })
        );
    }

    #[test]
    fn handoffs_summarize_blackouts() {
        let mut ms: Vec<f64> = (1..=100).map(f64::from).collect();
        let h = Handoffs::from_blackouts(&mut ms, 3);
        assert_eq!((h.count, h.failed), (100, 3));
        assert_eq!((h.ms_p50, h.ms_p99, h.ms_max), (50.0, 99.0, 100.0));
        assert_eq!(
            Handoffs::from_blackouts(&mut [], 2),
            Handoffs {
                failed: 2,
                ..Handoffs::default()
            }
        );
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 0.5), 50.0);
        assert_eq!(percentile(&mut v, 0.99), 99.0);
        assert_eq!(percentile(&mut v, 1.0), 100.0);
        assert_eq!(percentile(&mut [], 0.5), 0.0);
        assert_eq!(percentile(&mut [7.0], 0.01), 7.0);
    }
}
