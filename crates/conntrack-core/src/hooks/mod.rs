//! Hooks: the [`Hook`](crate::Hook) trait, the ready-made hooks ([`Callbacks`](crate::Callbacks),
//! [`Hooks`](crate::Hooks), [`RecordingHook`](crate::RecordingHook)), the chains events are
//! fired through, and the per-call [`trace`](crate::trace) scopes. Uses only `record`.

pub(crate) mod hook;
pub(crate) mod recording;
pub mod trace;
