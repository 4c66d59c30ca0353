//! The shared load scenarios (`conntrack_testkit::load`) on tokio, step by step from the test
//! thread, as std, smol and async-std run them: many concurrent tracked pairs with exact counts,
//! and a churn of connections ending in bad ways (dial and accept futures dropped after one
//! poll included). `stress.rs` and `churn_faults.rs` are tokio's own, task-per-connection
//! versions. CI runs the default sizes; `cargo xtask stress` runs 9,000 pairs and 100,000
//! connections.

mod support;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use conntrack_core::{DialerConfig, ListenerConfig, Tracker};
use conntrack_testkit::load::{self, Endpoints, LoadHarness};
use conntrack_tokio::{Dialer, Listener, Tracked};
use support::{runtime, TokioConn};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;

struct Tokio;

struct TokioEnds {
    listener: Listener<TcpListener>,
    dialer: Dialer,
    addr: SocketAddr,
    rt: Handle,
}

impl TokioEnds {
    fn conn(&self, stream: Tracked<TcpStream>) -> TokioConn {
        TokioConn {
            id: stream.id(),
            stream: Box::new(stream),
            rt: self.rt.clone(),
        }
    }
}

impl LoadHarness for Tokio {
    type Endpoints = TokioEnds;

    fn bind(
        &self,
        tracker: &Tracker,
        listener: ListenerConfig,
        dialer: DialerConfig,
    ) -> io::Result<TokioEnds> {
        let rt = runtime().handle().clone();
        let inner = rt.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let addr = inner.local_addr()?;
        let _entered = rt.enter();
        Ok(TokioEnds {
            listener: Listener::new(tracker, inner, listener),
            dialer: Dialer::new(tracker, dialer),
            addr,
            rt: rt.clone(),
        })
    }
}

impl Endpoints for TokioEnds {
    type Conn = TokioConn;

    fn name(&self) -> &'static str {
        "tokio"
    }

    fn dial(&mut self) -> io::Result<TokioConn> {
        let s = self.rt.block_on(self.dialer.connect_addr(self.addr))?;
        Ok(self.conn(s))
    }

    fn accept(&mut self) -> io::Result<TokioConn> {
        let (s, _) = self.rt.block_on(self.listener.accept())?;
        Ok(self.conn(s))
    }

    fn cancelled_dial(&mut self) -> Option<bool> {
        // A zero timeout polls the dial once, then drops it.
        let polled = self.rt.block_on(async {
            tokio::time::timeout(Duration::ZERO, self.dialer.connect_addr(self.addr)).await
        });
        Some(matches!(polled, Ok(Ok(_))))
    }

    fn cancelled_accept(&mut self) -> Option<bool> {
        let polled = self
            .rt
            .block_on(async { tokio::time::timeout(Duration::ZERO, self.listener.accept()).await });
        Some(matches!(polled, Ok(Ok(_))))
    }

    // TLS fed garbage is in `churn_faults.rs`; here those steps close plainly.
}

#[test]
fn concurrent_pairs() {
    let n = load::size("CONNTRACK_STRESS_CONNS", load::DEFAULT_PAIRS);
    println!("tokio load: {:?}", load::concurrent_pairs(&Tokio, n));
}

#[test]
fn churn_with_faults() {
    let n = load::size("CONNTRACK_CHURN_CONNS", load::DEFAULT_CHURN);
    println!("tokio churn: {:?}", load::churn_with_faults(&Tokio, n));
}
