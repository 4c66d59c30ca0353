//! TLS over tracked futures-io streams (feature `tls`): futures-rustls acceptor and connector
//! wrappers that report the handshake to the tracker, on smol and async-std alike.
//!
//! Bytes are counted at the TCP level, below TLS (ciphertext). Errors the TLS layer raises
//! itself (no `close_notify`, a corrupt record) are remembered on the connection by
//! [`TlsStream`], so `on_close` carries them. See `docs/tls.md`. All the handshake reporting
//! lives in `conntrack-rustls`; this file is the futures-rustls glue.

use std::io::{self, IoSlice, IoSliceMut};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use conntrack_core::{Connection, ConnectionId, ConnectionInfo};
use conntrack_rustls::Handshake;
use futures_io::{AsyncRead, AsyncWrite};
use rustls::pki_types::ServerName;

use crate::Tracked;

/// A server TLS stream over a tracked stream, from [`TlsAcceptor::accept`].
pub type ServerTlsStream<S> = TlsStream<futures_rustls::server::TlsStream<Tracked<S>>>;
/// A client TLS stream over a tracked stream, from [`TlsConnector::connect`].
pub type ClientTlsStream<S> = TlsStream<futures_rustls::client::TlsStream<Tracked<S>>>;

/// A futures-rustls stream over a [`Tracked`] stream that remembers every error it returns on
/// the tracked connection.
///
/// Socket errors are already seen by the tracked stream below; errors the TLS layer raises on
/// its own are not: a peer that closes without `close_notify` (`UnexpectedEof`), a corrupt or
/// unexpected record (`InvalidData`). This wrapper records them
/// ([`Connection::record_error`]), so [`on_close`](conntrack_core::Hook::on_close) carries the
/// error the application saw. (Per-I/O hooks keep seeing the socket-level reads and writes.)
///
/// [`get_ref`](Self::get_ref), [`get_mut`](Self::get_mut) and
/// [`into_inner`](Self::into_inner) give the same `(Tracked<S>, rustls connection)` pair as
/// futures-rustls; [`inner`](Self::inner) / [`into_tls`](Self::into_tls) the futures-rustls
/// stream itself.
#[derive(Debug)]
pub struct TlsStream<T> {
    inner: T,
}

impl<T> TlsStream<T> {
    /// The futures-rustls stream.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// The futures-rustls stream, mutably. Errors returned through it directly are not
    /// recorded.
    pub fn inner_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// The futures-rustls stream, unwrapped.
    pub fn into_tls(self) -> T {
        self.inner
    }
}

/// Accessors and the I/O traits, the same for the server and the client stream.
macro_rules! tls_stream {
    ($side:ident, $conn:ty) => {
        impl<S> TlsStream<futures_rustls::$side::TlsStream<Tracked<S>>> {
            /// The tracked stream and the rustls connection.
            pub fn get_ref(&self) -> (&Tracked<S>, &$conn) {
                self.inner.get_ref()
            }

            /// The tracked stream and the rustls connection, mutably.
            pub fn get_mut(&mut self) -> (&mut Tracked<S>, &mut $conn) {
                self.inner.get_mut()
            }

            /// The tracked stream and the rustls connection, unwrapped.
            pub fn into_inner(self) -> (Tracked<S>, $conn) {
                self.inner.into_inner()
            }

            /// The tracked connection's handle.
            pub fn connection(&self) -> &Connection {
                self.inner.get_ref().0.connection()
            }

            /// The tracked connection's id.
            pub fn id(&self) -> ConnectionId {
                self.connection().id()
            }

            /// A snapshot of the tracked connection (TLS details included).
            pub fn info(&self) -> ConnectionInfo {
                self.connection().info()
            }

            fn seen<R>(&self, res: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
                if let Poll::Ready(Err(e)) = &res {
                    self.connection().record_error(e);
                }
                res
            }

            /// A finished read of plaintext: recorded as the connection's application data; a
            /// 0 into `room` is the peer's `close_notify`, its end of stream.
            fn read_done(
                &self,
                res: Poll<io::Result<usize>>,
                room: bool,
            ) -> Poll<io::Result<usize>> {
                res.map(|r| {
                    let conn = self.connection();
                    let r = conn.app_read_result(r);
                    if room && matches!(r, Ok(0)) {
                        conn.record_app_eof();
                    }
                    r
                })
            }

            /// A finished write of plaintext: recorded as the connection's application data.
            fn wrote(&self, res: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
                res.map(|r| self.connection().app_write_result(r))
            }
        }

        impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead
            for TlsStream<futures_rustls::$side::TlsStream<Tracked<S>>>
        {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<io::Result<usize>> {
                let this = self.get_mut();
                let room = !buf.is_empty();
                let res = Pin::new(&mut this.inner).poll_read(cx, buf);
                this.read_done(res, room)
            }

            fn poll_read_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &mut [IoSliceMut<'_>],
            ) -> Poll<io::Result<usize>> {
                let this = self.get_mut();
                let room = bufs.iter().any(|b| !b.is_empty());
                let res = Pin::new(&mut this.inner).poll_read_vectored(cx, bufs);
                this.read_done(res, room)
            }
        }

        impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite
            for TlsStream<futures_rustls::$side::TlsStream<Tracked<S>>>
        {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                let this = self.get_mut();
                let res = Pin::new(&mut this.inner).poll_write(cx, buf);
                this.wrote(res)
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                let this = self.get_mut();
                let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
                this.wrote(res)
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                let this = self.get_mut();
                let res = Pin::new(&mut this.inner).poll_flush(cx);
                this.seen(res)
            }

            fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                let this = self.get_mut();
                let res = Pin::new(&mut this.inner).poll_close(cx);
                this.seen(res)
            }
        }
    };
}

