//! The shared conformance suites (connections and dialer) on async-std.

mod common;

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::time::Duration;

use async_std::net::{TcpListener, TcpStream};
use common::{AsyncHarness, Runtime};
use conntrack_async_std::{async_std::Dialer, Listener, Tracked};
use conntrack_core::{DialerConfig, ListenerConfig, Tracker};

struct AsyncStd;

impl Runtime for AsyncStd {
    type Stream = TcpStream;
    const NAME: &'static str = "async-std";

    fn block_on<F: Future>(f: F) -> F::Output {
        async_std::task::block_on(f)
    }

    async fn pair(
        tracker: &Tracker,
        listener: ListenerConfig,
        dialer: DialerConfig,
    ) -> io::Result<(Tracked<TcpStream>, Tracked<TcpStream>)> {
        let listener = Listener::new(tracker, TcpListener::bind("127.0.0.1:0").await?, listener);
        let port = listener.get_ref().local_addr()?.port();
        let client = Dialer::new(tracker, dialer)
            .connect(&format!("127.0.0.1:{port}"))
            .await?;
        let (server, _) = listener.accept().await?;
        Ok((server, client))
    }

    fn shutdown(s: &Tracked<TcpStream>, how: Shutdown) -> io::Result<()> {
        s.shutdown(how)
    }

    common::dial_with!(Dialer);

    async fn sleep(d: Duration) {
        async_std::task::sleep(d).await;
    }
}

conntrack_testkit::conformance_tests!(AsyncHarness::<AsyncStd>::new());
conntrack_testkit::dialer_conformance_tests!(AsyncHarness::<AsyncStd>::new());

/// The conformance suite again, over TLS (futures-rustls).
#[cfg(feature = "tls")]
mod over_tls {
    use super::*;
    conntrack_testkit::conformance_tests!(common::tls::TlsHarness::<AsyncStd>::new());
}

impl common::ControlRuntime for AsyncStd {
    type Inner = TcpListener;

    async fn bind() -> io::Result<(TcpListener, std::net::SocketAddr)> {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        let addr = l.local_addr()?;
        Ok((l, addr))
    }
}

conntrack_testkit::control_tests!(AsyncHarness::<AsyncStd>::new());
