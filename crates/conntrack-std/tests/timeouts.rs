//! A read that hits a blocking socket's timeout is a timeout: the caller gets the socket's
//! error unchanged, and the connection closes with `TimedOut` in `on_close`, the history and
//! the metrics (`error.type` `timed_out`). On a socket switched to non-blocking mode a
//! `WouldBlock` is no failure.

use std::io::{self, Read};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use conntrack_core::metrics::MetricsHook;
use conntrack_core::{ListenerConfig, Recorded, RecordingHook, Tracker};
use conntrack_std::Listener;
use metrics_exporter_prometheus::PrometheusBuilder;

const WAIT: Duration = Duration::from_secs(10);

fn close_error(rec: &RecordingHook) -> Option<(io::ErrorKind, String)> {
    let ev = rec
        .wait_for(|ev| ev.iter().any(|e| e.name() == "close"), WAIT)
        .expect("close event");
    ev.into_iter()
        .find_map(|e| match e {
            Recorded::Close { error, .. } => Some(error.map(|e| (e.kind, e.message))),
            _ => None,
        })
        .unwrap()
}

#[test]
fn a_read_timeout_closes_with_timed_out() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let rec = RecordingHook::new();
    let tracker = Tracker::builder()
        .hook(MetricsHook::new())
        .hook(rec.clone())
        .build();
    metrics::with_local_recorder(&recorder, || {
        let inner = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = inner.local_addr().unwrap();
        let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("in"));
        // A peer that connects and sends nothing.
        let _silent = TcpStream::connect(addr).unwrap();
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let err = stream.read(&mut [0; 16]).expect_err("nothing to read");
        // The caller sees the socket's own error: WouldBlock on Unix, TimedOut on Windows.
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{err:?}"
        );
        drop(stream);
    });

    let (kind, message) = close_error(&rec).expect("the close carries the timeout");
    assert_eq!(kind, io::ErrorKind::TimedOut);
    assert!(message.starts_with("read timed out"), "{message}");
    let history = tracker.recently_closed();
    let error = history[0].error.as_deref().expect("history has the error");
    assert!(error.starts_with("read timed out"), "{error}");
    let text = metrics.render();
    assert!(
        text.lines().any(|l| l.starts_with("conntrack_errors")
            && l.contains("conntrack_phase=\"close\"")
            && l.contains("error_type=\"timed_out\"")
            && l.ends_with(" 1")),
        "{text}"
    );
    assert!(tracker.is_empty());
}

#[test]
fn would_block_on_a_nonblocking_socket_is_no_failure() {
    let rec = RecordingHook::new();
    let tracker = Tracker::builder().hook(rec.clone()).build();
    let inner = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("in"));
    let _silent = TcpStream::connect(addr).unwrap();
    let (mut stream, _) = listener.accept().unwrap();
    stream.set_nonblocking(true).unwrap();
    let err = stream.read(&mut [0; 16]).expect_err("nothing to read");
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    drop(stream);
    assert_eq!(close_error(&rec), None);
    assert_eq!(tracker.recently_closed()[0].error, None);
}
