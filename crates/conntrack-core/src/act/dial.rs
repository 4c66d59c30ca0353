//! [`Dial`]: reporting an outbound connection's phases (DNS, connect attempts) before it exists.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::hooks::hook::Chain;
use crate::hooks::trace;
use crate::record::event::{
    ConnectDoneEvent, ConnectStartEvent, DialEvent, DnsDoneEvent, DnsStartEvent,
};
use crate::record::info::{Addr, Role, Timings};
use crate::track::clock;
use crate::track::config::{DialerConfig, Policy};
use crate::track::connection::{Connection, Registration};
use crate::track::limit::{LimitMode, Limiter};
use crate::track::tracker::Tracker;

/// One dial in progress, from [`Tracker::dial`].
///
/// A dialer adapter reports each phase as it happens and finishes with
/// [`established`](Dial::established) (which registers the connection with the measured
/// timings) or [`failed`](Dial::failed). Hooks run in scope order: the
/// [`trace`](crate::trace) scope current when the dial started, then the dialer config, then the
/// tracker.
///
/// Dropping a `Dial` without finishing it (a cancelled dial future) reports nothing and tracks
/// nothing: the dial did not fail, its caller stopped waiting.
///
/// ```
/// use conntrack_core::{DialerConfig, Tracker};
/// use std::net::SocketAddr;
///
/// let tracker = Tracker::new();
/// let config = DialerConfig::new().category("db");
/// let mut dial = tracker.dial(&config, "localhost:5432");
/// let addrs: Vec<SocketAddr> = vec!["127.0.0.1:5432".parse().unwrap()];
/// dial.dns_start("localhost");
/// dial.dns_done("localhost", Ok(&addrs));
/// let attempt = dial.connect_start(addrs[0]);
/// // ... the adapter connects a socket here ...
/// dial.connect_done(&attempt, Ok(()));
/// let conn = dial.established("127.0.0.1:40000".parse::<SocketAddr>().unwrap(), addrs[0]);
/// assert_eq!(tracker.len(), 1);
/// assert!(conn.info().timings.dns.is_some());
/// ```
pub struct Dial {
    tracker: Tracker,
    category: Arc<str>,
    /// The trace scope, then the config's hooks: what the dial's own events go to.
    chain: Chain,
    /// The trace scope captured when the dial began (held strongly until the dial ends).
    scope: Chain,
    /// The config's hooks, for the connection.
    config_chain: Chain,
    target: Target,
    started: u64,
    dns_started: Option<u64>,
    /// When the winning connect attempt finished (the connection's opening time: one clock
    /// read fewer at registration).
    connected_at: Option<u64>,
    timings: Timings,
    /// The slot of the config's connection limit this dial holds, if it has one: handed to the
    /// connection, or given back when the dial fails or is dropped.
    permit: Option<Arc<Limiter>>,
    /// The config's idle timeout, maximum age and TCP-statistics switch, for the connection.
    policy: Policy,
}

/// What a dial is for: the text given, or one address whose text is made only when something
/// reads it (an address dial that succeeds with no hook installed never formats it).
enum Target {
    Text(Arc<str>),
    Addr(SocketAddr, OnceLock<Arc<str>>),
}

/// One connect attempt of a [`Dial`], from [`Dial::connect_start`].
#[derive(Debug, Clone)]
pub struct ConnectAttempt {
    addr: Addr,
    started: u64,
}

impl ConnectAttempt {
    /// The address this attempt connects to.
    #[must_use]
    pub fn addr(&self) -> &Addr {
        &self.addr
    }
}

impl Dial {
    pub(crate) fn new(tracker: Tracker, config: &DialerConfig, target: Arc<str>) -> Self {
        Dial::with_target(tracker, config, Target::Text(target))
    }

    pub(crate) fn new_addr(tracker: Tracker, config: &DialerConfig, addr: SocketAddr) -> Self {
        Dial::with_target(tracker, config, Target::Addr(addr, OnceLock::new()))
    }

