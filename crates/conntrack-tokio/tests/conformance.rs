//! The shared conformance suite on tokio, over real loopback sockets.

mod support;

use std::io;

use conntrack_core::{DialerConfig, ListenerConfig, Tracker};
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
            let mut listener = Listener::new(&tracker, inner, listener);
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
