//! What the debug page draws besides its tables, kept in small bounded rings on the tracker:
//! [`ActiveSample`]s (live connections per category over the last minutes, one taken each time
//! a [`Snapshot`](crate::Snapshot) is) and [`RequestTiming`]s (the phases of recently
//! finished traced HTTP requests, for a waterfall). Nothing fills them in the background:
//! samples exist only for the moments someone looked.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crate::record::info::{ConnectionId, Role};
use crate::track::stats::Stats;

/// How many [`ActiveSample`]s a tracker keeps: at one a second at most, at least two minutes;
/// at the debug page's five-second refresh, ten minutes.
pub const ACTIVE_SAMPLES: usize = 120;

/// How many finished traced requests a tracker keeps for the waterfall.
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

/// The tracker's two rings.
pub(crate) struct Rings {
    samples: Mutex<VecDeque<ActiveSample>>,
    requests: Mutex<VecDeque<RawTiming>>,
    /// How many request timings are kept (0: none, the default).
    request_cap: usize,
}

impl Rings {
    pub(crate) fn new(request_cap: usize) -> Self {
        Rings {
            samples: Mutex::default(),
            requests: Mutex::default(),
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
