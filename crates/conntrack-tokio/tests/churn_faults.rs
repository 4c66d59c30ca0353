//! Churn with faults mixed in: many short connections on loopback, each ending in one of a set
//! of bad ways (peer reset, abrupt drop mid-transfer, half-close, cancelled dial, cancelled
//! accept, a task aborted while holding a stream, TLS handshakes fed garbage (with feature
//! `tls`), hooks that panic). Nothing may leak and the
//! counts must be exact.
//!
//! The test runs 2,000 connections; `CONNTRACK_CHURN_CONNS=100000` (or `cargo xtask stress
//! churn`) runs the full size.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conntrack_core::{
    AcceptEvent, CloseEvent, ConnectionId, DialEvent, DialerConfig, Hook, ListenerConfig, Role,
    Tracker,
};
use conntrack_tokio::{Dialer, Listener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Opens and closes per id, plus a panic on every 7th close it sees.
#[derive(Default)]
struct Ledger {
    events: Mutex<HashMap<ConnectionId, (u32, u32)>>,
    closes: AtomicU64,
    panics: AtomicU64,
}

impl Hook for Ledger {
    fn on_accept(&self, ev: &AcceptEvent<'_>) {
        if let Some(c) = ev.connection {
            self.events.lock().unwrap().entry(c.id).or_default().0 += 1;
        }
    }
    fn on_dial(&self, ev: &DialEvent<'_>) {
        if let Some(c) = ev.connection {
            self.events.lock().unwrap().entry(c.id).or_default().0 += 1;
        }
    }
    fn on_close(&self, ev: &CloseEvent<'_>) {
        self.events
            .lock()
            .unwrap()
            .entry(ev.connection.id)
            .or_default()
            .1 += 1;
        if self.closes.fetch_add(1, Ordering::Relaxed) % 7 == 6 {
            self.panics.fetch_add(1, Ordering::Relaxed);
            panic!("a hook that panics on some events");
        }
    }
}

fn conns() -> usize {
    std::env::var("CONNTRACK_CHURN_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

#[cfg(feature = "tls")]
fn tls_acceptor() -> &'static conntrack_tokio::tls::TlsAcceptor {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    static ACCEPTOR: std::sync::OnceLock<conntrack_tokio::tls::TlsAcceptor> =
        std::sync::OnceLock::new();
    ACCEPTOR.get_or_init(|| {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der())),
        )
        .unwrap();
        Arc::new(config).into()
    })
}

