//! The locks and flags of the registry, the drain waiters and the hook list, from std or, when
//! built with `--cfg loom`, from [loom](https://docs.rs/loom), whose model checker then explores
//! the interleavings of every operation on them (`tests/loom.rs`).
//!
//! Everything else stays on std's types, which loom runs as plain sequentially consistent
//! memory: the counters and the clock, and the drain futures' waiter count. That count and the
//! close counters form a store-buffer handshake that is correct only because both sides are
//! `SeqCst`, and loom weakens `SeqCst` to acquire/release (a documented limitation), so on its
//! atomics it would report a lost wake-up that `SeqCst` rules out.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::AtomicBool;
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::AtomicBool;
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};
