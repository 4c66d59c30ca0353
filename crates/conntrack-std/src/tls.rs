//! TLS over tracked blocking streams (feature `tls`): rustls' `StreamOwned` with the handshake
//! driven to completion up front and reported to the tracker.
//!
//! Bytes are counted at the TCP level, below TLS (ciphertext). Errors the TLS layer raises
//! itself (no `close_notify`, a corrupt record) are remembered on the connection by
//! [`TlsStream`], so `on_close` carries them. See `docs/tls.md`. All the handshake reporting
//! lives in `conntrack-rustls`; this file drives rustls' blocking handshake, within a deadline
//! of its own ([`DEFAULT_HANDSHAKE_TIMEOUT`] unless set) kept through the socket's timeouts: a
//! handshake that runs out of time fails with `TimedOut`.

use std::io::{self, BufRead, Read, Write};
use std::net::TcpStream;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conntrack_core::{Connection, ConnectionId, ConnectionInfo};
use conntrack_rustls::{Handshake, TlsConnectionInfo};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, ConnectionCommon, ServerConnection, SideData, StreamOwned};

use crate::Tracked;

/// A rustls server stream over a tracked stream, handshake done.
pub type ServerTlsStream<S> = TlsStream<ServerConnection, S>;
/// A rustls client stream over a tracked stream, handshake done.
pub type ClientTlsStream<S> = TlsStream<ClientConnection, S>;

/// rustls' `StreamOwned` over a [`Tracked`] stream, remembering every error it returns on the
/// tracked connection.
///
/// Socket errors are already seen by the tracked stream below; errors the TLS layer raises on
/// its own are not: a peer that closes without `close_notify` (`UnexpectedEof`), a corrupt or
/// unexpected record (`InvalidData`). This wrapper records them
/// ([`Connection::record_error`]), so [`on_close`](conntrack_core::Hook::on_close) carries the
/// error the application saw. (Per-I/O hooks keep seeing the socket-level reads and writes.)
#[derive(Debug)]
pub struct TlsStream<C, S: Read + Write> {
    inner: StreamOwned<C, Tracked<S>>,
}

impl<C, S: Read + Write> TlsStream<C, S> {
    /// The tracked stream and the rustls connection (e.g. for `send_close_notify`), as the
    /// async adapters' TLS streams give them.
    pub fn get_ref(&self) -> (&Tracked<S>, &C) {
        (&self.inner.sock, &self.inner.conn)
    }

    /// The tracked stream and the rustls connection, mutably. I/O through them directly is
    /// not recorded by this wrapper.
    pub fn get_mut(&mut self) -> (&mut Tracked<S>, &mut C) {
        (&mut self.inner.sock, &mut self.inner.conn)
    }

    /// The tracked stream and the rustls connection, unwrapped.
    pub fn into_inner(self) -> (Tracked<S>, C) {
        (self.inner.sock, self.inner.conn)
    }

    /// rustls' `StreamOwned`.
    pub fn inner(&self) -> &StreamOwned<C, Tracked<S>> {
        &self.inner
    }

    /// rustls' `StreamOwned`, mutably. Errors returned through it directly are not recorded.
    pub fn inner_mut(&mut self) -> &mut StreamOwned<C, Tracked<S>> {
        &mut self.inner
    }

    /// rustls' `StreamOwned`, unwrapped (its errors are then no longer recorded).
    pub fn into_tls(self) -> StreamOwned<C, Tracked<S>> {
        self.inner
    }

    /// The tracked connection's handle.
    pub fn connection(&self) -> &Connection {
        self.inner.sock.connection()
    }

    /// The tracked connection's id.
    pub fn id(&self) -> ConnectionId {
        self.connection().id()
    }

    /// A snapshot of the tracked connection (TLS details included).
    pub fn info(&self) -> ConnectionInfo {
        self.connection().info()
    }

    fn seen<R>(&self, res: io::Result<R>) -> io::Result<R> {
        if let Err(e) = &res {
            self.connection().record_error(e);
        }
        res
    }
}

impl<C, S, D> Read for TlsStream<C, S>
where
    C: DerefMut + Deref<Target = ConnectionCommon<D>>,
    S: Read + Write,
    D: SideData,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = !buf.is_empty();
        let res = self.inner.read(buf);
        let conn = self.connection();
        let res = conn.app_read_result(res);
        // The peer's `close_notify`: its end of stream.
        if room && matches!(res, Ok(0)) {
            conn.record_app_eof();
        }
        res
    }
}

