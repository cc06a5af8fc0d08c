//! Budgets: `[budgets]` held against the ledger. Spend is what the ledger's committed records
//! hold for the current UTC day and month, read again every `refresh_ms` (1 s by default) by
//! a thread of its own, plus what this server has recorded since the last read. With a
//! PostgreSQL ledger every replica's spend counts: another replica's is seen at most its
//! commit window plus one refresh late.
//!
//! A request is held to a budget only on its way to a tier with a price (a free tier never
//! spends): before each priced tier it would be sent to, every budget that covers it (the
//! overall one, the tier's, its task's, its key's) is checked, and an exhausted one sends it
//! to the embedded tier (`when_exceeded = "local"`, the reason says `budget`) or refuses it
//! with 429 `budget_exceeded` (`"refuse"`).
//!
//! What is spent on requests in flight when a budget runs out is spent: a budget can be
//! overrun by the requests already sent, never by one sent after the overrun was read.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use smallfirst_ledger::Ledger;
use smallfirst_ledger::spend::{Periods, Reader, Spent, periods};
use smallfirst_router::config::{Budget, BudgetsConfig, Scope, WhenExceeded};

use crate::ApiError;

/// The budgets, and their spend as last read plus this server's since.
pub struct Budgets {
    budgets: Vec<Budget>,
    /// Tiers with a price: the only ones a budget holds back.
    priced: Vec<String>,
    spend: Mutex<Spend>,
}

/// Per budget, in `budgets` order: `(day, month)` dollars.
#[derive(Debug, Default)]
struct Spend {
    periods: Option<Periods>,
    /// Committed, as the ledger summed them at the last read.
    read: Vec<(f64, f64)>,
    /// Recorded here while the last read ran: committed by then (the read flushes first),
    /// so dropped when it ends.
    reading: Vec<(f64, f64)>,
    /// Recorded here since the last read began.
    since: Vec<(f64, f64)>,
}

/// A budget a request would spend, and it is spent.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Exhausted {
    /// The tier the request was kept from.
    pub tier: String,
    pub scope: Scope,
    pub period: &'static str,
    pub limit: f64,
    pub spent: f64,
    pub when: WhenExceeded,
    /// When the period ends, in milliseconds since the epoch.
    pub resets_ms: i64,
}

impl Exhausted {
    /// The reason code and words an answer moved to this machine is marked with.
    pub(crate) fn reason(&self) -> smallfirst_router::Reason {
        smallfirst_router::Reason {
            code: "budget".into(),
            words: format!("{}, so not tier `{}`", self.words(), self.tier),
        }
    }

    fn words(&self) -> String {
        format!(
            "{} ({} ${:.4}) is spent: ${:.4}",
            self.scope, self.period, self.limit, self.spent
        )
    }

    /// The 429 a refused request gets, with `Retry-After` at the period's end.
    pub(crate) fn refusal(&self) -> ApiError {
        let wait_s = (self.resets_ms - smallfirst_ledger::now_ms()).max(0) / 1000 + 1;
        ApiError::OverBudget {
            message: format!("{}; it resets in {}", self.words(), span(wait_s)),
            retry_after_s: u64::try_from(wait_s).unwrap_or(1),
        }
    }
}

/// `secs` as `2h 05m`, `4m 10s` or `9s`.
fn span(secs: i64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s:02}s"),
        _ => format!("{h}h {m:02}m"),
    }
}

fn covers(scope: &Scope, tier: &str, task: Option<&str>, key: Option<&str>) -> bool {
    match scope {
        Scope::All => true,
        Scope::Tier(t) => t == tier,
        Scope::Task(t) => task == Some(t.as_str()),
        Scope::Key(k) => key == Some(k.as_str()),
    }
}

