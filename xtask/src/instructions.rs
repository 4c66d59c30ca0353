//! `cargo xtask instructions [--check] [client] [churn] [ping] [smol] [std] [service]`: what
//! tracking costs, counted in user-space instructions rather than timed.
//!
//! CPU-time ratios on a shared two-core VM move by several percent from run to run, more than
//! some of the costs they are meant to show. `valgrind --tool=callgrind` counts the
//! instructions a benchmark's process executes: the same binary gives the same count to within
//! a few instructions a unit, whatever else the machine does. Each case runs at two lengths and
//! the difference of the counts over the difference of the lengths is the cost of one unit (a
//! request, a connection pair, a round trip), start-up and teardown cancelled out:
//!
//! - `client`: `benches/http_client.rs -- only plain|traced|events N` for N = 1,000 and 3,000:
//!   hyper-util's plain client, `TracedClient` with no hook, and with a hook that wants every
//!   request event, per keep-alive request.
//! - `churn`: `benches/loopback.rs -- only churn raw|tracked`, 40,000 and 4,000 pairs: one
//!   connection dialed, accepted and closed, per pair.
//! - `ping`: `benches/loopback.rs -- only ping raw|tracked`, 200,000 and 20,000 round trips of
//!   64 bytes, per round trip. (Each loopback run's count is read from its output.)
//! - `smol`, `std`: the same two cases on the loopback benchmarks of conntrack-async-std (on
//!   smol) and conntrack-std (`churn-smol`, `ping-smol`, `churn-std`, `ping-std`).
//! - `service`: `benches/service.rs -- only SETUP` under `wrk` for 4 s and 1 s, per proxied
//!   request (needs `wrk`). The setups add one part at a time (see `docs/benchmarks.md`). The
//!   one-time calibration of the clock that the Prometheus recorder makes at start-up (quanta's)
//!   runs for a variable number of instructions under valgrind (±4 million); its count is taken
//!   out of each total.
//!
//! The kernel's share (system calls, the TCP stack) is not counted: it is the same in both
//! columns but for the system calls tracking adds (`getsockname` once per dialed connection).
//!
//! With `--check`, each cost of tracking (tracked minus its untracked twin, so that what the
//! dependencies' own code costs cancels out) is compared with its budget in [`BUDGETS`], and
//! the command fails if one is over: a change that makes tracking cost more than it did is
//! caught by CI (`cargo xtask ci` runs `instructions --check`), not by a user's throughput.
//! Each budget is the cost measured when it was set plus a margin for what a rebuild alone
//! moves (glibc's allocator paths shift by up to ±750 instructions a unit). Lowering a cost
//! is a reason to lower its budget; raising a budget is a decision to write down in
//! `docs/benchmarks.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const CASES: [&str; 6] = ["client", "churn", "ping", "smol", "std", "service"];