tls_stream!(server, rustls::ServerConnection);
tls_stream!(client, rustls::ClientConnection);

/// Accepts TLS on tracked streams, reporting each handshake.
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: futures_rustls::TlsAcceptor,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptor").finish_non_exhaustive()
    }
}

impl From<Arc<rustls::ServerConfig>> for TlsAcceptor {
    fn from(config: Arc<rustls::ServerConfig>) -> Self {
        TlsAcceptor {
            inner: config.into(),
        }
    }
}

impl TlsAcceptor {
    /// Runs the server handshake, reporting it (`on_tls_handshake_start` / `_done`, the
    /// connection's `tls` and `timings.tls_handshake`, or the counted failure).
    ///
    /// # Errors
    ///
    /// The handshake's error, unchanged.
    pub async fn accept<S>(&self, stream: Tracked<S>) -> io::Result<ServerTlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let handshake = Handshake::start(stream.connection(), None);
        match self.inner.accept(stream).await {
            Ok(tls) => {
                handshake.complete(tls.get_ref().1);
                Ok(TlsStream { inner: tls })
            }
            Err(e) => Err(handshake.fail(e)),
        }
    }
}

/// Connects TLS over tracked streams, reporting each handshake.
#[derive(Clone)]
pub struct TlsConnector {
    inner: futures_rustls::TlsConnector,
    /// `ClientConfig::enable_sni`: whether a server name goes out as SNI.
    sends_sni: bool,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector").finish_non_exhaustive()
    }
}

impl From<Arc<rustls::ClientConfig>> for TlsConnector {
    fn from(config: Arc<rustls::ClientConfig>) -> Self {
        TlsConnector {
            sends_sni: config.enable_sni,
            inner: config.into(),
        }
    }
}

impl TlsConnector {
    /// Runs the client handshake for `server_name` (SNI and certificate name), reporting it.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a malformed name, else the handshake's error, unchanged.
    pub async fn connect<S>(
        &self,
        server_name: &str,
        stream: Tracked<S>,
    ) -> io::Result<ClientTlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // The SNI as sent: none when the config turns SNI off.
        let sni = self.sends_sni.then_some(server_name);
        let handshake = Handshake::start(stream.connection(), sni);
        let name = match ServerName::try_from(server_name.to_owned()) {
            Ok(name) => name,
            Err(e) => return Err(handshake.fail(io::Error::new(io::ErrorKind::InvalidInput, e))),
        };
        match self.inner.connect(name, stream).await {
            Ok(tls) => {
                handshake.complete(tls.get_ref().1);
                Ok(TlsStream { inner: tls })
            }
            Err(e) => Err(handshake.fail(e)),
        }
    }
}
