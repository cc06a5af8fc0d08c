//! Pickles and safetensors written here byte by byte: imports of `os.system`, `subprocess` and
//! `builtins.eval` directly, through the memo, and in broken streams; clean checkpoints; zip
//! containers; malformed safetensors headers.

use smallfirst_inspect::Severity;
use smallfirst_inspect::pickle;
use smallfirst_inspect::scan::{self, Format};

use crate::zip_of;

fn short_str(s: &str) -> Vec<u8> {
    let mut b = vec![0x8c, s.len() as u8];
    b.extend_from_slice(s.as_bytes());
    b
}

/// `os.system("id")` with GLOBAL, protocol 2.
fn os_system() -> Vec<u8> {
    let mut b = b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02R".to_vec();
    b.push(b'.');
    b
}

/// `subprocess.check_output("id")` with STACK_GLOBAL, protocol 4.
fn subprocess_stack_global() -> Vec<u8> {
    let mut b = vec![0x80, 0x04];
    b.extend(short_str("subprocess"));
    b.push(0x94);
    b.extend(short_str("check_output"));
    b.push(0x94);
    b.push(0x93);
    b.extend(short_str("id"));
    b.extend([0x85, b'R', b'.']);
    b
}

/// `builtins.eval("1+1")`: the module and name stored in the memo, popped, fetched back.
fn eval_through_memo() -> Vec<u8> {
    let mut b = vec![0x80, 0x04];
    b.extend(short_str("builtins"));
    b.extend([0x94, b'0']); // memo 0, pop
    b.extend(short_str("eval"));
    b.extend([0x94, b'0']); // memo 1, pop
    b.extend([b'h', 0, b'h', 1, 0x93]);
    b.extend(short_str("1+1"));
    b.extend([0x85, b'R', b'.']);
    b
}

/// `collections.OrderedDict()`, what a state dict starts with.
fn ordered_dict() -> Vec<u8> {
    b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01.".to_vec()
}

fn rules(walk: &pickle::Walk) -> Vec<(&'static str, Severity)> {
    walk.findings.iter().map(|f| (f.rule, f.severity)).collect()
}

#[test]
fn dangerous_imports_are_critical_however_they_are_spelled() {
    for (what, bytes, global) in [
        ("GLOBAL", os_system(), "os.system"),
        (
            "STACK_GLOBAL",
            subprocess_stack_global(),
            "subprocess.check_output",
        ),
        ("memo", eval_through_memo(), "builtins.eval"),
    ] {
        let walk = pickle::walk(&bytes, 0, false);
        assert!(walk.complete, "{what}");
        let found = walk
            .findings
            .iter()
            .find(|f| f.rule == "pickle.global-denied")
            .unwrap_or_else(|| panic!("{what}: {:?}", walk.findings));
        assert_eq!(found.severity, Severity::Critical);
        assert!(found.message.contains(global), "{what}: {}", found.message);
    }
}

#[test]
fn a_broken_stream_is_read_up_to_where_it_breaks() {
    let mut bytes = os_system();
    bytes.pop(); // no STOP
    bytes.extend([0xff, 0xfe]);
    let walk = pickle::walk(&bytes, 0, false);
    let r = rules(&walk);
    assert!(
        r.contains(&("pickle.global-denied", Severity::Critical)),
        "{r:?}"
    );
    assert!(r.contains(&("pickle.broken", Severity::Warning)), "{r:?}");
    // Cut at every point: never a panic, and a cut past the import still finds it.
    let whole = subprocess_stack_global();
    for cut in 0..whole.len() {
        let walk = pickle::walk(&whole[..cut], 0, false);
        assert!(!walk.complete);
    }
}

#[test]
fn a_clean_checkpoint_pickle_passes_and_unknown_globals_are_never_clean() {
    let walk = pickle::walk(&ordered_dict(), 0, true);
    assert!(
        walk.complete && walk.findings.is_empty(),
        "{:?}",
        walk.findings
    );
    let odd = b"\x80\x02cnumpy.random\nRandomState\nq\x00)Rq\x01.".to_vec();
    let walk = pickle::walk(&odd, 0, false);
    assert_eq!(rules(&walk), [("pickle.global-unknown", Severity::Error)]);
    assert!(
        walk.findings[0]
            .message
            .contains("numpy.random.RandomState")
    );
    assert_eq!(
        rules(&pickle::walk(&odd, 0, true)),
        [("pickle.global-unknown", Severity::Critical)]
    );
}

