//! The conformance suite over TLS on std: every scenario on rustls' blocking streams
//! (`conntrack_std::tls`) over tracked sockets. The tracker counts bytes at the TCP level, so
//! over TLS it sees the ciphertext: the suite's byte checks become "at least the plaintext".

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;

use conntrack_core::{ConnectionId, DialerConfig, ListenerConfig, Tracker};
use conntrack_std::tls::{ClientTlsStream, ServerTlsStream, TlsAcceptor, TlsConnector};
use conntrack_std::{Dialer, Listener};
use conntrack_testkit::{Conn, Harness};

/// One end of a TLS connection: the server's or the client's stream.
trait TlsEnd: Read + Write + Send + 'static {
    fn id(&self) -> ConnectionId;
    /// Sends `close_notify` and shuts the socket's write half.
    fn close_write(&mut self) -> io::Result<()>;
}

impl TlsEnd for ServerTlsStream<TcpStream> {
    fn id(&self) -> ConnectionId {
        self.get_ref().0.id()
    }
    fn close_write(&mut self) -> io::Result<()> {
        self.get_mut().1.send_close_notify();
        self.flush()?;
        self.get_ref().0.shutdown(Shutdown::Write)
    }
}

impl TlsEnd for ClientTlsStream<TcpStream> {
    fn id(&self) -> ConnectionId {
        self.get_ref().0.id()
    }
    fn close_write(&mut self) -> io::Result<()> {
        self.get_mut().1.send_close_notify();
        self.flush()?;
        self.get_ref().0.shutdown(Shutdown::Write)
    }
}

struct TlsConn(Box<dyn TlsEnd>);

impl Conn for TlsConn {
    fn id(&self) -> ConnectionId {
        self.0.id()
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }

    fn write_all_vectored(&mut self, bufs: &[&[u8]]) -> io::Result<usize> {
        // rustls' stream has no vectored write of its own: one write per buffer.
        let mut total = 0;
        for b in bufs {
            self.0.write_all(b)?;
            total += b.len();
        }
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
        self.0.close_write()
    }
}

struct StdTls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl StdTls {
    fn new() -> Self {
        let (server, client) =
            conntrack_testkit::tls::self_signed(&["localhost"], rustls::DEFAULT_VERSIONS);
        StdTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        }
    }
}

impl Harness for StdTls {
    type Conn = TlsConn;

    fn name(&self) -> &'static str {
        "std+tls"
    }

    fn tls(&self) -> bool {
        true
    }

    fn connect(
        &self,
        tracker: &Tracker,
        listener: ListenerConfig,
        dialer: DialerConfig,
    ) -> io::Result<(TlsConn, TlsConn)> {
        let listener = Listener::new(tracker, TcpListener::bind("127.0.0.1:0")?, listener);
        let port = listener.get_ref().local_addr()?.port();
        let acceptor = self.acceptor.clone();
        // The blocking handshakes run at the same time: the server's on its own thread.
        let server = std::thread::spawn(move || acceptor.accept(listener.accept()?.0));
        let tcp = Dialer::new(tracker, dialer).connect(format!("127.0.0.1:{port}"))?;
        let client = self.connector.connect("localhost", tcp)?;
        let server = server.join().expect("server handshake thread")?;
        Ok((TlsConn(Box::new(server)), TlsConn(Box::new(client))))
    }
}

conntrack_testkit::conformance_tests!(StdTls::new());
