//! The tokio side of the conformance harness, shared by the plain and TLS suites: one
//! multi-thread runtime per test binary, and a blocking `Conn` over any tokio stream.

use std::io::{self, IoSlice};
use std::sync::OnceLock;

use conntrack_core::ConnectionId;
use conntrack_testkit::Conn;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::runtime::{Handle, Runtime};

/// One multi-thread runtime for the whole test binary; each blocking call enters it.
pub(crate) fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// Any tokio stream.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One end of a tracked connection (plain or TLS), driven with blocking calls.
pub(crate) struct TokioConn {
    pub(crate) id: ConnectionId,
    pub(crate) stream: Box<dyn Io>,
    pub(crate) rt: Handle,
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