/// What the server does with a connection, chosen by the first byte the client sends.
async fn serve(mut s: conntrack_tokio::Tracked<tokio::net::TcpStream>) {
    let mut mode = [0u8; 1];
    if s.read_exact(&mut mode).await.is_err() {
        return;
    }
    match mode[0] {
        // Echo one message and close.
        0 => {
            let mut buf = [0u8; 64];
            if s.read_exact(&mut buf).await.is_ok() {
                let _ = s.write_all(&buf).await;
            }
        }
        // Close with unread data: the kernel resets the connection.
        1 => drop(s),
        // Half-close: read to end of stream, then answer.
        2 => {
            let mut v = Vec::new();
            if s.read_to_end(&mut v).await.is_ok() {
                let _ = s.write_all(&v).await;
            }
        }
        // Abrupt drop in the middle of a transfer.
        3 => {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
        }
        // TLS, but the client sends garbage: the handshake fails (reported and counted).
        #[cfg(feature = "tls")]
        5 => {
            let _ = tls_acceptor().accept(s).await;
        }
        // Hold the stream forever: the task is aborted from outside.
        _ => {
            let mut buf = [0u8; 1];
            let _ = s.read(&mut buf).await;
            std::future::pending::<()>().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_with_faults_leaks_nothing() {
    let n = conns();
    // The deliberate hook panics would print hundreds of messages; keep the others.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let deliberate = info
            .payload()
            .downcast_ref::<&str>()
            .is_some_and(|m| m.contains("a hook that panics"));
        if !deliberate {
            default_hook(info);
        }
    }));
    let ledger = Arc::new(Ledger::default());
    let tracker = Tracker::builder().hook(Arc::clone(&ledger)).build();
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("in"));

    let server = tokio::spawn(async move {
        let mut tasks = std::collections::VecDeque::new();
        let (mut accepted, mut aborted) = (0u64, 0u64);
        loop {
            // Every few rounds, an accept future that is cancelled at once (a zero timeout).
            // (A zero timeout still polls once: if a connection was ready, it is accepted and
            // dropped at once, an abrupt close of its own.)
            if accepted % 5 == 0 {
                if let Ok(Ok(_dropped)) =
                    tokio::time::timeout(Duration::ZERO, listener.accept()).await
                {
                    accepted += 1;
                }
            }
            let next = tokio::time::timeout(Duration::from_secs(2), listener.accept()).await;
            let Ok(Ok((stream, _))) = next else { break };
            accepted += 1;
            tasks.push_back(tokio::spawn(serve(stream)));
            // The client handles one connection at a time, so a task still running 20
            // connections later holds its stream forever (mode 4): abort it.
            while tasks.len() > 20 {
                let t = tasks.pop_front().unwrap();
                if !t.is_finished() {
                    t.abort();
                    aborted += 1;
                }
            }
        }
        for t in tasks {
            t.abort();
        }
        (accepted, aborted)
    });

    let dialer = Dialer::new(&tracker, DialerConfig::new().category("out"));
    let mut cancelled_dials = 0;
    let mut tls_garbage = 0u64;
    for i in 0..n {
        let mode = u8::try_from(i % 10).unwrap();
        if mode == 5 {
            // A dial future dropped before it could finish.
            if tokio::time::timeout(Duration::ZERO, dialer.connect_addr(addr))
                .await
                .is_err()
            {
                cancelled_dials += 1;
            }
            continue;
        }
        let Ok(mut c) = dialer.connect_addr(addr).await else {
            continue;
        };
        let server_mode = match mode {
            7 if cfg!(feature = "tls") => 5,
            0 | 6 | 7 => 0,
            1 => 1,
            2 => 2,
            3 => 3,
            _ => 4,
        };
        let _ = c.write_all(&[server_mode]).await;
        match server_mode {
            0 => {
                let _ = c.write_all(&[9u8; 64]).await;
                let mut buf = [0u8; 64];
                if mode == 6 {
                    // The client task is aborted while it holds the stream.
                    let t = tokio::spawn(async move {
                        let _ = c.read_exact(&mut buf).await;
                        std::future::pending::<()>().await;
                    });
                    tokio::task::yield_now().await;
                    t.abort();
                    let _ = t.await;
                    continue;
                } else {
                    let _ = c.read_exact(&mut buf).await;
                }
            }
            1 => {
                let _ = c.write_all(&[1u8; 4096]).await;
                let mut buf = [0u8; 16];
                let _ = c.read(&mut buf).await; // the reset, or end of stream
            }
            2 => {
                let _ = c.write_all(b"half").await;
                let _ = c.shutdown().await;
                let mut v = Vec::new();
                let _ = c.read_to_end(&mut v).await;
            }
            3 => {
                let _ = c.write_all(&[3u8; 64 * 1024]).await;
            }
            5 => {
                tls_garbage += 1;
                let _ = c
                    .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    .await;
                // The server gives up on the handshake and closes: wait for that, so its
                // failure is reported before the next connection.
                let mut v = Vec::new();
                let _ = c.read_to_end(&mut v).await;
            }
            _ => {
                let _ = c.write_all(&[4u8; 1]).await;
            }
        }
        drop(c);
    }
    let (accepted, aborted) = server.await.unwrap();
    assert!(
        aborted > 0,
        "some tasks were aborted while holding a stream"
    );
    tokio::time::timeout(Duration::from_secs(30), tracker.drained())
        .await
        .unwrap_or_else(|_| panic!("still tracked: {:?}", tracker.connections()));

    assert!(tracker.is_empty());
    let stats = tracker.stats();
    let (s, c) = (
        stats.get("in", Role::Server).unwrap(),
        stats.get("out", Role::Client).unwrap(),
    );
    assert_eq!(
        s.opened, accepted,
        "every accepted connection was registered"
    );
    assert_eq!(
        (s.opened, c.opened),
        (s.closed, c.closed),
        "every open connection closed"
    );
    let events = ledger.events.lock().unwrap();
    assert!(
        events.values().all(|&(o, cl)| o == 1 && cl == 1),
        "exactly one close per open"
    );
    assert_eq!(events.len() as u64, s.opened + c.opened);
    assert_eq!(stats.hook_panics, ledger.panics.load(Ordering::Relaxed));
    assert_eq!(
        s.tls_handshake_failed, tls_garbage,
        "every TLS garbage handshake counted"
    );
    if cfg!(feature = "tls") {
        assert!(tls_garbage > 0);
    }
    assert!(stats.hook_panics > 0);
    println!(
        "churn: {n} attempts, {} dialed, {accepted} accepted, {aborted} server tasks aborted, {cancelled_dials} dials cancelled, {tls_garbage} TLS handshakes on garbage, {} hook panics",
        c.opened, stats.hook_panics
    );
}
