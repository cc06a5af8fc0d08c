//! `GET /v1/smallfirst/report`: the ledger's report as JSON, the same as
//! `smallfirst report --json` prints: `since` and `until` (a date, an RFC 3339 time, or a span
//! back from now such as `24h`) and `by` (`total`, `tier`, `task`, `key`, `day`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use smallfirst_ledger::report::parse_time;
use smallfirst_ledger::{By, Report};

use crate::{ApiError, AppState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Params {
    since: Option<String>,
    until: Option<String>,
    by: Option<String>,
}

pub(crate) async fn report(
    State(state): State<AppState>,
    params: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Report>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::InvalidRequest {
        message: format!("invalid query: {}", e.body_text()),
        param: None,
        code: None,
    })?;
    let query = query(&params)?;
    let Some(book) = state.book().map(Arc::clone) else {
        return Err(ApiError::NotFound(
            "the ledger is off on this server (`[ledger] enabled = false`)".into(),
        ));
    };
    // Records of the last commit window are included: everything recorded before now.
    let report = tokio::task::spawn_blocking(move || {
        book.ledger().flush()?;
        book.ledger().report(&query)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the report failed: {e}")))?
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(report))
}

fn query(p: &Params) -> Result<smallfirst_ledger::Query, ApiError> {
    let now = smallfirst_ledger::now_ms();
    let time = |name: &str, v: &Option<String>| {
        v.as_deref()
            .map(|t| parse_time(t, now))
            .transpose()
            .map_err(|e| ApiError::invalid(name, format!("`{name}`: {e}")))
    };
    let by = match p.by.as_deref() {
        None => By::Total,
        Some(b) => By::parse(b).ok_or_else(|| {
            ApiError::invalid(
                "by",
                format!("`by` must be total, tier, task, key or day, got `{b}`"),
            )
        })?,
    };
    Ok(smallfirst_ledger::Query {
        since_ms: time("since", &p.since)?,
        until_ms: time("until", &p.until)?,
        by,
    })
}
