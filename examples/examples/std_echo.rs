//! A blocking echo server and its clients on loopback, tracked with `conntrack-std`.
//!
//! The server echoes each connection on its own thread (reading through one handle and
//! writing through a `try_clone` of it: both count on one tracker entry). While every client
//! is connected the example prints the tracker's table, then closes everything and prints the
//! totals. Run it with `cargo run -p conntrack-examples --example std_echo`.

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpListener;
use std::thread;

use conntrack_core::{DialerConfig, ListenerConfig, Tracker};
use conntrack_std::{Dialer, Listener};

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

fn main() -> io::Result<()> {
    let tracker = Tracker::new();
    let listener = Listener::new(
        &tracker,
        TcpListener::bind("127.0.0.1:0")?,
        ListenerConfig::new().category("echo").on_close(|ev| {
            println!(
                "closed {} after {:?}",
                ev.connection.id, ev.connection.established_for
            );
        }),
    );
    let port = listener.get_ref().local_addr()?.port();

    // The server: accepts CLIENTS connections and echoes each until its client hangs up.
    let server = thread::spawn(move || -> io::Result<()> {
        let mut handlers = Vec::new();
        for stream in listener.incoming().take(CLIENTS) {
            let mut writer = stream?;
            let mut reader = writer.try_clone()?;
            handlers.push(thread::spawn(move || io::copy(&mut reader, &mut writer)));
        }
        for h in handlers {
            h.join().expect("echo thread")?;
        }
        Ok(())
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
        let mut stream = dialer.connect(format!("localhost:{port}"))?;
        writeln!(stream, "hello from client {i}")?;
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line)?;
        print!("echoed: {line}");
        clients.push(stream);
    }

    println!();
    print_table(&tracker);
    println!();

    drop(clients); // the echo threads see end of stream and finish
    server.join().expect("server thread")?;
    assert!(tracker.is_empty());

    let total = tracker.stats().total();
    println!(
        "\ntotals: opened {} closed {} read {} B written {} B",
        total.opened, total.closed, total.read_bytes, total.write_bytes
    );
    Ok(())
}
