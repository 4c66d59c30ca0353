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
pub struct Incoming<L> {
    listener: Listener<L>,
    /// Armed after a yielded error; the next accept waits for it.
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<L: Accept> Listener<L> {
    /// The accepted connections as a `Stream`, for `tonic::transport::Server::serve_with_incoming`.
    pub fn incoming(self) -> Incoming<L> {
        Incoming {
            listener: self,
            pause: None,
        }
    }
}

impl<L> Incoming<L> {
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
        Poll::Ready(Some(r.map(|(stream, _peer)| stream)))
    }
}
