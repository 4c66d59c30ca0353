//! hyper-util client integration (feature `hyper`).
//!
//! [`Dialer`] is a `tower::Service<Uri>`, so it plugs into hyper-util's client as its
//! connector: every connection the client opens is dialed by the tracked dialer (DNS, connect
//! and dial hooks fire, timings are kept) and the response of every request carries the
//! [`ConnectionId`] of the connection it came over, as a hyper-util "extra".
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use conntrack_core::{ConnectionId, DialerConfig, Tracker};
//! use conntrack_tokio::Dialer;
//! use http_body_util::Empty;
//! use hyper::body::Bytes;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//!
//! let tracker = Tracker::new();
//! let dialer = Dialer::new(&tracker, DialerConfig::new().category("upstream"));
//! let client: Client<Dialer, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(dialer);
//! let res = client.get("http://localhost:3000/".parse()?).await?;
//! let id = res.extensions().get::<ConnectionId>().copied();
//! println!("served over connection {id:?}: {:?}", id.and_then(|id| tracker.get(id)));
//! # Ok(())
//! # }
//! # let _ = run;
//! ```
//!
//! To keep hyper-util's own `HttpConnector` (its DNS cache, socket options), wrap it in
//! [`TrackedConnector`] instead: connections are tracked and carry their id, but only the
//! dial as a whole is reported (no DNS or per-attempt events).
//!
//! # `https://` is never sent in plain text
//!
//! [`Dialer`] and [`TrackedConnector`] are plain TCP connectors: they refuse every URI whose
//! scheme is not `http` with an `InvalidInput` error before anything is dialed, as hyper-util's
//! own `HttpConnector` does by default (`enforce_http`). For `https://`, either put a TLS layer
//! on top and hand it the plain connector wrapped in [`ForTlsLayer`] (which lets `https://`
//! through to the layer that encrypts), or use a tracked HTTPS connector that does both
//! (`HttpsConnector`, with the `tls` feature).
//!
//! # Request tracing
//!
//! [`TracedClient`] wraps the client and reports each request's phases, as Go's
//! `httptrace.ClientTrace` does: getting a connection (pooled or new, idle for how long),
//! writing the headers and the request, 1xx responses, the first response byte, putting the
//! connection back. See `docs/http-trace.md`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use conntrack_core::{Addr, ConnectionId, DialerConfig, Tracker};
use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::{Dialer, Tracked};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Connecting =
    Pin<Box<dyn Future<Output = Result<TokioIo<Tracked<TcpStream>>, BoxError>> + Send>>;

/// `Tracked<T>` reports what `T` reports, plus its [`ConnectionId`] as an extra, which the
/// client puts into every response's extensions.
impl<T: Connection> Connection for Tracked<T> {
    fn connected(&self) -> Connected {
        let connected = self.get_ref().connected();
        let h2 = connected.is_negotiated_h2();
        connected
            .extra(self.id())
            .extra(traced::HandOff::new(self.connection().downgrade(), h2))
    }
}

/// Refuses a URI that a plain TCP connector must not carry: anything but `http://`.
fn require_http(uri: &Uri) -> Result<(), BoxError> {
    match uri.scheme_str() {
        Some("http") => Ok(()),
        Some(scheme) => Err(Box::new(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "refusing to send a {scheme}:// request over a plain TCP connector ({}): \
                 use a TLS connector, or wrap this one in ForTlsLayer under a TLS layer",
                shown(uri)
            ),
        ))),
        None => Err(Box::new(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("no scheme in {}", shown(uri)),
        ))),
    }
}

/// A plain connector ([`Dialer`] or [`TrackedConnector`]) that lets `https://` URIs through,
/// for use only as the inner connector of a TLS layer (for example hyper-rustls'
/// `HttpsConnectorBuilder::wrap_connector`), which encrypts the connection it gets.
///
/// The plain connectors themselves refuse every scheme but `http` (see the
/// [module docs](self)); this wrapper is the explicit opt-out, the counterpart of hyper-util's
/// `HttpConnector::enforce_http(false)`. Never give it to a client directly: it would send an
/// `https://` request unencrypted. (A `TrackedConnector::wrap` of your own `HttpConnector`
/// also needs that connector's `enforce_http(false)`: its own check still refuses.)
#[derive(Debug, Clone)]
pub struct ForTlsLayer<C>(pub C);

