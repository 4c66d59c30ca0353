//! The debug page's server-sent events (`.../events`): what happens to the tracker's
//! connections as it happens, for the live page and for any other subscriber.
//!
//! Each subscriber installs its own tracker [`Hook`] (connection events only: accept, dial,
//! close; never per-I/O events) that pushes into that subscriber's bounded queue with
//! `try_send`. When the queue is full the event is dropped and counted, and the subscriber
//! stops listening: its hook is removed, so a subscriber that does not read costs the
//! connections nothing at all (not even the building of events a hook causes). Once the
//! stream has delivered its queue it listens again; what it missed meanwhile is counted from
//! the tracker's totals (opened + closed + failed + rejected, one event each) at the next
//! summary: exact when no connection opens or closes at that moment, else off by those in
//! flight. A slow subscriber loses events and is told so, and never slows a connection.
//!
//! The hook is removed when the subscriber's stream is dropped, so with nobody subscribed
//! nothing is installed, queued or running; the summary timer lives inside the stream and goes
//! with it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::response::sse::Event;
use conntrack_core::render;
use conntrack_core::{
    AcceptEvent, CloseEvent, CloseReason, ConnectionInfo, DialEvent, Hook, HookHandle, Role, Stats,
    Tracker,
};
use futures_core::Stream;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// What a subscriber's hook queues.
enum Live {
    Opened(ConnectionInfo),
    Closed {
        info: ConnectionInfo,
        reason: CloseReason,
        error: Option<String>,
    },
    Failed(Failed),
}

/// An accept or dial that failed (or a connection refused at once by a limit or a shutdown).
#[derive(Serialize)]
struct Failed {
    category: String,
    role: Role,
    /// The listener's address (accept) or what was dialed (dial).
    #[serde(skip_serializing_if = "Option::is_none")]
    local_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    error: Option<String>,
    rejected: bool,
}

/// Shared by a subscriber's hook and its stream.
#[derive(Default)]
struct Feed {
    /// Events dropped on a full queue.
    dropped: AtomicU64,
    /// Events the hook was called with (queued or dropped).
    seen: AtomicU64,
    /// The installed hook; `None` while not listening.
    handle: Mutex<Option<HookHandle>>,
    /// The hook removed itself on a full queue: the stream installs it again once it has
    /// caught up.
    unhooked: AtomicBool,
}

impl Feed {
    /// Removes the hook (from inside it, on a full queue). If the stream holds the slot (it is
    /// installing or leaving), the next full event tries again.
    fn unhook(&self) {
        if let Ok(mut slot) = self.handle.try_lock() {
            if let Some(handle) = slot.take() {
                self.unhooked.store(true, Ordering::Release);
                drop(slot);
                drop(handle);
            }
        }
    }
}

/// The events a tracker's totals stand for: one `opened` per opened connection, one `closed`
/// per closed one, one `failed` per failed or rejected accept or dial.
pub(crate) fn event_total(stats: &Stats) -> u64 {
    stats
        .categories
        .iter()
        .map(|c| c.opened + c.closed + c.failed + c.rejected)
        .sum()
}

/// The hook of one subscriber.
struct LiveHook {
    tx: mpsc::Sender<Live>,
    feed: Arc<Feed>,
}

impl LiveHook {
    fn push(&self, make: impl FnOnce() -> Live) {
        self.feed.seen.fetch_add(1, Ordering::Relaxed);
        // A full queue: the event is not even built, and the hook leaves until the subscriber
        // has caught up.
        if self.tx.capacity() == 0 {
            self.overflow();
            return;
        }
        match self.tx.try_send(make()) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.overflow(),
        }
    }

    fn overflow(&self) {
        self.feed.dropped.fetch_add(1, Ordering::Relaxed);
        self.feed.unhook();
    }
}

impl Hook for LiveHook {
    fn on_accept(&self, ev: &AcceptEvent<'_>) {
        match (ev.connection, ev.error) {
            (Some(c), None) => self.push(|| Live::Opened(c.clone())),
            (_, error) => self.push(|| {
                Live::Failed(Failed {
                    category: ev.category.to_owned(),
                    role: Role::Server,
                    local_addr: Some(ev.local_addr.to_string()),
                    target: None,
                    error: error.map(ToString::to_string),
                    rejected: ev.rejected,
                })
            }),
        }
    }

