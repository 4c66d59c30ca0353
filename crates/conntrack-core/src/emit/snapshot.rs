//! [`Snapshot`]: everything a debug page shows, taken at one moment, and how much of it a
//! [`Page`] keeps. Public as [`render::Snapshot`](crate::render::Snapshot) (and
//! [`Snapshot`](crate::Snapshot)), [`render::Order`](crate::render::Order) and
//! [`render::Page`](crate::render::Page).

use std::time::SystemTime;

use crate::record::info::{ClosedConnection, ConnectionInfo};
use crate::track::activity::{ActiveSample, RequestTiming, ServerExchangeTiming};
use crate::track::stats::Stats;
use crate::track::tracker::Tracker;

/// Everything a debug page shows, taken at one moment: live connections, totals, and the
/// recently closed connections (newest first).
///
/// [`Snapshot::of`] keeps every connection, oldest first. A page that may face a large
/// tracker takes [`Snapshot::page`] instead: at most [`Page::limit`] live and closed
/// connections, in the [`Order`] asked for, while [`stats`](Snapshot::stats) and the
/// `total_*` counts still cover all of them.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Snapshot {
    /// When the snapshot was taken.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::record::ser::system_time")
    )]
    pub generated_at: SystemTime,
    /// The live connections shown, in [`order`](Snapshot::order).
    pub connections: Vec<ConnectionInfo>,
    /// How many connections were live (`connections` may show fewer).
    pub total_connections: usize,
    /// The order of `connections`.
    pub order: Order,
    /// Totals per category and role, over every connection.
    pub stats: Stats,
    /// The history of closed connections shown, newest first.
    pub recently_closed: Vec<ClosedConnection>,
    /// How many closed connections the history held (`recently_closed` may show fewer).
    pub total_recently_closed: usize,
    /// Live connections per category and role at the moments snapshots were taken, oldest
    /// first, this one last ([`Tracker::active_samples`]).
    pub active_samples: Vec<ActiveSample>,
    /// The phases of recently finished traced HTTP requests, newest first
    /// ([`Tracker::recent_requests`]).
    pub requests: Vec<RequestTiming>,
    /// The phases of recently finished server exchanges, newest first
    /// ([`Tracker::recent_server_exchanges`]).
    pub server_exchanges: Vec<ServerExchangeTiming>,
}

/// The order a [`Snapshot`] lists live connections in, which also decides which ones a
/// limited [`Page`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Order {
    /// Newest first (highest id first): what changed last. The default.
    #[default]
    Newest,
    /// Oldest first (by id), as [`Tracker::connections`] returns them.
    Oldest,
    /// Most bytes (read plus written) first.
    Bytes,
    /// Longest idle first.
    Idle,
}

impl Order {
    /// `"newest"`, `"oldest"`, `"bytes"` or `"idle"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Order::Newest => "newest",
            Order::Oldest => "oldest",
            Order::Bytes => "bytes",
            Order::Idle => "idle",
        }
    }

    /// Parses [`as_str`](Order::as_str)'s names, ignoring ASCII case; `None` for anything
    /// else.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        [Order::Newest, Order::Oldest, Order::Bytes, Order::Idle]
            .into_iter()
            .find(|o| o.as_str().eq_ignore_ascii_case(s))
    }

    /// A key that sorts connections in this order, ties broken by id.
    fn key(self, c: &ConnectionInfo) -> (u128, u64) {
        let id = c.id.as_u64();
        let primary = match self {
            Order::Oldest => u128::from(id),
            Order::Newest => u128::from(u64::MAX - id),
            Order::Bytes => u128::MAX - u128::from(c.read_bytes) - u128::from(c.write_bytes),
            Order::Idle => u128::MAX - c.idle_for.as_nanos(),
        };
        (primary, id)
    }
}

impl std::fmt::Display for Order {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much of a tracker a [`Snapshot::page`] shows: at most `limit` live connections (and
/// as many closed ones), chosen and listed by `order`.
///
/// The default, [`Page::DEFAULT_LIMIT`] newest first, keeps a debug page under a megabyte
/// however many connections are live (a connection is about 330 bytes of HTML or JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Page {
    /// The most connections shown, live and closed each.
    pub limit: usize,
    /// Which connections are shown, in what order.
    pub order: Order,
}

impl Page {
    /// The default [`limit`](Page::limit).
    pub const DEFAULT_LIMIT: usize = 1000;

    /// [`DEFAULT_LIMIT`](Page::DEFAULT_LIMIT) connections, newest first.
    #[must_use]
    pub fn new() -> Self {
        Page {
            limit: Page::DEFAULT_LIMIT,
            order: Order::Newest,
        }
    }

    /// Shows at most `limit` connections.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Chooses and lists connections by `order`.
    #[must_use]
    pub fn order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }
}

impl Default for Page {
    fn default() -> Self {
        Page::new()
    }
}

impl Snapshot {
    /// Takes a snapshot of `tracker`: every connection, oldest first.
    #[must_use]
    pub fn of(tracker: &Tracker) -> Self {
        let connections = tracker.connections();
        let recently_closed = tracker.recently_closed();
        let (generated_at, stats) = (SystemTime::now(), tracker.stats());
        tracker.inner.activity.sample(generated_at, &stats);
        Snapshot {
            generated_at,
            total_connections: connections.len(),
            connections,
            order: Order::Oldest,
            stats,
            total_recently_closed: recently_closed.len(),
            recently_closed,
            active_samples: tracker.active_samples(),
            requests: tracker.recent_requests(),
            server_exchanges: tracker.recent_server_exchanges(),
        }
    }

    /// Takes a snapshot of `tracker` limited to `page`: the first [`Page::limit`] live
    /// connections in [`Page::order`], and as many of the most recently closed ones. The
    /// stats and the `total_*` counts cover everything.
    ///
    /// The whole tracker is still walked (its cost grows with the live connections, not with
    /// the limit), so a server should call this off its async workers when the tracker is
    /// large, as `conntrack-tokio`'s debug page does.
    #[must_use]
    pub fn page(tracker: &Tracker, page: &Page) -> Self {
        let mut connections = tracker.connections();
        let total_connections = connections.len();
        let order = page.order;
        if page.limit < connections.len() {
            // Only the first `limit` in order are kept: select them in linear time, then
            // sort just those.
            if page.limit == 0 {
                connections.clear();
            } else {
                connections.select_nth_unstable_by_key(page.limit - 1, |c| order.key(c));
                connections.truncate(page.limit);
            }
        }
        connections.sort_unstable_by_key(|c| order.key(c));
        let mut recently_closed = tracker.recently_closed();
        let total_recently_closed = recently_closed.len();
        recently_closed.truncate(page.limit);
        let (generated_at, stats) = (SystemTime::now(), tracker.stats());
        tracker.inner.activity.sample(generated_at, &stats);
        Snapshot {
            generated_at,
            connections,
            total_connections,
            order: page.order,
            stats,
            recently_closed,
            total_recently_closed,
            active_samples: tracker.active_samples(),
            requests: tracker.recent_requests(),
            server_exchanges: tracker.recent_server_exchanges(),
        }
    }
}
