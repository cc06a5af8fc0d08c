//! Spend: dollars the records of a month hold per tier, task and key, with the part of the
//! last day, summed by the store itself. What budgets are held to, read again every few
//! moments, so that with PostgreSQL every replica's spend counts.

use crate::{LedgerError, Target};

/// Dollars spent by one (tier, task, key) since the start of a month, and since the start of
/// a day within it.
#[derive(Debug, Clone, PartialEq)]
pub struct Spent {
    pub tier: Option<String>,
    pub task: Option<String>,
    pub key: Option<String>,
    pub day: f64,
    pub month: f64,
}

/// A connection kept for reading spend again and again; opened again after a failure.
pub struct Reader {
    target: Target,
    conn: Option<Conn>,
}

enum Conn {
    Sqlite(rusqlite::Connection),
    Postgres(Box<postgres::Client>),
}

const SUMS: &str = "SELECT tier, task, key, SUM(CASE WHEN at_ms >= {day} THEN cost ELSE 0 END), \
    SUM(cost) FROM {table} WHERE at_ms >= {month} AND cost > 0 GROUP BY tier, task, key";

impl Reader {
    pub fn new(target: Target) -> Reader {
        Reader { target, conn: None }
    }

    /// What was spent since `month_ms`, and since `day_ms` (both in milliseconds since the
    /// epoch), by committed records.
    pub fn spent(&mut self, month_ms: i64, day_ms: i64) -> Result<Vec<Spent>, LedgerError> {
        let result = self.read(month_ms, day_ms);
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn read(&mut self, month_ms: i64, day_ms: i64) -> Result<Vec<Spent>, LedgerError> {
        if self.conn.is_none() {
            self.conn = Some(match &self.target {
                Target::Sqlite(path) => Conn::Sqlite(crate::sqlite::reader(path)?),
                Target::Postgres(url) => Conn::Postgres(Box::new(crate::postgres::connect(url)?)),
            });
        }
        match self.conn.as_mut() {
            Some(Conn::Sqlite(c)) => {
                let sql = SUMS
                    .replace("{day}", "?2")
                    .replace("{month}", "?1")
                    .replace("{table}", "requests");
                let mut stmt = c.prepare_cached(&sql)?;
                let rows = stmt.query_map(rusqlite::params![month_ms, day_ms], |r| {
                    Ok(Spent {
                        tier: r.get(0)?,
                        task: r.get(1)?,
                        key: r.get(2)?,
                        day: r.get::<_, Option<f64>>(3)?.unwrap_or(0.0),
                        month: r.get::<_, Option<f64>>(4)?.unwrap_or(0.0),
                    })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            }
            Some(Conn::Postgres(c)) => {
                let sql = SUMS
                    .replace("{day}", "$2")
                    .replace("{month}", "$1")
                    .replace("{table}", "smallfirst_requests");
                let rows = c
                    .query(&sql, &[&month_ms, &day_ms])
                    .map_err(|e| crate::postgres::store(&e))?;
                rows.iter()
                    .map(|r| {
                        Ok(Spent {
                            tier: r.try_get(0)?,
                            task: r.try_get(1)?,
                            key: r.try_get(2)?,
                            day: r.try_get::<_, Option<f64>>(3)?.unwrap_or(0.0),
                            month: r.try_get::<_, Option<f64>>(4)?.unwrap_or(0.0),
                        })
                    })
                    .collect::<Result<Vec<_>, postgres::Error>>()
                    .map_err(|e| crate::postgres::store(&e))
            }
            None => Err(LedgerError::Closed),
        }
    }
}

/// The start of the UTC day and of the UTC calendar month `at_ms` is in, and the start of the
/// next day and month (when each budget period resets).
pub fn periods(at_ms: i64) -> Periods {
    use jiff::tz::TimeZone;
    let fallback = Periods {
        day: at_ms,
        month: at_ms,
        next_day: at_ms,
        next_month: at_ms,
    };
    let Ok(t) = jiff::Timestamp::from_millisecond(at_ms) else {
        return fallback;
    };
    let date = t.to_zoned(TimeZone::UTC).date();
    let ms = |d: jiff::civil::Date| {
        d.to_zoned(TimeZone::UTC)
            .map(|z| z.timestamp().as_millisecond())
            .ok()
    };
    let first = date.first_of_month();
    let (Some(day), Some(month)) = (ms(date), ms(first)) else {
        return fallback;
    };
    let next_day = date.tomorrow().ok().and_then(ms).unwrap_or(i64::MAX);
    let next_month = first
        .checked_add(jiff::Span::new().months(1))
        .ok()
        .and_then(ms)
        .unwrap_or(i64::MAX);
    Periods {
        day,
        month,
        next_day,
        next_month,
    }
}

/// Budget periods around a time, in milliseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Periods {
    pub day: i64,
    pub month: i64,
    pub next_day: i64,
    pub next_month: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_months_in_utc() {
        // 2026-12-07T10:00:00Z
        let p = periods(1_796_637_600_000);
        assert_eq!(p.day, 1_796_601_600_000);
        assert_eq!(p.next_day, 1_796_688_000_000);
        // 2026-12-01 and 2027-01-01.
        assert_eq!(p.month, 1_796_083_200_000);
        assert_eq!(p.next_month, 1_798_761_600_000);
    }
}
