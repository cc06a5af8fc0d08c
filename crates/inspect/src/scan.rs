//! One file: its format sniffed from its first bytes (never its extension), its sha256, and
//! the findings of the checks for that format. The file is read once, front to back.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::gguf::{self, Gguf};
use crate::{Finding, Severity};
use crate::{pickle, safetensors, template};

/// What a file's content says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Gguf,
    /// A bare pickle stream (protocol 2 or later), e.g. a legacy `.pt` / `.bin` / `.pkl`.
    Pickle,
    /// A zip archive, e.g. PyTorch's checkpoint format: its pickle members are walked.
    Zip,
    Safetensors,
    /// Nothing this scanner knows.
    Unknown,
}

impl Format {
    /// From a file's first bytes (at least 9 where the file has them) and its size.
    pub fn sniff(head: &[u8], size: u64) -> Format {
        if head.starts_with(gguf::MAGIC) {
            Format::Gguf
        } else if head.starts_with(b"PK\x03\x04") {
            Format::Zip
        } else if safetensors::sniff(head, size) {
            Format::Safetensors
        } else if pickle::sniff(head) {
            Format::Pickle
        } else {
            Format::Unknown
        }
    }
}

/// Most bytes of a bare pickle file read for walking: its pickles come first (PyTorch's legacy
/// format puts raw tensor data after them).
const PICKLE_READ: u64 = 64 << 20;
/// Most bytes of one archive member read for walking.
const MEMBER_READ: u64 = 256 << 20;

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

/// Scans the file at `path`; `strict` also flags pickle globals outside the allowlist of what
/// checkpoints need. Errors only when it cannot be opened or read.
pub fn scan_file(path: &Path, strict: bool) -> io::Result<FileReport> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut input = Hashing {
        inner: BufReader::with_capacity(1 << 20, file),
        hash: Sha256::new(),
    };
    let mut head = [0u8; 16];
    let got = read_up_to(&mut input, &mut head)?;
    let format = Format::sniff(&head[..got], size);
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
        Format::Pickle => {
            let mut buf = head[..got].to_vec();
            (&mut input).take(PICKLE_READ).read_to_end(&mut buf)?;
            let whole = buf.len() as u64 == size;
            let walk = pickle::walk(&buf, 0, strict);
            let broke = walk.findings.iter().any(|f| f.rule == "pickle.broken");
            // A stream that broke inside what was read was read whole; one cut by the read
            // limit was not.
            report.complete = walk.complete || (broke && (whole || !walk.ran_out));
            report.findings = walk.findings;
        }
        Format::Zip => {
            // The archive's directory is at its end: read it apart from the hashing pass.
            io::copy(&mut input, &mut io::sink())?;
            let (complete, findings) = zip_members(path, strict);
            report.complete = complete;
            report.findings = findings;
        }
        Format::Safetensors => {
            let mut len = [0u8; 8];
            len.copy_from_slice(&head[..8]);
            match safetensors::header_len(&len, size) {
                Ok(n) => {
                    let mut header = head[8..got].to_vec();
                    let rest = n.saturating_sub(header.len() as u64);
                    (&mut input).take(rest).read_to_end(&mut header)?;
                    header.truncate(n as usize);
                    report.findings = safetensors::check(&header, size - 8 - n);
                    report.complete = true;
                }
                Err(f) => {
                    report.findings.push(f);
                    report.complete = true;
                }
            }
        }
        Format::Unknown if got > 0 && pickle::STARTS.contains(&head[0]) => {
            // Protocol 0 and 1 pickles do not announce themselves: one that walks to its STOP
            // is a pickle.
            let mut buf = head[..got].to_vec();
            (&mut input).take(PICKLE_READ).read_to_end(&mut buf)?;
            let walk = pickle::walk(&buf, 0, strict);
            if walk.complete {
                report.format = Format::Pickle;
                report.complete = true;
                report.findings = walk.findings;
            } else {
                report.findings.push(unknown());
            }
        }
        Format::Unknown => report.findings.push(unknown()),
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

fn unknown() -> Finding {
    Finding::new(
        "scan.format",
        Severity::Info,
        "not a format this scanner reads (GGUF, pickle, zip, safetensors); nothing was checked",
    )
}

/// Walks every pickle in a zip archive (by name `*.pkl`, or by content). The archive is never
/// extracted; each member is read up to a limit.
fn zip_members(path: &Path, strict: bool) -> (bool, Vec<Finding>) {
    let mut findings = Vec::new();
    let archive = File::open(path)
        .map_err(|e| e.to_string())
        .and_then(|f| zip::ZipArchive::new(BufReader::new(f)).map_err(|e| e.to_string()));
    let mut archive = match archive {
        Ok(a) => a,
        Err(e) => {
            findings.push(Finding::new(
                "zip.broken",
                Severity::Error,
                format!("the zip archive cannot be read: {e}"),
            ));
            return (false, findings);
        }
    };
    let mut complete = true;
    let mut pickles = 0;
    for i in 0..archive.len() {
        let mut member = match archive.by_index(i) {
            Ok(m) => m,
            Err(e) => {
                findings.push(Finding::new(
                    "zip.broken",
                    Severity::Error,
                    format!("member {i} cannot be read: {e}"),
                ));
                complete = false;
                continue;
            }
        };
        let name = member.name().to_string();
        let base = member.data_start();
        let mut buf = Vec::new();
        let read = (&mut member).take(MEMBER_READ).read_to_end(&mut buf);
        if let Err(e) = read {
            findings.push(Finding::new(
                "zip.broken",
                Severity::Error,
                format!("member `{name}` cannot be read: {e}"),
            ));
            complete = false;
            continue;
        }
        if !(name.ends_with(".pkl") || pickle::sniff(&buf)) {
            continue;
        }
        pickles += 1;
        let walk = pickle::walk(&buf, base, strict);
        if !walk.complete && buf.len() as u64 == MEMBER_READ {
            complete = false;
        }
        findings.extend(walk.findings.into_iter().map(|mut f| {
            f.message = format!("{name}: {}", f.message);
            f
        }));
    }
    if pickles == 0 {
        findings.push(Finding::new(
            "zip.no-pickle",
            Severity::Info,
            "a zip archive with no pickle in it",
        ));
    }
    (complete, findings)
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
