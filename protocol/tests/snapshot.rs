//! Property tests of the snapshot payload codec ([`meridian_protocol::snapshot`]):
//! - encode → apply is the identity for random baselines and new states (moves small and large,
//!   heading and kind changes, removals, additions, full snapshots);
//! - applying arbitrary bytes, or a mutation of a valid payload, over any baseline returns a
//!   state or an error, never panics, and never grows the output past the entity limit;
//! - a delta filled through [`DeltaPlanner`] / [`DeltaBudget`] never exceeds the bound, nor the
//!   budget.
//!
//! Each property runs at least 1,000 cases. A failure prints proptest's seed and minimal input.

use meridian_protocol::EntityId;
use meridian_protocol::snapshot::{
    DeltaPlanner, EntityKind, EntityState, MAX_SNAPSHOT_ENTITIES, apply_delta, encode_delta,
};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn kind() -> impl Strategy<Value = EntityKind> {
    prop_oneof![
        Just(EntityKind::Player),
        Just(EntityKind::Npc),
        Just(EntityKind::Pickup)
    ]
}

fn state_at(id: u32) -> impl Strategy<Value = EntityState> {
    (kind(), any::<[u16; 2]>(), any::<u8>()).prop_map(move |(kind, pos, heading)| EntityState {
        id: EntityId(id),
        kind,
        pos,
        heading,
    })
}

/// Ids: mostly small and dense (as on a shard), sometimes anywhere in `u32`.
fn id() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0u32..2000, 1 => any::<u32>()]
}

fn states(max: usize) -> impl Strategy<Value = Vec<EntityState>> {
    proptest::collection::btree_set(id(), 0..max)
        .prop_flat_map(|ids| ids.into_iter().map(state_at).collect::<Vec<_>>())
}

/// What happens to one baseline entity.
#[derive(Clone, Debug)]
enum Fate {
    Keep,
    Remove,
    Change {
        d: [i32; 2],
        heading: Option<u8>,
        kind: Option<EntityKind>,
    },
}

fn fate() -> impl Strategy<Value = Fate> {
    let delta = prop_oneof![
        3 => -64i32..64,
        1 => -2000i32..2000,
        1 => -70_000i32..70_000,
    ];
    prop_oneof![
        2 => Just(Fate::Keep),
        1 => Just(Fate::Remove),
        4 => ([delta.clone(), delta], proptest::option::of(any::<u8>()), proptest::option::weighted(0.1, kind()))
            .prop_map(|(d, heading, kind)| Fate::Change { d, heading, kind }),
    ]
}

/// A baseline and a new state derived from it.
fn delta_case() -> impl Strategy<Value = (Vec<EntityState>, Vec<EntityState>)> {
    prop_oneof![
        // Independent states.
        1 => (states(60), states(60)),
        // The new state is the baseline with changes, removals and additions.
        4 => states(150).prop_flat_map(|base| {
            let n = base.len();
            (
                Just(base),
                proptest::collection::vec(fate(), n),
                states(30),
            )
        })
        .prop_map(|(base, fates, adds)| {
            let mut new: BTreeMap<u32, EntityState> = BTreeMap::new();
            for (b, fate) in base.iter().zip(fates) {
                match fate {
                    Fate::Keep => {
                        new.insert(b.id.0, *b);
                    }
                    Fate::Remove => {}
                    Fate::Change { d, heading, kind } => {
                        let mut e = *b;
                        for (p, d) in e.pos.iter_mut().zip(d) {
                            *p = (i32::from(*p) + d).clamp(0, i32::from(u16::MAX)) as u16;
                        }
                        e.heading = heading.unwrap_or(e.heading);
                        e.kind = kind.unwrap_or(e.kind);
                        new.insert(e.id.0, e);
                    }
                }
            }
            for a in adds {
                new.entry(a.id.0).or_insert(a);
            }
            (base, new.into_values().collect())
        }),
    ]
}

fn encode(base: &[EntityState], new: &[EntityState]) -> Vec<u8> {
    let mut payload = Vec::new();
    encode_delta(base, new, &mut payload).expect("sorted input encodes");
    payload
}

