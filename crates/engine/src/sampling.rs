//! Token sampling in Rust, straight from the logits.
//!
//! llama.cpp's sampler chain builds an n_vocab candidate array every step (0.15–1 ms a token);
//! reading the logits here costs tens of microseconds. The order follows OpenAI / Hugging Face:
//! penalties and `logit_bias` on the raw logits, then temperature, then `top_k`, then `top_p`,
//! then `min_p` (as Hugging Face and vLLM order them; llama.cpp cuts before the temperature).
//! Temperature 0 is greedy. What a request leaves out is the model's default ([`defaults`]).

use std::collections::HashMap;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::logprobs;

pub(crate) mod defaults;

/// How to pick each next token.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 is greedy; OpenAI's range is [0, 2].
    pub temperature: f32,
    /// Nucleus mass in (0, 1]; 1 keeps everything.
    pub top_p: f32,
    /// 0 keeps every token.
    pub top_k: u32,
    /// A token is kept only if its probability is at least this share of the best one's; 0
    /// keeps every token.
    pub min_p: f32,
    /// Hugging Face's and vLLM's `repetition_penalty` (llama.cpp's `repeat_penalty`): the
    /// logit of a token already generated is divided by it when positive, multiplied when
    /// negative; 1 is off.
    pub repetition_penalty: f32,
    /// Subtracted once from the logit of every token already generated.
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once per time it was generated.
    pub frequency_penalty: f32,
    /// Added to a token's logit, as OpenAI's `logit_bias` (−100 bans, +100 forces).
    pub logit_bias: Vec<(u32, f32)>,
    /// Same seed, same prompt, same parameters: same text.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: None,
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        }
    }

    fn is_greedy(&self) -> bool {
        self.temperature <= 1e-6
    }
}

/// Below `max − CUTOFF·T` a token's probability is under e^-30 of the best one's: even 262k of
/// them add less than 1e-7 of mass, so they are left out of the candidate list.
const CUTOFF: f32 = 30.0;

