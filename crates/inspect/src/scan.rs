//! One file: its format sniffed from its first bytes (never its extension), its sha256, and
//! the findings of the checks for that format. The file is read once, front to back.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::gguf::{self, Gguf};
use crate::template;
use crate::{Finding, Severity};

/// What a file's content says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Gguf,
    /// Nothing this scanner knows.
    Unknown,
}

impl Format {
    /// From a file's first bytes.
    pub fn sniff(head: &[u8]) -> Format {
        if head.starts_with(gguf::MAGIC) {
            Format::Gguf
        } else {
            Format::Unknown
        }
    }
}

/// What `smallfirst scan` reports for one file (the `--json` schema, version 1).
#[derive(Debug, Serialize)]
pub struct FileReport {
    pub file: String,
    pub format: Format,
    pub size: u64,
    /// Of the whole file, hex.
    pub sha256: String,
    /// Every check for the format ran to the end. An incomplete scan is never clean.
    pub complete: bool,
    pub findings: Vec<Finding>,
    /// The GGUF header, when the file is one.
    #[serde(skip)]
    pub gguf: Option<Gguf>,
}

impl FileReport {
    /// The most severe finding.
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }

    /// Read to the end with nothing found above `info`.
    pub fn is_clean(&self) -> bool {
        self.complete && self.worst().is_none_or(|s| s <= Severity::Info)
    }
}

/// Hashes what passes through.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Scans the file at `path`. Errors only when it cannot be opened or read.
pub fn scan_file(path: &Path) -> io::Result<FileReport> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut input = Hashing {
        inner: BufReader::with_capacity(1 << 20, file),
        hash: Sha256::new(),
    };
    let mut head = [0u8; 8];
    let got = read_up_to(&mut input, &mut head)?;
    let format = Format::sniff(&head[..got]);
    let mut report = FileReport {
        file: path.display().to_string(),
        format,
        size,
        sha256: String::new(),
        complete: false,
        findings: Vec::new(),
        gguf: None,
    };
    match format {
        Format::Gguf => {
            let mut g = gguf::read(io::Cursor::new(&head[..got]).chain(&mut input), size)?;
            g.findings.extend(templates(&g.gguf));
            report.complete = g.complete;
            report.findings = g.findings;
            report.gguf = Some(g.gguf);
        }
        Format::Unknown => report.findings.push(Finding::new(
            "scan.format",
            Severity::Info,
            "not a format this scanner reads (GGUF); nothing was checked",
        )),
    }
    // The rest of the file, for the hash.
    io::copy(&mut input, &mut io::sink())?;
    report.sha256 = hex::encode(input.hash.finalize());
    Ok(report)
}

/// The GGUF and template checks, without hashing the tensor data: what the engine runs before
/// a load.
pub fn check_gguf(path: &Path) -> io::Result<gguf::Report> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut report = gguf::read(BufReader::with_capacity(1 << 20, file), size)?;
    let found = templates(&report.gguf);
    report.findings.extend(found);
    Ok(report)
}

/// Every chat template the file carries (`tokenizer.chat_template`, and named ones under
/// `tokenizer.chat_template.NAME`), checked.
fn templates(g: &Gguf) -> Vec<Finding> {
    g.metadata
        .iter()
        .filter(|(k, _)| {
            k == "tokenizer.chat_template" || k.starts_with("tokenizer.chat_template.")
        })
        .flat_map(|(k, v)| match v.as_str() {
            Some(source) => template::check(k, source),
            None => vec![Finding::new(
                "template.type",
                Severity::Error,
                format!("{k} is not a string"),
            )],
        })
        .collect()
}

fn read_up_to(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
