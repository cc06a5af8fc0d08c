//! The SQLite store: one file, WAL, versioned migrations, batched inserts.
//!
//! WAL with `synchronous = NORMAL`: a committed transaction survives the process being
//! killed (it is in the log, written before the commit returns); only a power loss can take
//! the last commits back. `FULL` would fsync every commit, which a ledger batched every few
//! milliseconds does not need for the promise it makes (see [`crate::Ledger`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};

use crate::LedgerError;
use crate::record::{COLUMNS, Columns, Record};

/// The schema, one step per version; a database at version `n` runs steps `n..`. A step is
/// never edited once released: a change is a new step.
const MIGRATIONS: &[&str] = &[
    // 1: the requests.
    "CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        request_id TEXT NOT NULL,
        replica TEXT NOT NULL,
        key TEXT,
        ingress TEXT NOT NULL,
        task TEXT,
        task_source TEXT,
        reason TEXT NOT NULL,
        tier TEXT,
        model TEXT,
        on_machine INTEGER NOT NULL,
        tried TEXT NOT NULL,
        escalated INTEGER NOT NULL,
        confidence REAL,
        method TEXT,
        prompt_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        cache_write_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        cost REAL NOT NULL,
        baseline_cost REAL,
        latency_ms REAL NOT NULL,
        ttft_ms REAL,
        http_status INTEGER NOT NULL,
        status TEXT NOT NULL,
        prompt TEXT,
        answer TEXT
    );
    CREATE INDEX requests_at ON requests (at_ms);",
];

/// The version this build writes.
pub(crate) const VERSION: usize = MIGRATIONS.len();

/// Opens (creating it and its directory when missing) and migrates the ledger at `path`.
pub(crate) fn open(path: &Path) -> Result<Connection, LedgerError> {
    let err = |e: String| LedgerError::Open {
        place: path.display().to_string(),
        reason: e,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    }
    let mut conn = Connection::open(path).map_err(|e| err(e.to_string()))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| err(e.to_string()))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| err(e.to_string()))?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(|e| err(e.to_string()))?;
    migrate(&mut conn).map_err(|e| match e {
        LedgerError::Store(reason) => err(reason),
        other => other,
    })?;
    Ok(conn)
}

/// A connection that only reads, for reports.
pub(crate) fn reader(path: &Path) -> Result<Connection, LedgerError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| LedgerError::Open {
        place: path.display().to_string(),
        reason: e.to_string(),
    })?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    check_version(version, path)?;
    Ok(conn)
}

fn check_version(version: usize, path: &Path) -> Result<(), LedgerError> {
    if version > VERSION {
        return Err(LedgerError::Open {
            place: path.display().to_string(),
            reason: format!(
                "the ledger is at schema version {version}, newer than this build's {VERSION} \
                 (hint: upgrade smallfirst)"
            ),
        });
    }
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), LedgerError> {
    let tx = conn.transaction()?;
    let version: usize = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    check_version(version, &PathBuf::from("the ledger"))?;
    for step in &MIGRATIONS[version..] {
        tx.execute_batch(step)?;
    }
    tx.pragma_update(None, "user_version", VERSION)?;
    tx.commit()?;
    Ok(())
}

/// `rows` in one transaction.
pub(crate) fn insert(conn: &mut Connection, rows: &[Record]) -> Result<(), LedgerError> {
    let tx = conn.transaction()?;
    {
        let sql = format!(
            "INSERT INTO requests ({COLUMNS}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
              ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28)"
        );
        let mut stmt = tx.prepare_cached(&sql)?;
        for r in rows {
            let t = &r.tokens;
            stmt.execute(params![
                r.at_ms,
                r.request_id,
                r.replica,
                r.key,
                r.ingress,
                r.task,
                r.task_source,
                r.reason,
                r.tier,
                r.model,
                r.on_machine,
                r.tried_text(),
                r.escalated,
                r.confidence,
                r.method,
                to_i64(t.prompt),
                to_i64(t.cached),
                to_i64(t.cache_write),
                to_i64(t.completion),
                to_i64(t.reasoning),
                r.cost,
                r.baseline_cost,
                r.latency_ms,
                r.ttft_ms,
                r.http_status,
                r.status.as_str(),
                r.prompt,
                r.answer,
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Every record that arrived in `[since, until)`, oldest first.
pub(crate) fn select(
    conn: &Connection,
    since: i64,
    until: i64,
) -> Result<Vec<Record>, LedgerError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM requests WHERE at_ms >= ?1 AND at_ms < ?2 ORDER BY at_ms, id"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params![since, until], |r| Record::from_columns(r))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

impl Columns for rusqlite::Row<'_> {
    type Error = rusqlite::Error;
    fn text(&self, i: usize) -> rusqlite::Result<Option<String>> {
        self.get(i)
    }
    fn int(&self, i: usize) -> rusqlite::Result<i64> {
        self.get(i)
    }
    fn real(&self, i: usize) -> rusqlite::Result<Option<f64>> {
        self.get(i)
    }
    fn flag(&self, i: usize) -> rusqlite::Result<bool> {
        self.get(i)
    }
}
