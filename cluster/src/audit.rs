//! The ownership audit: is every player simulated by exactly one shard, the one that owns it in
//! shared state?
//!
//! - [`audit`] is the pure core: from one consistent-enough view ([`AuditInput`]: the ownership
//!   records, the live shards, the zone leases, and what each shard says it holds,
//!   [`ShardPlayers`]) it classifies every player once and returns an [`AuditReport`].
//! - [`run_audit`] is the shell: it gathers that view twice, `settle` apart (shards first, then
//!   the store, each pass), and keeps as violations only the players that are one in both passes
//!   with the same kind, so handoffs and joins in flight are not reported ([`confirm`]).
//! - [`ShardSource`] is how the shell asks a shard what it holds (its admin endpoint's
//!   `GET /players`, whose JSON is [`ShardPlayers`]).
//!
//! The rules of [`audit`], one verdict per player. The players judged are those with an owner in
//! the store and those any shard holds.
//!
//! 1. Owned by a shard that did not answer (unreachable): not judged.
//! 2. Simulated (held in any state but [`HeldState::Outgoing`]) by two shards or more, or by a
//!    shard that is not its owner: [`ViolationKind::Duplicated`].
//! 3. Owned by `O`:
//!    - `O` is not live: [`ViolationKind::Orphaned`];
//!    - the lease of the record's zone is held by another shard, or under an epoch lower than the
//!      record's: [`ViolationKind::StaleEpoch`];
//!    - `O` does not hold it and no shard holds it outgoing: [`ViolationKind::Orphaned`];
//!    - otherwise: owned once.
//! 4. Owned by nobody but held by a shard: [`ViolationKind::Orphaned`].

use crate::error::StoreError;
use crate::ownership::{Lease, Ownership};
use crate::store::{LiveShard, Store};
use meridian_protocol::{PlayerId, ShardId, ZoneId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

/// The reason given for a live shard that [`audit`] got no answer from and no reason for.
pub const NO_ANSWER: &str = "no answer from the shard";

/// What a shard is doing with a player it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldState {
    /// Simulated, with its client connected.
    Active,
    /// Admitted and its ownership claimed; its entity is not spawned yet.
    Joining,
    /// Spawned from a handoff notice; its client has not arrived yet.
    Incoming,
    /// Frozen at a border, being handed off to a neighbour.
    Outgoing,
}

impl HeldState {
    /// The state's name, as in JSON (`active`, `joining`, `incoming`, `outgoing`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Joining => "joining",
            Self::Incoming => "incoming",
            Self::Outgoing => "outgoing",
        }
    }

    /// The shard simulates the player in this state (every state but [`HeldState::Outgoing`]).
    pub fn simulates(self) -> bool {
        !matches!(self, Self::Outgoing)
    }
}

impl fmt::Display for HeldState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One player a shard holds, and in which state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldPlayer {
    /// The player.
    pub player: PlayerId,
    /// What the shard is doing with it.
    pub state: HeldState,
    /// Where its entity is, world units, if the shard has spawned it (for maps; the audit
    /// does not read it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pos: Option<[f32; 2]>,
}

/// What one shard holds: the JSON of its admin endpoint's `GET /players`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardPlayers {
    /// The shard that answered.
    pub shard: ShardId,
    /// The zone it simulates.
    pub zone: ZoneId,
    /// The epoch of the zone lease it holds, if it holds one.
    #[serde(default)]
    pub lease_epoch: Option<u64>,
    /// The players it holds.
    pub players: Vec<HeldPlayer>,
}

/// Everything [`audit`] judges from: one pass over the shards and the store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditInput {
    /// The ownership records that name an owner ([`Store::owned_players`]); records without an
    /// owner are ignored.
    pub ownership: Vec<Ownership>,
    /// The live shards of the registry.
    pub live: Vec<ShardId>,
    /// The zone leases held now.
    pub leases: Vec<Lease>,
    /// What each shard that answered holds.
    pub shards: Vec<ShardPlayers>,
    /// The live shards that did not answer, with why.
    pub unreachable: Vec<(ShardId, String)>,
}

/// What is wrong with a player.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// Nobody simulates it for its owner: the owner is dead or does not hold it, or a shard
    /// simulates it while nobody owns it.
    Orphaned,
    /// More than one shard simulates it, or one that is not its owner.
    Duplicated,
    /// Its record is fenced by a lease that is no longer its owner's (another shard holds the
    /// zone's lease, or under a lower epoch than the record's).
    StaleEpoch,
}

impl ViolationKind {
    /// The kind's name, as in JSON and in the report's counters (`orphaned`, `duplicated`,
    /// `stale_epoch`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Orphaned => "orphaned",
            Self::Duplicated => "duplicated",
            Self::StaleEpoch => "stale_epoch",
        }
    }
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One player found in violation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The player.
    pub player: PlayerId,
    /// What is wrong.
    pub kind: ViolationKind,
    /// The facts behind the verdict, for an operator (`owned by dead shard eu-1`).
    pub detail: String,
}

