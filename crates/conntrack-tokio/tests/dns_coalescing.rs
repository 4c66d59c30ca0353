//! Concurrent dials of one name through one dialer share one lookup, and `on_dns_done` says
//! which ones shared it (Go's `DNSDoneInfo.Coalesced`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use conntrack_core::{DialerConfig, Recorded, RecordingHook, Tracker};
use conntrack_tokio::Dialer;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

const DIALS: usize = 5;

/// The `(addrs, coalesced, error)` of every `on_dns_done`.
fn dns_done(rec: &RecordingHook) -> Vec<(Vec<SocketAddr>, bool, bool)> {
    rec.events()
        .into_iter()
        .filter_map(|e| match e {
            Recorded::DnsDone {
                addrs,
                coalesced,
                error,
                ..
            } => Some((addrs, coalesced, error.is_some())),
            _ => None,
        })
        .collect()
}

/// A resolver that counts its lookups and answers `answer` once the gate lets it.
fn gated_resolver(
    lookups: &Arc<AtomicUsize>,
    gate: &Arc<Semaphore>,
    answer: std::io::Result<Vec<SocketAddr>>,
) -> impl Fn(String, u16) -> conntrack_tokio::dns::BoxFuture<std::io::Result<Vec<SocketAddr>>>
       + Send
       + Sync
       + 'static {
    let (lookups, gate) = (Arc::clone(lookups), Arc::clone(gate));
    let answer = answer.map_err(|e| (e.kind(), e.to_string()));
    move |_host: String, _port: u16| {
        let (lookups, gate, answer) = (Arc::clone(&lookups), Arc::clone(&gate), answer.clone());
        Box::pin(async move {
            lookups.fetch_add(1, Ordering::SeqCst);
            let _pass = gate.acquire().await.expect("gate");
            answer.map_err(|(kind, text)| std::io::Error::new(kind, text))
        })
    }
}

// One thread: each dial's first poll fires `on_dns_start` and joins (or starts) the lookup
// before any other task runs, so once the test has seen every `on_dns_start`, every dial is
// waiting on the one lookup.
#[tokio::test]
async fn concurrent_dials_of_one_name_share_one_lookup() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let live = listener.local_addr().unwrap();
    let lookups = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let rec = RecordingHook::new();
    let tracker = Tracker::new();
    let dialer = Dialer::new(&tracker, DialerConfig::new().hook(rec.clone()))
        .with_resolver(gated_resolver(&lookups, &gate, Ok(vec![live])));
    let dials: Vec<_> = (0..DIALS)
        .map(|_| {
            let d = dialer.clone();
            tokio::spawn(async move { d.connect("coalesce.test:1").await })
        })
        .collect();
    rec.until(|ev| ev.iter().filter(|e| e.name() == "dns_start").count() == DIALS)
        .await;
    gate.add_permits(1);
    let mut streams = Vec::new();
    for d in dials {
        streams.push(d.await.unwrap().expect("dial"));
    }
    assert_eq!(
        lookups.load(Ordering::SeqCst),
        1,
        "one lookup for {DIALS} dials"
    );
    let done = dns_done(&rec);
    assert_eq!(done.len(), DIALS);
    assert!(done.iter().all(|(addrs, _, err)| addrs == &[live] && !err));
    assert_eq!(
        done.iter().filter(|(_, coalesced, _)| *coalesced).count(),
        DIALS - 1,
        "all but the dial that resolved share its answer: {done:?}"
    );
    assert_eq!(tracker.len(), DIALS);
    drop(streams);
}

/// A failed lookup is shared too: every dial fails with its kind and reports it.
#[tokio::test]
async fn a_failed_lookup_is_shared_with_its_error() {
    let lookups = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let rec = RecordingHook::new();
    let tracker = Tracker::new();
    let failure = std::io::Error::new(std::io::ErrorKind::NotFound, "no such host");
    let dialer = Dialer::new(&tracker, DialerConfig::new().hook(rec.clone()))
        .with_resolver(gated_resolver(&lookups, &gate, Err(failure)));
    let dials: Vec<_> = (0..DIALS)
        .map(|_| {
            let d = dialer.clone();
            tokio::spawn(async move { d.connect("nowhere.test:1").await.map(drop) })
        })
        .collect();
    rec.until(|ev| ev.iter().filter(|e| e.name() == "dns_start").count() == DIALS)
        .await;
    gate.add_permits(1);
    for d in dials {
        let err = d.await.unwrap().expect_err("no such host");
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
    assert_eq!(lookups.load(Ordering::SeqCst), 1);
    let done = dns_done(&rec);
    assert!(done.iter().all(|(_, _, err)| *err));
    assert_eq!(done.iter().filter(|(_, c, _)| *c).count(), DIALS - 1);
    assert_eq!(tracker.stats().total().failed, DIALS as u64);
}

/// A dial cancelled while it resolves for others hands the lookup on: a waiting dial resolves
/// again instead of hanging.
#[tokio::test]
async fn a_cancelled_leader_hands_the_lookup_on() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let live = listener.local_addr().unwrap();
    let lookups = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let rec = RecordingHook::new();
    let tracker = Tracker::new();
    let dialer = Dialer::new(&tracker, DialerConfig::new().hook(rec.clone()))
        .with_resolver(gated_resolver(&lookups, &gate, Ok(vec![live])));
    let leader = {
        let d = dialer.clone();
        tokio::spawn(async move { d.connect("handoff.test:1").await })
    };
    let follower = {
        let d = dialer.clone();
        tokio::spawn(async move { d.connect("handoff.test:1").await })
    };
    rec.until(|ev| ev.iter().filter(|e| e.name() == "dns_start").count() == 2)
        .await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    // The follower looks up again, and is let through.
    gate.add_permits(1);
    let stream = follower.await.unwrap().expect("the follower dials");
    assert_eq!(lookups.load(Ordering::SeqCst), 2);
    drop(stream);
}
