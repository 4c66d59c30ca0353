//! Dialer, listener and stream behaviour of the std adapter on loopback.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use conntrack_core::{
    trace, Addr, DialerConfig, ListenerConfig, Recorded, RecordingHook, Role, Tracker,
};
use conntrack_std::{Accept, Dialer, Listener};
use conntrack_testkit::EVENT_TIMEOUT;

fn recording_dialer(tracker: &Tracker) -> (Dialer, RecordingHook) {
    let rec = RecordingHook::new();
    let d = Dialer::new(
        tracker,
        DialerConfig::new().category("out").hook(rec.clone()),
    );
    (d, rec)
}

/// A closed loopback port: bound, read back, and released.
fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[test]
fn localhost_dial_reports_dns() {
    let tracker = Tracker::new();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (d, rec) = recording_dialer(&tracker);
    let target = format!("localhost:{port}");
    let client = d.connect(&target).expect("dial localhost");

    let ev = rec.events();
    let names: Vec<_> = ev.iter().map(Recorded::name).collect();
    assert_eq!(names[..2], ["dns_start", "dns_done"], "{names:?}");
    let Recorded::DnsStart { host } = &ev[0] else {
        unreachable!()
    };
    assert_eq!(host, "localhost");
    let Recorded::DnsDone { addrs, error, .. } = &ev[1] else {
        unreachable!()
    };
    assert!(error.is_none());
    let v4: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(addrs.contains(&v4), "{addrs:?}");
    assert_eq!(names.last(), Some(&"dial"));
    assert!(rec.count("connect_start") >= 1);
    assert_eq!(rec.count("connect_start"), rec.count("connect_done"));

    let info = client.info();
    assert_eq!(info.role, Role::Client);
    assert_eq!(info.target.as_deref(), Some(target.as_str()));
    assert!(info.timings.dns.is_some() && info.timings.connect.is_some());
    assert_eq!(client.peer_addr().unwrap().port(), port);
    drop(client);
    assert!(tracker.is_empty());
}

#[test]
fn ip_literal_skips_dns() {
    let tracker = Tracker::new();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let (d, rec) = recording_dialer(&tracker);
    let client = d.connect(&l.local_addr().unwrap().to_string()).unwrap();
    assert_eq!(rec.names(), ["connect_start", "connect_done", "dial"]);
    assert!(client.info().timings.dns.is_none());
}

#[test]
fn unresolvable_name_reports_dns_error() {
    let tracker = Tracker::new();
    let (d, rec) = recording_dialer(&tracker);
    let err = d
        .connect("nonexistent.invalid:80")
        .expect_err("must not resolve");

    assert_eq!(rec.names(), ["dns_start", "dns_done", "dial"]);
    let ev = rec.events();
    let Recorded::DnsDone {
        host, addrs, error, ..
    } = &ev[1]
    else {
        unreachable!()
    };
    assert_eq!(host, "nonexistent.invalid");
    assert!(addrs.is_empty());
    assert_eq!(error.as_ref().expect("dns error").message, err.to_string());
    let Recorded::Dial {
        target,
        connection,
        error,
        ..
    } = &ev[2]
    else {
        unreachable!()
    };
    assert_eq!(target, "nonexistent.invalid:80");
    assert!(connection.is_none());
    assert_eq!(error.as_ref().expect("dial error").kind, err.kind());

    let stats = tracker.stats();
    let s = stats.get("out", Role::Client).expect("client stats");
    assert_eq!((s.failed, s.opened), (1, 0));
    assert!(tracker.is_empty());
}

#[test]
fn refused_port_reports_connect_error() {
    let tracker = Tracker::new();
    let (d, rec) = recording_dialer(&tracker);
    let addr = closed_port();
    let err = d.connect(&addr.to_string()).expect_err("port is closed");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);

    assert_eq!(rec.names(), ["connect_start", "connect_done", "dial"]);
    let ev = rec.events();
    let Recorded::ConnectDone { addr: a, error, .. } = &ev[1] else {
        unreachable!()
    };
    assert_eq!(*a, Addr::Inet(addr));
    assert_eq!(
        error.as_ref().unwrap().kind,
        io::ErrorKind::ConnectionRefused
    );
    assert_eq!(
        ev[2].error().unwrap().kind,
        io::ErrorKind::ConnectionRefused
    );
    assert_eq!(tracker.stats().get("out", Role::Client).unwrap().failed, 1);
    assert!(tracker.is_empty());
}

/// A listener with a backlog of 0 and one connection waiting in it: further SYNs are dropped,
/// so a connect to it stays pending.
fn full_listener() -> (socket2::Socket, TcpStream, SocketAddr) {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    let filler = TcpStream::connect(addr).unwrap();
    (s, filler, addr)
}

#[test]
fn connect_timeout_reported() {
    let (_listener, _filler, addr) = full_listener();
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let d = Dialer::new(
        &tracker,
        DialerConfig::new()
            .category("out")
            .connect_timeout(Duration::from_millis(200))
            .hook(rec.clone()),
    );
    let err = d.connect_addr(addr).expect_err("backlog is full");
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert_eq!(rec.names(), ["connect_start", "connect_done", "dial"]);
    assert_eq!(
        rec.events()[1].error().unwrap().kind,
        io::ErrorKind::TimedOut
    );
    assert!(tracker.is_empty());
}

