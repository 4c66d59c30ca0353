//! Records and events: the plain data the crate hands out and its hooks receive, and the
//! kernel's TCP record of a socket. The lowest layer: it imports nothing of the crate's.

pub(crate) mod event;
pub(crate) mod info;
#[cfg(feature = "serde")]
pub(crate) mod ser;
pub(crate) mod tcp_info;
