//! What the debug page draws besides its tables, kept in small bounded rings on the tracker:
//! [`ActiveSample`]s (live connections per category over the last minutes, one taken each time
//! a [`Snapshot`](crate::Snapshot) is), [`RequestTiming`]s (the phases of recently
//! finished traced HTTP requests, for a waterfall) and [`ServerExchangeTiming`]s (the phases
//! of recently served requests, for the server's waterfall). Nothing fills them in the
//! background: samples exist only for the moments someone looked.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crate::record::info::{ConnectionId, Role};
use crate::track::stats::Stats;

/// How many [`ActiveSample`]s a tracker keeps: at one a second at most, at least two minutes;
/// at the debug page's five-second refresh, ten minutes.
pub const ACTIVE_SAMPLES: usize = 120;

/// How many finished traced requests a tracker keeps for the waterfall (and as many server
/// exchanges for the server's).
pub const REQUEST_TIMINGS: usize = 32;

/// Live connections per category and role at one moment.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ActiveSample {
    /// When the sample was taken (unix seconds in JSON).
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::record::ser::system_time")
    )]
    pub at: SystemTime,
    /// `(category, role, active)` for every category and role the tracker has seen.
    pub active: Vec<(Arc<str>, Role, u64)>,
}

/// The phases of one finished traced HTTP request ([`RequestTrace`](crate::RequestTrace)), as
/// a browser's network panel shows them. Phases run one after the other in this order; a
/// phase whose boundary event was never reported is `None`, and the next one is measured from
/// the last boundary that was.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct RequestTiming {
    /// The request's id (`RequestInfo::id`).
    pub id: u64,
    /// The HTTP method.
    pub method: Arc<str>,
    /// The request URI.
    pub uri: Arc<str>,
    /// The connection it was sent on.
    pub connection: Option<ConnectionId>,
    /// Whether that connection had carried a request before (then it has no DNS, connect or
    /// TLS phase).
    pub reused: bool,
    /// When the request began (unix seconds in JSON; display only).
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::record::ser::system_time")
    )]
    pub started_at: SystemTime,
    /// From the start to the end of the request (`finish`).
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::record::ser::secs"))]
    pub total: Duration,
    /// The phases, in order.
    pub phases: Phases,
}

/// The phases of a [`RequestTiming`], in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Phases {
    /// Waiting for a connection, besides dialing one: a free pooled connection, a slot.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::record::ser::opt_secs")
    )]
    pub blocked: Option<Duration>,
    /// Name resolution of a connection dialed for the request.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::record::ser::opt_secs")
    )]
    pub dns: Option<Duration>,
    /// TCP connect of a connection dialed for the request.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::record::ser::opt_secs")
    )]
    pub connect: Option<Duration>,
    /// TLS handshake of a connection dialed for the request.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::record::ser::opt_secs")
    )]
    pub tls: Option<Duration>,
    /// From having the connection to the request written (headers and body).
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::record::ser::opt_secs")
    )]
    pub send: Option<Duration>,
    /// From the request written to the first response byte: the server's time (TTFB).
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::record::ser::opt_secs")
    )]
    pub wait: Option<Duration>,
    /// From the first response byte to the end of the request.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::record::ser::opt_secs")
    )]
    pub transfer: Option<Duration>,
}

impl Phases {
    /// The phases with their names (`"blocked"`, `"dns"`, `"connect"`, `"tls"`, `"send"`,
    /// `"wait"`, `"transfer"`), in order.
    #[must_use]
    pub fn named(&self) -> [(&'static str, Option<Duration>); 7] {
        [
            ("blocked", self.blocked),
            ("dns", self.dns),
            ("connect", self.connect),
            ("tls", self.tls),
            ("send", self.send),
            ("wait", self.wait),
            ("transfer", self.transfer),
        ]
    }
}

/// One finished server exchange (an HTTP request or RPC served through the tokio adapter's
/// `ExchangeLayer`), as the ring behind the debug page's server waterfall keeps it: the
/// record of [`ServerExchangeEvent`](crate::ServerExchangeEvent), owned, with when it began.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ServerExchangeTiming {
    /// Its number on this tracker, counting every server exchange kept, from 1 (newer is
    /// higher): what tells the ring's entries apart.
    pub id: u64,
    /// The connection it arrived on.
    pub connection: ConnectionId,
    /// That connection's category.
    pub category: Arc<str>,
    /// The request method.
    pub method: Arc<str>,
    /// The route template that matched (axum's `MatchedPath`), when known.
    pub route: Option<Arc<str>>,
    /// The protocol version: `"1.0"`, `"1.1"` or `"2"`.
    pub version: &'static str,
    /// The response status; `None` when no response was produced.
    pub status: Option<u16>,
    /// The gRPC status, when there was one.
    pub grpc_status: Option<i32>,
    /// The response was produced and written whole.
    pub completed: bool,
    /// When its first phase began (the start of `waiting`; on HTTP/2 of `request_head`);
    /// unix seconds in JSON, display only.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::record::ser::system_time")
    )]
    pub started_at: SystemTime,
    /// The sum of the phases.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::record::ser::secs"))]
    pub total: Duration,
    /// The phases, in order.
    pub phases: ServerPhases,
    /// Bytes the connection read during the exchange.
    pub bytes_read: u64,
    /// Bytes the connection wrote during the exchange.
    pub bytes_written: u64,
}

