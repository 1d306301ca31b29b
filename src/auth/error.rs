//! The error every auth module reports an unusable Connection with: its own words, safe to show
//! in the Connection's status. Kept apart so that the catalog, the settings and the flows can all
//! use it without depending on each other.

/// A Connection whose OAuth 2.0 settings cannot be used. The message is shown in its status.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ConfigError(pub String);
