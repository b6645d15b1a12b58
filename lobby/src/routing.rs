//! The routing policy: a pure function of (live shards, the client's measured round trips,
//! optional party) → the shard to join. No I/O, no clock.
//!
//! 1. A shard is *eligible* when it is healthy, not draining, under capacity, and the client
//!    measured it.
//! 2. Among eligible shards, the one with the lowest round trip wins; shards within
//!    [`RoutingConfig::tie_margin`] of it count as a tie, broken by the lower load fraction,
//!    then the lower round trip, then the id (so a decision is deterministic).
//! 3. A party keeps together: if the party's shard is eligible and no more than
//!    [`RoutingConfig::party_margin`] slower than the best, it is chosen.
//! 4. When the best shard is full or draining, rule 1 already falls back to the next nearest.
//!    When no shard is eligible the error says why (none live, all full, all draining, none
//!    measured).
//! 5. A returning player (valid resume ticket) still owned in a zone goes back to that zone:
//!    [`resume_shards`] keeps only the zone's lease holder, live and not draining, or says why
//!    there is none yet (a failover in progress), so the lobby can answer "retry after".

use meridian_protocol::{ShardId, ZoneId};
use std::collections::HashMap;
use std::time::Duration;

/// A live shard as routing sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardView {
    /// The shard.
    pub id: ShardId,
    /// Its zone.
    pub zone: ZoneId,
    /// Players it holds.
    pub load: u32,
    /// Players it accepts at most.
    pub capacity: u32,
    /// It is draining: no new players.
    pub draining: bool,
    /// Its heartbeat is fresh.
    pub healthy: bool,
}

/// One measured round trip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Measured {
    /// The shard.
    pub shard: ShardId,
    /// Minimum round trip over several pings.
    pub rtt: Duration,
}

/// Tunables of the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingConfig {
    /// Round trips within this of the best are a tie, broken by load.
    pub tie_margin: Duration,
    /// A party's shard is kept if at most this much slower than the best.
    pub party_margin: Duration,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            tie_margin: Duration::from_millis(5),
            party_margin: Duration::from_millis(50),
        }
    }
}

/// Why the decision was what it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecisionReason {
    /// The nearest eligible shard, alone within the margin.
    Nearest,
    /// Several shards within the margin; the least loaded won.
    TieBrokenByLoad,
    /// The party's shard.
    Party,
    /// A nearer shard was full or draining; this is the nearest eligible one.
    Fallback,
}

/// The chosen shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The shard.
    pub shard: ShardId,
    /// The client's round trip to it.
    pub rtt: Duration,
    /// Why.
    pub reason: DecisionReason,
}

/// Why no shard could be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No shard is live.
    #[error("no shard is available")]
    NoShards,
    /// Every live shard the client measured is full.
    #[error("every shard is full")]
    AllFull,
    /// Every live shard the client measured is draining.
    #[error("every shard is draining")]
    AllDraining,
    /// The client measured none of the live shards.
    #[error("none of the live shards was measured")]
    NoneMeasured,
}

fn load_fraction(s: &ShardView) -> f64 {
    if s.capacity == 0 {
        1.0
    } else {
        f64::from(s.load) / f64::from(s.capacity)
    }
}

/// Picks the shard for a client. `party` is the shard of the client's party, if any.
pub fn route(
    shards: &[ShardView],
    rtts: &[Measured],
    party: Option<&ShardId>,
    cfg: &RoutingConfig,
) -> Result<Decision, RouteError> {
    if !shards.iter().any(|s| s.healthy) {
        return Err(RouteError::NoShards);
    }
    // One pass to pair each live shard with its measurement (linear in both lists).
    let by_id: HashMap<&ShardId, Duration> = rtts.iter().map(|m| (&m.shard, m.rtt)).collect();
    let measured: Vec<(&ShardView, Duration)> = shards
        .iter()
        .filter(|s| s.healthy)
        .filter_map(|s| by_id.get(&s.id).map(|r| (s, *r)))
        .collect();
    let eligible = || {
        measured
            .iter()
            .copied()
            .filter(|(s, _)| !s.draining && s.load < s.capacity)
    };
    let Some(best_rtt) = eligible().map(|(_, r)| r).min() else {
        return Err(if measured.is_empty() {
            RouteError::NoneMeasured
        } else if measured.iter().all(|(s, _)| s.draining) {
            RouteError::AllDraining
        } else {
            RouteError::AllFull
        });
    };
    if let Some(p) = party
        && let Some((s, r)) = eligible().find(|(s, _)| &s.id == p)
        && r <= best_rtt + cfg.party_margin
    {
        return Ok(Decision {
            shard: s.id.clone(),
            rtt: r,
            reason: DecisionReason::Party,
        });
    }
    let limit = best_rtt + cfg.tie_margin;
    let mut ties = 0;
    let mut pick: Option<(&ShardView, Duration)> = None;
    for (s, r) in eligible().filter(|(_, r)| *r <= limit) {
        ties += 1;
        let better = match pick {
            None => true,
            Some((p, pr)) => (load_fraction(s), r, &s.id) < (load_fraction(p), pr, &p.id),
        };
        if better {
            pick = Some((s, r));
        }
    }
    let (s, r) = pick.expect("invariant: the best eligible shard is within its own margin");
    // A nearer measured shard that could not take the player makes this a fallback.
    let nearer_blocked = measured
        .iter()
        .any(|(o, or)| *or < best_rtt && (o.draining || o.load >= o.capacity));
    let reason = if nearer_blocked {
        DecisionReason::Fallback
    } else if ties > 1 {
        DecisionReason::TieBrokenByLoad
    } else {
        DecisionReason::Nearest
    };
    Ok(Decision {
        shard: s.id.clone(),
        rtt: r,
        reason,
    })
}