/// The phases of a [`ServerExchangeTiming`], in the order they happen (as
/// [`ServerExchangeEvent`](crate::ServerExchangeEvent) defines them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ServerPhases {
    /// From the previous exchange's end (or the accept) to the request's first byte; `None`
    /// on HTTP/2.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::record::ser::opt_secs")
    )]
    pub waiting: Option<Duration>,
    /// From the first byte to the head parsed.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::record::ser::secs"))]
    pub request_head: Duration,
    /// The handler's waits for the request body's frames; `None` when the body was not timed.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::record::ser::opt_secs")
    )]
    pub request_body: Option<Duration>,
    /// From the head parsed to the response head produced, less `request_body`.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::record::ser::secs"))]
    pub handler: Duration,
    /// From the response head produced to its last byte written and flushed.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::record::ser::secs"))]
    pub response_write: Duration,
}

impl ServerPhases {
    /// The phases with their names (`"waiting"`, `"request_head"`, `"request_body"`,
    /// `"handler"`, `"response_write"`), in order; `None` where a phase was not measured.
    #[must_use]
    pub fn named(&self) -> [(&'static str, Option<Duration>); 5] {
        [
            ("waiting", self.waiting),
            ("request_head", Some(self.request_head)),
            ("request_body", self.request_body),
            ("handler", Some(self.handler)),
            ("response_write", Some(self.response_write)),
        ]
    }
}

impl ServerExchangeTiming {
    /// The record of `ev` (its strings shared with the connection's): `id` is set when the
    /// ring keeps it, `started_at` when the ring is read.
    pub(crate) fn of(
        ev: &crate::ServerExchangeEvent<'_>,
        category: Arc<str>,
        method: Arc<str>,
        route: Option<Arc<str>>,
        version: &'static str,
    ) -> Self {
        ServerExchangeTiming {
            id: 0,
            connection: ev.id,
            category,
            method,
            route,
            version,
            status: ev.status,
            grpc_status: ev.grpc_status,
            completed: ev.completed,
            started_at: SystemTime::UNIX_EPOCH,
            total: ev.total,
            phases: ServerPhases {
                waiting: ev.waiting,
                request_head: ev.request_head,
                request_body: ev.request_body,
                handler: ev.handler,
                response_write: ev.response_write,
            },
            bytes_read: ev.bytes_read,
            bytes_written: ev.bytes_written,
        }
    }
}

/// A finished request as the ring keeps it: its marks, turned into a [`RequestTiming`] when
/// the ring is read (so finishing a request computes nothing it does not have to).
pub(crate) struct RawTiming {
    pub(crate) id: u64,
    pub(crate) method: Arc<str>,
    pub(crate) uri: Arc<str>,
    pub(crate) connection: Option<ConnectionId>,
    pub(crate) reused: bool,
    /// When the request began ([`clock::now_nanos`](crate::track::clock::now_nanos)).
    pub(crate) started: u64,
    pub(crate) marks: Marks,
}

impl RawTiming {
    fn timing(&self, now: &crate::track::clock::Now) -> RequestTiming {
        RequestTiming {
            id: self.id,
            method: Arc::clone(&self.method),
            uri: Arc::clone(&self.uri),
            connection: self.connection,
            reused: self.reused,
            started_at: now.wall_at(self.started),
            total: Duration::from_nanos(self.marks.finish),
            phases: self.marks.phases(),
        }
    }
}

/// The event times of one request, in nanoseconds since it began (`None`: not reported).
#[derive(Clone, Copy)]
pub(crate) struct Marks {
    pub(crate) got_conn: Option<u64>,
    pub(crate) wrote_request: Option<u64>,
    pub(crate) first_byte: Option<u64>,
    pub(crate) finish: u64,
    /// DNS, connect and TLS of a connection dialed for the request.
    pub(crate) dial: [Option<Duration>; 3],
}

impl Marks {
    pub(crate) fn phases(&self) -> Phases {
        let d =
            |from: u64, to: Option<u64>| to.map(|t| Duration::from_nanos(t.saturating_sub(from)));
        let mut last = 0;
        let mut step = |to: Option<u64>| {
            let p = d(last, to);
            if let Some(t) = to {
                last = last.max(t);
            }
            p
        };
        let to_conn = step(self.got_conn);
        let [dns, connect, tls] = self.dial;
        let dialing: Duration = self.dial.iter().flatten().sum();
        let send = step(self.wrote_request);
        let wait = step(self.first_byte);
        let transfer = step(Some(self.finish));
        Phases {
            blocked: to_conn.map(|t| t.saturating_sub(dialing)),
            dns,
            connect,
            tls,
            send,
            wait,
            transfer,
        }
    }
}

/// The tracker's rings.
pub(crate) struct Rings {
    samples: Mutex<VecDeque<ActiveSample>>,
    requests: Mutex<VecDeque<RawTiming>>,
    /// Finished server exchanges, newest first, with when each began (process clock); the
    /// last number given (`ServerExchangeTiming::id`).
    servers: Mutex<(VecDeque<(u64, ServerExchangeTiming)>, u64)>,
    /// How many request timings are kept, and as many server exchanges (0: none, the
    /// default).
    request_cap: usize,
}

impl Rings {
    pub(crate) fn new(request_cap: usize) -> Self {
        Rings {
            samples: Mutex::default(),
            requests: Mutex::default(),
            servers: Mutex::default(),
            request_cap,
        }
    }

