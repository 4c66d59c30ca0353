//! The shared load scenarios (`conntrack_testkit::load`) on blocking std sockets: many
//! concurrent tracked pairs with exact counts, and a churn of connections ending in bad ways.
//! CI runs the default sizes; `cargo xtask stress` runs 9,000 pairs and 100,000 connections.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};

use conntrack_core::{ConnectionId, DialerConfig, ListenerConfig, Tracker};
use conntrack_std::{Dialer, Listener, Tracked};
use conntrack_testkit::load::{self, Endpoints, LoadHarness};
use conntrack_testkit::Conn;

struct Std;

struct StdEnds {
    listener: Listener<TcpListener>,
    dialer: Dialer,
    addr: SocketAddr,
    #[cfg(feature = "tls")]
    tls: conntrack_std::tls::TlsAcceptor,
}

struct StdConn(Tracked<TcpStream>);

impl LoadHarness for Std {
    type Endpoints = StdEnds;

    fn bind(
        &self,
        tracker: &Tracker,
        listener: ListenerConfig,
        dialer: DialerConfig,
    ) -> io::Result<StdEnds> {
        let inner = TcpListener::bind("127.0.0.1:0")?;
        let addr = inner.local_addr()?;
        Ok(StdEnds {
            listener: Listener::new(tracker, inner, listener),
            dialer: Dialer::new(tracker, dialer),
            addr,
            #[cfg(feature = "tls")]
            tls: tls_acceptor(),
        })
    }
}

impl Endpoints for StdEnds {
    type Conn = StdConn;

    fn name(&self) -> &'static str {
        "std"
    }

    fn dial(&mut self) -> io::Result<StdConn> {
        self.dialer.connect_addr(self.addr).map(StdConn)
    }

    fn accept(&mut self) -> io::Result<StdConn> {
        self.listener.accept().map(|(s, _)| StdConn(s))
    }

    // A blocking dial or accept cannot be cancelled: those steps fall back to a clean echo.

    #[cfg(feature = "tls")]
    fn tls_garbage(&mut self, server: StdConn) -> Option<io::Result<()>> {
        Some(self.tls.accept(server.0).map(drop))
    }
}

#[cfg(feature = "tls")]
fn tls_acceptor() -> conntrack_std::tls::TlsAcceptor {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use std::sync::Arc;
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der())),
    )
    .unwrap();
    Arc::new(config).into()
}

impl Conn for StdConn {
    fn id(&self) -> ConnectionId {
        self.0.id()
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }

    fn write_all_vectored(&mut self, bufs: &[&[u8]]) -> io::Result<usize> {
        let slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
        let n = self.0.write_vectored(&slices)?;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        // Small loopback writes go out whole; finish the rest plainly if not.
        let rest: Vec<u8> = bufs.concat().split_off(n);
        self.0.write_all(&rest)?;
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_exact(buf)
    }

    fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        self.0.read_to_end(&mut v)?;
        Ok(v)
    }

    fn read_some(&mut self, max: usize) -> io::Result<Vec<u8>> {
        let mut v = vec![0; max];
        let n = self.0.read(&mut v)?;
        v.truncate(n);
        Ok(v)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.0.shutdown(Shutdown::Write)
    }
}

#[test]
fn concurrent_pairs() {
    let n = load::size("CONNTRACK_STRESS_CONNS", load::DEFAULT_PAIRS);
    let r = load::concurrent_pairs(&Std, n);
    println!("std load: {r:?}");
}

#[test]
fn churn_with_faults() {
    let n = load::size("CONNTRACK_CHURN_CONNS", load::DEFAULT_CHURN);
    let r = load::churn_with_faults(&Std, n);
    println!("std churn: {r:?}");
}
