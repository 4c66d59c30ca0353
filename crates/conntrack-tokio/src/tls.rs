//! TLS over tracked streams (feature `tls`): tokio-rustls acceptor and connector wrappers that
//! report the handshake to the tracker.
//!
//! Bytes are counted at the TCP level, below TLS: a `Tracked<TcpStream>` under the TLS stream
//! counts ciphertext, records and handshake included. See `docs/tls.md`.
//!
//! ```no_run
//! # async fn run(server_config: std::sync::Arc<rustls::ServerConfig>) -> std::io::Result<()> {
//! use conntrack_core::{ListenerConfig, Tracker};
//! use conntrack_tokio::{tls::TlsAcceptor, Listener};
//!
//! let tracker = Tracker::new();
//! let inner = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
//! let mut listener = Listener::new(&tracker, inner, ListenerConfig::new().category("https"));
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

use std::io;
use std::sync::Arc;

use conntrack_rustls::Handshake;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::{Dialer, Tracked};

/// A tokio-rustls server stream over a tracked stream.
pub type ServerTlsStream<S> = tokio_rustls::server::TlsStream<Tracked<S>>;
/// A tokio-rustls client stream over a tracked stream.
pub type ClientTlsStream<S> = tokio_rustls::client::TlsStream<Tracked<S>>;

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
                Ok(tls)
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
        let handshake = Handshake::start(stream.connection(), Some(server_name));
        let name = match ServerName::try_from(server_name.to_owned()) {
            Ok(name) => name,
            Err(e) => return Err(handshake.fail(io::Error::new(io::ErrorKind::InvalidInput, e))),
        };
        match self.inner.connect(name, stream).await {
            Ok(tls) => {
                handshake.complete(tls.get_ref().1);
                Ok(tls)
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