mod sealed {
    /// Connecting a URI without the scheme check (the check lives in the public `Service`
    /// impls). Sealed: only this crate's plain connectors implement it.
    pub trait ConnectUri {
        fn connect_uri(&mut self, uri: http::Uri) -> super::Connecting;
    }
}
use sealed::ConnectUri;

impl<C> tower_service::Service<Uri> for ForTlsLayer<C>
where
    C: ConnectUri + tower_service::Service<Uri, Error = BoxError>,
{
    type Response = TokioIo<Tracked<TcpStream>>;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        self.0.connect_uri(uri)
    }
}

/// Writes `uri` without its user info: scheme, host and port, path and query, whichever it has.
pub(crate) fn uri_text(uri: &Uri, s: &mut String) {
    if let Some(scheme) = uri.scheme_str() {
        s.push_str(scheme);
        s.push_str("://");
    }
    if let Some(authority) = uri.authority() {
        let text = authority.as_str();
        // `host[:port]` as written, unless it carries user info (`user:password@host`), which
        // is left out: taking it whole spares parsing the port again on every request.
        if text.contains('@') {
            s.push_str(authority.host());
            if let Some(port) = authority.port() {
                s.push(':');
                s.push_str(port.as_str());
            }
        } else {
            s.push_str(text);
        }
    }
    match uri.path_and_query() {
        Some(pq) => s.push_str(pq.as_str()),
        None if uri.scheme().is_some() => s.push('/'),
        None => {}
    }
}

/// `uri` as text for an error message, without its user info.
pub(crate) fn shown(uri: &Uri) -> String {
    let mut s = String::new();
    uri_text(uri, &mut s);
    s
}

/// A URI's authority when it is written `host:port` (no user info, a port in digits): the
/// whole text, the host (bracketed if IPv6) and the port, found with one backward scan, where
/// `Uri::host` and `Uri::port_u16` scan the authority again for each.
pub(crate) fn host_port(uri: &Uri) -> Option<(&str, &str, u16)> {
    let text = uri.authority()?.as_str();
    let b = text.as_bytes();
    // The port: the digits at the end, after a ':' (no leading zero, as `port_u16` would
    // print it), at most 65535.
    let mut i = b.len();
    let mut port: u32 = 0;
    let mut scale: u32 = 1;
    while i > 0 && b[i - 1].is_ascii_digit() {
        i -= 1;
        if scale > 10_000 {
            return None;
        }
        port += u32::from(b[i] - b'0') * scale;
        scale *= 10;
    }
    let digits = b.len() - i;
    if digits == 0 || i < 2 || b[i - 1] != b':' || (digits > 1 && b[i] == b'0') {
        return None;
    }
    let port = u16::try_from(port).ok()?;
    // The host: no user info, and a ':' only inside an IPv6 literal's brackets.
    let host = &b[..i - 1];
    let bracketed = host.first() == Some(&b'[') && host.last() == Some(&b']');
    if host.iter().any(|&c| c == b'@' || (c == b':' && !bracketed)) {
        return None;
    }
    Some((text, &text[..i - 1], port))
}

/// `"host:port"` of a URI, with the scheme's default port.
pub(crate) fn target_of(uri: &Uri) -> io::Result<String> {
    if let Some((text, _, _)) = host_port(uri) {
        return Ok(text.to_owned());
    }
    let host = uri.host().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("no host in {}", shown(uri)),
        )
    })?;
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    Ok(if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

impl tower_service::Service<Uri> for Dialer {
    type Response = TokioIo<Tracked<TcpStream>>;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        if let Err(e) = require_http(&uri) {
            return Box::pin(std::future::ready(Err(e)));
        }
        self.connect_uri(uri)
    }
}

