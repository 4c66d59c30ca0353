//! An owned copy of a server exchange's event, for the server phase tests (included with
//! `#[path = "support/phases.rs"] mod phases;`).
#![allow(dead_code)] // each test binary reads the fields it checks

use std::time::Duration;

use conntrack_core::{ConnectionId, ServerExchangeEvent};

/// An owned copy of one `on_server_exchange` event.
#[derive(Debug, Clone)]
pub(crate) struct Phases {
    pub(crate) id: ConnectionId,
    pub(crate) category: String,
    pub(crate) method: String,
    pub(crate) route: Option<String>,
    pub(crate) version: String,
    pub(crate) status: Option<u16>,
    pub(crate) grpc_status: Option<i32>,
    pub(crate) completed: bool,
    pub(crate) waiting: Option<Duration>,
    pub(crate) head: Duration,
    pub(crate) body: Option<Duration>,
    pub(crate) handler: Duration,
    pub(crate) write: Duration,
    pub(crate) total: Duration,
    pub(crate) bytes_read: u64,
    pub(crate) bytes_written: u64,
}

impl Phases {
    pub(crate) fn of(ev: &ServerExchangeEvent<'_>) -> Self {
        Phases {
            id: ev.id,
            category: ev.category.to_owned(),
            method: ev.method.to_owned(),
            route: ev.route.map(str::to_owned),
            version: ev.version.to_owned(),
            status: ev.status,
            grpc_status: ev.grpc_status,
            completed: ev.completed,
            waiting: ev.waiting,
            head: ev.request_head,
            body: ev.request_body,
            handler: ev.handler,
            write: ev.response_write,
            total: ev.total,
            bytes_read: ev.bytes_read,
            bytes_written: ev.bytes_written,
        }
    }

    /// The phases add up to the total (the clock is read once per boundary, so exactly, but
    /// allow the coarse clock's millisecond).
    pub(crate) fn assert_adds_up(&self) {
        let sum = self.waiting.unwrap_or_default()
            + self.head
            + self.body.unwrap_or_default()
            + self.handler
            + self.write;
        assert!(
            sum.abs_diff(self.total) <= Duration::from_millis(1),
            "phases do not add up: {self:?}"
        );
    }
}
