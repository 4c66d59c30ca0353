//! `cargo xtask stress [CONNS [CHURN]]`: the bounded load runs at full size, in release mode:
//! 5,000 concurrent connections (10,000 tracker entries) with traffic, then 100,000
//! connections churned with faults mixed in. The test suite runs the same scenarios with 500
//! and 2,000.

use crate::cargo;

fn count(arg: Option<&String>, default: &'static str) -> Result<String, String> {
    let v = arg.map_or(default, String::as_str);
    v.parse::<u32>()
        .map(|_| v.to_owned())
        .map_err(|_| format!("stress: {v:?} is not a count"))
}

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let conns = count(args.first(), "5000")?;
    let churn = count(args.get(1), "100000")?;
    // Each concurrent connection takes two descriptors (client and server side) here.
    eprintln!(
        "stress: {conns} concurrent connections need about {} descriptors (see `ulimit -n`)",
        2 * conns.parse::<u32>().unwrap_or(0) + 64
    );
    let release = [
        "test",
        "--release",
        "-p",
        "conntrack-tokio",
        "--all-features",
        "--test",
    ];
    cargo(
        &[&release[..], &["stress", "--", "--nocapture"]].concat(),
        &[("CONNTRACK_STRESS_CONNS", &conns)],
    )?;
    cargo(
        &[&release[..], &["churn_faults", "--", "--nocapture"]].concat(),
        &[("CONNTRACK_CHURN_CONNS", &churn)],
    )
}
