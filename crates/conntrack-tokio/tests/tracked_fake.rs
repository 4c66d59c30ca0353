//! `Tracked<T>` over a scripted fake stream: byte counts come from what the inner call
//! returned (short writes, partial reads), `Pending` counts nothing, errors pass through
//! unchanged and reach the per-I/O hooks, and `is_write_vectored` is forwarded.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use conntrack_core::{Recorded, RecordingHook, Registration, Role, Tracker};
use conntrack_tokio::Tracked;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// What the fake answers to its next read or write.
enum Step {
    /// Return `Pending` once (and wake at once, so the caller polls again).
    Pending,
    /// Read: deliver this many bytes. Write: accept at most this many.
    Bytes(usize),
    /// Fail with this OS error.
    Error(i32),
}

struct Fake {
    reads: VecDeque<Step>,
    writes: VecDeque<Step>,
    vectored: bool,
}

impl AsyncRead for Fake {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.reads.pop_front() {
            Some(Step::Pending) => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Some(Step::Bytes(n)) => {
                let n = n.min(buf.remaining());
                buf.put_slice(&vec![b'r'; n]);
                Poll::Ready(Ok(()))
            }
            Some(Step::Error(code)) => Poll::Ready(Err(io::Error::from_raw_os_error(code))),
            None => Poll::Ready(Ok(())), // end of stream
        }
    }
}

