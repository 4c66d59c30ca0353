//! `conntrack_core::tracing::TracingHook` seen by a real `tracing` subscriber: one TLS
//! connection's life on loopback, dialed by name and accepted, gives one span per side with
//! the documented OpenTelemetry fields and an event for each phase inside it.
#![cfg(feature = "tls")]

#[path = "support/pki.rs"]
mod pki;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conntrack_core::tracing::TracingHook;
use conntrack_core::{DialerConfig, ListenerConfig, Tracker};
use conntrack_tokio::tls::{TlsAcceptor, TlsConnector};
use conntrack_tokio::{Dialer, Listener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Instrument, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Field values as text (strings as they are, numbers and bools formatted).
type Fields = HashMap<String, String>;

#[derive(Debug, Clone, Default)]
struct SpanRec {
    name: &'static str,
    target: String,
    level: Option<Level>,
    fields: Fields,
    closed: bool,
}

#[derive(Debug, Clone)]
struct EventRec {
    message: String,
    level: Level,
    target: String,
    /// The span the event belongs to (explicit parent or the current span).
    span: Option<u64>,
    fields: Fields,
}

#[derive(Debug, Default)]
struct Captured {
    spans: HashMap<u64, SpanRec>,
    events: Vec<EventRec>,
}

/// A layer that keeps every span (with its recorded fields) and every event.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Captured>>);

struct Visitor<'a>(&'a mut Fields);

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _ctx: Context<'_, S>) {
        let mut rec = SpanRec {
            name: attrs.metadata().name(),
            target: attrs.metadata().target().to_owned(),
            level: Some(*attrs.metadata().level()),
            ..SpanRec::default()
        };
        attrs.record(&mut Visitor(&mut rec.fields));
        self.0.lock().unwrap().spans.insert(id.into_u64(), rec);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut c = self.0.lock().unwrap();
        let rec = c
            .spans
            .get_mut(&id.into_u64())
            .expect("recorded span exists");
        values.record(&mut Visitor(&mut rec.fields));
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::new();
        event.record(&mut Visitor(&mut fields));
        let message = fields.remove("message").unwrap_or_default();
        let span = ctx.event_span(event).map(|s| s.id().into_u64());
        self.0.lock().unwrap().events.push(EventRec {
            message,
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            span,
            fields,
        });
    }

    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        if let Some(rec) = self.0.lock().unwrap().spans.get_mut(&id.into_u64()) {
            rec.closed = true;
        }
    }
}

/// Resolves the test's own name to loopback IPv4 only, so the dial is deterministic.
async fn resolver(host: String, port: u16) -> io::Result<Vec<SocketAddr>> {
    assert_eq!(host, "localhost");
    Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
}

struct Life {
    server_addr: SocketAddr,
    client_local: SocketAddr,
    client_id: u64,
    server_id: u64,
    server_cid: conntrack_core::ConnectionId,
}

/// One TLS connection: the client sends "ping", the server answers "pong" and closes; both
/// ends are dropped and the tracker drains.
async fn one_connection(tracker: &Tracker, hook: &TracingHook) -> Life {
    let (server_cfg, client_cfg) = pki::localhost_configs(&[b"h2"]);
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = inner.local_addr().unwrap();
    let listener = Listener::new(tracker, inner, ListenerConfig::new().category("api"));
    let acceptor = TlsAcceptor::from(server_cfg);
    let hook = hook.clone();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let server_id = tcp.id();
        // The server's work runs inside the connection's span.
        let span = hook.span(tcp.id()).expect("a live connection has its span");
        async move {
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await.unwrap();
            tracing::info!("served");
            tls.write_all(b"pong").await.unwrap();
            tls.shutdown().await.unwrap();
        }
        .instrument(span)
        .await;
        server_id
    });

    let dialer =
        Dialer::new(tracker, DialerConfig::new().category("upstream")).with_resolver(resolver);
    let connector = TlsConnector::from(client_cfg);
    let target = format!("localhost:{}", server_addr.port());
    let mut tls = dialer.connect_tls(&target, &connector, None).await.unwrap();
    let client_id = tls.get_ref().0.id().as_u64();
    let client_local = tls.get_ref().0.get_ref().local_addr().unwrap();
    tls.write_all(b"ping").await.unwrap();
    let mut got = Vec::new();
    tls.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"pong");
    drop(tls);
    let server_cid = server.await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), tracker.drained())
        .await
        .expect("tracker drains");
    Life {
        server_addr,
        client_local,
        client_id,
        server_id: server_cid.as_u64(),
        server_cid,
    }
}

fn field<'a>(f: &'a Fields, name: &str) -> &'a str {
    f.get(name)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("field {name} missing in {f:?}"))
}

