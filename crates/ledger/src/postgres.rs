//! The PostgreSQL store: the same records as the SQLite file, in a table several replicas
//! share (`smallfirst_requests`), migrated under an advisory lock so that replicas starting
//! together do not race; a batch is one transaction, committed when PostgreSQL has it on disk
//! (its `synchronous_commit`, on by default).

use postgres::{Client, NoTls};

use crate::LedgerError;
use crate::record::{COLUMNS, Columns, Record};

/// The schema, one step per version, as in SQLite's store.
const MIGRATIONS: &[&str] = &[
    // 1: the requests.
    "CREATE TABLE smallfirst_requests (
        id BIGSERIAL PRIMARY KEY,
        at_ms BIGINT NOT NULL,
        request_id TEXT NOT NULL,
        replica TEXT NOT NULL,
        key TEXT,
        ingress TEXT NOT NULL,
        task TEXT,
        task_source TEXT,
        reason TEXT NOT NULL,
        tier TEXT,
        model TEXT,
        on_machine BOOLEAN NOT NULL,
        tried TEXT NOT NULL,
        escalated BOOLEAN NOT NULL,
        confidence DOUBLE PRECISION,
        method TEXT,
        prompt_tokens BIGINT NOT NULL,
        cached_tokens BIGINT NOT NULL,
        cache_write_tokens BIGINT NOT NULL,
        completion_tokens BIGINT NOT NULL,
        reasoning_tokens BIGINT NOT NULL,
        cost DOUBLE PRECISION NOT NULL,
        baseline_cost DOUBLE PRECISION,
        latency_ms DOUBLE PRECISION NOT NULL,
        ttft_ms DOUBLE PRECISION,
        http_status INTEGER NOT NULL,
        status TEXT NOT NULL,
        prompt TEXT,
        answer TEXT
    );
    CREATE INDEX smallfirst_requests_at ON smallfirst_requests (at_ms);",
];

const VERSION: i32 = MIGRATIONS.len() as i32;

/// Any number, as long as no other program takes the same advisory lock for its migrations.
const MIGRATION_LOCK: i64 = 0x736d_616c_6c66;

pub(crate) fn store(e: &postgres::Error) -> LedgerError {
    LedgerError::Store(match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    })
}

/// Connects to `url`.
pub(crate) fn connect(url: &str) -> Result<Client, LedgerError> {
    Client::connect(url, NoTls).map_err(|e| LedgerError::Open {
        place: crate::redacted(url),
        reason: e.to_string(),
    })
}

/// Connects and migrates.
pub(crate) fn open(url: &str) -> Result<Client, LedgerError> {
    let mut client = connect(url)?;
    let mut tx = client.transaction().map_err(|e| store(&e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(|e| store(&e))?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS smallfirst_schema (version INTEGER NOT NULL)")
        .map_err(|e| store(&e))?;
    let version: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM smallfirst_schema",
            &[],
        )
        .map_err(|e| store(&e))?
        .get(0);
    if version > VERSION {
        return Err(LedgerError::Open {
            place: crate::redacted(url),
            reason: format!(
                "the ledger is at schema version {version}, newer than this build's {VERSION} \
                 (hint: upgrade smallfirst)"
            ),
        });
    }
    for step in &MIGRATIONS[version as usize..] {
        tx.batch_execute(step).map_err(|e| store(&e))?;
    }
    tx.execute("DELETE FROM smallfirst_schema", &[])
        .map_err(|e| store(&e))?;
    tx.execute(
        "INSERT INTO smallfirst_schema (version) VALUES ($1)",
        &[&VERSION],
    )
    .map_err(|e| store(&e))?;
    tx.commit().map_err(|e| store(&e))?;
    Ok(client)
}

/// `rows` in one transaction.
pub(crate) fn insert(client: &mut Client, rows: &[Record]) -> Result<(), LedgerError> {
    let mut tx = client.transaction().map_err(|e| store(&e))?;
    let sql = format!(
        "INSERT INTO smallfirst_requests ({COLUMNS}) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, \
          $20, $21, $22, $23, $24, $25, $26, $27, $28)"
    );
    let stmt = tx.prepare(&sql).map_err(|e| store(&e))?;
    for r in rows {
        let t = &r.tokens;
        let n = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
        tx.execute(
            &stmt,
            &[
                &r.at_ms,
                &r.request_id,
                &r.replica,
                &r.key,
                &r.ingress,
                &r.task,
                &r.task_source,
                &r.reason,
                &r.tier,
                &r.model,
                &r.on_machine,
                &r.tried_text(),
                &r.escalated,
                &r.confidence,
                &r.method,
                &n(t.prompt),
                &n(t.cached),
                &n(t.cache_write),
                &n(t.completion),
                &n(t.reasoning),
                &r.cost,
                &r.baseline_cost,
                &r.latency_ms,
                &r.ttft_ms,
                &i32::from(r.http_status),
                &r.status.as_str(),
                &r.prompt,
                &r.answer,
            ],
        )
        .map_err(|e| store(&e))?;
    }
    tx.commit().map_err(|e| store(&e))
}

/// Every record that arrived in `[since, until)`, oldest first.
pub(crate) fn select(url: &str, since: i64, until: i64) -> Result<Vec<Record>, LedgerError> {
    let mut client = connect(url)?;
    let exists: bool = client
        .query_one("SELECT to_regclass('smallfirst_requests') IS NOT NULL", &[])
        .map_err(|e| store(&e))?
        .get(0);
    if !exists {
        return Err(LedgerError::Open {
            place: crate::redacted(url),
            reason: "no ledger there yet (hint: it is created when `smallfirst serve` starts)"
                .into(),
        });
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM smallfirst_requests WHERE at_ms >= $1 AND at_ms < $2 \
         ORDER BY at_ms, id"
    );
    let rows = client
        .query(&sql, &[&since, &until])
        .map_err(|e| store(&e))?;
    rows.iter()
        .map(Record::from_columns)
        .collect::<Result<Vec<_>, postgres::Error>>()
        .map_err(|e| store(&e))
}

impl Columns for postgres::Row {
    type Error = postgres::Error;
    fn text(&self, i: usize) -> Result<Option<String>, postgres::Error> {
        self.try_get(i)
    }
    fn int(&self, i: usize) -> Result<i64, postgres::Error> {
        // `http_status` is an INTEGER, the rest BIGINT.
        self.try_get::<_, i64>(i)
            .or_else(|_| self.try_get::<_, i32>(i).map(i64::from))
    }
    fn real(&self, i: usize) -> Result<Option<f64>, postgres::Error> {
        self.try_get(i)
    }
    fn flag(&self, i: usize) -> Result<bool, postgres::Error> {
        self.try_get(i)
    }
}