impl AsyncWrite for Fake {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.writes.pop_front() {
            Some(Step::Pending) => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Some(Step::Bytes(n)) => Poll::Ready(Ok(n.min(buf.len()))),
            Some(Step::Error(code)) => Poll::Ready(Err(io::Error::from_raw_os_error(code))),
            None => Poll::Ready(Ok(buf.len())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &**b);
        self.poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        self.vectored
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn tracked(
    reads: Vec<Step>,
    writes: Vec<Step>,
    vectored: bool,
) -> (Tracker, RecordingHook, Tracked<Fake>) {
    let rec = RecordingHook::with_io();
    let tracker = Tracker::builder().hook(rec.clone()).build();
    let conn = tracker.register(Registration::new(Role::Client));
    let fake = Fake {
        reads: reads.into(),
        writes: writes.into(),
        vectored,
    };
    (tracker, rec, Tracked::new(fake, conn))
}

#[tokio::test]
async fn short_writes_and_pending_are_counted_as_returned() {
    let (tracker, rec, mut t) = tracked(
        vec![],
        vec![Step::Pending, Step::Bytes(3), Step::Pending, Step::Bytes(4)],
        false,
    );
    t.write_all(b"0123456789").await.unwrap();
    // 3 + 4 + the rest (3) in three writes; the two Pendings counted nothing.
    assert_eq!(t.info().write_bytes, 10);
    let writes: Vec<usize> = rec
        .events()
        .iter()
        .filter_map(|e| match e {
            Recorded::Write { n, .. } => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(writes, [3, 4, 3]);
    drop(t);
    assert!(tracker.is_empty());
}

#[tokio::test]
async fn partial_reads_and_end_of_stream() {
    let (_tracker, rec, mut t) = tracked(
        vec![Step::Bytes(5), Step::Pending, Step::Bytes(2)],
        vec![],
        false,
    );
    let mut all = Vec::new();
    t.read_to_end(&mut all).await.unwrap();
    assert_eq!(all.len(), 7);
    assert_eq!(t.info().read_bytes, 7);
    let reads: Vec<usize> = rec
        .events()
        .iter()
        .filter_map(|e| match e {
            Recorded::Read { n, .. } => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(reads, [5, 2, 0], "end of stream is a read of 0");
}

#[tokio::test]
async fn errors_pass_through_unchanged_and_reach_hooks_and_close() {
    const ECONNRESET: i32 = 104;
    const EPIPE: i32 = 32;
    let (_tracker, rec, mut t) = tracked(
        vec![Step::Bytes(1), Step::Error(ECONNRESET)],
        vec![Step::Error(EPIPE)],
        false,
    );
    let mut buf = [0u8; 8];
    assert_eq!(t.read(&mut buf).await.unwrap(), 1);
    let err = t.read(&mut buf).await.expect_err("the fake fails");
    assert_eq!(
        err.raw_os_error(),
        Some(ECONNRESET),
        "the same error, unchanged"
    );
    let err = t.write(b"x").await.expect_err("the fake fails");
    assert_eq!(err.raw_os_error(), Some(EPIPE));
    assert_eq!((t.info().read_bytes, t.info().write_bytes), (1, 0));
    drop(t);
    let ev = rec.events();
    assert!(
        matches!(&ev[2], Recorded::Read { n: 0, error: Some(e), .. } if e.kind == io::ErrorKind::ConnectionReset),
        "{ev:?}"
    );
    assert!(
        matches!(&ev[3], Recorded::Write { n: 0, error: Some(e), .. } if e.kind == io::ErrorKind::BrokenPipe),
        "{ev:?}"
    );
    let close = ev.last().unwrap();
    assert_eq!(close.name(), "close");
    assert_eq!(
        close.error().unwrap().kind,
        io::ErrorKind::BrokenPipe,
        "the last error seen"
    );
}

#[tokio::test]
async fn vectored_writes_are_forwarded_and_counted() {
    for vectored in [true, false] {
        let (_tracker, _rec, mut t) = tracked(vec![], vec![Step::Bytes(2)], vectored);
        assert_eq!(
            t.is_write_vectored(),
            vectored,
            "is_write_vectored is the inner stream's"
        );
        let n = t
            .write_vectored(&[IoSlice::new(b"abc"), IoSlice::new(b"def")])
            .await
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(t.info().write_bytes, 2);
    }
}

/// A stream that is no socket (an in-memory pipe) has nothing for an abort to shut down: its
/// tasks blocked reading and writing are woken through the wakers they left with the
/// connection, and fail with `ConnectionAborted`.
#[tokio::test]
async fn abort_wakes_tasks_blocked_on_a_pipe() {
    let tracker = Tracker::new();
    let (a, _peer) = tokio::io::duplex(16);
    let (r, w) = tokio::io::split(Tracked::new(
        a,
        tracker.register(Registration::new(Role::Client)),
    ));
    let (mut r, mut w) = (r, w);
    let id = tracker.connections()[0].id;
    let (read_tx, read_rx) = tokio::sync::oneshot::channel();
    let read = tokio::spawn(async move {
        let mut buf = [0; 8];
        let mut fut = std::pin::pin!(r.read(&mut buf));
        assert!(
            futures_poll_once(fut.as_mut()).await.is_none(),
            "the read blocks"
        );
        read_tx.send(()).unwrap();
        fut.await
    });
    let (write_tx, write_rx) = tokio::sync::oneshot::channel();
    let write = tokio::spawn(async move {
        // 16 bytes fit in the pipe; the rest blocks.
        let mut fut = std::pin::pin!(w.write_all(&[1; 64]));
        assert!(
            futures_poll_once(fut.as_mut()).await.is_none(),
            "the write blocks"
        );
        write_tx.send(()).unwrap();
        fut.await
    });
    read_rx.await.unwrap();
    write_rx.await.unwrap();
    assert!(tracker.abort(id));
    let wait = std::time::Duration::from_secs(10);
    let err = tokio::time::timeout(wait, read)
        .await
        .expect("the read is woken")
        .unwrap()
        .expect_err("the read fails");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted, "{err}");
    let err = tokio::time::timeout(wait, write)
        .await
        .expect("the write is woken")
        .unwrap()
        .expect_err("the write fails");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted, "{err}");
}

/// Polls `fut` once: its output if ready.
async fn futures_poll_once<F: std::future::Future>(fut: Pin<&mut F>) -> Option<F::Output> {
    let mut fut = Some(fut);
    std::future::poll_fn(|cx| {
        let f = fut.take().unwrap();
        Poll::Ready(match f.poll(cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        })
    })
    .await
}
