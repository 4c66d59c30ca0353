//! Track live tokio connections.
//!
//! Wrap a listener in [`Listener`] and every accepted connection is registered with a
//! [`Tracker`](conntrack_core::Tracker) and counted as a [`Tracked`] stream.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

#[cfg(feature = "axum")]
mod axum;
mod dialer;
#[cfg(feature = "hyper")]
pub mod hyper;
mod listener;
mod stream;
#[cfg(feature = "tonic")]
mod tonic;

pub use conntrack_core;
pub use dialer::{BoxFuture, Dialer, Resolve, SystemResolver};
pub use listener::{Accept, Accepted, Listener};
pub use stream::Tracked;

#[cfg(feature = "axum")]
pub use crate::axum::TrackedConnectInfo;
#[cfg(feature = "hyper")]
pub use crate::hyper::TrackedConnector;
#[cfg(feature = "tonic")]
pub use crate::tonic::Incoming;
