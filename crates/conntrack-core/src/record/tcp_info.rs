//! Kernel TCP statistics ([`TcpStats`]) from `getsockopt(TCP_INFO)` on Linux and Android.
//!
//! The only module of the crate allowed `unsafe` code: one `getsockopt` call into a zeroed
//! buffer of our own, whose length the kernel tells us, and one `shutdown` of a connection's
//! socket for an abort. Other platforms report `None`.

use std::time::Duration;

/// The kernel's view of a TCP connection, read with `TCP_INFO` (Linux and Android) when a
/// snapshot is taken and once at close; never on the I/O path.
///
/// Fields the running kernel does not report (older than the version noted) are `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct TcpStats {
    /// Smoothed round-trip time (`tcpi_rtt`, microsecond resolution).
    ///
    /// It measures from a segment sent to its acknowledgement, so on the side that answers
    /// requests it includes the peer's delayed ACK: a request/response connection on loopback
    /// can read several milliseconds here on the server's entry against tens of microseconds
    /// on the client's. [`min_rtt`](TcpStats::min_rtt) shows the path itself.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::record::ser::secs"))]
    pub rtt: Duration,
    /// Round-trip time variance (`tcpi_rttvar`).
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::record::ser::secs"))]
    pub rtt_var: Duration,
    /// The smallest round-trip time seen over the connection's life, the kernel's windowed
    /// minimum (`tcpi_min_rtt`, Linux 4.6): the path's own delay, free of delayed ACKs and
    /// queueing. `None` before the first sample or when the kernel does not report it.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::record::ser::opt_secs")
    )]
    pub min_rtt: Option<Duration>,
    /// Segments retransmitted over the connection's life (`tcpi_total_retrans`).
    pub retransmits: u32,
    /// Congestion window, in segments (`tcpi_snd_cwnd`).
    pub cwnd: u32,
    /// Sender's maximum segment size (`tcpi_snd_mss`).
    pub mss: u32,
    /// Bytes sent and acknowledged by the peer: delivered (`tcpi_bytes_acked`, Linux 4.1).
    /// The kernel counts the SYN of a connection this side opened as one byte, so on a dialed
    /// connection whose data has all been acknowledged it is the bytes written plus one.
    pub bytes_acked: Option<u64>,
    /// Bytes received and acknowledged (`tcpi_bytes_received`, Linux 4.1): the bytes read
    /// once the application has read everything, plus one once the peer's FIN arrived.
    pub bytes_received: Option<u64>,
    /// Bytes sent, retransmissions included (`tcpi_bytes_sent`, Linux 4.19).
    pub bytes_sent: Option<u64>,
    /// Bytes retransmitted (`tcpi_bytes_retrans`, Linux 4.19).
    pub bytes_retrans: Option<u64>,
}

impl TcpStats {
    /// Reads the statistics of the TCP socket `fd`. `None` when it is not a TCP socket, the
    /// call fails, or the platform has no `TCP_INFO`.
    #[cfg(unix)]
    #[must_use]
    pub fn of(fd: std::os::fd::BorrowedFd<'_>) -> Option<TcpStats> {
        use std::os::fd::AsRawFd;
        sample(fd.as_raw_fd())
    }
}

/// Samples a raw descriptor. The caller makes sure `fd` is the connection's own, still open
/// (see `SocketGuard`): on any other descriptor the call is still memory-safe, it only
/// reports the wrong socket or fails.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unsafe_code)]
pub(crate) fn sample(fd: std::os::fd::RawFd) -> Option<TcpStats> {
    use std::mem::{offset_of, size_of};

    let mut raw = RawTcpInfo::default();
    let mut len = libc::socklen_t::try_from(size_of::<RawTcpInfo>()).ok()?;
    // SAFETY: `raw` is a live, writable, `repr(C)` plain-old-data buffer of `len` bytes (every
    // bit pattern is a valid value of its integer fields), and `len` points to its size, as
    // getsockopt(2) requires; the kernel writes at most `len` bytes and stores in `len` how
    // many it wrote. Neither pointer outlives the call.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            std::ptr::from_mut(&mut raw).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    let len = len as usize;
    let has = |end: usize| len >= end;
    if !has(offset_of!(RawTcpInfo, total_retrans) + 4) {
        return None;
    }
    let opt = |off: usize, v: u64| has(off + 8).then_some(v);
    // The kernel reports `~0U` until it has a sample.
    let min_rtt = (has(offset_of!(RawTcpInfo, min_rtt) + 4) && raw.min_rtt != u32::MAX)
        .then(|| Duration::from_micros(u64::from(raw.min_rtt)));
    Some(TcpStats {
        rtt: Duration::from_micros(u64::from(raw.rtt)),
        rtt_var: Duration::from_micros(u64::from(raw.rttvar)),
        min_rtt,
        retransmits: raw.total_retrans,
        cwnd: raw.snd_cwnd,
        mss: raw.snd_mss,
        bytes_acked: opt(offset_of!(RawTcpInfo, bytes_acked), raw.bytes_acked),
        bytes_received: opt(offset_of!(RawTcpInfo, bytes_received), raw.bytes_received),
        bytes_sent: opt(offset_of!(RawTcpInfo, bytes_sent), raw.bytes_sent),
        bytes_retrans: opt(offset_of!(RawTcpInfo, bytes_retrans), raw.bytes_retrans),
    })
}

