//! What `kubectl agentauth` prints: pure functions of the objects read from the cluster.
//!
//! Nothing here reads credentials: the plugin only ever fetches the Secret's metadata, and the
//! human-readable status shows the link's expiry, never the link. One file per job: [`status`]
//! (the report), [`events`] (the Events in it), [`link`] (`link` and `reauthorize`), [`connect`]
//! (the account of a user) and [`human`] (how durations, times and conditions read).

mod connect;
mod events;
#[cfg(test)]
mod fixtures;
mod human;
mod link;
mod status;

pub use connect::{
    account_manifest, account_name, connect_json, connect_text, fallback_name, is_active, is_for, settled,
    stuck,
};
pub use events::{EVENTS_SHOWN, EventLine, events_from_core, events_from_v1, recent_events};
pub use human::{human_duration, state_name};
pub use link::{
    check_reauthorizable, current_link, link_for_request, link_warning, reauthorize_patch,
    reauthorize_requested, wait_detail,
};
pub use status::{ConnectionInfo, StatusView, secret_name, status_json, status_text};