/// Samples one sequence's tokens; keeps the counts the penalties need.
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
    counts: HashMap<u32, u32>,
    scratch: Vec<f32>,
    candidates: Vec<(f32, u32)>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(seed) => ChaCha8Rng::seed_from_u64(seed),
            None => ChaCha8Rng::from_os_rng(),
        };
        Sampler {
            params,
            rng,
            counts: HashMap::new(),
            scratch: Vec::new(),
            candidates: Vec::new(),
        }
    }

    /// Picks the next token from `logits` (one per vocabulary entry).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        self.sample_masked(logits, None::<fn(u32) -> bool>)
    }

    /// Picks the next token among those `allowed` says yes to (all, with `None`); a grammar
    /// supplies the mask. At least one token must be allowed.
    pub fn sample_masked(&mut self, logits: &[f32], allowed: Option<impl Fn(u32) -> bool>) -> u32 {
        let adjusted = self.needs_adjustment();
        if let Some(allowed) = &allowed
            && !adjusted
            && self.params.is_greedy()
        {
            // The model's own choice is usually allowed: one scan, no copy.
            let best = logprobs::argmax(logits) as u32;
            if allowed(best) {
                return best;
            }
        }
        let masked = allowed.is_some();
        if adjusted || masked {
            self.scratch.clear();
            self.scratch.extend_from_slice(logits);
            self.apply_adjustments();
            if let Some(allowed) = &allowed {
                for (i, l) in self.scratch.iter_mut().enumerate() {
                    if !allowed(i as u32) {
                        *l = f32::NEG_INFINITY;
                    }
                }
            }
        }
        let logits = if adjusted || masked {
            &self.scratch[..]
        } else {
            logits
        };
        if self.params.is_greedy() {
            return logprobs::argmax(logits) as u32;
        }
        let params = &self.params;
        let t = params.temperature;
        let m = logprobs::max(logits);
        // Masked-out tokens are −∞ and must stay out even when every logit is −∞ but these.
        let floor = (m - CUTOFF * t).max(f32::MIN);
        self.candidates.clear();
        self.candidates.extend(
            logits
                .iter()
                .enumerate()
                .filter(|&(_, &l)| l >= floor)
                .map(|(i, &l)| (l, i as u32)),
        );
        let by_logit_desc = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0);
        let k = params.top_k as usize;
        if k > 0 && self.candidates.len() > k {
            self.candidates.select_nth_unstable_by(k - 1, by_logit_desc);
            self.candidates.truncate(k);
        }
        self.candidates.sort_unstable_by(by_logit_desc);
        // Reuse the logit slot for the unnormalised probability.
        let mut total = 0f32;
        for c in self.candidates.iter_mut() {
            c.0 = ((c.0 - m) / t).exp();
            total += c.0;
        }
        let mut keep = self.candidates.len();
        if params.top_p < 1.0 {
            let target = params.top_p * total;
            let mut cum = 0f32;
            for (i, c) in self.candidates.iter().enumerate() {
                cum += c.0;
                if cum >= target {
                    keep = i + 1;
                    break;
                }
            }
            total = cum.min(total);
        }
        if params.min_p > 0.0 {
            // Sorted by probability, and the first is the best at exp(0) = 1.
            let cut = self.candidates[..keep]
                .iter()
                .position(|c| c.0 < params.min_p)
                .unwrap_or(keep);
            if cut < keep {
                total -= self.candidates[cut..keep].iter().map(|c| c.0).sum::<f32>();
                keep = cut;
            }
        }
        let kept = &self.candidates[..keep.max(1)];
        let r = unit_f32(&mut self.rng) * total;
        let mut cum = 0f32;
        for c in kept {
            cum += c.0;
            if r < cum {
                return c.1;
            }
        }
        // Rounding can leave r a hair above the last sum: the last kept token takes it.
        kept.last().map_or(0, |c| c.1)
    }

    /// Records a generated token for the presence and frequency penalties.
    pub fn accept(&mut self, token: u32) {
        *self.counts.entry(token).or_insert(0) += 1;
    }

    fn needs_adjustment(&self) -> bool {
        let p = &self.params;
        !p.logit_bias.is_empty()
            || (!self.counts.is_empty()
                && (p.presence_penalty != 0.0
                    || p.frequency_penalty != 0.0
                    || p.repetition_penalty != 1.0))
    }

    fn apply_adjustments(&mut self) {
        let repeat = self.params.repetition_penalty;
        for (&token, &count) in &self.counts {
            if let Some(l) = self.scratch.get_mut(token as usize) {
                if repeat != 1.0 {
                    *l = if *l > 0.0 { *l / repeat } else { *l * repeat };
                }
                *l -= self.params.frequency_penalty * count as f32 + self.params.presence_penalty;
            }
        }
        for &(token, bias) in &self.params.logit_bias {
            if let Some(l) = self.scratch.get_mut(token as usize) {
                *l += bias;
            }
        }
    }
}

