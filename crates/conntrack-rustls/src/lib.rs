//! TLS handshake tracing for conntrack, over rustls, independent of any runtime.
//!
//! Two pieces that every adapter's `tls` feature uses, so that their own TLS files stay a few
//! lines of glue:
//!
//! - [`tls_info`] (and [`TlsConnectionInfo`]) builds a [`conntrack_core::TlsInfo`] from any
//!   rustls connection: protocol `"1.2"`/`"1.3"`, the IANA cipher-suite name, ALPN, SNI,
//!   whether the session was resumed, and the peer certificate chain summary (length, leaf
//!   subject and expiry, read by a small DER walk: no X.509 parser is pulled in).
//! - [`Handshake`] times a handshake on a tracked [`Connection`](conntrack_core::Connection)
//!   and reports it: `on_tls_handshake_start`, then `on_tls_handshake_done` with the info or
//!   the error; on success the connection's `tls` and `timings.tls_handshake` are set, on
//!   failure the failure is counted and remembered as the connection's last error. The error
//!   itself is handed back unchanged.
//!
//! The crate forces no crypto provider: pick one (ring, aws-lc-rs) in your own rustls
//! configuration. An adapter's handshake is this shape (here with rustls' blocking API):
//!
//! ```
//! use conntrack_core::{Registration, Role, Tracker};
//! use conntrack_rustls::Handshake;
//! use std::io;
//!
//! fn drive(conn: &mut rustls::ClientConnection, io: &mut impl io::Read) -> io::Result<()> {
//!     # let _ = (conn, io);
//!     // conn.complete_io(io) until the handshake is done ...
//!     Err(io::Error::new(io::ErrorKind::InvalidData, "received corrupt message"))
//! }
//!
//! # fn run(mut tls: rustls::ClientConnection, mut socket: std::net::TcpStream) {
//! let tracker = Tracker::new();
//! let conn = tracker.register(Registration::new(Role::Client)); // an adapter's Tracked does this
//! let handshake = Handshake::start(&conn, Some("localhost"));
//! match drive(&mut tls, &mut socket) {
//!     Ok(()) => handshake.complete(&tls),
//!     Err(e) => {
//!         let e = handshake.fail(e); // reported, counted, and returned unchanged
//!         assert_eq!(e.kind(), io::ErrorKind::InvalidData);
//!     }
//! }
//! # }
//! # let _ = run;
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod cert;
mod handshake;
mod info;
mod names;

pub use cert::peer_certificates;
pub use handshake::Handshake;
pub use info::{tls_info, TlsConnectionInfo};
pub use names::{cipher_suite_name, protocol_name, sni};

#[cfg(test)]
mod tests {
    //! Both sides of a real handshake, driven in memory.
    use std::sync::Arc;

    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

    use super::*;

    fn configs(
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (ServerConfig, ClientConfig) {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "test CA");
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        let key = KeyPair::generate().unwrap();
        let leaf = leaf.signed_by(&key, &ca).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone(), ca.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(ca.der().to_vec())).unwrap();
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"h2".to_vec()];
        (server, client)
    }

    /// Shuttles records between the two until neither is handshaking (bounded).
    fn handshake(server: &mut ServerConnection, client: &mut ClientConnection) {
        for _ in 0..20 {
            if !server.is_handshaking() && !client.is_handshaking() {
                return;
            }
            let mut buf = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                server.read_tls(&mut rd).unwrap();
            }
            server.process_new_packets().unwrap();
            let mut buf = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                client.read_tls(&mut rd).unwrap();
            }
            client.process_new_packets().unwrap();
        }
        panic!("handshake did not finish");
    }

    #[test]
    fn both_sides_of_a_tls13_handshake() {
        let (server, client) = configs(&[&rustls::version::TLS13]);
        let mut s = ServerConnection::new(Arc::new(server)).unwrap();
        let mut c =
            ClientConnection::new(Arc::new(client), "localhost".try_into().unwrap()).unwrap();
        assert!(s.tls_info(None).is_none(), "not done yet");
        handshake(&mut s, &mut c);
        let si = s.tls_info(None).unwrap();
        let ci = c.tls_info(Some("localhost")).unwrap();
        assert_eq!(ci.protocol_version, "1.3");
        assert!(ci.cipher_suite.starts_with("TLS_A") || ci.cipher_suite.starts_with("TLS_C"));
        assert_eq!(ci.alpn.as_deref(), Some(&b"h2"[..]));
        assert_eq!(ci.server_name.as_deref(), Some("localhost"));
        assert!(!ci.resumed);
        assert_eq!(
            (
                &si.protocol_version,
                &si.cipher_suite,
                &si.alpn,
                &si.server_name
            ),
            (
                &ci.protocol_version,
                &ci.cipher_suite,
                &ci.alpn,
                &ci.server_name
            )
        );
        let chain = ci.peer_certificates.clone().unwrap();
        assert_eq!(chain.count, 2);
        assert_eq!(chain.leaf_subject.as_deref(), Some("CN=localhost"));
        assert!(chain.leaf_not_after.is_some());
        assert!(
            si.peer_certificates.is_none(),
            "no client certificate asked for"
        );
        // The enum form agrees.
        let any = rustls::Connection::from(c);
        assert_eq!(any.tls_info(Some("localhost")), Some(ci));
    }

    #[test]
    fn tls12_handshake() {
        let (server, client) = configs(&[&rustls::version::TLS12]);
        let mut s = ServerConnection::new(Arc::new(server)).unwrap();
        let mut c =
            ClientConnection::new(Arc::new(client), "localhost".try_into().unwrap()).unwrap();
        handshake(&mut s, &mut c);
        let info = tls_info(&s, s.server_name()).unwrap();
        assert_eq!(info.protocol_version, "1.2");
        assert!(
            info.cipher_suite.starts_with("TLS_ECDHE_"),
            "{}",
            info.cipher_suite
        );
        assert_eq!(info.server_name.as_deref(), Some("localhost"));
    }
}