/// Why a returning player cannot be sent back to its zone now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeRouteError {
    /// No shard holds the zone's lease: its holder died and no standby took it yet.
    #[error("zone {zone} has no lease holder now (failover in progress)")]
    NoHolder {
        /// The player's zone.
        zone: ZoneId,
    },
    /// The lease holder is not in the registry (not heartbeating yet, or gone).
    #[error("shard {holder}, holder of zone {zone}, is not live in the registry")]
    HolderNotLive {
        /// The player's zone.
        zone: ZoneId,
        /// The shard holding its lease.
        holder: ShardId,
    },
    /// The lease holder is draining: it admits no one.
    #[error("shard {holder}, holder of zone {zone}, is draining")]
    HolderDraining {
        /// The player's zone.
        zone: ZoneId,
        /// The shard holding its lease.
        holder: ShardId,
    },
    /// The lease holder's registry record names another zone (it moved on, or the records
    /// disagree for a moment).
    #[error("shard {holder} holds the lease of zone {zone} but serves zone {serves}")]
    HolderServesAnotherZone {
        /// The player's zone.
        zone: ZoneId,
        /// The shard holding its lease.
        holder: ShardId,
        /// The zone its record names.
        serves: ZoneId,
    },
}

/// The shards a returning player owned in `zone` may be offered: the zone's lease holder
/// (`holder`, as the lease names it), if it is live and healthy, not draining and its record
/// serves `zone`. Returns indices into `shards`, so the caller keeps its own records.
pub fn resume_shards(
    shards: &[ShardView],
    zone: &ZoneId,
    holder: Option<&ShardId>,
) -> Result<Vec<usize>, ResumeRouteError> {
    let Some(holder) = holder else {
        return Err(ResumeRouteError::NoHolder { zone: zone.clone() });
    };
    let found: Vec<usize> = shards
        .iter()
        .enumerate()
        .filter(|(_, s)| &s.id == holder && s.healthy)
        .map(|(i, _)| i)
        .collect();
    let Some(&first) = found.first() else {
        return Err(ResumeRouteError::HolderNotLive {
            zone: zone.clone(),
            holder: holder.clone(),
        });
    };
    let s = &shards[first];
    if &s.zone != zone {
        return Err(ResumeRouteError::HolderServesAnotherZone {
            zone: zone.clone(),
            holder: holder.clone(),
            serves: s.zone.clone(),
        });
    }
    if s.draining {
        return Err(ResumeRouteError::HolderDraining {
            zone: zone.clone(),
            holder: holder.clone(),
        });
    }
    Ok(vec![first])
}

/// Largest round trip a client may report before it is treated as absurd.
pub const MAX_REPORTED_RTT: Duration = Duration::from_secs(10);

/// What is wrong with a client's measurements.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeasurementError {
    /// A measurement names a shard that was not offered.
    #[error("round trip reported for unknown shard {shard}")]
    UnknownShard {
        /// The shard named.
        shard: ShardId,
    },
    /// A round trip of zero or above [`MAX_REPORTED_RTT`].
    #[error("round trip {rtt_us} µs reported for shard {shard} is not plausible")]
    Absurd {
        /// The shard.
        shard: ShardId,
        /// The value, microseconds.
        rtt_us: u64,
    },
    /// The same shard reported twice.
    #[error("shard {shard} reported twice")]
    Duplicate {
        /// The shard.
        shard: ShardId,
    },
}

