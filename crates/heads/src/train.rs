//! Fitting a head: multinomial logistic regression (`linfa-logistic`, L-BFGS) on standardized
//! embeddings, then a temperature fitted on held-out rows (`argmin`'s Brent search on the
//! held-out log-loss) so the probabilities it reports are calibrated.

use argmin::core::{CostFunction, Executor, State};
use argmin::solver::brent::BrentOpt;
use linfa::prelude::*;
use linfa_logistic::MultiLogisticRegression;
use ndarray::{Array1, Array2, Axis};

use crate::head::{Head, InputSpec, ModelBinding, Trained, best, softmax};
use crate::{FORMAT, HeadError};

/// How a head is fitted.
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// L2 strength, per row: linfa's loss is a sum over rows, so it is scaled by their count.
    pub alpha: f64,
    pub max_iterations: u64,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            alpha: 1e-3,
            max_iterations: 200,
        }
    }
}

/// Labeled embeddings: `label` indexes the head's labels.
pub struct Examples<'a> {
    pub vectors: &'a [Vec<f32>],
    pub labels: &'a [usize],
}

/// What a fitted head is trained on and bound to.
pub struct Binding {
    pub task: String,
    pub model: ModelBinding,
    pub input: InputSpec,
    pub labels: Vec<String>,
    /// Answer features the vectors end with (a verifier's); empty for a classification head.
    pub features: Vec<String>,
    /// A verifier's: the confidence method its features come from.
    pub judges: Option<String>,
}

/// Fits a head on `train` and its temperature on `holdout`.
pub fn fit(
    binding: Binding,
    train: Examples<'_>,
    holdout: Examples<'_>,
    options: &FitOptions,
) -> Result<Head, HeadError> {
    let started = std::time::Instant::now();
    let n_labels = binding.labels.len();
    let dim = train.vectors.first().map_or(0, Vec::len);
    if train.vectors.is_empty() || dim == 0 {
        return Err(HeadError::Data("no rows to train on".into()));
    }
    if holdout.vectors.is_empty() {
        return Err(HeadError::Data(
            "no held-out rows to fit the temperature on (hint: more rows, or a larger --holdout)"
                .into(),
        ));
    }
    if let Some(l) = train
        .labels
        .iter()
        .chain(holdout.labels)
        .find(|&&l| l >= n_labels)
    {
        return Err(HeadError::Data(format!("label index {l} out of range")));
    }
    let mut present = vec![false; n_labels];
    for &l in train.labels {
        present[l] = true;
    }
    if let Some(missing) = present.iter().position(|p| !p) {
        return Err(HeadError::Data(format!(
            "label `{}` has no training rows (every label needs some)",
            binding.labels[missing]
        )));
    }
    let x = matrix(train.vectors, dim)?;
    let mean = x.mean_axis(Axis(0)).unwrap_or_else(|| Array1::zeros(dim));
    let scale = x
        .std_axis(Axis(0), 0.0)
        .mapv(|s| if s > 1e-6 { s } else { 1.0 });
    let xs = (&x - &mean) / &scale;
    let y = Array1::from(train.labels.to_vec());
    let dataset = Dataset::new(xs, y);
    let model = MultiLogisticRegression::default()
        .alpha(options.alpha * train.vectors.len() as f64)
        .max_iterations(options.max_iterations)
        .fit(&dataset)
        .map_err(|e| HeadError::Fit(e.to_string()))?;
    // linfa's classes are the label indexes seen, in order: all of them, checked above.
    let params = model.params(); // dim × classes
    let intercept = model.intercept();
    let mut head = Head {
        format: FORMAT.into(),
        task: binding.task,
        model: binding.model,
        input: binding.input,
        labels: binding.labels,
        mean: mean.iter().map(|&v| v as f32).collect(),
        scale: scale.iter().map(|&v| v as f32).collect(),
        weights: (0..n_labels)
            .map(|c| params.column(c).iter().map(|&v| v as f32).collect())
            .collect(),
        bias: intercept.iter().map(|&v| v as f32).collect(),
        temperature: 1.0,
        trained: Trained {
            rows: train.vectors.len(),
            holdout_rows: holdout.vectors.len(),
            alpha: options.alpha,
            holdout_accuracy: f64::NAN,
            holdout_ece_raw: f64::NAN,
            holdout_ece: f64::NAN,
            seconds: 0.0,
        },
        features: binding.features,
        judges: binding.judges,
    };
    {
        let logits = holdout
            .vectors
            .iter()
            .map(|v| head.logits(v))
            .collect::<Result<Vec<_>, _>>()?;
        let raw = score(&logits, holdout.labels, 1.0);
        head.temperature = temperature(&logits, holdout.labels)?;
        let calibrated = score(&logits, holdout.labels, head.temperature);
        head.trained.holdout_accuracy = calibrated.accuracy;
        head.trained.holdout_ece_raw = raw.ece;
        head.trained.holdout_ece = calibrated.ece;
    }
    head.trained.seconds = started.elapsed().as_secs_f64();
    Ok(head)
}

