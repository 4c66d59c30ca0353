//! `cargo xtask stress [PAIRS [CHURN]]`: the bounded load runs at full size, in release mode, on
//! every runtime: 9,000 concurrent tracked pairs (18,000 tracker entries) with traffic, then
//! 100,000 connections churned with faults mixed in: the shared scenarios of
//! `conntrack_testkit::load` on tokio, std, smol and async-std, and tokio's own
//! task-per-connection versions. The test suite runs the same scenarios at small sizes.

use crate::cargo;

fn count(arg: Option<&String>, default: &'static str) -> Result<String, String> {
    let v = arg.map_or(default, String::as_str);
    v.parse::<u32>()
        .map(|_| v.to_owned())
        .map_err(|_| format!("stress: {v:?} is not a count"))
}

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let pairs = count(args.first(), "9000")?;
    let churn = count(args.get(1), "100000")?;
    // Each concurrent pair takes two descriptors (client and server side).
    eprintln!(
        "stress: {pairs} concurrent pairs need about {} descriptors (see `ulimit -n`)",
        2 * pairs.parse::<u32>().unwrap_or(0) + 64
    );
    let env = [
        ("CONNTRACK_STRESS_CONNS", pairs.as_str()),
        ("CONNTRACK_CHURN_CONNS", churn.as_str()),
    ];
    // One test binary at a time and one test at a time inside it, so that only one run holds
    // its descriptors at once.
    let runs = [
        ("conntrack-tokio", "stress"),
        ("conntrack-tokio", "churn_faults"),
        ("conntrack-tokio", "load"),
        ("conntrack-std", "load"),
        ("conntrack-async-std", "load"),
    ];
    for (krate, test) in runs {
        let args = [
            "test",
            "--release",
            "-p",
            krate,
            "--all-features",
            "--test",
            test,
            "--",
            "--nocapture",
            "--test-threads=1",
        ];
        cargo(&args, &env)?;
    }
    Ok(())
}
