//! OpenTelemetry-style attribute values shared by the `metrics` and `tracing` hooks.

use std::borrow::Cow;
use std::io;

/// The `error.type` of an I/O error: its [`io::ErrorKind`] in snake case
/// (`"connection_refused"`, `"timed_out"`, ...), a low-cardinality name as the OpenTelemetry
/// conventions ask. A kind without a stable name gives `"os_error_<errno>"` when the error
/// came from the OS (e.g. `"os_error_24"` for EMFILE), else `"other"`.
pub(crate) fn error_type(e: &io::Error) -> Cow<'static, str> {
    use io::ErrorKind as K;
    let name = match e.kind() {
        K::NotFound => "not_found",
        K::PermissionDenied => "permission_denied",
        K::ConnectionRefused => "connection_refused",
        K::ConnectionReset => "connection_reset",
        K::HostUnreachable => "host_unreachable",
        K::NetworkUnreachable => "network_unreachable",
        K::ConnectionAborted => "connection_aborted",
        K::NotConnected => "not_connected",
        K::AddrInUse => "addr_in_use",
        K::AddrNotAvailable => "addr_not_available",
        K::NetworkDown => "network_down",
        K::BrokenPipe => "broken_pipe",
        K::AlreadyExists => "already_exists",
        K::WouldBlock => "would_block",
        K::InvalidInput => "invalid_input",
        K::InvalidData => "invalid_data",
        K::TimedOut => "timed_out",
        K::WriteZero => "write_zero",
        K::Interrupted => "interrupted",
        K::Unsupported => "unsupported",
        K::UnexpectedEof => "unexpected_eof",
        K::OutOfMemory => "out_of_memory",
        // Stable since Rust 1.83: a dial refused by its config's limit is `ResourceBusy`.
        K::ResourceBusy => "resource_busy",
        K::StorageFull => "storage_full",
        K::Deadlock => "deadlock",
        K::Other => "other",
        _ => {
            return match e.raw_os_error() {
                Some(code) => Cow::Owned(format!("os_error_{code}")),
                None => Cow::Borrowed("other"),
            }
        }
    };
    Cow::Borrowed(name)
}

/// `network.transport` for an address: `"tcp"`, `"unix"`, or `None` when unknown.
pub(crate) fn transport(addr: &crate::Addr) -> Option<&'static str> {
    match addr {
        crate::Addr::Inet(_) => Some("tcp"),
        crate::Addr::Unix(_) => Some("unix"),
        crate::Addr::Unknown => None,
    }
}

/// The `error.type` where an OpenTelemetry convention lists well-known values: `timeout` for a
/// timed-out step (the value every convention shares), and for a DNS lookup `host_not_found`
/// (no such name, or an empty answer); anything else is [`error_type`].
#[cfg(feature = "metrics")]
pub(crate) fn otel_error_type(e: &io::Error, dns: bool) -> Cow<'static, str> {
    match e.kind() {
        io::ErrorKind::TimedOut => Cow::Borrowed("timeout"),
        io::ErrorKind::NotFound if dns => Cow::Borrowed("host_not_found"),
        _ => error_type(e),
    }
}

/// `network.type` for an address: `"ipv4"`, `"ipv6"`, or `None` for a Unix socket or an
/// unknown address.
pub(crate) fn network_type(addr: &crate::Addr) -> Option<&'static str> {
    match addr {
        crate::Addr::Inet(a) if a.is_ipv4() => Some("ipv4"),
        crate::Addr::Inet(_) => Some("ipv6"),
        _ => None,
    }
}

/// `network.protocol.version` of HTTP from a negotiated ALPN protocol: `"2"` for `h2`,
/// `"1.1"` for `http/1.1`, `"1.0"` for `http/1.0`, `"3"` for `h3`; `None` for anything else.
pub(crate) fn http_version(alpn: Option<&[u8]>) -> Option<&'static str> {
    match alpn? {
        b"h2" => Some("2"),
        b"http/1.1" => Some("1.1"),
        b"http/1.0" => Some("1.0"),
        b"h3" => Some("3"),
        _ => None,
    }
}

/// An address as OpenTelemetry's `*.address` / `*.port` pair: the IP and port, or a Unix
/// socket's path (lossily decoded) and no port.
#[cfg(feature = "metrics")]
pub(crate) fn addr_parts(a: &crate::Addr) -> (Option<String>, Option<u16>) {
    match a {
        crate::Addr::Inet(sa) => (Some(sa.ip().to_string()), Some(sa.port())),
        crate::Addr::Unix(Some(p)) => (Some(p.display().to_string()), None),
        crate::Addr::Unix(None) | crate::Addr::Unknown => (None, None),
    }
}

/// `"host:port"` (or `"[v6]:port"`) as (host, port); anything else is all host.
pub(crate) fn split_target(t: &str) -> (Option<&str>, Option<u16>) {
    if let Ok(sa) = t.parse::<std::net::SocketAddr>() {
        // An address literal: its host part without brackets is not borrowable from `t` for
        // IPv6, so report the text before the port separator, brackets stripped.
        let host = t.rsplit_once(':').map_or(t, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        return (Some(host), Some(sa.port()));
    }
    match t.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse::<u16>() {
            Ok(port) => (Some(h), Some(port)),
            Err(_) => (Some(t), None),
        },
        _ => (Some(t), None),
    }
}

#[cfg(test)]
mod tests {
    use super::{error_type, http_version};
    use std::io;

    #[test]
    fn error_types_are_snake_case_kinds() {
        let e = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(error_type(&e), "connection_refused");
        let e = io::Error::new(io::ErrorKind::TimedOut, "slow");
        assert_eq!(error_type(&e), "timed_out");
        // EMFILE has no stable ErrorKind.
        let e = io::Error::from_raw_os_error(24);
        assert_eq!(error_type(&e), "os_error_24");
    }

    #[test]
    #[cfg(feature = "metrics")]
    fn well_known_values() {
        use super::otel_error_type;
        let e = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(otel_error_type(&e, false), "timeout");
        let e = io::Error::from(io::ErrorKind::NotFound);
        assert_eq!(otel_error_type(&e, true), "host_not_found");
        assert_eq!(otel_error_type(&e, false), "not_found");
        assert_eq!(http_version(Some(b"h2")), Some("2"));
        assert_eq!(http_version(Some(b"http/1.1")), Some("1.1"));
        assert_eq!(http_version(Some(b"<img>")), None);
    }
}
