//! Hooks: the documented order (trace scopes, config closures, config hooks, tracker hooks),
//! `HookHandle`, panicking hooks, and opt-in per-I/O events.

mod common;

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::time::Duration;

use common::{addr, block_on, order_of, poll_once, server, Flag, Lines, Log};
use conntrack_core::{
    trace, AcceptEvent, Addr, Callbacks, CloseEvent, DialerConfig, Hook, Hooks, ListenerConfig,
    ReadEvent, Recorded, RecordingHook, Registration, Role, TlsInfo, Tracker,
};

/// A closure for a config's `on_*` setter that logs `config_closure:<event>`.
macro_rules! logged {
    ($lines:expr, $event:literal) => {{
        let lines = Lines::clone(&$lines);
        move |_: &_| {
            lines
                .lock()
                .unwrap()
                .push(concat!("config_closure:", $event).to_owned())
        }
    }};
}

fn tls13() -> TlsInfo {
    TlsInfo::new("1.3", "TLS_AES_128_GCM_SHA256")
}

/// A tracker with two builder hooks and one added at run time, all logging to `lines`.
fn logging_tracker(lines: &Lines) -> (Tracker, conntrack_core::HookHandle) {
    let tracker = Tracker::builder()
        .hook(Log::new("builder1", lines))
        .hook(Log::new("builder2", lines))
        .build();
    let added = tracker.add_hook(Log::new("added", lines));
    (tracker, added)
}

const TRACKER_HOOKS: [&str; 3] = ["builder1", "builder2", "added"];

fn expected(front: &[&str]) -> Vec<String> {
    front
        .iter()
        .chain(TRACKER_HOOKS.iter())
        .map(|s| (*s).to_owned())
        .collect()
}

// 9. Order.

#[test]
fn listener_events_run_hooks_in_the_documented_order() {
    let lines = Lines::default();
    let (tracker, _added) = logging_tracker(&lines);
    // A `.hook()` given before the closures still runs after them: closures are the config's
    // first hook, then its hooks in the order added.
    let config = ListenerConfig::new()
        .category("api")
        .hook(Log::new("config_hook1", &lines))
        .on_accept(logged!(lines, "accept"))
        .on_tls_handshake_start(logged!(lines, "tls_handshake_start"))
        .on_tls_handshake_done(logged!(lines, "tls_handshake_done"))
        .on_close(logged!(lines, "close"))
        .hook(Log::new("config_hook2", &lines));

    // The outer scope is the future form, the inner one the closure form.
    let (t, cfg, l) = (tracker.clone(), config.clone(), lines.clone());
    let conn = block_on(trace::scope(Log::new("outer", &lines), async move {
        trace::with(Log::new("inner", &l), || {
            let conn = t.accepted(&cfg, addr(80), addr(50_000));
            // Scope hooks see the connection's events while the scope lives.
            conn.report_tls_handshake_start(None);
            conn.report_tls_handshake_done(Ok(tls13()), Duration::from_millis(1));
            conn
        })
    }));
    // The scope has ended: the close reaches only the config's and the tracker's hooks.
    drop(conn);
    assert_eq!(
        order_of(&lines, "close"),
        expected(&["config_closure", "config_hook1", "config_hook2"]),
        "close after the scope ended"
    );

    let want = expected(&[
        "inner",
        "outer",
        "config_closure",
        "config_hook1",
        "config_hook2",
    ]);
    for ev in ["accept", "tls_handshake_start", "tls_handshake_done"] {
        assert_eq!(order_of(&lines, ev), want, "{ev}");
    }

    // A failed accept reports in the same order.
    lines.lock().unwrap().clear();
    trace::with(Log::new("outer", &lines), || {
        trace::with(Log::new("inner", &lines), || {
            tracker.accept_failed(&config, &Addr::Inet(addr(80)), &io::Error::other("EMFILE"));
        });
    });
    assert_eq!(order_of(&lines, "accept"), want, "failed accept");
}