#[test]
fn try_clone_shares_one_entry() {
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let l = Listener::new(
        &tracker,
        TcpListener::bind("127.0.0.1:0").unwrap(),
        ListenerConfig::new().hook(rec.clone()),
    );
    let d = Dialer::new(&tracker, DialerConfig::new());
    let mut client = d.connect_addr(l.get_ref().local_addr().unwrap()).unwrap();
    let (server, _) = l.accept().unwrap();
    let clone = server.try_clone().unwrap();
    assert_eq!(clone.id(), server.id());
    assert_eq!(tracker.len(), 2);

    // Reads through `&Tracked` on one handle, writes on the other, one entry.
    client.write_all(b"abc").unwrap();
    let mut buf = [0; 3];
    (&server).read_exact(&mut buf).unwrap();
    (&clone).write_all(b"de").unwrap();
    client.read_exact(&mut buf[..2]).unwrap();
    let info = tracker.get(server.id()).unwrap();
    assert_eq!((info.read_bytes, info.write_bytes), (3, 2));

    drop(server);
    assert_eq!(tracker.len(), 2, "the clone keeps the entry");
    drop(clone);
    rec.wait_for(|ev| ev.iter().any(|e| e.name() == "close"), EVENT_TIMEOUT)
        .expect("close after the last clone");
    assert_eq!(rec.count("close"), 1);
    assert_eq!(tracker.len(), 1);
}

#[test]
fn incoming_yields_tracked_streams() {
    let tracker = Tracker::new();
    let l = Listener::new(
        &tracker,
        TcpListener::bind("127.0.0.1:0").unwrap(),
        ListenerConfig::new().category("in"),
    );
    let addr = l.get_ref().local_addr().unwrap();
    let clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let accepted: Vec<_> = l.incoming().take(3).collect::<io::Result<_>>().unwrap();
    assert_eq!(tracker.len(), 3);
    assert!(accepted.iter().all(|s| s.info().role == Role::Server));
    drop(accepted);
    drop(clients);
    assert!(tracker.is_empty());
}

/// A listener whose accept always fails, to check the error path of [`Listener`].
struct Failing;

impl Accept for Failing {
    type Stream = TcpStream;
    type PeerAddr = SocketAddr;

    fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        Err(io::Error::from_raw_os_error(24)) // EMFILE
    }

    fn listen_addr(&self) -> Addr {
        Addr::Unknown
    }

    fn stream_addrs(&self, _: &Addr, _: &TcpStream, _: &SocketAddr) -> (Addr, Addr) {
        (Addr::Unknown, Addr::Unknown)
    }
}

#[test]
fn accept_error_reported_and_returned_unchanged() {
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let l = Listener::new(
        &tracker,
        Failing,
        ListenerConfig::new().category("in").hook(rec.clone()),
    );
    let err = l.accept().expect_err("fails");
    assert_eq!(err.raw_os_error(), Some(24));
    assert_eq!(rec.names(), ["accept"]);
    assert_eq!(rec.events()[0].error().unwrap().message, err.to_string());
    assert_eq!(tracker.stats().get("in", Role::Server).unwrap().failed, 1);
}

#[test]
fn trace_scope_sees_the_dial() {
    let tracker = Tracker::new();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let d = Dialer::new(&tracker, DialerConfig::new());
    let scoped = RecordingHook::new();
    let client = trace::with(scoped.clone(), || d.connect_addr(l.local_addr().unwrap())).unwrap();
    assert_eq!(scoped.names(), ["connect_start", "connect_done", "dial"]);
    drop(client);
    assert_eq!(
        scoped.count("close"),
        0,
        "the scope had ended when the connection closed"
    );
}

#[cfg(unix)]
#[test]
fn unix_listener_and_dialer() {
    use std::os::unix::net::UnixListener;

    let dir = std::env::temp_dir().join(format!("conntrack-std-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("unix.sock");
    let _ = std::fs::remove_file(&path);
    let tracker = Tracker::new();
    let l = Listener::new(
        &tracker,
        UnixListener::bind(&path).unwrap(),
        ListenerConfig::new().category("uds-in"),
    );
    let d = Dialer::new(&tracker, DialerConfig::new().category("uds-out"));
    let mut client = d.connect_unix(&path).unwrap();
    let (mut server, _) = l.accept().unwrap();
    client.write_all(b"hi").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut got = String::new();
    server.read_to_string(&mut got).unwrap();
    assert_eq!(got, "hi");

    let s = server.info();
    let c = client.info();
    assert_eq!(s.local_addr, Addr::unix(&path));
    assert_eq!(c.remote_addr, Addr::unix(&path));
    assert_eq!(
        c.target.as_deref(),
        Some(path.display().to_string().as_str())
    );
    assert_eq!((s.read_bytes, c.write_bytes), (2, 2));
    let clone = server.try_clone().unwrap();
    assert_eq!(clone.id(), server.id());
    drop((server, client, clone));
    assert!(tracker.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}
