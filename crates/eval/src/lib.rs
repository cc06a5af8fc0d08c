//! Evaluation and calibration: how a tier does on a team's own rows, and the escalation
//! threshold whose error among the answers kept locally is bounded with a stated confidence.

pub mod guarantee;

pub use guarantee::{Calibrated, Judged, calibrate, clopper_pearson_upper};
