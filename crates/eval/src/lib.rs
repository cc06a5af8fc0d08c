//! Evaluation and calibration: how a tier does on a team's own rows, and the escalation
//! threshold whose error among the answers kept locally is bounded with a stated confidence.
//!
//! - [`set`]: eval sets ([`EvalRow`], [`Expectation`]) read from hand-written JSONL, the
//!   expectation taken from each row's shape.
//! - [`matchers`]: an [`Answer`] graded against its row ([`Grade`]: right, schema validity,
//!   executable calls).
//! - [`results`]: each row's [`Scored`] result per tier, stored beside the set, and a tier's
//!   [`TierReport`].
//! - [`metrics`]: AUROC, calibration error, quantiles.
//! - [`report`]: the eval as one self-contained HTML page (the table, the cascade's
//!   cost–quality curve, the reliability diagram).
//! - [`agreement`](mod@agreement): a judge's grades against human ones (Cohen's κ, with intervals).
//! - [`guarantee`]: the threshold with a stated error guarantee ([`calibrate`]), and its check
//!   on held-out rows.

pub mod agreement;
pub mod guarantee;
pub mod matchers;
pub mod metrics;
pub mod report;
pub mod results;
pub mod set;

pub use agreement::{Agreement, DEFAULT_MIN_KAPPA, agreement};
pub use guarantee::{
    Calibrated, Checked, Judged, calibrate, check, clopper_pearson_upper, in_calibration_half,
};
pub use matchers::{Answer, Grade, grade};
pub use results::{Scored, Store, TierReport, summarize};
pub use set::{EvalRow, Expectation, SetError, read_set, set_sha256};