#[test]
fn callables_other_scanners_missed_are_critical() {
    for global in [
        "cProfile\nrun",
        "profile\nrun",
        "numpy.testing._private.utils\nrunstring",
        "_posixsubprocess\nfork_exec",
        "torch.serialization\nload",
        "pydoc\npipepager",
        "_operator\nmethodcaller",
        "_io\nopen",
        "pkgutil\nresolve_name",
        "lib2to3.pgen2.grammar\nGrammar.loads",
        // The `os` module reached as an attribute of another.
        "logging\nos",
    ] {
        let bytes = format!("\u{80}\u{2}c{global}\n).");
        let bytes: Vec<u8> = bytes.chars().map(|c| c as u8).collect();
        let walk = pickle::walk(&bytes, 0, false);
        assert!(
            rules(&walk).contains(&("pickle.global-denied", Severity::Critical)),
            "{global}: {:?}",
            walk.findings
        );
    }
}

fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("writes");
    path
}

#[test]
fn files_are_sniffed_by_content_and_zip_members_are_walked() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A pickle named like a GGUF is read as a pickle.
    let p = write(dir.path(), "model.gguf", &os_system());
    let r = scan::scan_file(&p, false).expect("scans");
    assert_eq!(r.format, Format::Pickle);
    assert!(r.complete && r.worst() == Some(Severity::Critical));
    // PyTorch's zip layout: the pickle member is walked, the tensor data is not.
    let evil = zip_of(&[
        ("archive/data.pkl", eval_through_memo()),
        ("archive/data/0", vec![0; 64]),
    ]);
    let p = write(dir.path(), "pytorch_model.bin", &evil);
    let r = scan::scan_file(&p, false).expect("scans");
    assert_eq!(r.format, Format::Zip);
    assert!(
        r.findings
            .iter()
            .any(|f| f.rule == "pickle.global-denied" && f.message.contains("archive/data.pkl")),
        "{:?}",
        r.findings
    );
    let clean = zip_of(&[
        ("archive/data.pkl", ordered_dict()),
        ("archive/version", b"3\n".to_vec()),
    ]);
    let p = write(dir.path(), "clean.pt", &clean);
    let r = scan::scan_file(&p, true).expect("scans");
    assert!(r.is_clean(), "{:?}", r.findings);
}

fn safetensors(header: &str, data: usize) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend(std::iter::repeat_n(0u8, data));
    b
}

#[test]
fn safetensors_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scan = |name: &str, bytes: Vec<u8>| {
        let p = write(dir.path(), name, &bytes);
        scan::scan_file(&p, false).expect("scans")
    };
    let ok = scan(
        "ok.safetensors",
        safetensors(
            r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"BF16","shape":[4],"data_offsets":[16,24]}}"#,
            24,
        ),
    );
    assert_eq!(ok.format, Format::Safetensors);
    assert!(ok.is_clean(), "{:?}", ok.findings);
    for (header, data, rule) in [
        (
            r#"{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,64]}}"#,
            16,
            "safetensors.bounds",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#,
            16,
            "safetensors.size",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}}"#,
            16,
            "safetensors.size",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
            16,
            "safetensors.overlap",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
            16,
            "safetensors.hole",
        ),
        (
            r#"{"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}"#,
            8,
            "safetensors.tensor",
        ),
        (r#"{"a": [1, 2"#, 8, "safetensors.json"),
    ] {
        let r = scan("bad.safetensors", safetensors(header, data));
        assert!(
            r.findings.iter().any(|f| f.rule == rule),
            "{header}: {:?}",
            r.findings
        );
    }
    let mut huge = safetensors(r#"{"a":1}"#, 0);
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let r = scan("huge.safetensors", huge);
    assert!(
        r.format == Format::Unknown || r.findings.iter().any(|f| f.rule == "safetensors.length")
    );
}

#[test]
fn twenty_thousand_mutated_pickles_never_panic() {
    use crate::mutate::{Rng, mutate};
    let mut rng = Rng(0x0BAD_5EED_0000_0007);
    for base in [
        os_system(),
        subprocess_stack_global(),
        eval_through_memo(),
        ordered_dict(),
    ] {
        for _ in 0..5_000 {
            let b = mutate(&mut rng, &base, base.len());
            let walk = pickle::walk(&b, 0, true);
            assert!(walk.consumed <= b.len());
        }
    }
}

