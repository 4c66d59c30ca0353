//! `Connection::shutdown_on_abort`: an abort shuts the registered socket down, which wakes a
//! thread blocked reading it; once the guard is dropped the socket is left alone.
#![cfg(any(target_os = "linux", target_os = "android"))]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use conntrack_core::{Registration, Tracker};

fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

fn register(tracker: &Tracker, s: &TcpStream) -> conntrack_core::Connection {
    tracker.register(Registration::server(
        s.local_addr().unwrap(),
        s.peer_addr().unwrap(),
    ))
}

#[test]
fn an_abort_wakes_a_blocked_read_through_the_socket_itself() {
    let tracker = Tracker::new();
    let (_client, server) = pair();
    let conn = register(&tracker, &server);
    let guard = conn.shutdown_on_abort(&server);
    // A timeout only bounds the test: the abort is what must end the read.
    server
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 16];
        let res = (&server).read(&mut buf);
        (server, res)
    });
    // Let the reader block (the abort works the same if it has not yet: the socket is shut).
    std::thread::sleep(Duration::from_millis(100));
    assert!(tracker.abort(conn.id()));
    let (server, res) = reader.join().unwrap();
    assert_eq!(res.unwrap(), 0, "a shut-down socket reads end of stream");
    drop(guard);
    drop(server);
    assert!(tracker.is_empty());
}

#[test]
fn after_the_guard_drops_an_abort_leaves_the_socket_alone() {
    let tracker = Tracker::new();
    let (mut client, server) = pair();
    let conn = register(&tracker, &server);
    drop(conn.shutdown_on_abort(&server));
    assert!(tracker.abort(conn.id()));
    // The socket still works both ways: nothing shut it down.
    client.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    (&server).read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    (&server).write_all(b"pong").unwrap();
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
}

#[test]
fn registering_after_an_abort_shuts_the_socket_at_once() {
    let tracker = Tracker::new();
    let (_client, server) = pair();
    let conn = register(&tracker, &server);
    assert!(tracker.abort(conn.id()));
    let _guard = conn.shutdown_on_abort(&server);
    let mut buf = [0u8; 4];
    assert_eq!((&server).read(&mut buf).unwrap(), 0);
}

#[test]
fn each_registration_lasts_while_its_own_guard_lives() {
    let tracker = Tracker::new();
    let (mut client, server) = pair();
    let clone = server.try_clone().unwrap();
    let conn = register(&tracker, &server);
    let first = conn.shutdown_on_abort(&server);
    let second = conn.shutdown_on_abort(&clone);
    // The stream goes, its clone stays: the clone's registration still serves the abort.
    drop(first);
    drop(server);
    client.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    (&clone).read_exact(&mut buf).unwrap();
    assert!(tracker.abort(conn.id()));
    assert_eq!(
        (&clone).read(&mut buf).unwrap(),
        0,
        "shut down by the abort"
    );
    drop(second);
}
