//! The std TLS acceptor and connector bound the handshake with a deadline of their own: a peer
//! that sends nothing fails it with `TimedOut` (never `WouldBlock`), which the handshake event,
//! `on_close`, the history and the metrics carry; the socket's own timeouts are put back.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use conntrack_core::metrics::MetricsHook;
use conntrack_core::{DialerConfig, ListenerConfig, Recorded, RecordingHook, Role, Tracker};
use conntrack_std::tls::{TlsAcceptor, TlsConnector, DEFAULT_HANDSHAKE_TIMEOUT};
use conntrack_std::{Dialer, Listener};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use rustls::{ClientConfig, ServerConfig};

const WAIT: Duration = Duration::from_secs(10);
const DEADLINE: Duration = Duration::from_millis(100);

fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let (server, client) =
        conntrack_testkit::tls::self_signed(&["localhost"], rustls::DEFAULT_VERSIONS);
    (Arc::new(server), Arc::new(client))
}

fn setup() -> (Tracker, RecordingHook, PrometheusRecorder, PrometheusHandle) {
    let rec = RecordingHook::new();
    let tracker = Tracker::builder()
        .hook(MetricsHook::new())
        .hook(rec.clone())
        .build();
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    (tracker, rec, recorder, handle)
}

/// The handshake failure and close events of the one connection, once it closed.
fn failure_and_close(rec: &RecordingHook) -> (io::ErrorKind, io::ErrorKind, String) {
    let ev = rec
        .wait_for(|ev| ev.iter().any(|e| e.name() == "close"), WAIT)
        .expect("close event");
    let hs = ev
        .iter()
        .find_map(|e| match e {
            Recorded::TlsHandshakeDone { error, .. } => error.clone(),
            _ => None,
        })
        .expect("a failed handshake");
    let close = ev
        .iter()
        .find_map(|e| match e {
            Recorded::Close { error, .. } => error.clone(),
            _ => None,
        })
        .expect("the close carries the error");
    (hs.kind, close.kind, close.message)
}

fn assert_reported(tracker: &Tracker, rec: &RecordingHook, metrics: &PrometheusHandle, role: Role) {
    let (hs, close, message) = failure_and_close(rec);
    assert_eq!(hs, io::ErrorKind::TimedOut);
    assert_eq!(close, io::ErrorKind::TimedOut);
    assert_eq!(
        message,
        format!("TLS handshake did not finish within {DEADLINE:?}")
    );
    let history = tracker.recently_closed();
    assert_eq!(history[0].error.as_deref(), Some(&*message));
    assert_eq!(tracker.stats().total().tls_handshake_failed, 1);
    let text = metrics.render();
    for phase in ["tls_handshake", "close"] {
        assert!(
            text.lines().any(|l| l.starts_with("conntrack_errors")
                && l.contains(&format!("role=\"{role}\""))
                && l.contains(&format!("conntrack_phase=\"{phase}\""))
                && l.contains("error_type=\"timed_out\"")
                && l.ends_with(" 1")),
            "{phase}: {text}"
        );
    }
    assert!(tracker.is_empty());
}

#[test]
fn acceptor_times_out_a_silent_client() {
    let (tracker, rec, recorder, metrics) = setup();
    let (server, _) = configs();
    metrics::with_local_recorder(&recorder, || {
        let inner = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = inner.local_addr().unwrap();
        let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("in"));
        let _silent = TcpStream::connect(addr).unwrap();
        let (tcp, _) = listener.accept().unwrap();
        let acceptor = TlsAcceptor::from(server).handshake_timeout(Some(DEADLINE));
        let err = acceptor.accept(tcp).expect_err("nothing arrives");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    });
    assert_reported(&tracker, &rec, &metrics, Role::Server);
}

#[test]
fn connector_times_out_a_silent_server() {
    let (tracker, rec, recorder, metrics) = setup();
    let (_, client) = configs();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    metrics::with_local_recorder(&recorder, || {
        let dialer = Dialer::new(&tracker, DialerConfig::new().category("out"));
        let tcp = dialer.connect(addr.to_string()).unwrap();
        let connector = TlsConnector::from(client).handshake_timeout(Some(DEADLINE));
        let err = connector
            .connect("localhost", tcp)
            .expect_err("nothing comes back");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    });
    drop(silent);
    assert_reported(&tracker, &rec, &metrics, Role::Client);
}

#[test]
fn a_handshake_in_time_leaves_the_socket_timeouts_as_they_were() {
    let tracker = Tracker::new();
    let (server, client) = configs();
    let inner = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("in"));
    let srv = thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let own = Some(Duration::from_secs(7));
        tcp.get_ref().set_read_timeout(own).unwrap();
        let mut tls = TlsAcceptor::from(server).accept(tcp).expect("handshake");
        assert_eq!(tls.get_ref().0.get_ref().read_timeout().unwrap(), own);
        assert_eq!(tls.get_ref().0.get_ref().write_timeout().unwrap(), None);
        tls.write_all(b"hello").unwrap();
        tls.get_mut().1.send_close_notify();
        tls.flush().unwrap();
    });
    let dialer = Dialer::new(&tracker, DialerConfig::new().category("out"));
    let tcp = dialer.connect(addr.to_string()).unwrap();
    let connector = TlsConnector::from(client);
    let mut tls = connector.connect("localhost", tcp).expect("handshake");
    assert_eq!(tls.get_ref().0.get_ref().read_timeout().unwrap(), None);
    assert_eq!(tls.get_ref().0.get_ref().write_timeout().unwrap(), None);
    let mut buf = Vec::new();
    tls.read_to_end(&mut buf).unwrap();
    assert_eq!(buf, b"hello");
    srv.join().unwrap();
    assert_eq!(DEFAULT_HANDSHAKE_TIMEOUT, Duration::from_secs(10));
}
