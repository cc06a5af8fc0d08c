//! Pickles inside wrappers: NumPy `.npy` object arrays and `.npz` archives, gzip, bzip2, xz
//! and 7z; each opened, bounded, and what it holds scanned.

use std::io::Write;

use smallfirst_inspect::Severity;

use crate::zip_of;
use smallfirst_inspect::scan::{self, Format};

/// `os.system("id")`, protocol 2.
fn evil() -> Vec<u8> {
    b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02R.".to_vec()
}

fn npy(descr: &str, data: &[u8]) -> Vec<u8> {
    let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (1,), }}\n");
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn scan(name: &str, bytes: &[u8]) -> scan::FileReport {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).expect("write");
    scan::scan_file(&p, false).expect("scans")
}

fn denied(r: &scan::FileReport) -> bool {
    r.findings
        .iter()
        .any(|f| f.rule == "pickle.global-denied" && f.severity == Severity::Critical)
}

#[test]
fn an_object_npy_is_a_pickle_and_a_numeric_one_is_clean() {
    let r = scan("evil.npy", &npy("|O", &evil()));
    assert_eq!(r.format, Format::Npy);
    assert!(denied(&r), "{:?}", r.findings);
    let r = scan("floats.npy", &npy("<f4", &[0, 0, 128, 63]));
    assert_eq!(r.format, Format::Npy);
    assert!(r.is_clean(), "{:?}", r.findings);
    let r = scan("bad.npy", b"\x93NUMPY\x01\x00\xff\x00{'descr'");
    assert_eq!(r.worst(), Some(Severity::Error));
}

#[test]
fn npz_members_are_scanned_by_content() {
    let r = scan(
        "arrays.npz",
        &zip_of(&[
            ("a.npy", npy("<f4", &[0; 4])),
            ("b.npy", npy("|O", &evil())),
        ]),
    );
    assert_eq!(r.format, Format::Zip);
    assert!(denied(&r), "{:?}", r.findings);
    assert!(r.findings.iter().any(|f| f.message.starts_with("b.npy: ")));
    let r = scan("floats.npz", &zip_of(&[("a.npy", npy("<f4", &[0; 4]))]));
    assert!(r.is_clean(), "{:?}", r.findings);
}

#[test]
fn compressed_pickles_are_expanded_and_walked() {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&evil()).expect("write");
    let gz = gz.finish().expect("gzip");
    let r = scan("model.pkl.gz", &gz);
    assert_eq!(r.format, Format::Gzip);
    assert!(denied(&r), "{:?}", r.findings);
    assert!(
        r.findings
            .iter()
            .any(|f| f.message.starts_with("inside gzip: "))
    );

    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    bz.write_all(&evil()).expect("write");
    let r = scan("model.pkl.bz2", &bz.finish().expect("bzip2"));
    assert_eq!(r.format, Format::Bzip2);
    assert!(denied(&r), "{:?}", r.findings);

    // gzip of a zip of a pickle: containers inside containers.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&zip_of(&[("archive/data.pkl", evil())]))
        .expect("write");
    let r = scan("nested.gz", &gz.finish().expect("gzip"));
    assert!(denied(&r), "{:?}", r.findings);

    let r = scan(
        "broken.gz",
        &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xff],
    );
    assert!(!r.complete);
    assert!(r.worst() >= Some(Severity::Error), "{:?}", r.findings);
}

#[test]
fn xz_wrapped_pickles_are_walked() {
    let mut xz =
        lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::default()).expect("xz writer");
    xz.write_all(&evil()).expect("write");
    let r = scan("model.pkl.xz", &xz.finish().expect("xz"));
    assert_eq!(r.format, Format::Xz);
    assert!(denied(&r), "{:?}", r.findings);
}

#[test]
fn seven_zip_entries_are_scanned() {
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut w = sevenz_rust2::ArchiveWriter::new(&mut out).expect("7z writer");
        w.push_archive_entry(
            sevenz_rust2::ArchiveEntry::new_file("archive/data.pkl"),
            Some(&evil()[..]),
        )
        .expect("entry");
        w.push_archive_entry(
            sevenz_rust2::ArchiveEntry::new_file("archive/version"),
            Some(&b"3\n"[..]),
        )
        .expect("entry");
        w.finish().expect("finish");
    }
    let r = scan("model.7z", &out.into_inner());
    assert_eq!(r.format, Format::SevenZip);
    assert!(denied(&r), "{:?}", r.findings);
    assert!(
        r.findings
            .iter()
            .any(|f| f.message.starts_with("archive/data.pkl: "))
    );
}