#[test]
fn imports_the_walk_cannot_follow_or_that_hide_their_name_are_critical() {
    let critical = |bytes: &[u8], what: &str| {
        let walk = pickle::walk(bytes, 0, false);
        assert!(
            walk.findings
                .iter()
                .any(|f| f.severity == Severity::Critical),
            "{what}: {:?}",
            walk.findings
        );
    };
    // STACK_GLOBAL on strings Python decodes from escapes: `os` spelled `\x6fs`.
    let mut b = b"\x80\x02S'\\x6fs'\nS'system'\n".to_vec();
    b.extend([0x93, b'.']);
    critical(&b, "escaped STRING");
    // A module name built at load time: str(b'os', 'ascii').
    let mut b = b"\x80\x04cbuiltins\nstr\nC\x02osX\x05\x00\x00\x00ascii\x86R".to_vec();
    b.extend(short_str("system"));
    b.extend([0x93, b'.']);
    critical(&b, "computed module");
    // The copyreg extension registry.
    critical(b"\x80\x02\x82\x01).", "EXT1");
    // Dotted names resolve through attributes: logging.os.system.
    let mut b = vec![0x80, 0x04];
    b.extend(short_str("logging"));
    b.extend(short_str("os.system"));
    b.extend([0x93, b'.']);
    critical(&b, "dotted name");
    // Python 2 names, renamed on load.
    critical(b"\x80\x02c__builtin__\nglobals\n).", "__builtin__.globals");
    critical(b"\x80\x02ccPickle\nloads\n).", "cPickle.loads");
}

#[test]
fn a_second_pickle_without_proto_is_walked_too() {
    // Whatever opcode it starts with: NONE, POP, then the import.
    let mut b = ordered_dict();
    b.extend(b"N0cos\nsystem\n(S'id'\ntR.");
    let walk = pickle::walk(&b, 0, false);
    assert!(
        walk.findings
            .iter()
            .any(|f| f.rule == "pickle.global-denied"),
        "{:?}",
        walk.findings
    );
}

#[test]
fn a_safetensors_header_whose_length_looks_like_proto_is_read_as_safetensors() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 640 bytes of header: its length starts 0x80 0x02, as a protocol 2 pickle would.
    let mut header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#.to_string();
    while header.len() < 640 {
        header.push(' ');
    }
    let p = write(dir.path(), "w.safetensors", &safetensors(&header, 8));
    let r = scan::scan_file(&p, false).expect("scans");
    assert_eq!(r.format, Format::Safetensors);
    assert!(r.is_clean(), "{:?}", r.findings);
}

#[test]
fn a_protocol_0_pickle_is_sniffed_by_walking_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(dir.path(), "old.pkl", b"cos\nsystem\n(S'id'\ntR.");
    let r = scan::scan_file(&p, false).expect("scans");
    assert_eq!(r.format, Format::Pickle);
    assert!(
        r.findings.iter().any(|f| f.rule == "pickle.global-denied"),
        "{:?}",
        r.findings
    );
    // Opening with other opcodes, or with FRAME and no PROTO: still walked.
    for body in [
        &b"S'x'\n0cos\nsystem\n(S'id'\ntR."[..],
        b"N0cos\nsystem\n(S'id'\ntR.",
        b"\x95\x10\x00\x00\x00\x00\x00\x00\x00cos\nsystem\n)R.",
    ] {
        let p = write(dir.path(), "odd.pkl", body);
        let r = scan::scan_file(&p, false).expect("scans");
        assert_eq!(r.format, Format::Pickle, "{body:?}");
        assert_eq!(
            r.worst(),
            Some(Severity::Critical),
            "{body:?}: {:?}",
            r.findings
        );
    }
    // Data after a complete pickle (raw tensor bytes) is not read as one.
    let mut with_data = ordered_dict();
    with_data.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    let p = write(dir.path(), "legacy.pt", &with_data);
    let r = scan::scan_file(&p, false).expect("scans");
    assert!(r.is_clean(), "{:?}", r.findings);
    // Text that merely starts like one is not a pickle.
    let p = write(dir.path(), "notes.txt", b"(this is a note)\n");
    let r = scan::scan_file(&p, false).expect("scans");
    assert_eq!(r.format, Format::Unknown);
}