impl ConnectUri for Dialer {
    fn connect_uri(&mut self, uri: Uri) -> Connecting {
        let dialer = self.clone();
        // The dial starts at the future's first poll, which hyper-util may leave to a
        // background task: keep the caller's trace scope for it.
        Box::pin(conntrack_core::trace::capture().scope(async move {
            let target = target_of(&uri)?;
            Ok(TokioIo::new(dialer.connect(&target).await?))
        }))
    }
}

/// hyper-util's `HttpConnector`, or any connector answering with `TokioIo<TcpStream>`, with its
/// connections tracked.
///
/// The inner connector does the connecting (its DNS cache, socket options, timeouts); this one
/// reports the dial as a whole through [`Tracker::dial`]: `on_dial` with its duration and, on
/// failure, the error (counted as failed), or the new connection, which is registered with the
/// target `host:port` and returned as a [`Tracked`] stream whose `connected()` carries the
/// [`ConnectionId`]. There are no DNS or per-attempt events (use [`Dialer`] as the connector
/// for those). The inner response must be `TokioIo<TcpStream>` so that the socket's addresses
/// can be read; its error is returned unchanged.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use conntrack_core::{DialerConfig, Tracker};
/// use conntrack_tokio::{hyper::connection_id, TrackedConnector};
/// use http_body_util::Empty;
/// use hyper::body::Bytes;
/// use hyper_util::client::legacy::{connect::HttpConnector, Client};
/// use hyper_util::rt::TokioExecutor;
///
/// let tracker = Tracker::new();
/// let mut http = HttpConnector::new();
/// http.set_connect_timeout(Some(Duration::from_secs(2)));
/// let connector = TrackedConnector::wrap(&tracker, http, DialerConfig::new().category("upstream"));
/// let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
/// let res = client.get("http://127.0.0.1:3000/".parse()?).await?;
/// println!("{:?}", connection_id(&res).and_then(|id| tracker.get(id)));
/// # Ok(())
/// # }
/// # let _ = run;
/// ```
#[derive(Debug, Clone)]
pub struct TrackedConnector<C = HttpConnector> {
    inner: C,
    tracker: Tracker,
    config: DialerConfig,
}

impl TrackedConnector {
    /// Wraps a new `HttpConnector`. The connector refuses `https://` (see the
    /// [module docs](self)); under a TLS layer, wrap it in [`ForTlsLayer`].
    pub fn new(tracker: &Tracker, config: DialerConfig) -> Self {
        let mut http = HttpConnector::new();
        // The scheme is checked by this connector's own `Service` impl (`ForTlsLayer` skips
        // that check), so the inner connector must not check it a second time.
        http.enforce_http(false);
        TrackedConnector::wrap(tracker, http, config)
    }
}

impl<C> TrackedConnector<C> {
    /// Wraps `inner`. An `HttpConnector` given here keeps its own scheme check: to use the
    /// result under a TLS layer (in [`ForTlsLayer`]), give it one with
    /// `enforce_http(false)`, as [`TrackedConnector::new`] does.
    pub fn wrap(tracker: &Tracker, inner: C, config: DialerConfig) -> Self {
        TrackedConnector {
            inner,
            tracker: tracker.clone(),
            config,
        }
    }
}

impl<C> tower_service::Service<Uri> for TrackedConnector<C>
where
    C: tower_service::Service<Uri, Response = TokioIo<TcpStream>> + Send,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = TokioIo<Tracked<TcpStream>>;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        if let Err(e) = require_http(&uri) {
            return Box::pin(std::future::ready(Err(e)));
        }
        self.connect_uri(uri)
    }
}

impl<C> ConnectUri for TrackedConnector<C>
where
    C: tower_service::Service<Uri, Response = TokioIo<TcpStream>> + Send,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    fn connect_uri(&mut self, uri: Uri) -> Connecting {
        let target = target_of(&uri).unwrap_or_else(|_| shown(&uri));
        let mut dial = self.tracker.dial(&self.config, target);
        // The inner connector's future is made now (`call` needs `&mut self`) but polled only
        // once the config's connection limit admits the dial: connectors' futures are lazy,
        // so a dial waiting for a slot has not connected yet.
        let connecting = self.inner.call(uri);
        let config = self.config.clone();
        Box::pin(async move {
            dial.admit(&config).await?;
            match connecting.await {
                Ok(io) => {
                    let stream = io.into_inner();
                    // The inner connector made the connection: track it even if an address
                    // cannot be read back.
                    let local = stream.local_addr().map_or(Addr::Unknown, Addr::from);
                    let remote = stream.peer_addr().map_or(Addr::Unknown, Addr::from);
                    Ok(TokioIo::new(crate::dialer::tcp_tracked(
                        stream,
                        dial.established(local, remote),
                    )))
                }
                Err(e) => {
                    let e: BoxError = e.into();
                    dial.failed(&io_error_for_hooks(&*e));
                    Err(e)
                }
            }
        })
    }
}

