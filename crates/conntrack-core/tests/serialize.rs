//! With feature `serde`, the records serialize to JSON with the documented keys and types:
//! roles as `"server"` / `"client"`, addresses as strings, durations as float seconds.
#![cfg(feature = "serde")]

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use conntrack_core::{Addr, PeerCertificates, Registration, Role, Timings, TlsInfo, Tracker};
use serde_json::{json, Value};

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<_> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

#[test]
fn connection_info_serializes_with_the_documented_keys() {
    let tracker = Tracker::new();
    let a: SocketAddr = "127.0.0.1:80".parse().unwrap();
    let b: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let conn = tracker.register(
        Registration::server(a, b)
            .category("api")
            .timings(Timings::new().with_connect(Duration::from_millis(2))),
    );
    conn.record_read(10);
    conn.record_write(4);
    conn.report_tls_handshake_done(
        Ok(TlsInfo::new("1.3", "TLS_AES_128_GCM_SHA256")
            .with_alpn(b"h2".to_vec())
            .with_server_name("api.example")
            .with_peer_certificates(PeerCertificates::new(2).with_leaf_subject("CN=api"))),
        Duration::from_millis(5),
    );
    let v = serde_json::to_value(tracker.connections().remove(0)).unwrap();
    assert_eq!(
        keys(&v),
        [
            "category",
            "established_at",
            "established_for",
            "exchange",
            "exchange_idle_for",
            "id",
            "idle_for",
            "in_flight",
            "local_addr",
            "read_bytes",
            "remote_addr",
            "requests",
            "role",
            "state",
            "target",
            "tcp",
            "timings",
            "tls",
            "write_bytes"
        ]
    );
    assert_eq!(v["tcp"], Value::Null);
    assert_eq!(v["id"], conn.id().as_u64());
    assert_eq!(v["category"], "api");
    assert_eq!(v["role"], "server");
    assert_eq!(v["state"], "new");
    assert_eq!(v["requests"], 0);
    assert_eq!(v["exchange_idle_for"], serde_json::Value::Null);
    assert_eq!(v["local_addr"], "127.0.0.1:80");
    assert_eq!(v["remote_addr"], "127.0.0.1:50000");
    assert_eq!(v["target"], Value::Null);
    assert_eq!(
        (v["read_bytes"].as_u64(), v["write_bytes"].as_u64()),
        (Some(10), Some(4))
    );
    let established_for = v["established_for"].as_f64().expect("float seconds");
    assert!(
        (0.0..3600.0).contains(&established_for),
        "{established_for}"
    );
    assert!(v["idle_for"].is_f64());
    assert!(
        v["established_at"].as_f64().unwrap() > 1.0e9,
        "unix seconds"
    );
    assert_eq!(
        v["timings"],
        json!({ "dns": null, "connect": 0.002, "tls_handshake": 0.005 })
    );
    assert_eq!(v["tls"]["protocol_version"], "1.3");
    assert_eq!(v["tls"]["cipher_suite"], "TLS_AES_128_GCM_SHA256");
    assert_eq!(v["tls"]["server_name"], "api.example");
    assert_eq!(v["tls"]["resumed"], false);
    assert_eq!(v["tls"]["alpn"], json!([104, 50]), "raw bytes");
    assert_eq!(v["tls"]["peer_certificates"]["count"], 2);
    assert_eq!(v["tls"]["peer_certificates"]["leaf_subject"], "CN=api");
}

#[test]
fn clients_unix_and_unknown_addresses_serialize() {
    let tracker = Tracker::new();
    let dialed = tracker.register(
        Registration::client(
            "127.0.0.1:40000".parse::<SocketAddr>().unwrap(),
            "[::1]:443".parse::<SocketAddr>().unwrap(),
        )
        .category("db")
        .target("db.internal:443"),
    );
    let unix = tracker.register(Registration::server(
        Addr::unix("/run/app.sock"),
        Addr::Unix(None),
    ));
    let unknown = tracker.register(Registration::new(Role::Client));
    let v = serde_json::to_value(tracker.connections()).unwrap();
    assert_eq!(v[0]["role"], "client");
    assert_eq!(v[0]["remote_addr"], "[::1]:443");
    assert_eq!(v[0]["target"], "db.internal:443");
    assert_eq!(v[0]["tls"], Value::Null);
    assert_eq!(v[1]["local_addr"], "unix:/run/app.sock");
    assert_eq!(v[1]["remote_addr"], "unix:(unnamed)");
    assert_eq!(v[2]["local_addr"], Value::Null, "unknown is null");
    assert_eq!(v[2]["category"], "");
    drop((dialed, unix, unknown));
}

