//! The shared conformance suite on tokio over TLS (tokio-rustls over tracked TCP streams).
//!
//! The tracker counts at the TCP level, so byte counts are ciphertext: the suite checks them
//! as "at least the plaintext" (`Harness::tls`).
#![cfg(feature = "tls")]

use std::io::{self, IoSlice};
use std::sync::{Arc, OnceLock};

use conntrack_core::{ConnectionId, DialerConfig, ListenerConfig, Tracker};
use conntrack_testkit::{Conn, Harness};
use conntrack_tokio::tls::{TlsAcceptor, TlsConnector};
use conntrack_tokio::{Dialer, Listener};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::runtime::{Handle, Runtime};

/// One multi-thread runtime for the whole test binary; each blocking call enters it.
fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

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

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct TokioConn {
    id: ConnectionId,
    stream: Box<dyn Io>,
    rt: Handle,
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

impl Conn for TokioConn {
    fn id(&self) -> ConnectionId {
        self.id
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.rt.block_on(self.stream.write_all(buf))
    }

    fn write_all_vectored(&mut self, bufs: &[&[u8]]) -> io::Result<usize> {
        let s = &mut self.stream;
        self.rt.block_on(async move {
            let total: usize = bufs.iter().map(|b| b.len()).sum();
            let mut done = 0;
            let mut reported = 0;
            while done < total {
                // Rebuild the slices past what is already written.
                let mut skip = done;
                let mut slices = Vec::new();
                for b in bufs {
                    if skip >= b.len() {
                        skip -= b.len();
                        continue;
                    }
                    slices.push(IoSlice::new(&b[skip..]));
                    skip = 0;
                }
                let n = s.write_vectored(&slices).await?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                done += n;
                reported += n;
            }
            Ok(reported)
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        self.rt.block_on(self.stream.flush())
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.rt.block_on(self.stream.read_exact(buf)).map(drop)
    }

    fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        self.rt.block_on(self.stream.read_to_end(&mut v))?;
        Ok(v)
    }

    fn read_some(&mut self, max: usize) -> io::Result<Vec<u8>> {
        let mut v = vec![0; max];
        let n = self.rt.block_on(self.stream.read(&mut v))?;
        v.truncate(n);
        Ok(v)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.rt.block_on(self.stream.shutdown())
    }
}

conntrack_testkit::conformance_tests!(TokioTls::new());
