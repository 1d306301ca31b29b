//! `link` and `reauthorize`: the current authorization link or why there is none, and the
//! annotation that asks the operator for a new one.

use jiff::Timestamp;
use kube::ResourceExt;
use serde_json::json;

use super::human::{condition_text, ns_flag, reason_message, state_name};
use crate::api::conditions::{self, READY};
use crate::api::{AccountState, ConnectedAccount, REAUTHORIZE_ANNOTATION};
use crate::plugin::error::Error;

/// `link`: the current authorization link, or why there is none and what to do.
pub fn current_link(account: &ConnectedAccount, namespace: &str) -> Result<String, Error> {
    let status = account.status.clone().unwrap_or_default();
    if let Some(link) = status.authorization_link {
        return Ok(link);
    }
    let name = account.name_any();
    let ns = ns_flag(namespace);
    let why = conditions::find(&status.conditions, READY)
        .map(|c| reason_message(&c.reason, &c.message))
        .unwrap_or_default();
    let state = state_name(status.state).unwrap_or_default();
    Err(Error::NoLink(match status.state {
        None => format!(
            "{name} has no status yet, so no link; is the operator running? (kubectl agentauth status {name}{ns})"
        ),
        Some(AccountState::Active | AccountState::Expired) => format!(
            "{name} is {state} and has no pending link; use `kubectl agentauth reauthorize {name}{ns}`"
        ),
        Some(AccountState::PendingAuth | AccountState::PendingVerification) => format!(
            "{name} is {state} but has no link yet; the operator issues one shortly \
             (kubectl agentauth status {name}{ns})"
        ),
        Some(AccountState::Disconnected) => {
            format!("{name} is DISCONNECTED and has no link; set spec.disconnected to false to issue one")
        }
        Some(AccountState::Error) => {
            format!("{name} is ERROR ({why}) and has no link; fix the cause first")
        }
    }))
}

/// A warning to print next to the link when it has already expired.
pub fn link_warning(account: &ConnectedAccount, now: Timestamp) -> Option<String> {
    let exp = account.status.as_ref()?.authorization_link_expires_at.as_ref()?;
    (exp.0 <= now).then(|| {
        format!(
            "warning: this link expired at {}; the operator replaces it shortly",
            exp.0.strftime("%Y-%m-%dT%H:%M:%SZ")
        )
    })
}

/// Refuses `reauthorize` where the annotation cannot produce a link.
pub fn check_reauthorizable(account: &ConnectedAccount) -> Result<(), Error> {
    let name = account.name_any();
    if account.spec.disconnected == Some(true) {
        return Err(Error::NotReauthorizable(format!(
            "{name} is disconnected (spec.disconnected: true); set spec.disconnected to false to issue a new link"
        )));
    }
    Ok(())
}

/// The merge patch that asks for a new link: the reauthorize annotation set to `value`.
pub fn reauthorize_patch(value: &str) -> serde_json::Value {
    json!({"metadata": {"annotations": {REAUTHORIZE_ANNOTATION: value}}})
}

/// What `reauthorize` without `--wait` prints.
pub fn reauthorize_requested(name: &str, namespace: &str, value: &str) -> String {
    format!(
        "connectedaccount/{name} annotated {REAUTHORIZE_ANNOTATION}={value}; \
         print the new link with `kubectl agentauth link {name}{}` once the operator issued it",
        ns_flag(namespace)
    )
}

/// The link the operator issued for the reauthorize request `value`, once it did.
pub fn link_for_request(account: &ConnectedAccount, value: &str) -> Option<String> {
    let status = account.status.as_ref()?;
    if status.reauthorize_request.as_deref() != Some(value) {
        return None;
    }
    status.authorization_link.clone()
}

