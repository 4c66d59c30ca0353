//! [`Tracked`]: a tokio stream whose reads and writes are counted.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use conntrack_core::{Connection, ConnectionId, ConnectionInfo, TcpInfoGuard};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pin_project! {
    /// A stream whose reads and writes are counted by a [`Tracker`](conntrack_core::Tracker).
    ///
    /// Every tokio I/O method is forwarded to the inner stream (vectored writes and
    /// `is_write_vectored` included, so hyper keeps its write strategy); byte counts come from
    /// what the inner call returned. The tracker entry goes when the `Tracked` (and every
    /// handle sharing its [`Connection`]) is dropped.
    #[derive(Debug)]
    pub struct Tracked<T> {
        // Declared first, so it drops (and stops reading the socket) before `inner` closes it.
        tcp: Option<TcpInfoGuard>,
        #[pin]
        inner: T,
        conn: Connection,
    }
}

impl<T> Tracked<T> {
    /// Wraps `inner`, counting its I/O on `conn`.
    pub fn new(inner: T, conn: Connection) -> Self {
        Tracked {
            tcp: None,
            inner,
            conn,
        }
    }

    /// Reads the kernel's TCP statistics of `inner` into the connection's records
    /// ([`ConnectionInfo::tcp`]) when a snapshot is taken and at close (Linux and Android).
    /// The tracked listeners and dialers do this for every TCP stream they make.
    #[cfg(unix)]
    #[must_use]
    pub fn with_tcp_info(mut self) -> Self
    where
        T: std::os::fd::AsRawFd,
    {
        self.tcp = Some(self.conn.watch_tcp_info(&self.inner));
        self
    }

    pub(crate) fn with_guard(mut self, tcp: Option<TcpInfoGuard>) -> Self {
        self.tcp = tcp;
        self
    }

    /// The connection's tracker id.
    pub fn id(&self) -> ConnectionId {
        self.conn.id()
    }

    /// A snapshot of the connection.
    pub fn info(&self) -> ConnectionInfo {
        self.conn.info()
    }

    /// The tracker handle (clone it to keep the entry alive or to record on it elsewhere).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The inner stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The inner stream, mutably. I/O done directly on it is not counted.
    ///
    /// Since the stream could be replaced or closed through this reference, the socket's
    /// registration with the connection ends first: an abort then no longer shuts down a
    /// descriptor that may not be this stream's any more. It still fails this stream's later
    /// I/O and wakes the tasks that poll it from then on (their wakers are kept with the
    /// connection again), and the TCP statistics are the last ones read.
    pub fn get_mut(&mut self) -> &mut T {
        self.tcp = None;
        &mut self.inner
    }

    /// The inner stream, pinned. As [`get_mut`](Tracked::get_mut), it ends the socket's
    /// registration with the connection first.
    pub fn get_pin_mut(self: Pin<&mut Self>) -> Pin<&mut T> {
        let this = self.project();
        *this.tcp = None;
        this.inner
    }

    /// Unwraps the stream. The connection leaves the tracker unless another handle to it is
    /// still alive (use [`into_parts`](Tracked::into_parts) to keep it).
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// Unwraps into the stream and its tracker handle.
    pub fn into_parts(self) -> (T, Connection) {
        (self.inner, self.conn)
    }
}

impl Tracked<tokio::net::TcpStream> {
    /// Splits into owned read and write halves that count into this connection's one entry;
    /// the entry goes when both halves are dropped.
    pub fn into_split(
        self,
    ) -> (
        Tracked<tokio::net::tcp::OwnedReadHalf>,
        Tracked<tokio::net::tcp::OwnedWriteHalf>,
    ) {
        let Tracked { tcp, inner, conn } = self;
        let (r, w) = inner.into_split();
        // The socket stays open until both halves drop, and so does its registration (abort
        // by shutdown, statistics): each half holds it, so that an abort still wakes a task
        // blocked on one half after the other was dropped.
        let mut w = Tracked::new(w, conn.clone());
        w.tcp = tcp.clone();
        let mut r = Tracked::new(r, conn);
        r.tcp = tcp;
        (r, w)
    }

    /// This side's address.
    ///
    /// # Errors
    ///
    /// As [`tokio::net::TcpStream::local_addr`].
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }

    /// The peer's address.
    ///
    /// # Errors
    ///
    /// As [`tokio::net::TcpStream::peer_addr`].
    pub fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.inner.peer_addr()
    }
}

#[cfg(unix)]
impl Tracked<tokio::net::UnixStream> {
    /// Splits into owned read and write halves that count into this connection's one entry.
    pub fn into_split(
        self,
    ) -> (
        Tracked<tokio::net::unix::OwnedReadHalf>,
        Tracked<tokio::net::unix::OwnedWriteHalf>,
    ) {
        let Tracked { tcp, inner, conn } = self;
        let (r, w) = inner.into_split();
        // Both halves hold the socket's registration (abort by shutdown), as for TCP.
        let mut w = Tracked::new(w, conn.clone());
        w.tcp = tcp.clone();
        let mut r = Tracked::new(r, conn);
        r.tcp = tcp;
        (r, w)
    }
}

impl<T: AsyncRead> AsyncRead for Tracked<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        // A read into no room reads nothing: its 0 is not the peer's end of stream.
        let room = buf.remaining() > 0;
        let res = ready!(this
            .conn
            .poll_read_guarded(cx, |cx| this.inner.poll_read(cx, buf)));
        match &res {
            Ok(()) if room => this.conn.record_read(buf.filled().len() - before),
            Ok(()) => {}
            Err(e) => this.conn.record_read_error(e),
        }
        Poll::Ready(res)
    }
}

impl<T: AsyncWrite> AsyncWrite for Tracked<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = ready!(this
            .conn
            .poll_write_guarded(cx, |cx| this.inner.poll_write(cx, buf)));
        Poll::Ready(this.conn.write_result(res))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = ready!(this
            .conn
            .poll_write_guarded(cx, |cx| this.inner.poll_write_vectored(cx, bufs)));
        Poll::Ready(this.conn.write_result(res))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let res = ready!(this
            .conn
            .poll_write_guarded(cx, |cx| this.inner.poll_flush(cx)));
        match &res {
            // What was written is on its way: exchanges waiting for it end.
            Ok(()) => this.conn.record_flush(),
            Err(e) => this.conn.record_write_error(e),
        }
        Poll::Ready(res)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let res = ready!(this.inner.poll_shutdown(cx));
        if let Err(e) = &res {
            this.conn.record_error(e);
        }
        Poll::Ready(res)
    }
}

#[cfg(unix)]
impl<T: std::os::fd::AsRawFd> std::os::fd::AsRawFd for Tracked<T> {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.inner.as_raw_fd()
    }
}

#[cfg(unix)]
impl<T: std::os::fd::AsFd> std::os::fd::AsFd for Tracked<T> {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.inner.as_fd()
    }
}
