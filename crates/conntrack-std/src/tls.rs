//! TLS over tracked blocking streams (feature `tls`): rustls' `StreamOwned` with the handshake
//! driven to completion up front and reported to the tracker.
//!
//! Bytes are counted at the TCP level, below TLS (ciphertext). Errors the TLS layer raises
//! itself (no `close_notify`, a corrupt record) are remembered on the connection by
//! [`TlsStream`], so `on_close` carries them. See `docs/tls.md`. All the handshake reporting
//! lives in `conntrack-rustls`; this file drives rustls' blocking handshake.

use std::io::{self, BufRead, Read, Write};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

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
        let res = self.inner.read(buf);
        self.seen(res)
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
        if let Err(e) = self.inner.fill_buf() {
            self.connection().record_error(&e);
            return Err(e);
        }
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.inner.consume(amt);
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
        self.seen(res)
    }

    fn flush(&mut self) -> io::Result<()> {
        let res = self.inner.flush();
        self.seen(res)
    }
}

/// Drives the handshake of a new rustls connection on `stream` to completion, reporting it;
/// the error, if any, is returned as is.
fn handshake<C, D, S>(
    report: Handshake,
    conn: Result<C, rustls::Error>,
    stream: &mut Tracked<S>,
) -> io::Result<C>
where
    C: DerefMut<Target = ConnectionCommon<D>> + TlsConnectionInfo,
    S: Read + Write,
{
    let mut conn = match conn {
        Ok(conn) => conn,
        Err(e) => return Err(report.fail(io::Error::other(e))),
    };
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(stream) {
            return Err(report.fail(e));
        }
    }
    report.complete(&conn);
    Ok(conn)
}

/// Accepts TLS on tracked blocking streams, reporting each handshake.
#[derive(Debug, Clone)]
pub struct TlsAcceptor {
    config: Arc<rustls::ServerConfig>,
}

impl From<Arc<rustls::ServerConfig>> for TlsAcceptor {
    fn from(config: Arc<rustls::ServerConfig>) -> Self {
        TlsAcceptor { config }
    }
}

impl TlsAcceptor {
    /// Runs the server handshake to completion, reporting it (`on_tls_handshake_start` /
    /// `_done`, the connection's `tls` and `timings.tls_handshake`, or the counted failure).
    ///
    /// # Errors
    ///
    /// The handshake's error, unchanged.
    pub fn accept<S: Read + Write>(
        &self,
        mut stream: Tracked<S>,
    ) -> io::Result<ServerTlsStream<S>> {
        let report = Handshake::start(stream.connection(), None);
        let conn = handshake(
            report,
            ServerConnection::new(Arc::clone(&self.config)),
            &mut stream,
        )?;
        Ok(TlsStream {
            inner: StreamOwned::new(conn, stream),
        })
    }
}

/// Connects TLS over tracked blocking streams, reporting each handshake.
#[derive(Debug, Clone)]
pub struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
}

impl From<Arc<rustls::ClientConfig>> for TlsConnector {
    fn from(config: Arc<rustls::ClientConfig>) -> Self {
        TlsConnector { config }
    }
}

impl TlsConnector {
    /// Runs the client handshake for `server_name` to completion, reporting it.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a malformed name, else the handshake's error, unchanged.
    pub fn connect<S: Read + Write>(
        &self,
        server_name: &str,
        mut stream: Tracked<S>,
    ) -> io::Result<ClientTlsStream<S>> {
        let report = Handshake::start(stream.connection(), Some(server_name));
        let name = match ServerName::try_from(server_name.to_owned()) {
            Ok(name) => name,
            Err(e) => return Err(report.fail(io::Error::new(io::ErrorKind::InvalidInput, e))),
        };
        let conn = ClientConnection::new(Arc::clone(&self.config), name);
        let conn = handshake(report, conn, &mut stream)?;
        Ok(TlsStream {
            inner: StreamOwned::new(conn, stream),
        })
    }
}
