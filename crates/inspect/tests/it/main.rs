//! The GGUF checks against files written here: a clean one, then one file per rule, each the
//! clean file with one thing broken (the CVE classes among them), and the shipped models.

use std::path::PathBuf;

use smallfirst_inspect::gguf::{self, Value};
use smallfirst_inspect::scan::{self, Format};
use smallfirst_inspect::{Finding, Severity};

mod fit;
mod formats;
mod mutate;
mod wrappers;
mod writer;

use writer::{Gguf, Kv};

/// A zip archive of `members`, stored (as PyTorch writes its checkpoints).
pub fn zip_of(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
    use std::io::Write;
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut out);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, bytes) in members {
            z.start_file(*name, opts).expect("member");
            z.write_all(bytes).expect("writes");
        }
        z.finish().expect("finishes");
    }
    out.into_inner()
}

/// The rules a file broke, most severe first, with the findings for messages.
fn rules(bytes: &[u8]) -> (Vec<&'static str>, Vec<Finding>, bool) {
    let report = gguf::read(bytes, bytes.len() as u64).expect("reads from memory");
    let mut findings = report.findings;
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    (
        findings.iter().map(|f| f.rule).collect(),
        findings,
        report.complete,
    )
}

fn assert_rule(bytes: &[u8], rule: &str, severity: Severity) {
    let (rules, findings, _) = rules(bytes);
    assert!(
        findings
            .iter()
            .any(|f| f.rule == rule && f.severity == severity),
        "expected {rule} ({severity}), got {findings:#?}"
    );
    assert!(!rules.is_empty());
}

#[test]
fn a_clean_file_has_no_findings_and_reads_whole() {
    let bytes = Gguf::clean().bytes();
    let report = gguf::read(&bytes[..], bytes.len() as u64).expect("reads");
    assert!(report.complete);
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    let g = report.gguf;
    assert_eq!(g.version, 3);
    assert_eq!(g.architecture(), Some("llama"));
    assert_eq!(g.arch_u64("block_count"), Some(2));
    assert_eq!(g.tensors.len(), 4);
    assert_eq!(g.tensors[0].n_bytes, 8 * 4 * 4);
    assert_eq!(g.data_offset % 32, 0);
    assert_eq!(
        g.get("tokenizer.ggml.tokens")
            .and_then(Value::as_array)
            .map(<[Value]>::len),
        Some(4)
    );
}

#[test]
fn the_header_itself() {
    let mut g = Gguf::clean();
    g.magic = *b"GGML";
    assert_rule(&g.bytes(), "gguf.magic", Severity::Critical);
    for v in [1, 4, u32::MAX] {
        let mut g = Gguf::clean();
        g.version = v;
        assert_rule(&g.bytes(), "gguf.version", Severity::Critical);
    }
    let mut g = Gguf::clean();
    g.tensor_count = Some(u64::MAX);
    assert_rule(&g.bytes(), "gguf.count", Severity::Critical);
    let mut g = Gguf::clean();
    g.kv_count = Some(1 << 40);
    assert_rule(&g.bytes(), "gguf.count", Severity::Critical);
    // Cut anywhere in the header: truncated, never a panic.
    let whole = Gguf::clean().bytes();
    let header = Gguf::clean().header_len();
    for cut in 0..header {
        let (rules, _, complete) = rules(&whole[..cut]);
        assert!(!complete, "cut at {cut}");
        assert!(!rules.is_empty(), "cut at {cut}");
    }
}

#[test]
fn lengths_past_the_file_or_the_limits() {
    // CVE-2025-49847's class: a length that makes a loader allocate or read past the file.
    let mut g = Gguf::clean();
    g.kv.push(Kv::raw_string_len("general.name", u64::MAX));
    assert_rule(&g.bytes(), "gguf.length", Severity::Critical);
    let mut g = Gguf::clean();
    g.kv.push(Kv::raw_array_len("tokenizer.ggml.merges", 8, 1 << 60));
    assert_rule(&g.bytes(), "gguf.length", Severity::Critical);
    let mut g = Gguf::clean();
    g.kv.push(Kv::raw_key_len(1 << 32));
    assert_rule(&g.bytes(), "gguf.length", Severity::Critical);
}

#[test]
fn values_of_no_gguf_type() {
    let mut g = Gguf::clean();
    g.kv.push(Kv::raw("general.x", 13, vec![0; 8]));
    assert_rule(&g.bytes(), "gguf.value", Severity::Critical);
    let mut g = Gguf::clean();
    g.kv.push(Kv::raw_nested_array("general.x"));
    assert_rule(&g.bytes(), "gguf.value", Severity::Critical);
    let mut g = Gguf::clean();
    g.kv.push(Kv::raw("general.flag", 7, vec![2]));
    assert_rule(&g.bytes(), "gguf.value", Severity::Critical);
    let mut g = Gguf::clean();
    g.kv.push(Kv::raw_key(""));
    assert_rule(&g.bytes(), "gguf.key", Severity::Critical);
    let mut g = Gguf::clean();
    g.kv.push(Kv::u32("general.alignment", 48));
    assert_rule(&g.bytes(), "gguf.alignment", Severity::Critical);
}

#[test]
fn duplicate_keys_and_tensors() {
    let mut g = Gguf::clean();
    g.kv.push(Kv::string("general.architecture", "llama"));
    assert_rule(&g.bytes(), "gguf.duplicate-key", Severity::Error);
    let mut g = Gguf::clean();
    let again = g.tensors[1].clone();
    g.tensors.push(again);
    assert_rule(&g.bytes(), "gguf.duplicate-tensor", Severity::Critical);
}

