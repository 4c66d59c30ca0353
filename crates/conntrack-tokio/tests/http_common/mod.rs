//! What the HTTP tracing tests share: a dialer whose resolver maps every name to 127.0.0.1
//! (so dials have DNS events while staying on loopback), and the event names of a recording.

use std::io;
use std::net::SocketAddr;

use conntrack_core::{DialerConfig, Recorded, Tracker};
use conntrack_tokio::Dialer;

/// A dialer in `category` resolving every name to 127.0.0.1.
pub(crate) fn loopback_dialer(tracker: &Tracker, category: &str) -> Dialer {
    Dialer::new(tracker, DialerConfig::new().category(category)).with_resolver(
        |_host: String, port: u16| async move {
            Ok::<_, io::Error>(vec![SocketAddr::from(([127, 0, 0, 1], port))])
        },
    )
}

/// The event names, without the header fields (checked separately where they matter).
pub(crate) fn names(events: &[Recorded]) -> Vec<&'static str> {
    events
        .iter()
        .map(Recorded::name)
        .filter(|n| *n != "wrote_header_field")
        .collect()
}
