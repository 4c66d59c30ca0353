//! The debug page's server-sent events (`.../events`): what happens to the tracker's
//! connections as it happens, for the live page and for any other subscriber.
//!
//! Each subscriber installs its own tracker [`Hook`] (connection events only: accept, dial,
//! close; never per-I/O events) that pushes into that subscriber's bounded queue with
//! `try_send`. A full queue drops the event and counts it: a slow subscriber loses events and
//! is told so, and never slows a connection. The hook is removed when the subscriber's stream
//! is dropped, so with nobody subscribed nothing is installed, queued or running; the summary
//! timer lives inside the stream and goes with it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
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
    dropped: AtomicU64,
}

/// The hook of one subscriber.
struct LiveHook {
    tx: mpsc::Sender<Live>,
    feed: Arc<Feed>,
}

impl LiveHook {
    fn push(&self, make: impl FnOnce() -> Live) {
        // A full queue (a subscriber that does not read) costs a load and a count: the event is
        // not even built.
        if self.tx.capacity() == 0 {
            self.feed.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.tx.try_send(make()) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.feed.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
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
    /// Set to `true` when the server the page runs in shuts down: every stream ends.
    pub(crate) closing: Option<watch::Receiver<bool>>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            queue: 1024,
            max_subscribers: 16,
            summary_every: Duration::from_secs(1),
            subscribers: Arc::default(),
            closing: None,
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
    feed: Arc<Feed>,
    tracker: Tracker,
    /// Rows rendered as the page's HTML in an `html` field (the live page asks for them).
    html: bool,
    tick: tokio::time::Interval,
    /// The summary being computed off the async workers (it walks every connection).
    summary_job: Option<JoinHandle<(Event, Vec<Event>, Vec<u64>)>>,
    pending: VecDeque<Event>,
    told_dropped: u64,
    /// The ids of the finished requests seen at the last summary (`None` before the first).
    seen_requests: Option<Vec<u64>>,
    stop: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    // Dropped last: the hook goes with the stream.
    _hook: HookHandle,
    _count: CountGuard,
}

/// Why a subscriber was not let in.
pub(crate) struct TooMany;

impl EventStream {
    pub(crate) fn subscribe(
        tracker: &Tracker,
        config: &EventsConfig,
        html: bool,
    ) -> Result<Self, TooMany> {
        let count = &config.subscribers;
        if count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < config.max_subscribers).then_some(n + 1)
            })
            .is_err()
        {
            return Err(TooMany);
        }
        let guard = CountGuard(Arc::clone(count));
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let feed = Arc::new(Feed::default());
        let hook = tracker.add_hook(LiveHook {
            tx,
            feed: Arc::clone(&feed),
        });
        let mut tick = tokio::time::interval(config.summary_every.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = config.closing.clone().map(|mut rx| {
            Box::pin(async move {
                let _ = rx.wait_for(|closing| *closing).await;
            }) as Pin<Box<dyn Future<Output = ()> + Send>>
        });
        Ok(EventStream {
            rx,
            feed,
            tracker: tracker.clone(),
            html,
            tick,
            summary_job: None,
            pending: VecDeque::new(),
            told_dropped: 0,
            seen_requests: None,
            stop,
            _hook: hook,
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

    fn start_summary(&mut self) {
        let tracker = self.tracker.clone();
        let seen = self.seen_requests.clone();
        let dropped = self.feed.dropped.load(Ordering::Relaxed);
        self.summary_job = Some(tokio::task::spawn_blocking(move || {
            let stats = tracker.stats();
            let summary = event(
                "summary",
                &Summary {
                    at: secs(SystemTime::now()),
                    total_connections: tracker.len(),
                    stats: &stats,
                    dropped,
                },
            );
            // Requests that finished since the last summary (none before the first).
            let requests = tracker.recent_requests();
            let ids: Vec<u64> = requests.iter().map(|r| r.id).collect();
            let new = match &seen {
                None => Vec::new(),
                Some(seen) => requests
                    .iter()
                    .rev()
                    .filter(|r| !seen.contains(&r.id))
                    .map(|r| event("request", r))
                    .collect(),
            };
            (summary, new, ids)
        }));
    }
}

impl Stream for EventStream {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(stop) = &mut this.stop {
            if stop.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
        }
        if let Some(ev) = this.pending.pop_front() {
            return Poll::Ready(Some(Ok(ev)));
        }
        let dropped = this.feed.dropped.load(Ordering::Relaxed);
        if dropped > this.told_dropped {
            let lost = dropped - this.told_dropped;
            this.told_dropped = dropped;
            return Poll::Ready(Some(Ok(event("dropped", &Dropped { dropped, lost }))));
        }
        if let Some(job) = &mut this.summary_job {
            if let Poll::Ready(done) = Pin::new(job).poll(cx) {
                this.summary_job = None;
                if let Ok((summary, requests, ids)) = done {
                    this.seen_requests = Some(ids);
                    this.pending.extend(requests);
                    return Poll::Ready(Some(Ok(summary)));
                }
            }
        } else if this.tick.poll_tick(cx).is_ready() {
            this.start_summary();
            // Poll the job once, so that its completion wakes this task.
            cx.waker().wake_by_ref();
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(live)) => Poll::Ready(Some(Ok(this.render(live)))),
            // The hook holds the sender for as long as the stream lives.
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
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
