//! The conformance harnesses (connections and dialer) for a futures-io runtime: each blocking
//! call blocks on the runtime's `block_on`.

use std::future::Future;
use std::io::{self, IoSlice};
use std::marker::PhantomData;
use std::net::Shutdown;

use conntrack_async_std::Tracked;
use std::net::SocketAddr;
use std::time::Duration;

use conntrack_core::{trace, ConnectionId, DialerConfig, ListenerConfig, RecordingHook, Tracker};
use conntrack_testkit::dialer::{DialHarness, DialRequest, DialTarget, Dialed};
use conntrack_testkit::{Conn, Harness, EVENT_TIMEOUT};
use futures_lite::future::FutureExt;
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

    /// Dials `target` with the runtime's tracked dialer (see [`dial_with`]).
    fn dial(
        tracker: &Tracker,
        config: DialerConfig,
        addrs: Option<Vec<SocketAddr>>,
        target: &DialTarget,
    ) -> impl Future<Output = io::Result<Tracked<Self::Stream>>>;

    /// The runtime's tracked dialer with `resolver`, as a blocking dial (see
    /// `DialHarness::shared_dialer`; [`dial_with`] writes it).
    fn shared_dialer(
        tracker: &Tracker,
        config: DialerConfig,
        resolver: conntrack_testkit::dialer::GatedResolver,
    ) -> conntrack_testkit::dialer::SharedDial;

    /// The runtime's timer.
    fn sleep(d: Duration) -> impl Future<Output = ()>;
}

/// The body of [`Runtime::dial`] for a runtime's `Dialer` type: resolving names to `addrs` when
/// given, `connect` for a name and `connect_addr` for an address.
macro_rules! dial_with {
    ($dialer:ty) => {
        async fn dial(
            tracker: &conntrack_core::Tracker,
            config: conntrack_core::DialerConfig,
            addrs: Option<Vec<std::net::SocketAddr>>,
            target: &conntrack_testkit::dialer::DialTarget,
        ) -> std::io::Result<conntrack_async_std::Tracked<Self::Stream>> {
            let mut dialer = <$dialer>::new(tracker, config);
            if let Some(addrs) = addrs {
                dialer = dialer.with_resolver(conntrack_testkit::dialer::fixed_resolver(addrs));
            }
            match target {
                conntrack_testkit::dialer::DialTarget::Name(t) => dialer.connect(t).await,
                conntrack_testkit::dialer::DialTarget::Addr(a) => dialer.connect_addr(*a).await,
            }
        }

        fn shared_dialer(
            tracker: &conntrack_core::Tracker,
            config: conntrack_core::DialerConfig,
            resolver: conntrack_testkit::dialer::GatedResolver,
        ) -> conntrack_testkit::dialer::SharedDial {
            let dialer = <$dialer>::new(tracker, config).with_resolver(resolver);
            Box::new(move |target| {
                let dialer = dialer.clone();
                let stream = Self::block_on(async move { dialer.connect(target).await })?;
                Ok(conntrack_testkit::dialer::Dialed {
                    id: stream.id(),
                    stream: Box::new(stream),
                })
            })
        }
    };
}
pub(crate) use dial_with;

/// Fails the test if `f` has not finished within the event timeout.
async fn bounded<R: Runtime, T>(what: &str, f: impl Future<Output = T>) -> T {
    f.or(async {
        R::sleep(EVENT_TIMEOUT).await;
        panic!("{}: {what} timed out", R::NAME)
    })
    .await
}

impl<R: Runtime> DialHarness for AsyncHarness<R> {
    fn name(&self) -> &'static str {
        R::NAME
    }

    fn dial(&self, req: DialRequest) -> io::Result<Dialed> {
        R::block_on(bounded::<R, _>("the dial", async move {
            let connecting = R::dial(&req.tracker, req.config, req.addrs, &req.target);
            let stream = match req.scope {
                Some(hook) => trace::scope(hook, connecting).await,
                None => connecting.await,
            }?;
            Ok(Dialed {
                id: stream.id(),
                stream: Box::new(stream),
            })
        }))
    }

    fn shared_dialer(
        &self,
        tracker: &Tracker,
        config: DialerConfig,
        resolver: conntrack_testkit::dialer::GatedResolver,
    ) -> conntrack_testkit::dialer::SharedDial {
        R::shared_dialer(tracker, config, resolver)
    }

    fn dial_then_drop(&self, req: DialRequest, started: RecordingHook) -> Option<bool> {
        let dial = async move {
            // `or` polls the dial first; once it is pending with its attempt started, the
            // second future completes and the dial future is dropped.
            let dialing = R::dial(&req.tracker, req.config, req.addrs, &req.target);
            async {
                let _ = dialing.await;
                false
            }
            .or(async {
                started
                    .until(|ev| ev.iter().any(|e| e.name() == "connect_start"))
                    .await;
                true
            })
            .await
        };
        Some(R::block_on(bounded::<R, _>("the dial's start", dial)))
    }
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

/// The `Conn` methods both ends share, blocking on the runtime `R` over `self.0` (any
/// futures-io stream): plain and vectored writes, flush and the reads.
macro_rules! blocking_io {
    () => {
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
    };
}

