//! `--judge TIER [--rubric FILE] [--human GRADES.jsonl] [--min-kappa K]`: free-text answers
//! (rows with a `rubric` or reference answers) graded pass or fail by a model on a tier,
//! through the gateway core; the judge's agreement with human grades of the same answers
//! (Cohen's κ); and the bar κ must clear before `calibrate` uses the judge's grades.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use smallfirst_eval::{Agreement, DEFAULT_MIN_KAPPA, EvalRow, Expectation, Scored};
use smallfirst_router::Privacy;
use smallfirst_server::Gateway;
use smallfirst_server::gateway::Request;

/// What `eval` and `calibrate` take to grade free text.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct JudgeArgs {
    /// Grade free-text answers (rows with a `rubric` or reference answers) with this tier: it
    /// is shown the rubric, the references, the request and the answer, and answers pass or
    /// fail.
    #[arg(long, value_name = "TIER")]
    pub judge: Option<String>,
    /// The rubric for rows without their own `rubric` (a text file).
    #[arg(long, value_name = "FILE", requires = "judge")]
    pub rubric: Option<PathBuf>,
    /// Human grades of the same answers, JSON lines `{"id": ROW, "tier": TIER, "right":
    /// true|false}` (`tier` left out: every tier's answer to that row); the judge's agreement
    /// with them is reported.
    #[arg(long, value_name = "FILE", requires = "judge")]
    pub human: Option<PathBuf>,
    /// The Cohen's κ against the human grades the judge must reach before `calibrate` uses its
    /// grades.
    #[arg(long, value_name = "K", default_value_t = DEFAULT_MIN_KAPPA)]
    pub min_kappa: f64,
}

/// Rubric files and human grades are read whole: a bound on their size.
const MAX_FILE: u64 = 16 << 20;

/// A tier grading free-text answers.
pub(crate) struct Judge {
    pub tier: String,
    rubric: Option<String>,
}

const SYSTEM: &str = "You grade one answer to one request. Read the rubric, any reference \
answers, the request and the answer. Reply with {\"grade\": \"pass\"} if the answer meets the \
rubric, {\"grade\": \"fail\"} if it does not.";

impl Judge {
    /// The judge the arguments name, checked against the configured tiers.
    pub(crate) fn open(args: &JudgeArgs, tiers: &[String]) -> anyhow::Result<Option<Self>> {
        let Some(tier) = &args.judge else {
            return Ok(None);
        };
        if tier == "auto" || !tiers.contains(tier) {
            anyhow::bail!(
                "--judge: no tier is named `{tier}` (tiers: {})",
                tiers
                    .iter()
                    .filter(|t| *t != "auto")
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if !(-1.0..=1.0).contains(&args.min_kappa) {
            anyhow::bail!("--min-kappa must be from -1 to 1, e.g. 0.6");
        }
        let rubric = args
            .rubric
            .as_deref()
            .map(|p| read_bounded(p, "rubric"))
            .transpose()?;
        Ok(Some(Self {
            tier: tier.clone(),
            rubric,
        }))
    }

    /// What makes its grades differ from another judge's: stored results are not shared.
    pub(crate) fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.tier.as_bytes());
        h.update(b"\n");
        h.update(self.rubric.as_deref().unwrap_or_default().as_bytes());
        h.update(SYSTEM.as_bytes());
        hex::encode(&h.finalize()[..8])
    }

