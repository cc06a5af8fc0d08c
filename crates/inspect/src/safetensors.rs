//! safetensors headers: an 8-byte little-endian length, then that much JSON naming each
//! tensor's dtype, shape and byte range in the data that follows. Checked: the length against
//! the file and a limit, the JSON, known dtypes, shapes whose byte size matches their range
//! (checked arithmetic), ranges inside the data, not overlapping, and leaving no holes.

use serde_json::Value;

use crate::{Finding, Severity};

/// The format's own limit on the header.
const MAX_HEADER: u64 = 100 << 20;

/// Bits per element.
fn dtype_bits(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" | "F8_E8M0" => 8,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "I64" | "U64" | "F64" | "C64" => 64,
        _ => return None,
    })
}

/// Whether `head` (at least 9 bytes) starts like a safetensors file of `size` bytes.
pub fn sniff(head: &[u8], size: u64) -> bool {
    head.len() >= 9 && {
        let n = u64::from_le_bytes([
            head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7],
        ]);
        n >= 2 && n <= size.saturating_sub(8) && head[8] == b'{'
    }
}

/// Checks a header. `header` is the JSON (its length was already checked against the file);
/// `data_len` is what follows it.
pub fn check(header: &[u8], data_len: u64) -> Vec<Finding> {
    let mut found = Vec::new();
    let mut flag = |rule, severity, message: String| {
        found.push(Finding::new(rule, severity, message));
    };
    let doc: Value = match serde_json::from_slice(header) {
        Ok(v) => v,
        Err(e) => {
            flag(
                "safetensors.json",
                Severity::Critical,
                format!("the header is not JSON: {e}"),
            );
            return found;
        }
    };
    let Some(map) = doc.as_object() else {
        flag(
            "safetensors.json",
            Severity::Critical,
            "the header is not a JSON object".into(),
        );
        return found;
    };
    let mut spans = Vec::new();
    for (name, t) in map {
        if name == "__metadata__" {
            if !t
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string))
            {
                flag(
                    "safetensors.metadata",
                    Severity::Error,
                    "__metadata__ must map strings to strings".into(),
                );
            }
            continue;
        }
        let dtype = t.get("dtype").and_then(Value::as_str).unwrap_or("");
        let shape: Option<Vec<u64>> = t
            .get("shape")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(Value::as_u64).collect());
        let offsets: Option<Vec<u64>> = t
            .get("data_offsets")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(Value::as_u64).collect());
        let (Some(bits), Some(shape), Some([begin, end])) = (
            dtype_bits(dtype),
            shape,
            offsets
                .as_deref()
                .and_then(|o| <[u64; 2]>::try_from(o).ok()),
        ) else {
            flag(
                "safetensors.tensor",
                Severity::Critical,
                format!(
                    "tensor `{name}` needs a known dtype, a shape of integers and two data offsets"
                ),
            );
            continue;
        };
        let bytes = shape
            .iter()
            .try_fold(bits, |n, &d| n.checked_mul(d))
            .map(|b| b.div_ceil(8));
        if end < begin || end > data_len {
            flag(
                "safetensors.bounds",
                Severity::Critical,
                format!(
                    "tensor `{name}` spans {begin}..{end}, outside the {data_len} bytes of data"
                ),
            );
            continue;
        }
        if bytes != Some(end - begin) {
            flag(
                "safetensors.size",
                Severity::Critical,
                format!(
                    "tensor `{name}`: {dtype} {shape:?} is {bytes:?} bytes, its range {}",
                    end - begin
                ),
            );
        }
        spans.push((begin, end, name.as_str()));
    }
    spans.sort_unstable();
    let mut covered = 0;
    for &(begin, end, name) in &spans {
        if begin < covered {
            flag(
                "safetensors.overlap",
                Severity::Critical,
                format!("tensor `{name}` overlaps the one before it"),
            );
        } else if begin > covered {
            flag(
                "safetensors.hole",
                Severity::Error,
                format!(
                    "{} bytes before tensor `{name}` belong to no tensor",
                    begin - covered
                ),
            );
        }
        covered = covered.max(end);
    }
    if covered < data_len && !spans.is_empty() {
        flag(
            "safetensors.hole",
            Severity::Error,
            format!(
                "{} bytes after the last tensor belong to no tensor",
                data_len - covered
            ),
        );
    }
    found
}

/// The header's length, or why it cannot be read.
pub fn header_len(head: &[u8; 8], size: u64) -> Result<u64, Finding> {
    let n = u64::from_le_bytes(*head);
    if n > MAX_HEADER || n > size.saturating_sub(8) {
        return Err(Finding::new(
            "safetensors.length",
            Severity::Critical,
            format!("a header of {n} bytes does not fit the file (or the {MAX_HEADER}-byte limit)"),
        )
        .at(0));
    }
    Ok(n)
}
