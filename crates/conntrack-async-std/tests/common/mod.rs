//! The conformance harness for a futures-io runtime: each blocking `Conn` call blocks on the
//! runtime's `block_on`.

use std::future::Future;
use std::io::{self, IoSlice};
use std::marker::PhantomData;
use std::net::Shutdown;

use conntrack_async_std::Tracked;
use conntrack_core::{ConnectionId, DialerConfig, ListenerConfig, Tracker};
use conntrack_testkit::{Conn, Harness};
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A tracked `(server, client)` pair.
pub(crate) type Pair<S> = (Tracked<S>, Tracked<S>);

/// What the harness needs from a runtime.
pub(crate) trait Runtime: Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    const NAME: &'static str;

    fn block_on<F: Future>(f: F) -> F::Output;

    /// Binds a tracked listener on `127.0.0.1:0`, dials it as `"127.0.0.1:PORT"` with the
    /// runtime's tracked dialer, and accepts: `(server, client)`.
    fn pair(
        tracker: &Tracker,
        listener: ListenerConfig,
        dialer: DialerConfig,
    ) -> impl Future<Output = io::Result<Pair<Self::Stream>>>;

    fn shutdown(s: &Tracked<Self::Stream>, how: Shutdown) -> io::Result<()>;
}

pub(crate) struct AsyncHarness<R>(PhantomData<R>);

impl<R> AsyncHarness<R> {
    pub(crate) const fn new() -> Self {
        AsyncHarness(PhantomData)
    }
}

pub(crate) struct AsyncConn<R: Runtime>(pub(crate) Tracked<R::Stream>);

impl<R: Runtime> Harness for AsyncHarness<R> {
    type Conn = AsyncConn<R>;

    fn name(&self) -> &'static str {
        R::NAME
    }

    fn connect(
        &self,
        tracker: &Tracker,
        listener: ListenerConfig,
        dialer: DialerConfig,
    ) -> io::Result<(AsyncConn<R>, AsyncConn<R>)> {
        let (s, c) = R::block_on(R::pair(tracker, listener, dialer))?;
        Ok((AsyncConn(s), AsyncConn(c)))
    }
}

impl<R: Runtime> Conn for AsyncConn<R> {
    fn id(&self) -> ConnectionId {
        self.0.id()
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        R::block_on(self.0.write_all(buf))
    }

    fn write_all_vectored(&mut self, bufs: &[&[u8]]) -> io::Result<usize> {
        R::block_on(async {
            let mut slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
            let mut slices = &mut slices[..];
            let mut total = 0;
            // Bounded: every round writes at least one byte or fails.
            while !slices.is_empty() {
                let n = self.0.write_vectored(slices).await?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                total += n;
                IoSlice::advance_slices(&mut slices, n);
            }
            Ok(total)
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        R::block_on(self.0.flush())
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        R::block_on(self.0.read_exact(buf))
    }

    fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        R::block_on(self.0.read_to_end(&mut v))?;
        Ok(v)
    }

    fn read_some(&mut self, max: usize) -> io::Result<Vec<u8>> {
        let mut v = vec![0; max];
        let n = R::block_on(self.0.read(&mut v))?;
        v.truncate(n);
        Ok(v)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        R::shutdown(&self.0, Shutdown::Write)
    }
}
