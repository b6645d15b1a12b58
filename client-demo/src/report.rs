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
    /// Shards lost and come back to through the lobby, and how long the bots were out.
    #[serde(default)]
    pub reconnects: Reconnects,
    /// Bots that saw their score go down after a reconnection (the score must survive a lost
    /// shard: anything but 0 is a bug).
    #[serde(default)]
    pub score_decreases: u32,
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
    /// The run second by second, one point a second from the start of the bots.
    #[serde(default)]
    pub timeline: Vec<TimelinePoint>,
    /// Distributions of join time, round trip and handoff blackout.
    #[serde(default)]
    pub histograms: Histograms,
    /// Each shard's tick time second by second, when the run could read it (`meridian dev`
    /// reads its own shards; `meridian bots` scrapes `--shard-metrics`).
    #[serde(default)]
    pub shard_timeline: Vec<ShardPoint>,
}

/// The bots at one second of the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Seconds since the bots started.
    pub t_s: f64,
    /// Bots in play.
    pub playing: u32,
    /// Snapshots received per second, mean per bot in play (0 with none).
    pub snapshots_per_s: f64,
    /// Bytes received per second, mean per bot in play (0 with none).
    pub down_bytes_per_s: f64,
    /// Bytes sent per second, mean per bot in play (0 with none).
    pub up_bytes_per_s: f64,
    /// Median round trip of the bots in play, milliseconds (0 with none).
    pub rtt_ms_p50: f64,
    /// Handoffs completed since the start.
    pub handoffs: u32,
    /// Errors of every kind since the start.
    pub errors: u32,
}

/// One shard at one second of the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardPoint {
    /// Seconds since the bots started.
    pub t_s: f64,
    /// The shard: its id, or the admin address it was scraped from.
    pub shard: String,
    /// Median tick time over the last second, milliseconds.
    pub tick_ms_p50: f64,
    /// 99th percentile tick time over the last second, milliseconds.
    pub tick_ms_p99: f64,
    /// Players connected.
    pub players: u32,
}

/// The run's distributions, each a list of buckets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Histograms {
    /// Join time, milliseconds.
    #[serde(default)]
    pub join_ms: Vec<Bucket>,
    /// Round trip, milliseconds.
    #[serde(default)]
    pub rtt_ms: Vec<Bucket>,
    /// Handoff blackout, milliseconds.
    #[serde(default)]
    pub blackout_ms: Vec<Bucket>,
}

/// Values above the previous bucket's bound and at most `le`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Upper bound, inclusive.
    pub le: f64,
    /// Values in the bucket.
    pub count: u64,
}

/// Upper bound of the first bucket of [`log_buckets`].
pub const FIRST_BUCKET_LE: f64 = 1.0;

/// `values` in log-spaced buckets whose bounds run 1, 2, 5, 10, 20, 50…, from the first up to
/// the one that holds the largest value (every bucket listed, empty ones too). Values at or
/// below 1 fall in the first bucket; values that are not finite are left out. No values, no
/// buckets.
pub fn log_buckets(values: &[f64]) -> Vec<Bucket> {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let Some(max) = finite.iter().copied().reduce(f64::max) else {
        return Vec::new();
    };
    let mut buckets = Vec::new();
    let mut decade = FIRST_BUCKET_LE;
    'outer: loop {
        for step in [1.0, 2.0, 5.0] {
            let le = decade * step;
            buckets.push(Bucket { le, count: 0 });
            if le >= max {
                break 'outer;
            }
        }
        decade *= 10.0;
    }
    for v in finite {
        let i = buckets
            .iter()
            .position(|b| v <= b.le)
            .expect("invariant: the last bound is at least the largest value");
        buckets[i].count += 1;
    }
    buckets
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

/// Reconnections through the lobby after a lost shard, and how long the player was out (last
/// snapshot before the loss → first snapshot after).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Reconnects {
    /// Reconnections completed.
    pub count: u32,
    /// Reconnections that gave up (the bot's session ended).
    pub failed: u32,
    /// Median time out, milliseconds.
    pub out_ms_p50: f64,
    /// 99th percentile time out, milliseconds.
    pub out_ms_p99: f64,
    /// Longest time out, milliseconds.
    pub out_ms_max: f64,
}