/// What tracking may cost, in user-space instructions per unit, over its untracked twin
/// (`--check`): the measured cost when the budget was set (in parentheses) plus a margin.
pub(crate) const BUDGETS: [(&str, &str, f64); 11] = [
    // (6,050-6,543: the plain client's own count moves by +-300 between runs)
    (
        "client",
        "TracedClient with no hook, over hyper-util's plain client",
        8_000.0,
    ),
    // (4,521-5,233)
    (
        "client-events",
        "a hook wanting every request event, over no hook",
        6_500.0,
    ),
    // (6,252-6,351)
    ("churn", "a tracked pair, over a raw one", 7_500.0),
    // (492)
    ("ping", "a tracked round trip, over a raw one", 650.0),
    // (6,333)
    (
        "churn-smol",
        "smol: a tracked pair, over a raw one",
        7_500.0,
    ),
    // (365)
    (
        "ping-smol",
        "smol: a tracked round trip, over a raw one",
        550.0,
    ),
    // (6,626)
    ("churn-std", "std: a tracked pair, over a raw one", 7_750.0),
    // (351)
    (
        "ping-std",
        "std: a tracked round trip, over a raw one",
        550.0,
    ),
    // (14,802-15,813; repeated runs differ by up to +-600)
    (
        "service",
        "the README's setup with no hook, over untracked",
        18_000.0,
    ),
    // (14,957-15,981)
    (
        "service-metrics",
        "the README's setup with MetricsHook, over untracked",
        18_000.0,
    ),
    // (9,246-11,002)
    (
        "service-events",
        "a hook wanting every request event and both servers' phases, over no hook",
        13_000.0,
    ),
];

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let check = args.iter().any(|a| a == "--check");
    let wanted: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--check")
        .collect();
    for w in &wanted {
        if !CASES.contains(w) {
            return Err(format!(
                "instructions: unknown case {w:?} (cases: {})",
                CASES.join(", ")
            ));
        }
    }
    let want = |case: &str| wanted.is_empty() || wanted.contains(&case);
    tool_ok(
        "valgrind",
        &["--version"],
        "valgrind (apt-get install valgrind)",
    )?;
    if want("service") {
        tool_ok("wrk", &["--version"], "wrk (apt-get install wrk)")?;
        tool_ok(
            "callgrind_annotate",
            &["--version"],
            "callgrind_annotate (part of valgrind)",
        )?;
    }
    let benches = build()?;
    let bench = |name: &str| {
        benches
            .get(name)
            .cloned()
            .ok_or_else(|| format!("instructions: no executable for bench {name}"))
    };
    let dir = std::env::temp_dir().join(format!("conntrack-instructions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let counter = Counter { dir: dir.clone() };
    // The costs of tracking measured, by budget name.
    let mut costs: Vec<(String, f64)> = Vec::new();
    let result = (|| {
        let mut lines = Vec::new();
        if want("client") {
            let exe = bench("conntrack-tokio/http_client")?;
            let per = |case: &str| -> Result<f64, String> {
                let a = counter.count(&exe, &["only", case, "1000"], &[], false)?;
                let b = counter.count(&exe, &["only", case, "3000"], &[], false)?;
                Ok((b.total - a.total) / 2000.0)
            };
            let plain = per("plain")?;
            let traced = per("traced")?;
            let events = per("events")?;
            costs.push(("client".into(), traced - plain));
            costs.push(("client-events".into(), events - traced));
            lines.push(format!(
                "client (per keep-alive request)   plain {}   TracedClient, no hook {} ({})   every request event {} ({} over no hook)",
                n(plain),
                n(traced),
                d(traced - plain),
                n(events),
                d(events - traced),
            ));
        }
        // The loopback cases of each runtime: (case, bench's package, budget prefix).
        for (case, package, units) in [
            ("churn", "conntrack-tokio", "pair"),
            ("ping", "conntrack-tokio", "round trip"),
            ("smol", "conntrack-async-std", ""),
            ("std", "conntrack-std", ""),
        ] {
            if !want(case) {
                continue;
            }
            let exe = bench(&format!("{package}/loopback"))?;
            // tokio's cases are named by what they run; smol's and std's run both.
            let runs: Vec<(&str, &str, String)> = if package == "conntrack-tokio" {
                vec![(case, units, case.to_string())]
            } else {
                vec![
                    ("churn", "pair", format!("churn-{case}")),
                    ("ping", "round trip", format!("ping-{case}")),
                ]
            };
            for (what, units, name) in runs {
                let per = |side: &str| -> Result<f64, String> {
                    let long_args = ["only", what, side];
                    let a = counter.count(&exe, &long_args, &[], false)?;
                    let b = counter.count(
                        &exe,
                        &long_args,
                        &[("CONNTRACK_BENCH_QUICK", "1")],
                        false,
                    )?;
                    // The bench says how many it ran ("only ping raw: 200000 round trips, ...").
                    let units = a.requests - b.requests;
                    if units <= 0.0 {
                        return Err(format!("instructions: {name} {side}: no units counted"));
                    }
                    Ok((a.total - b.total) / units)
                };
                let raw = per("raw")?;
                let tracked = per("tracked")?;
                lines.push(format!(
                    "{name} (per {units})   raw {}   tracked {} ({})",
                    n(raw),
                    n(tracked),
                    d(tracked - raw)
                ));
                costs.push((name, tracked - raw));
            }
        }
        if want("service") {
            let exe = bench("conntrack-tokio/service")?;
            let setups = [
                ("untracked", "untracked"),
                ("streams", "tracked streams"),
                ("connectinfo", "+ TrackedConnectInfo"),
                ("layers", "+ ExchangeLayer"),
                ("nohook", "+ TracedClient (no hook)"),
                ("metrics", "MetricsHook"),
                ("client", "client request events"),
                ("all", "all request events"),
            ];
            let mut base = None;
            let mut nohook = None;
            let mut row = String::from("service (per proxied request)");
            for (setup, label) in setups {
                let a = counter.count(&exe, &["only", setup], &[], true)?;
                let b = counter.count(
                    &exe,
                    &["only", setup],
                    &[("CONNTRACK_BENCH_QUICK", "1")],
                    true,
                )?;
                let requests = a.requests - b.requests;
                if requests <= 0.0 {
                    return Err(format!(
                        "instructions: service {setup}: no requests counted"
                    ));
                }
                let per = ((a.total - a.calibration) - (b.total - b.calibration)) / requests;
                let base = *base.get_or_insert(per);
                if setup == "nohook" {
                    nohook = Some(per);
                    costs.push(("service".into(), per - base));
                }
                if setup == "metrics" {
                    costs.push(("service-metrics".into(), per - base));
                }
                if let (Some(nh), "all") = (nohook, setup) {
                    costs.push(("service-events".into(), per - nh));
                }
                row.push_str(&format!("\n  {label:<28} {:>8}", n(per)));
                if setup != "untracked" {
                    row.push_str(&format!("  ({} over untracked", d(per - base)));
                    match nohook {
                        Some(nh) if setup != "nohook" => {
                            row.push_str(&format!(", {} over no hook)", d(per - nh)));
                        }
                        _ => row.push(')'),
                    }
                }
            }
            lines.push(row);
        }
        Ok(lines)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let lines = result?;
    println!(
        "\nuser-space instructions (callgrind, two run lengths; see xtask/src/instructions.rs)"
    );
    for line in lines {
        println!("{line}");
    }
    if check {
        return check_budgets(&costs);
    }
    Ok(())
}

/// Compares each measured cost with its budget ([`BUDGETS`]); fails naming those over.
fn check_budgets(costs: &[(String, f64)]) -> Result<(), String> {
    println!("\nbudgets (instructions a unit that tracking may cost over the untracked case)");
    let mut over = Vec::new();
    for (name, cost) in costs {
        let Some((_, what, budget)) = BUDGETS.iter().find(|(n, _, _)| n == name) else {
            continue;
        };
        let verdict = if cost <= budget { "ok" } else { "OVER" };
        println!(
            "  {verdict:<4} {name:<16} {:>8} of {:>8}  {what}",
            d(*cost),
            n(*budget)
        );
        if cost > budget {
            over.push(format!("{name} {} > {}", d(*cost), n(*budget)));
        }
    }
    if over.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "instructions: tracking costs more than its budget: {} (see xtask/src/instructions.rs)",
            over.join("; ")
        ))
    }
}

