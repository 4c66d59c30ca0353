//! An owned copy of a server exchange's event, for the server phase tests (included with
//! `#[path = "support/phases.rs"] mod phases;`).
#![allow(dead_code)] // each test binary reads the fields it checks

use std::time::Duration;

use conntrack_core::{Callbacks, ConnectionId, ServerExchangeEvent, Tracker};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// A tracker whose one hook sends a copy of every served exchange, and the receiving end.
pub(crate) fn recording_tracker() -> (Tracker, mpsc::UnboundedReceiver<Phases>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let tracker = Tracker::builder()
        .hook(Callbacks::new().on_server_exchange(move |ev| {
            let _ = tx.send(Phases::of(ev));
        }))
        .build();
    (tracker, rx)
}

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

/// Reads one HTTP/1 response with a `content-length` body, `chunk` bytes per read with
/// `pause` after each read; returns its head and its body's length.
pub(crate) async fn read_response(
    s: &mut TcpStream,
    chunk: usize,
    pause: Duration,
) -> (String, usize) {
    let mut buf = Vec::new();
    let mut tmp = vec![0; chunk];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut tmp).await.unwrap();
        assert!(n > 0, "connection closed in the head");
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .expect("content-length");
    let mut got = buf.len() - head_end;
    while got < len {
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        let n = s.read(&mut tmp).await.unwrap();
        assert!(n > 0, "connection closed in the body");
        got += n;
    }
    assert_eq!(got, len, "one response at a time");
    (head, len)
}
