//! `cargo xtask stress [CONNS]`: the bounded load run at full size (default 5,000 concurrent
//! connections, i.e. 10,000 tracker entries), in release mode. The test suite runs the same
//! scenario with 500.

use crate::cargo;

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let conns = args.first().map_or("5000", String::as_str);
    if conns.parse::<u32>().is_err() {
        return Err(format!("stress: {conns:?} is not a connection count"));
    }
    // Each connection takes two descriptors (client and server side) in this one process.
    eprintln!(
        "stress: {conns} connections need about {} file descriptors; check `ulimit -n`",
        2 * conns.parse::<u32>().unwrap_or(0) + 64
    );
    cargo(
        &[
            "test",
            "--release",
            "-p",
            "conntrack-tokio",
            "--test",
            "stress",
            "--",
            "--nocapture",
        ],
        &[("CONNTRACK_STRESS_CONNS", conns)],
    )
}
