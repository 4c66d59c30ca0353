//! tonic integration (feature `tonic`): serve gRPC on a tracked [`Listener`].
//!
//! `Tracked<T>` implements tonic's `Connected` by forwarding to `T`, so `Request::remote_addr()`
//! and friends keep working; [`Listener::incoming`] is the stream `serve_with_incoming` takes.
//!
//! ```no_run
//! use std::convert::Infallible;
//!
//! use conntrack_core::{ListenerConfig, Tracker};
//! use conntrack_tokio::Listener;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let tracker = Tracker::new();
//!     let inner = tokio::net::TcpListener::bind("127.0.0.1:50051").await?;
//!     let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("grpc"));
//!     // Your generated service goes here (`GreeterServer::new(greeter)`); any tower service
//!     // of tonic's request and response types will do.
//!     let svc = tower::service_fn(|_req: http::Request<tonic::body::Body>| async {
//!         Ok::<_, Infallible>(http::Response::new(tonic::body::Body::empty()))
//!     });
//!     tonic::transport::Server::builder()
//!         .serve_with_incoming(svc, listener.incoming())
//!         .await?;
//!     Ok(())
//! }
//! ```

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tonic::transport::server::Connected;

use crate::listener::{is_connection_error, ACCEPT_ERROR_PAUSE};
use crate::{Accept, Listener, Tracked};

impl<T: Connected> Connected for Tracked<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.get_ref().connect_info()
    }
}

/// The accepted connections of a [`Listener`] as a stream, from [`Listener::incoming`].
///
/// Accept errors are yielded (after being counted and reported) like any stream of
/// `io::Result`; tonic logs them and polls again at once. So that its accept loop does not spin
/// while an error lasts (`EMFILE` when the process is out of descriptors), the stream waits
/// 100 ms after yielding an error that is not about one connection before it accepts again, as
/// axum does. Errors about one connection (`ConnectionAborted`, `ConnectionReset`,
/// `ConnectionRefused`) are retried at once.
#[derive(Debug)]
pub struct Incoming<L: Accept> {
    listener: Listener<L>,
    /// Armed after a yielded error; the next accept waits for it.
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Peer address → connection, kept once [`exchange_layer`](Incoming::exchange_layer) asked.
    peers: Option<Peers>,
}

/// The connections of one [`Incoming`] by peer address: tonic hands each request the
/// connection's `TcpConnectInfo` (the peer's address), not our id.
type Peers = std::sync::Arc<
    std::sync::Mutex<std::collections::HashMap<std::net::SocketAddr, conntrack_core::ConnectionId>>,
>;

impl<L: Accept> Listener<L> {
    /// The accepted connections as a `Stream`, for `tonic::transport::Server::serve_with_incoming`.
    pub fn incoming(self) -> Incoming<L> {
        Incoming {
            listener: self,
            pause: None,
            peers: None,
        }
    }
}

impl<L: Accept> Incoming<L> {
    /// A layer for the tonic server serving this stream (`Server::builder().layer(..)`) that
    /// marks each request as an exchange on its tracked connection
    /// ([`ExchangeLayer`](crate::exchange::ExchangeLayer)). tonic tells a request its peer's
    /// address (`TcpConnectInfo`); from then on this stream keeps which tracked connection
    /// each peer address belongs to. Call it before handing the stream to tonic.
    #[cfg(feature = "server")]
    pub fn exchange_layer(&mut self) -> crate::exchange::ExchangeLayer {
        let peers = self.peers.get_or_insert_with(Peers::default).clone();
        let tracker = self.listener.tracker().clone();
        crate::exchange::ExchangeLayer::with_finder(self.listener.tracker(), move |ext| {
            let remote = ext
                .get::<tonic::transport::server::TcpConnectInfo>()?
                .remote_addr()?;
            let id = *peers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&remote)?;
            // A stale entry (the peer's port reused by a new connection) is not trusted.
            let live = tracker.get(id)?;
            (live.remote_addr.socket_addr() == Some(remote)).then_some(id)
        })
    }

    /// The listener.
    pub fn get_ref(&self) -> &Listener<L> {
        &self.listener
    }

    /// Unwraps the listener.
    pub fn into_inner(self) -> Listener<L> {
        self.listener
    }
}

impl<L: Accept + Unpin> futures_core::Stream for Incoming<L> {
    type Item = io::Result<Tracked<L::Stream>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(pause) = &mut this.pause {
            ready!(pause.as_mut().poll(cx));
            this.pause = None;
        }
        let r = ready!(this.listener.poll_accept(cx));
        if let Err(e) = &r {
            if !is_connection_error(e) {
                this.pause = Some(Box::pin(tokio::time::sleep(ACCEPT_ERROR_PAUSE)));
            }
        }
        if let (Some(peers), Ok((stream, _))) = (&this.peers, &r) {
            if let Some(remote) = stream.info().remote_addr.socket_addr() {
                let tracker = this.listener.tracker();
                let mut map = peers
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                // Keep the map to about the live connections: drop the closed ones now and then.
                if map.len() >= 1024 && map.len() > 2 * tracker.len() {
                    map.retain(|_, id| tracker.lookup(*id).is_some());
                }
                map.insert(remote, stream.id());
            }
        }
        Poll::Ready(Some(r.map(|(stream, _peer)| stream)))
    }
}