/// Applies `payload`; on success the state is sorted by strictly ascending id and within the
/// limit; either way the output never grew past the limit plus the baseline.
fn apply_checked(base: &[EntityState], payload: &[u8]) -> Result<Vec<EntityState>, String> {
    let mut out = Vec::new();
    let res = apply_delta(base, payload, &mut out);
    assert!(
        out.capacity() <= (base.len() + MAX_SNAPSHOT_ENTITIES).max(8),
        "capacity {} for a payload of {} bytes",
        out.capacity(),
        payload.len()
    );
    match res {
        Ok(()) => {
            assert!(out.len() <= MAX_SNAPSHOT_ENTITIES);
            assert!(out.windows(2).all(|w| w[0].id < w[1].id), "unsorted output");
            Ok(out)
        }
        Err(e) => Err(e.to_string()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn encode_then_apply_is_identity((base, new) in delta_case()) {
        let payload = encode(&base, &new);
        let mut out = Vec::new();
        apply_delta(&base, &payload, &mut out).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&out, &new);
        // A full snapshot of the same state too.
        let full = encode(&[], &new);
        apply_delta(&[], &full, &mut out).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&out, &new);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        base in states(40),
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let _ = apply_checked(&base, &bytes);
        let _ = apply_checked(&[], &bytes);
    }

    #[test]
    fn mutated_payloads_never_panic(
        (base, new) in delta_case(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..6),
        cut in proptest::option::of(any::<prop::sample::Index>()),
        insert in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
        other_base in states(40),
    ) {
        let mut payload = encode(&base, &new);
        for (at, bit) in flips {
            let i = at.index(payload.len());
            payload[i] ^= 1 << bit;
        }
        if let Some((at, byte)) = insert {
            payload.insert(at.index(payload.len() + 1), byte);
        }
        if let Some(at) = cut {
            payload.truncate(at.index(payload.len() + 1));
        }
        let _ = apply_checked(&base, &payload);
        // The valid payload against the wrong baseline.
        let _ = apply_checked(&other_base, &encode(&base, &new));
    }

    #[test]
    fn budgeted_delta_stays_within_bound(
        (base, truth) in delta_case(),
        budget in 1usize..1500,
        order_seed in any::<u64>(),
    ) {
        // Candidates as the shard sees them: changes, additions and removals.
        #[derive(Clone, Copy)]
        enum Cand { Change(usize, usize), Add(usize), Remove(usize) }
        let mut cands = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < base.len() || j < truth.len() {
            match (base.get(i), truth.get(j)) {
                (Some(b), Some(t)) if b.id == t.id => {
                    if b != t { cands.push(Cand::Change(i, j)); }
                    i += 1; j += 1;
                }
                (Some(b), Some(t)) if b.id < t.id => { cands.push(Cand::Remove(i)); i += 1; }
                (Some(_), None) => { cands.push(Cand::Remove(i)); i += 1; }
                _ => { cands.push(Cand::Add(j)); j += 1; }
            }
        }
        // A priority order: any permutation.
        let mut keyed: Vec<(u64, Cand)> = cands
            .iter()
            .enumerate()
            .map(|(k, c)| ((k as u64 + 1).wrapping_mul(order_seed | 1).rotate_left(17), *c))
            .collect();
        keyed.sort_by_key(|(k, _)| *k);

        let mut planner = DeltaPlanner::new();
        for c in &cands {
            if let Cand::Change(i, j) = c { planner.change(&base[*i], &truth[*j]); }
        }
        let mut fit = planner.budget(budget, base.len());
        let mut new: BTreeMap<u32, EntityState> = base.iter().map(|e| (e.id.0, *e)).collect();
        for (_, c) in keyed {
            match c {
                Cand::Change(i, j) => if fit.try_change(&base[i], &truth[j]) {
                    new.insert(truth[j].id.0, truth[j]);
                },
                Cand::Add(j) => if fit.try_add(&truth[j]) {
                    new.insert(truth[j].id.0, truth[j]);
                },
                Cand::Remove(i) => if fit.try_remove() {
                    new.remove(&base[i].id.0);
                },
            }
        }
        let new: Vec<EntityState> = new.into_values().collect();
        let payload = encode(&base, &new);
        prop_assert!(payload.len() <= fit.bound_bytes(), "{} > bound {}", payload.len(), fit.bound_bytes());
        // An empty delta is one byte (its header), whatever the budget.
        prop_assert!(payload.len() <= budget.max(1), "{} > budget {}", payload.len(), budget);
        let mut out = Vec::new();
        apply_delta(&base, &payload, &mut out).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(out, new);
    }
}
