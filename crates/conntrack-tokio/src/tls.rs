//! TLS over tracked streams (feature `tls`): tokio-rustls acceptor and connector wrappers that
//! report the handshake to the tracker.
//!
//! Bytes are counted at the TCP level, below TLS: a `Tracked<TcpStream>` under the TLS stream
//! counts ciphertext, records and handshake included. Errors are seen at both levels: socket
//! errors by the tracked stream, and errors the TLS layer raises itself (a peer closing without
//! `close_notify`, a corrupt record) by [`TlsStream`], which remembers them on the connection
//! so `on_close` carries them. See `docs/tls.md`.
//!
//! ```no_run
//! # async fn run(server_config: std::sync::Arc<rustls::ServerConfig>) -> std::io::Result<()> {
//! use conntrack_core::{ListenerConfig, Tracker};
//! use conntrack_tokio::{tls::TlsAcceptor, Listener};
//!
//! let tracker = Tracker::new();
//! let inner = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
//! let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("https"));
//! let acceptor = TlsAcceptor::from(server_config);
//! loop {
//!     let (tcp, _peer) = listener.accept().await?;
//!     let acceptor = acceptor.clone();
//!     tokio::spawn(async move {
//!         // The handshake is timed and reported; on success the entry shows the TLS details.
//!         if let Ok(tls) = acceptor.accept(tcp).await {
//!             // serve `tls` ...
//! #           drop(tls);
//!         }
//!     });
//! }
//! # }
//! # let _ = run;
//! ```

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use conntrack_core::{Connection, ConnectionId, ConnectionInfo};
use conntrack_rustls::Handshake;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::{Dialer, Tracked};

/// A server TLS stream over a tracked stream, from [`TlsAcceptor::accept`].
pub type ServerTlsStream<S> = TlsStream<tokio_rustls::server::TlsStream<Tracked<S>>>;
/// A client TLS stream over a tracked stream, from [`TlsConnector::connect`].
pub type ClientTlsStream<S> = TlsStream<tokio_rustls::client::TlsStream<Tracked<S>>>;

/// A tokio-rustls stream over a [`Tracked`] stream that remembers every error it returns on the
/// tracked connection.
///
/// Socket errors are already seen by the tracked stream below; errors the TLS layer raises on
/// its own are not: a peer that closes without `close_notify` (`UnexpectedEof`), a corrupt or
/// unexpected record (`InvalidData`). This wrapper records them
/// ([`Connection::record_error`]), so [`on_close`](conntrack_core::Hook::on_close) carries the
/// error the application saw. (Per-I/O hooks keep seeing the socket-level reads and writes.)
///
/// It reads and writes like the tokio-rustls stream it wraps; [`get_ref`](Self::get_ref),
/// [`get_mut`](Self::get_mut) and [`into_inner`](Self::into_inner) give the same
/// `(Tracked<S>, rustls connection)` pair as tokio-rustls, and [`inner`](Self::inner) /
/// [`into_tls`](Self::into_tls) the tokio-rustls stream itself.
#[derive(Debug)]
pub struct TlsStream<T> {
    inner: T,
}

impl<T> TlsStream<T> {
    /// The tokio-rustls stream.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// The tokio-rustls stream, mutably. Errors returned through it directly are not
    /// recorded.
    pub fn inner_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// The tokio-rustls stream, unwrapped.
    pub fn into_tls(self) -> T {
        self.inner
    }
}

/// Accessors and the I/O traits, the same for the server and the client stream.
macro_rules! tls_stream {
    ($side:ident, $conn:ty) => {
        impl<S> TlsStream<tokio_rustls::$side::TlsStream<Tracked<S>>> {
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

            /// A finished write of plaintext: recorded as the connection's application data.
            fn wrote(&self, res: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
                res.map(|r| self.connection().app_write_result(r))
            }
        }

        impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead
            for TlsStream<tokio_rustls::$side::TlsStream<Tracked<S>>>
        {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                let this = self.get_mut();
                let before = buf.filled().len();
                let room = buf.remaining() > 0;
                let res = Pin::new(&mut this.inner).poll_read(cx, buf);
                res.map(|r| {
                    let conn = this.connection();
                    let r = conn.app_read_result(r.map(|()| buf.filled().len() - before));
                    // The peer's `close_notify`: its end of stream.
                    if room && matches!(r, Ok(0)) {
                        conn.record_app_eof();
                    }
                    r.map(drop)
                })
            }
        }

        impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite
            for TlsStream<tokio_rustls::$side::TlsStream<Tracked<S>>>
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

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                let this = self.get_mut();
                let res = Pin::new(&mut this.inner).poll_flush(cx);
                this.seen(res)
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                let this = self.get_mut();
                let res = Pin::new(&mut this.inner).poll_shutdown(cx);
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
    inner: tokio_rustls::TlsAcceptor,
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
    /// Runs the server handshake: fires `on_tls_handshake_start`, then `on_tls_handshake_done`
    /// with the negotiated [`TlsInfo`](conntrack_core::TlsInfo) (also set on the connection,
    /// with the handshake time) or the error, which is counted and returned unchanged.
    ///
    /// # Errors
    ///
    /// The handshake's error (garbage from the peer, a hang-up, no common protocol, ...).
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
    inner: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector").finish_non_exhaustive()
    }
}

impl From<Arc<rustls::ClientConfig>> for TlsConnector {
    fn from(config: Arc<rustls::ClientConfig>) -> Self {
        TlsConnector {
            inner: config.into(),
        }
    }
}

impl TlsConnector {
    /// Runs the client handshake for `server_name` (SNI and certificate name), reporting it as
    /// [`TlsAcceptor::accept`] does.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a malformed name, else the handshake's error (an untrusted
    /// certificate, a wrong name, ...), unchanged.
    pub async fn connect<S>(
        &self,
        server_name: &str,
        stream: Tracked<S>,
    ) -> io::Result<ClientTlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // The SNI as sent: none when the config turns SNI off.
        let sni = self.inner.config().enable_sni.then_some(server_name);
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

impl Dialer {
    /// TCP and TLS in one call, as httptrace sees a dial: DNS, connect attempts and the dial,
    /// then the TLS handshake, all on one tracked connection. `server_name` defaults to the
    /// host part of `target`.
    ///
    /// # Errors
    ///
    /// As [`Dialer::connect`], then as [`TlsConnector::connect`].
    pub async fn connect_tls(
        &self,
        target: &str,
        connector: &TlsConnector,
        server_name: Option<&str>,
    ) -> io::Result<ClientTlsStream<TcpStream>> {
        let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let name = server_name.unwrap_or(host).to_owned();
        let tcp = self.connect(target).await?;
        connector.connect(&name, tcp).await
    }
}
