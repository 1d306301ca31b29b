//! Reconciles a Connection: validates its settings and client secret, and publishes `Ready` and
//! the `redirectUri` to register at the provider. Accounts follow through their watch on
//! Connections, so fixing a Connection un-blocks its accounts at once.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::Instrument;

use super::{Context, Error, tenancy};
use crate::api::conditions;
use crate::api::{AuthType, ClusterConnection, Connection, ConnectionStatus, Reason};
use crate::auth::form::Form;
use crate::auth::jwt;
use crate::auth::resolve as conn_auth;
use crate::store::FIELD_MANAGER;

/// How often a Ready Connection re-checks its client secret (Secrets are not watched, to keep the
/// operator from caching every Secret in the cluster).
const RECHECK: Duration = Duration::from_secs(300);
/// How soon a Connection waiting for its client secret looks again.
const RETRY: Duration = Duration::from_secs(15);

/// Problems that need no API call to find.
pub fn validate(conn: &Connection) -> Result<(), String> {
    match conn.spec.auth_type {
        AuthType::OAuth2 | AuthType::ClientCredentials => {
            conn_auth::settings(conn).map_err(|e| e.0)?;
        }
        AuthType::APIKey | AuthType::BearerToken => {
            let form = Form::of(conn).map_err(|e| e.0)?;
            if let Some(v) = &form.verify {
                let probe = form.verify_url(&Default::default()).unwrap_or_default();
                match url::Url::parse(&probe) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                    _ => return Err(format!("verify.url {:?} is not an http(s) URL", v.url)),
                }
            }
        }
        AuthType::CustomJWT => {
            let settings = conn.spec.custom_jwt.as_ref().ok_or("spec.customJWT is missing")?;
            jwt::lifetime(settings).map_err(|e| e.to_string())?;
        }
    }
    // Durations were parsed with the object; only their ranges are checked here.
    if let Some(ttl) = conn.spec.authorization_link.as_ref().and_then(|l| l.ttl.as_ref()) {
        let d = ttl.get();
        if d < jiff::SignedDuration::from_secs(60) {
            return Err(format!("authorizationLink.ttl {ttl} is shorter than a minute"));
        }
        if d > jiff::SignedDuration::from_secs(crate::signer::MAX_TOKEN_LIFETIME_SECS) {
            return Err(format!("authorizationLink.ttl {ttl} is longer than 168h"));
        }
    }
    Ok(())
}

/// Everything that decides whether accounts may use `conn`, without API calls: its spec, the
/// operator's tenancy and egress policies, and whether another namespace claimed its client.
///
/// A ClusterConnection (its Connection view) is the platform team's: the namespaced-Connection
/// policy does not apply to it, and it always holds its client against namespaced Connections.
pub fn admit(conn: &Connection, ctx: &Context) -> Result<(), (Reason, String)> {
    validate(conn).map_err(|m| (Reason::InvalidSpec, m))?;
    let refuse = |r: tenancy::Refusal| (r.reason, r.message);
    let platform = crate::api::is_cluster_view(conn);
    let policy = if platform {
        tenancy::ConnectionPolicy::Any
    } else {
        ctx.config.connection_policy
    };
    tenancy::check(conn, policy, &ctx.config.connection_hosts, &ctx.config.egress).map_err(refuse)?;
    if platform {
        return Ok(());
    }
    let mut others: Vec<Connection> = ctx
        .connections
        .state()
        .iter()
        .filter_map(|g| g.0.as_ref().ok().cloned().map(crate::api::tenant_connection))
        .collect();
    others.extend(ctx.cluster_connections.state().iter().filter_map(|g| {
        let mut view = g.0.as_ref().ok()?.as_connection(&ctx.config.namespace);
        // Ranked before every namespaced Connection.
        view.metadata.creation_timestamp = None;
        Some(view)
    }));
    tenancy::check_claims(conn, &others).map_err(refuse)
}

