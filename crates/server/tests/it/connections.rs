//! The accept loop over a real socket: deadlines for heads, bodies and idle connections, and
//! the cap on open connections, while a normal request is still served.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use smallfirst_router::{Config, Policy};
use smallfirst_server::{AppState, Limits, Options, serve};

/// A server with no tiers on a loopback port, with short deadlines; stopped when the guard
/// drops.
struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start(options: Options) -> Server {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            ready_tx
                .send(listener.local_addr().expect("addr"))
                .expect("ready");
            let config = Config::embedded("none");
            let state = AppState::with_tiers(
                None,
                Vec::new(),
                Policy::new(&config, None),
                Limits::default(),
                options,
            );
            let _ = serve(listener, state, async move {
                let _ = stopped.await;
            })
            .await;
        });
    });
    Server {
        addr: ready_rx.recv().expect("server starts"),
        stop: Some(stop),
        thread: Some(thread),
    }
}

/// Short deadlines for heads and bodies; a long idle one, so that what cuts a slow head is the
/// head deadline, not hyper's own timer (which waits the longer of the two).
fn quick() -> Options {
    Options {
        header_timeout: Duration::from_millis(500),
        body_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(5),
        max_connections: 8,
        ..Options::default()
    }
}

/// Reads until the server closes the connection (or `limit` passes); what it sent, and when
/// it closed.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, Option<Duration>) {
    let started = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => {
                return (
                    String::from_utf8_lossy(&got).into_owned(),
                    Some(started.elapsed()),
                );
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                return (
                    String::from_utf8_lossy(&got).into_owned(),
                    Some(started.elapsed()),
                );
            }
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), None)
}

fn health(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .expect("write");
    read_until_closed(&mut s, Duration::from_secs(5)).0
}

#[test]
fn a_head_sent_a_byte_at_a_time_is_cut_off() {
    let server = start(quick());
    let mut s = TcpStream::connect(server.addr).expect("connect");
    let head = b"GET /health HTTP/1.1\r\nhost: localhost\r\nx-slow: 1234567890\r\n";
    let started = Instant::now();
    for b in head {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let _ = read_until_closed(&mut s, Duration::from_secs(3));
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "held past the 0.5 s head deadline: {:?}",
        started.elapsed()
    );
    assert!(health(server.addr).contains("200 OK"), "others are served");
}

#[test]
fn a_silent_connection_is_closed() {
    let server = start(quick());
    let mut s = TcpStream::connect(server.addr).expect("connect");
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(4));
    assert!(
        closed.is_some_and(|c| c < Duration::from_millis(1500)),
        "a connection that never sends a head is closed at the head deadline: {closed:?}"
    );
}

#[test]
fn an_idle_kept_alive_connection_is_closed_after_the_idle_time() {
    let server = start(quick());
    let mut s = TcpStream::connect(server.addr).expect("connect");
    s.write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .expect("write");
    let started = Instant::now();
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(8));
    assert!(got.contains("200 OK"), "{got}");
    let closed = closed.expect("closed when idle");
    // Kept open past the head deadline (it is idle, not slow), closed by the idle one.
    assert!(
        started.elapsed() >= Duration::from_millis(4500),
        "{closed:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(7), "{closed:?}");
}

#[test]
fn a_body_that_never_ends_gets_408() {
    let server = start(quick());
    let mut s = TcpStream::connect(server.addr).expect("connect");
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n",
    )
    .expect("write");
    let started = Instant::now();
    // Keep trickling chunks, each well inside any per-read timeout.
    let mut writer = s.try_clone().expect("clone");
    let trickle = std::thread::spawn(move || {
        for _ in 0..40 {
            if writer.write_all(b"1\r\n \r\n").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(5));
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("body_timeout"), "{got}");
    assert!(closed.is_some(), "closed after the 408");
    assert!(started.elapsed() < Duration::from_secs(3));
    let _ = trickle.join();
}

#[test]
fn past_the_connection_cap_new_connections_are_closed() {
    let server = start(quick());
    // Eight connections in the middle of sending a head, held open.
    let held: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).expect("connect");
            s.write_all(b"GET /health HTTP/1.1\r\n").expect("write");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut extra = TcpStream::connect(server.addr).expect("the kernel accepts");
    let (got, closed) = read_until_closed(&mut extra, Duration::from_millis(400));
    assert!(
        got.is_empty() && closed.is_some(),
        "closed at once: {got:?} {closed:?}"
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        health(server.addr).contains("200 OK"),
        "a slot is free again"
    );
}
