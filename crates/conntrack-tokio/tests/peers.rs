//! Slow and hostile peers, and fidelity against the kernel's own byte counts.

use std::process::Command;
use std::time::Duration;

use conntrack_core::{DialerConfig, ListenerConfig, Tracker};
use conntrack_tokio::{Dialer, Listener, Tracked};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn pair(tracker: &Tracker) -> (Tracked<TcpStream>, Tracked<TcpStream>) {
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(tracker, inner, ListenerConfig::new().category("in"));
    let dialer = Dialer::new(tracker, DialerConfig::new().category("out"));
    let (a, d) = tokio::join!(listener.accept(), dialer.connect_addr(addr));
    (a.unwrap().0, d.unwrap())
}

/// A peer that never reads and one that sends a byte at a time do not hold up snapshots, stats
/// or another connection's accounting: a write stuck on a full socket buffer and a read waiting
/// for a drip are pending futures, holding no tracker lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_stuck_peers_do_not_block_the_tracker() {
    let tracker = Tracker::new();

    // 1. A server writing to a client that never reads: the write blocks once the buffers fill.
    let (mut to_stuck, stuck_client) = pair(&tracker).await;
    let stuck_id = to_stuck.id();
    let writer = tokio::spawn(async move {
        let chunk = vec![0u8; 64 * 1024];
        // Bounded: 1 GiB is far more than loopback buffers hold, so this never completes.
        for _ in 0..16 * 1024 {
            to_stuck.write_all(&chunk).await?;
        }
        Ok::<_, std::io::Error>(to_stuck)
    });

    // 2. A client dripping one byte at a time to a server that waits for ten.
    let (mut drip_server, mut drip_client) = pair(&tracker).await;
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 10];
        drip_server.read_exact(&mut buf).await.map(|_| drip_server)
    });
    for b in 0..5u8 {
        drip_client.write_all(&[b]).await.unwrap();
        // The drip itself is the scenario.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Meanwhile: the stuck write has made progress and then stopped (wait until its count
    // stops growing between snapshots), and snapshots, stats and a fresh bulk connection all
    // work and count exactly.
    let mut last = 0;
    for _ in 0..200 {
        let now = tracker.get(stuck_id).unwrap().write_bytes;
        if now > 0 && now == last {
            break;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!writer.is_finished(), "the stuck write is still pending");
    assert!(!reader.is_finished(), "the dripped read is still pending");
    assert_eq!(tracker.connections().len(), 4);
    assert_eq!(tracker.stats().total().active, 4);

    let (mut a, mut b) = pair(&tracker).await;
    let data = vec![7u8; 4 * 1024 * 1024];
    let send = tokio::spawn(async move {
        a.write_all(&data).await.unwrap();
        a
    });
    let mut got = vec![0u8; 4 * 1024 * 1024];
    b.read_exact(&mut got).await.unwrap();
    let a = send.await.unwrap();
    assert_eq!(tracker.get(a.id()).unwrap().write_bytes, 4 * 1024 * 1024);
    assert_eq!(tracker.get(b.id()).unwrap().read_bytes, 4 * 1024 * 1024);
    assert_eq!(tracker.connections().len(), 6);

    // Finish the drip; tear everything down; nothing is left.
    for b in 5..10u8 {
        drip_client.write_all(&[b]).await.unwrap();
    }
    let drip_server = reader.await.unwrap().unwrap();
    assert_eq!(tracker.get(drip_server.id()).unwrap().read_bytes, 10);
    drop(stuck_client); // the stuck write now fails with a reset or broken pipe
    let err = writer
        .await
        .unwrap()
        .expect_err("the write fails once the peer is gone");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        "{err}"
    );
    drop((drip_server, drip_client, a, b));
    assert!(tracker.is_empty());
}

/// `(bytes_acked, bytes_received)` of the TCP socket `local` → `peer`, from `ss -tin`.
fn kernel_counts(local: std::net::SocketAddr, peer: std::net::SocketAddr) -> Option<(u64, u64)> {
    let out = Command::new("ss")
        .args(["-tinH", "src", &local.to_string(), "dst", &peer.to_string()])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("bytes_acked:")?, field("bytes_received:")?))
}

/// Bytes the tracker counts for a loopback TCP connection equal the kernel's own counts
/// (`ss -tin` from iproute2: `bytes_acked` for what was sent, `bytes_received` for what
/// arrived) after a transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_counts_match_the_kernel() {
    if Command::new("ss").arg("-V").output().is_err() {
        conntrack_testkit::tool_missing(
            "peers::byte_counts_match_the_kernel",
            "ss",
            "apt-get install iproute2",
        );
        return;
    }
    let tracker = Tracker::new();
    let (mut server, mut client) = pair(&tracker).await;
    let up = vec![1u8; 3 * 1024 * 1024 + 11];
    let down = vec![2u8; 700_001];
    let (cu, sd) = (up.len(), down.len());
    let s = tokio::spawn(async move {
        let mut buf = vec![0u8; cu];
        server.read_exact(&mut buf).await.unwrap();
        server.write_all(&down).await.unwrap();
        server
    });
    client.write_all(&up).await.unwrap();
    let mut buf = vec![0u8; sd];
    client.read_exact(&mut buf).await.unwrap();
    let server = s.await.unwrap();

    let info = client.info();
    let (local, peer) = (
        info.local_addr.socket_addr().unwrap(),
        info.remote_addr.socket_addr().unwrap(),
    );
    // Acknowledgements are asynchronous: wait (bounded) until the kernel has acked all we sent.
    let mut kernel = None;
    for _ in 0..200 {
        kernel = kernel_counts(local, peer);
        if kernel.is_some_and(|(acked, _)| acked > info.write_bytes) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (acked, received) = kernel.expect("ss shows the socket");
    assert_eq!(info.write_bytes, cu as u64);
    assert_eq!(info.read_bytes, sd as u64);
    // Linux counts the acknowledged SYN in bytes_acked (one sequence number); no FIN yet.
    assert_eq!(
        acked,
        info.write_bytes + 1,
        "kernel bytes_acked = tracked write bytes + SYN"
    );
    assert_eq!(
        received, info.read_bytes,
        "kernel bytes_received = tracked read bytes"
    );
    drop((server, client));
    assert!(tracker.is_empty());
}
