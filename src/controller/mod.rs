//! The controllers: one for ConnectedAccounts (the lifecycle), one for Connections (validation).
//!
//! Accounts are re-triggered by their Connection, by their operator-side credential copy (the
//! gateway writes it when a user completes a flow) and by their agent Secret (deleted by hand:
//! rebuilt). All of these are read from watch caches; only Secrets the operator labels are cached.

pub mod account;
pub mod attempt;
pub mod connection;
mod context;
pub mod decide;
mod error;
mod events;
mod grants;
#[cfg(test)]
mod mock_api;
mod obtain;
mod persist;
pub mod refresh;
pub mod resolve;
pub mod schedule;
pub mod tenancy;
mod watch;

pub use context::{Context, Shared};
pub use error::Error;
pub use watch::{Controllers, Scope, run};

/// Most account reconciles in flight at once: enough to keep the API server's write pipeline full,
/// bounded so a burst of thousands of accounts does not exceed its in-flight limit.
pub const RECONCILE_CONCURRENCY: u16 = 64;
