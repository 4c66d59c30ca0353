//! The shape the adapters share: each runtime module has every type a program uses, `connect`
//! takes an owned target as well as a `&str`, and a tracked stream is `AsFd` as its stream is.
#![cfg(all(unix, feature = "smol", feature = "async-std"))]

use std::os::fd::{AsFd, AsRawFd};

use conntrack_core::{DialerConfig, ListenerConfig, Tracker};

#[test]
fn async_std_module_has_every_type_and_streams_are_as_fd() {
    use conntrack_async_std::async_std::{Dialer, Listener, Tracked};
    async_std::task::block_on(async {
        let tracker = Tracker::new();
        let inner = async_std::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap();
        let addr = inner.local_addr().unwrap();
        let listener = Listener::new(&tracker, inner, ListenerConfig::new());
        let dialer = Dialer::new(&tracker, DialerConfig::new());
        let client: Tracked<async_std::net::TcpStream> =
            dialer.connect(addr.to_string()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert_eq!(client.as_fd().as_raw_fd(), client.as_raw_fd());
        assert_eq!(server.as_fd().as_raw_fd(), server.as_raw_fd());
        assert_eq!(tracker.len(), 2);
    });
}

#[test]
fn smol_module_has_every_type_and_streams_are_as_fd() {
    use conntrack_async_std::smol::{Dialer, Listener, Tracked};
    smol::block_on(async {
        let tracker = Tracker::new();
        let inner = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let listener = Listener::new(&tracker, inner, ListenerConfig::new());
        let dialer = Dialer::new(&tracker, DialerConfig::new());
        let client: Tracked<smol::net::TcpStream> =
            dialer.connect(format!("{addr}")).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert_eq!(client.as_fd().as_raw_fd(), client.as_raw_fd());
        assert_eq!(server.as_fd().as_raw_fd(), server.as_raw_fd());
        assert_eq!(tracker.len(), 2);
    });
}
