//! `apply_inputs`: turns the tick's client inputs into movement intents, in sequence order per
//! player, dropping repeats and refusing floods.

use super::components::{Frozen, Player};
use super::exchange::{InputRejection, RejectedInput};
use super::resources::{CurrentTick, InputOutcome, InputQueue, PlayerIndex, Rules, TickIo};
use bevy_ecs::prelude::*;
use meridian_protocol::datagram::InputFrameMsg;
use meridian_protocol::quantize::byte_to_angle;

/// Applies the tick's inputs.
///
/// Per player, in ascending sequence order: an input not newer than the last one applied is
/// counted `redundant` and dropped (datagrams repeat the last few inputs); a new one takes a
/// token from the player's bucket (refilled by one a tick, up to `input_burst`) and becomes
/// the player's intent, or is refused as [`InputRejection::Flood`] when the bucket is empty.
/// Inputs of players not in the zone are refused as [`InputRejection::UnknownPlayer`]. Inputs of
/// frozen players (waiting for their handoff) are dropped without a word: not applied, not
/// acknowledged, not counted against their bucket.
///
/// Inputs are grouped by player with a counting sort on the players' ranks (linear, unlike a
/// comparison sort of the whole input, which cost more than the rest of the tick's input
/// handling), each group ordered by sequence number (stable: of two inputs with one sequence
/// number, the first to arrive wins), then the players are visited in storage order.
pub(crate) fn apply_inputs(
    mut io: ResMut<TickIo>,
    mut queue: ResMut<InputQueue>,
    index: Res<PlayerIndex>,
    rules: Res<Rules>,
    tick: Res<CurrentTick>,
    mut players: Query<&mut Player, Without<Frozen>>,
) {
    let TickIo { inputs, outputs } = &mut *io;
    let inputs = &mut inputs.inputs;
    let InputQueue {
        ranked,
        runs,
        order,
        outcomes,
    } = &mut *queue;

    // 1. The sender's rank of each input; one lookup per run of inputs from one sender (a
    //    datagram's inputs arrive together).
    ranked.clear();
    let mut sender = None;
    for (i, (player, _)) in inputs.iter().enumerate() {
        if sender.is_none_or(|(p, _)| p != *player) {
            sender = Some((*player, index.ranks.get(player).copied()));
        }
        match sender.and_then(|(_, rank)| rank) {
            Some(rank) => ranked.push((rank, i as u32)),
            None => outputs.rejected.push(RejectedInput {
                player: *player,
                reason: InputRejection::UnknownPlayer,
            }),
        }
    }

    // 2. Group by rank (counting sort), then order each group by sequence number.
    let n_players = index.entries.len();
    runs.clear();
    runs.resize(n_players + 1, 0);
    for &(rank, _) in ranked.iter() {
        runs[rank as usize + 1] += 1;
    }
    let mut sum = 0;
    for run in runs.iter_mut() {
        sum += *run;
        *run = sum;
    }
    order.clear();
    order.resize(ranked.len(), 0);
    for &(rank, i) in ranked.iter() {
        let slot = &mut runs[rank as usize];
        order[*slot as usize] = i;
        *slot += 1;
    }
    // The cursors now sit at each run's end, which is the next run's start: shift back.
    runs.copy_within(..n_players, 1);
    runs[0] = 0;
    for r in 0..n_players {
        let group = &mut order[runs[r] as usize..runs[r + 1] as usize];
        if group.len() > 1 {
            // Insertion sort: groups hold a handful of inputs, and it is stable.
            for j in 1..group.len() {
                let mut k = j;
                while k > 0 && inputs[group[k - 1] as usize].1.seq > inputs[group[k] as usize].1.seq
                {
                    group.swap(k - 1, k);
                    k -= 1;
                }
            }
        }
    }

    // 3. Each player with inputs applies them in order.
    outcomes.clear();
    outcomes.resize(n_players, InputOutcome::default());
    for mut player in &mut players {
        let rank = player.rank as usize;
        let Some((&start, &end)) = runs.get(rank).zip(runs.get(rank + 1)) else {
            continue;
        };
        if start == end {
            continue;
        }
        let state = &mut *player;
        // Lazy refill: one token per tick since the last refill, up to the capacity.
        let elapsed = tick.0.0.saturating_sub(state.refilled.0);
        let room = u64::from(rules.input_burst.saturating_sub(state.tokens));
        state.tokens += elapsed.min(room) as u32;
        state.refilled = tick.0;
        let outcome = &mut outcomes[rank];
        for &i in &order[start as usize..end as usize] {
            let frame = &inputs[i as usize].1;
            if state.last_seq.is_some_and(|last| frame.seq <= last) {
                outputs.redundant += 1;
            } else if state.tokens == 0 {
                // Dropped for good: its repeats in later datagrams are redundant, not new
                // floods, so a client whose inputs were held up and then arrived together
                // loses those few inputs once instead of being refused every tick after.
                outcome.flooded += 1;
                state.last_seq = Some(frame.seq);
            } else {
                state.tokens -= 1;
                apply_intent(state, frame, &rules);
                outcome.applied = Some(frame.seq);
            }
        }
    }

    // 4. Report by player id (rank order).
    for (entry, outcome) in index.entries.iter().zip(outcomes.iter()) {
        let reason = InputRejection::Flood;
        let flood = RejectedInput {
            player: entry.player,
            reason,
        };
        outputs
            .rejected
            .extend(std::iter::repeat_n(flood, outcome.flooded as usize));
        if let Some(seq) = outcome.applied {
            outputs.input_acks.push((entry.player, seq));
        }
    }
    inputs.clear();
}

/// Makes `frame` the player's intent: a direction from its heading byte, a speed from its
/// throttle.
fn apply_intent(state: &mut Player, frame: &InputFrameMsg, rules: &Rules) {
    let speed = f32::from(frame.throttle) / 255.0 * rules.max_speed;
    let [cos, sin] = rules.directions[usize::from(frame.heading)];
    state.intent = [cos * speed, sin * speed];
    state.facing = byte_to_angle(frame.heading);
    state.last_seq = Some(frame.seq);
}