    /// Whether request timings are kept at all.
    pub(crate) fn keeps_requests(&self) -> bool {
        self.request_cap > 0
    }

    /// Keeps a sample of `stats` taken at `at`; a sample within a second of the last one
    /// replaces it (so a page reloaded in a loop does not flush the ring).
    pub(crate) fn sample(&self, at: SystemTime, stats: &Stats) {
        let sample = ActiveSample {
            at,
            active: stats
                .categories
                .iter()
                .map(|c| (Arc::clone(&c.category), c.role, c.active))
                .collect(),
        };
        let mut ring = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let recent = ring.back().is_some_and(|last| {
            at.duration_since(last.at)
                .is_ok_and(|d| d < Duration::from_secs(1))
        });
        if recent {
            ring.pop_back();
        } else if ring.len() == ACTIVE_SAMPLES {
            ring.pop_front();
        }
        ring.push_back(sample);
    }

    /// The samples, oldest first.
    pub(crate) fn samples(&self) -> Vec<ActiveSample> {
        let ring = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        ring.iter().cloned().collect()
    }

    pub(crate) fn push_request(&self, timing: RawTiming) {
        if self.request_cap == 0 {
            return;
        }
        let mut ring = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        if ring.len() >= self.request_cap {
            ring.pop_back();
        }
        ring.push_front(timing);
    }

    /// The finished requests, newest first.
    pub(crate) fn requests(&self) -> Vec<RequestTiming> {
        let now = crate::track::clock::Now::read();
        let ring = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        ring.iter().map(|r| r.timing(&now)).collect()
    }

    /// Keeps a finished server exchange that began at `started` (process clock).
    pub(crate) fn push_server(&self, started: u64, mut timing: ServerExchangeTiming) {
        if self.request_cap == 0 {
            return;
        }
        let mut guard = self.servers.lock().unwrap_or_else(PoisonError::into_inner);
        let (ring, last) = &mut *guard;
        *last += 1;
        timing.id = *last;
        if ring.len() >= self.request_cap {
            ring.pop_back();
        }
        ring.push_front((started, timing));
    }

    /// The finished server exchanges, newest first.
    pub(crate) fn servers(&self) -> Vec<ServerExchangeTiming> {
        let now = crate::track::clock::Now::read();
        let guard = self.servers.lock().unwrap_or_else(PoisonError::into_inner);
        guard
            .0
            .iter()
            .map(|(started, t)| ServerExchangeTiming {
                started_at: now.wall_at(*started),
                ..t.clone()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Marks;
    use std::time::Duration;

    #[test]
    fn phases_follow_the_marks() {
        let ms = |n: u64| n * 1_000_000;
        let m = Marks {
            got_conn: Some(ms(10)),
            wrote_request: Some(ms(12)),
            first_byte: Some(ms(20)),
            finish: ms(25),
            dial: [
                Some(Duration::from_millis(2)),
                Some(Duration::from_millis(3)),
                None,
            ],
        };
        let p = m.phases();
        assert_eq!(p.blocked, Some(Duration::from_millis(5)));
        assert_eq!(p.dns, Some(Duration::from_millis(2)));
        assert_eq!(p.connect, Some(Duration::from_millis(3)));
        assert_eq!(p.tls, None);
        assert_eq!(p.send, Some(Duration::from_millis(2)));
        assert_eq!(p.wait, Some(Duration::from_millis(8)));
        assert_eq!(p.transfer, Some(Duration::from_millis(5)));
        // No write reported: the wait runs from having the connection.
        let m = Marks {
            wrote_request: None,
            ..m
        };
        assert_eq!(m.phases().send, None);
        assert_eq!(m.phases().wait, Some(Duration::from_millis(10)));
    }
}
