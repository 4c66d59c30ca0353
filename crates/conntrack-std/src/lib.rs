//! Track live blocking `std::net` connections.
//!
//! Wrap a `std::net::TcpListener` (or `UnixListener`) in a [`Listener`] and every accepted
//! connection is registered with a [`Tracker`](conntrack_core::Tracker) and counted as a
//! [`Tracked`] stream; make outbound connections with a [`Dialer`], which reports name
//! resolution and each connect attempt to the hooks. All the tracking itself happens in
//! [`conntrack_core`]; this crate only turns std's results into calls on a
//! [`Connection`](conntrack_core::Connection).
//!
//! ```
//! use std::io::{Read, Write};
//! use std::net::TcpListener;
//!
//! use conntrack_core::{DialerConfig, ListenerConfig, Tracker};
//! use conntrack_std::{Dialer, Listener};
//!
//! fn main() -> std::io::Result<()> {
//!     let tracker = Tracker::new();
//!     let listener = Listener::new(
//!         &tracker,
//!         TcpListener::bind("127.0.0.1:0")?,
//!         ListenerConfig::new().category("api"),
//!     );
//!     let addr = listener.get_ref().local_addr()?;
//!     let dialer = Dialer::new(&tracker, DialerConfig::new().category("backend"));
//!
//!     let mut client = dialer.connect(&addr.to_string())?;
//!     let (mut server, _peer) = listener.accept()?;
//!     client.write_all(b"ping")?;
//!     let mut buf = [0; 4];
//!     server.read_exact(&mut buf)?;
//!
//!     assert_eq!(tracker.len(), 2);
//!     assert_eq!(tracker.get(server.id()).unwrap().read_bytes, 4);
//!     drop((client, server)); // entries leave the tracker with their streams
//!     assert!(tracker.is_empty());
//!     Ok(())
//! }
//! ```
//!
//! # Feature flags
//!
//! - `tls`: [`tls::TlsAcceptor`] and [`tls::TlsConnector`] run rustls' blocking handshake on a
//!   tracked stream and report it (`on_tls_handshake_start` / `_done`, the connection's `tls`
//!   and `timings.tls_handshake`), handing back rustls' `StreamOwned`. No crypto provider is
//!   forced. Without features the crate depends on `conntrack-core` only.
//! - `metrics`, `tracing`, `serde`: turn on the same features of `conntrack-core`
//!   (`conntrack_core::metrics`, `conntrack_core::tracing`, `Serialize` for the records).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod dialer;
mod listener;
mod stream;
#[cfg(feature = "tls")]
pub mod tls;

pub use conntrack_core;
pub use dialer::{dns, Dialer};
pub use listener::{Accept, Accepted, Incoming, Listener};
pub use stream::Tracked;
