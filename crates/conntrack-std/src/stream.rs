//! [`Tracked`]: a blocking stream whose reads and writes are counted.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};

use conntrack_core::{CloserGuard, Connection, ConnectionId, ConnectionInfo, TcpInfoGuard};

/// A stream whose reads and writes are counted by a [`Tracker`](conntrack_core::Tracker).
///
/// Every `Read`/`Write` method the inner stream implements itself is forwarded (vectored I/O
/// included); byte counts come from what the inner call returned, and errors are returned
/// unchanged. The tracker entry goes when the `Tracked` (and every handle sharing its
/// [`Connection`], such as a [`try_clone`](Tracked::try_clone)) is dropped.
///
/// Like `&TcpStream`, `&Tracked<TcpStream>` (and `&Tracked<UnixStream>`) is `Read` and `Write`,
/// so one thread can read while another writes through a shared reference.
///
/// **Timeouts.** The stream is taken to be blocking, as `std::net` sockets are. A blocking
/// read or write that returns `WouldBlock` has hit the socket's read or write timeout
/// (`set_read_timeout`: Unix reports the expiry as `WouldBlock`, Windows as `TimedOut`), so
/// it is recorded on the connection as a `TimedOut` error ("read timed out"), which `on_close`,
/// the history and the metrics' `error.type` (`timed_out`) then carry; the caller still gets
/// the error unchanged. A socket switched to non-blocking mode should be switched with
/// [`Tracked::set_nonblocking`], after which `WouldBlock` is the usual "try again" and is not
/// recorded.
#[derive(Debug)]
pub struct Tracked<T> {
    /// Declared before `inner`, so it drops (and stops reading the socket) before `inner`
    /// closes it.
    tcp: Option<TcpInfoGuard>,
    /// What an abort shuts down to wake a blocked read (see `abortable`): the socket itself
    /// on Linux and Android, so declared before `inner` too; a clone of it elsewhere.
    closer: Option<CloserGuard>,
    inner: T,
    conn: Connection,
    /// Set by `set_nonblocking`: a `WouldBlock` is then no timeout.
    nonblocking: AtomicBool,
}