impl<C, S, D> BufRead for TlsStream<C, S>
where
    C: DerefMut + Deref<Target = ConnectionCommon<D>>,
    S: Read + Write,
    D: SideData + 'static,
{
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        // The borrow of the buffer outlives the error check, so check first: an error from
        // `fill_buf` is recorded, then the call is repeated to hand out the buffer.
        match self.inner.fill_buf() {
            Err(e) => {
                self.connection().record_error(&e);
                return Err(e);
            }
            // The peer's `close_notify`: its end of stream.
            Ok([]) => self.connection().record_app_eof(),
            Ok(_) => {}
        }
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.inner.consume(amt);
        self.connection().record_app_read(amt, None);
    }
}

impl<C, S, D> Write for TlsStream<C, S>
where
    C: DerefMut + Deref<Target = ConnectionCommon<D>>,
    S: Read + Write,
    D: SideData,
{
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let res = self.inner.write(buf);
        self.connection().app_write_result(res)
    }

    fn flush(&mut self) -> io::Result<()> {
        let res = self.inner.flush();
        self.seen(res)
    }
}

/// How long a handshake may take unless [`TlsAcceptor::handshake_timeout`] or
/// [`TlsConnector::handshake_timeout`] says otherwise: 10 seconds, Go's
/// `http.Transport.TLSHandshakeTimeout`.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A blocking socket whose read and write timeouts can be read and set: what the handshake
/// deadline needs, since a blocking handshake can only be bounded through them.
/// Implemented for `TcpStream` and `UnixStream`.
pub trait SocketTimeouts {
    /// The socket's read timeout (`TcpStream::read_timeout`).
    ///
    /// # Errors
    ///
    /// The socket's error.
    fn read_timeout(&self) -> io::Result<Option<Duration>>;
    /// Sets the socket's read timeout (`TcpStream::set_read_timeout`).
    ///
    /// # Errors
    ///
    /// The socket's error.
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// The socket's write timeout.
    ///
    /// # Errors
    ///
    /// The socket's error.
    fn write_timeout(&self) -> io::Result<Option<Duration>>;
    /// Sets the socket's write timeout.
    ///
    /// # Errors
    ///
    /// The socket's error.
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
}

macro_rules! socket_timeouts {
    ($stream:ty) => {
        impl SocketTimeouts for $stream {
            fn read_timeout(&self) -> io::Result<Option<Duration>> {
                <$stream>::read_timeout(self)
            }
            fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
                <$stream>::set_read_timeout(self, timeout)
            }
            fn write_timeout(&self) -> io::Result<Option<Duration>> {
                <$stream>::write_timeout(self)
            }
            fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
                <$stream>::set_write_timeout(self, timeout)
            }
        }
    };
}

socket_timeouts!(TcpStream);
#[cfg(unix)]
socket_timeouts!(std::os::unix::net::UnixStream);

/// The error of a handshake that ran out of time.
fn handshake_timed_out(limit: Option<Duration>, cause: &io::Error) -> io::Error {
    let message = match limit {
        Some(limit) => format!("TLS handshake did not finish within {limit:?}"),
        None => format!("TLS handshake timed out ({cause})"),
    };
    io::Error::new(io::ErrorKind::TimedOut, message)
}

/// Drives the handshake of a new rustls connection on `stream` to completion within
/// `timeout`, reporting it; the error, if any, is returned as is, except a timeout.
///
/// The deadline is kept through the socket's read and write timeouts, set before each step to
/// the time left (or the socket's own timeout, if shorter) and put back afterwards. A step
/// that times out (a blocking socket reports it as `WouldBlock` on Unix, `TimedOut` on
/// Windows) fails the handshake with `TimedOut`, never `WouldBlock`.
fn handshake<C, D, S>(
    report: Handshake,
    conn: Result<C, rustls::Error>,
    stream: &mut Tracked<S>,
    timeout: Option<Duration>,
) -> io::Result<C>
where
    C: DerefMut<Target = ConnectionCommon<D>> + TlsConnectionInfo,
    S: Read + Write + SocketTimeouts,
{
    let mut conn = match conn {
        Ok(conn) => conn,
        Err(e) => return Err(report.fail(io::Error::other(e))),
    };
    let saved = match timeout {
        Some(_) => match (
            stream.get_ref().read_timeout(),
            stream.get_ref().write_timeout(),
        ) {
            (Ok(r), Ok(w)) => Some((r, w)),
            (Err(e), _) | (_, Err(e)) => return Err(report.fail(e)),
        },
        None => None,
    };
    let deadline = timeout.map(|t| Instant::now() + t);
    let result = drive(&mut conn, stream, deadline, saved);
    if let Some((r, w)) = saved {
        // Put the socket's own timeouts back, whatever happened. A failure here is the
        // handshake's only if it had none.
        let restored = stream
            .get_ref()
            .set_read_timeout(r)
            .and_then(|()| stream.get_ref().set_write_timeout(w));
        if let (Ok(()), Err(e)) = (&result, restored) {
            return Err(report.fail(e));
        }
    }
    match result {
        Ok(()) => {
            report.complete(&conn);
            Ok(conn)
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            let over = deadline.is_some_and(|d| Instant::now() >= d);
            Err(report.fail(handshake_timed_out(timeout.filter(|_| over), &e)))
        }
        Err(e) => Err(report.fail(e)),
    }
}

