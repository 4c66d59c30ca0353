//! Micro-benchmarks of conntrack-core: registration, the I/O hot path, snapshots and memory.
//!
//! Run with `cargo xtask bench` (or `cargo bench -p conntrack-core --bench core`). The heap
//! columns come from divan's counting allocator: `alloc` bytes per `register` is the memory a
//! tracked connection costs.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};

use conntrack_core::{Connection, Hook, ListenerConfig, ReadEvent, Registration, Tracker};
use divan::{AllocProfiler, Bencher};

#[global_allocator]
static ALLOC: AllocProfiler = AllocProfiler::system();

fn main() {
    println!(
        "size_of::<ConnectionInfo>() = {} bytes",
        std::mem::size_of::<conntrack_core::ConnectionInfo>()
    );
    divan::main();
}

/// A registration as a listener makes it: addresses plus the config's category and hooks
/// (shared, so no per-connection allocation for them).
fn reg(i: u16) -> Registration {
    static CONFIG: std::sync::OnceLock<ListenerConfig> = std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| ListenerConfig::new().category("bench"));
    Registration::server(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 10_000 + i % 50_000)),
    )
    .listener_config(config)
}

/// A per-I/O hook that does almost nothing, to price the dynamic call itself.
struct CountReads(std::sync::atomic::AtomicU64);

impl Hook for CountReads {
    fn on_read(&self, ev: &ReadEvent<'_>) {
        self.0
            .fetch_add(ev.n as u64, std::sync::atomic::Ordering::Relaxed);
    }
    fn wants_io_events(&self) -> bool {
        true
    }
}

/// Registration plus close, one connection at a time, with no history and with the default
/// history of closed connections; `threads = 2` runs two threads registering and closing on
/// the same tracker at once (time is per operation per thread).
#[divan::bench(threads = [1, 2], args = [0, 64], sample_size = 256)]
fn register_close(b: Bencher<'_, '_>, history: usize) {
    let tracker = Tracker::builder().history(history).build();
    b.bench(|| {
        let c = tracker.register(reg(1));
        black_box(&c);
        drop(c);
    });
}

/// What the ready exporters cost per connection: register + close with no hook, with a hook
/// that does nothing (`NoopHook`: what building the accept and close records costs, which any
/// hook pays), with `MetricsHook` recording into a real Prometheus recorder (the connection-duration
/// histogram), with `TracingHook` under a `tracing_subscriber` registry at DEBUG (a span
/// opened at accept and closed, two events), and with both. Connections come from
/// `Tracker::accepted`, as a listener makes them, so `on_accept` fires.
#[cfg(all(feature = "metrics", feature = "tracing"))]
#[divan::bench(args = ["none", "noop", "metrics", "tracing", "both"], sample_size = 256)]
fn accept_close_with_exporters(b: Bencher<'_, '_>, hooks: &str) {
    use conntrack_core::metrics::MetricsHook;
    use conntrack_core::tracing::TracingHook;
    use conntrack_core::Addr;
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        metrics::set_global_recorder(recorder).expect("recorder");
        use tracing_subscriber::layer::SubscriberExt;
        tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(tracing_subscriber::filter::LevelFilter::DEBUG),
        )
        .expect("subscriber");
    });
    let mut builder = Tracker::builder().history(0);
    if hooks == "noop" {
        builder = builder.hook(conntrack_core::NoopHook);
    }
    if hooks == "metrics" || hooks == "both" {
        builder = builder.hook(MetricsHook::new());
    }
    if hooks == "tracing" || hooks == "both" {
        builder = builder.hook(TracingHook::new());
    }
    let tracker = builder.build();
    let config = ListenerConfig::new().category("bench");
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 8080));
    let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 10_000));
    b.bench(|| {
        let c = tracker.accepted(&config, Addr::Inet(listen), Addr::Inet(peer));
        black_box(&c);
        drop(c);
    });
}

/// The memory one tracked connection holds while it is live: the `alloc` columns of this
/// bench are the heap bytes per connection (entry, registry slot amortised).
#[divan::bench]
fn register_only(b: Bencher<'_, '_>) {
    let tracker = Tracker::new();
    let mut keep: Vec<Connection> = Vec::with_capacity(1 << 20);
    b.bench_local(|| keep.push(tracker.register(reg(1))));
}

#[divan::bench]
fn record_read_no_hook(b: Bencher<'_, '_>) {
    let tracker = Tracker::new();
    let conn = tracker.register(reg(1));
    b.bench(|| conn.record_read(black_box(1500)));
}

#[divan::bench]
fn record_read_one_io_hook(b: Bencher<'_, '_>) {
    let tracker = Tracker::builder().hook(CountReads(0.into())).build();
    let conn = tracker.register(reg(1));
    b.bench(|| conn.record_read(black_box(1500)));
}

#[divan::bench(args = [10_000, 100_000], sample_count = 20)]
fn snapshot(b: Bencher<'_, '_>, n: usize) {
    let tracker = Tracker::new();
    let conns: Vec<Connection> = (0..n)
        .map(|i| tracker.register(reg(u16::try_from(i % 60_000).unwrap())))
        .collect();
    for (i, c) in conns.iter().enumerate() {
        c.record_read(i);
    }
    b.bench(|| black_box(tracker.connections()));
    drop(conns);
}

