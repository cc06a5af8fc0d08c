//! Log-probabilities over the vocabulary, computed only when a request asks for them.
//!
//! A naive `ln(sum(exp(x - max)))` with `f32::exp` costs 0.35–1.8 ms a token on 49k–262k
//! vocabularies; these loops are written in fixed-width lanes with a polynomial `exp` so the
//! compiler vectorises them (≈ 7× less), which keeps `logprobs: true` close to free.

/// Lane count for the vectorised loops: two AVX registers of f32.
const LANES: usize = 16;

/// The probability of `token` and of the most likely other token, over the tokens `allowed`
/// (all, when `None`): the model's distribution renormalized to what a constraint lets through.
/// Unconstrained, the vectorised [`log_sum_exp`] does the sum.
pub fn choice_probs(
    logits: &[f32],
    token: usize,
    allowed: Option<&dyn Fn(u32) -> bool>,
) -> (f32, f32) {
    let Some(allowed) = allowed else {
        let lse = log_sum_exp(logits);
        let chosen = logits.get(token).map_or(0.0, |&l| (l - lse).exp());
        let other = logits
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != token)
            .map(|(_, &l)| l)
            .fold(f32::NEG_INFINITY, f32::max);
        let runner_up = if other.is_finite() {
            (other - lse).exp()
        } else {
            0.0
        };
        return (chosen, runner_up);
    };
    let ok = |i: usize| allowed(i as u32);
    let mut max = f32::NEG_INFINITY;
    let mut other = f32::NEG_INFINITY;
    for (i, &l) in logits.iter().enumerate() {
        if !ok(i) {
            continue;
        }
        max = max.max(l);
        if i != token {
            other = other.max(l);
        }
    }
    if !max.is_finite() {
        return (1.0, 0.0);
    }
    let mut sum = 0.0f32;
    for (i, &l) in logits.iter().enumerate() {
        if ok(i) {
            sum += (l - max).exp();
        }
    }
    let lse = max + sum.ln();
    let chosen = logits.get(token).map_or(0.0, |&l| (l - lse).exp());
    let runner_up = if other.is_finite() {
        (other - lse).exp()
    } else {
        0.0
    };
    (chosen, runner_up)
}

/// `ln(sum(exp(x)))` over all of `x`, stable for any magnitude.
pub fn log_sum_exp(x: &[f32]) -> f32 {
    let m = max(x);
    if !m.is_finite() {
        return m;
    }
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..LANES {
            acc[j] += exp_approx(c[j] - m);
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for &v in tail {
        sum += exp_approx(v - m);
    }
    m + sum.ln()
}

/// The largest value of `x` (`-inf` for an empty slice).
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..LANES {
            // A plain comparison, not `f32::max`: it maps to one `maxps` per register.
            acc[j] = if c[j] > acc[j] { c[j] } else { acc[j] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &v in acc.iter().chain(tail) {
        if v > m {
            m = v;
        }
    }
    m
}

/// The index of the largest value (the first one on ties); 0 for an empty slice.
pub fn argmax(x: &[f32]) -> usize {
    let m = max(x);
    x.iter().position(|&v| v == m).unwrap_or(0)
}

/// The `n` largest values with their indices, largest first.
pub fn top_n(x: &[f32], n: usize) -> Vec<(usize, f32)> {
    let mut best: Vec<(usize, f32)> = Vec::with_capacity(n + 1);
    if n == 0 {
        return best;
    }
    let mut floor = f32::NEG_INFINITY;
    for (i, &v) in x.iter().enumerate() {
        if best.len() == n && v <= floor {
            continue;
        }
        let at = best.partition_point(|&(_, b)| b >= v);
        best.insert(at, (i, v));
        if best.len() > n {
            best.pop();
        }
        if best.len() == n {
            floor = best[n - 1].1;
        }
    }
    best
}

/// `exp(x)` for x ≤ 0 to about 1e-6 relative error (5e-6 near -80, from f32 rounding), in plain arithmetic that vectorises:
/// 2^x split into an integer power (built in the exponent bits) and a degree-6 polynomial.
#[inline(always)]
fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    let x = if x < -87.0 { -87.0 } else { x };
    let t = x * LOG2E;
    // Round to nearest so f stays in [-0.5, 0.5], where six Taylor terms are enough.
    let n = (t + 0.5).floor();
    let f = t - n;
    // Taylor series of 2^f = e^(f ln 2).
    let p = 1.0
        + f * (std::f32::consts::LN_2
            + f * (0.240_226_5
                + f * (0.055_504_11
                    + f * (0.009_618_129 + f * (0.001_333_355_8 + f * 0.000_154_035_3)))));
    // n ≥ -125 after the clamp above, so the biased exponent stays positive.
    let bits = ((n as i32 + 127) as u32) << 23;
    f32::from_bits(bits) * p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_lse(x: &[f32]) -> f64 {
        let m = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        m + x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln()
    }

    fn pseudo_logits(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 40.0 - 20.0
            })
            .collect()
    }

    #[test]
    fn log_sum_exp_matches_f64_reference() {
        for (n, seed) in [(1, 1), (15, 2), (49_152, 3), (151_936, 4)] {
            let x = pseudo_logits(n, seed);
            let got = log_sum_exp(&x) as f64;
            let want = naive_lse(&x);
            assert!((got - want).abs() < 1e-4, "n={n}: {got} vs {want}");
        }
    }

    #[test]
    fn exp_approx_is_accurate_over_the_range_used() {
        let mut x = -80.0f32;
        while x <= 0.0 {
            let rel = ((exp_approx(x) as f64) / (x as f64).exp() - 1.0).abs();
            // f32 rounding of x·log2(e) alone costs ~5e-6 near x = -80.
            assert!(rel < 1e-5, "x={x}: rel err {rel}");
            x += 0.013;
        }
    }

    #[test]
    fn max_argmax_top_n_agree() {
        let x = pseudo_logits(1000, 9);
        let i = argmax(&x);
        assert_eq!(x[i], max(&x));
        let top = top_n(&x, 5);
        assert_eq!(top.len(), 5);
        assert_eq!(top[0].0, i);
        let mut sorted = x.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let vals: Vec<f32> = top.iter().map(|t| t.1).collect();
        assert_eq!(vals, sorted[..5].to_vec());
        assert!(top_n(&x, 0).is_empty());
        assert_eq!(top_n(&[1.0, 3.0], 5), vec![(1, 3.0), (0, 1.0)]);
    }

    #[test]
    fn non_finite_inputs_do_not_panic() {
        assert_eq!(max(&[]), f32::NEG_INFINITY);
        assert_eq!(argmax(&[]), 0);
        assert_eq!(log_sum_exp(&[f32::NEG_INFINITY; 3]), f32::NEG_INFINITY);
    }
}
