//! One file: its format sniffed from its first bytes (never its extension), its sha256, and
//! the findings of the checks for that format. The file is read once, front to back, for the
//! hash; what it holds is checked as it is found: a GGUF header streamed, a zip or 7z archive
//! member by member, a compressed stream expanded (bounded), each inner file scanned as one of
//! its own, to a depth of [`DEPTH`].

use std::fs::File;
use std::io::{self, BufReader, Cursor, Read, Seek};
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::containers::{self, Compression, Expanded};
use crate::gguf::{self, Gguf};
use crate::{Finding, Severity};
use crate::{pickle, safetensors, template};

/// What a file's content says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Gguf,
    /// A bare pickle stream, e.g. a legacy `.pt` / `.bin` / `.pkl`.
    Pickle,
    /// A zip archive, e.g. PyTorch's checkpoint format or NumPy's `.npz`.
    Zip,
    Safetensors,
    /// A NumPy array file; an object array's data is a pickle.
    Npy,
    Gzip,
    Bzip2,
    Xz,
    #[serde(rename = "7z")]
    SevenZip,
    /// Nothing this scanner knows.
    Unknown,
}

impl Format {
    /// From a file's first bytes (at least 16 where the file has them) and its size.
    pub fn sniff(head: &[u8], size: u64) -> Format {
        if head.starts_with(gguf::MAGIC) {
            Format::Gguf
        } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
            Format::Zip
        } else if head.starts_with(containers::NPY) {
            Format::Npy
        } else if head.starts_with(containers::SEVEN_ZIP) {
            Format::SevenZip
        } else if let Some(c) = Compression::sniff(head) {
            match c {
                Compression::Gzip => Format::Gzip,
                Compression::Bzip2 => Format::Bzip2,
                Compression::Xz => Format::Xz,
            }
        } else if safetensors::sniff(head, size) {
            Format::Safetensors
        } else if pickle::sniff(head) {
            Format::Pickle
        } else {
            Format::Unknown
        }
    }
}

/// Most bytes of a file read for checking when it is not a GGUF or an archive: a pickle's
/// pickles come first (PyTorch's legacy format puts raw tensor data after them).
const CONTENT_READ: u64 = 256 << 20;
/// Most bytes of one archive member read for checking.
const MEMBER_READ: u64 = 256 << 20;
/// Containers inside containers are opened this deep, no deeper.
pub const DEPTH: usize = 3;

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

/// What checking some content found.
struct Scanned {
    format: Format,
    complete: bool,
    findings: Vec<Finding>,
}

impl Scanned {
    fn new(format: Format) -> Self {
        Scanned {
            format,
            complete: true,
            findings: Vec::new(),
        }
    }

    /// Content of `format` that could not be opened at all.
    fn broken(format: Format, rule: &'static str, message: String) -> Self {
        Scanned {
            format,
            complete: false,
            findings: vec![Finding::new(rule, Severity::Error, message)],
        }
    }

    /// An inner file past the nesting depth: not opened, so not complete.
    fn unopened() -> Self {
        Scanned {
            format: Format::Unknown,
            complete: false,
            findings: Vec::new(),
        }
    }
}

/// Scans the file at `path`; with `strict`, a pickle's unknown globals are critical rather
/// than errors. Errors only when it cannot be opened or read.
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
    let scanned = match format {
        Format::Gguf => {
            let mut g = gguf::read(Cursor::new(&head[..got]).chain(&mut input), size)?;
            g.findings.extend(templates(&g.gguf));
            report.gguf = Some(g.gguf);
            Scanned {
                format,
                complete: g.complete,
                findings: g.findings,
            }
        }
        // A safetensors file is its header and raw tensors: only the header is read.
        Format::Safetensors => {
            let mut len = [0u8; 8];
            len.copy_from_slice(&head[..8]);
            let mut out = Scanned::new(format);
            match safetensors::header_len(&len, size) {
                Ok(n) => {
                    let mut header = head[8..got].to_vec();
                    let rest = n.saturating_sub(header.len() as u64);
                    (&mut input).take(rest).read_to_end(&mut header)?;
                    header.truncate(n as usize);
                    out.findings = safetensors::check(&header, size - 8 - n);
                }
                Err(f) => out.findings.push(f),
            }
            out
        }
        // Archives are read by their directories, apart from the hashing pass.
        Format::Zip => {
            io::copy(&mut input, &mut io::sink())?;
            zip_archive(File::open(path)?, strict, 0)
        }
        Format::SevenZip => {
            io::copy(&mut input, &mut io::sink())?;
            seven_zip(File::open(path)?, strict, 0)
        }
        _ => {
            let mut buf = head[..got].to_vec();
            (&mut input).take(CONTENT_READ).read_to_end(&mut buf)?;
            let whole = buf.len() as u64 == size;
            content(&buf, whole, strict, 0)
        }
    };
    report.format = scanned.format;
    report.complete = scanned.complete;
    report.findings = scanned.findings;
    // The rest of the file, for the hash.
    io::copy(&mut input, &mut io::sink())?;
    report.sha256 = hex::encode(input.hash.finalize());
    Ok(report)
}