/// The verdict of an audit.
///
/// Every player judged counts in `players` and in exactly one of `owned_once`, `orphaned`,
/// `duplicated`, `stale_epoch`, `settling` and `not_judged`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReport {
    /// Players seen: owned in the store or held by a shard.
    pub players: u32,
    /// Players owned once and simulated by their owner.
    pub owned_once: u32,
    /// Players in violation [`ViolationKind::Orphaned`].
    pub orphaned: u32,
    /// Players in violation [`ViolationKind::Duplicated`].
    pub duplicated: u32,
    /// Players in violation [`ViolationKind::StaleEpoch`].
    pub stale_epoch: u32,
    /// Players in violation in one pass of [`run_audit`] but not the same way in both (a handoff
    /// or a join in flight); always 0 from [`audit`] alone.
    #[serde(default)]
    pub settling: u32,
    /// Players not judged: owned by a shard that did not answer.
    #[serde(default)]
    pub not_judged: u32,
    /// The violations, ordered by player.
    pub violations: Vec<Violation>,
    /// The live shards that did not answer, with why, ordered by shard.
    #[serde(with = "unreachable_json")]
    pub unreachable: Vec<(ShardId, String)>,
}

impl AuditReport {
    /// No violation and every live shard answered.
    pub fn clean(&self) -> bool {
        self.violations.is_empty() && self.unreachable.is_empty()
    }

    /// Recounts `orphaned`, `duplicated` and `stale_epoch` from `violations`.
    fn count_violations(&mut self) {
        let count = |kind| {
            let n = self.violations.iter().filter(|v| v.kind == kind).count();
            u32::try_from(n).unwrap_or(u32::MAX)
        };
        self.orphaned = count(ViolationKind::Orphaned);
        self.duplicated = count(ViolationKind::Duplicated);
        self.stale_epoch = count(ViolationKind::StaleEpoch);
    }
}