    fn on_dial(&self, ev: &DialEvent<'_>) {
        match (ev.connection, ev.error) {
            (Some(c), None) => self.push(|| Live::Opened(c.clone())),
            (_, error) => self.push(|| {
                Live::Failed(Failed {
                    category: ev.category.to_owned(),
                    role: Role::Client,
                    local_addr: None,
                    target: Some(ev.target.to_owned()),
                    error: error.map(ToString::to_string),
                    rejected: false,
                })
            }),
        }
    }

    fn on_close(&self, ev: &CloseEvent<'_>) {
        self.push(|| Live::Closed {
            info: ev.connection.clone(),
            reason: ev.reason,
            error: ev.error.map(ToString::to_string),
        });
    }
}

/// How a page's subscribers are configured and counted (shared by the clones of a
/// [`DebugPage`](crate::DebugPage)).
#[derive(Debug, Clone)]
pub(crate) struct EventsConfig {
    /// Events a subscriber's queue holds before it drops.
    pub(crate) queue: usize,
    /// Subscribers at once; more are refused (`503`).
    pub(crate) max_subscribers: usize,
    /// Period of the `summary` event.
    pub(crate) summary_every: Duration,
    /// Subscribers now.
    pub(crate) subscribers: Arc<AtomicUsize>,
    /// Set to `true` by [`DebugPage::close_events`](crate::DebugPage::close_events): every
    /// stream ends, and no new one begins.
    pub(crate) closing: Arc<watch::Sender<bool>>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            queue: 1024,
            max_subscribers: 16,
            summary_every: Duration::from_secs(1),
            subscribers: Arc::default(),
            closing: Arc::new(watch::Sender::new(false)),
        }
    }
}

/// Decrements the subscriber count when a stream goes.
struct CountGuard(Arc<AtomicUsize>);

impl Drop for CountGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One subscriber's stream of server-sent events.
pub(crate) struct EventStream {
    rx: mpsc::Receiver<Live>,
    /// For the hook installed again after an overflow (and so that the queue never closes).
    tx: mpsc::Sender<Live>,
    feed: Arc<Feed>,
    /// [`event_total`] before the hook was first installed.
    base_total: u64,
    /// Events missed while not listening, as of the last summary.
    missed: u64,
    tracker: Tracker,
    /// Rows rendered as the page's HTML in an `html` field (the live page asks for them).
    html: bool,
    tick: tokio::time::Interval,
    /// The summary being computed off the async workers (it walks every connection).
    summary_job: Option<JoinHandle<SummaryDone>>,
    pending: VecDeque<Event>,
    told_dropped: u64,
    /// The ids of the finished requests seen at the last summary (or at subscription).
    seen_requests: Option<Vec<u64>>,
    /// The newest server exchange seen at the last summary (its number on the tracker, which
    /// only grows; or at subscription).
    seen_server: Option<u64>,
    /// Ends the stream when the page's events are closed.
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
    _count: CountGuard,
}

/// A summary computed off the async workers: the event, the `request` and
/// `server_exchange` events of requests finished since the last one, the ids of the requests
/// seen and the newest server exchange's, the events missed so far.
struct SummaryDone {
    summary: Event,
    requests: Vec<Event>,
    request_ids: Vec<u64>,
    server_newest: u64,
    missed: u64,
}

impl Drop for EventStream {
    fn drop(&mut self) {
        // The hook goes with the stream (it is kept in the feed, which the hook holds).
        let handle = self
            .feed
            .handle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(handle);
    }
}

/// Why a subscriber was not let in.
pub(crate) enum Refused {
    /// [`EventsConfig::max_subscribers`] are subscribed.
    TooMany,
    /// The page's events were closed (its server is shutting down).
    Closed,
}

