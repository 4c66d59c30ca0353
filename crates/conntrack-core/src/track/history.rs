//! The history of closed connections: each one's final state, copied out of its entry at
//! close ([`Snapshot`]), kept in a bounded ring, newest first, and turned into a
//! [`ClosedConnection`] record only when read.

use std::io;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use crate::record::info::{
    Addr, CloseReason, ClosedConnection, ConnState, ConnectionId, ConnectionInfo, Role, Timings,
    TlsInfo,
};
use crate::record::tcp_info::TcpStats;
use crate::track::clock::Now;
use crate::track::stats::StatTable;
use crate::track::sync::Mutex;

/// `exchange_end_ms` of a connection before any exchange ended.
pub(crate) const NO_END: u64 = u64::MAX;

/// A connection's state at one instant, copied out of its entry: what the history keeps of a
/// closed connection, turned into a [`ConnectionInfo`] only when it is read.
#[derive(Clone)]
pub(crate) struct Snapshot {
    pub(crate) id: u64,
    pub(crate) class: u32,
    pub(crate) role: Role,
    pub(crate) local_addr: Addr,
    pub(crate) remote_addr: Addr,
    pub(crate) target: Option<Arc<str>>,
    pub(crate) target_is_remote: bool,
    pub(crate) opened_nanos: u64,
    /// When the snapshot was taken (for a closed connection: when it closed).
    pub(crate) at_nanos: u64,
    pub(crate) read: u64,
    pub(crate) write: u64,
    pub(crate) idle_ms: u64,
    pub(crate) timings: Timings,
    pub(crate) tls: Option<Arc<TlsInfo>>,
    pub(crate) requests: u64,
    pub(crate) in_flight: u32,
    pub(crate) upgraded: bool,
    pub(crate) exchange_end_ms: u64,
    pub(crate) tcp: Option<Arc<TcpStats>>,
}

impl Snapshot {
    /// A blank snapshot, to be filled in.
    pub(crate) fn blank() -> Self {
        Snapshot {
            id: 0,
            class: 0,
            role: Role::Client,
            local_addr: Addr::Unknown,
            remote_addr: Addr::Unknown,
            target: None,
            target_is_remote: false,
            opened_nanos: 0,
            at_nanos: 0,
            read: 0,
            write: 0,
            idle_ms: 0,
            timings: Timings::default(),
            tls: None,
            requests: 0,
            in_flight: 0,
            upgraded: false,
            exchange_end_ms: 0,
            tcp: None,
        }
    }

    /// The index of the connection's (category, role) in the tracker's stat table.
    pub(crate) fn class(&self) -> u32 {
        self.class
    }

    /// The record, with `category` the name of the snapshot's class. `now` is when the record
    /// is built (at or after the snapshot): `established_at` is its wall clock minus the
    /// connection's age, so wall-clock times are those of the clock as it reads now.
    pub(crate) fn into_info(self, category: Arc<str>, now: &Now) -> ConnectionInfo {
        let target = if self.target_is_remote {
            Some(Arc::from(self.remote_addr.to_string()))
        } else {
            self.target
        };
        let established_for = Duration::from_nanos(self.at_nanos.saturating_sub(self.opened_nanos));
        ConnectionInfo {
            id: ConnectionId(self.id),
            category,
            role: self.role,
            local_addr: self.local_addr,
            remote_addr: self.remote_addr,
            target,
            established_at: now.wall_at(self.opened_nanos),
            established_for,
            read_bytes: self.read,
            write_bytes: self.write,
            // The coarse clock lags the precise one by up to a tick: never more than the age.
            idle_for: Duration::from_millis(self.idle_ms).min(established_for),
            timings: self.timings,
            tls: self.tls,
            requests: self.requests,
            in_flight: self.in_flight,
            state: if self.upgraded {
                ConnState::Upgraded
            } else {
                ConnState::of(self.requests, self.in_flight)
            },
            exchange_idle_for: (self.in_flight == 0 && self.exchange_end_ms != NO_END).then(|| {
                Duration::from_millis(
                    (self.at_nanos / 1_000_000).saturating_sub(self.exchange_end_ms),
                )
            }),
            tcp: self.tcp,
            exchange: None,
        }
    }
}

/// One closed connection as the history keeps it.
type Kept = (Snapshot, Option<io::Error>, CloseReason);

/// The closed connections kept for [`Tracker::recently_closed`](crate::Tracker::recently_closed),
/// newest first, at most `cap`.
pub(crate) struct History {
    cap: usize,
    /// Closed connections as copied at close (records are built when read): a ring that, once
    /// full, overwrites its oldest slot in place (no record moves in or out of a queue).
    ring: Mutex<Ring>,
}

struct Ring {
    slots: Vec<Kept>,
    /// The slot the next record goes to (the oldest, once full).
    next: usize,
}

impl History {
    pub(crate) fn new(cap: usize) -> Self {
        History {
            cap,
            ring: Mutex::new(Ring {
                slots: Vec::with_capacity(cap.min(1024)),
                next: 0,
            }),
        }
    }

    /// How many closed connections it keeps.
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// Keeps a closed connection's final state, written by `fill` into the slot it takes (in
    /// place over the oldest record once the ring is full: no record is built elsewhere and
    /// moved in), and its last error.
    pub(crate) fn push_with(
        &self,
        fill: impl FnOnce(&mut Snapshot),
        error: Option<io::Error>,
        reason: CloseReason,
    ) {
        if self.cap == 0 {
            return;
        }
        let mut h = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let i = h.next;
        h.next = if i + 1 == self.cap { 0 } else { i + 1 };
        let evicted = if h.slots.len() < self.cap {
            let mut snapshot = Snapshot::blank();
            fill(&mut snapshot);
            h.slots.push((snapshot, error, reason));
            None
        } else {
            let slot = &mut h.slots[i];
            fill(&mut slot.0);
            slot.2 = reason;
            std::mem::replace(&mut slot.1, error)
        };
        drop(h);
        // The oldest record's error is let go of outside the lock: it may be a user's, whose
        // drop could read the history. (The rest of the old record is ours: plain memory.)
        drop(evicted);
    }

    /// Keeps a closed connection's final state and last error.
    pub(crate) fn push(&self, snapshot: Snapshot, error: Option<io::Error>, reason: CloseReason) {
        self.push_with(move |s| *s = snapshot, error, reason);
    }

    /// The records, newest first, with their categories' names from `stats`.
    pub(crate) fn records(&self, stats: &StatTable) -> Vec<ClosedConnection> {
        let h = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Now::read();
        // Newest first: from the slot before `next` down to the first, then from the last
        // down to `next` (the part written before the ring last wrapped round).
        let (recent, earlier) = h.slots.split_at(h.next.min(h.slots.len()));
        recent
            .iter()
            .rev()
            .chain(earlier.iter().rev())
            .map(|(snapshot, error, reason)| {
                let category = stats.with(snapshot.class(), |c| Arc::clone(&c.category));
                let info = snapshot.clone().into_info(category, &now);
                ClosedConnection {
                    closed_at: info.established_at + info.established_for,
                    info,
                    error: error.as_ref().map(ToString::to_string),
                    reason: *reason,
                }
            })
            .collect()
    }
}