impl<T> Tracked<T> {
    /// Wraps `inner`, counting its I/O on `conn`. `inner` is taken to be in blocking mode
    /// (see [Timeouts](Tracked#timeouts)).
    pub fn new(inner: T, conn: Connection) -> Self {
        Tracked {
            tcp: None,
            inner,
            conn,
            nonblocking: AtomicBool::new(false),
            closer: None,
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

    /// Keeps `tcp`, if any (a registration made by `track` stays otherwise).
    pub(crate) fn with_guard(mut self, tcp: Option<TcpInfoGuard>) -> Self {
        if tcp.is_some() {
            self.tcp = tcp;
        }
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

    /// The inner stream, mutably. I/O done directly on it is not counted. On Linux and
    /// Android an abort shuts the stream's socket down through its descriptor number (see
    /// [`abortable`](Tracked::abortable) and [`with_tcp_info`](Tracked::with_tcp_info));
    /// since the stream could be replaced through this reference, those registrations are
    /// dropped first: an abort still fails this stream's later I/O, but no longer wakes a call
    /// blocked in it, and the TCP statistics are the last ones read.
    pub fn get_mut(&mut self) -> &mut T {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            self.closer = None;
        }
        self.tcp = None;
        &mut self.inner
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

/// Which way an I/O call went, for the timeout's message.
#[derive(Clone, Copy)]
enum Dir {
    Read,
    Write,
}

/// Records an I/O result on the connection and returns it unchanged. On a blocking socket a
/// `WouldBlock` is the expiry of its timeout: it is recorded as `TimedOut`.
fn seen<R>(
    conn: &Connection,
    nonblocking: &AtomicBool,
    dir: Dir,
    res: io::Result<R>,
    ok: impl FnOnce(&R),
) -> io::Result<R> {
    match &res {
        Ok(r) => ok(r),
        Err(e) => {
            let timed_out;
            let e = if e.kind() == io::ErrorKind::WouldBlock && !nonblocking.load(Ordering::Relaxed)
            {
                let what = match dir {
                    Dir::Read => "read",
                    Dir::Write => "write",
                };
                timed_out =
                    io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out ({e})"));
                &timed_out
            } else {
                e
            };
            match dir {
                Dir::Read => conn.record_read_error(e),
                Dir::Write => conn.record_write_error(e),
            }
        }
    }
    res
}

/// Runs one I/O call guarded by the connection (`Connection::guarded`: an aborted
/// connection's error replaces the call's result), then records the result, so that the
/// hooks see what the caller gets.
#[inline]
fn guarded<R>(
    conn: &Connection,
    nb: &AtomicBool,
    dir: Dir,
    call: impl FnOnce() -> io::Result<R>,
    ok: impl FnOnce(&R),
) -> io::Result<R> {
    seen(conn, nb, dir, conn.guarded(call), ok)
}

/// `Read` through anything that reads (`T` or `&T`), counted on `conn`.
fn read(conn: &Connection, nb: &AtomicBool, mut r: impl Read, buf: &mut [u8]) -> io::Result<usize> {
    // A read into no room reads nothing: its 0 is not the peer's end of stream.
    let room = !buf.is_empty();
    guarded(
        conn,
        nb,
        Dir::Read,
        || r.read(buf),
        |n| {
            if room {
                conn.record_read(*n);
            }
        },
    )
}

fn read_vectored(
    conn: &Connection,
    nb: &AtomicBool,
    mut r: impl Read,
    bufs: &mut [IoSliceMut<'_>],
) -> io::Result<usize> {
    let room = bufs.iter().any(|b| !b.is_empty());
    guarded(
        conn,
        nb,
        Dir::Read,
        || r.read_vectored(bufs),
        |n| {
            if room {
                conn.record_read(*n);
            }
        },
    )
}

fn write(conn: &Connection, nb: &AtomicBool, mut w: impl Write, buf: &[u8]) -> io::Result<usize> {
    guarded(
        conn,
        nb,
        Dir::Write,
        || w.write(buf),
        |n| conn.record_write(*n),
    )
}

fn write_vectored(
    conn: &Connection,
    nb: &AtomicBool,
    mut w: impl Write,
    bufs: &[IoSlice<'_>],
) -> io::Result<usize> {
    guarded(
        conn,
        nb,
        Dir::Write,
        || w.write_vectored(bufs),
        |n| {
            conn.record_write(*n);
        },
    )
}

fn flush(conn: &Connection, nb: &AtomicBool, mut w: impl Write) -> io::Result<()> {
    // What was written is on its way: exchanges waiting for it end.
    guarded(conn, nb, Dir::Write, || w.flush(), |()| conn.record_flush())
}

impl<T: Read> Read for Tracked<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read(&self.conn, &self.nonblocking, &mut self.inner, buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        read_vectored(&self.conn, &self.nonblocking, &mut self.inner, bufs)
    }
}

impl<T: Write> Write for Tracked<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        write(&self.conn, &self.nonblocking, &mut self.inner, buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        write_vectored(&self.conn, &self.nonblocking, &mut self.inner, bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        flush(&self.conn, &self.nonblocking, &mut self.inner)
    }
}

/// `Read`/`Write` for `&Tracked<S>` where `&S` is `Read`/`Write`, and the socket methods.
macro_rules! socket_impls {
    ($stream:ty, $addr:ty) => {
        impl Read for &Tracked<$stream> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                read(&self.conn, &self.nonblocking, &self.inner, buf)
            }

            fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
                read_vectored(&self.conn, &self.nonblocking, &self.inner, bufs)
            }
        }

        impl Write for &Tracked<$stream> {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                write(&self.conn, &self.nonblocking, &self.inner, buf)
            }

            fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                write_vectored(&self.conn, &self.nonblocking, &self.inner, bufs)
            }

            fn flush(&mut self) -> io::Result<()> {
                flush(&self.conn, &self.nonblocking, &self.inner)
            }
        }

        impl Tracked<$stream> {
            /// A second handle to the same socket that shares this connection's tracker
            /// entry: I/O on either is counted on the one entry, which leaves the tracker when
            /// the last of them is dropped.
            pub fn try_clone(&self) -> io::Result<Self> {
                // The clone's descriptor is its own: the statistics stay with the original.
                #[cfg_attr(
                    not(any(target_os = "linux", target_os = "android")),
                    allow(unused_mut)
                )]
                let mut clone = Tracked {
                    tcp: None,
                    inner: self.inner.try_clone()?,
                    conn: self.conn.clone(),
                    nonblocking: AtomicBool::new(self.nonblocking.load(Ordering::Relaxed)),
                    closer: None,
                };
                // An abortable stream's clones are abortable through their own descriptor,
                // so that an abort still wakes a thread blocked on a clone once the stream
                // it was cloned from is gone. (A stream whose socket is registered for TCP
                // statistics is abortable through that registration: see `abortable`.)
                #[cfg(any(target_os = "linux", target_os = "android"))]
                if self.closer.is_some() || self.tcp.is_some() {
                    clone.closer = Some(clone.conn.shutdown_on_abort(&clone.inner));
                }
                Ok(clone)
            }

