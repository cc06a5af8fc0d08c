//! Stored results: each row's answer on each tier, appended to a JSONL file beside the set so a
//! second run on the same set and setup answers only what is missing, and calibration (and
//! later the ledger) reads what eval measured. A result is keyed by the row's sha256 and the
//! setup (the tier, its model, and the task's configuration as it answered).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use crate::matchers::Grade;
use crate::metrics::{auroc, ece, quantile};

/// One row answered on one tier.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scored {
    /// The row's sha256 ([`crate::EvalRow::key`]).
    pub key: String,
    pub id: String,
    /// The tier asked (`auto`: the cascade as configured).
    pub tier: String,
    /// The tier, model and task configuration answering: results of another setup are not
    /// reused.
    pub setup: String,
    /// The tier whose answer it is (the escalation's, under `auto`).
    pub answered_by: Option<String>,
    pub escalated: bool,
    pub grade: Grade,
    /// Why there is no answer.
    pub error: Option<String>,
    pub latency_ms: f64,
    pub prompt_tokens: u32,
    pub cached_tokens: u32,
    pub completion_tokens: u32,
    /// US dollars, from the answering tier's prices.
    pub cost: f64,
    /// The local answer's confidence, and how it was estimated.
    pub confidence: Option<f64>,
    pub method: Option<String>,
    /// The answer's text (or its calls as JSON).
    pub answer: String,
}

/// The results file, read whole and appended to.
pub struct Store {
    path: PathBuf,
    by_key: HashMap<(String, String), Scored>,
}