#[test]
fn one_connection_life_is_a_span_with_otel_fields_and_an_event_per_phase() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let hook = TracingHook::new().io_events(true);
    let tracker = Tracker::builder().hook(hook.clone()).build();
    // A current-thread runtime keeps every hook call on this thread, under this subscriber.
    let life = tracing::subscriber::with_default(subscriber, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(one_connection(&tracker, &hook))
    });
    let c = capture.0.lock().unwrap();

    // One span per side, both closed, named and leveled as documented.
    let conn_spans: Vec<(&u64, &SpanRec)> = c
        .spans
        .iter()
        .filter(|(_, s)| s.name == "conntrack.connection")
        .collect();
    assert_eq!(conn_spans.len(), 2, "spans: {:?}", c.spans);
    let by_id = |id: u64| {
        conn_spans
            .iter()
            .find(|(_, s)| s.fields.get("conntrack.id") == Some(&id.to_string()))
            .map(|(k, s)| (**k, *s))
            .unwrap_or_else(|| panic!("no span for connection {id}: {conn_spans:?}"))
    };
    let (server_span, server) = by_id(life.server_id);
    let (client_span, client) = by_id(life.client_id);
    for s in [server, client] {
        assert!(s.closed, "span closes with its connection: {s:?}");
        assert_eq!(s.target, "conntrack");
        assert_eq!(s.level, Some(Level::DEBUG));
        assert_eq!(field(&s.fields, "network.transport"), "tcp");
        assert_eq!(field(&s.fields, "network.type"), "ipv4");
        assert_eq!(field(&s.fields, "network.peer.address"), "127.0.0.1");
        assert_eq!(field(&s.fields, "network.local.address"), "127.0.0.1");
        assert_eq!(field(&s.fields, "tls.protocol.version"), "1.3");
        assert!(field(&s.fields, "tls.cipher").starts_with("TLS_"), "{s:?}");
        assert_eq!(field(&s.fields, "tls.next_protocol"), "h2");
        assert_eq!(field(&s.fields, "network.protocol.name"), "http");
        assert_eq!(field(&s.fields, "network.protocol.version"), "2");
        assert_eq!(field(&s.fields, "tls.resumed"), "false");
        assert!(!s.fields.contains_key("error.type"), "clean close: {s:?}");
    }
    let port = |a: SocketAddr| a.port().to_string();
    // The server side.
    assert_eq!(field(&server.fields, "conntrack.category"), "api");
    assert_eq!(field(&server.fields, "conntrack.role"), "server");
    assert_eq!(
        field(&server.fields, "network.local.port"),
        port(life.server_addr)
    );
    assert_eq!(
        field(&server.fields, "network.peer.port"),
        port(life.client_local)
    );
    // The client side, with what it dialed.
    assert_eq!(field(&client.fields, "conntrack.category"), "upstream");
    assert_eq!(field(&client.fields, "conntrack.role"), "client");
    assert_eq!(
        field(&client.fields, "network.peer.port"),
        port(life.server_addr)
    );
    assert_eq!(
        field(&client.fields, "network.local.port"),
        port(life.client_local)
    );
    assert_eq!(field(&client.fields, "server.address"), "localhost");
    assert_eq!(field(&client.fields, "server.port"), port(life.server_addr));
    // Bytes at close: TLS records, so more than the 4 plaintext bytes each way, and each
    // side's reads are the other side's writes.
    let n = |s: &SpanRec, f: &str| field(&s.fields, f).parse::<u64>().unwrap();
    assert!(n(client, "conntrack.write_bytes") > 4);
    assert_eq!(
        n(client, "conntrack.write_bytes"),
        n(server, "conntrack.read_bytes")
    );
    assert_eq!(
        n(server, "conntrack.write_bytes"),
        n(client, "conntrack.read_bytes")
    );

    // Every event is under the `conntrack` target.
    assert!(c
        .events
        .iter()
        .all(|e| e.target == "conntrack" || e.message == "served"));
    let in_span = |span: u64| -> Vec<(&str, Level)> {
        c.events
            .iter()
            .filter(|e| e.span == Some(span))
            .map(|e| (e.message.as_str(), e.level))
            .collect()
    };
    // The phases inside each span, in order (reads and writes at TRACE in between).
    let phases = |span: u64| -> Vec<&str> {
        in_span(span)
            .into_iter()
            .map(|(m, _)| m)
            .filter(|m| *m != "read" && *m != "write" && *m != "served")
            .collect()
    };
    // The server's own event, made inside `TracingHook::span`, belongs to the connection.
    assert!(in_span(server_span).contains(&("served", Level::INFO)));
    assert!(
        hook.span(life.server_cid).is_none(),
        "a closed connection has no span"
    );
    assert_eq!(
        phases(client_span),
        [
            "connection dialed",
            "tls handshake started",
            "tls handshake finished",
            "connection closed"
        ]
    );
    assert_eq!(
        phases(server_span),
        [
            "connection accepted",
            "tls handshake started",
            "tls handshake finished",
            "connection closed"
        ]
    );
    for span in [client_span, server_span] {
        let levels: HashMap<&str, Level> = in_span(span).into_iter().collect();
        assert_eq!(levels["tls handshake started"], Level::TRACE);
        assert_eq!(levels["tls handshake finished"], Level::DEBUG);
        assert_eq!(levels["connection closed"], Level::DEBUG);
        assert_eq!(levels["read"], Level::TRACE);
        assert_eq!(levels["write"], Level::TRACE);
    }
    let event = |span: Option<u64>, msg: &str| {
        c.events
            .iter()
            .find(|e| e.span == span && e.message == msg)
            .unwrap_or_else(|| panic!("no {msg:?} event in {span:?}: {:?}", c.events))
    };
    let hs = event(Some(client_span), "tls handshake started");
    // The SNI is `server.address` (the deprecated `tls.client.server_name` is gone).
    assert_eq!(field(&hs.fields, "server.address"), "localhost");
    assert!(!hs.fields.contains_key("tls.client.server_name"));
    let hs = event(Some(client_span), "tls handshake finished");
    assert!(
        field(&hs.fields, "conntrack.duration")
            .parse::<f64>()
            .unwrap()
            > 0.0
    );
    assert!(!hs.fields.contains_key("error.type"));
    let closed = event(Some(server_span), "connection closed");
    assert_eq!(
        field(&closed.fields, "conntrack.read_bytes"),
        field(&server.fields, "conntrack.read_bytes")
    );
    // Reads and writes carry their sizes; the writes add up to the span's total.
    let writes: u64 = c
        .events
        .iter()
        .filter(|e| e.span == Some(client_span) && e.message == "write")
        .map(|e| field(&e.fields, "conntrack.bytes").parse::<u64>().unwrap())
        .sum();
    assert_eq!(writes, n(client, "conntrack.write_bytes"));

    // Before the connection existed: DNS and the connect attempt, outside any span.
    let dns = event(None, "dns lookup finished");
    assert_eq!(dns.level, Level::DEBUG);
    assert_eq!(field(&dns.fields, "dns.question.name"), "localhost");
    assert_eq!(field(&dns.fields, "dns.answers"), "1");
    assert_eq!(field(&dns.fields, "conntrack.category"), "upstream");
    assert_eq!(event(None, "dns lookup started").level, Level::TRACE);
    let connect = event(None, "connect finished");
    assert_eq!(field(&connect.fields, "network.peer.address"), "127.0.0.1");
    assert_eq!(
        field(&connect.fields, "network.peer.port"),
        port(life.server_addr)
    );
    assert_eq!(field(&connect.fields, "network.transport"), "tcp");
    assert!(!connect.fields.contains_key("error.type"));
}

