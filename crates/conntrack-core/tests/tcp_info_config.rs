//! `tcp_info(false)` on a config: the connection's socket is not registered for TCP
//! statistics, so no snapshot and no close reads it; on by default.
#![cfg(any(target_os = "linux", target_os = "android"))]

use std::net::{TcpListener, TcpStream};

use conntrack_core::{DialerConfig, ListenerConfig, RecordingHook, Registration, Tracker};

fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

#[test]
fn statistics_are_read_by_default_and_not_when_turned_off() {
    let rec = RecordingHook::new();
    let tracker = Tracker::builder().hook(rec.clone()).build();
    let (client, server) = pair();

    assert!(DialerConfig::new().tcp_info_value());
    let on = tracker.register(
        Registration::client(client.local_addr().unwrap(), client.peer_addr().unwrap())
            .dialer_config(&DialerConfig::new()),
    );
    let off_config = ListenerConfig::new().tcp_info(false);
    assert!(!off_config.tcp_info_value());
    let off = tracker.register(
        Registration::server(server.local_addr().unwrap(), server.peer_addr().unwrap())
            .listener_config(&off_config),
    );
    let on_guard = on.watch_tcp_info(&client);
    let off_guard = off.watch_tcp_info(&server);

    let tcp = on.info().tcp.expect("statistics by default");
    assert!(tcp.rtt < std::time::Duration::from_secs(1));
    assert!(off.info().tcp.is_none());
    assert!(tracker
        .connections()
        .iter()
        .all(|c| c.tcp.is_some() == (c.id == on.id())));

    // At close: the default one reports its last reading, the other none.
    let (on_id, off_id) = (on.id(), off.id());
    drop(on_guard);
    drop(off_guard);
    drop((on, off));
    let closed = tracker.recently_closed();
    let find = |id| closed.iter().find(|c| c.info.id == id).unwrap();
    assert!(find(on_id).info.tcp.is_some());
    assert!(find(off_id).info.tcp.is_none());
    assert_eq!(rec.names().iter().filter(|n| **n == "close").count(), 2);
}