impl EventStream {
    /// A new subscriber; `base_total` is [`event_total`] of the tracker's stats taken just
    /// before.
    pub(crate) fn subscribe(
        tracker: &Tracker,
        config: &EventsConfig,
        html: bool,
        base_total: u64,
    ) -> Result<Self, Refused> {
        if *config.closing.borrow() {
            return Err(Refused::Closed);
        }
        let count = &config.subscribers;
        if count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < config.max_subscribers).then_some(n + 1)
            })
            .is_err()
        {
            return Err(Refused::TooMany);
        }
        let guard = CountGuard(Arc::clone(count));
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let feed = Arc::new(Feed::default());
        let hook = tracker.add_hook(LiveHook {
            tx: tx.clone(),
            feed: Arc::clone(&feed),
        });
        *feed
            .handle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(hook);
        let mut tick = tokio::time::interval(config.summary_every.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut closing = config.closing.subscribe();
        let stop: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
            let _ = closing.wait_for(|closing| *closing).await;
        });
        Ok(EventStream {
            rx,
            tx,
            feed,
            base_total,
            missed: 0,
            tracker: tracker.clone(),
            html,
            tick,
            summary_job: None,
            pending: VecDeque::new(),
            told_dropped: 0,
            // What the rings hold now is not news; what finishes from here on is reported
            // with the next summary, the first one included.
            seen_requests: Some(tracker.recent_requests().iter().map(|r| r.id).collect()),
            seen_server: Some(
                tracker
                    .recent_server_exchanges()
                    .first()
                    .map_or(0, |x| x.id),
            ),
            stop,
            _count: guard,
        })
    }

    fn render(&self, live: Live) -> Event {
        match live {
            Live::Opened(info) => {
                let row = self.html.then(|| render::html_row(&info));
                event(
                    "opened",
                    &Opened {
                        info: &info,
                        html: row,
                    },
                )
            }
            Live::Closed {
                info,
                reason,
                error,
            } => {
                let row = self
                    .html
                    .then(|| render::html_closed_row(&info, reason, error.as_deref()));
                let closed_at = secs(info.established_at) + info.established_for.as_secs_f64();
                event(
                    "closed",
                    &Closed {
                        info: &info,
                        closed_at,
                        error: error.as_deref(),
                        reason: reason.as_str(),
                        html: row,
                    },
                )
            }
            Live::Failed(f) => event("failed", &f),
        }
    }

    /// Listens again once the queue has been delivered, if a full queue had stopped it.
    fn rehook(&self) {
        if !self.feed.unhooked.load(Ordering::Acquire) {
            return;
        }
        let mut slot = self
            .feed
            .handle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(self.tracker.add_hook(LiveHook {
                tx: self.tx.clone(),
                feed: Arc::clone(&self.feed),
            }));
        }
        self.feed.unhooked.store(false, Ordering::Release);
    }

    /// Everything dropped so far: on a full queue, and missed while not listening.
    fn dropped(&self) -> u64 {
        self.feed.dropped.load(Ordering::Relaxed) + self.missed
    }

    fn start_summary(&mut self) {
        let tracker = self.tracker.clone();
        let seen = self.seen_requests.clone();
        let seen_server = self.seen_server;
        let feed = Arc::clone(&self.feed);
        let (base, missed_before) = (self.base_total, self.missed);
        self.summary_job = Some(tokio::task::spawn_blocking(move || {
            let stats = tracker.stats();
            // What the totals say happened since subscribing, less what the hook was called
            // with: what it missed while not listening (read after the totals, so that an event
            // in flight is not counted as missed).
            let happened = event_total(&stats).saturating_sub(base);
            let missed = happened
                .saturating_sub(feed.seen.load(Ordering::Relaxed))
                .max(missed_before);
            let dropped = feed.dropped.load(Ordering::Relaxed) + missed;
            let summary = event(
                "summary",
                &Summary {
                    at: secs(SystemTime::now()),
                    total_connections: tracker.len(),
                    stats: &stats,
                    dropped,
                },
            );
            // Requests that finished since the last summary (or the subscription).
            let requests = tracker.recent_requests();
            let ids: Vec<u64> = requests.iter().map(|r| r.id).collect();
            let mut new: Vec<Event> = match &seen {
                None => Vec::new(),
                Some(seen) => requests
                    .iter()
                    .rev()
                    .filter(|r| !seen.contains(&r.id))
                    .map(|r| event("request", r))
                    .collect(),
            };
            // Served requests likewise, oldest first (numbered in order on the tracker).
            let served = tracker.recent_server_exchanges();
            let server_newest = served.first().map_or(0, |x| x.id);
            if let Some(seen) = seen_server {
                new.extend(
                    served
                        .iter()
                        .rev()
                        .filter(|x| x.id > seen)
                        .map(|x| event("server_exchange", x)),
                );
            }
            SummaryDone {
                summary,
                requests: new,
                request_ids: ids,
                server_newest,
                missed,
            }
        }));
    }
}

