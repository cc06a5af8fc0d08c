//! Accepting connections, each with deadlines: no client holds a connection longer than it
//! takes to use it.
//!
//! - At most `max_connections` are open; one more is closed as soon as it is accepted.
//! - A request's head must arrive within `header_timeout`, counted from the connection's
//!   start for its first request and from the first byte of each later one (a client that
//!   trickles its headers a byte at a time is cut off).
//! - Between requests a kept-alive connection may sit idle for `idle_timeout`.
//! - A body must arrive whole within `body_timeout` once its head is in (the guard reads it).
//!
//! hyper's own header timer, started whenever it waits for a head, is set to the idle time;
//! the head deadline proper is kept by [`Deadlined`], which sees each first byte and learns
//! from the service when a request began and when its response ended.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tower::ServiceExt;

use crate::AppState;

/// What a connection's service tells its I/O about the request in hand.
#[derive(Debug, Default)]
struct Conn {
    /// Requests whose heads have arrived.
    heads: AtomicU64,
    /// A request is being answered: bytes that arrive now are its body.
    busy: AtomicBool,
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets the connections in flight
/// finish their requests.
pub(crate) async fn run(
    listener: TcpListener,
    app: Router,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let options = state.inner.options.clone();
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            state.inner.metrics.connection_refused();
            tracing::warn!(%peer, max = options.max_connections, "too many connections; closing a new one");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(Conn::default());
        let io = TokioIo::new(Deadlined::new(
            stream,
            Arc::clone(&conn),
            options.header_timeout,
        ));
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            conn.heads.fetch_add(1, Ordering::Relaxed);
            conn.busy.store(true, Ordering::Relaxed);
            let conn = Arc::clone(&conn);
            let app = app.clone();
            async move {
                let response = app.oneshot(request.map(Body::new)).await;
                response.map(|r| r.map(|b| Body::new(Tracked { inner: b, conn })))
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(options.header_timeout.max(options.idle_timeout))
            .keep_alive(true);
        let connection = graceful.watch(builder.serve_connection(io, service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A response body that tells the connection when it has been sent (or dropped).
struct Tracked {
    inner: Body,
    conn: Arc<Conn>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.conn.busy.store(false, Ordering::Relaxed);
    }
}

impl hyper::body::Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.conn.busy.store(false, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A socket whose request heads must arrive within a deadline.
struct Deadlined {
    inner: TcpStream,
    conn: Arc<Conn>,
    header_timeout: Duration,
    /// Armed while a head is on its way.
    deadline: Option<Pin<Box<Sleep>>>,
    /// The count of heads when the deadline was armed.
    heads: u64,
    /// Bytes came while a request was being answered (a pipelined or early next head): its
    /// deadline starts when that answer ends.
    early: bool,
}

impl Deadlined {
    fn new(inner: TcpStream, conn: Arc<Conn>, header_timeout: Duration) -> Self {
        Deadlined {
            inner,
            conn,
            header_timeout,
            // The first head is timed from the connection's start.
            deadline: Some(Box::pin(tokio::time::sleep(header_timeout))),
            heads: 0,
            early: false,
        }
    }
}

impl AsyncRead for Deadlined {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let heads = this.conn.heads.load(Ordering::Relaxed);
        if heads != this.heads {
            // The head it waited for arrived.
            this.heads = heads;
            this.deadline = None;
        }
        let busy = this.conn.busy.load(Ordering::Relaxed);
        if this.early && !busy && this.deadline.is_none() {
            this.early = false;
            this.deadline = Some(Box::pin(tokio::time::sleep(this.header_timeout)));
        }
        if let Some(deadline) = this.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the request head did not arrive in time",
            )));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && buf.filled().len() > before
            && this.deadline.is_none()
        {
            if busy {
                this.early = true;
            } else {
                // The first bytes of a new head: it has `header_timeout` to be complete.
                this.deadline = Some(Box::pin(tokio::time::sleep(this.header_timeout)));
            }
        }
        if let Some(deadline) = this.deadline.as_mut() {
            // Registers the wake-up at the deadline.
            let _ = deadline.as_mut().poll(cx);
        }
        polled
    }
}

impl AsyncWrite for Deadlined {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
