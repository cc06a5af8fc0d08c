//! Reports: the records of a time range summed per group — requests, how they ended, the
//! share answered on this machine, escalations, tokens, cost against the baseline's, savings,
//! latency percentiles.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::record::{Record, Status, Tokens};

/// How records are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum By {
    /// One group: everything.
    #[default]
    Total,
    Tier,
    Task,
    Key,
    /// The UTC calendar day the request arrived.
    Day,
}

impl By {
    pub fn parse(s: &str) -> Option<By> {
        Some(match s {
            "total" => By::Total,
            "tier" => By::Tier,
            "task" => By::Task,
            "key" => By::Key,
            "day" => By::Day,
            _ => return None,
        })
    }

    fn key(self, r: &Record) -> String {
        let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
        match self {
            By::Total => "total".into(),
            By::Tier => or_none(&r.tier),
            By::Task => or_none(&r.task),
            By::Key => or_none(&r.key),
            By::Day => day(r.at_ms),
        }
    }
}

/// What a report covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Query {
    /// Milliseconds since the epoch; `None`: from the first record.
    pub since_ms: Option<i64>,
    /// Exclusive; `None`: up to now and beyond.
    pub until_ms: Option<i64>,
    pub by: By,
}

impl Query {
    pub(crate) fn range(&self) -> (i64, i64) {
        (
            self.since_ms.unwrap_or(i64::MIN),
            self.until_ms.unwrap_or(i64::MAX),
        )
    }
}

/// The records of a range, summed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub by: By,
    pub total: Group,
    /// Per group, largest first; empty when `by` is `total`.
    pub groups: Vec<Group>,
}

/// One group's sums.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    pub key: String,
    pub requests: u64,
    pub answered: u64,
    pub refused: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// Answered requests per answering tier.
    pub tiers: BTreeMap<String, u64>,
    /// Of the answered, the share a tier on this machine answered.
    pub local_share: f64,
    /// Of the answered, the share that escalated to another tier.
    pub escalation_rate: f64,
    pub escalated: u64,
    pub tokens: Tokens,
    /// US dollars spent.
    pub cost: f64,
    /// What the same requests would have cost on the baseline tier.
    pub baseline_cost: f64,
    /// `baseline_cost - cost`, over the requests with a baseline cost.
    pub savings: f64,
    /// `savings / baseline_cost`; `None` when nothing had a baseline cost.
    pub savings_pct: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    /// Time to the first byte of streamed answers.
    pub ttft_p50_ms: Option<f64>,
}

/// `rows` summed as `query` asks.
pub(crate) fn build(rows: &[Record], query: &Query) -> Report {
    let total = group("total", rows.iter());
    let mut groups = Vec::new();
    if query.by != By::Total {
        let mut by: BTreeMap<String, Vec<&Record>> = BTreeMap::new();
        for r in rows {
            by.entry(query.by.key(r)).or_default().push(r);
        }
        groups = by
            .into_iter()
            .map(|(k, rs)| group(&k, rs.into_iter()))
            .collect();
        if query.by != By::Day {
            groups.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.key.cmp(&b.key)));
        }
    }
    Report {
        since_ms: query.since_ms,
        until_ms: query.until_ms,
        by: query.by,
        total,
        groups,
    }
}

fn group<'a>(key: &str, rows: impl Iterator<Item = &'a Record>) -> Group {
    let mut g = Group {
        key: key.to_string(),
        requests: 0,
        answered: 0,
        refused: 0,
        failed: 0,
        cancelled: 0,
        tiers: BTreeMap::new(),
        local_share: 0.0,
        escalation_rate: 0.0,
        escalated: 0,
        tokens: Tokens::default(),
        cost: 0.0,
        baseline_cost: 0.0,
        savings: 0.0,
        savings_pct: None,
        p50_ms: None,
        p95_ms: None,
        ttft_p50_ms: None,
    };
    let mut on_machine = 0u64;
    let mut latencies = Vec::new();
    let mut ttfts = Vec::new();
    let mut with_baseline = false;
    for r in rows {
        g.requests += 1;
        match r.status {
            Status::Answered => g.answered += 1,
            Status::Refused => g.refused += 1,
            Status::Failed => g.failed += 1,
            Status::Cancelled => g.cancelled += 1,
        }
        if r.status == Status::Answered {
            if let Some(t) = &r.tier {
                *g.tiers.entry(t.clone()).or_default() += 1;
            }
            on_machine += u64::from(r.on_machine);
            g.escalated += u64::from(r.escalated);
            latencies.push(r.latency_ms);
            ttfts.extend(r.ttft_ms);
        }
        let t = &r.tokens;
        g.tokens.prompt += t.prompt;
        g.tokens.cached += t.cached;
        g.tokens.cache_write += t.cache_write;
        g.tokens.completion += t.completion;
        g.tokens.reasoning += t.reasoning;
        g.cost += r.cost;
        if let Some(b) = r.baseline_cost {
            with_baseline = true;
            g.baseline_cost += b;
            g.savings += b - r.cost;
        }
    }
    if g.answered > 0 {
        g.local_share = on_machine as f64 / g.answered as f64;
        g.escalation_rate = g.escalated as f64 / g.answered as f64;
    }
    if with_baseline && g.baseline_cost > 0.0 {
        g.savings_pct = Some(g.savings / g.baseline_cost);
    }
    g.p50_ms = percentile(&mut latencies, 0.50);
    g.p95_ms = percentile(&mut latencies, 0.95);
    g.ttft_p50_ms = percentile(&mut ttfts, 0.50);
    g
}

