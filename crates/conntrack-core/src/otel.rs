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

#[cfg(test)]
mod tests {
    use super::error_type;
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
}
