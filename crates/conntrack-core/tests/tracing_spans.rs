//! `TracingHook` spans close with their connection, or when the hook is removed while its
//! connections are still live; none are left behind, counted by a subscriber layer.
#![cfg(feature = "tracing")]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use conntrack_core::tracing::TracingHook;
use conntrack_core::{Connection, Registration, Tracker};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// Counts `conntrack.connection` spans made and closed.
#[derive(Clone, Default)]
struct Counts {
    opened: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

impl Counts {
    fn get(&self) -> (usize, usize) {
        (
            self.opened.load(Ordering::SeqCst),
            self.closed.load(Ordering::SeqCst),
        )
    }
}

impl<S> Layer<S> for Counts
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: Context<'_, S>,
    ) {
        if attrs.metadata().name() == "conntrack.connection" {
            self.opened.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn on_close(&self, id: tracing::span::Id, ctx: Context<'_, S>) {
        if ctx
            .span(&id)
            .is_some_and(|s| s.name() == "conntrack.connection")
        {
            self.closed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn with_counts(f: impl FnOnce(&Counts)) {
    let counts = Counts::default();
    let subscriber = tracing_subscriber::registry().with(counts.clone());
    tracing::subscriber::with_default(subscriber, || f(&counts));
}

fn accept(tracker: &Tracker, n: usize) -> Vec<Connection> {
    let local: SocketAddr = "127.0.0.1:80".parse().unwrap();
    (0..n)
        .map(|i| {
            let port = u16::try_from(1024 + i).unwrap();
            tracker.register(
                Registration::server(local, SocketAddr::from(([127, 0, 0, 1], port)))
                    .category("api"),
            )
        })
        .collect()
}

#[test]
fn removing_the_hook_closes_the_spans_of_live_connections() {
    with_counts(|counts| {
        let tracker = Tracker::new();
        let hook = TracingHook::new();
        let handle = tracker.add_hook(hook.clone());
        let conns = accept(&tracker, 1000);
        assert_eq!(counts.get(), (1000, 0));
        assert!(conns.iter().all(|c| hook.span(c.id()).is_some()));

        drop(handle);
        assert_eq!(counts.get(), (1000, 1000), "every span closed at removal");
        assert!(conns.iter().all(|c| hook.span(c.id()).is_none()));

        // The connections close later, unseen by the removed hook; nothing more happens.
        drop(conns);
        assert!(tracker.is_empty());
        assert_eq!(counts.get(), (1000, 1000));
    });
}

#[test]
fn spans_close_with_their_connections_and_are_not_kept() {
    with_counts(|counts| {
        let tracker = Tracker::new();
        let hook = TracingHook::new();
        let _handle = tracker.add_hook(hook.clone());
        for round in 1..=10 {
            let conns = accept(&tracker, 100);
            let ids: Vec<_> = conns.iter().map(Connection::id).collect();
            assert!(ids.iter().all(|id| hook.span(*id).is_some()));
            drop(conns);
            assert_eq!(counts.get(), (round * 100, round * 100));
            assert!(ids.iter().all(|id| hook.span(*id).is_none()));
        }
        // Dropping the clone kept for lookups closes nothing of the installed hook's.
        let live = accept(&tracker, 3);
        drop(hook);
        assert_eq!(counts.get(), (1003, 1000));
        drop(live);
        assert_eq!(counts.get(), (1003, 1003));
    });
}

#[test]
fn a_removed_hook_closes_only_its_own_spans() {
    with_counts(|counts| {
        let tracker = Tracker::new();
        let hook = TracingHook::new();
        // Two installations of one hook's clones, sharing the lookup map.
        let first = tracker.add_hook(hook.clone());
        let a = accept(&tracker, 5);
        drop(first);
        let _second = tracker.add_hook(hook.clone());
        let b = accept(&tracker, 5);
        assert_eq!(counts.get(), (10, 5));
        assert!(a.iter().all(|c| hook.span(c.id()).is_none()));
        assert!(b.iter().all(|c| hook.span(c.id()).is_some()));
        drop(b);
        assert_eq!(counts.get(), (10, 10));
    });
}
