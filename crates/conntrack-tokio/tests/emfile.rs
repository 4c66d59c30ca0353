//! Descriptor exhaustion: when `accept` fails with EMFILE, the listener reports and counts it,
//! the axum and tonic accept loops back off instead of spinning, and serving resumes once
//! descriptors free up.
//!
//! Each scenario runs in a child process (this same test binary, re-run with one test selected)
//! whose `RLIMIT_NOFILE` is lowered by the shell's `ulimit`, so the parent's limit is untouched.
#![cfg(all(unix, any(feature = "axum", feature = "tonic")))]

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use conntrack_core::{ListenerConfig, Role, Tracker};
use conntrack_tokio::Listener;

const CHILD: &str = "CONNTRACK_EMFILE_CHILD";
const LIMIT: u32 = 64;

/// Runs `test` in a child process with `LIMIT` descriptors and checks that it printed `ok`.
fn in_child(test: &str) {
    let exe = std::env::current_exe().unwrap();
    let cmd = format!(
        "ulimit -n {LIMIT} && exec \"{}\" --exact {test} --nocapture --test-threads=1",
        exe.display()
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .env(CHILD, "1")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("emfile-child: ok"),
        "child did not run the scenario:\n{stdout}\n{stderr}"
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A listener on loopback whose `on_accept` counts EMFILE failures (and asserts that every
/// failure is one), and the descriptors of the process filled with clients queued on it: each
/// queued connection then needs one more descriptor to be accepted, which the process does not
/// have.
async fn exhausted(
    accepted: tokio::sync::mpsc::UnboundedSender<()>,
) -> (
    Listener<tokio::net::TcpListener>,
    Tracker,
    Arc<AtomicU64>,
    Vec<tokio::net::TcpStream>,
) {
    let failures = Arc::new(AtomicU64::new(0));
    let f = Arc::clone(&failures);
    let tracker = Tracker::new();
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = inner.local_addr().unwrap();
    let config = ListenerConfig::new()
        .category("api")
        .on_accept(move |ev| match ev.error {
            Some(e) => {
                assert_eq!(e.raw_os_error(), Some(24), "EMFILE: {e}");
                f.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                let _ = accepted.send(());
            }
        });
    let listener = Listener::new(&tracker, inner, config);
    let mut clients = Vec::new();
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(c) => clients.push(c),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(24), "{e}");
                break;
            }
        }
        assert!(clients.len() < LIMIT as usize, "the limit did not apply");
    }
    (listener, tracker, failures, clients)
}

#[cfg(feature = "axum")]
#[test]
fn accept_under_descriptor_exhaustion() {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    in_child("accept_under_descriptor_exhaustion");
}

#[cfg(feature = "axum")]
fn child() {
    runtime().block_on(async {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let (mut listener, tracker, failures, mut clients) = exhausted(tx).await;

        // The plain accept returns EMFILE unchanged, reported and counted.
        let err = listener
            .accept()
            .await
            .expect_err("no descriptor left to accept with");
        assert_eq!(err.raw_os_error(), Some(24));
        assert_eq!(failures.load(Ordering::Relaxed), 1);
        assert_eq!(tracker.stats().get("api", Role::Server).unwrap().failed, 1);

        // axum's accept cannot fail: it retries, pausing after descriptor errors. Over a window
        // of 500 ms it reports a handful of failures, not thousands (no busy loop).
        let before = failures.load(Ordering::Relaxed);
        let retried = tokio::time::timeout(Duration::from_millis(500), async {
            axum::serve::Listener::accept(&mut listener).await
        })
        .await;
        assert!(
            retried.is_err(),
            "nothing can be accepted while descriptors are exhausted"
        );
        let during = failures.load(Ordering::Relaxed) - before;
        assert!(
            (1..=10).contains(&during),
            "{during} failures in 500 ms: the accept loop spun"
        );

        // Free descriptors: serving resumes.
        clients.truncate(clients.len() - 4);
        let (stream, _) = listener.accept().await.expect("accept works again");
        assert_eq!(tracker.len(), 1);
        drop(stream);
        assert!(tracker.is_empty());
        println!(
            "emfile-child: ok ({} failures reported, {during} during the retry window)",
            failures.load(Ordering::Relaxed)
        );
    });
}

#[cfg(feature = "tonic")]
#[test]
fn tonic_under_descriptor_exhaustion() {
    if std::env::var_os(CHILD).is_some() {
        return tonic_child();
    }
    in_child("tonic_under_descriptor_exhaustion");
}

/// tonic's serve loop polls its incoming stream again at once after an error; the stream
/// pauses after EMFILE so that loop does not spin, and serving resumes once descriptors free up.
#[cfg(feature = "tonic")]
fn tonic_child() {
    use std::convert::Infallible;

    runtime().block_on(async {
        let (tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
        let (listener, tracker, failures, mut clients) = exhausted(tx).await;
        let svc = tower::service_fn(|_req: http::Request<tonic::body::Body>| async {
            Ok::<_, Infallible>(http::Response::new(tonic::body::Body::empty()))
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder().serve_with_incoming_shutdown(
                svc,
                listener.incoming(),
                async move {
                    let _ = stop_rx.await;
                },
            ),
        );

        // Over a window of 500 ms the server's accept loop reports a handful of failures, not
        // thousands (no busy loop). The window ends early if anything is accepted.
        let window = tokio::time::timeout(Duration::from_millis(500), accepted.recv()).await;
        assert!(
            window.is_err(),
            "nothing can be accepted while descriptors are exhausted"
        );
        let during = failures.load(Ordering::Relaxed);
        assert!(
            (1..=10).contains(&during),
            "{during} failures in 500 ms: the accept loop spun"
        );

        // Free descriptors: serving resumes (the queued clients are accepted).
        clients.truncate(clients.len() - 4);
        tokio::time::timeout(Duration::from_secs(10), accepted.recv())
            .await
            .expect("accepting resumes")
            .expect("the hook lives");
        let stats = tracker.stats();
        let api = stats.get("api", Role::Server).unwrap();
        assert!(api.opened >= 1);
        assert_eq!(
            api.failed,
            failures.load(Ordering::Relaxed),
            "every failure counted"
        );

        // Stop: the server's connections go, and nothing is left in the tracker.
        drop(clients);
        let _ = stop_tx.send(());
        server.await.unwrap().unwrap();
        tokio::time::timeout(Duration::from_secs(10), tracker.drained())
            .await
            .expect("drained");
        println!(
            "emfile-child: ok ({} failures reported, {during} during the window)",
            failures.load(Ordering::Relaxed)
        );
    });
}
