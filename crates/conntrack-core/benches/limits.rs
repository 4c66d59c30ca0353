//! Passing a connection limit of 1 with many tasks waiting for it: the cost per task should
//! not depend on how many wait.
//!
//! N tasks on a minimal single-threaded executor (in this file: a FIFO run queue, no runtime)
//! each take the one slot of a `Wait`-mode limit, yield once while holding it (so that every
//! other task is queued behind it), and give it back. Two cases: accepted connections through
//! a `ListenerConfig` limit (`Tracker::admit_waiting`) and dials through a `DialerConfig`
//! limit (`Dial::admit`).
//!
//! Each case has a control run side by side (rounds alternate): the same tasks taking turns
//! through a minimal hand-written FIFO baton (a ticket and a queue of wakers: O(1), one wake-up
//! per turn) and then registering through an *unlimited* config. The control costs what N
//! tasks cost on this executor (their memory, the wake-ups, the registration); the difference
//! is what the limit adds. Once N tasks' memory outgrows the CPU's cache, every task's turn
//! misses it, in both runs alike.
//!
//! Printed per size: the median over the rounds of the CPU time per task (of the one thread
//! that runs everything; each measurement makes and runs 256,000 tasks, N at a time), for the
//! limit and the control, the difference, the polls per task, and the ratios to the smallest
//! size (flat = 1.0).
//!
//! Run with `cargo bench -p conntrack-core --bench limits` (`cargo xtask bench` runs it too).
//! `CONNTRACK_BENCH_QUICK=1` (or `--quick`) runs one round per size instead of 5;
//! `CONNTRACK_LIMITS_N=8000` runs one size.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use conntrack_core::{DialerConfig, ListenerConfig, Tracker};

const SIZES: [usize; 5] = [500, 1_000, 2_000, 4_000, 8_000];

type Task = Pin<Box<dyn Future<Output = ()>>>;

/// The run queue: ids of woken tasks, in wake-up order.
type RunQueue = Arc<Mutex<VecDeque<usize>>>;

/// A task's waker: queues the task once until it is polled.
struct TaskWaker {
    id: usize,
    queued: AtomicBool,
    queue: RunQueue,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::SeqCst) {
            self.queue.lock().unwrap().push_back(self.id);
        }
    }
}

/// The CPU time this thread has run (`/proc/thread-self/schedstat`, in nanoseconds), where
/// the system says. The kernel brings it up to date at its scheduler tick, so a measurement
/// must last many ticks: see [`measure`].
fn thread_cpu_time() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = s.split_whitespace().next()?.parse::<u64>().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Tasks made and run per measurement, whatever N: about 0.2 s of CPU, many scheduler ticks.
const TASKS_PER_MEASUREMENT: usize = 256_000;

/// Runs `case(n)` enough times for [`TASKS_PER_MEASUREMENT`] tasks and returns the CPU time
/// of this thread per task (the wall time where CPU time cannot be read) and the polls per
/// task. The executor runs on this thread alone, so that is the whole cost, free of the time
/// other processes held the CPU. Making the tasks is in it too, alike for every case.
fn measure(case: fn(usize) -> u64, n: usize, smoke: bool) -> (f64, f64) {
    let reps = if smoke {
        1
    } else {
        TASKS_PER_MEASUREMENT.div_ceil(n)
    };
    let wall = Instant::now();
    let cpu = thread_cpu_time();
    let mut polls = 0;
    for _ in 0..reps {
        polls += case(n);
    }
    let spent = match (cpu, thread_cpu_time()) {
        (Some(before), Some(after)) => after.saturating_sub(before),
        _ => wall.elapsed(),
    };
    let tasks = (reps * n) as f64;
    (spent.as_secs_f64() * 1e9 / tasks, polls as f64 / tasks)
}

/// Runs every task to completion, first woken first polled; returns the number of polls.
fn run(mut tasks: Vec<Option<Task>>) -> u64 {
    let n = tasks.len();
    let queue: RunQueue = Arc::new(Mutex::new((0..n).collect()));
    let wakers: Vec<(Arc<TaskWaker>, Waker)> = (0..n)
        .map(|id| {
            let w = Arc::new(TaskWaker {
                id,
                queued: AtomicBool::new(true),
                queue: Arc::clone(&queue),
            });
            (Arc::clone(&w), Waker::from(w))
        })
        .collect();
    let (mut done, mut polls) = (0, 0u64);
    loop {
        let Some(id) = queue.lock().unwrap().pop_front() else {
            break;
        };
        wakers[id].0.queued.store(false, Ordering::SeqCst);
        let Some(task) = tasks[id].as_mut() else {
            continue;
        };
        polls += 1;
        if task
            .as_mut()
            .poll(&mut Context::from_waker(&wakers[id].1))
            .is_ready()
        {
            tasks[id] = None;
            done += 1;
        }
    }
    assert_eq!(done, n, "every task passed the limit");
    polls
}

/// Pending once, waking itself: lets every other task run before this one goes on.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 80))
}

fn remote(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], u16::try_from(1_024 + i).unwrap()))
}

/// N accepted connections through a listener config's limit of 1.
fn connections(n: usize) -> u64 {
    // Shared by the tasks, as a listener's tracker and config are (a clone of the config in
    // every task would add a few hundred bytes to each).
    let shared = Arc::new((
        Tracker::new(),
        ListenerConfig::new().category("bench").max_connections(1),
    ));
    let tasks = (0..n)
        .map(|i| {
            let shared = Arc::clone(&shared);
            let task: Task = Box::pin(async move {
                let (tracker, config) = &*shared;
                let conn = tracker
                    .admit_waiting(config, local(), remote(i))
                    .await
                    .expect("wait mode refuses none");
                yield_now().await;
                drop(conn);
            });
            Some(task)
        })
        .collect();
    let r = run(tasks);
    assert_eq!(shared.1.limited_connections(), 0);
    r
}

