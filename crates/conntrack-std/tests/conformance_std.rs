//! The shared conformance suites (connections and dialer) on blocking std sockets and
//! threads.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};

use conntrack_core::{
    blocking, trace, ConnectionId, DialerConfig, ListenerConfig, RecordingHook, Tracker,
};
use conntrack_std::{Dialer, Listener, Tracked};
use conntrack_testkit::dialer::{fixed_resolver, DialHarness, DialRequest, DialTarget, Dialed};
use conntrack_testkit::{Conn, Harness};

struct Std;

struct StdConn(Tracked<TcpStream>);

impl Harness for Std {
    type Conn = StdConn;

    fn name(&self) -> &'static str {
        "std"
    }

    fn connect(
        &self,
        tracker: &Tracker,
        listener: ListenerConfig,
        dialer: DialerConfig,
    ) -> io::Result<(StdConn, StdConn)> {
        let listener = Listener::new(tracker, TcpListener::bind("127.0.0.1:0")?, listener);
        let port = listener.get_ref().local_addr()?.port();
        // The connect completes in the listen backlog, before the accept.
        let client = Dialer::new(tracker, dialer).connect(format!("127.0.0.1:{port}"))?;
        let (server, _) = listener.accept()?;
        Ok((StdConn(server), StdConn(client)))
    }
}

impl Conn for StdConn {
    fn id(&self) -> ConnectionId {
        self.0.id()
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }

    fn write_all_vectored(&mut self, bufs: &[&[u8]]) -> io::Result<usize> {
        let mut slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
        let mut slices = &mut slices[..];
        let mut total = 0;
        // Bounded: every round writes at least one byte or fails.
        while !slices.is_empty() {
            let n = self.0.write_vectored(slices)?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            total += n;
            IoSlice::advance_slices(&mut slices, n);
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
        self.0.shutdown(Shutdown::Write)
    }
}

conntrack_testkit::conformance_tests!(Std);

impl DialHarness for Std {
    fn name(&self) -> &'static str {
        "std"
    }

    fn dial(&self, req: DialRequest) -> io::Result<Dialed> {
        let mut dialer = Dialer::new(&req.tracker, req.config);
        if let Some(addrs) = req.addrs {
            dialer = dialer.with_resolver(fixed_resolver(addrs));
        }
        let target = req.target;
        let connect = move || match &target {
            DialTarget::Name(t) => dialer.connect(t),
            DialTarget::Addr(a) => dialer.connect_addr(*a),
        };
        let stream = match req.scope {
            Some(hook) => trace::with(hook, connect),
            None => connect(),
        }?;
        Ok(Dialed {
            id: stream.id(),
            stream: Box::new(stream),
        })
    }

    fn shared_dialer(
        &self,
        tracker: &Tracker,
        config: DialerConfig,
        resolver: conntrack_testkit::dialer::GatedResolver,
    ) -> conntrack_testkit::dialer::SharedDial {
        let dialer = Dialer::new(tracker, config).with_resolver(resolver);
        Box::new(move |target| {
            let stream = dialer.clone().connect(target)?;
            Ok(Dialed {
                id: stream.id(),
                stream: Box::new(stream),
            })
        })
    }

    /// A blocking dial cannot be dropped in flight.
    fn dial_then_drop(&self, _: DialRequest, _: RecordingHook) -> Option<bool> {
        None
    }
}

conntrack_testkit::dialer_conformance_tests!(Std);

impl conntrack_testkit::control::ControlHarness for Std {
    type Listener = Listener<TcpListener>;

    fn listen(
        &self,
        tracker: &Tracker,
        config: ListenerConfig,
    ) -> io::Result<(Self::Listener, std::net::SocketAddr)> {
        let inner = TcpListener::bind("127.0.0.1:0")?;
        let addr = inner.local_addr()?;
        Ok((Listener::new(tracker, inner, config), addr))
    }

    fn accept(&self, listener: &Self::Listener) -> io::Result<StdConn> {
        Ok(StdConn(listener.accept()?.0))
    }

    /// Polls the listener in non-blocking mode until `limit` (`WouldBlock` is not a failure).
    fn accept_within(
        &self,
        listener: &Self::Listener,
        limit: std::time::Duration,
    ) -> Option<io::Result<StdConn>> {
        listener
            .get_ref()
            .set_nonblocking(true)
            .expect("non-blocking");
        let deadline = std::time::Instant::now() + limit;
        let res = loop {
            match listener.accept() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if std::time::Instant::now() >= deadline {
                        break None;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                other => break Some(other.map(|(s, _)| StdConn(s))),
            }
        };
        listener.get_ref().set_nonblocking(false).expect("blocking");
        res
    }

    fn run_policies(&self, tracker: &Tracker, stop: conntrack_testkit::control::Stop) {
        let tracker = tracker.clone();
        // The application's own thread: blocking code has no runtime to spawn on.
        std::thread::spawn(move || {
            blocking::block_on(stop.until(tracker.run_policies(blocking::sleep)));
        });
    }

    fn shutdown(
        &self,
        tracker: &Tracker,
        grace: std::time::Duration,
    ) -> conntrack_core::ShutdownReport {
        blocking::block_on(tracker.shutdown(grace, blocking::sleep))
    }
}

conntrack_testkit::control_tests!(Std);