            /// Lets an abort of this connection ([`Tracker::abort`](conntrack_core::Tracker::abort),
            /// a policy, a shutdown deadline) wake a thread blocked in a read or write on it:
            /// the abort shuts the socket down (`shutdown(Both)`), as long as this stream lives
            /// (on Linux and Android, or one of its later [`try_clone`](Self::try_clone)s, each
            /// registering its own descriptor). The listener and dialer of this crate call it on
            /// every stream they return. On Linux and Android it costs nothing more than a
            /// registration ([`Connection::shutdown_on_abort`]), and not even that for a stream
            /// whose socket is registered for TCP statistics
            /// ([`with_tcp_info`](Self::with_tcp_info)), whose registration an abort shuts
            /// down already; elsewhere the abort goes through a clone of the socket, one `dup`.
            pub fn abortable(mut self) -> Self {
                if self.closer.is_some() {
                    return self;
                }
                // On Linux and Android a socket registered for TCP statistics
                // ([`with_tcp_info`](Self::with_tcp_info), as the listener and dialer of this
                // crate register every TCP stream) is shut down by an abort through that
                // registration already: a second one would only cost a lock pair at each
                // end of the stream.
                #[cfg(any(target_os = "linux", target_os = "android"))]
                if self.tcp.is_none() {
                    self.closer = Some(self.conn.shutdown_on_abort(&self.inner));
                }
                #[cfg(not(any(target_os = "linux", target_os = "android")))]
                if let Ok(clone) = self.inner.try_clone() {
                    self.closer = Some(self.conn.set_closer(move || {
                        let _ = clone.shutdown(Shutdown::Both);
                    }));
                }
                self
            }

            /// Moves the socket into or out of non-blocking mode, as the socket's own
            /// `set_nonblocking`, and tells the tracking: in blocking mode a `WouldBlock` is
            /// the expiry of the socket's timeout, recorded as `TimedOut`; in non-blocking mode
            /// it is not recorded. (Another handle from [`try_clone`](Self::try_clone) shares
            /// the socket's mode but keeps its own notion of it: switch through each.)
            pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
                self.inner.set_nonblocking(nonblocking)?;
                self.nonblocking.store(nonblocking, Ordering::Relaxed);
                Ok(())
            }

            /// Shuts down the read half, the write half or both. A failure is remembered for
            /// `on_close` and returned unchanged.
            pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
                let res = self.inner.shutdown(how);
                if let Err(e) = &res {
                    self.conn.record_error(e);
                }
                res
            }

            /// This side's address.
            pub fn local_addr(&self) -> io::Result<$addr> {
                self.inner.local_addr()
            }

            /// The peer's address.
            pub fn peer_addr(&self) -> io::Result<$addr> {
                self.inner.peer_addr()
            }
        }
    };
}

socket_impls!(TcpStream, SocketAddr);
#[cfg(unix)]
socket_impls!(
    std::os::unix::net::UnixStream,
    std::os::unix::net::SocketAddr
);

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
