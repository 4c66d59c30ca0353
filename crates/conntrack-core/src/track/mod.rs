//! Tracking state: the tracker and its shared state, the registry of live entries, the
//! connection handle, totals, history, the activity rings, the clock, and the settings a
//! listener or dialer brings (configs, limits). Uses `record` and `hooks`.

pub mod activity;
pub(crate) mod clock;
pub(crate) mod config;
pub(crate) mod connection;
pub(crate) mod history;
pub(crate) mod ids;
pub(crate) mod limit;
pub(crate) mod registry;
pub(crate) mod state;
pub(crate) mod stats;
pub(crate) mod sync;
pub(crate) mod tracker;