/// The handshake's I/O, each step bounded by what is left until `deadline`.
fn drive<C, D, S>(
    conn: &mut C,
    stream: &mut Tracked<S>,
    deadline: Option<Instant>,
    saved: Option<(Option<Duration>, Option<Duration>)>,
) -> io::Result<()>
where
    C: DerefMut<Target = ConnectionCommon<D>>,
    S: Read + Write + SocketTimeouts,
{
    while conn.is_handshaking() {
        if let (Some(deadline), Some((r, w))) = (deadline, saved) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            let sock = stream.get_ref();
            sock.set_read_timeout(Some(r.map_or(left, |r| r.min(left))))?;
            sock.set_write_timeout(Some(w.map_or(left, |w| w.min(left))))?;
        }
        conn.complete_io(stream)?;
    }
    Ok(())
}

/// Accepts TLS on tracked blocking streams, reporting each handshake.
///
/// A handshake gets [`DEFAULT_HANDSHAKE_TIMEOUT`] to finish unless
/// [`handshake_timeout`](TlsAcceptor::handshake_timeout) says otherwise, so a client that
/// connects and sends nothing cannot hold a thread for ever.
#[derive(Debug, Clone)]
pub struct TlsAcceptor {
    config: Arc<rustls::ServerConfig>,
    timeout: Option<Duration>,
}

impl From<Arc<rustls::ServerConfig>> for TlsAcceptor {
    fn from(config: Arc<rustls::ServerConfig>) -> Self {
        TlsAcceptor {
            config,
            timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
        }
    }
}

impl TlsAcceptor {
    /// How long a handshake may take (`None`: as long as the socket's own timeouts allow).
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs the server handshake to completion, reporting it (`on_tls_handshake_start` /
    /// `_done`, the connection's `tls` and `timings.tls_handshake`, or the counted failure).
    /// The socket's read and write timeouts are the same after it as before.
    ///
    /// # Errors
    ///
    /// `TimedOut` when the handshake does not finish in time (or the socket's own timeout
    /// passes), else the handshake's error, unchanged.
    pub fn accept<S: Read + Write + SocketTimeouts>(
        &self,
        mut stream: Tracked<S>,
    ) -> io::Result<ServerTlsStream<S>> {
        let report = Handshake::start(stream.connection(), None);
        let conn = handshake(
            report,
            ServerConnection::new(Arc::clone(&self.config)),
            &mut stream,
            self.timeout,
        )?;
        Ok(TlsStream {
            inner: StreamOwned::new(conn, stream),
        })
    }
}

/// Connects TLS over tracked blocking streams, reporting each handshake.
///
/// A handshake gets [`DEFAULT_HANDSHAKE_TIMEOUT`] to finish unless
/// [`handshake_timeout`](TlsConnector::handshake_timeout) says otherwise.
#[derive(Debug, Clone)]
pub struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
    timeout: Option<Duration>,
}

impl From<Arc<rustls::ClientConfig>> for TlsConnector {
    fn from(config: Arc<rustls::ClientConfig>) -> Self {
        TlsConnector {
            config,
            timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
        }
    }
}

impl TlsConnector {
    /// How long a handshake may take (`None`: as long as the socket's own timeouts allow).
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs the client handshake for `server_name` to completion, reporting it. The socket's
    /// read and write timeouts are the same after it as before.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a malformed name, `TimedOut` when the handshake does not finish in
    /// time (or the socket's own timeout passes), else the handshake's error, unchanged.
    pub fn connect<S: Read + Write + SocketTimeouts>(
        &self,
        server_name: &str,
        mut stream: Tracked<S>,
    ) -> io::Result<ClientTlsStream<S>> {
        // The SNI as sent: none when the config turns SNI off.
        let sni = self.config.enable_sni.then_some(server_name);
        let report = Handshake::start(stream.connection(), sni);
        let name = match ServerName::try_from(server_name.to_owned()) {
            Ok(name) => name,
            Err(e) => return Err(report.fail(io::Error::new(io::ErrorKind::InvalidInput, e))),
        };
        let conn = ClientConnection::new(Arc::clone(&self.config), name);
        let conn = handshake(report, conn, &mut stream, self.timeout)?;
        Ok(TlsStream {
            inner: StreamOwned::new(conn, stream),
        })
    }
}
