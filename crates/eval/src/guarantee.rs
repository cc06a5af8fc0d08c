//! A threshold with a guarantee: the lowest confidence threshold such that, among the requests
//! the local tier keeps (confidence ≥ threshold), the error rate is at most α with probability
//! at least 1 − δ over the draw of the calibration rows.
//!
//! The method is Learn-then-Test (Angelopoulos, Bates, Candès, Jordan and Lei, 2021, *Learn
//! then Test: Calibrating Predictive Algorithms to Achieve Risk Control*) with fixed-sequence
//! testing: every threshold of a grid fixed in advance (0.99, 0.98, …, 0.00) is a hypothesis
//! "the error among kept answers is above α", tested with the exact binomial p-value of the
//! errors seen among the calibration rows it keeps (equivalently, its Clopper–Pearson upper
//! bound against α). The thresholds are tested in that order, each at level δ, and testing
//! stops at the first one not rejected; the threshold returned is the last one rejected. The
//! chance of certifying a threshold whose error is above α is at most δ: to certify one, the
//! first such threshold in the sequence must have been rejected, which happens with
//! probability at most δ. A threshold that keeps no row cannot be rejected, so it ends the
//! sequence; when the first one is not rejected there is no threshold, and everything
//! escalates. (Bonferroni over the same grid, δ / 100 a test, is also valid but certified
//! nothing on 300 rows of a task head at 71% accuracy; the sequence tests each at δ, which
//! suits a risk that falls as the threshold rises.)
//!
//! The binomial p-value is exact given the number of rows a threshold keeps: those rows are an
//! i.i.d. draw from the requests that threshold keeps, so their errors are binomial with the
//! threshold's true error rate. The guarantee holds for new requests drawn like the
//! calibration rows.

use statrs::distribution::{Beta, Binomial, ContinuousCDF, DiscreteCDF};

/// Thresholds tested, from the highest: 0.99 down to 0.00 in steps of 0.01.
pub const GRID: usize = 100;

/// One calibration row: the local answer's confidence, and whether it was right.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judged {
    pub confidence: f64,
    pub right: bool,
}

/// A calibration's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibrated {
    /// The lowest certified threshold; `None` when no threshold meets α at 1 − δ (escalate
    /// everything).
    pub threshold: Option<f64>,
    pub alpha: f64,
    pub delta: f64,
    /// Calibration rows.
    pub rows: usize,
    /// At the threshold: rows kept locally, and how many of those were wrong.
    pub kept: usize,
    pub errors: usize,
    /// At the threshold: the Clopper–Pearson upper bound (at 1 − δ) on the error among kept
    /// answers, which is ≤ α.
    pub bound: f64,
}

impl Calibrated {
    /// The share of calibration rows escalated at the threshold (1 when there is none).
    pub fn escalation(&self) -> f64 {
        if self.rows == 0 {
            return 1.0;
        }
        1.0 - self.kept as f64 / self.rows as f64
    }
}

/// What cannot be calibrated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GuaranteeError {
    #[error("α must be above 0 and below 1, got {0}")]
    Alpha(f64),
    #[error("δ must be above 0 and below 1, got {0}")]
    Delta(f64),
    #[error("a confidence must be a number from 0 to 1, got {0}")]
    Confidence(f64),
}

/// The one-sided upper confidence bound, at level 1 − `delta`, on a binomial proportion after
/// `errors` in `n` trials (Clopper and Pearson, 1934); 1 when `n` is 0.
pub fn clopper_pearson_upper(errors: usize, n: usize, delta: f64) -> f64 {
    if n == 0 || errors >= n {
        return 1.0;
    }
    // The (1 − δ) quantile of Beta(k + 1, n − k).
    match Beta::new(errors as f64 + 1.0, (n - errors) as f64) {
        Ok(b) => b.inverse_cdf(1.0 - delta).clamp(0.0, 1.0),
        Err(_) => 1.0,
    }
}

/// The chance of seeing at most `errors` in `n` trials if the error rate were `alpha`: the
/// p-value of "the rate is above α".
fn p_value(errors: usize, n: usize, alpha: f64) -> f64 {
    match Binomial::new(alpha, n as u64) {
        Ok(b) => b.cdf(errors as u64),
        Err(_) => 1.0,
    }
}