/// What the hooks see of a connector's error: the first `io::Error` in its source chain
/// (hyper-util's `ConnectError` wraps the socket's). An OS error is passed on as that OS error
/// (`EMFILE` stays `raw_os_error() == Some(24)`, `error.type` `os_error_24`), since its code is
/// what identifies it and cannot be carried by a rebuilt error; any other keeps its kind, with
/// the whole chain as the message. The caller still gets the connector's error itself.
fn io_error_for_hooks(e: &(dyn std::error::Error + 'static)) -> io::Error {
    let mut kind = io::ErrorKind::Other;
    let mut message = e.to_string();
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if let Some(code) = io.raw_os_error() {
                return io::Error::from_raw_os_error(code);
            }
            kind = io.kind();
            break;
        }
        source = err.source();
        if let Some(next) = source {
            message = format!("{message}: {next}");
        }
    }
    io::Error::new(kind, message)
}

/// The id of the connection a response came over, if the client's connector is tracked.
pub fn connection_id<B>(response: &http::Response<B>) -> Option<ConnectionId> {
    response.extensions().get::<ConnectionId>().copied()
}

mod traced;
pub use traced::{
    RequestBody, ResponseBody, ResponseFuture, TracedClient, DEFAULT_EXPECT_CONTINUE_TIMEOUT,
};

#[cfg(feature = "tls")]
mod https;
#[cfg(feature = "tls")]
pub use https::{HttpsConnector, MaybeHttpsStream};

#[cfg(test)]
mod tests {
    use super::io_error_for_hooks;
    use std::io;

    /// An error wrapping another, as hyper-util's `ConnectError` does.
    #[derive(Debug)]
    struct Wrapper(io::Error);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("tcp connect error")
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// The fast path agrees with `Uri::host` and `Uri::port_u16` wherever it answers, and
    /// answers for the usual `host:port`.
    #[test]
    fn host_port_agrees_with_the_uri_parser() {
        use super::host_port;
        let cases = [
            ("http://127.0.0.1:8080/x", true),
            ("http://[::1]:443/", true),
            ("https://example.test:1/", true),
            ("http://example.test:65535/", true),
            ("http://example.test:65536/", false),
            ("http://example.test:08080/", false),
            ("http://example.test/", false),
            ("http://user:pw@example.test:81/", false),
            ("http://example.test:0/", true),
        ];
        for (text, fast) in cases {
            let Ok(uri) = text.parse::<http::Uri>() else {
                continue;
            };
            let got = host_port(&uri);
            assert_eq!(got.is_some(), fast, "{text}");
            if let Some((whole, host, port)) = got {
                assert_eq!(whole, uri.authority().unwrap().as_str(), "{text}");
                assert_eq!(Some(host), uri.host(), "{text}");
                assert_eq!(Some(port), uri.port_u16(), "{text}");
            }
        }
    }

    #[test]
    fn os_errors_keep_their_code() {
        let e = Wrapper(io::Error::from_raw_os_error(24));
        let seen = io_error_for_hooks(&e);
        assert_eq!(seen.raw_os_error(), Some(24));
    }

    #[test]
    fn other_errors_keep_kind_and_chain() {
        let e = Wrapper(io::Error::new(io::ErrorKind::TimedOut, "slow"));
        let seen = io_error_for_hooks(&e);
        assert_eq!(seen.kind(), io::ErrorKind::TimedOut);
        assert_eq!(seen.to_string(), "tcp connect error: slow");
    }
}
