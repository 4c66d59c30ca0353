//! The shared conformance suite on tokio over TLS (tokio-rustls over tracked TCP streams).
//!
//! The tracker counts at the TCP level, so byte counts are ciphertext: the suite checks them
//! as "at least the plaintext" (`Harness::tls`).
#![cfg(feature = "tls")]

mod support;

use std::io;
use std::sync::Arc;

use conntrack_core::{DialerConfig, ListenerConfig, Tracker};
use conntrack_testkit::Harness;
use conntrack_tokio::tls::{TlsAcceptor, TlsConnector};
use conntrack_tokio::{Dialer, Listener};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

use support::{runtime, TokioConn};

struct TokioTls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl TokioTls {
    fn new() -> Self {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der())),
            )
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TokioTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        }
    }
}

impl Harness for TokioTls {
    type Conn = TokioConn;

    fn name(&self) -> &'static str {
        "tokio+tls"
    }

    fn tls(&self) -> bool {
        true
    }

    fn connect(
        &self,
        tracker: &Tracker,
        listener: ListenerConfig,
        dialer: DialerConfig,
    ) -> io::Result<(TokioConn, TokioConn)> {
        let rt = runtime().handle().clone();
        let tracker = tracker.clone();
        let (acceptor, connector) = (self.acceptor.clone(), self.connector.clone());
        let (server, client) = rt.block_on(async move {
            let inner = TcpListener::bind("127.0.0.1:0").await?;
            let port = inner.local_addr()?.port();
            let mut listener = Listener::new(&tracker, inner, listener);
            let dialer = Dialer::new(&tracker, dialer);
            let target = format!("127.0.0.1:{port}");
            let (accepted, dialed) = tokio::join!(
                async { acceptor.accept(listener.accept().await?.0).await },
                dialer.connect_tls(&target, &connector, Some("localhost"))
            );
            io::Result::Ok((accepted?, dialed?))
        })?;
        let sid = server.get_ref().0.id();
        let cid = client.get_ref().0.id();
        Ok((
            TokioConn {
                id: sid,
                stream: Box::new(server),
                rt: rt.clone(),
            },
            TokioConn {
                id: cid,
                stream: Box::new(client),
                rt,
            },
        ))
    }
}

conntrack_testkit::conformance_tests!(TokioTls::new());