impl<R: Runtime> Conn for AsyncConn<R> {
    fn id(&self) -> ConnectionId {
        self.0.id()
    }

    blocking_io!();

    fn shutdown_write(&mut self) -> io::Result<()> {
        R::shutdown(&self.0, Shutdown::Write)
    }
}

/// The control suite's needs: a tracked listener, the runtime's sleep for the policies and
/// the shutdown.
pub(crate) trait ControlRuntime: Runtime {
    type Inner: conntrack_async_std::Accept<Stream = Self::Stream> + Send + Sync;

    fn bind() -> impl Future<Output = io::Result<(Self::Inner, SocketAddr)>>;
}

impl<R: ControlRuntime> conntrack_testkit::control::ControlHarness for AsyncHarness<R>
where
    AsyncHarness<R>: Sync,
{
    type Listener = conntrack_async_std::Listener<R::Inner>;

    fn listen(
        &self,
        tracker: &Tracker,
        config: ListenerConfig,
    ) -> io::Result<(Self::Listener, SocketAddr)> {
        let (inner, addr) = R::block_on(R::bind())?;
        Ok((
            conntrack_async_std::Listener::new(tracker, inner, config),
            addr,
        ))
    }

    fn accept(&self, listener: &Self::Listener) -> io::Result<AsyncConn<R>> {
        Ok(AsyncConn(R::block_on(listener.accept())?.0))
    }

    fn accept_within(
        &self,
        listener: &Self::Listener,
        limit: Duration,
    ) -> Option<io::Result<AsyncConn<R>>> {
        R::block_on(
            async { Some(listener.accept().await.map(|(s, _)| AsyncConn(s))) }.or(async {
                R::sleep(limit).await;
                None
            }),
        )
    }

    fn run_policies(&self, tracker: &Tracker, stop: conntrack_testkit::control::Stop) {
        let tracker = tracker.clone();
        std::thread::spawn(move || {
            R::block_on(stop.until(tracker.run_policies(R::sleep)));
        });
    }

    fn shutdown(&self, tracker: &Tracker, grace: Duration) -> conntrack_core::ShutdownReport {
        R::block_on(tracker.shutdown(grace, R::sleep))
    }
}

/// The conformance harness over TLS (futures-rustls): a tracked pair from [`Runtime::pair`],
/// then both handshakes at once. The tracker counts the ciphertext, so the suite's byte
/// checks become "at least the plaintext".
#[cfg(feature = "tls")]
pub(crate) mod tls {
    use std::sync::Arc;

    use conntrack_async_std::tls::{ClientTlsStream, ServerTlsStream, TlsAcceptor, TlsConnector};

    use super::*;

    /// One end of a TLS connection, the server's or the client's.
    pub(crate) trait TlsEnd: AsyncRead + AsyncWrite + Unpin + Send + 'static {
        fn id(&self) -> ConnectionId;
    }

    impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> TlsEnd for ServerTlsStream<S> {
        fn id(&self) -> ConnectionId {
            self.get_ref().0.id()
        }
    }

    impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> TlsEnd for ClientTlsStream<S> {
        fn id(&self) -> ConnectionId {
            self.get_ref().0.id()
        }
    }

    pub(crate) struct TlsHarness<R> {
        acceptor: TlsAcceptor,
        connector: TlsConnector,
        runtime: PhantomData<fn() -> R>,
    }

    impl<R> TlsHarness<R> {
        pub(crate) fn new() -> Self {
            let (server, client) =
                conntrack_testkit::tls::self_signed(&["localhost"], rustls::DEFAULT_VERSIONS);
            TlsHarness {
                acceptor: TlsAcceptor::from(Arc::new(server)),
                connector: TlsConnector::from(Arc::new(client)),
                runtime: PhantomData,
            }
        }
    }

    pub(crate) struct TlsConn<R>(Box<dyn TlsEnd>, PhantomData<fn() -> R>);

    impl<R: Runtime> Harness for TlsHarness<R> {
        type Conn = TlsConn<R>;

        fn name(&self) -> &'static str {
            if R::NAME == "smol" {
                "smol+tls"
            } else {
                "async-std+tls"
            }
        }

        fn tls(&self) -> bool {
            true
        }

        fn connect(
            &self,
            tracker: &Tracker,
            listener: ListenerConfig,
            dialer: DialerConfig,
        ) -> io::Result<(TlsConn<R>, TlsConn<R>)> {
            let (server, client) = R::block_on(R::pair(tracker, listener, dialer))?;
            let (server, client) = R::block_on(bounded::<R, _>(
                "the TLS handshakes",
                futures_lite::future::zip(
                    self.acceptor.accept(server),
                    self.connector.connect("localhost", client),
                ),
            ));
            Ok((
                TlsConn(Box::new(server?), PhantomData),
                TlsConn(Box::new(client?), PhantomData),
            ))
        }
    }

    impl<R: Runtime> Conn for TlsConn<R> {
        fn id(&self) -> ConnectionId {
            self.0.id()
        }

        blocking_io!();

        /// `close`: the TLS `close_notify`, then the socket's write half.
        fn shutdown_write(&mut self) -> io::Result<()> {
            R::block_on(self.0.close())
        }
    }
}
