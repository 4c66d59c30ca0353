//! A `DialerConfig`'s connection limit holds through every hyper connector given the config
//! (`Dialer`, `TrackedConnector`, the HTTPS connector): in reject mode a dial past the limit
//! fails with `ResourceBusy` and is counted, without connecting; in wait mode it waits for a
//! slot and connects once one is free.
#![cfg(all(feature = "hyper", feature = "tls"))]

use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use conntrack_core::{DialerConfig, LimitMode, Role, Tracker};
use conntrack_tokio::hyper::HttpsConnector;
use conntrack_tokio::{Dialer, TrackedConnector};
use http::Uri;
use tower_service::Service;

const WAIT: Duration = Duration::from_secs(10);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A listener on loopback that accepts and keeps every connection until the test ends;
/// returns its URI and a count of the connections it accepted.
async fn holding_server() -> (Uri, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(s);
        }
    });
    (format!("http://{addr}/").parse().unwrap(), accepted)
}

async fn dial<S, R>(svc: &mut S, uri: &Uri) -> Result<R, BoxError>
where
    S: Service<Uri, Response = R, Error = BoxError>,
{
    poll_fn(|cx| svc.poll_ready(cx)).await?;
    svc.call(uri.clone()).await
}

fn config(category: &str, mode: LimitMode) -> DialerConfig {
    DialerConfig::new()
        .category(category)
        .max_connections(1)
        .limit_mode(mode)
}

/// Reject mode: the second dial fails with `ResourceBusy` before connecting and is counted;
/// the first one's slot serves a third dial once the first connection is gone.
async fn rejects<S, R>(tracker: &Tracker, category: &str, mut svc: S, uri: &Uri)
where
    S: Service<Uri, Response = R, Error = BoxError>,
{
    let first = dial(&mut svc, uri).await.expect("first dial");
    assert_eq!(tracker.len(), 1);
    let err = dial(&mut svc, uri)
        .await
        .err()
        .expect("a second connection past max_connections(1)");
    let io = err
        .downcast_ref::<io::Error>()
        .unwrap_or_else(|| panic!("{category}: not an io::Error: {err}"));
    assert_eq!(io.kind(), io::ErrorKind::ResourceBusy, "{category}: {io}");
    assert_eq!(
        tracker.len(),
        1,
        "{category}: the refused dial is not tracked"
    );
    let stats = tracker.stats();
    let s = stats.get(category, Role::Client).expect("counted");
    assert_eq!((s.opened, s.rejected), (1, 1), "{category}: {s:?}");
    drop(first);
    let third = dial(&mut svc, uri).await.expect("the slot is free again");
    drop(third);
}

/// Wait mode: the second dial waits (it has not connected: the server saw one connection)
/// until the first connection closes, then connects.
async fn waits<S, R>(
    tracker: &Tracker,
    category: &str,
    mut svc: S,
    uri: &Uri,
    accepted: &std::sync::atomic::AtomicUsize,
) where
    S: Service<Uri, Response = R, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
    R: Send + 'static,
{
    let first = dial(&mut svc, uri).await.expect("first dial");
    let mut second_svc = svc.clone();
    let second_uri = uri.clone();
    let second = tokio::spawn(async move { dial(&mut second_svc, &second_uri).await.is_ok() });
    // The waiting dial must not finish (or connect) while the first holds the only slot.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!second.is_finished(), "{category}: did not wait for a slot");
    assert!(
        accepted.load(std::sync::atomic::Ordering::SeqCst) <= 1,
        "{category}: the waiting dial connected before it had a slot"
    );
    assert_eq!(tracker.len(), 1, "{category}");
    drop(first);
    let ok = tokio::time::timeout(WAIT, second)
        .await
        .unwrap_or_else(|_| panic!("{category}: the waiting dial never got the freed slot"))
        .unwrap();
    assert!(ok, "{category}: the waiting dial failed");
    // Connected once admitted (the server's accept loop may count it a moment later).
    let deadline = std::time::Instant::now() + WAIT;
    while accepted.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "{category}: the second connection never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = tracker.stats();
    let s = stats.get(category, Role::Client).expect("counted");
    assert_eq!(s.rejected, 0, "{category}: {s:?}");
}

fn https(tracker: &Tracker, config: DialerConfig) -> HttpsConnector {
    let tls = conntrack_testkit::tls::self_signed(&["localhost"], rustls::DEFAULT_VERSIONS).1;
    HttpsConnector::new(tracker, config, Arc::new(tls))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialer_limit_rejects_on_every_connector() {
    let (uri, _) = holding_server().await;
    let t = Tracker::new();
    rejects(
        &t,
        "dialer",
        Dialer::new(&t, config("dialer", LimitMode::Reject)),
        &uri,
    )
    .await;
    let t = Tracker::new();
    let c = TrackedConnector::new(&t, config("connector", LimitMode::Reject));
    rejects(&t, "connector", c, &uri).await;
    let t = Tracker::new();
    rejects(
        &t,
        "https",
        https(&t, config("https", LimitMode::Reject)),
        &uri,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialer_limit_waits_on_every_connector() {
    // A server of its own for each connector: it counts that connector's connections.
    let (uri, accepted) = holding_server().await;
    let t = Tracker::new();
    let d = Dialer::new(&t, config("dialer", LimitMode::Wait));
    waits(&t, "dialer", d, &uri, &accepted).await;
    let (uri, accepted) = holding_server().await;
    let t = Tracker::new();
    let c = TrackedConnector::new(&t, config("connector", LimitMode::Wait));
    waits(&t, "connector", c, &uri, &accepted).await;
    let (uri, accepted) = holding_server().await;
    let t = Tracker::new();
    let h = https(&t, config("https", LimitMode::Wait));
    waits(&t, "https", h, &uri, &accepted).await;
}
