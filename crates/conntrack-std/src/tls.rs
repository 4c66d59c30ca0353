//! TLS over tracked blocking streams (feature `tls`): rustls' `StreamOwned` with the handshake
//! driven to completion up front and reported to the tracker.
//!
//! Bytes are counted at the TCP level, below TLS (ciphertext). See `docs/tls.md`. All the
//! reporting lives in `conntrack-rustls`; this file drives rustls' blocking handshake.

use std::io::{self, Read, Write};
use std::sync::Arc;

use conntrack_core::TlsInfo;
use conntrack_rustls::{Handshake, TlsConnectionInfo};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, ServerConnection, StreamOwned};

use crate::Tracked;

/// A rustls server stream over a tracked stream, handshake done.
pub type ServerTlsStream<S> = StreamOwned<ServerConnection, Tracked<S>>;
/// A rustls client stream over a tracked stream, handshake done.
pub type ClientTlsStream<S> = StreamOwned<ClientConnection, Tracked<S>>;

/// Drives `conn`'s handshake on `stream` and reports it; the error, if any, is returned as is.
fn handshake<C, S>(
    report: Handshake,
    conn: Result<C, rustls::Error>,
    stream: &mut Tracked<S>,
    info: impl FnOnce(&C) -> Option<TlsInfo>,
) -> io::Result<C>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<<C as TlsSide>::Data>> + TlsSide,
    S: Read + Write,
{
    let run = |conn: Result<C, rustls::Error>, stream: &mut Tracked<S>| -> io::Result<C> {
        let mut conn = conn.map_err(io::Error::other)?;
        while conn.is_handshaking() {
            conn.complete_io(stream)?;
        }
        Ok(conn)
    };
    match run(conn, stream) {
        Ok(conn) => {
            match info(&conn) {
                Some(i) => report.finish(Ok(i)),
                None => report.finish(Err(&io::Error::other(
                    "TLS handshake done but still in progress",
                ))),
            }
            Ok(conn)
        }
        Err(e) => {
            report.finish(Err(&e));
            Err(e)
        }
    }
}

/// The two rustls connection sides (their per-side data type).
pub(crate) trait TlsSide {
    /// rustls' side data.
    type Data;
}

impl TlsSide for ServerConnection {
    type Data = rustls::server::ServerConnectionData;
}

impl TlsSide for ClientConnection {
    type Data = rustls::client::ClientConnectionData;
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
            |c| c.tls_info(None),
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
            Err(e) => {
                let e = io::Error::new(io::ErrorKind::InvalidInput, e);
                report.finish(Err(&e));
                return Err(e);
            }
        };
        let conn = ClientConnection::new(Arc::clone(&self.config), name);
        let conn = handshake(report, conn, &mut stream, |c| c.tls_info(Some(server_name)))?;
        Ok(StreamOwned::new(conn, stream))
    }
}