/// N dials through a dialer config's limit of 1.
fn dials(n: usize) -> u64 {
    let shared = Arc::new((
        Tracker::new(),
        DialerConfig::new().category("bench").max_connections(1),
    ));
    let tasks = (0..n)
        .map(|_| {
            let shared = Arc::clone(&shared);
            let task: Task = Box::pin(async move {
                let (tracker, config) = &*shared;
                let mut dial = tracker.dial(config, "db.internal:5432");
                dial.admit(config).await.expect("wait mode refuses none");
                yield_now().await;
                drop(dial);
            });
            Some(task)
        })
        .collect();
    let r = run(tasks);
    assert_eq!(shared.1.limited_connections(), 0);
    r
}

/// The control's turn-taking: a ticket per task and a queue of wakers, first come first
/// served, one wake-up per turn (what a limit of 1 does, and nothing else).
#[derive(Default)]
struct Baton(Mutex<(u64, u64, VecDeque<Waker>)>);

impl Baton {
    async fn take(&self) {
        let mut ticket = None;
        std::future::poll_fn(|cx| {
            let mut g = self.0.lock().unwrap();
            let (next, serving, queue) = &mut *g;
            let t = match ticket {
                Some(t) => t,
                None => {
                    // The first poll takes a ticket and, if it must wait, queues this task's
                    // waker (the executor's waker of a task never changes): the queue is in
                    // ticket order, its front the next ticket to serve.
                    let t = *next;
                    *next += 1;
                    ticket = Some(t);
                    if t != *serving {
                        queue.push_back(cx.waker().clone());
                    }
                    t
                }
            };
            if t == *serving {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }

    fn give_back(&self) {
        let w = {
            let mut g = self.0.lock().unwrap();
            g.1 += 1;
            g.2.pop_front()
        };
        if let Some(w) = w {
            w.wake();
        }
    }
}

/// The control of [`connections`]: the baton, then an unlimited config.
fn connections_control(n: usize) -> u64 {
    let shared = Arc::new((
        Tracker::new(),
        ListenerConfig::new().category("bench"),
        Baton::default(),
    ));
    let tasks = (0..n)
        .map(|i| {
            let shared = Arc::clone(&shared);
            let task: Task = Box::pin(async move {
                let (tracker, config, baton) = &*shared;
                baton.take().await;
                let conn = tracker
                    .admit_waiting(config, local(), remote(i))
                    .await
                    .expect("no limit");
                yield_now().await;
                drop(conn);
                baton.give_back();
            });
            Some(task)
        })
        .collect();
    run(tasks)
}

/// The control of [`dials`]: the baton, then an unlimited config.
fn dials_control(n: usize) -> u64 {
    let shared = Arc::new((
        Tracker::new(),
        DialerConfig::new().category("bench"),
        Baton::default(),
    ));
    let tasks = (0..n)
        .map(|_| {
            let shared = Arc::clone(&shared);
            let task: Task = Box::pin(async move {
                let (tracker, config, baton) = &*shared;
                // Made before waiting, as in the limited run: a waiting dial holds its `Dial`.
                let mut dial = tracker.dial(config, "db.internal:5432");
                baton.take().await;
                dial.admit(config).await.expect("no limit");
                yield_now().await;
                drop(dial);
                baton.give_back();
            });
            Some(task)
        })
        .collect();
    run(tasks)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::var_os("CONNTRACK_BENCH_QUICK").is_some()
        || std::env::args().any(|a| a == "--quick");
    // `cargo test --benches` runs this as a smoke test (without `--bench`): once, N = 500.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let rounds = if quick || smoke { 1 } else { 5 };
    let one: Vec<usize> = std::env::var("CONNTRACK_LIMITS_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .into_iter()
        .collect();
    let sizes: &[usize] = if !one.is_empty() {
        &one
    } else if smoke {
        &SIZES[..1]
    } else {
        &SIZES
    };
    println!(
        "conntrack-core limits: N tasks through a Wait-mode limit of 1 vs the same tasks through a minimal FIFO baton (control), per task, median of {rounds} alternating round(s)"
    );
    type Case = fn(usize) -> u64;
    let cases: [(&str, Case, Case); 2] = [
        ("admit_waiting", connections, connections_control),
        ("dial admit", dials, dials_control),
    ];
    for (name, limit, control) in cases {
        let mut first: Option<(f64, f64)> = None;
        for &n in sizes {
            let (mut limited, mut controlled) = (Vec::new(), Vec::new());
            let mut polls = 0.0;
            for _ in 0..rounds {
                let (t, p) = measure(limit, n, smoke);
                limited.push(t);
                polls = p;
                controlled.push(measure(control, n, smoke).0);
            }
            let (l, c) = (median(limited), median(controlled));
            let added = l - c;
            let (l0, a0) = *first.get_or_insert((l, added));
            println!(
                "{name:<14} N = {n:>5}   limit {l:>7.1} ns  control {c:>7.1} ns  added {added:>6.1} ns per task   {:.2} polls per task   ratio to N = {}: limit {:.2}, added {:.2}",
                polls,
                sizes[0],
                l / l0,
                added / a0,
            );
        }
    }
}
