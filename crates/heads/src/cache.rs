//! Embeddings kept across runs, in SQLite: keyed by the model file's sha256, the pooling and
//! the text embedded, so a retrain (another regularization, more rows) embeds only what is
//! new. Model files' sha256 are kept too, keyed by path, length and modification time.

use std::path::Path;
use std::time::UNIX_EPOCH;

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use crate::HeadError;

pub struct EmbeddingCache {
    db: Connection,
}

fn sql(e: rusqlite::Error) -> HeadError {
    HeadError::Cache(e.to_string())
}

impl EmbeddingCache {
    /// Opens (or makes) the cache file.
    pub fn open(path: &Path) -> Result<EmbeddingCache, HeadError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| HeadError::Cache(format!("cannot make {}: {e}", dir.display())))?;
        }
        let db = Connection::open(path).map_err(sql)?;
        db.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sql)?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS embedding (
                 key BLOB PRIMARY KEY,
                 dim INTEGER NOT NULL,
                 vector BLOB NOT NULL
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS model_sha256 (
                 path TEXT PRIMARY KEY,
                 len INTEGER NOT NULL,
                 mtime_ns INTEGER NOT NULL,
                 sha256 TEXT NOT NULL
             );",
        )
        .map_err(sql)?;
        Ok(EmbeddingCache { db })
    }

    /// A cache in memory only (nothing kept).
    pub fn in_memory() -> Result<EmbeddingCache, HeadError> {
        let db = Connection::open_in_memory().map_err(sql)?;
        db.execute_batch(
            "CREATE TABLE embedding (key BLOB PRIMARY KEY, dim INTEGER NOT NULL, vector BLOB NOT NULL) WITHOUT ROWID;
             CREATE TABLE model_sha256 (path TEXT PRIMARY KEY, len INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL);",
        )
        .map_err(sql)?;
        Ok(EmbeddingCache { db })
    }

    /// The key of one embedded text.
    pub fn key(model_sha256: &str, pooling: &str, text: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [model_sha256, pooling, text] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        h.finalize().into()
    }

    pub fn get(&self, key: &[u8; 32]) -> Result<Option<Vec<f32>>, HeadError> {
        let row: Option<(i64, Vec<u8>)> = self
            .db
            .query_row(
                "SELECT dim, vector FROM embedding WHERE key = ?1",
                params![&key[..]],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sql)?;
        Ok(row.and_then(|(dim, bytes)| {
            // A row of the wrong size is treated as missing (and overwritten).
            (usize::try_from(dim).ok()? * 4 == bytes.len()).then(|| {
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            })
        }))
    }

    /// Stores vectors in one transaction.
    pub fn put_all<'a>(
        &mut self,
        rows: impl IntoIterator<Item = (&'a [u8; 32], &'a [f32])>,
    ) -> Result<(), HeadError> {
        let tx = self.db.transaction().map_err(sql)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO embedding (key, dim, vector) VALUES (?1, ?2, ?3)",
                )
                .map_err(sql)?;
            for (key, v) in rows {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                stmt.execute(params![&key[..], v.len() as i64, bytes])
                    .map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)
    }

    /// The sha256 of a model file, read again only when its length or time changed.
    pub fn model_sha256(&self, path: &Path) -> Result<String, HeadError> {
        let io = |e: std::io::Error| HeadError::Model(format!("{}: {e}", path.display()));
        let meta = std::fs::metadata(path).map_err(io)?;
        let len = meta.len() as i64;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i64);
        let key = path.display().to_string();
        let known: Option<String> = self
            .db
            .query_row(
                "SELECT sha256 FROM model_sha256 WHERE path = ?1 AND len = ?2 AND mtime_ns = ?3",
                params![key, len, mtime],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql)?;
        if let Some(sha) = known {
            return Ok(sha);
        }
        let sha = file_sha256(path).map_err(io)?;
        self.db
            .execute(
                "INSERT OR REPLACE INTO model_sha256 (path, len, mtime_ns, sha256) VALUES (?1, ?2, ?3, ?4)",
                params![key, len, mtime, sha],
            )
            .map_err(sql)?;
        Ok(sha)
    }
}

/// A file's sha256, as hex.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}