/// Fails with a message naming how to install `tool` if it does not run.
fn tool_ok(tool: &str, args: &[&str], what: &str) -> Result<(), String> {
    match Command::new(tool).args(args).output() {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("instructions: needs {what}: {e}")),
    }
}

/// Builds the benchmarks (release) and returns their executables by `package/name`.
fn build() -> Result<BTreeMap<String, PathBuf>, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let args = [
        "bench",
        "--no-run",
        "-p",
        "conntrack-tokio",
        "-p",
        "conntrack-async-std",
        "-p",
        "conntrack-std",
        "--features",
        "conntrack-tokio/axum,conntrack-tokio/hyper,conntrack-tokio/metrics,conntrack-async-std/smol",
        "--bench",
        "http_client",
        "--bench",
        "loopback",
        "--bench",
        "service",
        "--message-format=json",
    ];
    eprintln!("\n==> cargo {}", args.join(" "));
    let out = Command::new(&cargo)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo bench --no-run failed: {}", out.status));
    }
    let mut found = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if !line.contains("\"reason\":\"compiler-artifact\"") {
            continue;
        }
        let (Some(name), Some(exe), Some(manifest)) = (
            json_str_after(line, "\"target\":{", "\"name\":\""),
            json_str_after(line, "", "\"executable\":\""),
            json_str_after(line, "", "\"manifest_path\":\""),
        ) else {
            continue;
        };
        // By package (its folder's name) and bench name: each adapter has a `loopback`.
        let package = Path::new(&manifest)
            .parent()
            .and_then(Path::file_name)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        found.insert(format!("{package}/{name}"), PathBuf::from(exe));
    }
    Ok(found)
}

