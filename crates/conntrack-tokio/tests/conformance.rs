//! The shared conformance suites (connections and dialer) on tokio, over real loopback
//! sockets.

mod support;

use std::io;

use conntrack_core::{trace, DialerConfig, ListenerConfig, RecordingHook, Tracker};
use conntrack_testkit::dialer::{fixed_resolver, DialHarness, DialRequest, DialTarget, Dialed};
use conntrack_testkit::Harness;
use conntrack_tokio::{Dialer, Listener};
use tokio::net::TcpListener;

use support::{runtime, TokioConn};

struct Tokio;

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
            let listener = Listener::new(&tracker, inner, listener);
            let dialer = Dialer::new(&tracker, dialer);
            let target = format!("127.0.0.1:{port}");
            let (accepted, dialed) = tokio::join!(listener.accept(), dialer.connect(&target));
            io::Result::Ok((accepted?.0, dialed?))
        })?;
        Ok((
            TokioConn {
                id: server.id(),
                stream: Box::new(server),
                rt: rt.clone(),
            },
            TokioConn {
                id: client.id(),
                stream: Box::new(client),
                rt,
            },
        ))
    }
}

conntrack_testkit::conformance_tests!(Tokio);

impl DialHarness for Tokio {
    fn name(&self) -> &'static str {
        "tokio"
    }

    fn dial(&self, req: DialRequest) -> io::Result<Dialed> {
        runtime().block_on(async move {
            let dial = dial(req);
            tokio::time::timeout(conntrack_testkit::EVENT_TIMEOUT, dial)
                .await
                .expect("the dial finishes")
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
            let dialer = dialer.clone();
            let stream = runtime().block_on(async move {
                tokio::time::timeout(conntrack_testkit::EVENT_TIMEOUT, dialer.connect(target))
                    .await
                    .expect("the dial finishes")
            })?;
            Ok(Dialed {
                id: stream.id(),
                stream: Box::new(stream),
            })
        })
    }

    fn dial_then_drop(&self, req: DialRequest, started: RecordingHook) -> Option<bool> {
        let race = async move {
            tokio::select! {
                biased;
                _ = dial(req) => false,
                _ = started.until(|ev| ev.iter().any(|e| e.name() == "connect_start")) => true,
            }
        };
        Some(runtime().block_on(async move {
            tokio::time::timeout(conntrack_testkit::EVENT_TIMEOUT, race)
                .await
                .expect("the dial starts connecting")
        }))
    }
}

async fn dial(req: DialRequest) -> io::Result<Dialed> {
    let mut dialer = Dialer::new(&req.tracker, req.config);
    if let Some(addrs) = req.addrs {
        dialer = dialer.with_resolver(fixed_resolver(addrs));
    }
    let connecting = async {
        match &req.target {
            DialTarget::Name(t) => dialer.connect(t).await,
            DialTarget::Addr(a) => dialer.connect_addr(*a).await,
        }
    };
    let stream = match req.scope {
        Some(hook) => trace::scope(hook, connecting).await,
        None => connecting.await,
    }?;
    Ok(Dialed {
        id: stream.id(),
        stream: Box::new(stream),
    })
}

conntrack_testkit::dialer_conformance_tests!(Tokio);

impl conntrack_testkit::control::ControlHarness for Tokio {
    type Listener = Listener<TcpListener>;

    fn listen(
        &self,
        tracker: &Tracker,
        config: ListenerConfig,
    ) -> io::Result<(Self::Listener, std::net::SocketAddr)> {
        let inner = runtime().block_on(TcpListener::bind("127.0.0.1:0"))?;
        let addr = inner.local_addr()?;
        Ok((Listener::new(tracker, inner, config), addr))
    }

    fn accept(&self, listener: &Self::Listener) -> io::Result<TokioConn> {
        let rt = runtime().handle().clone();
        let (stream, _) = rt.block_on(listener.accept())?;
        Ok(TokioConn {
            id: stream.id(),
            stream: Box::new(stream),
            rt,
        })
    }

    fn accept_within(
        &self,
        listener: &Self::Listener,
        limit: std::time::Duration,
    ) -> Option<io::Result<TokioConn>> {
        let rt = runtime().handle().clone();
        let res = rt.block_on(async { tokio::time::timeout(limit, listener.accept()).await });
        Some(res.ok()?.map(|(stream, _)| TokioConn {
            id: stream.id(),
            stream: Box::new(stream),
            rt,
        }))
    }

    fn run_policies(&self, tracker: &Tracker, stop: conntrack_testkit::control::Stop) {
        let tracker = tracker.clone();
        runtime().spawn(async move {
            stop.until(tracker.run_policies(tokio::time::sleep)).await;
        });
    }

    fn shutdown(
        &self,
        tracker: &Tracker,
        grace: std::time::Duration,
    ) -> conntrack_core::ShutdownReport {
        runtime().block_on(tracker.shutdown(grace, tokio::time::sleep))
    }
}

conntrack_testkit::control_tests!(Tokio);
