//! [`HttpsConnector`]: a tracked HTTPS connector for hyper-util (features `hyper` and `tls`).

use std::fmt;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use conntrack_core::{ConnectionId, DialerConfig, Tracker};
use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::{target_of, traced::HandOff, BoxError};
use crate::dns::BoxFuture;
use crate::tls::{ClientTlsStream, TlsConnector};
use crate::{Dialer, Tracked};

/// A tracked HTTPS connector for hyper-util's client: [`Dialer`] for TCP (DNS, connect and
/// dial hooks), then a TLS handshake through [`TlsConnector`] (TLS hooks, the connection's
/// `TlsInfo` and handshake time), with ALPN `h2` and `http/1.1`.
///
/// When the server picks `h2` the client speaks HTTP/2 over the connection (hyper-util's
/// `Connected::negotiated_h2`); every connection carries its [`ConnectionId`] as an extra, so
/// [`TracedClient`](super::TracedClient) traces requests over it. `http://` URIs are dialed in
/// plain TCP unless [`https_only`](HttpsConnector::https_only) is set; any other scheme is
/// refused.
///
/// ```no_run
/// # async fn run(tls: std::sync::Arc<rustls::ClientConfig>) -> Result<(), Box<dyn std::error::Error>> {
/// use conntrack_core::{DialerConfig, Tracker};
/// use conntrack_tokio::hyper::{HttpsConnector, TracedClient};
/// use http_body_util::Empty;
/// use hyper::body::Bytes;
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
///
/// let tracker = Tracker::new();
/// let https = HttpsConnector::new(&tracker, DialerConfig::new().category("upstream"), tls);
/// let client = TracedClient::<_, Empty<Bytes>>::new(
///     &tracker,
///     Client::builder(TokioExecutor::new()).build(https),
/// );
/// let res = client.get("https://example.com/".parse()?).await?;
/// # drop(res);
/// # Ok(())
/// # }
/// # let _ = run;
/// ```
#[derive(Clone)]
pub struct HttpsConnector {
    dialer: Dialer,
    tls: TlsConnector,
    https_only: bool,
}

impl fmt::Debug for HttpsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpsConnector")
            .field("dialer", &self.dialer)
            .field("https_only", &self.https_only)
            .finish_non_exhaustive()
    }
}

impl HttpsConnector {
    /// Dials with a new [`Dialer`] on `tracker` and `config`, and handshakes with `tls`. If
    /// `tls` asks for no ALPN protocol, it is given `h2` and `http/1.1` (to speak HTTP/1 only,
    /// set `alpn_protocols` to `http/1.1` yourself).
    pub fn new(tracker: &Tracker, config: DialerConfig, tls: Arc<rustls::ClientConfig>) -> Self {
        HttpsConnector::from_dialer(Dialer::new(tracker, config), tls)
    }

    /// As [`new`](HttpsConnector::new), over an existing dialer (its resolver and config).
    pub fn from_dialer(dialer: Dialer, mut tls: Arc<rustls::ClientConfig>) -> Self {
        if tls.alpn_protocols.is_empty() {
            Arc::make_mut(&mut tls).alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        }
        HttpsConnector {
            dialer,
            tls: TlsConnector::from(tls),
            https_only: false,
        }
    }

    /// Refuses `http://` URIs too (only `https://` is dialed).
    #[must_use]
    pub fn https_only(mut self, yes: bool) -> Self {
        self.https_only = yes;
        self
    }

    /// The dialer.
    pub fn dialer(&self) -> &Dialer {
        &self.dialer
    }
}

fn refused(uri: &Uri, why: &str) -> BoxError {
    Box::new(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("refusing {}: {why}", super::shown(uri)),
    ))
}

impl tower_service::Service<Uri> for HttpsConnector {
    type Response = TokioIo<MaybeHttpsStream>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") if !self.https_only => false,
            Some("http") => {
                return Box::pin(std::future::ready(Err(refused(
                    &uri,
                    "this connector is https-only",
                ))))
            }
            _ => {
                return Box::pin(std::future::ready(Err(refused(
                    &uri,
                    "not an http:// or https:// URI",
                ))))
            }
        };
        let dialer = self.dialer.clone();
        let tls = self.tls.clone();
        // The dial starts at the future's first poll, which hyper-util may leave to a
        // background task: keep the caller's trace scope for it (and the TLS handshake).
        Box::pin(conntrack_core::trace::capture().scope(async move {
            let target = target_of(&uri)?;
            let tcp = dialer.connect(&target).await?;
            if !https {
                return Ok(TokioIo::new(MaybeHttpsStream::Http(tcp)));
            }
            let host = uri.host().unwrap_or_default();
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            let stream = tls.connect(host, tcp).await?;
            Ok(TokioIo::new(MaybeHttpsStream::Https(Box::new(stream))))
        }))
    }
}

/// A connection of [`HttpsConnector`]: plain TCP for `http://`, TLS for `https://`, tracked
/// either way.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum MaybeHttpsStream {
    /// Plain TCP.
    Http(Tracked<TcpStream>),
    /// TLS over TCP.
    Https(Box<ClientTlsStream<TcpStream>>),
}

impl MaybeHttpsStream {
    /// The tracked connection's id.
    pub fn id(&self) -> ConnectionId {
        match self {
            MaybeHttpsStream::Http(s) => s.id(),
            MaybeHttpsStream::Https(s) => s.id(),
        }
    }

    /// Whether the server chose HTTP/2 by ALPN.
    pub fn is_h2(&self) -> bool {
        match self {
            MaybeHttpsStream::Http(_) => false,
            MaybeHttpsStream::Https(s) => s.get_ref().1.alpn_protocol() == Some(b"h2"),
        }
    }
}

impl Connection for MaybeHttpsStream {
    fn connected(&self) -> Connected {
        match self {
            MaybeHttpsStream::Http(s) => s.connected(),
            MaybeHttpsStream::Https(s) => {
                let tcp = s.get_ref().0;
                let h2 = self.is_h2();
                let connected = tcp.get_ref().connected();
                let connected = if h2 {
                    connected.negotiated_h2()
                } else {
                    connected
                };
                connected
                    .extra(tcp.id())
                    .extra(HandOff::new(tcp.connection().downgrade(), h2))
            }
        }
    }
}

impl AsyncRead for MaybeHttpsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeHttpsStream::Http(s) => Pin::new(s).poll_read(cx, buf),
            MaybeHttpsStream::Https(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeHttpsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeHttpsStream::Http(s) => Pin::new(s).poll_write(cx, buf),
            MaybeHttpsStream::Https(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeHttpsStream::Http(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeHttpsStream::Https(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeHttpsStream::Http(s) => s.is_write_vectored(),
            MaybeHttpsStream::Https(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeHttpsStream::Http(s) => Pin::new(s).poll_flush(cx),
            MaybeHttpsStream::Https(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeHttpsStream::Http(s) => Pin::new(s).poll_shutdown(cx),
            MaybeHttpsStream::Https(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}
