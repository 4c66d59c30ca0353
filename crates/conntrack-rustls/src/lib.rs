//! TLS handshake tracing for conntrack, over rustls, independent of any runtime.
//!
//! Two pieces that every adapter's `tls` feature uses, so that their own TLS files stay a few
//! lines of glue:
//!
//! - [`tls_info`] (and [`TlsConnectionInfo`]) builds a [`conntrack_core::TlsInfo`] from any
//!   rustls connection: protocol `"1.2"`/`"1.3"`, the IANA cipher-suite name, ALPN, SNI,
//!   whether the session was resumed, and the number of peer certificates.
//! - [`Handshake`] times a handshake on a tracked [`Connection`] and reports it:
//!   `on_tls_handshake_start`, then `on_tls_handshake_done` with the info or the error; on
//!   success the connection's `tls` and `timings.tls_handshake` are set, on failure the failure
//!   is counted and remembered as the connection's last error.
//!
//! The crate forces no crypto provider: pick one (ring, aws-lc-rs) in your own rustls
//! configuration.
//!
//! ```
//! use conntrack_core::{Registration, Role, Tracker};
//! use conntrack_rustls::Handshake;
//! use std::io;
//!
//! let tracker = Tracker::new();
//! let conn = tracker.register(Registration::new(Role::Client));
//! let handshake = Handshake::start(&conn, Some("localhost"));
//! // ... drive the rustls handshake on the connection's stream ...
//! let failed = io::Error::new(io::ErrorKind::InvalidData, "received corrupt message");
//! handshake.finish(Err(&failed));
//! assert_eq!(tracker.stats().total().tls_handshake_failed, 1);
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

use std::io;
use std::time::Instant;

use conntrack_core::{Connection, PeerCertificates, TlsInfo};
use rustls::{CipherSuite, CommonState, HandshakeKind, ProtocolVersion};

/// `"1.3"`, `"1.2"`, `"1.1"`, `"1.0"`, or rustls' own name for anything else.
#[must_use]
pub fn protocol_name(version: ProtocolVersion) -> String {
    match version {
        ProtocolVersion::TLSv1_3 => "1.3".into(),
        ProtocolVersion::TLSv1_2 => "1.2".into(),
        ProtocolVersion::TLSv1_1 => "1.1".into(),
        ProtocolVersion::TLSv1_0 => "1.0".into(),
        other => other
            .as_str()
            .map_or_else(|| format!("0x{:04X}", u16::from(other)), str::to_owned),
    }
}

/// The IANA name of a cipher suite (`"TLS_AES_128_GCM_SHA256"`,
/// `"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"`), or its code point as `0xXXXX` if rustls has no
/// name for it.
///
/// rustls names TLS 1.3 suites `TLS13_*`; IANA names them `TLS_*`. TLS 1.2 names are the same.
#[must_use]
pub fn cipher_suite_name(suite: CipherSuite) -> String {
    match suite.as_str() {
        Some(name) => match name.strip_prefix("TLS13_") {
            Some(rest) => format!("TLS_{rest}"),
            None => name.to_owned(),
        },
        None => format!("0x{:04X}", u16::from(suite)),
    }
}

/// What a finished handshake negotiated; `None` while the handshake is still running.
///
/// `server_name` is the SNI: a server reads it from its `ServerConnection`
/// ([`TlsConnectionInfo`] does that), a client passes the name it asked for. The peer
/// certificate summary holds the count only (no X.509 parser is pulled in for the subject and
/// expiry).
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
        info = info.with_peer_certificates(PeerCertificates::new(certs.len()));
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
    fn tls_info(&self, server_name: Option<&str>) -> Option<TlsInfo> {
        tls_info(self, server_name)
    }
}

/// A TLS handshake in progress on a tracked connection, from [`Handshake::start`].
///
/// It holds a handle to the connection, so the tracker entry stays until the outcome is
/// reported even if the handshake future drops the stream on failure.
#[derive(Debug)]
#[must_use = "report the outcome with finish()"]
pub struct Handshake {
    conn: Connection,
    started: Instant,
}

impl Handshake {
    /// Fires `on_tls_handshake_start` and starts the clock.
    pub fn start(conn: &Connection, server_name: Option<&str>) -> Self {
        conn.report_tls_handshake_start(server_name);
        Handshake {
            conn: conn.clone(),
            started: Instant::now(),
        }
    }

    /// Reports the outcome (`on_tls_handshake_done`) with the elapsed time. The error is the
    /// caller's to return, unchanged.
    pub fn finish(self, result: Result<TlsInfo, &io::Error>) {
        self.conn
            .report_tls_handshake_done(result, self.started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iana_names_for_every_suite_rustls_ring_offers() {
        for suite in rustls::crypto::ring::ALL_CIPHER_SUITES {
            let name = cipher_suite_name(suite.suite());
            assert!(name.starts_with("TLS_"), "{name}");
            assert!(!name.starts_with("TLS13_"), "{name}");
        }
        assert_eq!(
            cipher_suite_name(CipherSuite::TLS13_AES_128_GCM_SHA256),
            "TLS_AES_128_GCM_SHA256"
        );
        assert_eq!(
            cipher_suite_name(CipherSuite::TLS13_AES_256_GCM_SHA384),
            "TLS_AES_256_GCM_SHA384"
        );
        assert_eq!(
            cipher_suite_name(CipherSuite::TLS13_CHACHA20_POLY1305_SHA256),
            "TLS_CHACHA20_POLY1305_SHA256"
        );
        assert_eq!(
            cipher_suite_name(CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
        );
        assert_eq!(
            cipher_suite_name(CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
        );
        assert_eq!(cipher_suite_name(CipherSuite::Unknown(0xFAFA)), "0xFAFA");
    }

    #[test]
    fn protocol_names() {
        assert_eq!(protocol_name(ProtocolVersion::TLSv1_3), "1.3");
        assert_eq!(protocol_name(ProtocolVersion::TLSv1_2), "1.2");
        assert_eq!(protocol_name(ProtocolVersion::Unknown(0x7F1C)), "0x7F1C");
    }
}
