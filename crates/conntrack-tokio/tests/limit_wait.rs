//! The tokio `Listener` in `LimitMode::Wait`: a connection accepted after another accepter
//! took the last slot waits for the next one instead of being refused, kept by the listener
//! when the accept call that took it is cancelled (`accept` is cancel safe); cancelled
//! accepts leave at most the listener's one kept wait behind, however many there were.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use conntrack_core::{ListenerConfig, RecordingHook, Role, Tracker};
use conntrack_tokio::Listener;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);

async fn listener(tracker: &Tracker, config: &ListenerConfig) -> Listener<TcpListener> {
    let inner = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    Listener::new(tracker, inner, config.clone())
}

fn rejected(rec: &RecordingHook) -> usize {
    rec.events()
        .iter()
        .filter(|e| matches!(e, conntrack_core::Recorded::Accept { rejected: true, .. }))
        .count()
}

#[tokio::test]
async fn a_connection_whose_slot_was_taken_waits_and_survives_a_cancelled_accept() {
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let config = ListenerConfig::new()
        .category("w")
        .max_connections(1)
        .hook(rec.clone());
    let (first, second) = (
        listener(&tracker, &config).await,
        listener(&tracker, &config).await,
    );
    let first_addr = first.local_addr().unwrap();
    let second_addr = second.local_addr().unwrap();

    // Both accepts pass the limit's check while the slot is free, then wait in the kernel.
    let mut one = Box::pin(first.accept());
    let mut two = Box::pin(second.accept());
    poll_fn(|cx| {
        assert!(one.as_mut().poll(cx).is_pending());
        assert!(two.as_mut().poll(cx).is_pending());
        Poll::Ready(())
    })
    .await;

    // The first listener's client takes the slot.
    let _c1 = TcpStream::connect(first_addr).await.unwrap();
    let (served, _) = timeout(LIMIT, one).await.expect("accepted").unwrap();
    // The second's client is accepted by the accept that passed the check: it waits.
    let mut c2 = TcpStream::connect(second_addr).await.unwrap();
    timeout(
        LIMIT,
        poll_fn(|cx| {
            assert!(two.as_mut().poll(cx).is_pending(), "the slot is taken");
            if config.limit_waiters() == 1 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }),
    )
    .await
    .expect("the second connection is accepted and queued");
    assert_eq!(rejected(&rec), 0, "waiting, not refused");

    // The accept call is given up (as in a `select!`): the listener keeps the connection.
    drop(two);
    assert_eq!(
        config.limit_waiters(),
        1,
        "still queued, for the next accept"
    );
    assert_eq!(tracker.len(), 1);

    // The slot frees while nobody accepts; the next accept returns the kept connection.
    drop(served);
    let (mut stream, _) = timeout(LIMIT, second.accept())
        .await
        .expect("the kept connection")
        .unwrap();
    c2.write_all(b"ok").await.unwrap();
    let mut b = [0; 2];
    stream.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"ok");
    assert_eq!(config.limit_waiters(), 0);
    let stats = tracker.stats();
    let st = stats.get("w", Role::Server).expect("stats");
    assert_eq!((st.opened, st.rejected), (2, 0));
}

/// A waker whose live clones are counted by its `Arc`.
struct Counted;

impl Wake for Counted {
    fn wake(self: Arc<Self>) {}
}

#[tokio::test]
async fn cancelled_accepts_leave_at_most_the_listeners_one_wait() {
    const N: usize = 100_000;
    let tracker = Tracker::new();
    let config = ListenerConfig::new().max_connections(1);
    let l = listener(&tracker, &config).await;
    let addr = l.local_addr().unwrap();
    let _client = TcpStream::connect(addr).await.unwrap();
    let (_held, _) = timeout(LIMIT, l.accept()).await.expect("slot").unwrap();
    // Each accept polled once with its own waker, then dropped.
    let mut wakers = Vec::with_capacity(N);
    for _ in 0..N {
        let w = Arc::new(Counted);
        let waker = Waker::from(Arc::clone(&w));
        let mut accept = Box::pin(l.accept());
        let polled = Pin::new(&mut accept).poll(&mut Context::from_waker(&waker));
        assert!(polled.is_pending(), "the limit is reached");
        drop(accept);
        drop(waker);
        assert!(config.limit_waiters() <= 1);
        wakers.push(w);
    }
    assert_eq!(
        config.limit_waiters(),
        1,
        "the listener's one wait for a slot"
    );
    let kept: usize = wakers.iter().map(|w| Arc::strong_count(w) - 1).sum();
    assert_eq!(
        kept, 1,
        "only the latest waker is kept, as tokio's own poll_accept does"
    );
}
