//! The text, JSON and HTML renderings of a snapshot.

use std::net::SocketAddr;

use conntrack_core::render::{self, HtmlOptions, Order, Page, Snapshot};
use conntrack_core::{ListenerConfig, Registration, Role, TlsInfo, Tracker};

const HOSTILE: &str = "<img src=x onerror=alert(1)>";

fn tracker_with_traffic() -> (Tracker, Vec<conntrack_core::Connection>) {
    let tracker = Tracker::new();
    let a: SocketAddr = "127.0.0.1:443".parse().unwrap();
    let b: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let api = tracker.accepted(&ListenerConfig::new().category("api"), a, b);
    api.record_read(1234);
    let evil = tracker.register(Registration::server(a, b).category(HOSTILE).target(HOSTILE));
    evil.set_tls(
        TlsInfo::new("1.3", "TLS_AES_128_GCM_SHA256")
            .with_alpn(HOSTILE.as_bytes().to_vec())
            .with_server_name(HOSTILE),
    );
    drop(tracker.register(Registration::new(Role::Client).category("gone")));
    (tracker, vec![api, evil])
}

#[test]
fn html_has_a_row_per_connection_and_escapes_everything() {
    let (tracker, _conns) = tracker_with_traffic();
    let page = render::html(&Snapshot::of(&tracker), &HtmlOptions::default());
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(!page.contains("<img"), "hostile markup must not appear raw");
    assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
    let live = page
        .split("id=\"connections\"")
        .nth(1)
        .unwrap()
        .split("</table>")
        .next()
        .unwrap();
    assert_eq!(
        live.matches("<tr>").count(),
        1 + 2,
        "header row plus one per live connection"
    );
    let summary = page
        .split("id=\"summary\"")
        .nth(1)
        .unwrap()
        .split("</table>")
        .next()
        .unwrap();
    assert!(summary.contains(">api<") && summary.contains(">gone<"));
    let closed = page
        .split("id=\"closed\"")
        .nth(1)
        .unwrap()
        .split("</table>")
        .next()
        .unwrap();
    assert_eq!(closed.matches("<tr>").count(), 1 + 1);
    assert!(page.contains("http-equiv=\"refresh\" content=\"5\""));
    assert!(
        !page.contains("src=\"http"),
        "self-contained: no external resources"
    );
}

#[test]
fn text_table_lists_connections() {
    let (tracker, _conns) = tracker_with_traffic();
    let t = render::text_table(&tracker.connections());
    assert_eq!(t.lines().count(), 3);
    assert!(t.lines().next().unwrap().ends_with("TLS"));
    assert!(t.contains("1.2 KiB"));
}

#[cfg(feature = "serde")]
#[test]
fn json_round_trips_with_the_documented_schema() {
    let (tracker, _conns) = tracker_with_traffic();
    let text = render::json(&Snapshot::of(&tracker));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(v["generated_at"].is_f64());
    let conns = v["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 2);
    let c = &conns[0];
    for (key, check) in [
        ("id", c["id"].is_u64()),
        ("category", c["category"] == "api"),
        ("role", c["role"] == "server"),
        ("local_addr", c["local_addr"] == "127.0.0.1:443"),
        ("remote_addr", c["remote_addr"] == "127.0.0.1:50000"),
        ("target", c["target"].is_null()),
        ("established_at", c["established_at"].is_f64()),
        ("established_for", c["established_for"].is_f64()),
        ("read_bytes", c["read_bytes"] == 1234),
        ("write_bytes", c["write_bytes"] == 0),
        ("idle_for", c["idle_for"].is_f64()),
        ("timings", c["timings"].is_object()),
        ("tls", c["tls"].is_null()),
    ] {
        assert!(check, "{key}: {}", c[key]);
    }
    assert_eq!(conns[1]["tls"]["protocol_version"], "1.3");
    assert_eq!(
        conns[1]["category"], HOSTILE,
        "JSON carries the raw string; escaping is the page's job"
    );
    let stats = &v["stats"]["categories"];
    assert!(stats
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["category"] == "gone" && s["closed"] == 1));
    assert_eq!(v["recently_closed"][0]["info"]["category"], "gone");
    assert!(v["recently_closed"][0]["closed_at"].is_f64());
}

