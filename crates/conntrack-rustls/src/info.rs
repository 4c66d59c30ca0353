//! A [`TlsInfo`] from a rustls connection.

use conntrack_core::TlsInfo;
use rustls::{CommonState, HandshakeKind};

use crate::cert::peer_certificates;
use crate::names::{cipher_suite_name, protocol_name};

/// What a finished handshake negotiated; `None` while the handshake is still running.
///
/// `server_name` is the SNI: a server reads it from its `ServerConnection`
/// ([`TlsConnectionInfo`] does that), a client passes what it sent ([`sni`](crate::sni) of the
/// name it asked for; `None` for an IP address or with SNI turned off). The peer
/// certificate summary is the chain length and the leaf's subject and expiry (see
/// [`peer_certificates`](crate::peer_certificates)); a server that does not ask for client
/// certificates has none.
#[must_use]
pub fn tls_info(state: &CommonState, server_name: Option<&str>) -> Option<TlsInfo> {
    if state.is_handshaking() {
        return None;
    }
    let version = state
        .protocol_version()
        .map_or_else(|| "unknown".into(), protocol_name);
    let suite = state
        .negotiated_cipher_suite()
        .map_or_else(|| "unknown".into(), |s| cipher_suite_name(s.suite()));
    let mut info = TlsInfo::new(version, suite)
        .with_resumed(state.handshake_kind() == Some(HandshakeKind::Resumed));
    if let Some(alpn) = state.alpn_protocol() {
        info = info.with_alpn(alpn.to_vec());
    }
    if let Some(name) = server_name {
        info = info.with_server_name(name);
    }
    if let Some(certs) = state.peer_certificates() {
        info = info.with_peer_certificates(peer_certificates(certs));
    }
    Some(info)
}

/// [`tls_info`] for rustls' connection types.
pub trait TlsConnectionInfo {
    /// What the finished handshake negotiated. For a client, `server_name` is the name it
    /// asked for; a server takes the SNI it received and ignores the argument.
    fn tls_info(&self, server_name: Option<&str>) -> Option<TlsInfo>;
}

impl TlsConnectionInfo for rustls::ServerConnection {
    fn tls_info(&self, _server_name: Option<&str>) -> Option<TlsInfo> {
        tls_info(self, self.server_name())
    }
}

impl TlsConnectionInfo for rustls::ClientConnection {
    /// The client's `server_name` is reported as its SNI ([`sni`](crate::sni)): lowercase,
    /// no trailing dot, none for an IP address.
    fn tls_info(&self, server_name: Option<&str>) -> Option<TlsInfo> {
        tls_info(self, server_name.and_then(crate::sni).as_deref())
    }
}

impl TlsConnectionInfo for rustls::Connection {
    fn tls_info(&self, server_name: Option<&str>) -> Option<TlsInfo> {
        match self {
            rustls::Connection::Client(c) => c.tls_info(server_name),
            rustls::Connection::Server(s) => s.tls_info(server_name),
        }
    }
}

impl<T: TlsConnectionInfo + ?Sized> TlsConnectionInfo for &T {
    fn tls_info(&self, server_name: Option<&str>) -> Option<TlsInfo> {
        (**self).tls_info(server_name)
    }
}
