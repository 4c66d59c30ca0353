//! Emitters on top: renderings (text, JSON, the debug page's HTML and pictures) and the
//! ready hooks for `metrics` and `tracing`. Uses every layer below.

pub(crate) mod format;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(any(feature = "metrics", feature = "tracing"))]
pub(crate) mod otel;
pub(crate) mod pictures;
pub mod render;
pub(crate) mod snapshot;
#[cfg(feature = "tracing")]
pub mod tracing;