/// `unreachable` in JSON: a list of `{"shard": …, "reason": …}` objects rather than pairs.
mod unreachable_json {
    use meridian_protocol::ShardId;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize)]
    struct Row<'a> {
        shard: &'a ShardId,
        reason: &'a str,
    }

    #[derive(Deserialize)]
    struct OwnedRow {
        shard: ShardId,
        reason: String,
    }

    pub(super) fn serialize<S: Serializer>(
        rows: &[(ShardId, String)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(rows.iter().map(|(shard, reason)| Row { shard, reason }))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(ShardId, String)>, D::Error> {
        let rows = Vec::<OwnedRow>::deserialize(deserializer)?;
        Ok(rows.into_iter().map(|r| (r.shard, r.reason)).collect())
    }
}

/// The verdict on one player.
enum Verdict {
    OwnedOnce,
    NotJudged,
    Violation(ViolationKind, String),
}

/// The shards holding one player, each with its state (a shard that lists the player twice
/// counts once, simulating if any of its entries does).
type Holders<'a> = BTreeMap<&'a ShardId, HeldState>;

/// Classifies every player of `input` (see the module's rules). Pure: the same input, the same
/// report. Live shards neither answering nor listed unreachable are reported unreachable
/// ([`NO_ANSWER`]).
pub fn audit(input: &AuditInput) -> AuditReport {
    let live: BTreeSet<&ShardId> = input.live.iter().collect();
    let mut unreachable: BTreeMap<ShardId, String> = BTreeMap::new();
    for (shard, reason) in &input.unreachable {
        unreachable
            .entry(shard.clone())
            .or_insert_with(|| reason.clone());
    }
    let answered: BTreeSet<&ShardId> = input.shards.iter().map(|s| &s.shard).collect();
    for shard in &input.live {
        if !answered.contains(shard) && !unreachable.contains_key(shard) {
            unreachable.insert(shard.clone(), NO_ANSWER.to_owned());
        }
    }

    // One lease per zone: the highest epoch if the input lists several.
    let mut leases: BTreeMap<&ZoneId, &Lease> = BTreeMap::new();
    for lease in &input.leases {
        let slot = leases.entry(&lease.zone).or_insert(lease);
        if lease.epoch > slot.epoch {
            *slot = lease;
        }
    }

    // One record per player: the newest (highest sequence) if the input lists several.
    let mut owned: BTreeMap<PlayerId, (&ShardId, &Ownership)> = BTreeMap::new();
    for record in &input.ownership {
        let Some(owner) = &record.owner else { continue };
        let slot = owned.entry(record.player).or_insert((owner, record));
        if record.seq > slot.1.seq {
            *slot = (owner, record);
        }
    }

    let mut held: BTreeMap<PlayerId, Holders<'_>> = BTreeMap::new();
    for shard in &input.shards {
        for entry in &shard.players {
            let state = held
                .entry(entry.player)
                .or_default()
                .entry(&shard.shard)
                .or_insert(entry.state);
            // The declaration order puts every simulating state before `Outgoing`.
            *state = (*state).min(entry.state);
        }
    }

    let players: BTreeSet<PlayerId> = owned.keys().chain(held.keys()).copied().collect();
    let no_holders = Holders::new();
    let mut report = AuditReport {
        players: u32::try_from(players.len()).unwrap_or(u32::MAX),
        ..AuditReport::default()
    };
    for player in players {
        let holders = held.get(&player).unwrap_or(&no_holders);
        let verdict = judge(
            owned.get(&player).copied(),
            holders,
            &live,
            &unreachable,
            &leases,
        );
        match verdict {
            Verdict::OwnedOnce => report.owned_once += 1,
            Verdict::NotJudged => report.not_judged += 1,
            Verdict::Violation(kind, detail) => report.violations.push(Violation {
                player,
                kind,
                detail,
            }),
        }
    }
    report.count_violations();
    report.unreachable = unreachable.into_iter().collect();
    report
}

/// `a (active), b (outgoing)`.
fn list_holders<'a>(holders: impl IntoIterator<Item = (&'a &'a ShardId, &'a HeldState)>) -> String {
    holders
        .into_iter()
        .map(|(shard, state)| format!("{shard} ({state})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The verdict on one player, from its record (owner and record) and its holders.
fn judge(
    owned: Option<(&ShardId, &Ownership)>,
    holders: &Holders<'_>,
    live: &BTreeSet<&ShardId>,
    unreachable: &BTreeMap<ShardId, String>,
    leases: &BTreeMap<&ZoneId, &Lease>,
) -> Verdict {
    let owner = owned.map(|(owner, _)| owner);
    if owner.is_some_and(|o| unreachable.contains_key(o)) {
        return Verdict::NotJudged;
    }
    let simulating: Vec<_> = holders.iter().filter(|(_, s)| s.simulates()).collect();
    let owner_text = owner.map_or_else(|| "nobody".to_owned(), ToString::to_string);
    if simulating.len() >= 2 {
        return Verdict::Violation(
            ViolationKind::Duplicated,
            format!(
                "simulated by {} shards: {}; owned by {owner_text}",
                simulating.len(),
                list_holders(simulating.iter().copied())
            ),
        );
    }
    let Some((owner, record)) = owned else {
        // Not owned: in the universe only because some shard holds it.
        return Verdict::Violation(
            ViolationKind::Orphaned,
            format!(
                "simulated but owned by nobody: held by {}",
                list_holders(holders.iter())
            ),
        );
    };
    if let Some((intruder, state)) = simulating.iter().find(|(s, _)| **s != owner) {
        return Verdict::Violation(
            ViolationKind::Duplicated,
            format!("held by {intruder} ({state}) but owned by {owner}"),
        );
    }
    if !live.contains(owner) {
        return Verdict::Violation(
            ViolationKind::Orphaned,
            format!("owned by dead shard {owner}"),
        );
    }
    if let Some(zone) = &record.zone
        && let Some(lease) = leases.get(zone)
    {
        let epoch = record.epoch;
        if lease.owner != *owner {
            return Verdict::Violation(
                ViolationKind::StaleEpoch,
                format!(
                    "owned by {owner} at epoch {epoch} in zone {zone}, whose lease {} holds at \
                     epoch {}",
                    lease.owner, lease.epoch
                ),
            );
        }
        if epoch > lease.epoch {
            return Verdict::Violation(
                ViolationKind::StaleEpoch,
                format!(
                    "owned by {owner} at epoch {epoch} in zone {zone}, above its lease's epoch {}",
                    lease.epoch
                ),
            );
        }
    }
    let handed_off = holders.values().any(|s| !s.simulates());
    if !holders.contains_key(owner) && !handed_off {
        return Verdict::Violation(
            ViolationKind::Orphaned,
            format!("owner {owner} does not simulate it"),
        );
    }
    Verdict::OwnedOnce
}

/// Merges two passes of [`audit`]: a violation of `second` stands only if `first` found the
/// same player in violation of the same kind; the others count as `settling`. Every other figure
/// and the unreachable shards are the second pass's.
pub fn confirm(first: &AuditReport, second: AuditReport) -> AuditReport {
    let before: BTreeSet<(PlayerId, ViolationKind)> = first
        .violations
        .iter()
        .map(|v| (v.player, v.kind))
        .collect();
    let mut report = second;
    let (kept, settling): (Vec<Violation>, Vec<Violation>) = std::mem::take(&mut report.violations)
        .into_iter()
        .partition(|v| before.contains(&(v.player, v.kind)));
    report.violations = kept;
    report.settling = report
        .settling
        .saturating_add(u32::try_from(settling.len()).unwrap_or(u32::MAX));
    report.count_violations();
    report
}

/// How the audit asks a shard what it holds.
pub trait ShardSource: Send + Sync {
    /// What `shard` holds now, or why it could not be asked (one line, for the report). The
    /// answer should come back within a bounded time: the audit waits for every shard.
    fn players(
        &self,
        shard: &LiveShard,
    ) -> impl Future<Output = Result<ShardPlayers, String>> + Send;
}

/// One pass: asks every live shard what it holds (all at once), then reads the ownership
/// records and the leases of every zone they name or a live shard serves. An answer that names
/// another shard than the one asked counts as unreachable.
pub async fn gather<S: Store, F: ShardSource>(
    store: &S,
    source: &F,
) -> Result<AuditInput, StoreError> {
    let live = store.live_shards().await?;
    let answers = join_all(live.iter().map(|shard| source.players(shard))).await;
    let mut shards = Vec::new();
    let mut unreachable = Vec::new();
    for (live_shard, answer) in live.iter().zip(answers) {
        let id = &live_shard.record.id;
        match answer {
            Ok(players) if players.shard == *id => shards.push(players),
            Ok(players) => unreachable.push((
                id.clone(),
                format!("its admin endpoint answered as shard {}", players.shard),
            )),
            Err(reason) => unreachable.push((id.clone(), reason)),
        }
    }
    let ownership = store.owned_players().await?;
    let zones: BTreeSet<&ZoneId> = ownership
        .iter()
        .filter(|r| r.owner.is_some())
        .filter_map(|r| r.zone.as_ref())
        .chain(live.iter().map(|s| &s.record.zone))
        .collect();
    let mut leases = Vec::new();
    for zone in zones {
        if let Some(lease) = store.get_lease(zone).await? {
            leases.push(lease);
        }
    }
    Ok(AuditInput {
        ownership,
        live: live.into_iter().map(|s| s.record.id).collect(),
        leases,
        shards,
        unreachable,
    })
}

/// The audit: two passes of [`gather`] and [`audit`], `settle` apart, merged by [`confirm`] (a
/// player counts as a violation only if it is one in both passes, with the same kind).
pub async fn run_audit<S: Store, F: ShardSource>(
    store: &S,
    source: &F,
    settle: Duration,
) -> Result<AuditReport, StoreError> {
    let first = audit(&gather(store, source).await?);
    tokio::time::sleep(settle).await;
    let second = audit(&gather(store, source).await?);
    Ok(confirm(&first, second))
}

/// Runs every future concurrently; their outputs in order.
async fn join_all<Fut: Future>(futures: impl IntoIterator<Item = Fut>) -> Vec<Fut::Output> {
    let mut pending: Vec<Pin<Box<Fut>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<Fut::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (future, output) in pending.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => done = false,
                }
            }
        }
        if done { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("invariant: every future completed"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use HeldState::{Active, Incoming, Joining, Outgoing};
    use ViolationKind::{Duplicated, Orphaned, StaleEpoch};

    fn shard(name: &str) -> ShardId {
        ShardId::new(name).expect("valid shard id")
    }

    fn zone(name: &str) -> ZoneId {
        ZoneId::new(name).expect("valid zone")
    }

    fn record(player: u64, owner: Option<&str>, zone_name: &str, epoch: u64) -> Ownership {
        Ownership {
            player: PlayerId(player),
            owner: owner.map(shard),
            zone: Some(zone(zone_name)),
            epoch,
            seq: 1,
            from: None,
            state: None,
        }
    }

    fn lease(zone_name: &str, owner: &str, epoch: u64) -> Lease {
        Lease {
            zone: zone(zone_name),
            owner: shard(owner),
            epoch,
        }
    }

    /// What a row expects of player 1.
    #[derive(Debug)]
    enum Expect {
        OwnedOnce,
        NotJudged,
        /// Not in the universe at all.
        Absent,
        /// A violation whose detail holds the text.
        Violation(ViolationKind, &'static str),
    }

    /// One case: player 1, its record, who holds it, the leases, the live and unreachable
    /// shards. Shards `a`, `b` serve zones `za`, `zb`; `a`, `b` and `c` answer unless unreachable.
    struct Row {
        name: &'static str,
        /// `(owner, zone, epoch)` of player 1's record.
        owner: Option<(&'static str, &'static str, u64)>,
        held: &'static [(&'static str, HeldState)],
        leases: &'static [(&'static str, &'static str, u64)],
        live: &'static [&'static str],
        unreachable: &'static [&'static str],
        expect: Expect,
    }

    const LEASES: &[(&str, &str, u64)] = &[("za", "a", 3), ("zb", "b", 5)];
    const LIVE: &[&str] = &["a", "b", "c"];

    fn input(row: &Row) -> AuditInput {
        let ownership = row
            .owner
            .map(|(o, z, e)| record(1, Some(o), z, e))
            .into_iter()
            .collect();
        let unreachable: Vec<(ShardId, String)> = row
            .unreachable
            .iter()
            .map(|s| (shard(s), "connection refused".to_owned()))
            .collect();
        let shards = row
            .live
            .iter()
            .filter(|s| !row.unreachable.contains(s))
            .map(|s| ShardPlayers {
                shard: shard(s),
                zone: zone(&format!("z{s}")),
                lease_epoch: None,
                players: row
                    .held
                    .iter()
                    .filter(|(h, _)| h == s)
                    .map(|(_, state)| HeldPlayer {
                        player: PlayerId(1),
                        state: *state,
                        pos: None,
                    })
                    .collect(),
            })
            .collect();
        AuditInput {
            ownership,
            live: row.live.iter().map(|s| shard(s)).collect(),
            leases: row.leases.iter().map(|(z, o, e)| lease(z, o, *e)).collect(),
            shards,
            unreachable,
        }
    }

    fn rows() -> Vec<Row> {
        let owned = |o, z, e| Some((o, z, e));
        vec![
            Row {
                name: "owner simulates it, active",
                owner: owned("a", "za", 3),
                held: &[("a", Active)],
                leases: LEASES,
                live: LIVE,
                unreachable: &[],
                expect: Expect::OwnedOnce,
            },
            Row {
                name: "owner simulates it, joining",
                owner: owned("a", "za", 3),
                held: &[("a", Joining)],
                leases: LEASES,
                live: LIVE,
                unreachable: &[],
                expect: Expect::OwnedOnce,
            },
            Row {
                name: "owner simulates it, incoming (transfer not accepted yet: epoch 0)",
                owner: owned("b", "zb", 0),
                held: &[("b", Incoming), ("a", Outgoing)],
                leases: LEASES,
                live: LIVE,
                unreachable: &[],
                expect: Expect::OwnedOnce,
            },
            Row {
                name: "owner froze it at the border, transfer not run yet",
                owner: owned("a", "za", 3),
                held: &[("a", Outgoing)],
                leases: LEASES,
                live: LIVE,
                unreachable: &[],
                expect: Expect::OwnedOnce,
            },
            Row {
                name: "transferred, new owner not spawned yet, old one holds it outgoing",
                owner: owned("b", "zb", 0),
                held: &[("a", Outgoing)],
                leases: LEASES,
                live: LIVE,
                unreachable: &[],
                expect: Expect::OwnedOnce,
            },
            Row {
                name: "lower epoch than the lease (lease renewed or re-acquired)",
                owner: owned("a", "za", 2),
                held: &[("a", Active)],
                leases: LEASES,
                live: LIVE,
                unreachable: &[],
                expect: Expect::OwnedOnce,
            },
            Row {
                name: "no lease for the zone: nothing to fence against",
                owner: owned("c", "zc", 9),
                held: &[("c", Active)],
                leases: LEASES,
                live: LIVE,
                unreachable: &[],
                expect: Expect::OwnedOnce,
            },
            Row {
                name: "two shards simulate it",
                owner: owned("a", "za", 3),
                held: &[("a", Active), ("b", Active)],
                leases: LEASES,
                live: LIVE,
                unreachable: &[],
                expect: Expect::Violation(
                    Duplicated,
                    "simulated by 2 shards: a (active), b (active)",
                ),
            },
            Row {
                name: "two shards simulate it, nobody owns it",
                owner: None,
                held: &[("a", Joining), ("b", Incoming)],
                leases: LEASES,
                live: LIVE,
                unreachable: &[],
                expect: Expect::Violation(Duplicated, "owned by nobody"),
            },
            Row {
                name: "a non-owner simulates it, active",
                owner: owned("a", "za", 3),
                held: &[("b", Active)],
                leases: LEASES,
                live: LIVE,
                unreachable: &[],
                expect: Expect::Violation(Duplicated, "held by b (active) but owned by a"),
            },
            Row {
                name: "a non-owner simulates it, joining",
                owner: owned("a", "za", 3),
                held: &[("a", Outgoing), ("b", Joining)],
                leases: LEASES,
                live: LIVE,
                unreachable: &[],
                expect: Expect::Violation(Duplicated, "held by b (joining) but owned by a"),
            },
            Row {
                name: "a non-owner simulates it, incoming",
                owner: owned("a", "za", 3),
                held: &[("b", Incoming)],
                leases: LEASES,
                live: LIVE,
                unreachable: &[],
                expect: Expect::Violation(Duplicated, "held by b (incoming) but owned by a"),
            },
            Row {
                name: "duplicated is judged before a dead owner",
                owner: owned("dead", "za", 3),
                held: &[("b", Active)],
                leases: LEASES,
                live: LIVE,
                unreachable: &[],
                expect: Expect::Violation(Duplicated, "owned by dead"),
            },
            Row {
                name: "owned by a dead shard",
                owner: owned("dead", "za", 3),
                held: &[],
                leases: LEASES,
                live: LIVE,
                unreachable: &[],
                expect: Expect::Violation(Orphaned, "owned by dead shard dead"),
            },
            Row {
                name: "a dead owner is judged before its stale lease",
                owner: owned("dead", "zb", 1),
                held: &[("a", Outgoing)],
                leases: LEASES,
                live: LIVE,
                unreachable: &[],
                expect: Expect::Violation(Orphaned, "owned by dead shard dead"),
            },
            Row {
                name: "the zone's lease is another shard's",
                owner: owned("a", "zb", 5),
                held: &[("a", Active)],
                leases: LEASES,
                live: LIVE,
                unreachable: &[],
                expect: Expect::Violation(
                    StaleEpoch,
                    "owned by a at epoch 5 in zone zb, whose lease b holds at epoch 5",
                ),
            },
            Row {
                name: "the record's epoch is above its lease's",
                owner: owned("a", "za", 4),
                held: &[("a", Active)],
                leases: LEASES,
                live: LIVE,
                unreachable: &[],
                expect: Expect::Violation(StaleEpoch, "above its lease's epoch 3"),
            },
            Row {
                name: "the owner does not hold it and nobody hands it off",
                owner: owned("a", "za", 3),
                held: &[],
                leases: LEASES,
                live: LIVE,
                unreachable: &[],
                expect: Expect::Violation(Orphaned, "owner a does not simulate it"),
            },
            Row {
                name: "simulated but owned by nobody",
                owner: None,
                held: &[("b", Active)],
                leases: LEASES,
                live: LIVE,
                unreachable: &[],
                expect: Expect::Violation(Orphaned, "owned by nobody: held by b (active)"),
            },
            Row {
                name: "held outgoing but owned by nobody",
                owner: None,
                held: &[("a", Outgoing)],
                leases: LEASES,
                live: LIVE,
                unreachable: &[],
                expect: Expect::Violation(Orphaned, "held by a (outgoing)"),
            },
            Row {
                name: "owned by an unreachable shard: not judged, even if another simulates it",
                owner: owned("a", "za", 3),
                held: &[("b", Active)],
                leases: LEASES,
                live: LIVE,
                unreachable: &["a"],
                expect: Expect::NotJudged,
            },
            Row {
                name: "neither owned nor held",
                owner: None,
                held: &[],
                leases: LEASES,
                live: LIVE,
                unreachable: &[],
                expect: Expect::Absent,
            },
        ]
    }

    #[test]
    fn every_rule_classifies_one_player() {
        for row in rows() {
            let report = audit(&input(&row));
            let name = row.name;
            let judged = report.owned_once
                + report.orphaned
                + report.duplicated
                + report.stale_epoch
                + report.not_judged;
            assert_eq!(report.players, judged, "{name}: one verdict per player");
            assert_eq!(report.settling, 0, "{name}");
            match row.expect {
                Expect::Absent => assert_eq!(report.players, 0, "{name}: {report:?}"),
                Expect::OwnedOnce => {
                    assert_eq!(
                        (report.players, report.owned_once),
                        (1, 1),
                        "{name}: {report:?}"
                    );
                    assert!(report.violations.is_empty(), "{name}");
                }
                Expect::NotJudged => {
                    assert_eq!(
                        (report.players, report.not_judged),
                        (1, 1),
                        "{name}: {report:?}"
                    );
                    assert!(report.violations.is_empty(), "{name}");
                    assert!(!report.clean(), "{name}: an unreachable shard is not clean");
                }
                Expect::Violation(kind, text) => {
                    assert_eq!(report.players, 1, "{name}: {report:?}");
                    let [violation] = report.violations.as_slice() else {
                        panic!("{name}: one violation expected: {report:?}");
                    };
                    assert_eq!(violation.player, PlayerId(1), "{name}");
                    assert_eq!(violation.kind, kind, "{name}: {}", violation.detail);
                    assert!(
                        violation.detail.contains(text),
                        "{name}: `{text}` missing from `{}`",
                        violation.detail
                    );
                    assert!(!report.clean(), "{name}");
                }
            }
        }
    }

    #[test]
    fn counts_cover_several_players_and_are_ordered() {
        let a = shard("a");
        let input = AuditInput {
            ownership: vec![
                record(3, Some("a"), "za", 1),
                record(1, Some("a"), "za", 1),
                record(2, Some("gone"), "za", 1),
                // Released: no owner, ignored.
                record(4, None, "za", 1),
            ],
            live: vec![a.clone()],
            leases: vec![lease("za", "a", 1)],
            shards: vec![ShardPlayers {
                shard: a,
                zone: zone("za"),
                lease_epoch: Some(1),
                players: vec![
                    HeldPlayer {
                        player: PlayerId(1),
                        state: Active,
                        pos: None,
                    },
                    HeldPlayer {
                        player: PlayerId(3),
                        state: Active,
                        pos: None,
                    },
                    HeldPlayer {
                        player: PlayerId(5),
                        state: Active,
                        pos: None,
                    },
                ],
            }],
            unreachable: vec![],
        };
        let report = audit(&input);
        assert_eq!(
            (
                report.players,
                report.owned_once,
                report.orphaned,
                report.duplicated,
                report.stale_epoch
            ),
            (4, 2, 2, 0, 0)
        );
        let players: Vec<PlayerId> = report.violations.iter().map(|v| v.player).collect();
        assert_eq!(players, [PlayerId(2), PlayerId(5)]);
        assert!(!report.clean());
    }

    #[test]
    fn empty_input_is_clean() {
        let report = audit(&AuditInput::default());
        assert_eq!(report, AuditReport::default());
        assert!(report.clean());
    }

    #[test]
    fn a_shard_listing_a_player_twice_counts_once() {
        let a = shard("a");
        let held = |state| HeldPlayer {
            player: PlayerId(1),
            state,
            pos: None,
        };
        let input = AuditInput {
            ownership: vec![record(1, Some("a"), "za", 1)],
            live: vec![a.clone()],
            leases: vec![],
            shards: vec![ShardPlayers {
                shard: a,
                zone: zone("za"),
                lease_epoch: None,
                players: vec![held(Outgoing), held(Active), held(Active)],
            }],
            unreachable: vec![],
        };
        let report = audit(&input);
        assert_eq!((report.players, report.owned_once), (1, 1), "{report:?}");
    }

    #[test]
    fn a_live_shard_without_an_answer_is_unreachable() {
        let input = AuditInput {
            ownership: vec![record(1, Some("a"), "za", 1)],
            live: vec![shard("b"), shard("a")],
            unreachable: vec![(shard("b"), "timed out".into())],
            ..AuditInput::default()
        };
        let report = audit(&input);
        assert_eq!((report.players, report.not_judged), (1, 1), "{report:?}");
        assert_eq!(
            report.unreachable,
            [
                (shard("a"), NO_ANSWER.to_owned()),
                (shard("b"), "timed out".to_owned())
            ]
        );
        assert!(!report.clean());
    }

    fn violation(player: u64, kind: ViolationKind) -> Violation {
        Violation {
            player: PlayerId(player),
            kind,
            detail: format!("p{player} {kind}"),
        }
    }

    #[test]
    fn only_violations_seen_twice_the_same_way_stand() {
        let mut first = AuditReport {
            players: 3,
            violations: vec![violation(1, Orphaned), violation(2, Duplicated)],
            ..AuditReport::default()
        };
        first.count_violations();
        let mut second = AuditReport {
            players: 4,
            owned_once: 1,
            violations: vec![
                violation(1, Orphaned),
                violation(2, StaleEpoch),
                violation(3, Duplicated),
            ],
            unreachable: vec![(shard("x"), "refused".into())],
            ..AuditReport::default()
        };
        second.count_violations();
        let report = confirm(&first, second);
        assert_eq!(report.violations, [violation(1, Orphaned)]);
        assert_eq!(
            (
                report.players,
                report.owned_once,
                report.orphaned,
                report.duplicated,
                report.stale_epoch,
                report.settling
            ),
            (4, 1, 1, 0, 0, 2)
        );
        assert_eq!(report.unreachable, [(shard("x"), "refused".to_owned())]);
        let healed = confirm(&first, AuditReport::default());
        assert!(healed.clean(), "{healed:?}");
    }

    #[test]
    fn shard_players_json_uses_snake_case_states() {
        let answer = ShardPlayers {
            shard: shard("eu-1"),
            zone: zone("west"),
            lease_epoch: Some(4),
            players: vec![HeldPlayer {
                player: PlayerId(7),
                state: Outgoing,
                pos: None,
            }],
        };
        let json = serde_json::to_value(&answer).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({"shard": "eu-1", "zone": "west", "lease_epoch": 4,
                "players": [{"player": 7, "state": "outgoing"}]})
        );
        let back: ShardPlayers = serde_json::from_value(json).expect("parses");
        assert_eq!(back, answer);
        let no_lease: ShardPlayers =
            serde_json::from_str(r#"{"shard":"a","zone":"z","players":[]}"#).expect("parses");
        assert_eq!(no_lease.lease_epoch, None);
    }

    #[test]
    fn bad_shard_answers_are_refused() {
        for bad in [
            r#"{"shard":"a","zone":"z","players":[{"player":1,"state":"dancing"}]}"#,
            r#"{"shard":"a","zone":"z","players":[{"player":-1,"state":"active"}]}"#,
            r#"{"shard":"a","players":[]}"#,
            r#"[]"#,
            "",
        ] {
            assert!(
                serde_json::from_str::<ShardPlayers>(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn report_json_names_every_figure() {
        let mut report = AuditReport {
            players: 2,
            owned_once: 1,
            violations: vec![violation(9, StaleEpoch)],
            unreachable: vec![(shard("b"), "refused".into())],
            ..AuditReport::default()
        };
        report.count_violations();
        let json = serde_json::to_value(&report).expect("serializes");
        for field in [
            "players",
            "owned_once",
            "orphaned",
            "duplicated",
            "stale_epoch",
            "violations",
            "unreachable",
        ] {
            assert!(json.get(field).is_some(), "{field} missing: {json}");
        }
        assert_eq!(json["stale_epoch"], 1);
        assert_eq!(json["violations"][0]["kind"], "stale_epoch");
        assert_eq!(
            json["unreachable"],
            serde_json::json!([{"shard": "b", "reason": "refused"}])
        );
        let back: AuditReport = serde_json::from_value(json).expect("parses");
        assert_eq!(back, report);
    }

    /// Answers from a script: one map of answers per pass, by shard.
    struct Scripted {
        passes: std::sync::Mutex<Vec<BTreeMap<ShardId, Result<ShardPlayers, String>>>>,
        asked: std::sync::Mutex<u32>,
    }

    impl ShardSource for Scripted {
        async fn players(&self, shard: &LiveShard) -> Result<ShardPlayers, String> {
            let pass = {
                let mut asked = self.asked.lock().expect("lock");
                *asked += 1;
                // Two live shards per pass.
                usize::try_from((*asked - 1) / 2).expect("small")
            };
            let passes = self.passes.lock().expect("lock");
            passes[pass]
                .get(&shard.record.id)
                .cloned()
                .unwrap_or_else(|| Err("not scripted".to_owned()))
        }
    }

    fn holding(id: &str, lease_epoch: u64, players: &[(u64, HeldState)]) -> ShardPlayers {
        ShardPlayers {
            shard: shard(id),
            zone: zone(&format!("z{id}")),
            lease_epoch: Some(lease_epoch),
            players: players
                .iter()
                .map(|(p, state)| HeldPlayer {
                    player: PlayerId(*p),
                    state: *state,
                    pos: None,
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn run_audit_keeps_what_is_wrong_in_both_passes() {
        use crate::clock::ManualClock;
        use crate::memory::MemoryStore;
        use crate::ownership::AcquireOutcome;
        use crate::store::ShardRecord;

        let store = MemoryStore::new(ManualClock::new(1_000));
        let ttl = Duration::from_secs(60);
        let mut leases = BTreeMap::new();
        for id in ["a", "b", "dead"] {
            let outcome = store
                .acquire_lease(&zone(&format!("z{id}")), &shard(id), ttl)
                .await
                .expect("acquire");
            let AcquireOutcome::Acquired(lease) = outcome else {
                panic!("{outcome:?}");
            };
            leases.insert(id, lease);
        }
        for id in ["a", "b"] {
            let record = ShardRecord {
                id: shard(id),
                zone: zone(&format!("z{id}")),
                region: "local".into(),
                addr: "127.0.0.1:7000".into(),
                cert_sha256: [0; 32],
                capacity: 10,
                load: 0,
                draining: false,
                admin_addr: None,
            };
            store
                .heartbeat_shard(&record, ttl)
                .await
                .expect("heartbeat");
        }
        // 1: simulated by its owner a. 2: joining a, not listed in the first pass. 3: owned by a
        // shard that is not live. 4: b starts simulating it unowned in the second pass.
        for (player, id) in [(1, "a"), (2, "a"), (3, "dead")] {
            store
                .claim_player(PlayerId(player), &leases[id])
                .await
                .expect("claim");
        }
        let epoch_a = leases["a"].epoch;
        let epoch_b = leases["b"].epoch;
        let first = BTreeMap::from([
            (shard("a"), Ok(holding("a", epoch_a, &[(1, Active)]))),
            (shard("b"), Ok(holding("b", epoch_b, &[]))),
        ]);
        let second = BTreeMap::from([
            (
                shard("a"),
                Ok(holding("a", epoch_a, &[(1, Active), (2, Joining)])),
            ),
            (shard("b"), Ok(holding("b", epoch_b, &[(4, Active)]))),
        ]);
        let source = Scripted {
            passes: std::sync::Mutex::new(vec![first, second]),
            asked: std::sync::Mutex::new(0),
        };
        let report = run_audit(&store, &source, Duration::ZERO)
            .await
            .expect("audit");
        assert_eq!(*source.asked.lock().expect("lock"), 4, "two passes");
        assert_eq!(
            (
                report.players,
                report.owned_once,
                report.orphaned,
                report.settling
            ),
            (4, 2, 1, 1),
            "{report:?}"
        );
        assert_eq!(report.violations.len(), 1, "{report:?}");
        assert_eq!(report.violations[0].player, PlayerId(3));
        assert!(report.violations[0].detail.contains("dead shard dead"));
        assert!(report.unreachable.is_empty(), "{report:?}");
    }

    #[tokio::test]
    async fn a_shard_answering_under_another_name_is_unreachable() {
        use crate::clock::ManualClock;
        use crate::memory::MemoryStore;
        use crate::store::ShardRecord;

        let store = MemoryStore::new(ManualClock::new(1_000));
        for id in ["a", "b"] {
            let record = ShardRecord {
                id: shard(id),
                zone: zone(&format!("z{id}")),
                region: "local".into(),
                addr: "127.0.0.1:7000".into(),
                cert_sha256: [0; 32],
                capacity: 10,
                load: 0,
                draining: false,
                admin_addr: None,
            };
            store
                .heartbeat_shard(&record, Duration::from_secs(60))
                .await
                .expect("heartbeat");
        }
        let answers = BTreeMap::from([
            (shard("a"), Ok(holding("b", 1, &[]))),
            (shard("b"), Err("connection refused".to_owned())),
        ]);
        let source = Scripted {
            passes: std::sync::Mutex::new(vec![answers.clone(), answers]),
            asked: std::sync::Mutex::new(0),
        };
        let input = gather(&store, &source).await.expect("gather");
        assert!(input.shards.is_empty(), "{input:?}");
        assert_eq!(
            input.unreachable,
            [
                (
                    shard("a"),
                    "its admin endpoint answered as shard b".to_owned()
                ),
                (shard("b"), "connection refused".to_owned())
            ]
        );
    }

    #[tokio::test]
    async fn join_all_keeps_the_order_of_its_futures() {
        let slow = async {
            tokio::task::yield_now().await;
            1_u8
        };
        let outputs = join_all([
            Box::pin(slow) as Pin<Box<dyn Future<Output = u8>>>,
            Box::pin(async { 2 }),
        ])
        .await;
        assert_eq!(outputs, [1, 2]);
        assert!(
            join_all(Vec::<std::future::Ready<u8>>::new())
                .await
                .is_empty()
        );
    }
}
