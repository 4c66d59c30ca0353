//! The `serialize_with` helpers of the records (feature `serde`): durations as seconds, times
//! as seconds since the Unix epoch.

use serde::Serializer;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[allow(clippy::trivially_copy_pass_by_ref)]
pub(crate) fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

#[allow(clippy::ref_option)]
pub(crate) fn opt_secs<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

#[allow(clippy::ref_option)]
pub(crate) fn opt_system_time<S: Serializer>(
    t: &Option<SystemTime>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => system_time(t, s),
        None => s.serialize_none(),
    }
}

pub(crate) fn system_time<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    s.serialize_f64(secs)
}