/// Why `reauthorize --wait` is still waiting.
pub fn wait_detail(account: &ConnectedAccount) -> String {
    let status = account.status.clone().unwrap_or_default();
    let state = state_name(status.state).unwrap_or_else(|| "<none>".into());
    let ready = conditions::find(&status.conditions, READY)
        .map(condition_text)
        .unwrap_or_else(|| "<none>".into());
    format!(
        "the operator has not acted on the request yet (state {state}, Ready {ready}); \
         is the operator running? The annotation stays set and is acted on later"
    )
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::status::{ConnectionInfo, StatusView, status_text};
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn an_expired_link_is_called_expired() {
        let mut a = pending();
        if let Some(s) = a.status.as_mut() {
            s.authorization_link_expires_at = Some(Time("2026-05-01T09:59:00Z".parse().unwrap()));
        }
        let view = StatusView {
            account: &a,
            namespace: "agents",
            connection: ConnectionInfo::Ready,
            secret_exists: Ok(false),
            events: Ok(vec![]),
        };
        assert!(
            status_text(&view, now())
                .contains("Link:               expired at 2026-05-01T09:59:00Z (60s ago)")
        );
        assert_eq!(
            link_warning(&a, now()).as_deref(),
            Some("warning: this link expired at 2026-05-01T09:59:00Z; the operator replaces it shortly")
        );
        assert_eq!(link_warning(&pending(), now()), None);
    }

    #[test]
    fn link_is_printed_or_explained() {
        assert_eq!(
            current_link(&pending(), "agents").unwrap(),
            "https://connect.example.com/connect/SECRET-LINK-TOKEN"
        );
        let err = current_link(&active(), "default").unwrap_err();
        assert_eq!(
            err.to_string(),
            "alice is ACTIVE and has no pending link; use `kubectl agentauth reauthorize alice`"
        );
        let err = current_link(&active(), "agents").unwrap_err();
        assert!(
            err.to_string()
                .ends_with("`kubectl agentauth reauthorize alice -n agents`")
        );
        let disconnected = account(json!({"state": "DISCONNECTED"}));
        assert!(
            current_link(&disconnected, "agents")
                .unwrap_err()
                .to_string()
                .contains("set spec.disconnected to false")
        );
        let error = account(
            json!({"state": "ERROR", "conditions": [{"type": "Ready", "status": "False",
            "reason": "ConnectionNotFound", "message": "Connection gmail not found",
            "lastTransitionTime": "2026-05-01T09:00:00Z"}]}),
        );
        assert_eq!(
            current_link(&error, "agents").unwrap_err().to_string(),
            "alice is ERROR (ConnectionNotFound: Connection gmail not found) and has no link; fix the cause first"
        );
        let fresh = account(serde_json::Value::Null);
        assert!(
            current_link(&fresh, "agents")
                .unwrap_err()
                .to_string()
                .contains("is the operator running?")
        );
    }

    #[test]
    fn reauthorize_patch_and_wait() {
        assert_eq!(
            reauthorize_patch("2026-05-01T10:00:00Z"),
            json!({"metadata": {"annotations": {"agentauth.dev/reauthorize": "2026-05-01T10:00:00Z"}}})
        );
        // The link counts only once the operator recorded that it acted on this request.
        let mut a = pending();
        assert_eq!(link_for_request(&a, "r2"), None);
        if let Some(s) = a.status.as_mut() {
            s.reauthorize_request = Some("r2".into());
        }
        assert_eq!(
            link_for_request(&a, "r2").as_deref(),
            Some("https://connect.example.com/connect/SECRET-LINK-TOKEN")
        );
        assert_eq!(link_for_request(&active(), "r1"), None);
        assert!(wait_detail(&active()).contains("state ACTIVE, Ready True (Active"));
        assert!(reauthorize_requested("alice", "agents", "v").contains("agentauth.dev/reauthorize=v"));

        let mut disconnected = active();
        disconnected.spec.disconnected = Some(true);
        assert!(matches!(
            check_reauthorizable(&disconnected),
            Err(Error::NotReauthorizable(_))
        ));
        assert!(check_reauthorizable(&active()).is_ok());
    }
}