    fn with_target(tracker: Tracker, config: &DialerConfig, target: Target) -> Self {
        let scope = trace::current();
        Dial {
            tracker,
            category: Arc::clone(config.category_name()),
            chain: config.chain().prepend(&scope),
            config_chain: config.chain().clone(),
            scope,
            target,
            started: clock::now_nanos(),
            dns_started: None,
            connected_at: None,
            timings: Timings::new(),
            permit: None,
            policy: config.policy(),
        }
    }

    /// Takes a slot of the config's connection limit
    /// ([`DialerConfig::max_connections`](crate::DialerConfig::max_connections)), waiting for
    /// one in [`LimitMode::Wait`](crate::LimitMode::Wait). Ready at once without a limit.
    ///
    /// Waiting dials are served first come, first served: each slot that frees is handed to
    /// the dial that has waited longest, waking that dial alone. Dropping the future (a dial
    /// under a timeout) leaves the queue at once.
    ///
    /// # Errors
    ///
    /// In [`LimitMode::Reject`](crate::LimitMode::Reject) at the limit: kind `ResourceBusy`.
    /// The refusal is counted in [`CategoryStats::rejected`](crate::CategoryStats::rejected)
    /// and reported to `on_dial`; the dial is over (drop it).
    pub async fn admit(&mut self, config: &DialerConfig) -> io::Result<()> {
        let Some(limiter) = config.limiter() else {
            return Ok(());
        };
        if limiter.mode == LimitMode::Reject {
            if let Err(why) = limiter.try_acquire(None) {
                let err = io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    format!("outbound {} ({} for this config)", why.why(), limiter.max),
                );
                self.rejected(&err);
                return Err(err);
            }
        } else {
            // First come, first served: a slot that frees is handed to the dial that has
            // waited longest. Dropping this future gives up the place in the queue (and a slot
            // handed over meanwhile goes on to the next dial).
            let slot = match limiter.acquire() {
                Ok(slot) => slot,
                Err(mut queued) => std::future::poll_fn(|cx| queued.poll_slot(cx)).await,
            };
            slot.keep();
        }
        self.permit = Some(Arc::clone(limiter));
        Ok(())
    }

    /// The dial was refused by its config's limit.
    fn rejected(&self, error: &io::Error) {
        let ev = self.failure(error);
        self.tracker.dial_rejected(&self.category, &self.chain, &ev);
    }

    /// The `on_dial` event of a dial that ended with `error`.
    fn failure<'a>(&'a self, error: &'a io::Error) -> DialEvent<'a> {
        DialEvent {
            category: &self.category,
            target: self.target_text(),
            connection: None,
            error: Some(error),
            duration: clock::since(self.started),
        }
    }

    /// What is being dialed.
    #[must_use]
    pub fn target(&self) -> &str {
        self.target_text()
    }

    fn target_text(&self) -> &Arc<str> {
        match &self.target {
            Target::Text(t) => t,
            Target::Addr(a, text) => text.get_or_init(|| Arc::from(a.to_string())),
        }
    }

    /// Name resolution of `host` starts (`on_dns_start`).
    pub fn dns_start(&mut self, host: &str) {
        self.dns_started = Some(clock::now_nanos());
        let category = &*self.category;
        self.tracker.fire(&self.chain, &mut |h| {
            h.on_dns_start(&DnsStartEvent { category, host });
        });
    }

    /// Name resolution of `host` finished (`on_dns_done`); its duration becomes `timings.dns`.
    pub fn dns_done(&mut self, host: &str, result: Result<&[SocketAddr], &io::Error>) {
        self.dns_done_coalesced(host, result, false);
    }

    /// [`dns_done`](Dial::dns_done) for a dial that shared another dial's lookup of the same
    /// name instead of making its own (`coalesced`, Go's `DNSDoneInfo.Coalesced`).
    pub fn dns_done_coalesced(
        &mut self,
        host: &str,
        result: Result<&[SocketAddr], &io::Error>,
        coalesced: bool,
    ) {
        let duration = self
            .dns_started
            .take()
            .map(clock::since)
            .unwrap_or_default();
        self.timings.dns = Some(duration);
        let (addrs, error) = match result {
            Ok(a) => (a, None),
            Err(e) => (&[][..], Some(e)),
        };
        let category = &*self.category;
        self.tracker.fire(&self.chain, &mut |h| {
            h.on_dns_done(&DnsDoneEvent {
                category,
                host,
                addrs,
                error,
                duration,
                coalesced,
            });
        });
    }

    /// One connect attempt to `addr` starts (`on_connect_start`). Attempts may overlap.
    pub fn connect_start(&self, addr: impl Into<Addr>) -> ConnectAttempt {
        let attempt = ConnectAttempt {
            addr: addr.into(),
            started: clock::now_nanos(),
        };
        let category = &*self.category;
        self.tracker.fire(&self.chain, &mut |h| {
            h.on_connect_start(&ConnectStartEvent {
                category,
                addr: &attempt.addr,
            });
        });
        attempt
    }

    /// A connect attempt finished (`on_connect_done`). A success sets `timings.connect`.
    pub fn connect_done(&mut self, attempt: &ConnectAttempt, result: Result<(), &io::Error>) {
        let now = clock::now_nanos();
        let duration = std::time::Duration::from_nanos(now.saturating_sub(attempt.started));
        if result.is_ok() {
            self.timings.connect = Some(duration);
            self.connected_at = Some(now);
        }
        let category = &*self.category;
        let error = result.err();
        self.tracker.fire(&self.chain, &mut |h| {
            h.on_connect_done(&ConnectDoneEvent {
                category,
                addr: &attempt.addr,
                error,
                duration,
            });
        });
    }

    /// How long the dial has run so far.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        clock::since(self.started)
    }

    /// The dial succeeded: registers the connection (role client, the dial's target, category,
    /// hooks and timings) and fires `on_dial`.
    pub fn established(mut self, local: impl Into<Addr>, remote: impl Into<Addr>) -> Connection {
        let remote = remote.into();
        let mut reg = Registration::new(Role::Client)
            .local_addr(local)
            .timings(self.timings);
        match &self.target {
            // The target is the remote address: its text is made when a record is built, and
            // is not made at all if nothing reads the connection (a hook would read it now).
            Target::Addr(a, text)
                if text.get().is_none()
                    && remote == Addr::Inet(*a)
                    && !self.tracker.inner.has_hooks(&self.chain) =>
            {
                reg.target_is_remote = true;
            }
            _ => reg.target = Some(Arc::clone(self.target_text())),
        }
        reg.remote_addr = remote;
        reg.chain = std::mem::take(&mut self.config_chain);
        reg.scope = std::mem::take(&mut self.scope);
        reg.scoped = true;
        reg.dial_started = Some(self.started);
        reg.opened_at = self.connected_at;
        reg.permit = self.permit.take().map(|l| (l, None));
        reg.policy = self.policy;
        self.tracker.register_as(&self.category, reg)
    }

    /// The dial failed: counts it in [`CategoryStats::failed`](crate::CategoryStats::failed)
    /// and fires `on_dial` with the error. Nothing is tracked.
    pub fn failed(self, error: &io::Error) {
        let ev = self.failure(error);
        self.tracker.dial_failed(&self.category, &self.chain, &ev);
    }
}

impl Drop for Dial {
    fn drop(&mut self) {
        // Failed, refused or cancelled before a connection was made: the slot goes back.
        if let Some(limiter) = self.permit.take() {
            limiter.release(None);
        }
    }
}

impl fmt::Debug for Dial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dial")
            .field("category", &self.category)
            .field("target", &self.target())
            .field("timings", &self.timings)
            .finish_non_exhaustive()
    }
}

impl Tracker {
    /// Starts reporting a dial of `target` with `config`, capturing the current
    /// [`trace`](crate::trace) scope. See [`Dial`].
    pub fn dial(&self, config: &DialerConfig, target: impl Into<Arc<str>>) -> Dial {
        Dial::new(self.clone(), config, target.into())
    }

    /// Starts reporting a dial of one address, `addr`, with `config`: the same as
    /// [`dial`](Tracker::dial) with `addr.to_string()` as the target, except that the text is
    /// made only when something reads it (a hook, a snapshot, the history), so a dial nobody
    /// looks at does not format an address.
    pub fn dial_addr(&self, config: &DialerConfig, addr: SocketAddr) -> Dial {
        Dial::new_addr(self.clone(), config, addr)
    }
}
