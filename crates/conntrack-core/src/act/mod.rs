//! Acting and dialing, side by side above the tracking state: control (limits at accept,
//! aborts, policies, shutdown), dialing (the dial report, the dial algorithm, DNS, the
//! blocking runner) and per-request traces. Uses `record`, `hooks` and `track`.

pub(crate) mod admit;
pub mod blocking;
pub(crate) mod control;
pub(crate) mod dial;
pub mod dialer;
pub mod dns;
pub(crate) mod request;
