//! A hook says whether it wants HTTP request events (`Hook::wants_request_events`): a request
//! traced where no hook wants them has no hooks to build its events for, and a hook that does
//! not want them never gets one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use conntrack_core::trace::scope;
use conntrack_core::{
    Callbacks, CloseEvent, GotConnEvent, Hook, NoopHook, Registration, Role, Tracker,
};

/// A hook that handles only closes and says so.
struct CloseOnly(Arc<AtomicUsize>);

impl Hook for CloseOnly {
    fn on_close(&self, _ev: &CloseEvent<'_>) {}
    fn on_got_conn(&self, _ev: &GotConnEvent<'_>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn wants_request_events(&self) -> bool {
        false
    }
}

/// A hook that keeps the default (`true`).
struct Default_(Arc<AtomicUsize>);

impl Hook for Default_ {
    fn on_got_conn(&self, _ev: &GotConnEvent<'_>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn one_request(tracker: &Tracker) -> bool {
    let conn = tracker.register(Registration::new(Role::Client));
    let req = tracker.request("GET", "http://example.com/");
    let wanted = req.has_hooks();
    let _ = req.got_conn(conn.downgrade(), false);
    req.finish();
    wanted
}

#[test]
fn hooks_that_want_no_request_events_leave_requests_unwatched() {
    let seen = Arc::new(AtomicUsize::new(0));
    let tracker = Tracker::builder()
        .hook(NoopHook)
        .hook(CloseOnly(Arc::clone(&seen)))
        .hook(Callbacks::new().on_close(|_| {}))
        .build();
    assert!(!one_request(&tracker), "no hook wants request events");
    assert_eq!(seen.load(Ordering::SeqCst), 0);
}

#[test]
fn a_hook_that_wants_them_gets_them_and_only_it() {
    let unwanted = Arc::new(AtomicUsize::new(0));
    let wanted = Arc::new(AtomicUsize::new(0));
    let tracker = Tracker::builder()
        .hook(CloseOnly(Arc::clone(&unwanted)))
        .build();
    let _h = tracker.add_hook(Default_(Arc::clone(&wanted)));
    assert!(one_request(&tracker));
    assert_eq!(
        wanted.load(Ordering::SeqCst),
        1,
        "the default is to want them"
    );
    assert_eq!(unwanted.load(Ordering::SeqCst), 0, "it said it does not");
    drop(_h);
    assert!(
        !one_request(&tracker),
        "removing the hook removes the interest"
    );
}

#[test]
fn callbacks_want_request_events_only_with_a_request_closure() {
    assert!(!Callbacks::new().on_close(|_| {}).wants_request_events());
    assert!(Callbacks::new().on_got_conn(|_| {}).wants_request_events());
    assert!(Callbacks::new()
        .on_wrote_headers(|_| {})
        .wants_request_events());
    // A scope's hook counts too.
    let tracker = Tracker::new();
    assert!(!one_request(&tracker));
    let in_scope = futures_executor_free(|| {
        scope(Callbacks::new().on_got_conn(|_| {}), async {
            one_request(&tracker)
        })
    });
    assert!(in_scope);
}

/// Polls a future that never waits, to its end (no executor needed).
fn futures_executor_free<F: std::future::Future>(make: impl FnOnce() -> F) -> F::Output {
    let mut fut = std::pin::pin!(make());
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("the future waited"),
    }
}
