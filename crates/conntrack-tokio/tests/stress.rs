//! A bounded load run on loopback: many concurrent tracked connections (server and client side
//! on one tracker) with traffic on each, snapshots taken while they open, carry traffic and
//! churn, then everything closes. Checks: the snapshot count matches the open sockets, every
//! `on_accept`/`on_dial` has exactly one `on_close`, byte totals equal the bytes sent, and the
//! tracker ends empty.
//!
//! The test runs 500 connections (1,000 entries); `cargo xtask stress` runs the same code with
//! `CONNTRACK_STRESS_CONNS=9000` in release mode.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conntrack_core::{
    AcceptEvent, CloseEvent, ConnectionId, DialEvent, DialerConfig, Hook, ListenerConfig, Role,
    Tracker,
};
use conntrack_tokio::{Dialer, Listener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Counts opens and closes per connection id.
#[derive(Default)]
struct Ledger {
    events: Mutex<HashMap<ConnectionId, (u32, u32)>>,
}

impl Ledger {
    fn open(&self, id: ConnectionId) {
        self.events.lock().unwrap().entry(id).or_default().0 += 1;
    }
}

impl Hook for Ledger {
    fn on_accept(&self, ev: &AcceptEvent<'_>) {
        if let Some(c) = ev.connection {
            self.open(c.id);
        }
    }
    fn on_dial(&self, ev: &DialEvent<'_>) {
        if let Some(c) = ev.connection {
            self.open(c.id);
        }
    }
    fn on_close(&self, ev: &CloseEvent<'_>) {
        self.events
            .lock()
            .unwrap()
            .entry(ev.connection.id)
            .or_default()
            .1 += 1;
    }
}

fn conns() -> usize {
    std::env::var("CONNTRACK_STRESS_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_connections_are_tracked_exactly() {
    let n = conns();
    let started = Instant::now();
    let ledger = Arc::new(Ledger::default());
    let tracker = Tracker::builder().hook(Arc::clone(&ledger)).build();
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("stress-in"));

    // Server: echo every byte back until the client closes.
    let server = tokio::spawn(async move {
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let (stream, _) = listener.accept().await.expect("accept");
            tasks.push(tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(stream);
                tokio::io::copy(&mut r, &mut w).await
            }));
        }
        tasks
    });

    // Clients: dial in batches (the accept queue is finite), send a few KiB each, read the echo.
    let dialer = Dialer::new(&tracker, DialerConfig::new().category("stress-out"));
    let sent = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::with_capacity(n);
    for batch in (0..n).collect::<Vec<_>>().chunks(200) {
        let dials: Vec<_> = batch
            .iter()
            .map(|&i| {
                let dialer = dialer.clone();
                let sent = Arc::clone(&sent);
                tokio::spawn(async move {
                    let mut c = dialer.connect_addr(addr).await.expect("dial");
                    let msg = vec![u8::try_from(i % 251).unwrap(); 1000 + i % 3000];
                    c.write_all(&msg).await.unwrap();
                    let mut back = vec![0; msg.len()];
                    c.read_exact(&mut back).await.unwrap();
                    assert_eq!(back, msg);
                    sent.fetch_add(msg.len() as u64, Ordering::Relaxed);
                    c
                })
            })
            .collect();
        for d in dials {
            clients.push(d.await.unwrap());
        }
    }
    let server_tasks = server.await.unwrap();

    // Steady state: every socket open, every snapshot counts them all.
    for _ in 0..20 {
        assert_eq!(tracker.connections().len(), 2 * n);
        assert_eq!(tracker.len(), 2 * n);
    }
    let stats = tracker.stats();
    assert_eq!(
        stats.get("stress-in", Role::Server).unwrap().active,
        n as u64
    );
    assert_eq!(
        stats.get("stress-out", Role::Client).unwrap().active,
        n as u64
    );

    // Churn: close the clients one by one while a task snapshots; the count only goes down
    // and never below what is still open.
    let snapper = {
        let tracker = tracker.clone();
        tokio::spawn(async move {
            let mut last = usize::MAX;
            let mut snaps = 0;
            loop {
                let len = tracker.connections().len();
                assert!(
                    len <= last,
                    "snapshot count grew while closing: {len} > {last}"
                );
                last = len;
                snaps += 1;
                if len == 0 || snaps > 100_000 {
                    return snaps;
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let mut open_clients = n;
    for c in clients {
        drop(c);
        open_clients -= 1;
        assert!(
            tracker
                .stats()
                .get("stress-out", Role::Client)
                .unwrap()
                .active as usize
                == open_clients
        );
    }
    for t in server_tasks {
        let copied = t.await.unwrap().expect("echo ends cleanly");
        assert!(copied > 0);
    }
    tokio::time::timeout(Duration::from_secs(30), tracker.drained())
        .await
        .expect("drained");
    let snaps = tokio::time::timeout(Duration::from_secs(30), snapper)
        .await
        .unwrap()
        .unwrap();
    assert!(snaps > 0);

    // Totals: exact bytes, one close per open, nothing left.
    assert!(tracker.is_empty());
    let stats = tracker.stats();
    let (s, c) = (
        stats.get("stress-in", Role::Server).unwrap(),
        stats.get("stress-out", Role::Client).unwrap(),
    );
    let sent = sent.load(Ordering::Relaxed);
    assert_eq!((s.read_bytes, s.write_bytes), (sent, sent));
    assert_eq!((c.read_bytes, c.write_bytes), (sent, sent));
    assert_eq!(
        (s.opened, s.closed, c.opened, c.closed),
        (n as u64, n as u64, n as u64, n as u64)
    );
    let events = ledger.events.lock().unwrap();
    assert_eq!(events.len(), 2 * n);
    assert!(
        events
            .values()
            .all(|&(open, close)| open == 1 && close == 1),
        "one close per open"
    );
    println!(
        "stress: {n} connections ({} entries), {sent} bytes each way, {} snapshots while closing, {:?}",
        2 * n,
        snaps,
        started.elapsed()
    );
}
