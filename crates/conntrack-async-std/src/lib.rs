#![cfg_attr(feature = "smol", doc = include_str!("../README.md"))]
#![cfg_attr(
    not(feature = "smol"),
    doc = "Track live connections on any futures-io stream, with tracked listeners and \
           dialers for smol and async-std (features `smol`, `async-std`). async-std is \
           discontinued upstream; smol is the recommended runtime. The crate README (shown \
           here with the `smol` feature) has an example."
)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

#[macro_use]
mod stream;
#[macro_use]
mod listener;
#[macro_use]
mod dialer;

#[cfg(feature = "async-std")]
#[cfg_attr(docsrs, doc(cfg(feature = "async-std")))]
pub mod async_std;
#[cfg(feature = "smol")]
#[cfg_attr(docsrs, doc(cfg(feature = "smol")))]
pub mod smol;
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub mod tls;

pub use conntrack_core;

/// Name resolution for the runtimes' dialers: the [`Resolve`](dns::Resolve) trait of
/// `conntrack-core`. Each runtime's system resolver is in its module
/// (`smol::SystemResolver`, `async_std::SystemResolver`).
pub mod dns {
    pub use conntrack_core::dns::{BoxFuture, Resolve};
}
pub use listener::{Accept, Accepted, Listener};
pub use stream::Tracked;