/// The nearest-rank percentile `p` of `xs`.
fn percentile(xs: &mut [f64], p: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let rank = (p * xs.len() as f64).ceil() as usize;
    Some(xs[rank.clamp(1, xs.len()) - 1])
}

/// The UTC date of `at_ms`, `YYYY-MM-DD`.
fn day(at_ms: i64) -> String {
    jiff::Timestamp::from_millisecond(at_ms).map_or_else(
        |_| "(invalid)".into(),
        |t| t.to_zoned(jiff::tz::TimeZone::UTC).date().to_string(),
    )
}

/// A time a report starts or ends at: a date (`2026-12-07`, midnight UTC), an RFC 3339
/// instant (`2026-12-07T10:00:00Z`), or a span back from `now_ms` (`30m`, `24h`, `7d`).
pub fn parse_time(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    let hint = "expected a date (2026-12-07), an RFC 3339 time (2026-12-07T10:00:00Z) or a span back from now (30m, 24h, 7d)";
    if let Some((n, unit)) = text
        .char_indices()
        .last()
        .map(|(i, c)| (&text[..i], c))
        .filter(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    {
        let n: i64 = n.parse().map_err(|_| format!("`{text}`: {hint}"))?;
        let unit_ms: i64 = match unit {
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            _ => return Err(format!("`{text}`: {hint}")),
        };
        return n
            .checked_mul(unit_ms)
            .map(|back| now_ms.saturating_sub(back))
            .ok_or_else(|| format!("`{text}`: too far back"));
    }
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    if let Ok(d) = text.parse::<jiff::civil::Date>() {
        return d
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp().as_millisecond())
            .map_err(|e| format!("`{text}`: {e}"));
    }
    Err(format!("`{text}`: {hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(at_ms: i64, tier: &str, on_machine: bool, cost: f64, baseline: f64) -> Record {
        Record {
            at_ms,
            request_id: format!("r{at_ms}"),
            replica: "h:1".into(),
            key: None,
            ingress: "chat".into(),
            task: Some("classify".into()),
            task_source: Some("header".into()),
            reason: "task=classify".into(),
            tier: Some(tier.into()),
            model: Some("m".into()),
            on_machine,
            tried: vec![tier.into()],
            escalated: !on_machine,
            confidence: None,
            method: None,
            tokens: Tokens {
                prompt: 100,
                completion: 10,
                ..Tokens::default()
            },
            cost,
            baseline_cost: Some(baseline),
            latency_ms: at_ms as f64,
            ttft_ms: None,
            http_status: 200,
            status: Status::Answered,
            prompt: None,
            answer: None,
        }
    }

    #[test]
    fn sums_shares_savings_and_percentiles() {
        let mut rows: Vec<Record> = (1..=7).map(|i| row(i, "local", true, 0.0, 0.01)).collect();
        rows.extend((8..=10).map(|i| row(i, "frontier", false, 0.01, 0.01)));
        let mut refused = row(11, "local", true, 0.0, 0.0);
        refused.status = Status::Refused;
        refused.baseline_cost = None;
        rows.push(refused);
        let r = build(
            &rows,
            &Query {
                by: By::Tier,
                ..Query::default()
            },
        );
        let t = &r.total;
        assert_eq!((t.requests, t.answered, t.refused), (11, 10, 1));
        assert!((t.local_share - 0.7).abs() < 1e-12);
        assert!((t.escalation_rate - 0.3).abs() < 1e-12);
        assert!((t.cost - 0.03).abs() < 1e-12 && (t.baseline_cost - 0.10).abs() < 1e-12);
        assert!((t.savings - 0.07).abs() < 1e-12);
        assert!((t.savings_pct.expect("a baseline") - 0.7).abs() < 1e-12);
        // Latencies 1..=10 ms over the answered: nearest rank.
        assert_eq!((t.p50_ms, t.p95_ms), (Some(5.0), Some(10.0)));
        assert_eq!(t.tiers["local"], 7);
        assert_eq!(r.groups[0].key, "local");
        assert_eq!(r.groups[0].requests, 8);
        assert_eq!(r.groups[1].savings, 0.0);
    }

    #[test]
    fn nothing_priced_means_no_savings_share() {
        let mut r = row(1, "local", true, 0.0, 0.0);
        r.baseline_cost = None;
        let rep = build(&[r], &Query::default());
        assert_eq!(rep.total.savings_pct, None);
        assert!(rep.groups.is_empty());
    }

    #[test]
    fn days_and_times() {
        assert_eq!(day(0), "1970-01-01");
        assert_eq!(day(1_796_601_600_000), "2026-12-07");
        let now = 1_796_601_600_000;
        assert_eq!(parse_time("24h", now), Ok(now - 86_400_000));
        assert_eq!(parse_time("30m", now), Ok(now - 1_800_000));
        assert_eq!(parse_time("2026-12-07", 0), Ok(1_796_601_600_000));
        assert_eq!(parse_time("2026-12-07T00:00:01Z", 0), Ok(1_796_601_601_000));
        for bad in ["", "yesterday", "7w", "h", "99999999999999999999d"] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
    }
}
