//! The ledger: every request the server answers (or refuses) as one [`Record`] — which tier
//! answered and why, the tokens, the cost at that tier's prices and at the baseline's, the
//! latency — and the [`Report`]s read from them.
//!
//! # Overview
//! - [`Ledger`]: the handle the server records through. [`Ledger::record`] never waits on the
//!   store: records go through a bounded channel to a writer thread that commits them in
//!   batches, each record at most one commit window after it was sent. [`Ledger::flush`]
//!   returns once everything sent before it is committed; [`Ledger::close`] flushes and stops
//!   the writer.
//! - `sqlite`: the default store, a file (WAL, versioned migrations); `postgres`: a
//!   PostgreSQL server that several replicas share, the same records in the same columns.
//! - [`report`]: requests, tier shares, escalations, cost, the baseline's cost, savings and
//!   latency percentiles over a time range, grouped by tier, task, key or day.
//! - [`spend`]: the dollars of the current day and month per tier, task and key, summed by
//!   the store, for budgets.
//!
//! # Durability
//! A clean shutdown ([`Ledger::close`]) keeps every record. A process killed outright
//! (`kill -9`) loses at most the records sent in the last commit window (50 ms by default,
//! `[ledger] commit_ms`) plus the commit running then: a committed batch is in SQLite's
//! write-ahead log (or PostgreSQL's) before the commit returns.

mod postgres;
mod record;
pub mod report;
pub mod spend;
mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use record::{Record, Status, Tokens};
pub use report::{By, Group, Query, Report};

/// Records that may wait for the writer; past it, a sender waits on a blocking thread
/// rather than losing one.
const QUEUE: usize = 16_384;
/// Records committed in one transaction at most.
const MAX_BATCH: usize = 4_096;
/// How long [`Ledger::flush`] waits for the writer.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the ledger could not be opened, written or read.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot open the ledger at `{place}`: {reason}")]
    Open { place: String, reason: String },
    #[error("the ledger's store failed: {0}")]
    Store(String),
    #[error("the ledger's writer has stopped")]
    Closed,
    #[error("{0}")]
    Query(String),
}

impl From<rusqlite::Error> for LedgerError {
    fn from(e: rusqlite::Error) -> Self {
        LedgerError::Store(e.to_string())
    }
}

enum Message {
    Record(Box<Record>),
    /// Commit what came before, then say so.
    Flush(mpsc::Sender<Result<(), String>>),
    /// Commit what came before, then stop.
    Stop,
}

/// Where records are kept.
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL or libpq settings; printed without its password.
    Postgres(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Sqlite(p) => write!(f, "{}", p.display()),
            Target::Postgres(url) => f.write_str(&redacted(url)),
        }
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Target({self})")
    }
}

/// A PostgreSQL URL with its user and password left out (`postgres://…@host/db`); libpq
/// settings with their `password=` left out.
pub(crate) fn redacted(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        return match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://…@{host}"),
            None => url.to_string(),
        };
    }
    url.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=*****"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The store the writer commits to.
enum Store {
    Sqlite(rusqlite::Connection),
    Postgres {
        // Boxed: a client is far larger than a SQLite connection handle.
        client: Box<::postgres::Client>,
        url: String,
    },
}

impl Store {
    fn open(target: &Target) -> Result<Store, LedgerError> {
        Ok(match target {
            Target::Sqlite(path) => Store::Sqlite(sqlite::open(path)?),
            Target::Postgres(url) => Store::Postgres {
                client: Box::new(postgres::open(url)?),
                url: url.clone(),
            },
        })
    }

    fn insert(&mut self, rows: &[Record]) -> Result<(), LedgerError> {
        match self {
            Store::Sqlite(conn) => sqlite::insert(conn, rows),
            Store::Postgres { client, url } => {
                // A connection the server closed (a restart, a failover) is opened again.
                if client.is_closed() {
                    **client = postgres::open(url)?;
                }
                postgres::insert(client, rows)
            }
        }
    }
}

/// The ledger: records in, reports out.
pub struct Ledger {
    target: Target,
    sender: SyncSender<Message>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    stats: Arc<Stats>,
}

