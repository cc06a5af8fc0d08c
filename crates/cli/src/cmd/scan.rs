//! `smallfirst scan PATH…`: model files checked without loading them. Exit 0 when every file
//! was read to the end with nothing found, 1 when something was found, 2 when a file could not
//! be scanned (unreadable, or a format the scanner does not read) and nothing was found.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;
use smallfirst_inspect::Severity;
use smallfirst_inspect::scan::{self, FileReport, Format};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Files or directories (scanned recursively; symbolic links are not followed).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Print JSON (one document: `{"version": 1, "files": [...]}`).
    #[arg(long, conflicts_with = "sarif")]
    pub json: bool,
    /// Print SARIF 2.1.0, for code-scanning tools.
    #[arg(long)]
    pub sarif: bool,
    /// Treat pickle globals on neither the denylist nor the known-safe list as critical
    /// (by default they are errors).
    #[arg(long)]
    pub strict: bool,
}

/// Files under `paths`, in a stable order.
fn files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::symlink_metadata(p)
            .with_context(|| format!("cannot read `{}`", p.display()))?;
        if meta.is_dir() {
            let mut inner: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot list `{}`", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|e| std::fs::symlink_metadata(e).is_ok_and(|m| m.is_file() || m.is_dir()))
                .collect();
            inner.sort();
            out.extend(files(&inner)?);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// A file that could not be read at all.
fn unreadable(path: &Path, e: &std::io::Error) -> FileReport {
    FileReport {
        file: path.display().to_string(),
        format: Format::Unknown,
        size: 0,
        sha256: String::new(),
        complete: false,
        findings: vec![smallfirst_inspect::Finding::new(
            "scan.io",
            Severity::Info,
            format!("cannot read the file: {e}"),
        )],
        gguf: None,
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let reports: Vec<FileReport> = files(&args.paths)?
        .iter()
        .map(|p| scan::scan_file(p, args.strict).unwrap_or_else(|e| unreadable(p, &e)))
        .collect();
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = json!({"version": 1, "files": reports});
        writeln!(out, "{doc}").context("cannot write to stdout")?;
    } else if args.sarif {
        writeln!(out, "{}", sarif(&reports)).context("cannot write to stdout")?;
    } else {
        for r in &reports {
            let verdict = if r.is_clean() {
                "clean".to_string()
            } else if let Some(worst) = r.worst().filter(|&s| s > Severity::Info) {
                format!("{} finding(s), worst {worst}", r.findings.len())
            } else {
                "not scanned".to_string()
            };
            let format = serde_json::to_value(r.format)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            writeln!(
                out,
                "{}: {format}, {} bytes, sha256 {}: {verdict}",
                r.file, r.size, r.sha256
            )
            .context("cannot write to stdout")?;
            for f in &r.findings {
                let at = f
                    .offset
                    .map(|o| format!(" at byte {o}"))
                    .unwrap_or_default();
                writeln!(out, "  {} {}{at}: {}", f.severity, f.rule, f.message)
                    .context("cannot write to stdout")?;
            }
        }
    }
    let found = reports
        .iter()
        .any(|r| r.worst().is_some_and(|s| s > Severity::Info));
    let incomplete = reports.iter().any(|r| !r.complete);
    Ok(if found {
        ExitCode::from(1)
    } else if incomplete {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn sarif(reports: &[FileReport]) -> serde_json::Value {
    let mut rules: Vec<&str> = reports
        .iter()
        .flat_map(|r| r.findings.iter().map(|f| f.rule))
        .collect();
    rules.sort_unstable();
    rules.dedup();
    let results: Vec<serde_json::Value> = reports
        .iter()
        .flat_map(|r| {
            r.findings.iter().map(move |f| {
                let level = match f.severity {
                    Severity::Critical | Severity::Error => "error",
                    Severity::Warning => "warning",
                    Severity::Info => "note",
                };
                let mut location = json!({"artifactLocation": {"uri": r.file}});
                if let Some(o) = f.offset {
                    location["region"] = json!({"byteOffset": o});
                }
                json!({
                    "ruleId": f.rule,
                    "level": level,
                    "message": {"text": f.message},
                    "properties": {"severity": f.severity, "sha256": r.sha256},
                    "locations": [{"physicalLocation": location}],
                })
            })
        })
        .collect();
    json!({
        "version": "2.1.0",
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "runs": [{
            "tool": {"driver": {
                "name": "smallfirst scan",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
            }},
            "results": results,
        }],
    })
}