/// Shuts a connection's socket down (`SHUT_RDWR`), which makes a thread blocked in a read or
/// write on it return: what an abort does to a blocking stream registered with
/// `Connection::shutdown_on_abort`. Called either under the entry's lock, which the
/// registration's guard takes before its stream may close `fd`, or by the registering call
/// itself, whose caller holds the socket: in both cases `fd` is the connection's socket as
/// long as the registration's documented contract is kept.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unsafe_code)]
pub(crate) fn shutdown(fd: std::os::fd::RawFd) {
    // SAFETY: shutdown(2) takes no pointers and has no effect on this process' memory, so the
    // call is memory-safe on any descriptor: at worst it fails, or (if a registration's
    // contract was broken, see `Connection::shutdown_on_abort`) shuts down a socket the
    // connection does not own, an I/O error for that socket's user and nothing more. Its
    // result is not needed: a socket already shut down or closed by the peer has nothing
    // left to wake.
    let _ = unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}

#[cfg(all(unix, not(any(target_os = "linux", target_os = "android"))))]
pub(crate) fn sample(_fd: std::os::fd::RawFd) -> Option<TcpStats> {
    None
}

/// `struct tcp_info` of `<linux/tcp.h>` up to `tcpi_bytes_retrans` (Linux 4.19). libc's own
/// declaration stops at `tcpi_total_retrans`, before the byte counts.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[repr(C)]
#[derive(Default)]
struct RawTcpInfo {
    state: u8,
    ca_state: u8,
    retransmits: u8,
    probes: u8,
    backoff: u8,
    options: u8,
    wscale: u8,
    flags: u8,
    rto: u32,
    ato: u32,
    snd_mss: u32,
    rcv_mss: u32,
    unacked: u32,
    sacked: u32,
    lost: u32,
    retrans: u32,
    fackets: u32,
    last_data_sent: u32,
    last_ack_sent: u32,
    last_data_recv: u32,
    last_ack_recv: u32,
    pmtu: u32,
    rcv_ssthresh: u32,
    rtt: u32,
    rttvar: u32,
    snd_ssthresh: u32,
    snd_cwnd: u32,
    advmss: u32,
    reordering: u32,
    rcv_rtt: u32,
    rcv_space: u32,
    total_retrans: u32,
    pacing_rate: u64,
    max_pacing_rate: u64,
    bytes_acked: u64,
    bytes_received: u64,
    segs_out: u32,
    segs_in: u32,
    notsent_bytes: u32,
    min_rtt: u32,
    data_segs_in: u32,
    data_segs_out: u32,
    delivery_rate: u64,
    busy_time: u64,
    rwnd_limited: u64,
    sndbuf_limited: u64,
    delivered: u32,
    delivered_ce: u32,
    bytes_sent: u64,
    bytes_retrans: u64,
}

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod tests {
    use super::RawTcpInfo;
    use std::mem::offset_of;

    /// The offsets of `<linux/tcp.h>`.
    #[test]
    fn layout_matches_the_kernel() {
        assert_eq!(offset_of!(RawTcpInfo, rto), 8);
        assert_eq!(offset_of!(RawTcpInfo, rtt), 68);
        assert_eq!(offset_of!(RawTcpInfo, total_retrans), 100);
        assert_eq!(offset_of!(RawTcpInfo, bytes_acked), 120);
        assert_eq!(offset_of!(RawTcpInfo, min_rtt), 148);
        assert_eq!(offset_of!(RawTcpInfo, delivery_rate), 160);
        assert_eq!(offset_of!(RawTcpInfo, delivered), 192);
        assert_eq!(offset_of!(RawTcpInfo, bytes_retrans), 208);
    }

    #[test]
    fn a_non_socket_has_none() {
        let f = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(super::sample(std::os::fd::AsRawFd::as_raw_fd(&f)), None);
    }
}