/// The lowest threshold of the grid whose error among kept rows is at most `alpha` with
/// probability at least 1 − `delta` (see the module's documentation).
pub fn calibrate(rows: &[Judged], alpha: f64, delta: f64) -> Result<Calibrated, GuaranteeError> {
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(GuaranteeError::Alpha(alpha));
    }
    if !(delta > 0.0 && delta < 1.0) {
        return Err(GuaranteeError::Delta(delta));
    }
    if let Some(bad) = rows
        .iter()
        .map(|r| r.confidence)
        .find(|c| !(0.0..=1.0).contains(c))
    {
        return Err(GuaranteeError::Confidence(bad));
    }
    let mut best: Option<(f64, usize, usize)> = None;
    for step in (0..GRID).rev() {
        let t = step as f64 / 100.0;
        let kept: Vec<&Judged> = rows.iter().filter(|r| r.confidence >= t).collect();
        let n = kept.len();
        let errors = kept.iter().filter(|r| !r.right).count();
        // A threshold that keeps nothing cannot be rejected: the sequence ends there.
        if n == 0 || p_value(errors, n, alpha) > delta {
            break;
        }
        best = Some((t, n, errors));
    }
    Ok(match best {
        Some((t, kept, errors)) => Calibrated {
            threshold: Some(t),
            alpha,
            delta,
            rows: rows.len(),
            kept,
            errors,
            bound: clopper_pearson_upper(errors, kept, delta),
        },
        None => Calibrated {
            threshold: None,
            alpha,
            delta,
            rows: rows.len(),
            kept: 0,
            errors: 0,
            bound: 1.0,
        },
    })
}

/// A threshold checked on rows it was not calibrated on.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Checked {
    pub rows: usize,
    /// Rows kept locally (confidence ≥ the threshold), and the wrong ones among them.
    pub kept: usize,
    pub errors: usize,
}

impl Checked {
    /// The realized error among kept rows; `None` when nothing was kept.
    pub fn error_rate(&self) -> Option<f64> {
        (self.kept > 0).then(|| self.errors as f64 / self.kept as f64)
    }

    /// The share of rows escalated.
    pub fn escalation(&self) -> f64 {
        if self.rows == 0 {
            return 1.0;
        }
        1.0 - self.kept as f64 / self.rows as f64
    }
}

/// `threshold` applied to `rows` (`None`: everything escalates).
pub fn check(rows: &[Judged], threshold: Option<f64>) -> Checked {
    let kept: Vec<&Judged> = match threshold {
        Some(t) => rows.iter().filter(|r| r.confidence >= t).collect(),
        None => Vec::new(),
    };
    Checked {
        rows: rows.len(),
        kept: kept.len(),
        errors: kept.iter().filter(|r| !r.right).count(),
    }
}