/// [`reconcile`] with its duration and outcome recorded in metrics.
pub async fn reconcile_measured(
    guard: Arc<crate::api::GuardedConnection>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let conn = guard.0.as_ref().map(|c| crate::api::tenant_connection(c.clone()));
    measured("connection", &guard.name_any(), conn, ctx).await
}

/// [`reconcile_measured`] for a ClusterConnection: reconciled as its Connection view (Secrets in
/// the operator's namespace), its status written back to it.
pub async fn reconcile_cluster_measured(
    guard: Arc<crate::api::GuardedClusterConnection>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let conn = guard.0.as_ref().map(|c| c.as_connection(&ctx.config.namespace));
    measured("clusterconnection", &guard.name_any(), conn, ctx).await
}

/// Reconciles a Connection (view) that matched its schema, or skips one that did not.
async fn measured<E: std::fmt::Display>(
    kind: &'static str,
    name: &str,
    conn: Result<Connection, E>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let conn = match conn {
        Ok(c) => Arc::new(c),
        Err(invalid) => {
            tracing::warn!(connection = %name, kind, error = %invalid, "ignoring an object that does not match the schema");
            return Ok(Action::await_change());
        }
    };
    let span = tracing::info_span!("reconcile", kind, connection = %name, namespace = %conn.namespace().unwrap_or_default());
    let result = reconcile(conn, ctx.clone()).instrument(span).await;
    ctx.metrics.reconciled(
        kind,
        started.elapsed(),
        result.as_ref().err().map(Error::category),
    );
    result
}

/// Validates a Connection (or a ClusterConnection's view) and publishes `Ready` and `redirectUri`.
pub async fn reconcile(conn: Arc<Connection>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = conn.namespace().unwrap_or_default();
    let mut outcome = admit(&conn, &ctx);
    if outcome.is_ok() {
        outcome = check_secrets(&conn, &ctx).await;
    }
    let (ok, reason, message) = match &outcome {
        Ok(()) => (true, Reason::Valid, "the Connection is usable".to_owned()),
        Err((reason, message)) => (false, *reason, message.clone()),
    };
    let old = conn.status.clone().unwrap_or_default();
    let cond = conditions::condition(conditions::READY, ok, reason, message, conn.metadata.generation);
    let status = ConnectionStatus {
        conditions: conditions::merge(&old.conditions, cond, jiff::Timestamp::now()),
        redirect_uri: (conn.spec.auth_type == AuthType::OAuth2)
            .then(|| conn_auth::redirect_uri(&ctx.config, &conn)),
        observed_generation: conn.metadata.generation,
    };
    if status != old {
        let cluster = crate::api::is_cluster_view(&conn);
        let kind = if cluster {
            "ClusterConnection"
        } else {
            "Connection"
        };
        let patch = json!({"apiVersion": "agentauth.dev/v1alpha1", "kind": kind, "status": status});
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        if cluster {
            let api: Api<ClusterConnection> = Api::all(ctx.client.clone());
            api.patch_status(&conn.name_any(), &pp, &Patch::Apply(&patch))
                .await
                .map_err(Error::PatchStatus)?;
        } else {
            let api: Api<Connection> = Api::namespaced(ctx.client.clone(), &ns);
            api.patch_status(&conn.name_any(), &pp, &Patch::Apply(&patch))
                .await
                .map_err(Error::PatchStatus)?;
        }
        tracing::info!(ready = ok, reason = %reason, "connection status changed");
        announce(&conn, &old, &status, kind, &ctx);
    }
    Ok(Action::requeue(match outcome {
        Ok(()) => RECHECK,
        Err((Reason::ClientSecretUnavailable, _)) => RETRY,
        Err(_) => RECHECK,
    }))
}