#[test]
fn closed_connections_and_stats_serialize() {
    let tracker = Tracker::new();
    let a: SocketAddr = "127.0.0.1:80".parse().unwrap();
    let conn = tracker.register(Registration::server(a, a).category("api"));
    conn.record_read(3);
    conn.record_error(&io::Error::new(
        io::ErrorKind::ConnectionReset,
        "peer went away",
    ));
    drop(conn);
    let client = tracker.register(Registration::client(a, a).category("api"));

    let closed = serde_json::to_value(tracker.recently_closed()).unwrap();
    assert_eq!(keys(&closed[0]), ["closed_at", "error", "info", "reason"]);
    assert_eq!(closed[0]["reason"], "reset");
    assert_eq!(closed[0]["info"]["category"], "api");
    assert_eq!(closed[0]["info"]["read_bytes"], 3);
    assert_eq!(closed[0]["error"], "peer went away");
    assert!(closed[0]["closed_at"].as_f64().unwrap() > 1.0e9);

    let stats = serde_json::to_value(tracker.stats()).unwrap();
    assert_eq!(keys(&stats), ["categories", "hook_panics"]);
    assert_eq!(stats["hook_panics"], 0);
    let cats = stats["categories"].as_array().unwrap();
    assert_eq!(cats.len(), 2);
    assert_eq!(
        keys(&cats[0]),
        [
            "active",
            "category",
            "closed",
            "failed",
            "opened",
            "read_bytes",
            "rejected",
            "role",
            "tls_handshake_failed",
            "write_bytes"
        ]
    );
    assert_eq!(
        (&cats[0]["category"], &cats[0]["role"]),
        (&json!("api"), &json!("client"))
    );
    assert_eq!(cats[0]["active"], 1);
    assert_eq!(cats[1]["role"], "server");
    assert_eq!(
        (&cats[1]["closed"], &cats[1]["read_bytes"]),
        (&json!(1), &json!(3))
    );
    drop(client);
}

/// `tcp` holds the kernel's statistics of a registered TCP socket (Linux), in seconds and
/// counts.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn tcp_statistics_serialize_with_the_documented_keys() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    client.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).unwrap();
    server.write_all(b"pong").unwrap();
    client.read_exact(&mut buf).unwrap();

    let tracker = Tracker::new();
    let conn = tracker.register(Registration::client(
        client.local_addr().unwrap(),
        client.peer_addr().unwrap(),
    ));
    let guard = conn.watch_tcp_info(&client);
    let v = serde_json::to_value(tracker.connections().remove(0)).unwrap();
    let tcp = &v["tcp"];
    assert_eq!(
        keys(tcp),
        [
            "bytes_acked",
            "bytes_received",
            "bytes_retrans",
            "bytes_sent",
            "cwnd",
            "min_rtt",
            "mss",
            "retransmits",
            "rtt",
            "rtt_var"
        ]
    );
    assert!(tcp["rtt"].as_f64().unwrap() > 0.0, "{tcp}");
    // Sampled by the handshake and the exchange above.
    assert!(tcp["min_rtt"].is_number(), "{tcp}");
    assert_eq!(tcp["bytes_received"], 4, "{tcp}");
    // The side that opened the connection counts its SYN as one acknowledged byte.
    assert_eq!(tcp["bytes_acked"], 5, "{tcp}");
    // Dropping the guard reads once more and stops reading the socket: the record keeps the
    // last values after the socket is gone.
    drop(guard);
    drop(client);
    let after = tracker.get(conn.id()).unwrap().tcp.unwrap();
    assert_eq!(after.bytes_received, Some(4));
}
