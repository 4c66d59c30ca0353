//! Descriptor exhaustion: when `accept` fails with EMFILE, the listener reports and counts it,
//! the axum accept loop backs off instead of spinning, and serving resumes once descriptors
//! free up.
//!
//! The scenario runs in a child process (this same test binary, re-run with one test selected)
//! whose `RLIMIT_NOFILE` is lowered by the shell's `ulimit`, so the parent's limit is untouched.
#![cfg(all(unix, feature = "axum"))]

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use conntrack_core::{ListenerConfig, Role, Tracker};
use conntrack_tokio::Listener;

const CHILD: &str = "CONNTRACK_EMFILE_CHILD";
const LIMIT: u32 = 64;

#[test]
fn accept_under_descriptor_exhaustion() {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    let exe = std::env::current_exe().unwrap();
    let cmd = format!(
        "ulimit -n {LIMIT} && exec \"{}\" --exact accept_under_descriptor_exhaustion --nocapture --test-threads=1",
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

fn child() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let failures = Arc::new(AtomicU64::new(0));
        let f = Arc::clone(&failures);
        let tracker = Tracker::new();
        let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let config = ListenerConfig::new().category("api").on_accept(move |ev| {
            if let Some(e) = ev.error {
                assert_eq!(e.raw_os_error(), Some(24), "EMFILE: {e}");
                f.fetch_add(1, Ordering::Relaxed);
            }
        });
        let mut listener = Listener::new(&tracker, inner, config);

        // Fill the descriptor table with client sockets; each queued connection then needs one
        // more descriptor to be accepted, which the process does not have.
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
