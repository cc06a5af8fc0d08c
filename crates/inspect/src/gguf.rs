//! GGUF read without trusting it: every count and length is checked against the bytes the file
//! has left and against fixed limits before anything is allocated, every sum and product is
//! checked arithmetic, and what llama.cpp's own loader would trip on (CVE-2025-53630's overflowing
//! tensor sizes, CVE-2025-49847's oversized lengths, offsets out of bounds or overlapping) is a
//! finding rather than a crash. Only the header is read: metadata and the tensor table.

use std::collections::HashSet;
use std::io::{self, Read};

use crate::{Finding, Severity};

mod check;
use check::check;

pub const MAGIC: &[u8; 4] = b"GGUF";

/// Longest metadata key, in bytes.
const MAX_KEY: u64 = 1024;
/// Longest metadata string (a chat template is tens of KiB).
const MAX_STRING: u64 = 16 << 20;
/// Most elements in one metadata array (vocabularies reach a few hundred thousand).
const MAX_ARRAY: u64 = 1 << 24;
/// Most array elements in all metadata together: each costs a `Value` in memory, so this
/// bounds what reading a header may take (vocabularies with their scores, types and merges
/// come to a few million).
const MAX_ELEMENTS: u64 = 1 << 23;
/// Most metadata pairs and tensors.
const MAX_KV: u64 = 1 << 16;
const MAX_TENSORS: u64 = 1 << 20;
/// ggml's GGML_MAX_DIMS and GGML_MAX_NAME (the name and its NUL).
const MAX_DIMS: u32 = 4;
const MAX_NAME: usize = 63;
/// More layers than any model has.
const MAX_LAYERS: u64 = 4096;
/// GGUF's default data alignment.
const DEFAULT_ALIGNMENT: u64 = 32;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// An integer that is not negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One entry of the tensor table.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// `ne[0]`, `ne[1]`, …: the first is the row length.
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// From the start of the data section.
    pub offset: u64,
    pub n_elements: u64,
    pub n_bytes: u64,
}

/// What the header says.
#[derive(Debug, Clone, Default)]
pub struct Gguf {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Where the tensor data starts in the file.
    pub data_offset: u64,
    pub file_size: u64,
}

impl Gguf {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(Value::as_str)
    }

    /// `{architecture}.{suffix}`, e.g. `block_count`.
    pub fn arch_value(&self, suffix: &str) -> Option<&Value> {
        let arch = self.architecture()?;
        self.get(&format!("{arch}.{suffix}"))
    }

    pub fn arch_u64(&self, suffix: &str) -> Option<u64> {
        self.arch_value(suffix).and_then(Value::as_u64)
    }

    /// Bytes of all tensors (saturating: a hostile table may claim more than a u64 holds).
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors
            .iter()
            .fold(0u64, |a, t| a.saturating_add(t.n_bytes))
    }
}

/// ggml's block size and bytes per block for a tensor type; `None` for types GGUF files may not
/// hold (unknown or removed).
pub fn type_layout(ggml_type: u32) -> Option<(u64, u64)> {
    Some(match ggml_type {
        0 => (1, 4),     // F32
        1 => (1, 2),     // F16
        2 => (32, 18),   // Q4_0
        3 => (32, 20),   // Q4_1
        6 => (32, 22),   // Q5_0
        7 => (32, 24),   // Q5_1
        8 => (32, 34),   // Q8_0
        9 => (32, 36),   // Q8_1
        10 => (256, 84), // Q2_K
        11 => (256, 110),
        12 => (256, 144), // Q4_K
        13 => (256, 176),
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        16 => (256, 66),  // IQ2_XXS
        17 => (256, 74),
        18 => (256, 98),
        19 => (256, 50), // IQ1_S
        20 => (32, 18),  // IQ4_NL
        21 => (256, 110),
        22 => (256, 82),
        23 => (256, 136), // IQ4_XS
        24 => (1, 1),     // I8
        25 => (1, 2),
        26 => (1, 4),
        27 => (1, 8),
        28 => (1, 8),    // F64
        29 => (256, 56), // IQ1_M
        30 => (1, 2),    // BF16
        34 => (256, 54), // TQ1_0
        35 => (256, 66),
        39 => (32, 17),  // MXFP4
        40 => (64, 36),  // NVFP4
        41 => (128, 18), // Q1_0
        42 => (64, 18),  // Q2_0
        _ => return None,
    })
}

