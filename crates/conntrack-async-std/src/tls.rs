//! TLS over tracked futures-io streams (feature `tls`): futures-rustls acceptor and connector
//! wrappers that report the handshake to the tracker, on smol and async-std alike.
//!
//! Bytes are counted at the TCP level, below TLS (ciphertext). See `docs/tls.md`. All the
//! reporting lives in `conntrack-rustls`; this file is the futures-rustls glue.

use std::io;
use std::sync::Arc;

use conntrack_rustls::Handshake;
use futures_io::{AsyncRead, AsyncWrite};
use rustls::pki_types::ServerName;

use crate::Tracked;

/// A futures-rustls server stream over a tracked stream.
pub type ServerTlsStream<S> = futures_rustls::server::TlsStream<Tracked<S>>;
/// A futures-rustls client stream over a tracked stream.
pub type ClientTlsStream<S> = futures_rustls::client::TlsStream<Tracked<S>>;

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
                Ok(tls)
            }
            Err(e) => Err(handshake.fail(e)),
        }
    }
}

/// Connects TLS over tracked streams, reporting each handshake.
#[derive(Clone)]
pub struct TlsConnector {
    inner: futures_rustls::TlsConnector,
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
