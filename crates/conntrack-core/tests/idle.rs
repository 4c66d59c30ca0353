//! Zero cost at rest: a process holding idle tracked connections uses no CPU and makes no
//! wake-ups on the tracker's account, and runs no thread of ours.
//!
//! The test re-runs this test binary as child processes, each holding its connections and
//! then blocking on a read of its standard input: one untracked (the baseline), one with one
//! tracked connection (a real Unix socket pair that has seen I/O), one with 10,000 tracked
//! connections over 10,000 categories (registered on in-memory registrations, plus the socket
//! pair: the machine's file limit would not hold 10,000 socket pairs). Side by side, over the
//! same window of a few seconds, the parent reads each child's CPU time and voluntary context
//! switches from `/proc/PID/stat` and `/proc/PID/status` and its threads' names from
//! `/proc/PID/task/*/comm`, then closes their standard input so they exit.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use conntrack_core::{Registration, Role, Tracker};

const CHILD_ENV: &str = "CONNTRACK_IDLE_CHILD";
/// What a child prints once it holds its connections.
const READY: &str = "idle-child-ready";
/// How long the children are watched: long enough for a 1 ms ticker to show thousands of
/// wake-ups, short enough for a test.
const WINDOW: Duration = Duration::from_secs(3);

/// What a child process runs (selected by `CONNTRACK_IDLE_CHILD`): hold `n` connections (0:
/// no tracker at all), say it is ready, block until standard input closes.
fn child(n: usize) {
    let (mut a, mut b) = UnixStream::pair().expect("socketpair");
    // Traffic on the pair before going idle, as a real connection would have.
    a.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    b.read_exact(&mut buf).unwrap();
    let tracker = (n > 0).then(Tracker::new);
    let mut held = Vec::new();
    if let Some(tracker) = &tracker {
        let conn = tracker.register(Registration::new(Role::Server).category("pair"));
        conn.record_write(4);
        conn.record_read(4);
        held.push(conn);
        for i in 1..n {
            let conn = tracker.register(Registration::new(Role::Client).category(format!("c{i}")));
            conn.record_read(1);
            held.push(conn);
        }
        assert_eq!(tracker.len(), n);
    }
    println!("{READY}");
    std::io::stdout().flush().unwrap();
    // Idle: one blocking read, until the parent closes our standard input.
    let mut rest = Vec::new();
    std::io::stdin().read_to_end(&mut rest).unwrap();
    drop(held);
    drop((a, b));
}

/// CPU time (user + system, clock ticks) and voluntary context switches of a whole process.
#[derive(Debug, Clone, Copy)]
struct Usage {
    cpu_ticks: u64,
    voluntary: u64,
}

fn usage(pid: u32) -> Usage {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start at field 3; utime and stime
    // are fields 14 and 15.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let cpu_ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // voluntary_ctxt_switches of the process: the sum over its threads.
    let mut voluntary = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        voluntary += status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap();
    }
    Usage {
        cpu_ticks,
        voluntary,
    }
}

fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|t| {
            std::fs::read_to_string(t.unwrap().path().join("comm"))
                .unwrap()
                .trim()
                .to_owned()
        })
        .collect()
}

fn spawn(n: usize) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "idle_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, n.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the child's word (the harness prints its own text around it, on the same line).
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    loop {
        let line = lines
            .next()
            .expect("the child says ready before exiting")
            .unwrap();
        if line.contains(READY) {
            break;
        }
    }
    // Keep the pipe open (dropping it could fail the child's final prints).
    std::mem::forget(lines);
    child
}

/// Not a test of its own: the body of the child processes (does nothing when run directly).
#[test]
fn idle_child() {
    if let Ok(n) = std::env::var(CHILD_ENV) {
        child(n.parse().unwrap());
    }
}

#[test]
fn idle_tracked_connections_cost_nothing() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let sizes = [0, 1, 10_000];
    let mut children: Vec<Child> = sizes.iter().map(|&n| spawn(n)).collect();
    let before: Vec<Usage> = children.iter().map(|c| usage(c.id())).collect();
    // The passage of time is the scenario: the children sit idle for the window.
    std::thread::sleep(WINDOW);
    let after: Vec<Usage> = children.iter().map(|c| usage(c.id())).collect();
    let names: Vec<Vec<String>> = children.iter().map(|c| thread_names(c.id())).collect();
    for c in &mut children {
        drop(c.stdin.take());
    }
    for c in &mut children {
        assert!(c.wait().unwrap().success());
    }

    let delta: Vec<(u64, u64)> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a.cpu_ticks - b.cpu_ticks, a.voluntary - b.voluntary))
        .collect();
    eprintln!("over {WINDOW:?}: (cpu ticks, voluntary switches) untracked {:?}, 1 tracked {:?}, 10k tracked {:?}; threads {names:?}", delta[0], delta[1], delta[2]);
    let (base_cpu, base_switches) = delta[0];
    for (i, &(cpu, switches)) in delta.iter().enumerate().skip(1) {
        // Slack: one clock tick of CPU time (10 ms at USER_HZ 100) and a few switches (page
        // reclaim, the kernel migrating a task): a 1 ms ticker would show ~3,000 switches.
        assert!(
            cpu <= base_cpu + 1,
            "{} tracked: {cpu} ticks of CPU vs {base_cpu} untracked",
            sizes[i]
        );
        assert!(
            switches <= base_switches + 3,
            "{} tracked: {switches} voluntary switches vs {base_switches} untracked",
            sizes[i]
        );
        assert_eq!(
            names[i].len(),
            names[0].len(),
            "as many threads as untracked: {:?} vs {:?}",
            names[i],
            names[0]
        );
        assert!(
            !names[i].iter().any(|n| n.contains("conntrack")),
            "no thread of ours: {:?}",
            names[i]
        );
    }
}