impl Stream for EventStream {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        if let Some(ev) = this.pending.pop_front() {
            return Poll::Ready(Some(Ok(ev)));
        }
        let dropped = this.dropped();
        if dropped > this.told_dropped {
            let lost = dropped - this.told_dropped;
            this.told_dropped = dropped;
            return Poll::Ready(Some(Ok(event("dropped", &Dropped { dropped, lost }))));
        }
        if let Some(job) = &mut this.summary_job {
            if let Poll::Ready(done) = Pin::new(job).poll(cx) {
                this.summary_job = None;
                if let Ok(done) = done {
                    this.seen_requests = Some(done.request_ids);
                    this.seen_server = Some(done.server_newest.max(this.seen_server.unwrap_or(0)));
                    this.missed = this.missed.max(done.missed);
                    let dropped = this.dropped();
                    if dropped > this.told_dropped {
                        // Said before the summary that counts them.
                        let lost = dropped - this.told_dropped;
                        this.told_dropped = dropped;
                        this.pending.push_back(done.summary);
                        this.pending.extend(done.requests);
                        return Poll::Ready(Some(Ok(event("dropped", &Dropped { dropped, lost }))));
                    }
                    this.pending.extend(done.requests);
                    return Poll::Ready(Some(Ok(done.summary)));
                }
            }
        } else if this.tick.poll_tick(cx).is_ready() {
            this.start_summary();
            // Poll the job once, so that its completion wakes this task.
            cx.waker().wake_by_ref();
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(live)) => Poll::Ready(Some(Ok(this.render(live)))),
            // The stream holds a sender itself.
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                // Caught up: listen again if a full queue had stopped it.
                this.rehook();
                Poll::Pending
            }
        }
    }
}

#[derive(Serialize)]
struct Opened<'a> {
    info: &'a ConnectionInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    html: Option<String>,
}

#[derive(Serialize)]
struct Closed<'a> {
    info: &'a ConnectionInfo,
    closed_at: f64,
    error: Option<&'a str>,
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    html: Option<String>,
}

#[derive(Serialize)]
struct Summary<'a> {
    at: f64,
    total_connections: usize,
    stats: &'a Stats,
    dropped: u64,
}

#[derive(Serialize)]
struct Dropped {
    dropped: u64,
    lost: u64,
}

fn event(name: &str, data: &impl Serialize) -> Event {
    let json = serde_json::to_string(data).expect("event data serializes");
    Event::default().event(name).data(json)
}

fn secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::{event_total, EventStream, EventsConfig};
    use conntrack_core::{Registration, Role, Tracker};
    use futures_core::Stream;
    use std::pin::Pin;
    use std::time::Duration;

    /// A request served after a subscriber came, before its stream's first summary read the
    /// ring, is still reported (the ring's content at subscription is what it does not get).
    #[tokio::test]
    async fn a_request_served_before_the_first_summary_is_reported() {
        let tracker = Tracker::builder().recent_requests(8).build();
        let conn = tracker.register(Registration::new(Role::Server).category("web"));
        let serve = |route: &str| {
            let r = conn.downgrade();
            r.begin_exchange();
            let mut x = r
                .server_exchange("GET", Some(route), "1.1")
                .expect("timed for the ring");
            x.response_head(200);
            x.finish_when_flushed();
            r.end_exchange_when_flushed();
            conn.record_flush();
        };
        serve("/before");
        let config = EventsConfig::default();
        let base = event_total(&tracker.stats());
        let Ok(mut stream) = EventStream::subscribe(&tracker, &config, false, base) else {
            panic!("subscribed");
        };
        serve("/after");
        let mut names = Vec::new();
        let found = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let ev = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx))
                    .await
                    .expect("the stream goes on")
                    .unwrap();
                let ev = format!("{ev:?}");
                if ev.contains("server_exchange") {
                    break ev;
                }
                names.push(ev);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no server_exchange event; got {names:?}"));
        assert!(found.contains("/after"), "{found}");
        assert!(!found.contains("/before"), "{found}");
    }
}