#[test]
fn a_page_keeps_the_first_connections_in_its_order_and_every_total() {
    let tracker = Tracker::builder().history(10).build();
    let a: SocketAddr = "127.0.0.1:443".parse().unwrap();
    let conns: Vec<_> = (0..20u16)
        .map(|i| {
            let c = tracker.register(
                Registration::server(a, SocketAddr::from(([127, 0, 0, 1], 1024 + i)))
                    .category("api"),
            );
            // Bytes peak in the middle, so no order coincides with another.
            c.record_read(100 - usize::from(i.abs_diff(10)));
            c
        })
        .collect();
    for _ in 0..5 {
        drop(tracker.register(Registration::new(Role::Client).category("gone")));
    }
    let ids = |s: &Snapshot| s.connections.iter().map(|c| c.id).collect::<Vec<_>>();
    let all: Vec<_> = conns.iter().map(conntrack_core::Connection::id).collect();

    let page = Snapshot::page(&tracker, &Page::new().limit(3));
    assert_eq!(page.order, Order::Newest);
    assert_eq!(ids(&page), [all[19], all[18], all[17]]);
    assert_eq!((page.total_connections, page.connections.len()), (20, 3));
    assert_eq!(
        (page.total_recently_closed, page.recently_closed.len()),
        (5, 3)
    );
    let api = page.stats.get("api", Role::Server).unwrap();
    assert_eq!((api.active, api.opened), (20, 20));

    let oldest = Snapshot::page(&tracker, &Page::new().limit(2).order(Order::Oldest));
    assert_eq!(ids(&oldest), [all[0], all[1]]);
    let bytes = Snapshot::page(&tracker, &Page::new().limit(3).order(Order::Bytes));
    assert_eq!(ids(&bytes), [all[10], all[9], all[11]]);
    let none = Snapshot::page(&tracker, &Page::new().limit(0));
    assert!(none.connections.is_empty() && none.total_connections == 20);
    let everything = Snapshot::page(&tracker, &Page::new().limit(100).order(Order::Oldest));
    assert_eq!(ids(&everything), all);
    assert_eq!(Order::parse("BYTES"), Some(Order::Bytes));
    assert_eq!(Order::parse("largest"), None);

    let html = render::html(&page, &HtmlOptions::default());
    assert!(html.contains("Showing 3 of 20 live connections (newest first)"));
    assert!(html.contains("Showing 3 of 5 closed connections in the history (newest first)"));
    let html = render::html(&Snapshot::of(&tracker), &HtmlOptions::default());
    assert!(html.contains(">20 live connections<"));
}

/// A tracker keeping recent requests, with two exchanges served on one connection (the
/// second answered 503, the route markup) and one on HTTP/2, as `ExchangeLayer` reports them.
fn tracker_with_served_requests() -> (Tracker, conntrack_core::Connection) {
    let tracker = Tracker::builder().recent_requests(8).build();
    let a: SocketAddr = "127.0.0.1:443".parse().unwrap();
    let b: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let conn = tracker.register(Registration::server(a, b).category("web"));
    let r = conn.downgrade();
    for (route, status, version) in [
        ("/items/{id}", 200, "1.1"),
        (HOSTILE, 503, "1.1"),
        ("/h2", 204, "2"),
    ] {
        conn.record_read(40);
        r.begin_exchange();
        let mut x = r
            .server_exchange("GET", Some(route), version)
            .expect("timed: the tracker keeps recent requests");
        x.response_head(status);
        conn.record_write(100);
        x.finish_when_flushed();
        r.end_exchange_when_flushed();
        conn.record_flush();
    }
    (tracker, conn)
}

