//! TLS over tracked blocking streams (feature `tls`): rustls' `StreamOwned` with the handshake
//! driven to completion up front and reported to the tracker.
//!
//! Bytes are counted at the TCP level, below TLS (ciphertext). See `docs/tls.md`. All the
//! reporting lives in `conntrack-rustls`; this file drives rustls' blocking handshake.

use std::io::{self, Read, Write};
use std::ops::DerefMut;
use std::sync::Arc;

use conntrack_rustls::{Handshake, TlsConnectionInfo};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, ConnectionCommon, ServerConnection, StreamOwned};

use crate::Tracked;

/// A rustls server stream over a tracked stream, handshake done.
pub type ServerTlsStream<S> = StreamOwned<ServerConnection, Tracked<S>>;
/// A rustls client stream over a tracked stream, handshake done.
pub type ClientTlsStream<S> = StreamOwned<ClientConnection, Tracked<S>>;

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
        Ok(StreamOwned::new(conn, stream))
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
        Ok(StreamOwned::new(conn, stream))
    }
}
