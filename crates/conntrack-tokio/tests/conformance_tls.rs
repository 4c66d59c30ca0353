//! The shared conformance suite on tokio over TLS (tokio-rustls over tracked TCP streams).
//!
//! The tracker counts at the TCP level, so byte counts are ciphertext: the suite checks them
//! as "at least the plaintext" (`Harness::tls`).
//!
//! One adaptation, in the harness's streams rather than in the suite: closing a TCP socket
//! with unread data makes the kernel answer with a reset, which is how the suite's
//! `peer_reset_reported` produces one. Over TLS the TLS layer has already read the whole
//! record off the socket to decrypt the first byte, so the kernel no longer sees anything
//! unread and sends a plain FIN. Each end here therefore does what the kernel would: when it
//! is dropped with plaintext still unread in the TLS layer, it closes abortively
//! (`SO_LINGER` 0), and the peer gets a real TCP reset, which its tracked stream sees and
//! reports like any other.
#![cfg(feature = "tls")]

mod support;

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use conntrack_core::{DialerConfig, ListenerConfig, Tracker};
use conntrack_testkit::Harness;
use conntrack_tokio::tls::{ClientTlsStream, ServerTlsStream, TlsAcceptor, TlsConnector};
use conntrack_tokio::{Dialer, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use support::{runtime, TokioConn};

/// A TLS stream over a tracked TCP stream, either side.
trait TlsEnd: AsyncRead + AsyncWrite + Unpin + Send {
    /// Whether decrypted data is waiting in the TLS layer.
    fn unread_plaintext(&mut self) -> bool;
    fn tcp(&self) -> &TcpStream;
}

impl TlsEnd for ServerTlsStream<TcpStream> {
    fn unread_plaintext(&mut self) -> bool {
        self.get_mut()
            .1
            .process_new_packets()
            .is_ok_and(|s| s.plaintext_bytes_to_read() > 0)
    }
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0.get_ref()
    }
}

impl TlsEnd for ClientTlsStream<TcpStream> {
    fn unread_plaintext(&mut self) -> bool {
        self.get_mut()
            .1
            .process_new_packets()
            .is_ok_and(|s| s.plaintext_bytes_to_read() > 0)
    }
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0.get_ref()
    }
}

/// Closes abortively when dropped with unread plaintext, as the kernel does for a socket
/// closed with unread data (see the module docs). Everything else is forwarded.
struct ResetOnUnread<T: TlsEnd>(T);

impl<T: TlsEnd> Drop for ResetOnUnread<T> {
    fn drop(&mut self) {
        if self.0.unread_plaintext() {
            // A zero linger does not block on close; it only turns the FIN into a reset.
            #[allow(deprecated)]
            let _ = self.0.tcp().set_linger(Some(Duration::ZERO));
        }
    }
}

impl<T: TlsEnd> AsyncRead for ResetOnUnread<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: TlsEnd> AsyncWrite for ResetOnUnread<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

struct TokioTls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl TokioTls {
    fn new() -> Self {
        let (server, client) =
            conntrack_testkit::tls::self_signed(&["localhost"], rustls::DEFAULT_VERSIONS);
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
            let listener = Listener::new(&tracker, inner, listener);
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
                stream: Box::new(ResetOnUnread(server)),
                rt: rt.clone(),
            },
            TokioConn {
                id: cid,
                stream: Box::new(ResetOnUnread(client)),
                rt,
            },
        ))
    }
}

conntrack_testkit::conformance_tests!(TokioTls::new());

/// The adaptation above at work: over TLS too, a peer that closes with data unread gives the
/// other end a TCP reset (not TLS's "closed without close_notify"), and its `on_close`
/// carries it.
#[test]
fn peer_reset_over_tls_is_a_tcp_reset() {
    use conntrack_core::RecordingHook;
    use conntrack_testkit::Conn;

    let rec = RecordingHook::new();
    let tracker = Tracker::builder().hook(rec.clone()).build();
    let (mut server, mut client) = TokioTls::new()
        .connect(&tracker, ListenerConfig::new(), DialerConfig::new())
        .unwrap();
    let cid = client.id();
    client.write_all(b"never read").unwrap();
    client.flush().unwrap();
    server.read_exact(&mut [0u8; 1]).unwrap();
    drop(server);
    let mut err = None;
    for _ in 0..100 {
        match client.read_some(1024) {
            Ok(b) if b.is_empty() => drop(client.write_all(b"x")),
            Ok(_) => {}
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let err = err.expect("the client saw the reset");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
    drop(client);
    let ev = rec
        .wait_for(
            |ev| {
                ev.iter()
                    .any(|e| e.name() == "close" && e.id() == Some(cid))
            },
            Duration::from_secs(10),
        )
        .unwrap();
    let close = ev
        .iter()
        .find(|e| e.name() == "close" && e.id() == Some(cid))
        .unwrap();
    assert_eq!(
        close.error().map(|e| e.kind),
        Some(io::ErrorKind::ConnectionReset)
    );
}