impl Reconnects {
    /// The summary of `out_ms` (one per completed reconnection) and `failed` ones.
    pub fn from_outages(out_ms: &mut [f64], failed: u32) -> Self {
        Self {
            count: out_ms.len() as u32,
            failed,
            out_ms_p50: percentile(out_ms, 0.5),
            out_ms_p99: percentile(out_ms, 0.99),
            out_ms_max: percentile(out_ms, 1.0),
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
            "reconnects",
            "score_decreases",
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
                "reconnects",
                &["count", "failed", "out_ms_p50", "out_ms_p99", "out_ms_max"],
            ),
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
    fn buckets_are_log_spaced_and_hold_every_finite_value() {
        let b = log_buckets(&[0.2, 1.0, 1.5, 3.0, 7.0, 19.0, 20.0, 21.0]);
        let les: Vec<f64> = b.iter().map(|b| b.le).collect();
        assert_eq!(les, [1.0, 2.0, 5.0, 10.0, 20.0, 50.0]);
        let counts: Vec<u64> = b.iter().map(|b| b.count).collect();
        assert_eq!(counts, [2, 1, 1, 1, 2, 1]);
        assert_eq!(log_buckets(&[0.5]), [Bucket { le: 1.0, count: 1 }]);
        assert_eq!(
            log_buckets(&[1000.0]).last(),
            Some(&Bucket {
                le: 1000.0,
                count: 1
            })
        );
    }

    #[test]
    fn buckets_of_nothing_or_of_bad_values_are_empty() {
        assert!(log_buckets(&[]).is_empty());
        assert!(log_buckets(&[f64::NAN, f64::INFINITY, f64::NEG_INFINITY]).is_empty());
        let b = log_buckets(&[f64::NAN, 3.0, f64::INFINITY, -4.0]);
        assert_eq!(b.iter().map(|b| b.count).sum::<u64>(), 2, "{b:?}");
        assert_eq!(b.first().map(|b| b.count), Some(1), "negative in the first");
        assert_eq!(b.last().map(|b| b.le), Some(5.0));
    }

    #[test]
    fn reports_without_the_series_still_read() {
        let mut old = serde_json::to_value(Report::default()).expect("json");
        let obj = old.as_object_mut().expect("object");
        for k in ["timeline", "histograms", "shard_timeline"] {
            assert!(obj.remove(k).is_some(), "{k} is written");
        }
        let back: Report = serde_json::from_value(old).expect("an older report reads");
        assert!(back.timeline.is_empty() && back.shard_timeline.is_empty());
        assert_eq!(back.histograms, Histograms::default());
    }

    #[test]
    fn series_round_trip_under_their_names() {
        let r = Report {
            timeline: vec![TimelinePoint {
                t_s: 1.0,
                playing: 3,
                handoffs: 2,
                ..TimelinePoint::default()
            }],
            histograms: Histograms {
                join_ms: vec![Bucket { le: 5.0, count: 4 }],
                ..Histograms::default()
            },
            shard_timeline: vec![ShardPoint {
                shard: "eu-1".to_owned(),
                tick_ms_p99: 2.5,
                ..ShardPoint::default()
            }],
            ..Report::default()
        };
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["timeline"][0]["playing"], 3, "{json}");
        assert_eq!(json["histograms"]["join_ms"][0]["le"], 5.0, "{json}");
        assert_eq!(json["histograms"]["join_ms"][0]["count"], 4, "{json}");
        assert_eq!(json["shard_timeline"][0]["tick_ms_p99"], 2.5, "{json}");
        for k in [
            "t_s",
            "snapshots_per_s",
            "down_bytes_per_s",
            "up_bytes_per_s",
            "rtt_ms_p50",
            "errors",
        ] {
            assert!(json["timeline"][0].get(k).is_some(), "timeline[].{k}");
        }
        let back: Report = serde_json::from_value(json).expect("round trip");
        assert_eq!(back, r);
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
