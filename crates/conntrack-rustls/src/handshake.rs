//! Timing and reporting one handshake on a tracked connection.

use std::io;
use std::time::Instant;

use conntrack_core::{Connection, TlsInfo};

use crate::info::TlsConnectionInfo;

/// A TLS handshake in progress on a tracked connection, from [`Handshake::start`].
///
/// End it with [`complete`](Handshake::complete) (the rustls connection finished its
/// handshake), [`fail`](Handshake::fail) (the handshake returned an error) or
/// [`finish`](Handshake::finish). Dropping it unfinished — the handshake future was cancelled,
/// for instance by a server's handshake timeout — reports a failed handshake with a
/// "cancelled" error (kind `Other`), so every `on_tls_handshake_start` gets its
/// `on_tls_handshake_done`. (Nothing is reported while the thread is panicking.)
///
/// It holds a handle to the connection, so the tracker entry stays until the outcome is
/// reported even when the TLS library drops the stream on failure.
#[derive(Debug)]
#[must_use = "report the outcome with complete(), fail() or finish()"]
pub struct Handshake {
    conn: Connection,
    started: Instant,
    server_name: Option<String>,
    reported: bool,
}

impl Handshake {
    /// Fires `on_tls_handshake_start` and starts the clock. A client passes the server name it
    /// verifies the certificate against, or `None` when it sends no SNI
    /// (`ClientConfig::enable_sni` off); a server passes `None` and reads the SNI from its
    /// connection later.
    ///
    /// Both the start event and the connection's [`TlsInfo::server_name`] report the SNI as
    /// sent on the wire, normalised as the server reads it ([`sni`](crate::sni)): lowercase,
    /// no trailing dot, and none for an IP address, so a connection's two entries agree. (The
    /// caller's own spelling is not kept: it is the caller's to keep, and what was dialed is
    /// the connection's `target`.)
    pub fn start(conn: &Connection, server_name: Option<&str>) -> Self {
        let server_name = server_name.and_then(crate::sni);
        conn.report_tls_handshake_start(server_name.as_deref());
        Handshake {
            conn: conn.clone(),
            started: Instant::now(),
            server_name,
            reported: false,
        }
    }

    /// Reports a successful handshake: `on_tls_handshake_done` with what `tls` negotiated;
    /// the connection's `tls` and `timings.tls_handshake` are set.
    ///
    /// (Should `tls` still be handshaking, that is reported as a failure.)
    pub fn complete(self, tls: &(impl TlsConnectionInfo + ?Sized)) {
        match tls.tls_info(self.server_name.as_deref()) {
            Some(info) => self.finish(Ok(info)),
            None => self.finish(Err(&io::Error::other(
                "TLS handshake reported done while rustls is still handshaking",
            ))),
        }
    }

    /// Reports a failed handshake (`on_tls_handshake_done` with the error, counted in
    /// `tls_handshake_failed`, remembered for `on_close`) and hands the error back unchanged.
    pub fn fail(self, err: io::Error) -> io::Error {
        self.finish(Err(&err));
        err
    }

    /// Reports the outcome (`on_tls_handshake_done`) with the elapsed time. The error is the
    /// caller's to return, unchanged.
    pub fn finish(mut self, result: Result<TlsInfo, &io::Error>) {
        self.report(result);
    }

    fn report(&mut self, result: Result<TlsInfo, &io::Error>) {
        self.reported = true;
        self.conn
            .report_tls_handshake_done(result, self.started.elapsed());
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        if !self.reported && !std::thread::panicking() {
            self.report(Err(&io::Error::other(
                "TLS handshake cancelled before it finished",
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conntrack_core::{Recorded, RecordingHook, Registration, Role, Tracker};

    fn setup() -> (Tracker, RecordingHook, Connection) {
        let rec = RecordingHook::new();
        let tracker = Tracker::builder().hook(rec.clone()).build();
        let conn = tracker.register(Registration::new(Role::Client).category("t"));
        (tracker, rec, conn)
    }

    fn done(rec: &RecordingHook) -> Vec<(Option<TlsInfo>, Option<io::ErrorKind>)> {
        rec.events()
            .into_iter()
            .filter_map(|e| match e {
                Recorded::TlsHandshakeDone { tls, error, .. } => Some((tls, error.map(|e| e.kind))),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn finish_ok_sets_tls_and_timing() {
        let (tracker, rec, conn) = setup();
        let hs = Handshake::start(&conn, Some("example.com"));
        hs.finish(Ok(TlsInfo::new("1.3", "TLS_AES_128_GCM_SHA256")));
        let info = conn.info();
        assert_eq!(info.tls.unwrap().protocol_version, "1.3");
        assert!(info.timings.tls_handshake.is_some());
        assert!(rec
            .names()
            .ends_with(&["tls_handshake_start", "tls_handshake_done"]));
        assert_eq!(tracker.stats().total().tls_handshake_failed, 0);
    }

    #[test]
    fn fail_hands_the_error_back_unchanged_and_counts_it() {
        let (tracker, rec, conn) = setup();
        let hs = Handshake::start(&conn, None);
        let err = io::Error::new(io::ErrorKind::InvalidData, "corrupt message");
        let back = hs.fail(err);
        assert_eq!(back.kind(), io::ErrorKind::InvalidData);
        assert_eq!(back.to_string(), "corrupt message");
        assert_eq!(done(&rec), [(None, Some(io::ErrorKind::InvalidData))]);
        assert_eq!(tracker.stats().total().tls_handshake_failed, 1);
        assert!(conn.info().tls.is_none());
    }

    #[test]
    fn a_dropped_handshake_reports_cancellation_once() {
        let (tracker, rec, conn) = setup();
        drop(Handshake::start(&conn, None));
        assert_eq!(done(&rec), [(None, Some(io::ErrorKind::Other))]);
        assert_eq!(tracker.stats().total().tls_handshake_failed, 1);
        // Finished ones report nothing more when they drop.
        Handshake::start(&conn, None).finish(Ok(TlsInfo::new("1.2", "x")));
        assert_eq!(done(&rec).len(), 2);
        assert_eq!(tracker.stats().total().tls_handshake_failed, 1);
    }

    #[test]
    fn the_entry_stays_until_the_outcome_is_reported() {
        let (tracker, rec, conn) = setup();
        let hs = Handshake::start(&conn, None);
        drop(conn); // the TLS library dropped the stream on failure
        assert_eq!(tracker.len(), 1);
        let _ = hs.fail(io::ErrorKind::UnexpectedEof.into());
        assert!(tracker.is_empty());
        let close = rec
            .events()
            .into_iter()
            .find(|e| e.name() == "close")
            .unwrap();
        assert_eq!(close.error().unwrap().kind, io::ErrorKind::UnexpectedEof);
    }
}