/// Checks a client's measurements against the shards it was offered.
pub fn check_measurements(offered: &[ShardId], rtts: &[Measured]) -> Result<(), MeasurementError> {
    for (i, m) in rtts.iter().enumerate() {
        if !offered.contains(&m.shard) {
            return Err(MeasurementError::UnknownShard {
                shard: m.shard.clone(),
            });
        }
        if m.rtt.is_zero() || m.rtt > MAX_REPORTED_RTT {
            return Err(MeasurementError::Absurd {
                shard: m.shard.clone(),
                rtt_us: m.rtt.as_micros() as u64,
            });
        }
        if rtts[..i].iter().any(|o| o.shard == m.shard) {
            return Err(MeasurementError::Duplicate {
                shard: m.shard.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ShardId {
        ShardId::new(s).expect("name")
    }

    fn shard(name: &str, load: u32, capacity: u32) -> ShardView {
        ShardView {
            id: id(name),
            zone: ZoneId::new("z").expect("name"),
            load,
            capacity,
            draining: false,
            healthy: true,
        }
    }

    fn ms(shard: &str, rtt: u64) -> Measured {
        Measured {
            shard: id(shard),
            rtt: Duration::from_millis(rtt),
        }
    }

    struct Case {
        name: &'static str,
        shards: Vec<ShardView>,
        rtts: Vec<Measured>,
        party: Option<&'static str>,
        want: Result<(&'static str, DecisionReason), RouteError>,
    }

    #[test]
    fn table() {
        let draining = |mut s: ShardView| {
            s.draining = true;
            s
        };
        let dead = |mut s: ShardView| {
            s.healthy = false;
            s
        };
        let cases = vec![
            Case {
                name: "nearest wins",
                shards: vec![shard("a", 0, 100), shard("b", 0, 100), shard("c", 0, 100)],
                rtts: vec![ms("a", 80), ms("b", 12), ms("c", 150)],
                party: None,
                want: Ok(("b", DecisionReason::Nearest)),
            },
            Case {
                name: "full falls back to next nearest",
                shards: vec![shard("a", 0, 100), shard("b", 100, 100), shard("c", 0, 100)],
                rtts: vec![ms("a", 80), ms("b", 12), ms("c", 150)],
                party: None,
                want: Ok(("a", DecisionReason::Fallback)),
            },
            Case {
                name: "draining falls back",
                shards: vec![shard("a", 0, 100), draining(shard("b", 0, 100))],
                rtts: vec![ms("a", 80), ms("b", 12)],
                party: None,
                want: Ok(("a", DecisionReason::Fallback)),
            },
            Case {
                name: "near tie broken by load",
                shards: vec![shard("a", 90, 100), shard("b", 10, 100)],
                rtts: vec![ms("a", 10), ms("b", 13)],
                party: None,
                want: Ok(("b", DecisionReason::TieBrokenByLoad)),
            },
            Case {
                name: "outside the margin load does not matter",
                shards: vec![shard("a", 90, 100), shard("b", 10, 100)],
                rtts: vec![ms("a", 10), ms("b", 16)],
                party: None,
                want: Ok(("a", DecisionReason::Nearest)),
            },
            Case {
                name: "exact tie and equal load: by id",
                shards: vec![shard("b", 5, 100), shard("a", 5, 100)],
                rtts: vec![ms("a", 10), ms("b", 10)],
                party: None,
                want: Ok(("a", DecisionReason::TieBrokenByLoad)),
            },
            Case {
                name: "party kept within its margin",
                shards: vec![shard("a", 0, 100), shard("b", 0, 100)],
                rtts: vec![ms("a", 10), ms("b", 40)],
                party: Some("b"),
                want: Ok(("b", DecisionReason::Party)),
            },
            Case {
                name: "party too far: nearest",
                shards: vec![shard("a", 0, 100), shard("b", 0, 100)],
                rtts: vec![ms("a", 10), ms("b", 100)],
                party: Some("b"),
                want: Ok(("a", DecisionReason::Nearest)),
            },
            Case {
                name: "dead shards are not routed to",
                shards: vec![dead(shard("a", 0, 100)), shard("b", 0, 100)],
                rtts: vec![ms("a", 1), ms("b", 50)],
                party: None,
                want: Ok(("b", DecisionReason::Nearest)),
            },
            Case {
                name: "no shard",
                shards: vec![],
                rtts: vec![],
                party: None,
                want: Err(RouteError::NoShards),
            },
            Case {
                name: "only dead shards",
                shards: vec![dead(shard("a", 0, 100))],
                rtts: vec![ms("a", 1)],
                party: None,
                want: Err(RouteError::NoShards),
            },
            Case {
                name: "all full",
                shards: vec![shard("a", 100, 100), shard("b", 7, 7)],
                rtts: vec![ms("a", 1), ms("b", 2)],
                party: None,
                want: Err(RouteError::AllFull),
            },
            Case {
                name: "all draining",
                shards: vec![draining(shard("a", 0, 100))],
                rtts: vec![ms("a", 1)],
                party: None,
                want: Err(RouteError::AllDraining),
            },
            Case {
                name: "none measured",
                shards: vec![shard("a", 0, 100)],
                rtts: vec![],
                party: None,
                want: Err(RouteError::NoneMeasured),
            },
        ];
        for c in cases {
            let party = c.party.map(id);
            let got = route(
                &c.shards,
                &c.rtts,
                party.as_ref(),
                &RoutingConfig::default(),
            )
            .map(|d| (d.shard.as_str().to_owned(), d.reason));
            let want = c.want.map(|(s, r)| (s.to_owned(), r));
            assert_eq!(got, want, "case `{}`", c.name);
        }
    }

    #[test]
    fn resume_goes_to_the_zone_lease_holder_only() {
        let in_zone = |name: &str, zone: &str| ShardView {
            zone: ZoneId::new(zone).expect("name"),
            ..shard(name, 0, 100)
        };
        let zone = |z: &str| ZoneId::new(z).expect("name");
        let shards = vec![
            in_zone("a", "west"),
            in_zone("b", "east"),
            ShardView {
                draining: true,
                ..in_zone("c", "north")
            },
            ShardView {
                healthy: false,
                ..in_zone("d", "south")
            },
        ];
        struct ResumeCase {
            name: &'static str,
            zone: &'static str,
            holder: Option<&'static str>,
            want: Result<Vec<usize>, ResumeRouteError>,
        }
        let cases = [
            ResumeCase {
                name: "the holder of the player's zone, not the other shard",
                zone: "east",
                holder: Some("b"),
                want: Ok(vec![1]),
            },
            ResumeCase {
                name: "no lease holder: failover in progress",
                zone: "east",
                holder: None,
                want: Err(ResumeRouteError::NoHolder { zone: zone("east") }),
            },
            ResumeCase {
                name: "holder not in the registry",
                zone: "east",
                holder: Some("x"),
                want: Err(ResumeRouteError::HolderNotLive {
                    zone: zone("east"),
                    holder: id("x"),
                }),
            },
            ResumeCase {
                name: "holder with a stale heartbeat",
                zone: "south",
                holder: Some("d"),
                want: Err(ResumeRouteError::HolderNotLive {
                    zone: zone("south"),
                    holder: id("d"),
                }),
            },
            ResumeCase {
                name: "holder draining",
                zone: "north",
                holder: Some("c"),
                want: Err(ResumeRouteError::HolderDraining {
                    zone: zone("north"),
                    holder: id("c"),
                }),
            },
            ResumeCase {
                name: "holder's record serves another zone",
                zone: "east",
                holder: Some("a"),
                want: Err(ResumeRouteError::HolderServesAnotherZone {
                    zone: zone("east"),
                    holder: id("a"),
                    serves: zone("west"),
                }),
            },
        ];
        for c in cases {
            let holder = c.holder.map(id);
            assert_eq!(
                resume_shards(&shards, &zone(c.zone), holder.as_ref()),
                c.want,
                "case `{}`",
                c.name
            );
        }
    }

    #[test]
    fn measurements_are_checked() {
        let offered = [id("a"), id("b")];
        assert_eq!(
            check_measurements(&offered, &[ms("a", 10), ms("b", 20)]),
            Ok(())
        );
        assert_eq!(
            check_measurements(&offered, &[ms("c", 10)]),
            Err(MeasurementError::UnknownShard { shard: id("c") })
        );
        assert!(matches!(
            check_measurements(&offered, &[ms("a", 0)]),
            Err(MeasurementError::Absurd { .. })
        ));
        assert!(matches!(
            check_measurements(&offered, &[ms("a", 60_000)]),
            Err(MeasurementError::Absurd { .. })
        ));
        assert_eq!(
            check_measurements(&offered, &[ms("a", 10), ms("a", 11)]),
            Err(MeasurementError::Duplicate { shard: id("a") })
        );
    }
}
