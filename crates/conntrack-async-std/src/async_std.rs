//! async-std: [`Dialer`], and [`Accept`](crate::Accept) for `async_std::net::TcpListener` and
//! `async_std::os::unix::net::UnixListener`, so [`Listener`](crate::Listener) wraps them.
//!
//! async-std is discontinued upstream, which recommends smol instead (see the
//! [`smol`](crate::smol) module); this module keeps existing async-std programs tracked.
//!
//! Name resolution uses async-std's `ToSocketAddrs`; the connect timeout is
//! `async_std::io::timeout` around each attempt. `Tracked<async_std::net::TcpStream>` (and the
//! Unix stream) is `Clone`, and clones share one tracker entry, which goes when the last clone
//! is dropped.
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

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use ::async_std::net::{TcpStream, ToSocketAddrs};
#[cfg(unix)]
use ::async_std::os::unix::net::UnixStream;
use conntrack_core::Addr;

use crate::dialer::Net;

pub(crate) struct AsyncStd;

impl Net for AsyncStd {
    type Tcp = TcpStream;
    #[cfg(unix)]
    type Unix = UnixStream;

    async fn resolve(target: &str) -> io::Result<Vec<SocketAddr>> {
        Ok(target.to_socket_addrs().await?.collect())
    }

    fn connect(addr: SocketAddr) -> impl Future<Output = io::Result<TcpStream>> + Send {
        TcpStream::connect(addr)
    }

    fn timeout<T: Send>(
        limit: Duration,
        f: impl Future<Output = io::Result<T>> + Send,
    ) -> impl Future<Output = io::Result<T>> + Send {
        ::async_std::io::timeout(limit, f)
    }

    fn local_addr(s: &TcpStream) -> Addr {
        s.local_addr().map_or(Addr::Unknown, Addr::Inet)
    }

    #[cfg(unix)]
    fn connect_unix(path: &std::path::Path) -> impl Future<Output = io::Result<UnixStream>> + Send {
        UnixStream::connect(path)
    }

    #[cfg(unix)]
    fn unix_local_addr(s: &UnixStream) -> Addr {
        s.local_addr()
            .map_or(Addr::Unknown, |a| crate::listener::unix_addr(&a))
    }
}

dialer!(AsyncStd, TcpStream, UnixStream, "async-std");
tcp_accept!(::async_std::net::TcpListener, TcpStream);
unix_accept!(::async_std::os::unix::net::UnixListener, UnixStream);
socket_impls!(TcpStream, SocketAddr);
#[cfg(unix)]
socket_impls!(UnixStream, std::os::unix::net::SocketAddr);
