//! Runnable examples for the conntrack crates live in `examples/`; run the main one with
//! `cargo run --release -p conntrack-examples --example demo`.
//!
//! This library only compiles the Rust code blocks of the README and the documents in `docs/`
//! as doctests, so they cannot drift from the code.

/// The README's code blocks, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// `docs/hooks.md`'s code blocks, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/hooks.md")]
pub struct HooksDoctests;

/// `docs/integrations.md`'s code blocks, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/integrations.md")]
pub struct IntegrationsDoctests;

/// `docs/tls.md`'s code blocks, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/tls.md")]
pub struct TlsDoctests;

/// `docs/observability.md`'s code blocks, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/observability.md")]
pub struct ObservabilityDoctests;

/// `docs/control.md`'s code blocks, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/control.md")]
pub struct ControlDoctests;

/// `docs/architecture.md`'s code blocks, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/architecture.md")]
pub struct ArchitectureDoctests;