#[test]
fn tensor_shapes_and_types() {
    let mut g = Gguf::clean();
    g.tensors[1].dims = vec![8, 1, 1, 1, 1];
    assert_rule(&g.bytes(), "gguf.tensor-dims", Severity::Critical);
    let mut g = Gguf::clean();
    g.tensors[1].dims = vec![8, 0];
    assert_rule(&g.bytes(), "gguf.tensor-dims", Severity::Critical);
    // CVE-2025-53630's class: an element count that overflows 64 bits.
    let mut g = Gguf::clean();
    g.tensors[1].dims = vec![1 << 32, 1 << 32, 16];
    assert_rule(&g.bytes(), "gguf.tensor-size", Severity::Critical);
    for t in [4, 31, 99] {
        let mut g = Gguf::clean();
        g.tensors[1].ggml_type = t;
        assert_rule(&g.bytes(), "gguf.tensor-type", Severity::Critical);
    }
    let mut g = Gguf::clean();
    g.tensors[1].ggml_type = 2; // Q4_0: blocks of 32
    g.tensors[1].dims = vec![33, 1];
    assert_rule(&g.bytes(), "gguf.tensor-block", Severity::Critical);
    let mut g = Gguf::clean();
    g.tensors[1].name = "x".repeat(64);
    assert_rule(&g.bytes(), "gguf.tensor-name", Severity::Error);
}

#[test]
fn tensor_placement() {
    let mut g = Gguf::clean();
    g.tensors[1].offset += 4;
    assert_rule(&g.bytes(), "gguf.tensor-align", Severity::Error);
    let mut g = Gguf::clean();
    g.tensors[3].offset = 1 << 40;
    assert_rule(&g.bytes(), "gguf.tensor-bounds", Severity::Critical);
    let mut g = Gguf::clean();
    g.tensors[3].offset = u64::MAX - 31;
    assert_rule(&g.bytes(), "gguf.tensor-bounds", Severity::Critical);
    let mut g = Gguf::clean();
    g.tensors[2].offset = g.tensors[1].offset;
    assert_rule(&g.bytes(), "gguf.tensor-overlap", Severity::Critical);
}

#[test]
fn vocabulary_and_special_tokens() {
    let mut g = Gguf::clean();
    g.set(Kv::f32_array("tokenizer.ggml.scores", &[0.0; 3]));
    assert_rule(&g.bytes(), "gguf.vocab", Severity::Critical);
    let mut g = Gguf::clean();
    g.tensors[0].dims = vec![8, 5];
    g.data_pad(8 * 4);
    assert_rule(&g.bytes(), "gguf.vocab", Severity::Critical);
    let mut g = Gguf::clean();
    g.set(Kv::u32("tokenizer.ggml.eos_token_id", 4));
    assert_rule(&g.bytes(), "gguf.special-token", Severity::Critical);
    let mut g = Gguf::clean();
    g.set(Kv::i32("tokenizer.ggml.padding_token_id", -7));
    assert_rule(&g.bytes(), "gguf.special-token", Severity::Critical);
    // Arrays of the right length but the wrong element type: scores as integers, token types
    // as floats, tokens as numbers.
    let mut g = Gguf::clean();
    g.set(Kv::i32_array("tokenizer.ggml.scores", &[0; 4]));
    assert_rule(&g.bytes(), "gguf.vocab", Severity::Error);
    let mut g = Gguf::clean();
    g.set(Kv::f32_array("tokenizer.ggml.token_type", &[1.0; 4]));
    assert_rule(&g.bytes(), "gguf.vocab", Severity::Error);
    let mut g = Gguf::clean();
    g.set(Kv::i32_array("tokenizer.ggml.tokens", &[1, 2, 3, 4]));
    assert_rule(&g.bytes(), "gguf.vocab", Severity::Error);
}

#[test]
fn layers() {
    let mut g = Gguf::clean();
    g.set(Kv::u32("llama.block_count", 0));
    assert_rule(&g.bytes(), "gguf.layers", Severity::Error);
    let mut g = Gguf::clean();
    g.tensors[3].name = "blk.7.attn_q.weight".into();
    assert_rule(&g.bytes(), "gguf.layers", Severity::Critical);
}

#[test]
fn scan_sniffs_content_and_hashes_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("model.bin");
    let bytes = Gguf::clean().bytes();
    std::fs::write(&path, &bytes).expect("writes");
    let report = scan::scan_file(&path, false).expect("scans");
    assert_eq!(report.format, Format::Gguf, "by content, not by extension");
    assert!(report.is_clean(), "{:#?}", report.findings);
    assert_eq!(report.size, bytes.len() as u64);
    assert_eq!(report.sha256, writer::sha256(&bytes));
    let other = dir.path().join("notes.gguf");
    std::fs::write(&other, b"hello, world").expect("writes");
    let report = scan::scan_file(&other, false).expect("scans");
    assert_eq!(report.format, Format::Unknown);
    assert!(!report.complete && !report.is_clean());
}

/// The models this project ships pass, when they are on this machine.
#[test]
fn shipped_models_are_clean() {
    let dirs = [
        std::env::var_os("SMALLFIRST_TEST_MODEL"),
        std::env::var_os("SMALLFIRST_UPSTREAM_MODEL"),
    ];
    let paths: Vec<PathBuf> = dirs.into_iter().flatten().map(PathBuf::from).collect();
    for path in paths {
        let report = scan::check_gguf(&path).expect("reads");
        assert!(report.complete, "{}", path.display());
        assert!(
            report
                .findings
                .iter()
                .all(|f| f.severity <= Severity::Warning),
            "{}: {:#?}",
            path.display(),
            report.findings
        );
        assert!(!report.gguf.tensors.is_empty());
    }
}
