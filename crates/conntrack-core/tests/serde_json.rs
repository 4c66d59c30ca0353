//! With feature `serde`, the records serialize to JSON with the documented keys and types.
#![cfg(feature = "serde")]

use std::net::SocketAddr;
use std::time::Duration;

use conntrack_core::{Registration, Timings, TlsInfo, Tracker};
use serde_json::Value;

#[test]
fn connection_info_and_stats_serialize() {
    let tracker = Tracker::new();
    let a: SocketAddr = "127.0.0.1:80".parse().unwrap();
    let b: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let conn = tracker.register(
        Registration::server(a, b)
            .category("api")
            .timings(Timings::new().with_connect(Duration::from_millis(2))),
    );
    conn.record_read(10);
    conn.set_tls(TlsInfo::new("1.3", "TLS_AES_128_GCM_SHA256").with_alpn(b"h2".to_vec()));
    let v: Value = serde_json::to_value(&tracker.connections()[0]).unwrap();
    assert_eq!(v["category"], "api");
    assert_eq!(v["role"], "server");
    assert_eq!(v["local_addr"], "127.0.0.1:80");
    assert_eq!(v["remote_addr"], "127.0.0.1:50000");
    assert_eq!(v["read_bytes"], 10);
    assert!(v["id"].is_u64());
    assert!(v["established_for"].is_f64() && v["idle_for"].is_f64());
    assert!(
        v["established_at"].as_f64().unwrap() > 1.0e9,
        "unix seconds"
    );
    assert_eq!(v["timings"]["connect"], 0.002);
    assert!(v["timings"]["dns"].is_null());
    assert_eq!(v["tls"]["protocol_version"], "1.3");
    assert_eq!(v["target"], Value::Null);
    drop(conn);
    let closed: Value = serde_json::to_value(tracker.recently_closed()).unwrap();
    assert_eq!(closed[0]["info"]["category"], "api");
    assert!(closed[0]["closed_at"].is_f64());
    let stats: Value = serde_json::to_value(tracker.stats()).unwrap();
    assert_eq!(stats["categories"][0]["category"], "api");
    assert_eq!(stats["categories"][0]["closed"], 1);
    assert_eq!(stats["hook_panics"], 0);
}