#[test]
fn failures_carry_error_type() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let tracker = Tracker::builder().hook(TracingHook::new()).build();
    tracing::subscriber::with_default(subscriber, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                // A port nobody listens on: bind, note it, close.
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = l.local_addr().unwrap();
                drop(l);
                let dialer = Dialer::new(&tracker, DialerConfig::new().category("down"));
                let err = dialer.connect(&addr.to_string()).await.unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
            });
    });
    let c = capture.0.lock().unwrap();
    let find = |msg: &str| {
        c.events
            .iter()
            .find(|e| e.message == msg)
            .unwrap_or_else(|| panic!("no {msg:?}: {:?}", c.events))
    };
    let connect = find("connect finished");
    assert_eq!(field(&connect.fields, "error.type"), "connection_refused");
    assert!(!field(&connect.fields, "error.message").is_empty());
    let dial = find("dial failed");
    assert_eq!(dial.level, Level::DEBUG);
    assert_eq!(field(&dial.fields, "error.type"), "connection_refused");
    assert_eq!(field(&dial.fields, "conntrack.category"), "down");
    assert!(c.spans.values().all(|s| s.name != "conntrack.connection"));
}

/// A connection refused by a limit is `accept failed` with the metrics' `error.type`
/// (`max_concurrent_connections_exceeded`), not the refusal error's kind.
#[test]
fn a_refused_connection_says_why() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let tracker = Tracker::builder().hook(TracingHook::new()).build();
    let config = ListenerConfig::new().category("full").max_connections(1);
    let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    tracing::subscriber::with_default(subscriber, || {
        let kept = tracker
            .admit(
                &config,
                local,
                "127.0.0.1:50000".parse::<SocketAddr>().unwrap(),
            )
            .expect("within the limit");
        let refused = tracker.admit(
            &config,
            local,
            "127.0.0.1:50001".parse::<SocketAddr>().unwrap(),
        );
        assert!(refused.is_err(), "over the limit");
        drop(kept);
    });
    let c = capture.0.lock().unwrap();
    let failed = c
        .events
        .iter()
        .find(|e| e.message == "accept failed")
        .unwrap_or_else(|| panic!("no accept failed: {:?}", c.events));
    assert_eq!(
        field(&failed.fields, "error.type"),
        "max_concurrent_connections_exceeded"
    );
    assert_eq!(field(&failed.fields, "conntrack.category"), "full");
}
