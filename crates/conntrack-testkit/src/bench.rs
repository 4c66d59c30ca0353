//! The side-by-side measuring every loopback benchmark uses: raw and tracked rounds
//! alternated in one process, the median ratio printed.

use std::time::Duration;

/// Rounds per case (after one warm-up round of each).
pub const ROUNDS: usize = 15;

/// CPU time the calling thread has used so far (`CLOCK_THREAD_CPUTIME_ID`: nanoseconds,
/// kernel time included, so the loopback network stack's work done in this thread's system
/// calls counts); `None` where that is not available.
///
/// (`/proc/thread-self/schedstat`, read before, advances only at the scheduler's tick while
/// the thread runs, 4 ms on a 250 Hz kernel: a round of 100 ms came out a whole tick long or
/// short, and ratios of such rounds moved in steps of 4%. The clock is exact to the
/// nanosecond.)
#[must_use]
pub fn thread_cpu_time() -> Option<Duration> {
    #[cfg(unix)]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        let secs = u64::try_from(t.tv_sec).ok()?;
        let nanos = u32::try_from(t.tv_nsec).ok()?;
        Some(Duration::new(secs, nanos))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Runs `f` and returns the CPU time the calling thread spent in it (wall time where CPU time
/// cannot be read). For a single-threaded runtime driven by `f`, that is the whole cost of
/// the work, free of scheduling noise.
pub fn cpu_time_of(f: impl FnOnce()) -> Duration {
    let wall = std::time::Instant::now();
    let before = thread_cpu_time();
    f();
    match (before, thread_cpu_time()) {
        (Some(b), Some(a)) => a.saturating_sub(b),
        _ => wall.elapsed(),
    }
}

/// `n`, or a tenth of it when `CONNTRACK_BENCH_QUICK=1` (a smoke run).
#[must_use]
pub fn scale(n: usize) -> usize {
    if std::env::var_os("CONNTRACK_BENCH_QUICK").is_some_and(|v| v == "1") {
        (n / 10).max(1)
    } else {
        n
    }
}

/// The median of `v` (the upper one of an even count).
#[must_use]
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Whether a case named `name` was asked for: `cargo bench` passes `--bench`; any other
/// argument filters cases by name.
#[must_use]
pub fn wanted(name: &str) -> bool {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()))
}

/// Runs `run(false)` (raw) and `run(true)` (tracked) alternately, switching which goes first,
/// and prints the median throughput of each (`amount` units per run) and the median of the
/// per-round ratios tracked/raw (1.0 = no overhead), against `target`. Returns the ratio.
/// With `CONNTRACK_BENCH_VERBOSE=1` every round's ratio goes to standard error as well.
pub fn compare(
    name: &str,
    target: f64,
    unit: &str,
    amount: f64,
    mut run: impl FnMut(bool) -> Duration,
) -> f64 {
    // Warm-up, not measured.
    run(false);
    run(true);
    let mut ratios = Vec::with_capacity(ROUNDS);
    let (mut raw_all, mut tracked_all) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (raw, tracked) = if round % 2 == 0 {
            let r = run(false);
            (r, run(true))
        } else {
            let t = run(true);
            (run(false), t)
        };
        let ratio = raw.as_secs_f64() / tracked.as_secs_f64();
        if std::env::var_os("CONNTRACK_BENCH_VERBOSE").is_some_and(|v| v == "1") {
            eprintln!("{name} round {round}: tracked/raw {ratio:.3}");
        }
        ratios.push(ratio);
        raw_all.push(amount / raw.as_secs_f64());
        tracked_all.push(amount / tracked.as_secs_f64());
    }
    let ratio = median(ratios);
    println!(
        "{name:<22} raw {:>12.1} {unit}  tracked {:>12.1} {unit}  tracked/raw {ratio:.3} (target >= {target}) {}",
        median(raw_all),
        median(tracked_all),
        if ratio >= target { "ok" } else { "BELOW TARGET" },
    );
    ratio
}

/// The process' user + system CPU time so far (all threads; `CLOCK_PROCESS_CPUTIME_ID`, exact
/// to the nanosecond; zero where it cannot be read): for whole-service benchmarks whose load
/// generator is another process.
#[must_use]
pub fn process_cpu_time() -> Duration {
    #[cfg(unix)]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
        match (u64::try_from(t.tv_sec), u32::try_from(t.tv_nsec)) {
            (Ok(secs), Ok(nanos)) => Duration::new(secs, nanos),
            _ => Duration::ZERO,
        }
    }
    #[cfg(not(unix))]
    {
        Duration::ZERO
    }
}

/// Whether `wrk` is on the PATH.
#[must_use]
pub fn has_wrk() -> bool {
    std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_ok()
}