#[test]
fn served_requests_have_their_waterfall_text_and_json() {
    let (tracker, conn) = tracker_with_served_requests();
    let snapshot = Snapshot::of(&tracker);
    let page = render::html(&snapshot, &HtmlOptions::default());
    assert!(!page.contains("<img"), "hostile markup must not appear raw");
    assert!(
        page.contains("id=\"waterfall-empty\""),
        "no client request traced"
    );
    assert!(!page.contains("id=\"server-waterfall-empty\""));
    let svg = page
        .split("<svg id=\"server-waterfall\"")
        .nth(1)
        .expect("the server waterfall")
        .split("</svg>")
        .next()
        .unwrap();
    let rows: Vec<&str> = svg.split("<g class=\"exchange\"").skip(1).collect();
    assert_eq!(rows.len(), 3, "a row per served request: {svg}");
    // Oldest first, each with its connection, status and version, and a bar per measured
    // phase: HTTP/1 has a waiting phase, HTTP/2 does not; no body was timed.
    let id = conn.id().as_u64();
    for (row, (status, version, label)) in rows.iter().zip([
        (200, "1.1", "GET /items/{id} 200 · HTTP/1.1 · #"),
        (
            503,
            "1.1",
            "GET &lt;img src=x onerror=aler… 503 · HTTP/1.1 · #",
        ),
        (204, "2", "GET /h2 204 · HTTP/2 · #"),
    ]) {
        assert!(
            row.contains(&format!(
                "data-connection=\"{id}\" data-status=\"{status}\" data-version=\"{version}\" data-completed=\"true\""
            )),
            "{row}"
        );
        assert!(row.contains(label), "{row}");
        let phases: Vec<&str> = row
            .split("class=\"phase\" data-phase=\"")
            .skip(1)
            .map(|p| p.split('"').next().unwrap())
            .collect();
        let expected: &[&str] = if version == "2" {
            &["request_head", "handler", "response_write"]
        } else {
            &["waiting", "request_head", "handler", "response_write"]
        };
        assert_eq!(phases, expected, "{row}");
    }
    assert!(svg.contains(">response write</text>"), "the legend");
    assert!(page.contains("id=\"server-waterfall-note\""));

    // Text: a header and a line per exchange, newest first.
    let text = render::text_server_exchanges(&snapshot.server_exchanges);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("CONN") && lines[0].contains("HANDLER"));
    assert!(lines[1].contains("/h2") && lines[1].contains("204"));
    assert!(lines[2].contains(HOSTILE), "text keeps the raw string");
    assert!(render::text_server_exchanges(&[]).is_empty());

    // JSON.
    #[cfg(feature = "serde")]
    {
        let v: serde_json::Value = serde_json::from_str(&render::json(&snapshot)).unwrap();
        let xs = v["server_exchanges"].as_array().unwrap();
        assert_eq!(xs.len(), 3);
        let x = &xs[2];
        for (key, check) in [
            ("id", x["id"] == 1),
            ("connection", x["connection"] == id),
            ("category", x["category"] == "web"),
            ("method", x["method"] == "GET"),
            ("route", x["route"] == "/items/{id}"),
            ("version", x["version"] == "1.1"),
            ("status", x["status"] == 200),
            ("grpc_status", x["grpc_status"].is_null()),
            ("completed", x["completed"] == true),
            ("started_at", x["started_at"].is_f64()),
            ("total", x["total"].is_f64()),
            ("bytes_read", x["bytes_read"] == 40),
            ("bytes_written", x["bytes_written"] == 100),
        ] {
            assert!(check, "{key}: {}", x[key]);
        }
        let p = &x["phases"];
        assert!(p["waiting"].is_f64() && p["request_body"].is_null());
        for k in ["request_head", "handler", "response_write"] {
            assert!(p[k].is_f64(), "{k}: {p}");
        }
        assert!(xs[0]["phases"]["waiting"].is_null(), "HTTP/2");
        assert_eq!(x.as_object().unwrap().len(), 14, "{x}");
        assert_eq!(p.as_object().unwrap().len(), 5, "{p}");
    }
}

/// The server waterfall's row label is bounded whatever the peer sent: an extension method
/// (any length the HTTP parser takes) is shortened like the route, whole in the row's
/// tooltip, so it cannot run over the bars.
#[test]
fn a_long_method_is_shortened_in_the_server_waterfall() {
    let tracker = Tracker::builder().recent_requests(8).build();
    let a: SocketAddr = "127.0.0.1:80".parse().unwrap();
    let b: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let conn = tracker.register(Registration::server(a, b).category("web"));
    let r = conn.downgrade();
    let method = "M".repeat(500);
    r.begin_exchange();
    let mut x = r
        .server_exchange(&method, Some("/a"), "1.1")
        .expect("timed: the tracker keeps recent requests");
    x.response_head(200);
    r.end_exchange();
    x.finish();
    let page = render::html(&Snapshot::of(&tracker), &HtmlOptions::default());
    let row = page
        .split("<g class=\"exchange\"")
        .nth(1)
        .expect("a row")
        .split("</g>")
        .next()
        .unwrap();
    let label = row
        .split("</title>")
        .nth(1)
        .unwrap()
        .split("</text>")
        .next()
        .unwrap();
    assert!(label.chars().count() <= 64, "{label}");
    assert!(label.contains("/a 200"), "{label}");
    assert!(
        row.contains(&format!("<title>{method} /a")),
        "whole in the tooltip"
    );
}
