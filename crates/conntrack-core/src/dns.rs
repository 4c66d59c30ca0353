//! Name resolution for dialers: the [`Resolve`] trait every adapter's `Dialer` takes, and the
//! boxed future it returns.
//!
//! Each adapter supplies its runtime's system resolver (re-exported with these types in the
//! adapter's own `dns` module); bring your own (e.g. hickory) or, in tests, hand back a chosen
//! address list. Any `Fn(String, u16) -> impl Future<Output = io::Result<Vec<SocketAddr>>>` is a
//! resolver:
//!
//! ```
//! use std::net::SocketAddr;
//! use conntrack_core::dns::Resolve;
//!
//! let fixed: SocketAddr = "127.0.0.1:8080".parse().unwrap();
//! let resolver = move |_host: String, _port: u16| async move { Ok(vec![fixed]) };
//! fn takes(_: impl Resolve) {}
//! takes(resolver);
//! ```
//!
//! A resolver used by the blocking `conntrack-std` dialer is driven by
//! [`blocking::block_on`](crate::blocking::block_on), outside any async runtime: its future must
//! not need one (a ready future, or one woken from another thread, is fine).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

/// A boxed, sendable future (what [`Resolve`] returns).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Name resolution for a dialer.
pub trait Resolve: Send + Sync + 'static {
    /// Resolves `host` (a name, never an IP literal) for `port`.
    ///
    /// An empty list is not an error here: the dialer reports it as a
    /// [`NotFound`](io::ErrorKind::NotFound) DNS failure, the same on every runtime.
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>>;
}

impl<F, Fut> Resolve for F
where
    F: Fn(String, u16) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'static,
{
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        Box::pin(self(host.to_owned(), port))
    }
}
