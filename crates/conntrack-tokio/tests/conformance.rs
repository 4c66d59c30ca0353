//! The shared conformance suite on tokio, over real loopback sockets.

use std::io::{self, IoSlice};
use std::sync::OnceLock;

use conntrack_core::{ConnectionId, DialerConfig, ListenerConfig, Tracker};
use conntrack_testkit::{Conn, Harness};
use conntrack_tokio::{Dialer, Listener, Tracked};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
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

struct Tokio;

struct TokioConn {
    stream: Tracked<TcpStream>,
    rt: Handle,
}

impl Harness for Tokio {
    type Conn = TokioConn;

    fn name(&self) -> &'static str {
        "tokio"
    }

    fn connect(
        &self,
        tracker: &Tracker,
        listener: ListenerConfig,
        dialer: DialerConfig,
    ) -> io::Result<(TokioConn, TokioConn)> {
        let rt = runtime().handle().clone();
        let tracker = tracker.clone();
        let (server, client) = rt.block_on(async move {
            let inner = TcpListener::bind("127.0.0.1:0").await?;
            let port = inner.local_addr()?.port();
            let mut listener = Listener::new(&tracker, inner, listener);
            let dialer = Dialer::new(&tracker, dialer);
            let target = format!("127.0.0.1:{port}");
            let (accepted, dialed) = tokio::join!(listener.accept(), dialer.connect(&target));
            io::Result::Ok((accepted?.0, dialed?))
        })?;
        Ok((
            TokioConn {
                stream: server,
                rt: rt.clone(),
            },
            TokioConn { stream: client, rt },
        ))
    }
}

impl Conn for TokioConn {
    fn id(&self) -> ConnectionId {
        self.stream.id()
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

conntrack_testkit::conformance_tests!(Tokio);
