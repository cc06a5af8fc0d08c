//! Downloads from a loopback HTTP/1.1 server that honours `Range`, can redirect with an
//! `X-Linked-Etag` pin as Hugging Face does, and records what it was asked.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use smallfirst_models::{ModelError, PullOptions};

use crate::{gguf_header_with, model_bytes, puller, sha};

#[derive(Clone, Default)]
struct Behaviour {
    /// Answer `/resolve/...` with a 302 to `/file`, carrying this pin.
    redirect_pin: Option<String>,
    /// Answer ranges with 200 and the whole body, as some servers do.
    ignore_range: bool,
    /// Send the body without a Content-Length, then keep sending forever.
    endless: bool,
    /// Send half the body, then nothing (the connection held open).
    stall: bool,
}

struct Server {
    base: String,
    ranges: Arc<Mutex<Vec<Option<String>>>>,
}

fn serve(body: Vec<u8>, behaviour: Behaviour) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let seen = ranges.clone();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = answer(stream, &body, &behaviour, &seen);
        }
    });
    Server { base, ranges }
}

fn answer(
    mut stream: TcpStream,
    body: &[u8],
    b: &Behaviour,
    seen: &Mutex<Vec<Option<String>>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("range")
        {
            range = Some(v.trim().to_string());
        }
    }
    if path.contains("/resolve/") {
        let pin = b
            .redirect_pin
            .as_ref()
            .map(|p| format!("X-Linked-Etag: \"{p}\"\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "HTTP/1.1 302 Found\r\nLocation: /file\r\n{pin}Content-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return Ok(());
    }
    if let Ok(mut s) = seen.lock() {
        s.push(range.clone());
    }
    if path == "/missing" {
        write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return Ok(());
    }
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok())
        .filter(|_| !b.ignore_range);
    if b.endless {
        write!(stream, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
        stream.write_all(body)?;
        let chunk = vec![0u8; 1 << 16];
        loop {
            stream.write_all(&chunk)?;
        }
    }
    if b.stall {
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        stream.write_all(&body[..body.len() / 2])?;
        std::thread::sleep(std::time::Duration::from_secs(10));
        return Ok(());
    }
    match start {
        Some(s) if s >= body.len() => {
            write!(
                stream,
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
        }
        Some(s) => {
            write!(
                stream,
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {s}-{}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len() - 1,
                body.len(),
                body.len() - s
            )?;
            stream.write_all(&body[s..])?;
        }
        None => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            stream.write_all(body)?;
        }
    }
    // Drain anything left so the client sees a clean close.
    let _ = reader.read(&mut [0u8; 1]);
    Ok(())
}

fn pin(sha256: &str) -> PullOptions {
    PullOptions {
        name: Some("m".into()),
        sha256: Some(sha256.into()),
        ..PullOptions::default()
    }
}

#[test]
fn a_download_that_never_ends_stops_at_the_size_limit_and_leaves_nothing() {
    let server = serve(
        model_bytes(1_000, 7),
        Behaviour {
            endless: true,
            ..Behaviour::default()
        },
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let options = PullOptions {
        max_size: Some(1 << 20),
        ..pin(&"a".repeat(64))
    };
    let err = puller(dir.path())
        .pull(&format!("{}/file", server.base), &options)
        .expect_err("too large");
    assert!(
        matches!(err, ModelError::TooLarge { limit, .. } if limit == 1 << 20),
        "{err}"
    );
    assert!(!dir.path().join(".partial/m.gguf.part").exists());
    assert!(!dir.path().join("m.gguf").exists());
}

#[test]
fn a_server_that_stops_sending_is_given_up_on() {
    let server = serve(
        model_bytes(200_000, 8),
        Behaviour {
            stall: true,
            ..Behaviour::default()
        },
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let options = PullOptions {
        idle_timeout: Some(std::time::Duration::from_millis(500)),
        ..pin(&"a".repeat(64))
    };
    let started = std::time::Instant::now();
    let err = puller(dir.path())
        .pull(&format!("{}/file", server.base), &options)
        .expect_err("stalled");
    assert!(matches!(err, ModelError::Stalled { .. }), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(!dir.path().join(".partial/m.gguf.part").exists());
}

#[test]
fn names_with_paths_are_refused_before_anything_is_written() {
    let server = serve(model_bytes(1_000, 9), Behaviour::default());
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["../../x", "/abs/path", "a/b", ".."] {
        let options = PullOptions {
            name: Some(name.into()),
            ..pin(&"a".repeat(64))
        };
        let err = puller(dir.path())
            .pull(&format!("{}/file", server.base), &options)
            .expect_err("refused");
        assert!(matches!(err, ModelError::BadName { .. }), "{name}: {err}");
        assert!(err.hint().is_some());
    }
    assert_eq!(
        server.ranges.lock().map(|r| r.len()).unwrap_or(1),
        0,
        "nothing was fetched"
    );
}

#[test]
fn a_file_with_a_critical_finding_is_refused_unless_allowed() {
    // A GGUF whose chat template reaches for the Python runtime.
    let body = gguf_header_with(Some(
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    ));
    let server = serve(body.clone(), Behaviour::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let err = puller(dir.path())
        .pull(&format!("{}/file", server.base), &pin(&sha(&body)))
        .expect_err("unsafe");
    assert!(matches!(err, ModelError::Unsafe { .. }), "{err}");
    assert!(err.to_string().contains("template.code"), "{err}");
    assert!(!dir.path().join("m.gguf").exists());
    assert!(!dir.path().join(".partial/m.gguf.part").exists());
    let allowed = PullOptions {
        allow_unsafe: true,
        ..pin(&sha(&body))
    };
    let pulled = puller(dir.path())
        .pull(&format!("{}/file", server.base), &allowed)
        .expect("added when allowed");
    assert!(pulled.path.exists());
}

#[test]
fn url_pull_verifies_and_locks() {
    let body = model_bytes(300_000, 1);
    let server = serve(body.clone(), Behaviour::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let p = puller(dir.path());
    let pulled = p
        .pull(&format!("{}/file", server.base), &pin(&sha(&body)))
        .expect("pulls");
    assert_eq!(std::fs::read(&pulled.path).expect("cached"), body);
    assert_eq!(pulled.entry.sha256, sha(&body));
    assert_eq!(
        p.cache().get("m").expect("lock").map(|(_, e)| e.size),
        Some(body.len() as u64)
    );
    assert_eq!(
        server.ranges.lock().map(|r| r.clone()).unwrap_or_default(),
        vec![None]
    );
}

#[test]
fn interrupted_download_resumes_with_a_range_request() {
    let body = model_bytes(500_000, 2);
    let server = serve(body.clone(), Behaviour::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let partial = dir.path().join(".partial");
    std::fs::create_dir_all(&partial).expect("mkdir");
    std::fs::write(partial.join("m.gguf.part"), &body[..123_456]).expect("half");
    let pulled = puller(dir.path())
        .pull(&format!("{}/file", server.base), &pin(&sha(&body)))
        .expect("resumes");
    assert_eq!(std::fs::read(&pulled.path).expect("cached"), body);
    let ranges = server.ranges.lock().map(|r| r.clone()).unwrap_or_default();
    assert_eq!(ranges, vec![Some("bytes=123456-".to_string())]);
    assert!(!partial.join("m.gguf.part").exists());
}

#[test]
fn server_that_ignores_range_restarts_cleanly() {
    let body = model_bytes(50_000, 3);
    let server = serve(
        body.clone(),
        Behaviour {
            ignore_range: true,
            ..Behaviour::default()
        },
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let partial = dir.path().join(".partial");
    std::fs::create_dir_all(&partial).expect("mkdir");
    std::fs::write(partial.join("m.gguf.part"), &body[..1000]).expect("part");
    let pulled = puller(dir.path())
        .pull(&format!("{}/file", server.base), &pin(&sha(&body)))
        .expect("pulls");
    assert_eq!(std::fs::read(&pulled.path).expect("cached"), body);
}

#[test]
fn sha_mismatch_names_both_hashes_and_deletes_the_partial() {
    let body = model_bytes(10_000, 4);
    let server = serve(body.clone(), Behaviour::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = "0".repeat(64);
    let err = puller(dir.path())
        .pull(&format!("{}/file", server.base), &pin(&wrong))
        .expect_err("mismatch");
    let msg = err.to_string();
    assert!(matches!(err, ModelError::ShaMismatch { .. }), "{msg}");
    assert!(msg.contains(&wrong) && msg.contains(&sha(&body)), "{msg}");
    assert!(!dir.path().join(".partial/m.gguf.part").exists());
    assert!(!dir.path().join("m.gguf").exists());
}

#[test]
fn pin_from_x_linked_etag_on_the_redirect() {
    let body = model_bytes(20_000, 5);
    let server = serve(
        body.clone(),
        Behaviour {
            redirect_pin: Some(sha(&body)),
            ..Behaviour::default()
        },
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("{}/resolve/main/Tiny-Model.Q4_0.gguf", server.base);
    let pulled = puller(dir.path())
        .pull(&url, &PullOptions::default())
        .expect("pulls");
    assert_eq!(pulled.name, "Tiny-Model.Q4_0");
    assert_eq!(pulled.entry.sha256, sha(&body));
}

#[test]
fn no_pin_at_all_is_refused_and_cleaned_up() {
    let body = model_bytes(1_000, 6);
    let server = serve(body, Behaviour::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let err = puller(dir.path())
        .pull(&format!("{}/file", server.base), &PullOptions::default())
        .expect_err("no pin");
    assert!(matches!(err, ModelError::NoPin { .. }), "{err}");
    assert!(err.hint().is_some());
    assert!(!dir.path().join(".partial/file.gguf.part").exists());
}

#[test]
fn http_errors_name_the_status() {
    let server = serve(Vec::new(), Behaviour::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let err = puller(dir.path())
        .pull(&format!("{}/missing", server.base), &pin(&"a".repeat(64)))
        .expect_err("404");
    assert!(
        matches!(err, ModelError::HttpStatus { status: 404, .. }),
        "{err}"
    );
}

/// A catalog model the catalog does not pin, fetched from Hugging Face (here a loopback
/// server at `HF_ENDPOINT`): pinned by the hash the server vouches for, or else by the hash of
/// what arrived, and held to that pin from then on.
#[test]
fn an_unpinned_catalog_model_is_pinned_on_first_pull() {
    let body = model_bytes(200_000, 7);
    let server = serve(body.clone(), Behaviour::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let p = puller(dir.path()).with_hf_endpoint(server.base.clone());
    let first = p
        .pull("qwen3-4b-instruct", &PullOptions::default())
        .expect("pinned on first use");
    assert!(first.fresh);
    assert_eq!(first.entry.sha256, sha(&body));
    assert!(
        first
            .entry
            .source
            .contains("/unsloth/Qwen3-4B-Instruct-2507-GGUF/resolve/main/")
    );
    let again = p
        .pull("qwen3-4b-instruct", &PullOptions::default())
        .expect("already there");
    assert!(!again.fresh);

    // The file is gone and the source now serves other bytes: the recorded pin refuses them.
    std::fs::remove_file(&first.path).expect("remove");
    let other = serve(model_bytes(200_000, 8), Behaviour::default());
    let err = puller(dir.path())
        .with_hf_endpoint(other.base.clone())
        .pull("qwen3-4b-instruct", &PullOptions::default())
        .expect_err("held to the first pin");
    assert!(matches!(err, ModelError::ShaMismatch { .. }), "{err}");
    assert!(!first.path.exists());

    // A server that vouches for a hash is held to it on the first pull too.
    let dir = tempfile::tempdir().expect("tempdir");
    let lying = serve(
        body.clone(),
        Behaviour {
            redirect_pin: Some("ab".repeat(32)),
            ..Behaviour::default()
        },
    );
    let err = puller(dir.path())
        .with_hf_endpoint(lying.base.clone())
        .pull("llama-3.2-3b-instruct", &PullOptions::default())
        .expect_err("the vouched hash does not match");
    assert!(matches!(err, ModelError::ShaMismatch { .. }), "{err}");
    let honest = serve(
        body.clone(),
        Behaviour {
            redirect_pin: Some(sha(&body)),
            ..Behaviour::default()
        },
    );
    let pulled = puller(dir.path())
        .with_hf_endpoint(honest.base.clone())
        .pull("llama-3.2-3b-instruct", &PullOptions::default())
        .expect("vouched and matching");
    assert_eq!(pulled.entry.sha256, sha(&body));
}