/// Runs `wrk -t2 -c64` against `http://{addr}/` for `secs` seconds; returns the requests
/// completed and the requests per second it reported. Errors it reports are printed.
///
/// # Panics
///
/// If `wrk` cannot be run (check [`has_wrk`] first).
#[must_use]
pub fn wrk(addr: std::net::SocketAddr, secs: u64) -> (f64, f64) {
    let out = std::process::Command::new("wrk")
        .args([
            "-t2",
            "-c64",
            &format!("-d{secs}s"),
            &format!("http://{addr}/"),
        ])
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut requests, mut rate) = (0.0, 0.0);
    for line in text.lines() {
        let line = line.trim();
        if let Some((n, _)) = line.split_once(" requests in") {
            requests = n.trim().parse().unwrap_or(0.0);
        }
        if let Some(r) = line.strip_prefix("Requests/sec:") {
            rate = r.trim().parse().unwrap_or(0.0);
        }
        if line.starts_with("Non-2xx") || line.starts_with("Socket errors") {
            eprintln!("wrk: {line}");
        }
    }
    (requests, rate)
}

/// One measured `wrk` round against `addr`: a 1-second warm-up (its connections made, nothing
/// measured), then `secs` seconds.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    /// Requests completed in the measured part.
    pub requests: f64,
    /// Requests per second of the measured part, as `wrk` reported it.
    pub rate: f64,
    /// The process' CPU time per request of the measured part, in microseconds.
    pub cpu_per_request_us: f64,
    /// Requests completed in the warm-up and the measured part: what the whole process served
    /// (for a profile or an instruction count of the whole run).
    pub all_requests: f64,
}

/// Runs a [`Round`] against `addr`.
#[must_use]
pub fn wrk_round(addr: std::net::SocketAddr, secs: u64) -> Round {
    let (warm, _) = wrk(addr, 1);
    let cpu0 = process_cpu_time();
    let (requests, rate) = wrk(addr, secs);
    let cpu = process_cpu_time().saturating_sub(cpu0);
    Round {
        requests,
        rate,
        cpu_per_request_us: if requests > 0.0 {
            cpu.as_secs_f64() * 1e6 / requests
        } else {
            0.0
        },
        all_requests: warm + requests,
    }
}

/// The setup named after `only` on the command line (`cargo bench ... -- only NAME`), for the
/// whole-service benchmarks' single-setup mode: `Some("")` when `only` has no name after it.
#[must_use]
pub fn only_setup() -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == "only")?;
    Some(args.get(i + 1).cloned().unwrap_or_default())
}

/// The loopback benchmarks' single-side mode, `-- only churn|ping|bulk raw|tracked`: runs one
/// case's raw or tracked side alone (for an instruction count, `perf`, `strace -c`) and prints
/// the line `cargo xtask instructions` reads, `only CASE SIDE: N UNITS, T µs CPU each`.
/// `run(case, tracked, n)` runs `n` of the case (connections, round trips or bytes) and
/// returns its CPU time: 40,000 connections in ten rounds of 4,000 (within a listener's
/// backlog), 200,000 round trips, 2 GiB; a tenth of each with `CONNTRACK_BENCH_QUICK=1`.
/// Returns whether the mode was asked for (the bench then ends).
pub fn run_only(mut run: impl FnMut(&str, bool, usize) -> Duration) -> bool {
    let args: Vec<String> = std::env::args().collect();
    let Some(i) = args.iter().position(|a| a == "only") else {
        return false;
    };
    let case = args.get(i + 1).map_or("churn", String::as_str);
    let tracked = args.get(i + 2).is_some_and(|a| a == "tracked");
    let (n, unit, cpu) = match case {
        "ping" => {
            let n = scale(200_000);
            (n, "round trips", run("ping", tracked, n))
        }
        "bulk" => {
            let bytes = scale(2048 * 1024 * 1024);
            (bytes >> 20, "MiB", run("bulk", tracked, bytes))
        }
        _ => {
            let per_round = 4000;
            let rounds = scale(40_000) / per_round;
            let cpu = (0..rounds).map(|_| run("churn", tracked, per_round)).sum();
            (rounds * per_round, "connections", cpu)
        }
    };
    let case = if matches!(case, "ping" | "bulk") {
        case
    } else {
        "churn"
    };
    println!(
        "only {case} {}: {n} {unit}, {:.2} µs CPU each",
        if tracked { "tracked" } else { "raw" },
        cpu.as_secs_f64() * 1e6 / n as f64
    );
    true
}

impl Round {
    /// Prints the round of the single-setup mode: its rate, its CPU per request and the
    /// requests the whole process served (for a profile or an instruction count of the run).
    pub fn print_single(&self, setup: &str) {
        println!(
            "{setup}: {:.0} req/s, {:.2} µs CPU/request; {} requests in all",
            self.rate, self.cpu_per_request_us, self.all_requests
        );
    }
}