/// The string value of `key` (given with its opening quote) after `within` in one line of
/// cargo's JSON messages (paths and target names carry no escapes here).
fn json_str_after(line: &str, within: &str, key: &str) -> Option<String> {
    let start = line.find(within)? + within.len();
    let rest = &line[start..];
    let at = rest.find(key)? + key.len();
    let value = &rest[at..];
    let end = value.find('"')?;
    Some(value[..end].to_string())
}

struct Counter {
    dir: PathBuf,
}

struct Count {
    total: f64,
    /// The service's "N requests in all", the loopback bench's count of pairs or round trips
    /// (0 for the client, whose lengths are its arguments).
    requests: f64,
    /// Instructions spent in quanta's clock calibration (0 unless asked).
    calibration: f64,
}

impl Counter {
    /// Runs `exe args` under callgrind and returns its instruction count.
    fn count(
        &self,
        exe: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        service: bool,
    ) -> Result<Count, String> {
        let out_file = self.dir.join("callgrind.out");
        let shown: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
        eprintln!(
            "==> {}valgrind --tool=callgrind {} {}",
            shown.concat(),
            exe.file_name().unwrap_or_default().to_string_lossy(),
            args.join(" ")
        );
        let out = Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}", out_file.display()))
            .arg(exe)
            .args(args)
            .envs(env.iter().copied())
            .output()
            .map_err(|e| format!("valgrind: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "valgrind {}: {}\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let total = stderr
            .lines()
            .filter_map(|l| l.split("Collected : ").nth(1))
            .next_back()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .ok_or_else(|| format!("valgrind {}: no instruction count", args.join(" ")))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let requests = if service {
            stdout
                .split(" requests in all")
                .next()
                .and_then(|s| s.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| format!("service {}: no request count", args.join(" ")))?
        } else if let ["only", _, "raw" | "tracked"] = args {
            // The loopback bench's "only CASE SIDE: N UNITS, ..." line.
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{}: ", args.join(" "))))
                .and_then(|rest| rest.split(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| format!("{}: no count in the output", args.join(" ")))?
        } else {
            0.0
        };
        let calibration = if service {
            calibration(&out_file)?
        } else {
            0.0
        };
        Ok(Count {
            total,
            requests,
            calibration,
        })
    }
}

/// The inclusive count of `quanta::Clock::new` in a callgrind profile (0 if absent).
fn calibration(file: &Path) -> Result<f64, String> {
    let out = Command::new("callgrind_annotate")
        .args(["--inclusive=yes", "--threshold=100"])
        .arg(file)
        .output()
        .map_err(|e| format!("callgrind_annotate: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .find(|l| l.contains(":quanta::Clock::new ["))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.replace(',', "").parse::<f64>().ok())
        .unwrap_or(0.0))
}

/// A count, with thousands separated.
fn n(v: f64) -> String {
    let v = v.round() as i64;
    let digits = v.unsigned_abs().to_string();
    let mut s = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            s.push(',');
        }
        s.push(c);
    }
    if v < 0 {
        format!("-{s}")
    } else {
        s
    }
}

/// A signed difference.
fn d(v: f64) -> String {
    if v >= 0.0 {
        format!("+{}", n(v))
    } else {
        n(v)
    }
}