fn matrix(vectors: &[Vec<f32>], dim: usize) -> Result<Array2<f64>, HeadError> {
    if vectors.iter().any(|v| v.len() != dim) {
        return Err(HeadError::Data("embeddings of different lengths".into()));
    }
    let flat: Vec<f64> = vectors.iter().flatten().map(|&v| f64::from(v)).collect();
    Array2::from_shape_vec((vectors.len(), dim), flat).map_err(|e| HeadError::Data(e.to_string()))
}

/// Accuracy, log-loss and calibration error of logits at a temperature.
#[derive(Debug, Clone, Copy)]
pub struct Score {
    pub accuracy: f64,
    pub log_loss: f64,
    pub ece: f64,
}

pub fn score(logits: &[Vec<f64>], labels: &[usize], temperature: f64) -> Score {
    let mut right = 0usize;
    let mut loss = 0.0;
    let mut judged = Vec::with_capacity(logits.len());
    for (z, &y) in logits.iter().zip(labels) {
        let scaled: Vec<f64> = z.iter().map(|v| v / temperature).collect();
        let p = softmax(&scaled);
        let top = best(&p);
        right += usize::from(top.index == y);
        loss -= p[y].max(1e-300).ln();
        judged.push((top.probability, top.index == y));
    }
    let n = logits.len().max(1) as f64;
    Score {
        accuracy: right as f64 / n,
        log_loss: loss / n,
        ece: ece(&judged, 15),
    }
}

/// Expected calibration error: over equal-width bins of confidence, the row-weighted gap
/// between the mean confidence and the accuracy.
pub fn ece(judged: &[(f64, bool)], bins: usize) -> f64 {
    let bins = bins.max(1);
    let mut count = vec![0usize; bins];
    let mut conf = vec![0.0; bins];
    let mut right = vec![0.0; bins];
    for &(p, ok) in judged {
        let b = ((p * bins as f64) as usize).min(bins - 1);
        count[b] += 1;
        conf[b] += p;
        right[b] += f64::from(u8::from(ok));
    }
    let n = judged.len().max(1) as f64;
    (0..bins)
        .filter(|&b| count[b] > 0)
        .map(|b| (conf[b] - right[b]).abs() / n)
        .sum()
}

struct HoldoutLoss<'a> {
    logits: &'a [Vec<f64>],
    labels: &'a [usize],
}

impl CostFunction for HoldoutLoss<'_> {
    type Param = f64;
    type Output = f64;

    fn cost(&self, log_t: &f64) -> Result<f64, argmin::core::Error> {
        Ok(score(self.logits, self.labels, log_t.exp()).log_loss)
    }
}

/// The temperature that minimizes the held-out log-loss, searched over [0.05, 20].
fn temperature(logits: &[Vec<f64>], labels: &[usize]) -> Result<f64, HeadError> {
    let problem = HoldoutLoss { logits, labels };
    let solver = BrentOpt::new(0.05f64.ln(), 20f64.ln());
    let result = Executor::new(problem, solver)
        .configure(|s| s.param(0.0).max_iters(100))
        .run()
        .map_err(|e| HeadError::Fit(format!("temperature: {e}")))?;
    let log_t = result.state().get_best_param().copied().unwrap_or(0.0);
    Ok(log_t.exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_error_is_the_weighted_gap_per_bin() {
        // Ten answers at 0.9 of which 6 are right: gap 0.3 on all of them.
        let judged: Vec<(f64, bool)> = (0..10).map(|i| (0.9, i < 6)).collect();
        assert!((ece(&judged, 15) - 0.3).abs() < 1e-9);
        assert_eq!(ece(&[], 15), 0.0);
    }

    #[test]
    fn the_temperature_softens_overconfident_logits() {
        // Logits that always favour the first label by 10, right only half the time: the
        // fitted temperature spreads them toward 50/50.
        let logits: Vec<Vec<f64>> = (0..40).map(|_| vec![10.0, 0.0]).collect();
        let labels: Vec<usize> = (0..40).map(|i| i % 2).collect();
        let t = temperature(&logits, &labels).expect("fits");
        assert!(t > 10.0, "temperature {t}");
        let s = score(&logits, &labels, t);
        assert!(s.ece < score(&logits, &labels, 1.0).ece);
    }
}