/// Whether a row (by its key, a hex sha256) is in the calibration half; the others are held
/// out. By the key's hash, so the split is the same on every run and independent of order.
pub fn in_calibration_half(key: &str) -> bool {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes())[0] & 1 == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    #[test]
    fn the_upper_bound_matches_known_values() {
        // 0 errors in 59 trials: the 95% upper bound is 1 − 0.05^(1/59) ≈ 0.0495.
        let b = clopper_pearson_upper(0, 59, 0.05);
        assert!((b - (1.0 - 0.05f64.powf(1.0 / 59.0))).abs() < 1e-6, "{b}");
        // 5 errors in 100: about 0.1024 (one-sided 95%).
        let b = clopper_pearson_upper(5, 100, 0.05);
        assert!((b - 0.1024).abs() < 5e-4, "{b}");
        assert_eq!(clopper_pearson_upper(0, 0, 0.05), 1.0);
        assert_eq!(clopper_pearson_upper(3, 3, 0.05), 1.0);
    }

    #[test]
    fn a_threshold_is_checked_on_held_out_rows() {
        let rows: Vec<Judged> = [(0.9, true), (0.8, false), (0.3, false), (0.95, true)]
            .iter()
            .map(|&(confidence, right)| Judged { confidence, right })
            .collect();
        let c = check(&rows, Some(0.5));
        assert_eq!((c.kept, c.errors), (3, 1));
        assert!((c.escalation() - 0.25).abs() < 1e-12);
        assert_eq!(check(&rows, None).error_rate(), None);
        let halves = (0..1000)
            .filter(|i| in_calibration_half(&format!("{i:x}")))
            .count();
        assert!((400..600).contains(&halves), "{halves}");
    }

    #[test]
    fn bad_inputs_are_refused() {
        let rows = [Judged {
            confidence: 0.5,
            right: true,
        }];
        assert!(calibrate(&rows, 0.0, 0.1).is_err());
        assert!(calibrate(&rows, 0.1, 1.0).is_err());
        let bad = [Judged {
            confidence: f64::NAN,
            right: true,
        }];
        assert!(calibrate(&bad, 0.1, 0.1).is_err());
    }

    #[test]
    fn the_sequence_stops_at_the_first_threshold_not_rejected() {
        // 60 sure and right answers certify 0.99; 0.98 keeps 20 more, half of them wrong,
        // which is not rejected; below it 1,000 right answers would pass again, but are never
        // tested.
        let mut rows: Vec<Judged> = (0..60)
            .map(|_| Judged {
                confidence: 0.995,
                right: true,
            })
            .collect();
        rows.extend((0..20).map(|i| Judged {
            confidence: 0.985,
            right: i % 2 == 0,
        }));
        rows.extend((0..1000).map(|_| Judged {
            confidence: 0.5,
            right: true,
        }));
        let c = calibrate(&rows, 0.1, 0.1).expect("calibrates");
        assert_eq!(c.threshold, Some(0.99));
        assert_eq!((c.kept, c.errors), (60, 0));
        assert!(c.bound <= 0.1, "{c:?}");
        // Nothing at 0.99 or above: the sequence ends at once.
        let low: Vec<Judged> = rows.iter().skip(60).copied().collect();
        assert_eq!(
            calibrate(&low, 0.1, 0.1).expect("calibrates").threshold,
            None
        );
    }

    #[test]
    fn too_few_rows_certify_nothing_and_say_so() {
        let rows: Vec<Judged> = (0..10)
            .map(|i| Judged {
                confidence: 0.95,
                right: i > 0,
            })
            .collect();
        let c = calibrate(&rows, 0.05, 0.1).expect("calibrates");
        assert_eq!(c.threshold, None);
        assert_eq!(c.escalation(), 1.0);
    }

    /// Rows whose answer is right with probability equal to their confidence, the confidence
    /// drawn with density 2c on [0, 1] (most answers fairly sure): among rows kept at t the
    /// error is 1 − (2/3)(1 − t³)/(1 − t²).
    fn draw(rng: &mut StdRng, n: usize) -> Vec<Judged> {
        (0..n)
            .map(|_| {
                let c = rng.random::<f64>().sqrt();
                Judged {
                    confidence: c,
                    right: rng.random::<f64>() < c,
                }
            })
            .collect()
    }

    fn true_error(t: f64) -> f64 {
        1.0 - (2.0 / 3.0) * (1.0 - t.powi(3)) / (1.0 - t * t)
    }

    #[test]
    fn the_guarantee_holds_over_many_calibration_draws() {
        let (alpha, delta) = (0.10, 0.10);
        let mut rng = StdRng::seed_from_u64(7);
        let trials = 300;
        let (mut violated, mut certified) = (0, 0);
        for _ in 0..trials {
            let c = calibrate(&draw(&mut rng, 2_000), alpha, delta).expect("calibrates");
            if let Some(t) = c.threshold {
                certified += 1;
                assert!(c.bound <= alpha + 1e-12, "{c:?}");
                violated += usize::from(true_error(t) > alpha);
            }
        }
        assert!(
            certified > trials * 8 / 10,
            "certified {certified} of {trials}"
        );
        let rate = violated as f64 / trials as f64;
        assert!(
            rate <= delta,
            "the realized error exceeded α in {rate} of the draws"
        );
    }

    #[test]
    fn more_rows_give_a_lower_threshold() {
        let mut rng = StdRng::seed_from_u64(11);
        let small = calibrate(&draw(&mut rng, 300), 0.1, 0.1).expect("calibrates");
        let large = calibrate(&draw(&mut rng, 20_000), 0.1, 0.1).expect("calibrates");
        let (s, l) = (
            small.threshold.unwrap_or(1.0),
            large.threshold.unwrap_or(1.0),
        );
        assert!(l <= s, "{l} with 20,000 rows, {s} with 300");
        // With many rows the certified threshold approaches the true one (≈ 0.79).
        assert!(true_error(l) <= 0.1 && l < 0.86, "{l}");
    }
}
