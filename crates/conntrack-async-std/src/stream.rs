//! [`Tracked`]: a futures-io stream whose reads and writes are counted.

use std::io::{self, IoSlice, IoSliceMut};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use conntrack_core::{Connection, ConnectionId, ConnectionInfo, TcpInfoGuard};
use futures_io::{AsyncRead, AsyncWrite};
use pin_project_lite::pin_project;

pin_project! {
    /// A stream whose reads and writes are counted by a [`Tracker`](conntrack_core::Tracker).
    ///
    /// Works on any futures-io stream (smol, async-std, futures-rustls, your own). Every
    /// futures-io method is forwarded to the inner stream, vectored I/O included (the trait's
    /// default vectored methods would use only the first buffer); byte counts come from what
    /// the inner call returned and errors pass through unchanged. The tracker entry goes when
    /// the `Tracked` (and every handle sharing its [`Connection`], such as a clone) is dropped.
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
    /// The tracked listeners and dialers do this for every TCP stream they make. (The clones
    /// of a `Tracked` socket share the registration: it ends with the last of them.)
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

    /// The socket's registration this stream holds, if any (for a clone to share).
    #[cfg(any(feature = "smol", feature = "async-std"))] // only a runtime's `Clone` uses it
    pub(crate) fn guard(&self) -> Option<&TcpInfoGuard> {
        self.tcp.as_ref()
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
    /// Since the stream could be replaced or closed through this reference, this stream's
    /// hold on the socket's registration with the connection ends first: an abort then no
    /// longer shuts down a descriptor that may not be this stream's any more (unless a clone
    /// still holds it). It still fails this stream's later I/O and wakes the tasks that poll
    /// it from then on (their wakers are kept with the connection again).
    pub fn get_mut(&mut self) -> &mut T {
        self.tcp = None;
        &mut self.inner
    }

    /// The inner stream, pinned. As [`get_mut`](Tracked::get_mut), it ends this stream's
    /// hold on the socket's registration first.
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

impl<T: AsyncRead> AsyncRead for Tracked<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        // A read into no room reads nothing: its 0 is not the peer's end of stream.
        let room = !buf.is_empty();
        let res = ready!(this
            .conn
            .poll_read_guarded(cx, |cx| this.inner.poll_read(cx, buf)));
        Poll::Ready(if room || res.is_err() {
            this.conn.read_result(res)
        } else {
            res
        })
    }

    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let room = bufs.iter().any(|b| !b.is_empty());
        let res = ready!(this
            .conn
            .poll_read_guarded(cx, |cx| this.inner.poll_read_vectored(cx, bufs)));
        Poll::Ready(if room || res.is_err() {
            this.conn.read_result(res)
        } else {
            res
        })
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

    // Passed through as the stream implements it: async-std's `TcpStream` only flushes here
    // (no end of stream is sent; `Tracked::shutdown(Shutdown::Write)` half-closes), smol's
    // shuts the write half down.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let res = ready!(this.inner.poll_close(cx));
        if let Err(e) = &res {
            this.conn.record_error(e);
        }
        Poll::Ready(res)
    }
}

/// `Clone` (sharing the entry) and the socket methods, for a runtime's cloneable socket type.
#[cfg(any(feature = "smol", feature = "async-std"))] // only a runtime feature uses it
macro_rules! socket_impls {
    ($stream:ty, $addr:ty) => {
        /// A clone shares this connection's tracker entry: I/O on any clone is counted on the
        /// one entry, which leaves the tracker when the last clone is dropped. It shares the
        /// socket's registration too, so that an abort still shuts the socket down (waking a
        /// task blocked on a clone) after the stream it was cloned from is dropped.
        impl Clone for $crate::Tracked<$stream> {
            fn clone(&self) -> Self {
                $crate::Tracked::new(self.get_ref().clone(), self.connection().clone())
                    .with_guard(self.guard().cloned())
            }
        }

        impl $crate::Tracked<$stream> {
            /// Shuts down the read half, the write half or both. A failure is remembered for
            /// `on_close` and returned unchanged. `Shutdown::Write` is how to half-close on
            /// async-std, whose `close()` only flushes.
            pub fn shutdown(&self, how: std::net::Shutdown) -> std::io::Result<()> {
                let res = self.get_ref().shutdown(how);
                if let Err(e) = &res {
                    self.connection().record_error(e);
                }
                res
            }

            /// This side's address.
            pub fn local_addr(&self) -> std::io::Result<$addr> {
                self.get_ref().local_addr()
            }

            /// The peer's address.
            pub fn peer_addr(&self) -> std::io::Result<$addr> {
                self.get_ref().peer_addr()
            }
        }
    };
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