/// Scopes nest: a connection made in an inner scope reports to the outer scope's hooks while
/// the outer scope lives, also after the inner one has ended (then to the outer's alone).
#[test]
fn a_connection_reports_to_the_outer_scope_after_the_inner_one_ends() {
    let lines = Lines::default();
    let tracker = Tracker::new();
    let config = ListenerConfig::new().category("api");
    for closure_form in [true, false] {
        lines.lock().unwrap().clear();
        let (t, cfg, l) = (tracker.clone(), config.clone(), lines.clone());
        trace::with(Log::new("outer", &lines), || {
            let conn = if closure_form {
                trace::with(Log::new("inner", &l), || {
                    t.accepted(&cfg, addr(80), addr(50_000))
                })
            } else {
                block_on(trace::scope(Log::new("inner", &l), async move {
                    t.accepted(&cfg, addr(80), addr(50_000))
                }))
            };
            // The inner scope has ended, the outer one lives.
            conn.report_tls_handshake_start(None);
            drop(conn);
        });
        assert_eq!(order_of(&lines, "accept"), ["inner", "outer"]);
        for ev in ["tls_handshake_start", "close"] {
            assert_eq!(
                order_of(&lines, ev),
                ["outer"],
                "{ev}, closure form {closure_form}"
            );
        }
    }
}

/// A traced future that has completed is out of scope even while it is kept (polled through
/// `&mut`): the connection it made no longer reports to its hook.
#[test]
fn a_completed_traced_future_ends_its_scope() {
    let lines = Lines::default();
    let tracker = Tracker::new();
    let config = ListenerConfig::new().category("api");
    let (t, cfg) = (tracker.clone(), config.clone());
    let mut fut = pin!(trace::scope(Log::new("scope", &lines), async move {
        t.accepted(&cfg, addr(80), addr(50_000))
    }));
    let conn = block_on(fut.as_mut());
    drop(conn);
    assert_eq!(order_of(&lines, "accept"), ["scope"]);
    assert!(
        order_of(&lines, "close").is_empty(),
        "{:?}",
        lines.lock().unwrap()
    );
}

#[test]
fn dialer_events_run_hooks_in_the_documented_order() {
    let lines = Lines::default();
    let (tracker, _added) = logging_tracker(&lines);
    let config = DialerConfig::new()
        .category("db")
        .on_dial(logged!(lines, "dial"))
        .on_dns_start(logged!(lines, "dns_start"))
        .on_dns_done(logged!(lines, "dns_done"))
        .on_connect_start(logged!(lines, "connect_start"))
        .on_connect_done(logged!(lines, "connect_done"))
        .on_tls_handshake_start(logged!(lines, "tls_handshake_start"))
        .on_tls_handshake_done(logged!(lines, "tls_handshake_done"))
        .on_close(logged!(lines, "close"))
        .hook(Log::new("config_hook1", &lines))
        .hook(Log::new("config_hook2", &lines));

    let targets = [addr(5433), addr(5432)];
    // The outer scope is the closure form, the inner one the future form.
    let conn = trace::with(Log::new("outer", &lines), || {
        let (t, cfg) = (tracker.clone(), config.clone());
        block_on(trace::scope(Log::new("inner", &lines), async move {
            let mut dial = t.dial(&cfg, "db.internal:5432");
            dial.dns_start("db.internal");
            dial.dns_done("db.internal", Ok(&targets));
            let refused = dial.connect_start(targets[0]);
            dial.connect_done(
                &refused,
                Err(&io::Error::from(io::ErrorKind::ConnectionRefused)),
            );
            let ok = dial.connect_start(targets[1]);
            dial.connect_done(&ok, Ok(()));
            let conn = dial.established(addr(40_000), targets[1]);
            conn.report_tls_handshake_start(Some("db.internal"));
            conn.report_tls_handshake_done(Ok(tls13()), Duration::from_millis(1));
            conn
        }))
    });
    let info = conn.info();
    assert_eq!(info.target.as_deref(), Some("db.internal:5432"));
    assert!(info.timings.dns.is_some() && info.timings.connect.is_some());
    drop(conn);

    let want = expected(&[
        "inner",
        "outer",
        "config_closure",
        "config_hook1",
        "config_hook2",
    ]);
    let twice: Vec<String> = want.iter().chain(want.iter()).cloned().collect();
    for ev in [
        "dns_start",
        "dns_done",
        "dial",
        "tls_handshake_start",
        "tls_handshake_done",
    ] {
        assert_eq!(order_of(&lines, ev), want, "{ev}");
    }
    assert_eq!(
        order_of(&lines, "close"),
        expected(&["config_closure", "config_hook1", "config_hook2"]),
        "the scopes had ended when the connection closed"
    );
    for ev in ["connect_start", "connect_done"] {
        assert_eq!(order_of(&lines, ev), twice, "{ev}: once per attempt");
    }

    // A failed dial: the scope captured when the dial started, even if it fails outside it.
    lines.lock().unwrap().clear();
    let mut dial = trace::with(Log::new("outer", &lines), || {
        trace::with(Log::new("inner", &lines), || {
            tracker.dial(&config, "nowhere:1")
        })
    });
    dial.dns_start("nowhere");
    dial.dns_done("nowhere", Err(&io::Error::other("no such host")));
    dial.failed(&io::Error::other("no such host"));
    for ev in ["dns_start", "dns_done", "dial"] {
        assert_eq!(order_of(&lines, ev), want, "failed dial: {ev}");
    }
    let stats = tracker.stats();
    assert_eq!(stats.get("db", Role::Client).unwrap().failed, 1);
}