    /// Whether `answer` to `row` passes; `None` for a row that is not free text.
    pub(crate) async fn grade(
        &self,
        gateway: &Gateway,
        row: &EvalRow,
        answer: &str,
    ) -> Option<Result<bool, String>> {
        let Expectation::FreeText { rubric, references } = &row.expect else {
            return None;
        };
        let rubric = match (rubric, &self.rubric, references.is_empty()) {
            (Some(r), _, _) | (None, Some(r), _) => r.clone(),
            (None, None, false) => {
                "The answer agrees in substance with one of the reference answers.".into()
            }
            (None, None, true) => {
                return Some(Err(
                    "the row has neither a rubric nor references (hint: --rubric FILE)".into(),
                ));
            }
        };
        let request = row
            .messages
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default();
        let mut user = format!("Rubric: {rubric}\n\n");
        for r in references {
            user.push_str(&format!("Reference answer: {r}\n"));
        }
        user.push_str(&format!(
            "\nRequest:\n{request}\n\nAnswer to grade:\n{answer}\n\nDoes the answer pass?"
        ));
        let body = json!({
            "model": "auto",
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
            "temperature": 0,
            "max_tokens": 16,
            // Structured output, which every tier's protocol carries: the grade is one of two.
            "response_format": {"type": "json_schema", "json_schema": {"name": "grade", "strict": true, "schema": {
                "type": "object",
                "properties": {"grade": {"type": "string", "enum": ["pass", "fail"]}},
                "required": ["grade"],
                "additionalProperties": false,
            }}},
        });
        let chat = match serde_json::from_value(body.clone()) {
            Ok(c) => c,
            Err(e) => return Some(Err(format!("the judge's request does not build: {e}"))),
        };
        let outcome = gateway
            .complete(Request {
                chat,
                raw: Bytes::from(body.to_string()),
                native: None,
                privacy: Privacy::Unset,
                task: None,
                key: None,
                only: Some(self.tier.clone()),
            })
            .await;
        let (said, error) = super::eval::read_answer(&outcome);
        let Some(said) = said else {
            return Some(Err(
                error.unwrap_or_else(|| "the judge did not answer".into())
            ));
        };
        let text = said.label.unwrap_or(said.text);
        let word = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["grade"].as_str().map(str::to_string))
            .unwrap_or(text)
            .trim()
            .to_ascii_lowercase();
        Some(if word.starts_with("pass") {
            Ok(true)
        } else if word.starts_with("fail") {
            Ok(false)
        } else {
            Err(format!(
                "the judge answered neither pass nor fail: {:?}",
                word.chars().take(40).collect::<String>()
            ))
        })
    }
}

fn read_bounded(path: &Path, what: &str) -> anyhow::Result<String> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))?
        .len();
    if len > MAX_FILE {
        anyhow::bail!(
            "the {what} file {} is {len} bytes, over the {MAX_FILE} allowed",
            path.display()
        );
    }
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))
}

/// Human grades by (row id, tier); a grade without a tier holds for every tier.
pub(crate) struct HumanGrades(HashMap<(String, Option<String>), bool>);

impl HumanGrades {
    pub(crate) fn read(path: &Path) -> anyhow::Result<Self> {
        let text = read_bounded(path, "human grades")?;
        let mut grades = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = || format!("{}:{}", path.display(), i + 1);
            let v: Value =
                serde_json::from_str(line).with_context(|| format!("{}: not JSON", at()))?;
            let id = match &v["id"] {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => anyhow::bail!("{}: a grade needs the row's `id`", at()),
            };
            let right = match (&v["right"], &v["grade"]) {
                (Value::Bool(b), _) => *b,
                (_, Value::String(g)) if g == "pass" || g == "fail" => g == "pass",
                _ => anyhow::bail!(
                    "{}: a grade needs `right`: true or false (or `grade`: \"pass\" or \"fail\")",
                    at()
                ),
            };
            let tier = v["tier"].as_str().map(str::to_string);
            grades.insert((id, tier), right);
        }
        if grades.is_empty() {
            anyhow::bail!("{} holds no human grades", path.display());
        }
        Ok(Self(grades))
    }

    /// The judge's grades of `tier`'s free-text answers against these.
    pub(crate) fn agreement(
        &self,
        rows: &[EvalRow],
        tier: &str,
        results: &[Scored],
    ) -> Option<Agreement> {
        let free: HashMap<&str, &EvalRow> = rows
            .iter()
            .filter(|r| matches!(r.expect, Expectation::FreeText { .. }))
            .map(|r| (r.key.as_str(), r))
            .collect();
        let pairs: Vec<(bool, bool)> = results
            .iter()
            .filter_map(|s| {
                let row = free.get(s.key.as_str())?;
                let judge = s.grade.right?;
                let human = self
                    .0
                    .get(&(row.id.clone(), Some(tier.to_string())))
                    .or_else(|| self.0.get(&(row.id.clone(), None)))?;
                Some((judge, *human))
            })
            .collect();
        smallfirst_eval::agreement(&pairs)
    }
}

/// A line for the table's reader.
pub(crate) fn describe(judge: &str, tier: &str, a: &Agreement, min_kappa: f64) -> String {
    let (lo, hi) = a.agreement_ci;
    let kappa = match (a.kappa, a.kappa_ci) {
        (Some(k), Some((kl, kh))) => format!("κ {k:.2} (95% CI {kl:.2}–{kh:.2})"),
        _ => "κ undefined (every answer graded alike)".into(),
    };
    let verdict = if a.trusted(min_kappa) {
        format!("trusted (κ ≥ {min_kappa})")
    } else {
        format!("not trusted for calibration (κ below {min_kappa})")
    };
    format!(
        "judge `{judge}` on tier `{tier}`'s answers, against {} human grades: agreement {:.1}% (95% CI {:.1}–{:.1}%), {kappa}: {verdict}",
        a.rows,
        100.0 * a.agreement,
        100.0 * lo,
        100.0 * hi
    )
}