impl Store {
    /// The results at `path` (none yet when it does not exist). Lines that do not parse (a
    /// run cut off mid-write) are skipped.
    pub fn open(path: &Path) -> std::io::Result<Store> {
        let mut by_key = HashMap::new();
        match std::fs::File::open(path) {
            Ok(f) => {
                for line in std::io::BufReader::new(f).lines() {
                    let line = line?;
                    if let Ok(s) = serde_json::from_str::<Scored>(&line) {
                        by_key.insert((s.setup.clone(), s.key.clone()), s);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(Store {
            path: path.to_path_buf(),
            by_key,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored result of row `key` under `setup`.
    pub fn get(&self, setup: &str, key: &str) -> Option<&Scored> {
        self.by_key.get(&(setup.to_string(), key.to_string()))
    }

    /// Appends results (one write, then flushed); a result for a row already stored under
    /// the same setup replaces it when read back.
    pub fn append(&mut self, results: &[Scored]) -> std::io::Result<()> {
        if results.is_empty() {
            return Ok(());
        }
        let mut out = String::new();
        for r in results {
            let line = serde_json::to_string(r).map_err(std::io::Error::other)?;
            out.push_str(&line);
            out.push('\n');
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(out.as_bytes())?;
        f.sync_data()?;
        for r in results {
            self.by_key
                .insert((r.setup.clone(), r.key.clone()), r.clone());
        }
        Ok(())
    }
}

/// One tier's figures over a set.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TierReport {
    pub tier: String,
    pub rows: usize,
    /// Rows without an answer.
    pub errors: usize,
    /// Rows graded (free text without a judge is not), and the share of those right.
    pub graded: usize,
    pub quality: Option<f64>,
    /// Rows with a schema, and the share whose answer validated.
    pub schema_rows: usize,
    pub schema_validity: Option<f64>,
    /// Rows with functions, and the share whose calls were executable.
    pub call_rows: usize,
    pub executable_call_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost: f64,
    /// Cost over the rows answered right.
    pub cost_per_success: Option<f64>,
    /// Rows answered by a tier the request escalated to.
    pub escalation_rate: f64,
    /// The local confidence against right and wrong, where there is one.
    pub judged: usize,
    pub auroc: Option<f64>,
    pub ece: Option<f64>,
}

fn share(n: usize, of: usize) -> Option<f64> {
    (of > 0).then(|| n as f64 / of as f64)
}

/// The figures of `tier` over its results.
pub fn summarize(tier: &str, results: &[&Scored]) -> TierReport {
    let count = |f: &dyn Fn(&Scored) -> bool| results.iter().filter(|r| f(r)).count();
    let graded = count(&|r| r.grade.right.is_some());
    let right = count(&|r| r.grade.right == Some(true));
    let schema_rows = count(&|r| r.grade.schema_valid.is_some());
    let call_rows = count(&|r| r.grade.executable.is_some());
    let latencies: Vec<f64> = results
        .iter()
        .filter(|r| r.error.is_none())
        .map(|r| r.latency_ms)
        .collect();
    let cost: f64 = results.iter().map(|r| r.cost).sum();
    let judged: Vec<(f64, bool)> = results
        .iter()
        .filter_map(|r| Some((r.confidence?, r.grade.right?)))
        .collect();
    TierReport {
        tier: tier.to_string(),
        rows: results.len(),
        errors: count(&|r| r.error.is_some()),
        graded,
        quality: share(right, graded),
        schema_rows,
        schema_validity: share(count(&|r| r.grade.schema_valid == Some(true)), schema_rows),
        call_rows,
        executable_call_rate: share(count(&|r| r.grade.executable == Some(true)), call_rows),
        p50_ms: quantile(&latencies, 0.5),
        p95_ms: quantile(&latencies, 0.95),
        prompt_tokens: results.iter().map(|r| u64::from(r.prompt_tokens)).sum(),
        completion_tokens: results.iter().map(|r| u64::from(r.completion_tokens)).sum(),
        cost,
        cost_per_success: (right > 0).then(|| cost / right as f64),
        escalation_rate: share(count(&|r| r.escalated), results.len()).unwrap_or(0.0),
        judged: judged.len(),
        auroc: auroc(&judged),
        ece: (!judged.is_empty()).then(|| ece(&judged, 10)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(key: &str, right: bool, confidence: f64, cost: f64) -> Scored {
        Scored {
            key: key.into(),
            id: key.into(),
            tier: "local".into(),
            setup: "s".into(),
            answered_by: Some("local".into()),
            escalated: false,
            grade: Grade {
                right: Some(right),
                ..Grade::default()
            },
            error: None,
            latency_ms: 10.0,
            prompt_tokens: 5,
            cached_tokens: 0,
            completion_tokens: 1,
            cost,
            confidence: Some(confidence),
            method: Some("label".into()),
            answer: "x".into(),
        }
    }

    #[test]
    fn stored_results_come_back_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().expect("ok");
        let p = dir.path().join("r.jsonl");
        let mut s = Store::open(&p).expect("ok");
        s.append(&[scored("a", true, 0.9, 0.0), scored("b", false, 0.2, 0.0)])
            .expect("ok");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .expect("ok")
            .write_all(b"{\"key\": \"c\", \"tier")
            .expect("ok");
        let s = Store::open(&p).expect("ok");
        assert_eq!(s.get("s", "a").expect("ok").confidence, Some(0.9));
        assert!(s.get("s", "c").is_none());
        assert!(s.get("other", "a").is_none());
    }

    #[test]
    fn a_tier_is_summarized() {
        let rows = [
            scored("a", true, 0.9, 0.002),
            scored("b", false, 0.2, 0.002),
            scored("c", true, 0.8, 0.002),
        ];
        let refs: Vec<&Scored> = rows.iter().collect();
        let r = summarize("local", &refs);
        assert_eq!((r.rows, r.graded), (3, 3));
        assert!((r.quality.expect("ok") - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.cost_per_success.expect("ok") - 0.003).abs() < 1e-12);
        assert_eq!(r.auroc, Some(1.0));
        assert_eq!(r.schema_validity, None);
        assert_eq!(r.p95_ms, Some(10.0));
    }
}
