//! smol: [`Dialer`], and [`Accept`] for `smol::net::TcpListener` and
//! `smol::net::unix::UnixListener` (async-net), so [`Listener`] wraps them.
//!
//! Name resolution uses `smol::net::resolve` ([`SystemResolver`]); timers are `smol::Timer`s.
//! `Tracked<smol::net::TcpStream>` (and the Unix stream) is `Clone`, and clones share one
//! tracker entry, which goes when the last clone is dropped.
//!
//! ```
//! use conntrack_async_std::{smol::Dialer, Listener};
//! use conntrack_core::{DialerConfig, ListenerConfig, Tracker};
//! use smol::io::{AsyncReadExt, AsyncWriteExt};
//!
//! fn main() -> std::io::Result<()> {
//!     smol::block_on(async {
//!         let tracker = Tracker::new();
//!         let inner = smol::net::TcpListener::bind("127.0.0.1:0").await?;
//!         let addr = inner.local_addr()?;
//!         let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("api"));
//!         let dialer = Dialer::new(&tracker, DialerConfig::new().category("backend"));
//!
//!         let mut client = dialer.connect(&addr.to_string()).await?;
//!         let (mut server, _peer) = listener.accept().await?;
//!         client.write_all(b"ping").await?;
//!         let mut buf = [0; 4];
//!         server.read_exact(&mut buf).await?;
//!
//!         assert_eq!(tracker.len(), 2);
//!         assert_eq!(tracker.get(server.id()).unwrap().read_bytes, 4);
//!         drop((client, server)); // entries leave the tracker with their streams
//!         tracker.drained().await;
//!         Ok(())
//!     })
//! }
//! ```

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

#[cfg(unix)]
use ::smol::net::unix::UnixStream;
use ::smol::net::TcpStream;
use conntrack_core::dialer::Runtime;
use conntrack_core::dns::{BoxFuture, Resolve};
use conntrack_core::Addr;

/// The crate's runtime-independent types, here too, so that a program can take everything
/// it uses from this module.
pub use crate::{Accept, Accepted, Listener, Tracked};

/// smol's part of a dial: connect, sleep.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Smol;

impl Runtime for Smol {
    type Stream = TcpStream;

    async fn connect(&self, addr: SocketAddr, _: Option<Duration>) -> io::Result<TcpStream> {
        TcpStream::connect(addr).await
    }

    async fn sleep(&self, duration: Duration) {
        ::smol::Timer::after(duration).await;
    }

    fn local_addr(&self, stream: &TcpStream) -> Addr {
        stream.local_addr().map_or(Addr::Unknown, Addr::Inet)
    }
}

/// The default resolver of smol's [`Dialer`]: the system's, through `smol::net::resolve`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        let host = host.to_owned();
        Box::pin(async move { ::smol::net::resolve((host.as_str(), port)).await })
    }
}

dialer!(Smol, Smol, SystemResolver, TcpStream, UnixStream, "smol");
tcp_accept!(::smol::net::TcpListener, TcpStream);
unix_accept!(::smol::net::unix::UnixListener, UnixStream);
socket_impls!(TcpStream, SocketAddr);
#[cfg(unix)]
socket_impls!(UnixStream, std::os::unix::net::SocketAddr);
