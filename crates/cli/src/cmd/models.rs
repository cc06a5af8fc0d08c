//! `smallfirst models`: the catalog and what is in the cache.

use std::io::Write;

use anyhow::Context;
use serde::Serialize;
use smallfirst_engine::{Recommended, SamplingDefaults};
use smallfirst_inspect::gguf;
use smallfirst_models::catalog::CATALOG;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Row {
    name: String,
    architecture: String,
    quant: String,
    size_bytes: u64,
    /// `null` for a catalog model pinned on its first pull that has not been pulled yet.
    sha256: Option<String>,
    pulled: bool,
    /// What a request that leaves a parameter out gets, and where each value comes from.
    sampling: SamplingDefaults,
    path: Option<String>,
    in_catalog: bool,
    default: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let puller = super::puller();
    let cache = puller.cache();
    let mut entries = cache.entries()?;
    let mut rows = Vec::new();
    for e in CATALOG {
        let pulled = cache.get(e.name)?;
        let recorded = entries.remove(e.name).map(|l| l.sha256);
        let sha256 = e.sha256.map(str::to_string).or(recorded);
        rows.push(Row {
            name: e.name.into(),
            architecture: e.architecture.into(),
            quant: e.quant.into(),
            size_bytes: e.size_bytes,
            pulled: pulled
                .as_ref()
                .is_some_and(|(_, l)| Some(&l.sha256) == sha256.as_ref()),
            sampling: SamplingDefaults::resolve(
                pulled
                    .as_ref()
                    .map(|(p, _)| file_sampling(p))
                    .unwrap_or_default(),
                e.sampling,
            ),
            sha256,
            path: pulled.map(|(p, _)| p.display().to_string()),
            in_catalog: true,
            default: e.name == smallfirst_models::DEFAULT_MODEL,
        });
    }
    for (name, lock) in entries {
        let path = cache.dir().join(&lock.file);
        rows.push(Row {
            name,
            architecture: String::new(),
            quant: String::new(),
            size_bytes: lock.size,
            sha256: Some(lock.sha256),
            pulled: path.is_file(),
            sampling: SamplingDefaults::resolve(file_sampling(&path), Recommended::default()),
            path: Some(path.display().to_string()),
            in_catalog: false,
            default: false,
        });
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &rows).context("cannot write to stdout")?;
        writeln!(out).context("cannot write to stdout")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<30} {:<8} {:<7} {:>9}  {:<8} SHA256",
        "NAME", "ARCH", "QUANT", "SIZE", "PULLED"
    )
    .context("cannot write to stdout")?;
    for r in rows {
        let name = if r.default {
            format!("{} *", r.name)
        } else {
            r.name
        };
        writeln!(
            out,
            "{:<30} {:<8} {:<7} {:>7.0}MB  {:<8} {}",
            name,
            r.architecture,
            r.quant,
            r.size_bytes as f64 / 1e6,
            if r.pulled { "yes" } else { "no" },
            r.sha256
                .as_deref()
                .map_or("(pinned on first pull)", |s| &s[..s.len().min(12)])
        )
        .context("cannot write to stdout")?;
    }
    writeln!(out, "(* default; cache: {})", cache.dir().display())
        .context("cannot write to stdout")?;
    Ok(())
}

/// The sampling a model file declares (`general.sampling.*`); nothing when it cannot be read.
fn file_sampling(path: &std::path::Path) -> Recommended {
    let read = || -> std::io::Result<Recommended> {
        let file = std::fs::File::open(path)?;
        let size = file.metadata()?.len();
        let report = gguf::read(std::io::BufReader::new(file), size)?;
        Ok(Recommended::from_gguf(&report.gguf))
    };
    read().unwrap_or_default()
}