/// Reads the Secrets the Connection names (client secret, signing key) and checks that they work.
async fn check_secrets(conn: &Connection, ctx: &Context) -> Result<(), (Reason, String)> {
    match (conn.spec.auth_type, &conn.spec.custom_jwt) {
        (AuthType::OAuth2 | AuthType::ClientCredentials, _) => {
            conn_auth::oauth_client(&ctx.client, &ctx.config, conn)
                .await
                .map(|_| ())
                .map_err(|e| (Reason::ClientSecretUnavailable, e.0))
        }
        (AuthType::CustomJWT, Some(settings)) => {
            let key = super::obtain::signing_key(ctx, conn, &settings.signing_key_ref)
                .await
                .map_err(|e| (Reason::ClientSecretUnavailable, e.to_string()))?;
            jwt::check(settings, &key).map_err(|e| (Reason::InvalidSigningKey, e.to_string()))
        }
        _ => Ok(()),
    }
}

/// An Event when the Ready condition changes (status or reason), so `kubectl describe` and
/// event-based alerting see a Connection break or recover; an unchanged message alone is quiet.
fn announce(conn: &Connection, old: &ConnectionStatus, new: &ConnectionStatus, kind: &str, ctx: &Context) {
    let ready = |s: &ConnectionStatus| {
        conditions::find(&s.conditions, conditions::READY).map(|c| (c.status.clone(), c.reason.clone()))
    };
    let Some((status, reason)) = ready(new).filter(|r| ready(old).as_ref() != Some(r)) else {
        return;
    };
    let Ok(reason) = reason.parse::<Reason>() else {
        return;
    };
    let message = conditions::find(&new.conditions, conditions::READY)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    let mut reference = conn.object_ref(&());
    if kind == "ClusterConnection" {
        // The view carries the operator's namespace; the Event belongs to the cluster-scoped object.
        reference.kind = Some(kind.to_owned());
        reference.namespace = None;
    }
    let (type_, note) = if status == "True" {
        (EventType::Normal, "the Connection is usable".to_owned())
    } else {
        (EventType::Warning, format!("not ready: {message}"))
    };
    ctx.event_on(reference, type_, reason, "Validate", note);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use http::{Request, Response};
    use kube::Client;
    use kube::client::Body;

    use super::super::mock_api::{Calls, bearer_connection, context, record_secret, serve, token};
    use crate::api::{Connection, ConnectionStatus};

    /// Events are written by background workers: poll for them with a deadline.
    async fn events_after(calls: &Calls, n: usize) -> Vec<String> {
        // Waiting for none ends at a shorter deadline: a stray Event arrives within milliseconds.
        let wait = if n == 0 {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(5)
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let seen = calls.events.lock().unwrap().clone();
            if (n > 0 && seen.len() >= n) || tokio::time::Instant::now() > deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn reconcile(conn: Connection) -> Calls {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let record = record_secret(token("t", 0));
        let calls = serve(handle, record.clone());
        let ctx = context(Client::new(service, "default"), record, None);
        super::reconcile(Arc::new(conn), ctx).await.unwrap();
        calls
    }

    #[tokio::test]
    async fn ready_transitions_are_announced_and_a_converged_connection_is_quiet() {
        let mut fresh = bearer_connection();
        fresh.status = None;
        let calls = reconcile(fresh).await;
        assert_eq!(
            *calls.requests.lock().unwrap(),
            ["PATCH /apis/agentauth.dev/v1alpha1/namespaces/ns/connections/tool/status"]
        );
        assert_eq!(events_after(&calls, 1).await, ["Normal Valid"]);

        let mut converged = bearer_connection();
        converged.status = Some(ConnectionStatus {
            conditions: vec![crate::api::conditions::condition(
                crate::api::conditions::READY,
                true,
                crate::api::Reason::Valid,
                "the Connection is usable",
                Some(1),
            )],
            redirect_uri: None,
            observed_generation: Some(1),
        });
        let calls = reconcile(converged).await;
        assert!(calls.requests.lock().unwrap().is_empty());
        assert!(events_after(&calls, 0).await.is_empty());

        let mut broken = bearer_connection();
        broken.spec.auth_type = crate::api::AuthType::CustomJWT;
        let calls = reconcile(broken).await;
        assert_eq!(calls.requests.lock().unwrap().len(), 1);
        assert_eq!(events_after(&calls, 1).await, ["Warning InvalidSpec"]);
    }
}
