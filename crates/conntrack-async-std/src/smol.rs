//! smol: [`Dialer`], and [`Accept`](crate::Accept) for `smol::net::TcpListener` and
//! `smol::net::unix::UnixListener` (async-net), so [`Listener`](crate::Listener) wraps them.
//!
//! Name resolution uses `smol::net::resolve`; the connect timeout races each attempt against
//! a `smol::Timer`. `Tracked<smol::net::TcpStream>` (and the Unix stream) is `Clone`, and
//! clones share one tracker entry, which goes when the last clone is dropped.
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

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use ::smol::future::FutureExt;
#[cfg(unix)]
use ::smol::net::unix::UnixStream;
use ::smol::net::TcpStream;
use conntrack_core::Addr;

use crate::dialer::Net;

pub(crate) struct Smol;

impl Net for Smol {
    type Tcp = TcpStream;
    #[cfg(unix)]
    type Unix = UnixStream;

    fn resolve(target: &str) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send {
        ::smol::net::resolve(target)
    }

    fn connect(addr: SocketAddr) -> impl Future<Output = io::Result<TcpStream>> + Send {
        TcpStream::connect(addr)
    }

    async fn timeout<T: Send>(
        limit: Duration,
        f: impl Future<Output = io::Result<T>> + Send,
    ) -> io::Result<T> {
        f.or(async {
            ::smol::Timer::after(limit).await;
            Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
        })
        .await
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

dialer!(Smol, TcpStream, UnixStream, "smol");
tcp_accept!(::smol::net::TcpListener, TcpStream);
unix_accept!(::smol::net::unix::UnixListener, UnixStream);
socket_impls!(TcpStream, SocketAddr);
#[cfg(unix)]
socket_impls!(UnixStream, std::os::unix::net::SocketAddr);
