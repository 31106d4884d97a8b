//! The strategies: which of the candidate nodes serves an attempt.
//!
//! Candidates are the slots of a snapshot that pass a predicate; `count` of them
//! do. Nothing here allocates: a strategy draws a rank among the candidates and
//! finds the slot of that rank (directly when every slot is a candidate).

use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng;

use super::cache::Slot;
use super::Strategy;

/// The index of the slot holding the `rank`-th candidate.
fn nth(slots: &[Slot], count: usize, rank: usize, pass: &impl Fn(&Slot) -> bool) -> usize {
    if count == slots.len() {
        return rank;
    }
    slots
        .iter()
        .enumerate()
        .filter(|(_, s)| pass(s))
        .nth(rank)
        .map_or(0, |(i, _)| i)
}

/// Picks one of the `count` (at least 1) slots passing `pass`; returns its index.
pub(super) fn pick(
    strategy: Strategy,
    round_robin: &AtomicUsize,
    slots: &[Slot],
    count: usize,
    pass: impl Fn(&Slot) -> bool,
) -> usize {
    debug_assert!(count > 0 && count <= slots.len());
    match strategy {
        Strategy::Random => {
            let rank = rand::rng().random_range(0..count);
            nth(slots, count, rank, &pass)
        }
        Strategy::RoundRobin => {
            let rank = round_robin.fetch_add(1, Ordering::Relaxed) % count;
            nth(slots, count, rank, &pass)
        }
        Strategy::LeastOutstanding => {
            if count == 1 {
                return nth(slots, count, 0, &pass);
            }
            // Power of two choices: two distinct random candidates, the one with
            // fewer requests in flight wins (the first on a tie).
            let mut rng = rand::rng();
            let first = rng.random_range(0..count);
            let mut second = rng.random_range(0..count - 1);
            if second >= first {
                second += 1;
            }
            let a = nth(slots, count, first, &pass);
            let b = nth(slots, count, second, &pass);
            if slots[b].stats.in_flight() < slots[a].stats.in_flight() {
                b
            } else {
                a
            }
        }
    }
}