#[test]
fn a_registration_hook_runs_after_the_config_and_before_the_tracker() {
    let lines = Lines::default();
    let (tracker, _added) = logging_tracker(&lines);
    let config = ListenerConfig::new()
        .on_accept(logged!(lines, "accept"))
        .hook(Log::new("config_hook", &lines));
    trace::with(Log::new("scope", &lines), || {
        let conn = tracker.register(
            Registration::server(addr(80), addr(50_000))
                .hook(Log::new("registration", &lines))
                .listener_config(&config),
        );
        drop(conn);
    });
    let want = expected(&["scope", "config_closure", "config_hook", "registration"]);
    assert_eq!(order_of(&lines, "accept"), want);
    assert_eq!(
        order_of(&lines, "close"),
        expected(&["scope", "config_hook", "registration"]),
        "the config has no close closure"
    );
}

#[test]
fn outside_a_scope_only_config_and_tracker_hooks_run() {
    let lines = Lines::default();
    let (tracker, _added) = logging_tracker(&lines);
    trace::with(Log::new("scope", &lines), || ());
    drop(tracker.register(server("x")));
    assert_eq!(order_of(&lines, "accept"), expected(&[]));
    // A scope left by a panic is left for good.
    let r = catch_unwind(AssertUnwindSafe(|| {
        trace::with(Log::new("scope", &lines), || panic!("inside a scope"));
    }));
    assert!(r.is_err());
    lines.lock().unwrap().clear();
    drop(tracker.register(server("x")));
    assert_eq!(order_of(&lines, "accept"), expected(&[]));
}

#[test]
fn hook_handle_drop_removes_and_keep_keeps() {
    let tracker = Tracker::new();
    let dropped = RecordingHook::new();
    let removed = RecordingHook::new();
    let kept = RecordingHook::new();
    let h_dropped = tracker.add_hook(dropped.clone());
    let h_removed = tracker.add_hook(removed.clone());
    tracker.add_hook(kept.clone()).keep();

    let open = tracker.register(server("x"));
    drop(tracker.register(server("x")));
    drop(h_dropped);
    h_removed.remove();
    drop(tracker.register(server("x")));
    drop(open);
    assert_eq!(dropped.names(), ["accept", "accept", "close"]);
    assert_eq!(removed.names(), ["accept", "accept", "close"]);
    assert_eq!(
        kept.names(),
        ["accept", "accept", "close", "accept", "close", "close"],
        "a kept hook sees everything, including the close of a connection opened before"
    );

    // A handle that outlives its tracker is harmless.
    let h = tracker.add_hook(RecordingHook::new());
    drop(tracker);
    drop(h);
}

// 10. Panicking hooks.

struct Panics;

impl Hook for Panics {
    fn on_accept(&self, _: &AcceptEvent<'_>) {
        panic!("hook panic in on_accept");
    }
    fn on_read(&self, _: &ReadEvent<'_>) {
        panic!("hook panic in on_read");
    }
    fn on_close(&self, _: &CloseEvent<'_>) {
        panic!("hook panic in on_close");
    }
    fn wants_io_events(&self) -> bool {
        true
    }
}