/// ggml's name for a tensor type.
pub fn type_name(ggml_type: u32) -> &'static str {
    const NAMES: [&str; 43] = [
        "F32",
        "F16",
        "Q4_0",
        "Q4_1",
        "Q4_2",
        "Q4_3",
        "Q5_0",
        "Q5_1",
        "Q8_0",
        "Q8_1",
        "Q2_K",
        "Q3_K",
        "Q4_K",
        "Q5_K",
        "Q6_K",
        "Q8_K",
        "IQ2_XXS",
        "IQ2_XS",
        "IQ3_XXS",
        "IQ1_S",
        "IQ4_NL",
        "IQ3_S",
        "IQ2_S",
        "IQ4_XS",
        "I8",
        "I16",
        "I32",
        "I64",
        "F64",
        "IQ1_M",
        "BF16",
        "Q4_0_4_4",
        "Q4_0_4_8",
        "Q4_0_8_8",
        "TQ1_0",
        "TQ2_0",
        "IQ4_NL_4_4",
        "IQ4_NL_4_8",
        "IQ4_NL_8_8",
        "MXFP4",
        "NVFP4",
        "Q1_0",
        "Q2_0",
    ];
    NAMES.get(ggml_type as usize).copied().unwrap_or("unknown")
}

/// The header, what is wrong with it, and whether it could be read to the end. A header that
/// stops making sense (a length past the end of the file) ends the reading with a critical
/// finding; the tensor table and metadata read so far are kept.
#[derive(Debug, Default)]
pub struct Report {
    pub gguf: Gguf,
    pub findings: Vec<Finding>,
    /// The whole header was read.
    pub complete: bool,
}

/// Why reading stopped.
enum Stop {
    /// A finding that leaves nothing after it readable.
    Malformed(Finding),
    Io(io::Error),
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Stop::Malformed(Finding::new(
                "gguf.truncated",
                Severity::Critical,
                "the file ends inside its header",
            ))
        } else {
            Stop::Io(e)
        }
    }
}

/// Reads and checks the header of a GGUF file of `file_size` bytes. Errors only for I/O
/// failures other than a short file (which is a finding).
pub fn read(input: impl Read, file_size: u64) -> io::Result<Report> {
    let mut r = Reader {
        input,
        pos: 0,
        size: file_size,
        elements: 0,
    };
    let mut report = Report {
        gguf: Gguf {
            file_size,
            alignment: DEFAULT_ALIGNMENT,
            ..Gguf::default()
        },
        ..Report::default()
    };
    match header(&mut r, &mut report) {
        Ok(()) => {
            report.complete = true;
            check(&mut report);
        }
        Err(Stop::Malformed(f)) => report.findings.push(f),
        Err(Stop::Io(e)) => return Err(e),
    }
    Ok(report)
}

/// A reader that knows how much of the file is left.
struct Reader<R> {
    input: R,
    pos: u64,
    size: u64,
    /// Array elements read so far.
    elements: u64,
}