/// A uniform float in [0, 1) from the top 24 bits of a draw.
fn unit_f32(rng: &mut ChaCha8Rng) -> f32 {
    (rng.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_p: f32, top_k: u32, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_p,
            top_k,
            seed: Some(seed),
            ..SamplingParams::default()
        }
    }

    fn histogram(p: SamplingParams, logits: &[f32], draws: usize) -> Vec<usize> {
        let mut s = Sampler::new(p);
        let mut h = vec![0; logits.len()];
        for _ in 0..draws {
            h[s.sample(logits) as usize] += 1;
        }
        h
    }

    #[test]
    fn greedy_takes_the_argmax() {
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&[0.1, 2.0, 1.9, -5.0]), 1);
    }

    #[test]
    fn same_seed_same_draws_other_seed_other_draws() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let a = histogram(params(1.0, 1.0, 0, 7), &logits, 200);
        let b = histogram(params(1.0, 1.0, 0, 7), &logits, 200);
        let c = histogram(params(1.0, 1.0, 0, 8), &logits, 200);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn top_k_limits_to_k_best() {
        let logits = [3.0, 2.9, 2.8, 0.0, -1.0];
        let h = histogram(params(2.0, 1.0, 2, 1), &logits, 2000);
        assert!(h[0] > 0 && h[1] > 0);
        assert_eq!(h[2] + h[3] + h[4], 0, "{h:?}");
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // Probabilities ≈ 0.665, 0.245, 0.090: top_p 0.7 keeps the first two only.
        let logits = [2.0, 1.0, 0.0];
        let h = histogram(params(1.0, 0.7, 0, 3), &logits, 3000);
        assert_eq!(h[2], 0, "{h:?}");
        assert!(h[1] > 500, "{h:?}");
    }

    #[test]
    fn temperature_follows_softmax() {
        let logits = [(0.75f32).ln(), (0.25f32).ln()];
        let h = histogram(params(1.0, 1.0, 0, 11), &logits, 20_000);
        let p0 = h[0] as f64 / 20_000.0;
        assert!((p0 - 0.75).abs() < 0.02, "p0 = {p0}");
    }

    #[test]
    fn the_mask_is_respected_greedy_or_not() {
        let logits = [5.0, 1.0, 0.5, 0.2];
        let even = |t: u32| t.is_multiple_of(2);
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample_masked(&logits, Some(even)), 0);
        let odd = |t: u32| t % 2 == 1;
        assert_eq!(s.sample_masked(&logits, Some(odd)), 1);
        let mut s = Sampler::new(params(1.5, 1.0, 0, 5));
        for _ in 0..500 {
            assert!(odd(s.sample_masked(&logits, Some(odd))));
        }
    }

    #[test]
    fn penalties_and_bias_move_the_choice() {
        let logits = [1.0, 0.9];
        let mut s = Sampler::new(SamplingParams {
            frequency_penalty: 0.5,
            ..SamplingParams::greedy()
        });
        assert_eq!(s.sample(&logits), 0);
        s.accept(0);
        assert_eq!(s.sample(&logits), 1);

        let mut s = Sampler::new(SamplingParams {
            presence_penalty: 0.05,
            ..SamplingParams::greedy()
        });
        s.accept(0);
        s.accept(0);
        // Presence counts once however often: 1.0 - 0.05 > 0.9.
        assert_eq!(s.sample(&logits), 0);

        let mut s = Sampler::new(SamplingParams {
            logit_bias: vec![(0, -100.0)],
            ..SamplingParams::greedy()
        });
        assert_eq!(s.sample(&logits), 1);
    }

    #[test]
    fn min_p_drops_the_unlikely_tail() {
        // Probabilities relative to the best: 1, e^-1 ≈ 0.37, e^-3 ≈ 0.05.
        let logits = [3.0, 2.0, 0.0];
        let mut p = params(1.0, 1.0, 0, 9);
        p.min_p = 0.1;
        let h = histogram(p, &logits, 3000);
        assert_eq!(h[2], 0, "{h:?}");
        assert!(h[1] > 500, "{h:?}");
        let h = histogram(params(1.0, 1.0, 0, 9), &logits, 3000);
        assert!(h[2] > 0, "without min_p the tail is sampled: {h:?}");
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_logits() {
        let mut s = Sampler::new(SamplingParams {
            repetition_penalty: 1.5,
            ..SamplingParams::greedy()
        });
        let logits = [1.2, 1.0, -0.1, -0.12];
        s.accept(0);
        // 1.2 / 1.5 = 0.8 < 1.0.
        assert_eq!(s.sample(&logits), 1);
        let mut s = Sampler::new(SamplingParams {
            repetition_penalty: 1.5,
            logit_bias: vec![(0, -100.0), (1, -100.0)],
            ..SamplingParams::greedy()
        });
        s.accept(2);
        // −0.1 × 1.5 = −0.15 < −0.12.
        assert_eq!(s.sample(&logits), 3);
    }
}