/// The same snapshot into a reused buffer (`Tracker::connections_into`).
#[divan::bench(args = [10_000, 100_000], sample_count = 20)]
fn snapshot_into(b: Bencher<'_, '_>, n: usize) {
    let tracker = Tracker::new();
    let conns: Vec<Connection> = (0..n)
        .map(|i| tracker.register(reg(u16::try_from(i % 60_000).unwrap())))
        .collect();
    let mut buf = Vec::new();
    tracker.connections_into(&mut buf);
    b.bench_local(|| {
        tracker.connections_into(&mut buf);
        black_box(buf.len())
    });
    drop(conns);
}

#[divan::bench(args = [10_000], sample_count = 20)]
fn stats(b: Bencher<'_, '_>, n: usize) {
    let tracker = Tracker::new();
    let conns: Vec<Connection> = (0..n)
        .map(|i| tracker.register(reg(u16::try_from(i % 60_000).unwrap())))
        .collect();
    b.bench(|| black_box(tracker.stats()));
    drop(conns);
}

/// A tracker holding `live` open connections and `categories` categories (one connection was
/// opened and closed in each), and the registration the flat-cost benches use (category
/// `"bench"`, which exists too).
fn loaded(live: usize, categories: usize) -> (Tracker, Vec<Connection>) {
    let tracker = Tracker::builder().history(0).build();
    for i in 1..categories {
        drop(
            tracker.register(
                Registration::new(conntrack_core::Role::Server).category(format!("c{i}")),
            ),
        );
    }
    let conns = (0..live)
        .map(|i| tracker.register(reg(u16::try_from(i % 60_000).unwrap())))
        .collect();
    (tracker, conns)
}

/// Flat cost: register + close with 10 and with 10,000 other connections live (the ratio of
/// the two lines is the flat-cost figure in docs/benchmarks.md).
#[divan::bench(args = [10, 10_000], sample_size = 256)]
fn flat_register_close_live(b: Bencher<'_, '_>, live: usize) {
    let (tracker, conns) = loaded(live, 1);
    b.bench(|| {
        let c = tracker.register(reg(1));
        black_box(&c);
        drop(c);
    });
    drop(conns);
}

/// Flat cost: register + close in one category of 1 and of 10,000.
#[divan::bench(args = [1, 10_000], sample_size = 256)]
fn flat_register_close_categories(b: Bencher<'_, '_>, categories: usize) {
    let (tracker, conns) = loaded(0, categories);
    b.bench(|| {
        let c = tracker.register(reg(1));
        black_box(&c);
        drop(c);
    });
    drop(conns);
}

/// Flat cost: `record_read` with 10 and with 10,000 connections live.
#[divan::bench(args = [10, 10_000])]
fn flat_record_read_live(b: Bencher<'_, '_>, live: usize) {
    let (tracker, conns) = loaded(live, 1);
    let conn = tracker.register(reg(1));
    b.bench(|| conn.record_read(black_box(1500)));
    drop(conns);
}

/// Flat cost: `record_read` with 1 and with 10,000 categories.
#[divan::bench(args = [1, 10_000])]
fn flat_record_read_categories(b: Bencher<'_, '_>, categories: usize) {
    let (tracker, _conns) = loaded(0, categories);
    let conn = tracker.register(reg(1));
    b.bench(|| conn.record_read(black_box(1500)));
}

/// Adding a category: registering (and closing) a connection in a category never seen, in a
/// tracker that already has 10 or 10,000 (each sample adds new ones).
#[divan::bench(args = [10, 10_000], sample_size = 64)]
fn flat_new_category(b: Bencher<'_, '_>, categories: usize) {
    let (tracker, _conns) = loaded(0, categories);
    let mut next = 0u64;
    b.with_inputs(|| {
        next += 1;
        format!("new{next}")
    })
    .bench_local_values(|name| {
        drop(tracker.register(Registration::new(conntrack_core::Role::Server).category(name)));
    });
}

/// `stats()` with 10 and with 10,000 connections live (one category): it adds the live
/// connections' bytes, so it grows with them (see docs/benchmarks.md).
#[divan::bench(args = [10, 10_000], sample_count = 50)]
fn flat_stats_live(b: Bencher<'_, '_>, live: usize) {
    let (tracker, conns) = loaded(live, 1);
    b.bench(|| black_box(tracker.stats()));
    drop(conns);
}

/// A snapshot of 10,000 connections on real loopback TCP sockets (5,000 connected pairs, both
/// ends tracked), with and without their kernel TCP statistics (`watch_tcp_info`): the
/// difference is one `getsockopt(TCP_INFO)` per connection. Run side by side; the ratio
/// with/without is reported in `docs/benchmarks.md`.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[divan::bench(args = ["without", "with"], sample_count = 20)]
fn snapshot_tcp_info(b: Bencher<'_, '_>, mode: &str) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let tracker = Tracker::new();
    let mut sockets = Vec::new();
    let mut conns = Vec::new();
    let mut guards = Vec::new();
    for _ in 0..5_000 {
        let client = std::net::TcpStream::connect(addr).unwrap();
        let (server, _) = listener.accept().unwrap();
        for s in [client, server] {
            let c = tracker.register(Registration::server(
                s.local_addr().unwrap(),
                s.peer_addr().unwrap(),
            ));
            if mode == "with" {
                guards.push(c.watch_tcp_info(&s));
            }
            conns.push(c);
            sockets.push(s);
        }
    }
    b.bench(|| black_box(tracker.connections()));
    drop(guards);
    drop(conns);
    drop(sockets);
}
