//! The JSON schema in `docs/observability.md` is what the code writes: every key documented
//! for a `ConnectionInfo` (with its TLS record and certificate summary) is in the real output,
//! and the real output has no key the document does not name. Times are numbers.
#![cfg(feature = "serde")]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use conntrack_core::{PeerCertificates, Registration, TlsInfo, Tracker};

const DOC: &str = include_str!("../../../docs/observability.md");

/// Every `"key":` written in the `ConnectionInfo = { ... }` block of the document, and
/// separately those of its `"tcp"` object (Linux socket statistics, which a connection
/// registered without a socket, as here, does not have).
fn documented_keys() -> (BTreeSet<String>, BTreeSet<String>) {
    let start = DOC
        .find("ConnectionInfo = {")
        .expect("the ConnectionInfo schema");
    let block = &DOC[start..];
    let end = block.find("\n}\n").expect("the block's end");
    let mut keys = BTreeSet::new();
    let mut tcp = BTreeSet::new();
    let mut in_tcp = false;
    for line in block[..end].lines().skip(1) {
        if line.trim_start().starts_with("\"tcp\":") {
            keys.insert("tcp".to_owned());
            in_tcp = true;
            continue;
        }
        if in_tcp && line.trim_start().starts_with('}') {
            in_tcp = false;
            continue;
        }
        let into = if in_tcp { &mut tcp } else { &mut keys };
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(open) = rest.find('"') {
            let after = &rest[open + 1..];
            let Some(close) = after.find('"') else { break };
            let word = &after[..close];
            let tail = after[close + 1..].trim_start();
            if tail.starts_with(':') {
                into.insert(word.to_owned());
            }
            rest = &after[close + 1..];
        }
    }
    (keys, tcp)
}

/// Every key of a JSON object, nested objects included.
fn real_keys(v: &serde_json::Value, out: &mut BTreeSet<String>) {
    if let Some(map) = v.as_object() {
        for (k, v) in map {
            out.insert(k.clone());
            real_keys(v, out);
        }
    }
}

#[test]
fn the_documented_connection_schema_is_the_real_one() {
    let tracker = Tracker::new();
    let a: SocketAddr = "127.0.0.1:443".parse().unwrap();
    let b: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let conn = tracker.register(Registration::server(a, b).category("api"));
    conn.report_tls_handshake_done(
        Ok(TlsInfo::new("1.3", "TLS_AES_128_GCM_SHA256")
            .with_alpn(b"h2".to_vec())
            .with_server_name("localhost")
            .with_peer_certificates(
                PeerCertificates::new(1)
                    .with_leaf_subject("CN=localhost")
                    .with_leaf_not_after(
                        SystemTime::UNIX_EPOCH + Duration::from_secs(1_925_078_400),
                    ),
            )),
        Duration::from_millis(2),
    );
    let v = serde_json::to_value(tracker.connections().remove(0)).unwrap();
    let mut real = BTreeSet::new();
    real_keys(&v, &mut real);
    let (documented, tcp) = documented_keys();
    assert!(v["tcp"].is_null(), "no socket, no TCP statistics");
    assert!(!tcp.is_empty(), "the TCP statistics are documented");
    assert_eq!(documented, real, "docs/observability.md vs the real JSON");
    let certs = &v["tls"]["peer_certificates"];
    assert_eq!(
        certs["leaf_not_after"].as_f64(),
        Some(1_925_078_400.0),
        "a time is unix seconds as a number, as documented"
    );
    assert!(v["established_at"].is_f64());
    drop(conn);
}
