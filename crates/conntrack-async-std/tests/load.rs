//! The shared load scenarios (`conntrack_testkit::load`) on smol and async-std: many concurrent
//! tracked pairs with exact counts, and a churn of connections ending in bad ways, including
//! dial and accept futures dropped after one poll and (with feature `tls`) TLS handshakes fed
//! garbage. CI runs the default sizes; `cargo xtask stress` runs 9,000 pairs and 100,000
//! connections on smol, and async-std at the same sizes.

// Not every item of the shared module is used by this test.
#[allow(dead_code)]
mod common;

use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr};

use common::{AsyncConn, Runtime};
use conntrack_async_std::{Listener, Tracked};
use conntrack_core::{DialerConfig, ListenerConfig, Tracker};
use conntrack_testkit::load::{self, Endpoints, LoadHarness};
use futures_lite::future::poll_once;

/// Binds a listener and makes a dialer for one runtime, and runs the load scenarios on them.
macro_rules! load_runtime {
    ($mod:ident, $rt:ident, $name:literal, $net:path, $dialer:path, $block_on:path, $sleep:path) => {
        mod $mod {
            use super::*;
            use $net::{TcpListener, TcpStream};

            pub(crate) struct $rt;

            impl Runtime for $rt {
                type Stream = TcpStream;
                const NAME: &'static str = $name;

                fn block_on<F: Future>(f: F) -> F::Output {
                    $block_on(f)
                }

                async fn pair(
                    _: &Tracker,
                    _: ListenerConfig,
                    _: DialerConfig,
                ) -> io::Result<(Tracked<TcpStream>, Tracked<TcpStream>)> {
                    unreachable!("the load scenarios dial and accept through `Endpoints`")
                }

                fn shutdown(s: &Tracked<TcpStream>, how: Shutdown) -> io::Result<()> {
                    s.shutdown(how)
                }

                common::dial_with!($dialer);

                async fn sleep(d: std::time::Duration) {
                    let _ = $sleep(d).await;
                }
            }

            pub(crate) struct Ends {
                listener: Listener<TcpListener>,
                dialer: $dialer,
                addr: SocketAddr,
                #[cfg(feature = "tls")]
                tls: conntrack_async_std::tls::TlsAcceptor,
            }

            impl LoadHarness for $rt {
                type Endpoints = Ends;

                fn bind(
                    &self,
                    tracker: &Tracker,
                    listener: ListenerConfig,
                    dialer: DialerConfig,
                ) -> io::Result<Ends> {
                    let inner = $block_on(TcpListener::bind("127.0.0.1:0"))?;
                    let addr = inner.local_addr()?;
                    Ok(Ends {
                        listener: Listener::new(tracker, inner, listener),
                        dialer: <$dialer>::new(tracker, dialer),
                        addr,
                        #[cfg(feature = "tls")]
                        tls: super::tls_acceptor(),
                    })
                }
            }

            impl Endpoints for Ends {
                type Conn = AsyncConn<$rt>;

                fn name(&self) -> &'static str {
                    $name
                }

                fn dial(&mut self) -> io::Result<Self::Conn> {
                    $block_on(self.dialer.connect_addr(self.addr)).map(AsyncConn)
                }

                fn accept(&mut self) -> io::Result<Self::Conn> {
                    $block_on(self.listener.accept()).map(|(s, _)| AsyncConn(s))
                }

                fn cancelled_dial(&mut self) -> Option<bool> {
                    let polled = $block_on(poll_once(self.dialer.connect_addr(self.addr)));
                    Some(matches!(polled, Some(Ok(_))))
                }

                fn cancelled_accept(&mut self) -> Option<bool> {
                    let polled = $block_on(poll_once(self.listener.accept()));
                    Some(matches!(polled, Some(Ok(_))))
                }

                #[cfg(feature = "tls")]
                fn tls_garbage(&mut self, server: Self::Conn) -> Option<io::Result<()>> {
                    Some($block_on(self.tls.accept(server.0)).map(drop))
                }
            }
        }
    };
}

#[cfg(feature = "tls")]
fn tls_acceptor() -> conntrack_async_std::tls::TlsAcceptor {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use std::sync::Arc;
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der())),
    )
    .unwrap();
    Arc::new(config).into()
}

#[cfg(feature = "smol")]
load_runtime!(
    on_smol,
    Smol,
    "smol",
    smol::net,
    conntrack_async_std::smol::Dialer,
    smol::block_on,
    smol::Timer::after
);

#[cfg(feature = "async-std")]
load_runtime!(
    on_async_std,
    AsyncStd,
    "async-std",
    async_std::net,
    conntrack_async_std::async_std::Dialer,
    async_std::task::block_on,
    async_std::task::sleep
);

#[cfg(feature = "smol")]
#[test]
fn smol_concurrent_pairs() {
    let n = load::size("CONNTRACK_STRESS_CONNS", load::DEFAULT_PAIRS);
    println!("smol load: {:?}", load::concurrent_pairs(&on_smol::Smol, n));
}

#[cfg(feature = "smol")]
#[test]
fn smol_churn_with_faults() {
    let n = load::size("CONNTRACK_CHURN_CONNS", load::DEFAULT_CHURN);
    println!(
        "smol churn: {:?}",
        load::churn_with_faults(&on_smol::Smol, n)
    );
}

#[cfg(feature = "async-std")]
#[test]
fn async_std_concurrent_pairs() {
    let n = load::size("CONNTRACK_STRESS_CONNS", load::DEFAULT_PAIRS);
    let r = load::concurrent_pairs(&on_async_std::AsyncStd, n);
    println!("async-std load: {r:?}");
}

#[cfg(feature = "async-std")]
#[test]
fn async_std_churn_with_faults() {
    let n = load::size("CONNTRACK_CHURN_CONNS", load::DEFAULT_CHURN);
    let r = load::churn_with_faults(&on_async_std::AsyncStd, n);
    println!("async-std churn: {r:?}");
}