/// Checks `bytes` as a file of their own (a whole one when `whole`, else a start of one).
fn content(bytes: &[u8], whole: bool, strict: bool, depth: usize) -> Scanned {
    let format = Format::sniff(bytes, bytes.len() as u64);
    let mut out = Scanned::new(format);
    match format {
        Format::Gguf => match gguf::read(Cursor::new(bytes), bytes.len() as u64) {
            Ok(mut g) => {
                g.findings.extend(templates(&g.gguf));
                out.complete = g.complete;
                out.findings = g.findings;
            }
            Err(e) => {
                out.complete = false;
                out.findings.push(Finding::new(
                    "gguf.read",
                    Severity::Error,
                    format!("the GGUF header cannot be read: {e}"),
                ));
            }
        },
        Format::Pickle => out = pickle_content(bytes, whole, strict),
        Format::Zip => out = zip_archive(Cursor::new(bytes), strict, depth),
        Format::SevenZip => out = seven_zip(Cursor::new(bytes), strict, depth),
        Format::Safetensors => {
            let mut len = [0u8; 8];
            len.copy_from_slice(&bytes[..8]);
            match safetensors::header_len(&len, bytes.len() as u64) {
                Ok(n) => {
                    let end = 8 + n as usize;
                    out.findings = safetensors::check(&bytes[8..end], bytes.len() as u64 - 8 - n);
                }
                Err(f) => out.findings.push(f),
            }
        }
        Format::Npy => match containers::npy_header(bytes) {
            Ok(h) if h.objects => {
                let inner = pickle_content(&bytes[h.data_start..], whole, strict);
                out.complete = inner.complete;
                out.findings = inner.findings;
                if out.findings.is_empty() && inner.format != Format::Pickle {
                    out.findings.push(Finding::new(
                        "npy.objects",
                        Severity::Error,
                        "an object array whose data is not a pickle this scanner can read",
                    ));
                }
            }
            Ok(_) => out.complete = whole,
            Err(e) => out.findings.push(Finding::new(
                "npy.header",
                Severity::Error,
                format!("the .npy header is malformed: {e}"),
            )),
        },
        Format::Gzip | Format::Bzip2 | Format::Xz => {
            let compression = Compression::sniff(bytes).unwrap_or(Compression::Gzip);
            out = expanded(
                compression.as_str(),
                compression.expand(bytes),
                strict,
                depth,
            );
            out.format = format;
        }
        Format::Unknown => out = pickle_content(bytes, whole, strict),
    }
    out
}

/// A pickle, or (for content no magic number names) what may be one: protocol 0 and 1
/// pickles do not announce themselves, so content that walks to a STOP, or that imports
/// something before it breaks, is a pickle; anything else is not scanned.
fn pickle_content(bytes: &[u8], whole: bool, strict: bool) -> Scanned {
    let announced = pickle::sniff(bytes);
    let walk = pickle::walk(bytes, 0, strict);
    let imports = walk
        .findings
        .iter()
        .any(|f| f.rule.starts_with("pickle.global"));
    if !announced && !walk.complete && !imports {
        let mut out = Scanned::new(Format::Unknown);
        out.complete = false;
        out.findings.push(Finding::new(
            "scan.format",
            Severity::Info,
            "not a format this scanner reads (GGUF, pickle, zip, 7z, gzip, bzip2, xz, npy, \
             safetensors); nothing was checked",
        ));
        return out;
    }
    let broke = walk.findings.iter().any(|f| f.rule == "pickle.broken");
    Scanned {
        format: Format::Pickle,
        // A stream that broke inside what was read was read whole; one cut by the read limit
        // was not.
        complete: walk.complete || (broke && (whole || !walk.ran_out)),
        findings: walk.findings,
    }
}

