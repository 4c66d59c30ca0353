//! Go conntrack's README example, in Rust: a tracked listener serving HTTP, a tracked client,
//! and the connection table printed the way the Go README's loop prints it.
//!
//! ```text
//! cargo run -p conntrack-examples --example quickstart
//! ```

use std::future::IntoFuture;

use axum::{routing::get, Router};
use conntrack_core::{DialerConfig, ListenerConfig, Tracker};
use conntrack_tokio::{Dialer, Listener};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // First, create a tracker.
    let tracker = Tracker::new();

    // To track incoming connections to a server, wrap its listener.
    let base = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = base.local_addr()?;
    let listener = Listener::new(
        &tracker,
        base,
        ListenerConfig::new()
            .category("optional-category")
            .on_accept(|ev| println!("accepted {:?}", ev.connection.map(|c| c.id)))
            .on_close(|ev| {
                println!(
                    "closed {} after {:?}",
                    ev.connection.id, ev.connection.established_for
                );
            }),
    );
    let app = Router::new().route("/", get(|| async { "hello from a tracked server\n" }));
    tokio::spawn(axum::serve(listener, app).into_future());

    // To track outgoing connections from a client, use a tracked dialer as its connector.
    let dialer = Dialer::new(
        &tracker,
        DialerConfig::new()
            .category("optional-category")
            .on_dial(|ev| {
                println!(
                    "dialed {} in {:?}, error {:?}",
                    ev.target, ev.duration, ev.error
                );
            }),
    );
    let client: Client<Dialer, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(dialer);
    for _ in 0..3 {
        // The client pools its connections and reuses one once it is back in the pool.
        let res = client.get(format!("http://{addr}/").parse()?).await?;
        let body = res.into_body().collect().await?.to_bytes();
        print!("{}", String::from_utf8_lossy(&body));
    }

    // The tracker keeps metadata for each active connection.
    let infos = tracker.connections();
    for (i, info) in infos.iter().enumerate() {
        println!("{}/{}", i + 1, infos.len());
        println!(" Category:       {}", info.category);
        println!(" ClientServer:   {}", info.role);
        println!(" LocalAddr:      {}", info.local_addr);
        println!(" RemoteAddr:     {}", info.remote_addr);
        println!(" EstablishedFor: {:?}", info.established_for);
        println!(" ReadBytes:      {}", info.read_bytes);
        println!(" WriteBytes:     {}", info.write_bytes);
    }
    Ok(())
}