impl Budgets {
    /// The budgets `config` holds, their spend read from `ledger` once now and then every
    /// refresh by a thread that stops when the budgets are dropped; `priced` names the tiers
    /// with a price. `None` when there are no budgets.
    pub fn start(
        config: &BudgetsConfig,
        priced: Vec<String>,
        ledger: Arc<Ledger>,
    ) -> Option<Arc<Budgets>> {
        if config.budgets.is_empty() {
            return None;
        }
        let n = config.budgets.len();
        let budgets = Arc::new(Budgets {
            budgets: config.budgets.clone(),
            priced,
            spend: Mutex::new(Spend {
                periods: None,
                read: vec![(0.0, 0.0); n],
                reading: vec![(0.0, 0.0); n],
                since: vec![(0.0, 0.0); n],
            }),
        });
        let mut reader = Reader::new(ledger.target().clone());
        let weak = Arc::downgrade(&budgets);
        let every = config.refresh;
        // The spend is read once before the first request (on the thread: a PostgreSQL
        // client may not be driven from the server's runtime).
        let (read, first) = std::sync::mpsc::channel();
        let started = std::thread::Builder::new()
            .name("smallfirst-budgets".into())
            .spawn(move || {
                if let Some(b) = weak.upgrade() {
                    b.refresh(&ledger, &mut reader);
                }
                let _ = read.send(());
                refresh_loop(&weak, &ledger, &mut reader, every);
            });
        match started {
            Ok(_) => {
                let _ = first.recv_timeout(Duration::from_secs(30));
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start the budgets' reader; spend is this server's alone");
            }
        }
        Some(budgets)
    }

    /// Reads the spend again: what was recorded here so far is committed first, then summed
    /// with every other replica's by the store.
    fn refresh(&self, ledger: &Ledger, reader: &mut Reader) {
        {
            let mut s = self.lock();
            let since = std::mem::replace(&mut s.since, vec![(0.0, 0.0); self.budgets.len()]);
            for (r, n) in s.reading.iter_mut().zip(since) {
                r.0 += n.0;
                r.1 += n.1;
            }
        }
        let now = periods(smallfirst_ledger::now_ms());
        let read = ledger
            .flush()
            .and_then(|()| reader.spent(now.month, now.day));
        let mut s = self.lock();
        match read {
            Ok(rows) => {
                s.read = self.sums(&rows);
                s.reading.iter_mut().for_each(|r| *r = (0.0, 0.0));
                s.periods = Some(now);
            }
            // The last sums stand, with what was recorded here since.
            Err(e) => tracing::warn!(error = %e, "cannot read the budgets' spend from the ledger"),
        }
    }