/// What a compressed stream held, scanned.
fn expanded(what: &str, result: io::Result<Expanded>, strict: bool, depth: usize) -> Scanned {
    let mut out = Scanned::new(Format::Unknown);
    let expanded = match result {
        Ok(e) => e,
        Err(e) => {
            return Scanned::broken(
                Format::Unknown,
                "compressed.broken",
                format!("the {what} stream cannot be expanded: {e}"),
            );
        }
    };
    if depth + 1 >= DEPTH {
        out.complete = false;
        out.findings.push(Finding::new(
            "compressed.depth",
            Severity::Error,
            format!("containers nested more than {DEPTH} deep; the inner ones were not opened"),
        ));
        return out;
    }
    let inner = content(&expanded.bytes, expanded.whole, strict, depth + 1);
    out.complete = inner.complete && expanded.whole;
    out.findings = inner
        .findings
        .into_iter()
        .map(|mut f| {
            f.message = format!("inside {what}: {}", f.message);
            f.offset = None;
            f
        })
        .collect();
    if !expanded.whole {
        out.findings.push(Finding::new(
            "compressed.limit",
            Severity::Warning,
            format!(
                "the {what} stream expands past {} MiB; only that much was checked",
                containers::EXPANDED_READ >> 20
            ),
        ));
    }
    out
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

/// Adds an inner file's findings to a container's, each naming the member.
fn add_member(out: &mut Scanned, name: &str, inner: Scanned, base: Option<u64>) -> bool {
    let code = matches!(inner.format, Format::Pickle | Format::Npy) || !inner.findings.is_empty();
    if matches!(inner.format, Format::Unknown)
        && inner.findings.iter().all(|f| f.rule == "scan.format")
    {
        // Raw data (tensor storages): nothing to check.
        return false;
    }
    out.complete &= inner.complete;
    out.findings.extend(inner.findings.into_iter().map(|mut f| {
        f.message = format!("{name}: {}", f.message);
        f.offset = f.offset.zip(base).map(|(o, b)| o + b);
        f
    }));
    code
}

/// Every member of a zip archive scanned as a file of its own (never extracted to disk), each
/// read up to a limit.
fn zip_archive<R: Read + Seek>(source: R, strict: bool, depth: usize) -> Scanned {
    let mut out = Scanned::new(Format::Zip);
    let mut archive = match zip::ZipArchive::new(BufReader::new(source)) {
        Ok(a) => a,
        Err(e) => {
            return Scanned::broken(
                Format::Zip,
                "zip.broken",
                format!("the zip archive cannot be read: {e}"),
            );
        }
    };
    let mut code = 0;
    for i in 0..archive.len() {
        let mut member = match archive.by_index(i) {
            Ok(m) => m,
            Err(e) => {
                out.findings.push(Finding::new(
                    "zip.broken",
                    Severity::Error,
                    format!("member {i} cannot be read: {e}"),
                ));
                out.complete = false;
                continue;
            }
        };
        if member.is_dir() {
            continue;
        }
        let name = member.name().to_string();
        let base = (depth == 0).then(|| member.data_start());
        let mut buf = Vec::new();
        if let Err(e) = (&mut member).take(MEMBER_READ).read_to_end(&mut buf) {
            out.findings.push(Finding::new(
                "zip.broken",
                Severity::Error,
                format!("member `{name}` cannot be read: {e}"),
            ));
            out.complete = false;
            continue;
        }
        let whole = (buf.len() as u64) < MEMBER_READ || member.size() == MEMBER_READ;
        let inner = if depth + 1 >= DEPTH {
            Scanned::unopened()
        } else {
            content(&buf, whole, strict, depth + 1)
        };
        if add_member(&mut out, &name, inner, base) {
            code += 1;
        }
    }
    if code == 0 {
        out.findings.push(Finding::new(
            "zip.no-pickle",
            Severity::Info,
            "a zip archive with no pickle in it",
        ));
    }
    out
}

/// Every entry of a 7z archive scanned as a file of its own as it is expanded (never
/// extracted to disk), within the archive's limits.
fn seven_zip<R: Read + Seek>(source: R, strict: bool, depth: usize) -> Scanned {
    let mut out = Scanned::new(Format::SevenZip);
    let read = containers::seven_zip_entries(source, |name, e| {
        let inner = if depth + 1 >= DEPTH {
            Scanned::unopened()
        } else {
            content(&e.bytes, e.whole, strict, depth + 1)
        };
        add_member(&mut out, name, inner, None);
    });
    match read {
        Ok(true) => {}
        Ok(false) => {
            out.complete = false;
            out.findings.push(Finding::new(
                "7z.limit",
                Severity::Warning,
                format!(
                    "the archive expands past its limits ({} entries, {} MiB, {} MiB an entry); \
                     the rest was not checked",
                    containers::SEVEN_ZIP_ENTRIES,
                    containers::SEVEN_ZIP_TOTAL >> 20,
                    containers::EXPANDED_READ >> 20
                ),
            ));
        }
        Err(e) => {
            out.complete = false;
            out.findings.push(Finding::new(
                "7z.broken",
                Severity::Error,
                format!("the 7z archive cannot be read: {e}"),
            ));
        }
    }
    out
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
