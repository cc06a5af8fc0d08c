//! The engine's sequence slots, and the prompt prefixes their KV caches keep.
//!
//! Each slot is one llama.cpp sequence with a KV stream of its own. A finished sequence leaves
//! its tokens in the slot's stream, so the slots double as a prefix cache of at most one entry
//! each: a new request goes to the idle slot whose cached tokens share the longest start with
//! its prompt, or, when none shares a useful one, to the least recently used idle slot (whose
//! prefix is evicted). When another slot, busy or not, shares much more than the chosen one, its
//! stream is copied over first, so concurrent requests with one system prompt prefill it once.
//! Choosing is pure and tested here; the runner carries the choice out on the context.

use llama_cpp_2::token::LlamaToken;

/// Fewer shared tokens than this do not earn an idle slot over the least recently used one.
const MIN_SHARED: usize = 16;

/// Copying another slot's stream costs about as much as prefilling this many tokens (a copy of
/// the whole stream), so it is done only when it saves more.
const COPY_GAIN: usize = 32;

#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// The tokens whose KV the slot's stream holds, in position order from 0.
    pub cached: Vec<LlamaToken>,
    /// A sequence is running in it.
    pub busy: bool,
    /// When it was last taken or freed, on the runner's step clock.
    pub last_used: u64,
}

/// Where a new sequence goes and what it starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placement {
    pub slot: usize,
    /// Leading prompt tokens whose KV is kept; the rest is prefilled.
    pub keep: usize,
    /// Copy this slot's stream into `slot` before keeping `keep` tokens of it.
    pub copy_from: Option<usize>,
}

/// Tokens `a` and `b` share from their start.
pub(crate) fn shared(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The slot for a prompt of `tokens`, or `None` while every slot is busy. At least the prompt's
/// last token is always decoded again: its logits are needed.
pub(crate) fn place(slots: &[Slot], tokens: &[LlamaToken], reuse: bool) -> Option<Placement> {
    let idle = || slots.iter().enumerate().filter(|(_, s)| !s.busy);
    let lru = idle().min_by_key(|(_, s)| s.last_used)?.0;
    if !reuse {
        return Some(Placement {
            slot: lru,
            keep: 0,
            copy_from: None,
        });
    }
    let limit = tokens.len().saturating_sub(1);
    let own = |s: &Slot| shared(&s.cached, tokens).min(limit);
    let best_idle = idle()
        .map(|(i, s)| (i, own(s), s.last_used))
        .max_by_key(|&(_, n, used)| (n, std::cmp::Reverse(used)));
    let (slot, keep) = match best_idle {
        Some((i, n, _)) if n >= MIN_SHARED => (i, n),
        _ => (lru, own(&slots[lru])),
    };
    let donor = slots
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != slot)
        .map(|(i, s)| (i, own(s)))
        .max_by_key(|&(_, n)| n);
    Some(match donor {
        Some((from, n)) if n >= keep + COPY_GAIN => Placement {
            slot,
            keep: n,
            copy_from: Some(from),
        },
        _ => Placement {
            slot,
            keep,
            copy_from: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(range: std::ops::Range<i32>) -> Vec<LlamaToken> {
        range.map(LlamaToken).collect()
    }

    fn slot(cached: Vec<LlamaToken>, busy: bool, last_used: u64) -> Slot {
        Slot {
            cached,
            busy,
            last_used,
        }
    }

    #[test]
    fn an_idle_slot_holding_the_prefix_is_chosen() {
        let slots = [
            slot(toks(0..10), false, 1),
            slot(toks(0..100), false, 5),
            slot(Vec::new(), false, 0),
        ];
        let mut prompt = toks(0..80);
        prompt.extend(toks(500..520));
        let p = place(&slots, &prompt, true).expect("idle slots");
        assert_eq!(
            p,
            Placement {
                slot: 1,
                keep: 80,
                copy_from: None
            }
        );
    }

    #[test]
    fn without_a_useful_prefix_the_least_recently_used_slot_is_evicted() {
        let slots = [
            slot(toks(0..50), false, 7),
            slot(toks(100..150), false, 2),
            slot(toks(200..250), false, 9),
        ];
        let p = place(&slots, &toks(300..400), true).expect("idle slots");
        assert_eq!((p.slot, p.keep, p.copy_from), (1, 0, None));
        // A few shared tokens (a template's opening) do not keep a slot from eviction, but are
        // still kept when the evicted slot has them.
        let slots = [slot(toks(0..50), false, 7), slot(toks(0..3), false, 2)];
        let mut prompt = toks(0..5);
        prompt.extend(toks(900..950));
        let p = place(&slots, &prompt, true).expect("idle slots");
        assert_eq!((p.slot, p.keep, p.copy_from), (1, 3, None));
    }

    #[test]
    fn a_busy_slot_sharing_much_more_is_copied_from() {
        let slots = [slot(toks(0..600), true, 9), slot(toks(0..4), false, 1)];
        let mut prompt = toks(0..590);
        prompt.extend(toks(1000..1010));
        let p = place(&slots, &prompt, true).expect("one idle slot");
        assert_eq!(
            p,
            Placement {
                slot: 1,
                keep: 590,
                copy_from: Some(0)
            }
        );
        // Not for a few tokens more than the chosen slot already has.
        let slots = [slot(toks(0..40), true, 9), slot(toks(0..20), false, 1)];
        let p = place(&slots, &toks(0..60), true).expect("one idle slot");
        assert_eq!((p.slot, p.keep, p.copy_from), (1, 20, None));
    }

    #[test]
    fn busy_slots_are_never_chosen_and_a_full_house_waits() {
        let slots = [slot(toks(0..100), true, 1), slot(toks(0..100), true, 2)];
        assert_eq!(place(&slots, &toks(0..50), true), None);
        let slots = [slot(toks(0..100), true, 1), slot(Vec::new(), false, 2)];
        assert_eq!(place(&slots, &toks(0..50), true).map(|p| p.slot), Some(1));
    }

    #[test]
    fn the_last_prompt_token_is_always_decoded_and_reuse_can_be_off() {
        let slots = [slot(toks(0..100), false, 1)];
        let p = place(&slots, &toks(0..100), true).expect("idle");
        assert_eq!(p.keep, 99);
        let p = place(&slots, &toks(0..100), false).expect("idle");
        assert_eq!((p.keep, p.copy_from), (0, None));
    }
}