#[test]
fn a_panicking_hook_leaves_the_tracker_consistent() {
    let rec = RecordingHook::with_io();
    let config_rec = RecordingHook::new();
    let tracker = Tracker::builder()
        .hook(Panics)
        .hook(rec.clone())
        .history(8)
        .build();
    let config = ListenerConfig::new()
        .category("p")
        .on_accept(|_| panic!("closure panic in on_accept"))
        .hook(config_rec.clone());

    let conn = tracker.accepted(&config, addr(80), addr(50_000));
    assert_eq!(tracker.len(), 1, "registered despite the panics");
    assert_eq!(tracker.stats().hook_panics, 2, "closure and tracker hook");
    conn.record_read(5);
    assert_eq!(conn.info().read_bytes, 5);
    assert_eq!(tracker.stats().hook_panics, 3);
    let id = conn.id();
    drop(conn);
    assert!(tracker.is_empty(), "removed despite the panic");
    assert_eq!(
        rec.names(),
        ["accept", "read", "close"],
        "later hooks still ran"
    );
    assert_eq!(config_rec.names(), ["accept", "close"], "config hooks too");
    assert_eq!(tracker.recently_closed()[0].info.id, id, "history recorded");
    let stats = tracker.stats();
    assert_eq!(stats.hook_panics, 4);
    let s = stats.get("p", Role::Server).unwrap();
    assert_eq!((s.opened, s.closed, s.active, s.read_bytes), (1, 1, 0, 5));
    let flag = Flag::new();
    assert!(poll_once(pin!(tracker.drained()), &flag).is_ready());

    // Later registrations still work.
    let again = tracker.register(server("q"));
    assert_eq!(tracker.len(), 1);
    assert_eq!(tracker.stats().hook_panics, 5);

    // Dropping a connection while unwinding from a panic (its close hook panics too) does not
    // abort, and the entry still goes.
    let r = catch_unwind(AssertUnwindSafe(move || {
        let _conn = again;
        panic!("the stream's owner panics");
    }));
    assert!(r.is_err());
    assert!(tracker.is_empty());
    assert_eq!(rec.count("close"), 2);
    assert_eq!(tracker.stats().hook_panics, 6);
    assert_eq!(tracker.stats().total().closed, 2);
}

#[test]
fn a_panicking_hook_inside_hooks_does_not_silence_the_others() {
    let rec = RecordingHook::new();
    let tracker = Tracker::builder()
        .hook(Hooks::new().with(Panics).with(rec.clone()))
        .build();
    drop(tracker.register(server("x")));
    assert!(tracker.is_empty());
    assert_eq!(rec.names(), ["accept", "close"]);
    assert_eq!(tracker.stats().hook_panics, 2, "accept and close");
}

#[test]
fn each_panicking_hook_inside_hooks_is_counted() {
    let rec = RecordingHook::new();
    let nested = Hooks::new().with(Panics).with(Panics);
    let tracker = Tracker::builder()
        .hook(
            Hooks::new()
                .with(Panics)
                .with(rec.clone())
                .with(Panics)
                .with(nested),
        )
        .build();
    drop(tracker.register(server("x")));
    assert!(tracker.is_empty());
    assert_eq!(rec.names(), ["accept", "close"]);
    assert_eq!(
        tracker.stats().hook_panics,
        8,
        "four panicking hooks (two nested), on accept and on close"
    );

    // A group with one panicking hook re-raises that hook's own panic.
    let seen = Lines::default();
    let tracker = Tracker::builder()
        .hook(Catcher(Hooks::new().with(Panics), Lines::clone(&seen)))
        .build();
    drop(tracker.register(server("y")));
    assert_eq!(
        *seen.lock().unwrap(),
        ["hook panic in on_accept", "hook panic in on_close"]
    );
    assert_eq!(tracker.stats().hook_panics, 0, "caught before the tracker");
}

/// Calls its hook's `on_accept` and `on_close`, catching a panic and logging its message.
struct Catcher(Hooks, Lines);

impl Catcher {
    fn run(&self, f: impl FnOnce()) {
        if let Err(p) = catch_unwind(AssertUnwindSafe(f)) {
            let msg = p.downcast_ref::<&str>().map_or("?", |s| s);
            self.1.lock().unwrap().push(msg.to_owned());
        }
    }
}

impl Hook for Catcher {
    fn on_accept(&self, ev: &AcceptEvent<'_>) {
        self.run(|| self.0.on_accept(ev));
    }
    fn on_close(&self, ev: &CloseEvent<'_>) {
        self.run(|| self.0.on_close(ev));
    }
}

// 11. Per-I/O hooks are opt-in.

