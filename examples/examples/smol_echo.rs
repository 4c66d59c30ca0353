//! An echo server and its clients on loopback, on smol, tracked with `conntrack-async-std`.
//!
//! The server echoes each connection in its own task (reading through one clone of the
//! tracked stream and writing through another: clones count on one tracker entry). While
//! every client is connected the example prints the tracker's table, then closes everything,
//! waits for the tracker to drain and prints the totals. Run it with
//! `cargo run -p conntrack-examples --example smol_echo`.

use std::io;
use std::time::Duration;

use conntrack_async_std::{smol::Dialer, Listener};
use conntrack_core::{DialerConfig, ListenerConfig, Tracker};
use smol::future::FutureExt;
use smol::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const CLIENTS: usize = 3;

fn print_table(tracker: &Tracker) {
    println!(
        "{:>4}  {:<8} {:<6} {:<21} {:<21} {:>9} {:>6} {:>6}",
        "id", "category", "role", "local", "remote", "age", "read", "write"
    );
    for c in tracker.connections() {
        println!(
            "{:>4}  {:<8} {:<6} {:<21} {:<21} {:>9.1?} {:>6} {:>6}",
            c.id,
            c.category,
            c.role,
            c.local_addr,
            c.remote_addr,
            c.established_for,
            c.read_bytes,
            c.write_bytes
        );
    }
}

async fn run() -> io::Result<()> {
    let tracker = Tracker::new();
    let listener = Listener::new(
        &tracker,
        smol::net::TcpListener::bind("127.0.0.1:0").await?,
        ListenerConfig::new().category("echo").on_close(|ev| {
            println!(
                "closed {} after {:?}",
                ev.connection.id, ev.connection.established_for
            );
        }),
    );
    let port = listener.get_ref().local_addr()?.port();

    // The server: accepts CLIENTS connections and echoes each until its client hangs up.
    let server = smol::spawn(async move {
        let mut handlers = Vec::new();
        for _ in 0..CLIENTS {
            let (stream, _peer) = listener.accept().await?;
            let mut writer = stream.clone();
            handlers.push(smol::spawn(async move {
                smol::io::copy(stream, &mut writer).await
            }));
        }
        for h in handlers {
            h.await?;
        }
        io::Result::Ok(())
    });

    let dialer = Dialer::new(
        &tracker,
        DialerConfig::new().category("client").on_dns_done(|ev| {
            println!(
                "resolved {} to {:?} in {:?}",
                ev.host, ev.addrs, ev.duration
            );
        }),
    );
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let mut stream = dialer.connect(&format!("localhost:{port}")).await?;
        stream
            .write_all(format!("hello from client {i}\n").as_bytes())
            .await?;
        let mut line = String::new();
        BufReader::new(stream.clone()).read_line(&mut line).await?;
        print!("echoed: {line}");
        clients.push(stream);
    }

    println!();
    print_table(&tracker);
    println!();

    drop(clients); // the echo tasks see end of stream and finish
    server.await?;
    tracker.drained().await;

    let total = tracker.stats().total();
    println!(
        "\ntotals: opened {} closed {} read {} B written {} B",
        total.opened, total.closed, total.read_bytes, total.write_bytes
    );
    Ok(())
}

fn main() -> io::Result<()> {
    smol::block_on(run().or(async {
        smol::Timer::after(Duration::from_secs(30)).await;
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "example did not finish",
        ))
    }))
}
