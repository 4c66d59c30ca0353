//! Descriptor exhaustion through `TrackedConnector`: hyper-util's connector fails to make a
//! socket with EMFILE, and the dial hooks see that OS error (code 24, `error.type`
//! `os_error_24`), not a rebuilt `Other`.
//!
//! As in `emfile.rs`, the scenario runs in a child process (this test binary, re-run with one
//! test selected) whose `RLIMIT_NOFILE` is lowered by the shell's `ulimit`.
#![cfg(all(unix, feature = "hyper"))]

use std::process::Command;
use std::sync::{Arc, Mutex};

use conntrack_core::{DialerConfig, Role, Tracker};
use conntrack_tokio::TrackedConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tower::ServiceExt;

const CHILD: &str = "CONNTRACK_EMFILE_CONNECTOR_CHILD";
const LIMIT: u32 = 64;

#[test]
fn connector_dial_under_descriptor_exhaustion() {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    let exe = std::env::current_exe().unwrap();
    let cmd = format!(
        "ulimit -n {LIMIT} && exec \"{}\" --exact connector_dial_under_descriptor_exhaustion --nocapture --test-threads=1",
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
        stdout.contains("emfile-connector-child: ok"),
        "child did not run the scenario:\n{stdout}\n{stderr}"
    );
}

fn child() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let seen: Arc<Mutex<Vec<Option<i32>>>> = Arc::default();
        let s = Arc::clone(&seen);
        let tracker = Tracker::new();
        let config = DialerConfig::new().category("upstream").on_dial(move |ev| {
            if let Some(e) = ev.error {
                s.lock().unwrap().push(e.raw_os_error());
            }
        });
        let connector = TrackedConnector::wrap(&tracker, HttpConnector::new(), config);
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();

        // Use up the descriptor table, so the connector cannot make its socket.
        let mut hold = Vec::new();
        loop {
            match std::fs::File::open("/dev/null") {
                Ok(f) => hold.push(f),
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(24), "{e}");
                    break;
                }
            }
            assert!(hold.len() < LIMIT as usize, "the limit did not apply");
        }

        let uri: http::Uri = format!("http://{addr}/").parse().unwrap();
        let err = connector
            .oneshot(uri)
            .await
            .expect_err("no descriptor for the socket");
        // The caller gets the connector's own error, which wraps the OS error.
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&*err);
        let mut code = None;
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                code = io.raw_os_error();
                break;
            }
            source = e.source();
        }
        assert_eq!(code, Some(24), "{err}");
        // The hooks see the OS error with its code.
        assert_eq!(*seen.lock().unwrap(), [Some(24)]);
        let stats = tracker.stats();
        let s = stats.get("upstream", Role::Client).unwrap();
        assert_eq!(s.failed, 1);
        assert!(tracker.is_empty());
        drop(hold);
        println!("emfile-connector-child: ok");
    });
}