fn io_calls(conn: &conntrack_core::Connection) {
    conn.record_read(7);
    conn.record_write(3);
    let err = conn
        .read_result(Err(io::Error::from(io::ErrorKind::ConnectionReset)))
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "passed through");
    let err = conn
        .write_result(Err(io::Error::from_raw_os_error(32)))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(32), "passed through unchanged");
    assert_eq!(conn.read_result(Ok(5)).unwrap(), 5);
    assert_eq!(conn.write_result(Ok(2)).unwrap(), 2);
}

#[test]
fn without_an_io_hook_no_io_events_are_recorded() {
    let plain = RecordingHook::new();
    let tracker = Tracker::builder().hook(plain.clone()).build();
    let conn = tracker.register(server("x"));
    io_calls(&conn);
    let info = conn.info();
    assert_eq!((info.read_bytes, info.write_bytes), (12, 5));
    drop(conn);
    assert_eq!(plain.names(), ["accept", "close"]);
    assert_eq!(
        plain.events()[1].error().unwrap().kind,
        io::ErrorKind::BrokenPipe,
        "the last error still reaches on_close"
    );
}

#[test]
fn an_io_hook_sees_every_read_and_write() {
    let io_rec = RecordingHook::with_io();
    let tracker = Tracker::builder().hook(io_rec.clone()).build();
    let conn = tracker.register(server("x"));
    io_calls(&conn);
    let id = conn.id();
    let got: Vec<_> = io_rec
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Recorded::Read { id: i, n, error } => Some(("read", i, n, error.map(|e| e.kind))),
            Recorded::Write { id: i, n, error } => Some(("write", i, n, error.map(|e| e.kind))),
            _ => None,
        })
        .collect();
    assert_eq!(
        got,
        [
            ("read", id, 7, None),
            ("write", id, 3, None),
            ("read", id, 0, Some(io::ErrorKind::ConnectionReset)),
            ("write", id, 0, Some(io::ErrorKind::BrokenPipe)),
            ("read", id, 5, None),
            ("write", id, 2, None),
        ]
    );
}

#[test]
fn an_io_hook_added_at_run_time_applies_to_open_connections_until_removed() {
    let plain = RecordingHook::new();
    let tracker = Tracker::builder().hook(plain.clone()).build();
    let conn = tracker.register(server("x"));
    conn.record_read(1);

    let io_rec = RecordingHook::with_io();
    let handle = tracker.add_hook(io_rec.clone());
    conn.record_read(7);
    conn.record_write(3);
    assert_eq!(io_rec.names(), ["read", "write"]);

    handle.remove();
    conn.record_read(1);
    conn.record_write(1);
    assert_eq!(io_rec.names(), ["read", "write"], "removed: no more events");
    assert_eq!(plain.names(), ["accept"], "the plain hook never saw I/O");
    assert_eq!(conn.info().read_bytes, 9);
}

#[test]
fn config_and_scope_io_hooks_apply_to_their_own_connections_only() {
    let lines = Lines::default();
    let tracker = Tracker::new();
    let config = ListenerConfig::new().on_read(logged!(lines, "read"));
    let with_config = tracker.accepted(&config, addr(80), addr(50_000));
    let plain = tracker.register(server("x"));
    let scoped = trace::with(
        Callbacks::new().on_write({
            let l = lines.clone();
            move |_| l.lock().unwrap().push("scope:write".into())
        }),
        || {
            let scoped = tracker.register(server("x"));
            for c in [&with_config, &plain, &scoped] {
                c.record_read(1);
                c.record_write(1);
            }
            scoped
        },
    );
    assert_eq!(
        *lines.lock().unwrap(),
        ["config_closure:read", "scope:write"]
    );
    // Once the scope has ended, its hook sees nothing more.
    scoped.record_write(1);
    assert_eq!(
        *lines.lock().unwrap(),
        ["config_closure:read", "scope:write"]
    );
}

#[test]
fn hooks_combined_ask_each_hook_whether_it_wants_io() {
    let plain = RecordingHook::new();
    let io_rec = RecordingHook::with_io();
    let tracker = Tracker::builder()
        .hook(Hooks::new().with(plain.clone()).with(io_rec.clone()))
        .build();
    let conn = tracker.register(server("x"));
    conn.record_read(1);
    conn.record_write(1);
    drop(conn);
    assert_eq!(io_rec.names(), ["accept", "read", "write", "close"]);
    assert_eq!(
        plain.names(),
        ["accept", "close"],
        "no I/O for a hook that did not ask"
    );
}
