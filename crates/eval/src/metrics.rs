//! The figures a report gives: AUROC and expected calibration error of a confidence against
//! right and wrong, and latency quantiles.

/// Area under the ROC curve of `confidence` for telling right answers from wrong ones (the
/// chance that a right answer is more confident than a wrong one, ties counting half);
/// `None` when the rows are all right or all wrong.
pub fn auroc(judged: &[(f64, bool)]) -> Option<f64> {
    let mut sorted: Vec<(f64, bool)> = judged.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let right = sorted.iter().filter(|(_, r)| *r).count();
    let wrong = sorted.len() - right;
    if right == 0 || wrong == 0 {
        return None;
    }
    // Mann–Whitney: the right answers' ranks, tied values sharing their mean rank.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j < sorted.len() && sorted[j].0 == sorted[i].0 {
            j += 1;
        }
        let mean_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += mean_rank * sorted[i..j].iter().filter(|(_, r)| *r).count() as f64;
        i = j;
    }
    let (r, w) = (right as f64, wrong as f64);
    Some((rank_sum - r * (r + 1.0) / 2.0) / (r * w))
}

/// Expected calibration error over `bins` equal-width bins: the mean, weighted by the rows
/// in each bin, of |accuracy − mean confidence|.
pub fn ece(judged: &[(f64, bool)], bins: usize) -> f64 {
    if judged.is_empty() || bins == 0 {
        return 0.0;
    }
    let mut sums = vec![(0.0f64, 0usize, 0usize); bins];
    for &(c, right) in judged {
        let b = ((c.clamp(0.0, 1.0) * bins as f64) as usize).min(bins - 1);
        sums[b].0 += c;
        sums[b].1 += usize::from(right);
        sums[b].2 += 1;
    }
    let n = judged.len() as f64;
    sums.iter()
        .filter(|(_, _, k)| *k > 0)
        .map(|&(c, r, k)| {
            let k_f = k as f64;
            (k_f / n) * (r as f64 / k_f - c / k_f).abs()
        })
        .sum()
}

/// The `q` quantile (0 to 1) of `values`, nearest rank; `None` for none.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// Reliability-diagram bins: for each of `bins` equal-width bins with rows in it, its mean
/// confidence, its accuracy and its rows.
pub fn reliability(judged: &[(f64, bool)], bins: usize) -> Vec<(f64, f64, usize)> {
    let mut sums = vec![(0.0f64, 0usize, 0usize); bins.max(1)];
    let n = sums.len();
    for &(c, right) in judged {
        let b = ((c.clamp(0.0, 1.0) * n as f64) as usize).min(n - 1);
        sums[b].0 += c;
        sums[b].1 += usize::from(right);
        sums[b].2 += 1;
    }
    sums.into_iter()
        .filter(|(_, _, k)| *k > 0)
        .map(|(c, r, k)| (c / k as f64, r as f64 / k as f64, k))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_orders_and_ties() {
        assert_eq!(auroc(&[(0.9, true), (0.1, false)]), Some(1.0));
        assert_eq!(auroc(&[(0.1, true), (0.9, false)]), Some(0.0));
        assert_eq!(auroc(&[(0.5, true), (0.5, false)]), Some(0.5));
        assert_eq!(auroc(&[(0.5, true), (0.7, true)]), None);
        // Two right (0.8, 0.4), two wrong (0.6, 0.2): 3 of 4 pairs ordered.
        let a = auroc(&[(0.8, true), (0.4, true), (0.6, false), (0.2, false)]).expect("ok");
        assert!((a - 0.75).abs() < 1e-12);
    }

    #[test]
    fn ece_is_zero_when_calibrated_and_large_when_not() {
        let calibrated: Vec<(f64, bool)> = (0..10).map(|i| (0.75, i < 7)).collect();
        assert!(ece(&calibrated, 10) < 0.06);
        let over = vec![(0.99, false); 10];
        assert!((ece(&over, 10) - 0.99).abs() < 1e-9);
        assert_eq!(ece(&[], 10), 0.0);
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.95), Some(95.0));
        assert_eq!(quantile(&[3.0], 0.95), Some(3.0));
        assert_eq!(quantile(&[], 0.5), None);
        let bins = reliability(&[(0.05, false), (0.95, true), (0.91, false)], 10);
        assert_eq!(bins.len(), 2);
        assert_eq!(bins[1].2, 2);
    }
}
