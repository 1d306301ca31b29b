//! Which Connection an account uses, from the watch caches: a Connection in its own namespace,
//! or a ClusterConnection that admits its namespace (seen as a Connection in the operator's
//! namespace, where its Secret references resolve). No API calls.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::Context;
use super::attempt::Rotation;
use super::decide::{ConnectionIssue, ConnectionView, Source};
use crate::api::conditions;
use crate::api::{ConnectedAccount, Connection, ConnectionKind, Reason, RotationPolicy, RotationSettings};
use crate::auth::resolve as conn_auth;

/// Default `spec.authorizationLink.ttl`.
const DEFAULT_LINK_TTL: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

/// Resolves the account's Connection (or the Connection view of its ClusterConnection) from the
/// caches, and checks that it may be used now.
pub fn connection(
    account: &ConnectedAccount,
    ctx: &Context,
) -> Result<(Arc<Connection>, ConnectionView), ConnectionIssue> {
    let name = &account.spec.connection_ref.name;
    let conn = match account.spec.connection_ref.kind {
        ConnectionKind::Connection => namespaced(account, ctx)?,
        ConnectionKind::ClusterConnection => cluster(account, ctx)?,
    };
    // The spec is checked here too, so that editing a Connection does not flip its accounts to
    // ERROR (and void their links) while the Connection controller catches up. What only the
    // Connection controller can see (its client secret) comes from its status.
    let not_ready = |message: String| ConnectionIssue {
        reason: Reason::ConnectionNotReady,
        message,
    };
    if let Err((_, m)) = super::connection::admit(&conn, ctx) {
        return Err(not_ready(format!("Connection {name} is not usable: {m}")));
    }
    let status = conn.status.as_ref();
    let ready = status.and_then(|s| conditions::find(&s.conditions, conditions::READY));
    let current = status.and_then(|s| s.observed_generation) == conn.metadata.generation;
    match ready {
        // Not looked at by the Connection controller yet: its spec is valid, so go ahead (its
        // client secret is checked there, and its verdict follows through the watch).
        None => {}
        Some(c)
            if c.status != "True" && (current || c.reason == Reason::ClientSecretUnavailable.as_str()) =>
        {
            return Err(not_ready(format!(
                "Connection {name} is not ready: {}",
                c.message
            )));
        }
        Some(_) => {}
    }
    let source = match (&account.spec.credentials_ref, conn.spec.auth_type) {
        (Some(_), t) if t.form() => Source::SecretRef,
        (Some(_), t) => {
            return Err(ConnectionIssue {
                reason: Reason::CredentialsRefUnsupported,
                message: format!(
                    "spec.credentialsRef needs an APIKey or BearerToken Connection; {name} is {t:?}"
                ),
            });
        }
        (None, t) if t.interactive() => Source::Link,
        (None, _) => Source::Operator,
    };
    let duration = |d: Option<&crate::api::Duration>| d.map(crate::api::Duration::get);
    let settings = conn_auth::settings(&conn).ok();
    let view = ConnectionView {
        source,
        link_ttl: duration(conn.spec.authorization_link.as_ref().and_then(|l| l.ttl.as_ref()))
            .unwrap_or(DEFAULT_LINK_TTL)
            // The signer caps every token at this; the status expiry must match the link's.
            .min(jiff::SignedDuration::from_secs(
                crate::signer::MAX_TOKEN_LIFETIME_SECS,
            )),
        refresh_before: duration(conn.spec.refresh.as_ref().and_then(|r| r.before.as_ref())),
        grant: settings
            .as_ref()
            .filter(|_| conn.spec.auth_type == crate::api::AuthType::OAuth2)
            .map(|s| s.grant()),
        scopes: settings.map(|s| s.scopes).unwrap_or_default(),
        rotation: rotation(&conn),
        delivery: conn.spec.delivery,
        platform: crate::api::is_cluster_view(&conn),
        // The schema bounds it; clamped again so no edited-around value reaches the arithmetic.
        refresh_timeout: duration(conn.spec.refresh.as_ref().and_then(|r| r.timeout.as_ref()))
            .unwrap_or(DEFAULT_REFRESH_TIMEOUT)
            .clamp(
                jiff::SignedDuration::from_secs(1),
                jiff::SignedDuration::from_mins(10),
            ),
    };
    Ok((conn, view))
}

/// Default `spec.refresh.timeout`: generous, since giving up on a strict provider costs a link.
const DEFAULT_REFRESH_TIMEOUT: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

/// The Connection's `spec.refresh.rotation`, else its preset's, else `Strict`: a provider the
/// operator knows nothing about is assumed to revoke a grant whose used token comes back.
fn rotation(conn: &Connection) -> Rotation {
    let preset = conn
        .spec
        .provider
        .as_deref()
        .and_then(crate::auth::catalog::lookup)
        .and_then(|p| p.rotation.as_ref());
    let set = conn
        .spec
        .refresh
        .as_ref()
        .and_then(|r| r.rotation.as_ref())
        .or(preset);
    match set {
        Some(RotationSettings {
            policy: RotationPolicy::None,
            ..
        }) => Rotation::None,
        Some(RotationSettings {
            policy: RotationPolicy::Grace,
            window: Some(w),
        }) => Rotation::Grace(
            w.get()
                .clamp(jiff::SignedDuration::ZERO, jiff::SignedDuration::from_hours(24)),
        ),
        _ => Rotation::Strict,
    }
}

fn namespaced(account: &ConnectedAccount, ctx: &Context) -> Result<Arc<Connection>, ConnectionIssue> {
    let ns = account.namespace().unwrap_or_default();
    let name = &account.spec.connection_ref.name;
    let guard = ctx
        .connections
        .get(&ObjectRef::new(name).within(&ns))
        .ok_or_else(|| ConnectionIssue {
            reason: Reason::ConnectionNotFound,
            message: format!("Connection {name} does not exist in namespace {ns}"),
        })?;
    match &guard.0 {
        Ok(c) => Ok(Arc::new(crate::api::tenant_connection(c.clone()))),
        Err(invalid) => Err(ConnectionIssue {
            reason: Reason::ConnectionNotReady,
            message: format!("Connection {name} does not match the schema: {invalid}"),
        }),
    }
}

fn cluster(account: &ConnectedAccount, ctx: &Context) -> Result<Arc<Connection>, ConnectionIssue> {
    let ns = account.namespace().unwrap_or_default();
    let name = &account.spec.connection_ref.name;
    let guard = ctx
        .cluster_connections
        .get(&ObjectRef::new(name))
        .ok_or_else(|| ConnectionIssue {
            reason: Reason::ConnectionNotFound,
            message: format!("ClusterConnection {name} does not exist"),
        })?;
    let cc = guard.0.as_ref().map_err(|invalid| ConnectionIssue {
        reason: Reason::ConnectionNotReady,
        message: format!("ClusterConnection {name} does not match the schema: {invalid}"),
    })?;
    let labels = ctx
        .namespaces
        .get(&ObjectRef::new(&ns))
        .and_then(|n| n.metadata.labels.clone())
        .unwrap_or_default();
    if !cc.admits(&labels) {
        return Err(ConnectionIssue {
            reason: Reason::NamespaceNotAllowed,
            message: format!(
                "ClusterConnection {name} does not admit namespace {ns} (spec.namespaceSelector)"
            ),
        });
    }
    Ok(Arc::new(cc.as_connection(&ctx.config.namespace)))
}
