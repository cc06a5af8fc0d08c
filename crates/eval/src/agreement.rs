//! How far a judge's grades can be trusted: its agreement with human grades of the same
//! answers, raw and chance-corrected (Cohen's κ), each with a 95% confidence interval.

use statrs::distribution::{Beta, ContinuousCDF};

/// The default κ a judge must reach before its grades are used to calibrate: "substantial"
/// agreement on Landis and Koch's scale.
pub const DEFAULT_MIN_KAPPA: f64 = 0.6;

/// A judge against human grades.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Agreement {
    /// Answers graded by both.
    pub rows: usize,
    /// The share graded alike, with its Clopper–Pearson 95% interval.
    pub agreement: f64,
    pub agreement_ci: (f64, f64),
    /// Cohen's κ and its 95% interval from the large-sample standard error; `None` when
    /// chance agreement is 1 (both graded every answer the same way), where κ is undefined.
    pub kappa: Option<f64>,
    pub kappa_ci: Option<(f64, f64)>,
}

impl Agreement {
    /// Whether κ's point estimate reaches `min`.
    pub fn trusted(&self, min: f64) -> bool {
        self.kappa.is_some_and(|k| k >= min)
    }
}

/// The two-sided Clopper–Pearson interval at level 1 − `delta` for `k` successes in `n`.
pub fn clopper_pearson(k: usize, n: usize, delta: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let q = |a: f64, b: f64, p: f64| Beta::new(a, b).map_or(f64::NAN, |d| d.inverse_cdf(p));
    let lo = if k == 0 {
        0.0
    } else {
        q(k as f64, (n - k + 1) as f64, delta / 2.0)
    };
    let hi = if k == n {
        1.0
    } else {
        q((k + 1) as f64, (n - k) as f64, 1.0 - delta / 2.0)
    };
    (lo, hi)
}

/// The judge's grades against the human's, pair by pair (`(judge, human)`, right = true);
/// `None` without pairs.
pub fn agreement(pairs: &[(bool, bool)]) -> Option<Agreement> {
    let n = pairs.len();
    if n == 0 {
        return None;
    }
    let nf = n as f64;
    let same = pairs.iter().filter(|(j, h)| j == h).count();
    let po = same as f64 / nf;
    let judge_yes = pairs.iter().filter(|(j, _)| *j).count() as f64 / nf;
    let human_yes = pairs.iter().filter(|(_, h)| *h).count() as f64 / nf;
    let pe = judge_yes * human_yes + (1.0 - judge_yes) * (1.0 - human_yes);
    let (kappa, kappa_ci) = if (1.0 - pe).abs() < 1e-12 {
        (None, None)
    } else {
        let k = (po - pe) / (1.0 - pe);
        // Cohen (1960): the standard error of κ under its large-sample normal approximation.
        let se = (po * (1.0 - po) / (nf * (1.0 - pe).powi(2))).sqrt();
        let z = 1.959_963_984_540_054;
        (
            Some(k),
            Some(((k - z * se).max(-1.0), (k + z * se).min(1.0))),
        )
    };
    Some(Agreement {
        rows: n,
        agreement: po,
        agreement_ci: clopper_pearson(same, n, 0.05),
        kappa,
        kappa_ci,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(tt: usize, tf: usize, ft: usize, ff: usize) -> Vec<(bool, bool)> {
        let mut v = vec![(true, true); tt];
        v.extend(vec![(true, false); tf]);
        v.extend(vec![(false, true); ft]);
        v.extend(vec![(false, false); ff]);
        v
    }

    #[test]
    fn kappa_matches_a_worked_example() {
        // 50 answers: both pass 20, judge only 5, human only 10, both fail 15.
        // po = 0.7; pe = 0.5·0.6 + 0.5·0.4 = 0.5; κ = 0.4.
        let a = agreement(&pairs(20, 5, 10, 15)).expect("pairs");
        assert_eq!(a.rows, 50);
        assert!((a.agreement - 0.7).abs() < 1e-12);
        let k = a.kappa.expect("kappa");
        assert!((k - 0.4).abs() < 1e-12, "{k}");
        // se = sqrt(0.7·0.3 / (50·0.25)) ≈ 0.1296.
        let (lo, hi) = a.kappa_ci.expect("ci");
        assert!(
            (lo - (0.4 - 1.96 * 0.1296)).abs() < 1e-3 && (hi - (0.4 + 1.96 * 0.1296)).abs() < 1e-3
        );
        assert!(a.agreement_ci.0 < 0.7 && 0.7 < a.agreement_ci.1);
        assert!(!a.trusted(DEFAULT_MIN_KAPPA) && a.trusted(0.3));
    }

    #[test]
    fn perfect_and_degenerate_agreement() {
        let a = agreement(&pairs(10, 0, 0, 10)).expect("pairs");
        assert_eq!(a.kappa, Some(1.0));
        assert_eq!(a.agreement_ci.1, 1.0);
        // Everything passed by both: chance agreement is 1 and κ is undefined, so not trusted.
        let a = agreement(&pairs(8, 0, 0, 0)).expect("pairs");
        assert_eq!(a.kappa, None);
        assert!(!a.trusted(0.0));
        assert!(agreement(&[]).is_none());
    }

    #[test]
    fn the_interval_matches_known_values() {
        // 7 of 10: the exact 95% interval is (0.3475, 0.9333).
        let (lo, hi) = clopper_pearson(7, 10, 0.05);
        assert!(
            (lo - 0.3475).abs() < 1e-3 && (hi - 0.9333).abs() < 1e-3,
            "{lo} {hi}"
        );
        assert_eq!(clopper_pearson(0, 10, 0.05).0, 0.0);
    }
}
