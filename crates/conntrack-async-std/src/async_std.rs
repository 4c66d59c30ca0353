//! async-std: [`Dialer`], and [`Accept`] for `async_std::net::TcpListener` and
//! `async_std::os::unix::net::UnixListener`, so [`Listener`] wraps them.
//!
//! async-std is discontinued upstream, which recommends smol instead (see the
//! [`smol`](crate::smol) module); this module keeps existing async-std programs tracked.
//!
//! Name resolution uses the system's resolver on async-std's blocking pool
//! ([`SystemResolver`]), its errors unchanged; timers are
//! `async_std::task::sleep`. `Tracked<async_std::net::TcpStream>` (and the Unix stream) is
//! `Clone`, and clones share one tracker entry, which goes when the last clone is dropped.
//!
//! ```
//! use async_std::io::{ReadExt, WriteExt};
//! use conntrack_async_std::{async_std::Dialer, Listener};
//! use conntrack_core::{DialerConfig, ListenerConfig, Tracker};
//!
//! fn main() -> std::io::Result<()> {
//!     async_std::task::block_on(async {
//!         let tracker = Tracker::new();
//!         let inner = async_std::net::TcpListener::bind("127.0.0.1:0").await?;
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

use ::async_std::net::TcpStream;
#[cfg(unix)]
use ::async_std::os::unix::net::UnixStream;
use conntrack_core::dialer::Runtime;
use conntrack_core::dns::{BoxFuture, Resolve};
use conntrack_core::Addr;

/// The crate's runtime-independent types, here too, so that a program can take everything
/// it uses from this module.
pub use crate::{Accept, Accepted, Listener, Tracked};

/// async-std's part of a dial: connect, sleep.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AsyncStd;

impl Runtime for AsyncStd {
    type Stream = TcpStream;

    async fn connect(&self, addr: SocketAddr, _: Option<Duration>) -> io::Result<TcpStream> {
        TcpStream::connect(addr).await
    }

    async fn sleep(&self, duration: Duration) {
        ::async_std::task::sleep(duration).await;
    }

    fn local_addr(&self, stream: &TcpStream) -> Addr {
        stream.local_addr().map_or(Addr::Unknown, Addr::Inet)
    }
}

/// The default resolver of async-std's [`Dialer`]: the system's (std's `ToSocketAddrs`), run
/// on async-std's blocking pool. Its errors are the system's, unchanged, as on every adapter
/// (async-std's own `ToSocketAddrs` rewords them and hides the OS error code).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        let host = host.to_owned();
        // std's resolver on async-std's blocking pool, as tokio and smol resolve: async-std's
        // own `ToSocketAddrs` replaces the system's error with its own text and keeps the OS
        // error only as the source (an `EMFILE` would lose its `raw_os_error`).
        Box::pin(::async_std::task::spawn_blocking(move || {
            std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port)).map(Iterator::collect)
        }))
    }
}

dialer!(
    AsyncStd,
    AsyncStd,
    SystemResolver,
    TcpStream,
    UnixStream,
    "async-std"
);
tcp_accept!(::async_std::net::TcpListener, TcpStream);
unix_accept!(::async_std::os::unix::net::UnixListener, UnixStream);
socket_impls!(TcpStream, SocketAddr);
#[cfg(unix)]
socket_impls!(UnixStream, std::os::unix::net::SocketAddr);
