//! The README's tokio quick start, verbatim (`examples/tests/readme.rs` checks they agree).

use conntrack_core::{render, DialerConfig, ListenerConfig, Tracker};
use conntrack_tokio::{Dialer, Listener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let tracker = Tracker::new();

    // Inbound: wrap the listener; every accepted stream is tracked until it is dropped.
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = inner.local_addr()?;
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("api"));
    tokio::spawn(async move {
        while let Ok((stream, _peer)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(stream);
                let _ = tokio::io::copy(&mut r, &mut w).await; // echo
            });
        }
    });

    // Outbound: a dialer that reports DNS, each connect attempt and the dial.
    let dialer = Dialer::new(
        &tracker,
        DialerConfig::new()
            .category("db")
            .on_dns_done(|ev| println!("{} -> {:?}", ev.host, ev.addrs)),
    );
    let mut conn = dialer
        .connect(&format!("localhost:{}", addr.port()))
        .await?;

    // One round trip: once the echo is back, the server has accepted (and tracked) its end
    // too, so the table shows both.
    conn.write_all(b"ping").await?;
    let mut echo = [0u8; 4];
    conn.read_exact(&mut echo).await?;

    print!("{}", render::text_table(&tracker.connections()));
    Ok(())
}