    fn sums(&self, rows: &[Spent]) -> Vec<(f64, f64)> {
        self.budgets
            .iter()
            .map(|b| {
                rows.iter()
                    .filter(|r| {
                        r.tier.as_deref().is_some_and(|t| {
                            covers(&b.scope, t, r.task.as_deref(), r.key.as_deref())
                        })
                    })
                    .fold((0.0, 0.0), |(d, m), r| (d + r.day, m + r.month))
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Spend> {
        self.spend
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A record's cost counted at once, before the next read sees it.
    pub(crate) fn spent(&self, tier: &str, task: Option<&str>, key: Option<&str>, cost: f64) {
        if cost <= 0.0 || !cost.is_finite() {
            return;
        }
        let mut s = self.lock();
        for (b, n) in self.budgets.iter().zip(s.since.iter_mut()) {
            if covers(&b.scope, tier, task, key) {
                n.0 += cost;
                n.1 += cost;
            }
        }
    }

    /// The budget a request for `tier` would spend, if one covering it is spent: a refusing
    /// one before one that moves the request here.
    pub(crate) fn exhausted(
        &self,
        tier: &str,
        task: Option<&str>,
        key: Option<&str>,
    ) -> Option<Exhausted> {
        if !self.priced.iter().any(|p| p == tier) {
            return None;
        }
        let s = self.lock();
        let now = smallfirst_ledger::now_ms();
        let p = s.periods.unwrap_or_else(|| periods(now));
        // Past the end of the day (or month) last read, that period's spend is not counted.
        let (new_day, new_month) = (now >= p.next_day, now >= p.next_month);
        let mut found: Option<Exhausted> = None;
        for (i, b) in self.budgets.iter().enumerate() {
            if !covers(&b.scope, tier, task, key) {
                continue;
            }
            let day = s.read[i].0 + s.reading[i].0 + s.since[i].0;
            let month = s.read[i].1 + s.reading[i].1 + s.since[i].1;
            let over = [
                (b.daily_usd, day, new_day, "daily", p.next_day),
                (b.monthly_usd, month, new_month, "monthly", p.next_month),
            ]
            .into_iter()
            .find_map(|(limit, spent, reset, period, resets_ms)| {
                let limit = limit?;
                let spent = if reset { 0.0 } else { spent };
                (spent >= limit).then(|| Exhausted {
                    tier: tier.to_string(),
                    scope: b.scope.clone(),
                    period,
                    limit,
                    spent,
                    when: b.when_exceeded,
                    resets_ms,
                })
            });
            if let Some(e) = over {
                if e.when == WhenExceeded::Refuse {
                    return Some(e);
                }
                found.get_or_insert(e);
            }
        }
        found
    }
}

fn refresh_loop(budgets: &Weak<Budgets>, ledger: &Ledger, reader: &mut Reader, every: Duration) {
    loop {
        std::thread::sleep(every);
        let Some(b) = budgets.upgrade() else {
            return;
        };
        b.refresh(ledger, reader);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budgets(list: Vec<Budget>) -> Budgets {
        let n = list.len();
        Budgets {
            budgets: list,
            priced: vec!["frontier".into(), "mid".into()],
            spend: Mutex::new(Spend {
                periods: None,
                read: vec![(0.0, 0.0); n],
                reading: vec![(0.0, 0.0); n],
                since: vec![(0.0, 0.0); n],
            }),
        }
    }

    fn budget(scope: Scope, daily: f64, when: WhenExceeded) -> Budget {
        Budget {
            scope,
            daily_usd: Some(daily),
            monthly_usd: None,
            when_exceeded: when,
        }
    }

    #[test]
    fn a_spent_budget_holds_back_the_tiers_it_covers() {
        let b = budgets(vec![
            budget(Scope::Tier("frontier".into()), 1.0, WhenExceeded::Local),
            budget(Scope::Key("team-a".into()), 0.5, WhenExceeded::Refuse),
        ]);
        assert_eq!(b.exhausted("frontier", None, None), None);
        b.spent("frontier", None, Some("team-b"), 0.6);
        assert_eq!(b.exhausted("frontier", None, Some("team-a")), None);
        b.spent("mid", None, Some("team-a"), 0.5);
        // team-a's budget is spent on any priced tier; it refuses, before the tier's moves.
        let e = b.exhausted("mid", None, Some("team-a")).expect("spent");
        assert_eq!(
            (e.scope, e.when),
            (Scope::Key("team-a".into()), WhenExceeded::Refuse)
        );
        assert_eq!(b.exhausted("frontier", None, Some("team-b")), None);
        b.spent("frontier", None, None, 0.4);
        let e = b.exhausted("frontier", None, None).expect("spent");
        assert_eq!((e.period, e.limit), ("daily", 1.0));
        assert!((e.spent - 1.0).abs() < 1e-12);
        // A free tier never spends.
        assert_eq!(b.exhausted("local", None, Some("team-a")), None);
        assert!(e.refusal().to_string().contains("tier `frontier`'s budget"));
    }

    #[test]
    fn spend_read_from_the_ledger_counts_every_replica() {
        let b = budgets(vec![budget(
            Scope::Task("summarize".into()),
            2.0,
            WhenExceeded::Refuse,
        )]);
        let rows = vec![
            Spent {
                tier: Some("frontier".into()),
                task: Some("summarize".into()),
                key: None,
                day: 1.5,
                month: 9.0,
            },
            Spent {
                tier: Some("frontier".into()),
                task: Some("classify".into()),
                key: None,
                day: 5.0,
                month: 5.0,
            },
        ];
        b.lock().read = b.sums(&rows);
        assert_eq!(b.exhausted("frontier", Some("summarize"), None), None);
        b.spent("frontier", Some("summarize"), None, 0.5);
        assert!(b.exhausted("frontier", Some("summarize"), None).is_some());
        assert_eq!(b.exhausted("frontier", Some("classify"), None), None);
    }
}
