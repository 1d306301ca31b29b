//! The Connection as the Connection controller has judged it. The gateway sends a user, a code or
//! a credential only for a Connection validated in its current generation
//! ([`ready_now`](crate::auth::resolve::ready_now)), yet a request can arrive before the verdict:
//! an account's link is issued before the controller has looked at a new Connection, and a user
//! may be at the provider or on the form while the Connection is edited. Such a request waits,
//! bounded, for the verdict instead of failing at once (a sign-in code is single-use).
//!
//! Guarantees: only an edit not looked at yet is waited for, a verdict already given is final;
//! after [`WAIT`] the Connection is returned as it is, and the caller refuses it.

use std::time::Duration;

use kube::ResourceExt;
use tokio::time::Instant;

use super::context::Gateway;
use crate::api::{ConnectedAccount, Connection, ConnectionKind};
use crate::auth::resolve as conn_auth;

/// How long a request waits for the Connection controller's verdict on the current generation.
pub const WAIT: Duration = Duration::from_secs(10);
/// How often the gateway's cache is looked at while waiting.
const POLL: Duration = Duration::from_millis(100);
/// How often the API server is asked when the cache cannot tell (ClusterConnections are not
/// cached, or the cache lags behind what the API server already returned).
const API_POLL: Duration = Duration::from_millis(250);

/// The account's Connection once the Connection controller has judged its current generation,
/// or as it is when [`WAIT`] has passed. `None` when it does not exist (any longer).
pub async fn judged(gw: &Gateway, account: &ConnectedAccount) -> Result<Option<Connection>, kube::Error> {
    let deadline = Instant::now() + WAIT;
    let Some(mut conn) = conn_auth::of_account(&gw.client, &gw.config.namespace, account).await? else {
        return Ok(None);
    };
    if looked_at(&conn) {
        return Ok(Some(conn));
    }
    tracing::info!(connection = %conn.name_any(), namespace = %account.namespace().unwrap_or_default(), "waiting for the Connection controller to validate the current generation");
    let mut next_api_read = Instant::now() + API_POLL;
    while !looked_at(&conn) && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
        if let Some(newer) = cached(gw, account, &conn) {
            conn = newer;
        } else if Instant::now() >= next_api_read {
            next_api_read = Instant::now() + API_POLL;
            match conn_auth::of_account(&gw.client, &gw.config.namespace, account).await? {
                Some(c) => conn = c,
                None => return Ok(None),
            }
        }
    }
    Ok(Some(conn))
}

/// Whether the Connection controller has given its verdict on this generation.
fn looked_at(conn: &Connection) -> bool {
    conn.status.as_ref().and_then(|s| s.observed_generation) == conn.metadata.generation
}

/// The cache's copy of `conn`, if it is the same object and no older than `conn`.
fn cached(gw: &Gateway, account: &ConnectedAccount, conn: &Connection) -> Option<Connection> {
    if account.spec.connection_ref.kind != ConnectionKind::Connection {
        return None;
    }
    let ns = account.namespace()?;
    gw.cache
        .connection(&ns, &account.spec.connection_ref.name)
        .filter(|c| c.metadata.uid == conn.metadata.uid && c.metadata.generation >= conn.metadata.generation)
}
