//! OAuth 2.0 authorization code flow with PKCE, refresh, the client credentials grant and RFC 7009
//! revocation, on the `oauth2` crate. Token endpoint answers pass through [`crate::auth::quirks::normalise`]
//! first, so that providers that bend RFC 6749 parse like the rest. Errors are classified for the
//! controller: a rejected grant needs the user again, a bad client needs the Connection fixed,
//! anything else is transient and retried with backoff.
//!
//! - [`client`]: the crate's client and the flows on it;
//! - [`transport`]: the HTTP requests and answers under it;
//! - [`classify`]: what a failure means for the account;
//! - [`identity`]: who authorized, from the `id_token` or the userinfo endpoint.

mod classify;
mod client;
pub mod identity;
mod transport;

pub use classify::{Delivery, TokenEndpointError, error_code};
pub use client::OAuthClient;
pub use transport::http_client;

#[cfg(test)]
mod tests;