impl<R: Read> Reader<R> {
    fn left(&self) -> u64 {
        self.size.saturating_sub(self.pos)
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], Stop> {
        let mut b = [0u8; N];
        self.input.read_exact(&mut b)?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, Stop> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64, Stop> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    /// `n` bytes, once `n` is known to fit in what is left and under `limit`.
    fn take(&mut self, n: u64, limit: u64, what: &str) -> Result<Vec<u8>, Stop> {
        let at = self.pos;
        if n > self.left() {
            return Err(Stop::Malformed(
                Finding::new(
                    "gguf.length",
                    Severity::Critical,
                    format!("{what} claims {n} bytes; the file has {} left", self.left()),
                )
                .at(at),
            ));
        }
        if n > limit {
            return Err(Stop::Malformed(
                Finding::new(
                    "gguf.length",
                    Severity::Critical,
                    format!("{what} of {n} bytes is over the limit of {limit}"),
                )
                .at(at),
            ));
        }
        let mut buf = vec![0u8; n as usize];
        self.input.read_exact(&mut buf)?;
        self.pos += n;
        Ok(buf)
    }

    fn string(&mut self, limit: u64, what: &str) -> Result<Vec<u8>, Stop> {
        let n = self.u64()?;
        self.take(n, limit, what)
    }

    /// Skips to `to` (forward only).
    fn skip_to(&mut self, to: u64) -> Result<(), Stop> {
        let n = to.saturating_sub(self.pos);
        io::copy(&mut (&mut self.input).take(n), &mut io::sink())?;
        self.pos += n;
        Ok(())
    }
}

fn header<R: Read>(r: &mut Reader<R>, report: &mut Report) -> Result<(), Stop> {
    let magic: [u8; 4] = r.bytes()?;
    if &magic != MAGIC {
        return Err(Stop::Malformed(
            Finding::new(
                "gguf.magic",
                Severity::Critical,
                "not a GGUF file (no GGUF magic)",
            )
            .at(0),
        ));
    }
    let version = r.u32()?;
    report.gguf.version = version;
    if !(2..=3).contains(&version) {
        return Err(Stop::Malformed(
            Finding::new(
                "gguf.version",
                Severity::Critical,
                format!("GGUF version {version} is not 2 or 3"),
            )
            .at(4),
        ));
    }
    let n_tensors = r.u64()?;
    let n_kv = r.u64()?;
    // Each pair takes at least a key length, a type and a value (13 bytes); each tensor a
    // name length, a dimension count, one dimension, a type and an offset (32 bytes).
    let room = r.left();
    for (count, per, limit, what, at) in [
        (n_kv, 13, MAX_KV, "metadata pairs", 16),
        (n_tensors, 32, MAX_TENSORS, "tensors", 8),
    ] {
        if count > limit || count.saturating_mul(per) > room {
            return Err(Stop::Malformed(
                Finding::new(
                    "gguf.count",
                    Severity::Critical,
                    format!("{count} {what} cannot fit in the {room} bytes left (limit {limit})"),
                )
                .at(at),
            ));
        }
    }
    let mut keys = HashSet::new();
    for _ in 0..n_kv {
        let at = r.pos;
        let key = r.string(MAX_KEY, "a metadata key")?;
        let key = match String::from_utf8(key) {
            Ok(k) if !k.is_empty() => k,
            Ok(_) => {
                return Err(Stop::Malformed(
                    Finding::new("gguf.key", Severity::Critical, "an empty metadata key").at(at),
                ));
            }
            Err(_) => {
                return Err(Stop::Malformed(
                    Finding::new(
                        "gguf.key",
                        Severity::Critical,
                        "a metadata key is not UTF-8",
                    )
                    .at(at),
                ));
            }
        };
        let kind = r.u32()?;
        let value = value(r, kind, &key, true)?;
        if !keys.insert(key.clone()) {
            report.findings.push(
                Finding::new(
                    "gguf.duplicate-key",
                    Severity::Error,
                    format!("metadata key `{key}` appears twice"),
                )
                .at(at),
            );
        }
        report.gguf.metadata.push((key, value));
    }
    if let Some(a) = report.gguf.get("general.alignment") {
        match a {
            Value::U32(v) if *v > 0 && v.is_power_of_two() => report.gguf.alignment = (*v).into(),
            other => {
                return Err(Stop::Malformed(Finding::new(
                    "gguf.alignment",
                    Severity::Critical,
                    format!("general.alignment must be a power of two (u32), got {other:?}"),
                )));
            }
        }
    }
    for _ in 0..n_tensors {
        let at = r.pos;
        let name = r.string(MAX_KEY, "a tensor name")?;
        let name = String::from_utf8_lossy(&name).into_owned();
        let n_dims = r.u32()?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(Stop::Malformed(
                Finding::new(
                    "gguf.tensor-dims",
                    Severity::Critical,
                    format!("tensor `{name}` has {n_dims} dimensions (1 to {MAX_DIMS})"),
                )
                .at(at),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(r.u64()?);
        }
        let ggml_type = r.u32()?;
        let offset = r.u64()?;
        let t = tensor(name, dims, ggml_type, offset, at, report);
        report.gguf.tensors.push(t);
    }
    let align = report.gguf.alignment;
    let data = r.pos.checked_next_multiple_of(align).unwrap_or(u64::MAX);
    report.gguf.data_offset = data;
    if data > r.size {
        report.findings.push(Finding::new(
            "gguf.bounds",
            Severity::Critical,
            format!("the data section would start at {data}, past the end of the file"),
        ));
    }
    r.skip_to(data.min(r.size))?;
    Ok(())
}

/// One metadata value of type `kind`.
fn value<R: Read>(r: &mut Reader<R>, kind: u32, key: &str, top: bool) -> Result<Value, Stop> {
    let at = r.pos;
    Ok(match kind {
        0 => Value::U8(u8::from_le_bytes(r.bytes()?)),
        1 => Value::I8(i8::from_le_bytes(r.bytes()?)),
        2 => Value::U16(u16::from_le_bytes(r.bytes()?)),
        3 => Value::I16(i16::from_le_bytes(r.bytes()?)),
        4 => Value::U32(r.u32()?),
        5 => Value::I32(i32::from_le_bytes(r.bytes()?)),
        6 => Value::F32(f32::from_le_bytes(r.bytes()?)),
        7 => match r.bytes::<1>()?[0] {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            b => {
                return Err(Stop::Malformed(
                    Finding::new(
                        "gguf.value",
                        Severity::Critical,
                        format!("`{key}`: a bool of value {b}"),
                    )
                    .at(at),
                ));
            }
        },
        8 => {
            let s = r.string(MAX_STRING, &format!("the string `{key}`"))?;
            Value::String(String::from_utf8_lossy(&s).into_owned())
        }
        9 if top => {
            let elem = r.u32()?;
            let n = r.u64()?;
            let min = match elem {
                0 | 1 | 7 => 1,
                2 | 3 => 2,
                4..=6 => 4,
                8 | 10..=12 => 8,
                _ => {
                    return Err(Stop::Malformed(
                        Finding::new(
                            "gguf.value",
                            Severity::Critical,
                            format!("`{key}`: an array of type {elem}"),
                        )
                        .at(at),
                    ));
                }
            };
            r.elements = r.elements.saturating_add(n);
            if n > MAX_ARRAY || n.saturating_mul(min) > r.left() || r.elements > MAX_ELEMENTS {
                return Err(Stop::Malformed(
                    Finding::new(
                        "gguf.length",
                        Severity::Critical,
                        format!(
                            "`{key}`: an array of {n} elements cannot fit in the {} bytes left (limits: {MAX_ARRAY} per array, {MAX_ELEMENTS} in all)",
                            r.left()
                        ),
                    )
                    .at(at),
                ));
            }
            // Grown as elements arrive, not reserved from the count.
            let mut items = Vec::with_capacity(n.min(1 << 12) as usize);
            for _ in 0..n {
                items.push(value(r, elem, key, false)?);
            }
            Value::Array(items)
        }
        10 => Value::U64(r.u64()?),
        11 => Value::I64(i64::from_le_bytes(r.bytes()?)),
        12 => Value::F64(f64::from_le_bytes(r.bytes()?)),
        _ => {
            return Err(Stop::Malformed(
                Finding::new(
                    "gguf.value",
                    Severity::Critical,
                    format!("`{key}`: value type {kind} (nested arrays included) is not GGUF's"),
                )
                .at(at),
            ));
        }
    })
}

/// A tensor table entry with its sizes, recording what is wrong with it.
fn tensor(
    name: String,
    dims: Vec<u64>,
    ggml_type: u32,
    offset: u64,
    at: u64,
    report: &mut Report,
) -> TensorInfo {
    let mut flag = |rule: &'static str, severity, message: String| {
        report
            .findings
            .push(Finding::new(rule, severity, message).at(at));
    };
    if name.is_empty() || name.len() > MAX_NAME {
        flag(
            "gguf.tensor-name",
            Severity::Error,
            format!("tensor name `{name}` must be 1 to {MAX_NAME} bytes"),
        );
    }
    let n_elements = dims
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64);
    let mut n_bytes = 0;
    if dims.contains(&0) {
        flag(
            "gguf.tensor-dims",
            Severity::Critical,
            format!("tensor `{name}` has a dimension of 0: {dims:?}"),
        );
    } else if n_elements.is_none() {
        flag(
            "gguf.tensor-size",
            Severity::Critical,
            format!("tensor `{name}`: the element count of {dims:?} overflows"),
        );
    }
    match type_layout(ggml_type) {
        None => flag(
            "gguf.tensor-type",
            Severity::Critical,
            format!(
                "tensor `{name}` has type {ggml_type} ({}), which GGUF files may not hold",
                type_name(ggml_type)
            ),
        ),
        Some((block, size)) => {
            if dims.first().is_some_and(|&d| d % block != 0) {
                flag(
                    "gguf.tensor-block",
                    Severity::Critical,
                    format!(
                        "tensor `{name}`: rows of {} elements are not whole {} blocks of {block}",
                        dims[0],
                        type_name(ggml_type)
                    ),
                );
            } else if let Some(n) = n_elements {
                match (n / block).checked_mul(size) {
                    Some(b) => n_bytes = b,
                    None => flag(
                        "gguf.tensor-size",
                        Severity::Critical,
                        format!("tensor `{name}`: its byte size overflows"),
                    ),
                }
            }
        }
    }
    TensorInfo {
        name,
        dims,
        ggml_type,
        offset,
        n_elements: n_elements.unwrap_or(0),
        n_bytes,
    }
}