/// What the writer has done, for metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub committed: std::sync::atomic::AtomicU64,
    pub commits: std::sync::atomic::AtomicU64,
    /// Records a failed commit could not keep.
    pub lost: std::sync::atomic::AtomicU64,
}

impl Ledger {
    /// Opens (and migrates) the store and starts the writer, which commits each record at
    /// most `window` after it is sent.
    pub fn open(target: Target, window: Duration) -> Result<Ledger, LedgerError> {
        let conn = Store::open(&target)?;
        let (sender, receiver) = mpsc::sync_channel(QUEUE);
        let stats = Arc::new(Stats::default());
        let writer_stats = Arc::clone(&stats);
        let writer = std::thread::Builder::new()
            .name("smallfirst-ledger".into())
            .spawn(move || write_loop(conn, &receiver, window, &writer_stats))
            .map_err(|e| LedgerError::Open {
                place: target.to_string(),
                reason: format!("cannot start the writer: {e}"),
            })?;
        Ok(Ledger {
            target,
            sender,
            writer: Mutex::new(Some(writer)),
            stats,
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Sends `record` to the writer without waiting, unless 16,384 records are waiting
    /// already: then the caller waits for room (back-pressure) rather than losing it.
    pub fn record(&self, record: Record) {
        let message = match self.sender.try_send(Message::Record(Box::new(record))) {
            Ok(()) => return,
            Err(TrySendError::Full(message)) => message,
            Err(TrySendError::Disconnected(_)) => return self.lost(),
        };
        tracing::warn!(
            queued = QUEUE,
            "the ledger's writer is behind; waiting for room"
        );
        if self.sender.send(message).is_err() {
            self.lost();
        }
    }

    fn lost(&self) {
        self.stats
            .lost
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::error!("the ledger's writer has stopped; a record was not kept");
    }

    /// Waits until every record sent before this call is committed.
    pub fn flush(&self) -> Result<(), LedgerError> {
        let (ack, done) = mpsc::channel();
        self.sender
            .send(Message::Flush(ack))
            .map_err(|_| LedgerError::Closed)?;
        match done.recv_timeout(FLUSH_TIMEOUT) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(LedgerError::Store(e)),
            Err(_) => Err(LedgerError::Closed),
        }
    }

    /// Flushes, then stops the writer. Records sent after this are not kept (and logged).
    pub fn close(&self) -> Result<(), LedgerError> {
        let flushed = self.flush();
        let _ = self.sender.send(Message::Stop);
        if let Some(w) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = w.join();
        }
        flushed
    }

    /// The report `query` asks for, read from the store (committed records only: flush
    /// first to include the last window's).
    pub fn report(&self, query: &Query) -> Result<Report, LedgerError> {
        read(&self.target, query)
    }
}

/// A report read from `target` without a writer: what `smallfirst report` does.
pub fn read(target: &Target, query: &Query) -> Result<Report, LedgerError> {
    let (since, until) = query.range();
    let rows = match target {
        Target::Sqlite(path) => {
            if !path.exists() {
                return Err(LedgerError::Open {
                    place: path.display().to_string(),
                    reason:
                        "no ledger there yet (hint: it is created when `smallfirst serve` starts)"
                            .into(),
                });
            }
            sqlite::select(&sqlite::reader(path)?, since, until)?
        }
        Target::Postgres(url) => postgres::select(url, since, until)?,
    };
    Ok(report::build(&rows, query))
}

fn write_loop(
    mut conn: Store,
    receiver: &mpsc::Receiver<Message>,
    window: Duration,
    stats: &Stats,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut batch: Vec<Record> = Vec::new();
    let mut acks = Vec::new();
    let mut stop = false;
    while !stop && let Ok(first) = receiver.recv() {
        let deadline = Instant::now() + window;
        let mut next = Some(first);
        loop {
            match next.take() {
                Some(Message::Record(r)) => batch.push(*r),
                Some(Message::Flush(ack)) => {
                    acks.push(ack);
                    break;
                }
                Some(Message::Stop) => {
                    stop = true;
                    break;
                }
                None => {}
            }
            if batch.len() >= MAX_BATCH {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match receiver.recv_timeout(left) {
                Ok(m) => next = Some(m),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        let result = if batch.is_empty() {
            Ok(())
        } else {
            commit(&mut conn, &batch)
        };
        match &result {
            Ok(()) => {
                stats.committed.fetch_add(batch.len() as u64, Relaxed);
                stats.commits.fetch_add(1, Relaxed);
            }
            Err(e) => {
                stats.lost.fetch_add(batch.len() as u64, Relaxed);
                tracing::error!(records = batch.len(), error = %e, "the ledger could not keep these records");
            }
        }
        batch.clear();
        for ack in acks.drain(..) {
            let _ = ack.send(result.as_ref().map(|_| ()).map_err(ToString::to_string));
        }
    }
}

/// One batch committed; a busy database is tried again a few times before the batch is
/// given up.
fn commit(conn: &mut Store, batch: &[Record]) -> Result<(), LedgerError> {
    let mut tries = 0;
    loop {
        match conn.insert(batch) {
            Ok(()) => return Ok(()),
            Err(e) if tries < 3 => {
                tries += 1;
                tracing::warn!(error = %e, tries, "ledger commit failed; trying again");
                std::thread::sleep(Duration::from_millis(100 * tries));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Milliseconds since the Unix epoch, now: the clock records and report ranges are in.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The default ledger file inside a data directory.
pub fn default_file(data_dir: &Path) -> PathBuf {
    data_dir.join("ledger.sqlite")
}

impl Drop for Ledger {
    fn drop(&mut self) {
        let running = self.writer.lock().is_ok_and(|w| w.is_some());
        if running && let Err(e) = self.close() {
            tracing::error!(error = %e, "the ledger did not close cleanly");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: i64) -> Record {
        Record {
            at_ms: 1_000 + i,
            request_id: format!("req_{i}"),
            replica: "test:1".into(),
            key: Some("ci".into()),
            ingress: "chat".into(),
            task: None,
            task_source: None,
            reason: "model=local".into(),
            tier: Some("local".into()),
            model: Some("m".into()),
            on_machine: true,
            tried: vec!["local".into()],
            escalated: false,
            confidence: Some(0.9),
            method: Some("label_probability".into()),
            tokens: Tokens {
                prompt: 10,
                cached: 4,
                cache_write: 0,
                completion: 3,
                reasoning: 0,
            },
            cost: 0.0,
            baseline_cost: Some(0.001),
            latency_ms: 12.5,
            ttft_ms: None,
            http_status: 200,
            status: Status::Answered,
            prompt: None,
            answer: None,
        }
    }

    /// Records sent, closed, read back: every one, every field as it went in.
    fn round_trip(target: &Target) {
        let ledger = Ledger::open(target.clone(), Duration::from_millis(20)).expect("open");
        for i in 0..2_500 {
            ledger.record(record(i));
        }
        ledger.close().expect("close");
        let report = read(target, &Query::default()).expect("report");
        assert_eq!(report.total.requests, 2_500);
        assert_eq!(report.total.tokens.cached, 4 * 2_500);
        let rows = match target {
            Target::Sqlite(path) => {
                sqlite::select(&sqlite::reader(path).expect("open"), 1_007, 1_008).expect("select")
            }
            Target::Postgres(url) => postgres::select(url, 1_007, 1_008).expect("select"),
        };
        assert_eq!(rows, vec![record(7)]);
        // Opened again: migrated already, and the records stay.
        let again = Ledger::open(target.clone(), Duration::from_millis(1)).expect("reopen");
        again.record(record(9_999));
        again.close().expect("close");
        assert_eq!(
            read(target, &Query::default())
                .expect("report")
                .total
                .requests,
            2_501
        );
        spend_is_summed_by_the_store(target);
    }

    /// Priced records summed per tier, task and key, for a month and a day within it.
    fn spend_is_summed_by_the_store(target: &Target) {
        let ledger = Ledger::open(target.clone(), Duration::from_millis(1)).expect("open");
        for (at, cost, key) in [(5_000, 1.0, "a"), (6_000, 2.0, "a"), (7_000, 4.0, "b")] {
            let mut r = record(at - 1_000);
            r.tier = Some("frontier".into());
            r.cost = cost;
            r.key = Some(key.into());
            ledger.record(r);
        }
        ledger.close().expect("close");
        let mut reader = spend::Reader::new(target.clone());
        let mut spent = reader.spent(5_500, 6_500).expect("spent");
        spent.sort_by(|x, y| x.key.cmp(&y.key));
        let sums: Vec<(Option<&str>, Option<&str>, f64, f64)> = spent
            .iter()
            .map(|s| (s.tier.as_deref(), s.key.as_deref(), s.day, s.month))
            .collect();
        assert_eq!(
            sums,
            vec![
                (Some("frontier"), Some("a"), 0.0, 2.0),
                (Some("frontier"), Some("b"), 4.0, 4.0)
            ]
        );
        // The same connection, read again.
        assert_eq!(reader.spent(0, 0).expect("spent").len(), 2);
    }

    #[test]
    fn records_round_trip_and_close_keeps_every_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        round_trip(&Target::Sqlite(dir.path().join("sub/ledger.sqlite")));
    }

    /// On the PostgreSQL server `SMALLFIRST_TEST_POSTGRES` names (scripts/test.sh starts one),
    /// in a database of the test's own.
    #[test]
    fn postgres_keeps_the_same_records() {
        let Ok(server) = std::env::var("SMALLFIRST_TEST_POSTGRES") else {
            eprintln!("skipped: SMALLFIRST_TEST_POSTGRES is not set (scripts/test.sh sets it)");
            return;
        };
        let name = format!("ledger_unit_{}", std::process::id());
        let mut admin = ::postgres::Client::connect(&server, ::postgres::NoTls).expect("connect");
        // Two statements: neither may run inside the transaction a batch of them makes.
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .expect("drop");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create");
        let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
        round_trip(&Target::Postgres(format!("{base}/{name}")));
        admin
            .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .expect("drop");
    }

    #[test]
    fn passwords_are_not_printed() {
        let t = Target::Postgres("postgres://me:secret@db.lan:5432/ledger".into());
        assert_eq!(t.to_string(), "postgres://…@db.lan:5432/ledger");
        assert_eq!(
            redacted("host=/run/postgresql password=secret dbname=x"),
            "host=/run/postgresql password=***** dbname=x"
        );
        assert_eq!(format!("{t:?}"), "Target(postgres://…@db.lan:5432/ledger)");
    }

    #[test]
    fn flush_makes_records_readable_and_the_range_is_half_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = Target::Sqlite(dir.path().join("ledger.sqlite"));
        // A long window: only the flush commits these.
        let ledger = Ledger::open(target.clone(), Duration::from_secs(5)).expect("open");
        for i in 0..10 {
            ledger.record(record(i));
        }
        ledger.flush().expect("flush");
        let q = Query {
            since_ms: Some(1_002),
            until_ms: Some(1_005),
            by: By::Total,
        };
        assert_eq!(ledger.report(&q).expect("report").total.requests, 3);
        assert_eq!(
            ledger
                .stats()
                .committed
                .load(std::sync::atomic::Ordering::Relaxed),
            10
        );
    }

    #[test]
    fn reopening_keeps_records_and_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.sqlite");
        for _ in 0..2 {
            let ledger =
                Ledger::open(Target::Sqlite(path.clone()), Duration::from_millis(1)).expect("open");
            ledger.record(record(1));
            ledger.close().expect("close");
        }
        let report = read(&Target::Sqlite(path.clone()), &Query::default()).expect("report");
        assert_eq!(report.total.requests, 2);
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.pragma_update(None, "user_version", sqlite::VERSION + 1)
            .expect("version");
        drop(conn);
        let e = Ledger::open(Target::Sqlite(path.clone()), Duration::from_millis(1))
            .err()
            .expect("refused");
        assert!(e.to_string().contains("newer than this build"), "{e}");
        let e = read(&Target::Sqlite(path), &Query::default()).expect_err("refused");
        assert!(e.to_string().contains("upgrade smallfirst"), "{e}");
    }

    #[test]
    fn a_missing_ledger_is_a_clear_error() {
        let e = read(
            &Target::Sqlite(PathBuf::from("/nonexistent/ledger.sqlite")),
            &Query::default(),
        )
        .expect_err("missing");
        assert!(e.to_string().contains("no ledger there yet"), "{e}");
    }
}
